//! Moving protocol messages between a transfer state machine and the data channel, with flow
//! control on the channel's buffered amount.

use std::collections::VecDeque;

use anyhow::Result;
use peer::{ChannelId, Connection};

/// Keep this much queued in the channel; refill when it drains below half.
pub(crate) const LOW_WATER: usize = 64 * 1024;

/// Messages waiting for room in the data channel, in order.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: VecDeque<Vec<u8>>,
}

impl Outbox {
    /// Queues a message behind the ones already waiting.
    pub(crate) fn push(&mut self, message: Vec<u8>) {
        self.queue.push_back(message);
    }

    /// Writes as many queued messages as the channel takes; true when the queue is empty.
    pub(crate) fn flush(&mut self, conn: &mut Connection, channel: ChannelId) -> Result<bool> {
        while let Some(message) = self.queue.front() {
            if !conn.write(channel, message)? {
                return Ok(false);
            }
            self.queue.pop_front();
        }
        Ok(true)
    }
}
