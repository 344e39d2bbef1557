//! The last phase of a graceful shutdown: relayed traffic and SFU sessions get until the
//! deadline to end by themselves before TURN and the SFU stop.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;

use crate::{SfuHandle, TurnHandle};

/// How often the drain looks at what is still running.
const POLL: Duration = Duration::from_millis(100);

/// TURN and SFU counters reach this side every 250 ms: look only once they are fresh, or an
/// allocation made just before the signal would be missed.
const FRESH: Duration = Duration::from_millis(300);

/// Completes at the shutdown deadline once a shutdown has started (never before).
pub(crate) async fn deadline(mut deadline: watch::Receiver<Option<Instant>>) {
    let at = match deadline.wait_for(Option::is_some).await {
        Ok(at) => *at,
        Err(_) => None,
    };
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits until no TURN allocation and no SFU participant is left, or `deadline`.
pub(crate) async fn drain_media(
    turn: Option<&TurnHandle>,
    sfu: Option<&SfuHandle>,
    deadline: Instant,
) {
    if turn.is_none() && sfu.is_none() {
        return;
    }
    tokio::time::sleep_until(deadline.min(Instant::now() + FRESH)).await;
    let mut told = false;
    loop {
        let allocations = turn.map_or(0, |t| t.stats().allocations);
        let participants = sfu.map_or(0, |s| s.stats().participants);
        if allocations == 0 && participants == 0 {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            info!(
                allocations,
                participants, "shutdown grace over: stopping TURN and the SFU"
            );
            return;
        }
        if !told {
            told = true;
            info!(
                allocations,
                participants, "waiting for TURN allocations and SFU sessions to end"
            );
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
}
