//! `switchboard send` and `switchboard recv`: files between two peers over a WebRTC data channel,
//! paired by a short code.

mod drive;
mod recv;
mod send;
mod session;

use std::path::PathBuf;

use clap::Args;
use peer::PeerOptions;

pub(crate) use recv::run as run_recv;
pub(crate) use send::run as run_send;

/// The signaling server used when `--server` is not given.
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Options both sides share.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// The Switchboard server that introduces the two sides. Files go straight between them, or
    /// (still end-to-end encrypted) through the server's TURN relay when no direct path exists.
    #[arg(long, env = "SWITCHBOARD_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    pub(crate) server: String,
    /// Connect only through the server's TURN relay (as when no direct path exists).
    #[arg(long)]
    pub(crate) relay: bool,
    /// Access token, when the server requires one (`switchboard token --room '*' --subscribe`:
    /// the room comes from the code)
    #[arg(
        long,
        env = "SWITCHBOARD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub(crate) token: Option<String>,
}

impl ServerArgs {
    /// Loopback candidates are offered when the server itself is on loopback: then both sides
    /// are on this machine.
    pub(crate) fn peer_options(&self) -> PeerOptions {
        let host = self
            .server
            .split("://")
            .nth(1)
            .unwrap_or_default()
            .split(['/', ':'])
            .next()
            .unwrap_or_default();
        let loopback = host == "localhost" || host.starts_with("127.") || host == "[";
        PeerOptions {
            loopback,
            relay_only: self.relay,
            ..PeerOptions::default()
        }
    }
}

/// `switchboard send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Files and folders to send (folders recursively).
    #[arg(required = true, value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,
    /// Use this code instead of a random one, e.g. `7-tiger-orbit`.
    #[arg(long)]
    pub(crate) code: Option<String>,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

/// `switchboard recv`.
#[derive(Debug, Args)]
pub(crate) struct RecvArgs {
    /// The code the sender shows, e.g. `7-tiger-orbit`.
    pub(crate) code: String,
    /// Folder to write into.
    #[arg(long, short, default_value = ".", value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Accept the offer without asking.
    #[arg(long, short)]
    pub(crate) yes: bool,
    /// Replace files that already exist in the output folder.
    #[arg(long)]
    pub(crate) overwrite: bool,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

/// `1.5 MB`-style sizes for people.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Prints a line above a progress bar, or plainly when the bar is hidden (no terminal).
pub(crate) fn say(bar: &indicatif::ProgressBar, line: impl AsRef<str>) {
    if bar.is_hidden() {
        eprintln!("{}", line.as_ref());
    } else {
        bar.println(line.as_ref());
    }
}
