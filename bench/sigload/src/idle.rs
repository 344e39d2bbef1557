//! `idle`: open many connections, hold them, and read the server's memory per connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _, stream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{self, Mode, Tally, Ws};

/// How long one connection may take to open and get its `welcome` or echo.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of `idle`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// WebSocket URL of the target, e.g. ws://127.0.0.1:8080/ws.
    #[arg(long)]
    url: String,

    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,

    /// Peers per room in switchboard mode (the server's default limit is 6).
    #[arg(long, default_value_t = 5)]
    per_room: usize,

    /// Process id of the target server, to read its RSS; without it memory is not reported.
    #[arg(long)]
    pid: Option<u32>,

    /// What the target is.
    #[arg(long, value_enum, default_value_t = Mode::Switchboard)]
    mode: Mode,

    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,

    /// Seconds to hold every connection idle before reading the server's RSS.
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
}

/// Opens the connections, holds them, prints one `idle ...` result line, then closes them.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if args.per_room == 0 || args.concurrency == 0 {
        bail!("--per-room and --concurrency must be at least 1");
    }
    let rss_before = args.pid.map(common::rss_kib).transpose()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let dropped = Arc::new(AtomicUsize::new(0));
    let drop_reasons = Arc::new(Tally::default());
    let open_errors = Tally::default();
    let tag = common::run_tag();

    let started = Instant::now();
    // Each connection is handed to its holder as soon as it is open, so the early ones keep
    // answering pings however long the rest take.
    let opened: Vec<anyhow::Result<JoinHandle<()>>> = stream::iter(0..args.connections)
        .map(|i| {
            let room = format!("idle-{tag}-{}", i / args.per_room);
            let url = args.url.as_str();
            let stop = stop_rx.clone();
            let dropped = Arc::clone(&dropped);
            let reasons = Arc::clone(&drop_reasons);
            async move {
                let ws = tokio::time::timeout(OPEN_TIMEOUT, open(url, args.mode, &room, i))
                    .await
                    .map_err(|_| anyhow!("timed out opening"))??;
                Ok(tokio::spawn(hold(ws, stop, dropped, reasons)))
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let open_secs = started.elapsed().as_secs_f64();

    let mut holders: Vec<JoinHandle<()>> = Vec::with_capacity(opened.len());
    for result in opened {
        match result {
            Ok(holder) => holders.push(holder),
            Err(err) => open_errors.add(format!("{err:#}")),
        }
    }
    let opened_ok = holders.len();

    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let held = opened_ok - dropped.load(Ordering::Relaxed);
    let rss_after = args.pid.map(common::rss_kib).transpose()?;

    let mut line = format!(
        "idle mode={mode} requested={requested} held={held} failed={failed} dropped={dropped} \
         open_secs={open_secs:.2} opens_per_sec={rate:.0}",
        mode = mode_name(args.mode),
        requested = args.connections,
        failed = open_errors.total(),
        dropped = opened_ok - held,
        rate = opened_ok as f64 / open_secs.max(1e-9),
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let per_conn = (after.saturating_sub(before)) as f64 / held.max(1) as f64;
        line.push_str(&format!(
            " rss_before_kib={before} rss_after_kib={after} rss_per_conn_kib={per_conn:.1}"
        ));
    }
    println!("{line}");
    if open_errors.total() > 0 {
        eprintln!("idle: failed to open: {}", open_errors.summary());
    }
    if drop_reasons.total() > 0 {
        eprintln!("idle: dropped while held: {}", drop_reasons.summary());
    }

    // Leave with close frames, so Switchboard removes the peers at once instead of keeping them
    // for their resume grace.
    stop_tx
        .send(true)
        .context("every holder ended before the stop signal")?;
    let closing = futures_util::future::join_all(holders);
    if tokio::time::timeout(Duration::from_secs(30), closing)
        .await
        .is_err()
    {
        eprintln!("idle: some connections took over 30 s to close");
    }
    Ok(())
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Switchboard => "switchboard",
        Mode::Echo => "echo",
    }
}

/// Opens one connection and makes it do one round of application work: `join` (waiting for
/// `welcome`) or one echoed frame.
async fn open(url: &str, mode: Mode, room: &str, i: usize) -> anyhow::Result<Ws> {
    let mut ws = common::connect(url).await?;
    match mode {
        Mode::Switchboard => {
            common::join(&mut ws, room, &format!("idle {i}")).await?;
        }
        Mode::Echo => {
            let hello = format!("hello {i}");
            ws.send(Message::text(hello.clone()))
                .await
                .context("cannot send")?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) if text.as_str() == hello => break,
                    Some(Ok(Message::Text(text))) => bail!("unexpected echo {text:?}"),
                    Some(Ok(Message::Close(frame))) => bail!("closed before the echo: {frame:?}"),
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Err(err).context("connection failed before the echo"),
                    None => bail!("connection ended before the echo"),
                }
            }
        }
    }
    Ok(ws)
}

/// Keeps reading (so pings get their pongs and the server's idle timeout stays away) until told
/// to stop, then closes with a close frame.
async fn hold(
    mut ws: Ws,
    mut stop: watch::Receiver<bool>,
    dropped: Arc<AtomicUsize>,
    reasons: Arc<Tally>,
) {
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or_else(|| "none".to_owned(), |f| u16::from(f.code).to_string());
                    reasons.add(format!("closed by server ({code})"));
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    reasons.add(format!("error: {err}"));
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                None => {
                    reasons.add("ended");
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            changed = stop.changed() => {
                let _ = changed;
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    // Read on until the server's close reply so the close handshake completes.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
