//! `latency`: relay timestamped messages at a fixed total rate and report latency percentiles.
//!
//! Switchboard mode: one room per pair; the first peer sends `signal`s to the second, whose
//! reading task computes the one-way latency. Echo mode: each connection sends the same frames to
//! the echo server and times their return. Either way a measurement is one client write, one
//! server read-and-write and one client read over loopback, on one clock: the send time in
//! nanoseconds rides in the candidate's foundation field.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _, stream};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{self, Mode, Tally, Ws};

/// Options of `latency`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// WebSocket URL of the target, e.g. ws://127.0.0.1:8080/ws.
    #[arg(long)]
    url: String,

    /// Sender/receiver pairs (switchboard) or echoing connections (echo).
    #[arg(long, default_value_t = 50)]
    pairs: usize,

    /// Messages per second in total, spread evenly over the pairs.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,

    /// Seconds of measurement (after the warm-up).
    #[arg(long, default_value_t = 20)]
    seconds: u64,

    /// Seconds of sending before measuring starts; those samples are discarded.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,

    /// What the target is.
    #[arg(long, value_enum, default_value_t = Mode::Switchboard)]
    mode: Mode,

    /// Also write every sample to this file, one `SENT_MS LATENCY_US` line each (milliseconds
    /// since measuring started), to look at when the slow ones happened.
    #[arg(long, value_name = "FILE")]
    dump: Option<std::path::PathBuf>,
}

type Tx = SplitSink<Ws, Message>;
type Rx = SplitStream<Ws>;

/// One path a message takes: in at `tx`, out at `rx`.
struct Lane {
    tx: Tx,
    rx: Rx,
    /// `signal.to`: the receiving peer's id.
    to: String,
    /// Switchboard only: the sender's own incoming half (errors arrive there) and the receiver's
    /// outgoing half (kept open, closed at the end).
    sender_rx: Option<Rx>,
    receiver_tx: Option<Tx>,
}

/// Sets up the lanes, runs the load, prints one `latency ...` result line.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if args.pairs == 0 || args.rate <= 0.0 || args.seconds == 0 {
        bail!("--pairs, --rate and --seconds must be positive");
    }
    let per_lane_rate = args.rate / args.pairs as f64;
    let tag = common::run_tag();
    let setups: Vec<anyhow::Result<(Lane, Option<f64>)>> = stream::iter(0..args.pairs)
        .map(|i| {
            let url = args.url.as_str();
            let room = format!("lat-{tag}-{i}");
            async move {
                match args.mode {
                    Mode::Switchboard => switchboard_lane(url, &room).await,
                    Mode::Echo => echo_lane(url).await.map(|lane| (lane, None)),
                }
            }
        })
        .buffered(10)
        .collect()
        .await;
    let mut lanes = Vec::with_capacity(args.pairs);
    for setup in setups {
        let (lane, limit) = setup?;
        if let Some(limit) = limit {
            if per_lane_rate > limit {
                bail!(
                    "{per_lane_rate:.1} messages/s per sender is over the server's limit of \
                     {limit}/s: use more --pairs or start the server with a higher \
                     --messages-per-second"
                );
            }
        }
        lanes.push(lane);
    }

    let period = Duration::from_secs_f64(1.0 / per_lane_rate);
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + Duration::from_secs(args.warmup_secs);
    let end = measure_from + Duration::from_secs(args.seconds);
    let measure_from_nanos = common::nanos_at(measure_from);
    let (stop_tx, stop_rx) = watch::channel(false);
    let received = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Tally::default());

    let mut senders = Vec::with_capacity(lanes.len());
    let mut receivers = Vec::with_capacity(lanes.len());
    let mut drains = Vec::new();
    let mut receiver_txs = Vec::new();
    for (i, lane) in lanes.into_iter().enumerate() {
        // Stagger the lanes over one period so the total rate is smooth.
        let first = start + period.mul_f64(i as f64 / args.pairs as f64);
        senders.push(tokio::spawn(send_loop(
            lane.tx,
            lane.to,
            i,
            first,
            period,
            end,
            measure_from_nanos,
            Arc::clone(&errors),
        )));
        receivers.push(tokio::spawn(receive_loop(
            lane.rx,
            measure_from_nanos,
            stop_rx.clone(),
            Arc::clone(&received),
            Arc::clone(&errors),
        )));
        if let Some(rx) = lane.sender_rx {
            drains.push(tokio::spawn(drain(
                rx,
                stop_rx.clone(),
                Arc::clone(&errors),
            )));
        }
        receiver_txs.extend(lane.receiver_tx);
    }

    let mut sent = 0u64;
    let mut txs = Vec::with_capacity(senders.len());
    for sender in senders {
        let (tx, count) = sender.await.context("a sender task panicked")?;
        sent += count;
        txs.push(tx);
    }
    // Let the last messages arrive.
    let deadline = Instant::now() + Duration::from_secs(2);
    while received.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_tx
        .send(true)
        .context("every receiver ended before the stop signal")?;
    let mut timed = Vec::with_capacity(usize::try_from(sent).unwrap_or(0));
    for receiver in receivers {
        timed.extend(receiver.await.context("a receiver task panicked")?);
    }
    for drain in drains {
        drain.await.context("a drain task panicked")?;
    }
    // Leave with close frames, so Switchboard removes the peers at once.
    for mut tx in txs.into_iter().chain(receiver_txs) {
        let _ = tx.send(Message::Close(None)).await;
    }

    if let Some(path) = &args.dump {
        dump(path, &mut timed, measure_from_nanos)?;
    }
    let mut samples: Vec<u64> = timed.iter().map(|&(_, latency)| latency).collect();
    samples.sort_unstable();
    let count = samples.len() as u64;
    println!(
        "latency mode={mode} pairs={pairs} rate={rate} seconds={seconds} sent={sent} \
         count={count} lost={lost} achieved_rate={achieved:.0} p50_us={p50:.1} p90_us={p90:.1} \
         p99_us={p99:.1} max_us={max:.1} errors={errors}",
        mode = match args.mode {
            Mode::Switchboard => "switchboard",
            Mode::Echo => "echo",
        },
        pairs = args.pairs,
        rate = args.rate,
        seconds = args.seconds,
        lost = sent.saturating_sub(count),
        achieved = count as f64 / args.seconds as f64,
        p50 = percentile_us(&samples, 0.50),
        p90 = percentile_us(&samples, 0.90),
        p99 = percentile_us(&samples, 0.99),
        max = percentile_us(&samples, 1.0),
        errors = errors.total(),
    );
    if errors.total() > 0 {
        eprintln!("latency: errors: {}", errors.summary());
    }
    Ok(())
}

/// Two peers in `room`; the first sends, the second receives. Also returns the server's
/// announced per-connection message rate.
async fn switchboard_lane(url: &str, room: &str) -> anyhow::Result<(Lane, Option<f64>)> {
    let mut sender = common::connect(url).await?;
    let first = common::join(&mut sender, room, "sender").await?;
    let mut receiver = common::connect(url).await?;
    let second = common::join(&mut receiver, room, "receiver").await?;
    if !second.peers.contains(&first.peer) {
        bail!("room {room} is not ours: the receiver does not see the sender");
    }
    let (tx, sender_rx) = sender.split();
    let (receiver_tx, rx) = receiver.split();
    let lane = Lane {
        tx,
        rx,
        to: second.peer,
        sender_rx: Some(sender_rx),
        receiver_tx: Some(receiver_tx),
    };
    Ok((lane, first.messages_per_second))
}

/// One connection to the echo server, checked with one round trip.
async fn echo_lane(url: &str) -> anyhow::Result<Lane> {
    let mut ws = common::connect(url).await?;
    ws.send(Message::text("hello"))
        .await
        .context("cannot send")?;
    match ws.next().await {
        Some(Ok(Message::Text(text))) if text.as_str() == "hello" => {}
        other => bail!("the echo server did not echo: {other:?}"),
    }
    let (tx, rx) = ws.split();
    Ok(Lane {
        tx,
        rx,
        to: "echo".to_owned(),
        sender_rx: None,
        receiver_tx: None,
    })
}

/// Sends one timestamped `signal` per `period` from `first` until `end`; returns the sink and how
/// many were sent at or after `measure_from`.
#[allow(clippy::too_many_arguments)]
async fn send_loop(
    mut tx: Tx,
    to: String,
    lane: usize,
    first: Instant,
    period: Duration,
    end: Instant,
    measure_from: u64,
    errors: Arc<Tally>,
) -> (Tx, u64) {
    let mut ticks = tokio::time::interval_at(first.into(), period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sent = 0;
    loop {
        if ticks.tick().await >= end.into() {
            break;
        }
        let sent_at = common::now_nanos();
        if let Err(err) = tx.send(Message::text(signal(&to, lane, sent_at))).await {
            errors.add(format!("send failed: {err}"));
            break;
        }
        if sent_at >= measure_from {
            sent += 1;
        }
    }
    (tx, sent)
}

/// A `signal` carrying a realistic host candidate whose foundation is the send time.
fn signal(to: &str, lane: usize, sent_at: u64) -> String {
    let port = 40_000 + lane;
    json!({
        "type": "signal",
        "to": to,
        "candidate": {
            "candidate": format!(
                "candidate:{sent_at} 1 udp 2122260223 192.0.2.1 {port} typ host generation 0 \
                 ufrag EsJm network-id 1"
            ),
            "sdp_mid": "0",
            "sdp_m_line_index": 0,
            "username_fragment": "EsJm",
        },
    })
    .to_string()
}

/// Reads until stopped; returns the send times and latencies, in nanoseconds, of messages sent
/// at or after `measure_from`.
async fn receive_loop(
    mut rx: Rx,
    measure_from: u64,
    mut stop: watch::Receiver<bool>,
    received: Arc<AtomicU64>,
    errors: Arc<Tally>,
) -> Vec<(u64, u64)> {
    let mut samples = Vec::new();
    loop {
        let message = tokio::select! {
            message = rx.next() => message,
            _ = stop.changed() => break,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                errors.add(format!("receiver closed: {frame:?}"));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(err)) => {
                errors.add(format!("receiver failed: {err}"));
                break;
            }
            None => {
                errors.add("receiver ended");
                break;
            }
        };
        let now = common::now_nanos();
        let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
            errors.add("bad JSON");
            continue;
        };
        match sent_at(&value) {
            Some(sent_at) if sent_at >= measure_from => {
                samples.push((sent_at, now.saturating_sub(sent_at)));
                received.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {}
            None => note_error(&value, &errors),
        }
    }
    samples
}

/// Reads the sender's own connection, where Switchboard reports errors such as `rate_limited`.
async fn drain(mut rx: Rx, mut stop: watch::Receiver<bool>, errors: Arc<Tally>) {
    loop {
        let message = tokio::select! {
            message = rx.next() => message,
            _ = stop.changed() => break,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                if let Ok(value) = serde_json::from_str::<Value>(text.as_str()) {
                    note_error(&value, &errors);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                errors.add("sender connection ended");
                break;
            }
        }
    }
}

/// Counts an `error` frame by its code; other frames (`peer_joined`, ...) are fine.
fn note_error(value: &Value, errors: &Tally) {
    if value["type"] == "error" {
        errors.add(format!("error {}", value["code"]));
    }
}

/// The send time from a relayed or echoed `signal`.
fn sent_at(value: &Value) -> Option<u64> {
    value["candidate"]["candidate"]
        .as_str()?
        .strip_prefix("candidate:")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// Writes `(sent_at, latency)` samples in send order, times relative to `measure_from`.
fn dump(
    path: &std::path::Path,
    samples: &mut [(u64, u64)],
    measure_from: u64,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    samples.sort_unstable();
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for &(sent_at, latency) in samples.iter() {
        writeln!(
            out,
            "{:.3} {:.1}",
            sent_at.saturating_sub(measure_from) as f64 / 1e6,
            latency as f64 / 1e3
        )?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Nearest-rank percentile of sorted nanosecond samples, in microseconds.
fn percentile_us(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trips_through_the_signal() {
        let text = signal("0123456789abcdef", 3, 987_654_321);
        let value: Value = serde_json::from_str(&text).expect("signal is JSON");
        assert_eq!(sent_at(&value), Some(987_654_321));
        assert_eq!(value["to"], "0123456789abcdef");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=100).map(|us| us * 1000).collect();
        assert_eq!(percentile_us(&samples, 0.50), 50.0);
        assert_eq!(percentile_us(&samples, 0.99), 99.0);
        assert_eq!(percentile_us(&samples, 1.0), 100.0);
        assert_eq!(percentile_us(&[7000], 0.5), 7.0);
        assert!(percentile_us(&[], 0.5).is_nan());
    }
}
