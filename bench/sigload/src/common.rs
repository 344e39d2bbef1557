//! What the subcommands share: connecting, joining a room, the clock, and reading RSS.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the target server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Switchboard's `/ws`: speak signaling protocol v1.
    Switchboard,
    /// `switchboard-sigload echo-server`: frames come back as sent.
    Echo,
}

/// Opens a WebSocket with Nagle's algorithm off, so the client adds no batching of its own, and
/// a 4 KiB read buffer instead of tungstenite's 128 KiB (zero-filled on every read), so the load
/// generator stays light next to the server it measures.
pub(crate) async fn connect(url: &str) -> anyhow::Result<Ws> {
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, _response) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .with_context(|| format!("cannot open a WebSocket to {url}"))?;
    Ok(ws)
}

/// The parts of a `welcome` the benchmarks use.
#[derive(Debug)]
pub(crate) struct Welcome {
    /// Our peer id.
    pub(crate) peer: String,
    /// Ids of the others already in the room.
    pub(crate) peers: Vec<String>,
    /// `limits.messages_per_second`, when the server announced it.
    pub(crate) messages_per_second: Option<f64>,
}

/// Sends `join` and waits for `welcome`; an `error` frame or a close fails with its code.
pub(crate) async fn join(ws: &mut Ws, room: &str, name: &str) -> anyhow::Result<Welcome> {
    let join = json!({"type": "join", "v": 1, "room": room, "name": name});
    ws.send(Message::text(join.to_string()))
        .await
        .context("cannot send join")?;
    loop {
        let message = ws
            .next()
            .await
            .ok_or_else(|| anyhow!("connection ended before welcome"))?
            .context("connection failed before welcome")?;
        match message {
            Message::Text(text) => {
                let value: Value =
                    serde_json::from_str(text.as_str()).context("server sent bad JSON")?;
                match value["type"].as_str() {
                    Some("welcome") => return welcome(&value),
                    Some("error") => bail!("join refused: {}", value["code"]),
                    _ => {}
                }
            }
            Message::Close(frame) => bail!("closed before welcome: {frame:?}"),
            _ => {}
        }
    }
}

fn welcome(value: &Value) -> anyhow::Result<Welcome> {
    let peer = value["peer"]
        .as_str()
        .ok_or_else(|| anyhow!("welcome without a peer id"))?
        .to_owned();
    let peers = value["peers"]
        .as_array()
        .map(|peers| {
            peers
                .iter()
                .filter_map(|p| p["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let messages_per_second = value["limits"]["messages_per_second"].as_f64();
    Ok(Welcome {
        peer,
        peers,
        messages_per_second,
    })
}

/// Nanoseconds since a process-wide epoch: senders and receivers share this clock.
pub(crate) fn now_nanos() -> u64 {
    nanos_at(Instant::now())
}

/// `at` in nanoseconds since the process-wide epoch (0 if before it).
pub(crate) fn nanos_at(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let elapsed = at.saturating_duration_since(*EPOCH.get_or_init(Instant::now));
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

/// A tag that keeps room names of different runs against one server apart.
pub(crate) fn run_tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:08x}", std::process::id(), nanos)
}

/// Resident set size of process `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow!("no VmRSS in {path}"))?;
    line.trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("bad VmRSS line in {path}: {line:?}"))
}

/// Counts of things that went wrong, by kind, for the report.
#[derive(Debug, Default)]
pub(crate) struct Tally(std::sync::Mutex<std::collections::BTreeMap<String, u64>>);

impl Tally {
    pub(crate) fn add(&self, kind: impl Into<String>) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *map.entry(kind.into()).or_default() += 1;
    }

    pub(crate) fn total(&self) -> u64 {
        let map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.values().sum()
    }

    /// `kind×count, ...`, or `none`.
    pub(crate) fn summary(&self) -> String {
        let map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.is_empty() {
            return "none".to_owned();
        }
        map.iter()
            .map(|(kind, count)| format!("{kind}×{count}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
