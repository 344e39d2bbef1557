//! `switchboard-sigload`: the load generator behind `bench/signaling.sh`.
//!
//! It measures what Switchboard's WebSocket signaling (`/ws`, protocol v1) costs per idle
//! connection and how long a relayed `signal` takes, and it runs the same measurements against its
//! own bare tokio-tungstenite echo server, the anchor: what a WebSocket costs with no application
//! on top. The script prints Switchboard's figures as ratios over the anchor's.
//!
//! What it is not: a conformance test or a general WebSocket benchmark. It speaks just enough of
//! the protocol (`join`, `welcome`, `signal`) for these two measurements, and it reads the target
//! server's memory from `/proc`, so it runs on Linux against a server on the same machine.

mod churn;
mod common;
mod echo_server;
mod idle;
mod latency;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Load generator for Switchboard's signaling benchmarks (bench/signaling.sh).
#[derive(Debug, Parser)]
#[command(name = "switchboard-sigload", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bare WebSocket server that echoes frames: the anchor.
    EchoServer(echo_server::Args),
    /// Open N connections, hold them idle, report the server's memory per connection.
    Idle(idle::Args),
    /// Relay timestamped messages at a fixed rate, report latency percentiles.
    Latency(latency::Args),
    /// Join and leave at a steady rate for a while (bench/soak.sh).
    Churn(churn::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::EchoServer(args) => echo_server::run(args).await,
            Command::Idle(args) => idle::run(args).await,
            Command::Latency(args) => latency::run(args).await,
            Command::Churn(args) => churn::run(args).await,
        }
    })
}
