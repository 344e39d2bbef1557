//! The anchor: a bare tokio-tungstenite server that sends every data frame back as it came.
//!
//! It uses the same WebSocket library family as Switchboard (axum's `ws` is tokio-tungstenite)
//! and, like `axum::serve`, leaves Nagle's algorithm on unless told otherwise. Its defaults are
//! tungstenite's; `bench/signaling.sh` passes Switchboard's frame limit and buffer sizes, so the
//! difference between the two is the application.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Options of `echo-server`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Largest frame and message accepted, in bytes (Switchboard's default limit).
    #[arg(long, default_value_t = 65_536)]
    max_frame_bytes: usize,

    /// Read buffer per connection, in bytes. tungstenite's default is 128 KiB, zero-filled on
    /// every read, and most of an idle connection's memory; Switchboard sets 4 KiB.
    #[arg(long, default_value_t = 128 * 1024)]
    read_buffer_bytes: usize,

    /// Bytes of outgoing frames collected before writing to the socket; tungstenite's default is
    /// 128 KiB, Switchboard sets 0 (write each frame at once).
    #[arg(long, default_value_t = 128 * 1024)]
    write_buffer_bytes: usize,

    /// Set TCP_NODELAY on accepted sockets (axum::serve, and so Switchboard, does not).
    #[arg(long)]
    nodelay: bool,
}

/// Serves until killed. Prints `listening on ADDR` once bound.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    // The one line on stdout: the script reads the port from it.
    println!("listening on {addr}");
    let config = WebSocketConfig::default()
        .max_message_size(Some(args.max_frame_bytes))
        .max_frame_size(Some(args.max_frame_bytes))
        .read_buffer_size(args.read_buffer_bytes)
        .write_buffer_size(args.write_buffer_bytes);
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                if args.nodelay {
                    let _ = stream.set_nodelay(true);
                }
                tokio::spawn(echo(stream, config));
            }
            Err(err) => {
                // Out of file descriptors, mostly: say so and keep serving the ones we have.
                eprintln!("echo-server: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn echo(stream: TcpStream, config: WebSocketConfig) {
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        let reply = match message {
            Message::Text(_) | Message::Binary(_) => message,
            // tungstenite answers pings and close frames by itself; reading on flushes the
            // close reply and then ends the stream.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => {
                continue;
            }
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
}
