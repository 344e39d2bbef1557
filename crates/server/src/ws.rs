//! One WebSocket connection: frames in to the hub task, frames out from its queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use signal::{CloseCode, ConnId, Frame};
use tokio::sync::mpsc;
use tracing::{debug, trace};

use crate::hub_task::{HubCommand, OUTBOUND_QUEUE, Outgoing};

/// How often the server pings each client. Browsers answer WebSocket pings even when a background
/// tab's timers are throttled, so this keeps quiet but live connections from the idle timeout.
const PING_INTERVAL: Duration = Duration::from_secs(15);

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Serves one upgraded connection until either side ends it.
pub(crate) async fn serve_connection(
    socket: WebSocket,
    hub: mpsc::Sender<HubCommand>,
    counters: std::sync::Arc<crate::metrics::Counters>,
    source: Option<std::net::IpAddr>,
) {
    let conn = ConnId(NEXT_CONN.fetch_add(1, Ordering::Relaxed));
    let (tx, mut outgoing) = mpsc::channel(OUTBOUND_QUEUE + 1);
    if hub
        .send(HubCommand::Connected { conn, tx, source })
        .await
        .is_err()
    {
        return;
    }
    let (mut sink, mut stream) = socket.split();
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let graceful = loop {
        tokio::select! {
            received = stream.next() => {
                let frame = match received {
                    Some(Ok(Message::Text(text))) => Frame::Text(text.as_str().to_owned()),
                    Some(Ok(Message::Binary(bytes))) => Frame::Binary(bytes.len()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Frame::Control,
                    // A deliberate goodbye leaves the room at once; any other code (a client
                    // dropping a connection it believes dead) keeps the peer for its resume.
                    Some(Ok(Message::Close(frame))) => {
                        break frame.is_none_or(|f| matches!(f.code, 1000 | 1001));
                    }
                    Some(Err(err)) => {
                        debug!(conn = conn.0, %err, "read error");
                        if is_too_big(&err) {
                            crate::metrics::Counters::bump(&counters.ws_oversized);
                            let code = CloseCode::MessageTooBig;
                            let _ = sink.send(close_message(code.code(), code.reason())).await;
                        }
                        break false;
                    }
                    None => break false,
                };
                if hub.send(HubCommand::Frame { conn, frame }).await.is_err() {
                    break false;
                }
            }
            out = outgoing.recv() => match out {
                Some(Outgoing::Text(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break false;
                    }
                }
                Some(Outgoing::Close(code, reason)) => {
                    trace!(conn = conn.0, code, "server closes");
                    let _ = sink.send(close_message(code, reason)).await;
                    break false;
                }
                None => break false,
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break false;
                }
            }
        }
    };
    let _ = hub.send(HubCommand::Disconnected { conn, graceful }).await;
}

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Whether a read failed because a message exceeded the size limit.
fn is_too_big(err: &axum::Error) -> bool {
    let text = err.to_string();
    text.contains("too long") || text.contains("Space limit")
}
