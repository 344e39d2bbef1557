//! `churn`: joins and leaves at a steady rate for a while (bench/soak.sh). Each cycle opens a
//! connection, joins one of a few rooms, relays one `signal` to a peer already there, leaves,
//! and closes; some cycles drop the connection without a goodbye instead, so the server's resume
//! grace expiry is exercised too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{connect, join};

/// Options of `churn`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// WebSocket URL of the server's signaling endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Join-and-leave cycles started per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Rooms the cycles spread over.
    #[arg(long, default_value_t = 8)]
    rooms: u32,
    /// One cycle in this many drops its connection without closing it.
    #[arg(long, default_value_t = 10)]
    drop_every: u64,
}

#[derive(Default)]
struct Totals {
    cycles: AtomicU64,
    failed: AtomicU64,
    signals: AtomicU64,
}

/// Runs the churn and prints `cycles=N failed=N signals=N`.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let totals = Arc::new(Totals::default());
    let period = Duration::from_secs_f64(1.0 / args.rate.max(0.01));
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    let mut n: u64 = 0;
    while Instant::now() < end {
        tick.tick().await;
        n += 1;
        let url = args.url.clone();
        let room = format!("soak-{}", n % u64::from(args.rooms.max(1)));
        let drop_it = args.drop_every > 0 && n % args.drop_every == 0;
        let totals = totals.clone();
        tasks.spawn(async move {
            match cycle(&url, &room, n, drop_it).await {
                Ok(signalled) => {
                    totals.cycles.fetch_add(1, Ordering::Relaxed);
                    if signalled {
                        totals.signals.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(err) => {
                    let failed = totals.failed.fetch_add(1, Ordering::Relaxed);
                    if failed < 5 {
                        eprintln!("churn: cycle failed: {err:#}");
                    }
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    println!(
        "cycles={} failed={} signals={}",
        totals.cycles.load(Ordering::Relaxed),
        totals.failed.load(Ordering::Relaxed),
        totals.signals.load(Ordering::Relaxed)
    );
    Ok(())
}

/// One cycle; true when a signal was relayed to someone.
async fn cycle(url: &str, room: &str, n: u64, drop_it: bool) -> anyhow::Result<bool> {
    let mut ws = connect(url).await?;
    let welcome = join(&mut ws, room, &format!("churn {n}")).await?;
    let mut signalled = false;
    if let Some(to) = welcome.peers.first() {
        let signal = json!({"type": "signal", "to": to, "app": {"n": n}});
        ws.send(Message::text(signal.to_string())).await?;
        signalled = true;
    }
    // Stay a little, as a real participant would, reading what the room sends.
    let stay = Duration::from_millis(200 + (n % 7) * 100);
    let _ = tokio::time::timeout(stay, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    if drop_it {
        drop(ws);
        return Ok(signalled);
    }
    ws.send(Message::text(json!({"type": "leave"}).to_string()))
        .await?;
    ws.close(None).await?;
    Ok(signalled)
}
