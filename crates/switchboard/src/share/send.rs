//! `switchboard send PATH...`: hash, show the code, wait for the receiver, send; resume when the
//! receiver comes back after a lost connection.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use pairing::{Code, Role};
use peer::{PeerEvent, SignalEvent, Signaling};
use transfer::{Outgoing, Sender, SenderEvent};

use super::drive::{LOW_WATER, Outbox};
use super::session::{MeetError, Meeting, meet, renegotiate, wait_for_peer};
use super::{SendArgs, human_bytes, say};

/// How long ICE may have lost the receiver before the sender restarts it.
const RESTART_AFTER: Duration = Duration::from_secs(1);
/// How long one ICE restart may take before the next is tried.
const RESTART_RETRY: Duration = Duration::from_secs(8);
/// How long the path may stay lost, restarts included, before the sender gives this connection
/// up and waits for the receiver to come back with a new one.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// How a connection attempt ended.
enum Attempt {
    Complete,
    /// The connection dropped; the receiver may come back and resume.
    Lost(String),
}

pub(crate) fn run(args: SendArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(send(args))
}

async fn send(args: SendArgs) -> Result<()> {
    let code = match &args.code {
        Some(text) => Code::parse(text).context("--code")?,
        None => Code::generate(),
    };
    let paths = args.paths.clone();
    let outgoing = tokio::task::spawn_blocking(move || scan(&paths)).await??;
    for skipped in outgoing.skipped() {
        eprintln!("skipping {} (not a regular file)", skipped.display());
    }
    let manifest = outgoing.manifest();
    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    let options = args.server.peer_options();
    let mut signaling = Signaling::join_with_token(
        &args.server.server,
        &code.room(),
        "sender",
        args.server.token.as_deref(),
    )
    .await?;
    println!(
        "Sending {} file{} ({}).",
        manifest.files.len(),
        if manifest.files.len() == 1 { "" } else { "s" },
        human_bytes(total)
    );
    println!("Code: {code}");
    println!("On the other machine run:  switchboard recv {code}");
    println!(
        "Or open in a browser:      {}/recv/{code}",
        args.server.server.trim_end_matches('/')
    );
    let started = Instant::now();
    loop {
        let peer = wait_for_peer(&mut signaling, "receiver").await?;
        eprintln!("Receiver found; pairing...");
        let mut meeting = match meet(&mut signaling, &code, Role::Sender, &peer, &options).await {
            Ok(meeting) => meeting,
            Err(MeetError::WrongCode) => {
                signaling.leave().await;
                bail!(
                    "a receiver used a wrong code, so this code is burned. Nothing was sent; \
                     run send again for a new code"
                );
            }
            Err(MeetError::Failed(err)) => {
                eprintln!("{err:#}; waiting for the receiver to try again");
                continue;
            }
        };
        eprintln!("Connected {}.", meeting.conn.route());
        let sender = Sender::new(outgoing.clone())?;
        match transfer(&mut meeting, sender, &mut signaling).await? {
            Attempt::Complete => {
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "Sent {} in {secs:.1} s ({}/s).",
                    human_bytes(total),
                    human_bytes((total as f64 / secs.max(0.001)) as u64)
                );
                if let Some(pair) = meeting.conn.candidate_pair() {
                    // One write, so a reader merging stdout and stderr never gets it split.
                    let line = format!("Candidate pair: {pair}.\n");
                    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
                }
                meeting.conn.close();
                signaling.leave().await;
                return Ok(());
            }
            Attempt::Lost(reason) => {
                eprintln!(
                    "Connection lost ({reason}). Waiting for the receiver to reconnect; it resumes \
                     where it stopped."
                );
            }
        }
    }
}

fn scan(paths: &[std::path::PathBuf]) -> Result<Outgoing> {
    let bar = ProgressBar::new(0).with_style(bar_style("hashing"));
    let outgoing = Outgoing::scan(paths, |hashed, total| {
        bar.set_length(total);
        bar.set_position(hashed);
    })?;
    bar.finish_and_clear();
    Ok(outgoing)
}

pub(crate) fn bar_style(verb: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{verb:>9} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} ETA {{eta}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// Runs the protocol on one connection until the transfer completes or the connection drops.
/// Signaling events that arrive meanwhile (a receiver that restarted) are put back for the next
/// attempt.
async fn transfer(
    meeting: &mut Meeting,
    sender: Sender,
    signaling: &mut Signaling,
) -> Result<Attempt> {
    let mut held = Vec::new();
    let result = drive(meeting, sender, signaling, &mut held).await;
    signaling.put_back(held);
    result
}

async fn drive(
    meeting: &mut Meeting,
    mut sender: Sender,
    signaling: &mut Signaling,
    held: &mut Vec<SignalEvent>,
) -> Result<Attempt> {
    let Meeting {
        conn,
        channel,
        peer,
        remote_fingerprint,
    } = meeting;
    let channel = *channel;
    conn.set_buffered_low_threshold(channel, LOW_WATER);
    let bar = ProgressBar::new(sender.total_bytes()).with_style(bar_style("sending"));
    let mut outbox = Outbox::default();
    let mut signaling_open = true;
    // Since when ICE has lost the receiver, and when we last restarted it. A receiver that
    // comes back meanwhile (a reloaded page) replaces this connection.
    let mut lost_since: Option<Instant> = None;
    let mut last_restart: Option<Instant> = None;
    loop {
        while let Some(message) = sender.poll_transmit() {
            outbox.push(message);
        }
        while let Some(event) = sender.poll_event() {
            match event {
                SenderEvent::Accepted { resumed } => {
                    if resumed > 0 {
                        say(
                            &bar,
                            format!(
                                "Resuming: the receiver already has {}.",
                                human_bytes(resumed)
                            ),
                        );
                    }
                    bar.set_position(resumed);
                }
                SenderEvent::Acked { bytes, .. } => bar.set_position(bytes),
                SenderEvent::FileVerified { path, .. } => say(&bar, format!("  sent {path}")),
                SenderEvent::Complete => {
                    bar.finish_and_clear();
                    return Ok(Attempt::Complete);
                }
                SenderEvent::Cancelled { reason } => {
                    bar.abandon();
                    bail!("the receiver cancelled: {reason}");
                }
                _ => {}
            }
        }
        if sender.is_finished() && !sender.is_complete() {
            // Our own failure: the CANCEL is queued; give it a moment to leave.
            outbox.flush(conn, channel)?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            bail!("the transfer failed");
        }
        // Fill the channel while it has room.
        if outbox.flush(conn, channel)? {
            while conn.buffered_amount(channel) < 2 * LOW_WATER {
                match sender.next_chunk()? {
                    Some(chunk) => {
                        outbox.push(chunk);
                        if !outbox.flush(conn, channel)? {
                            break;
                        }
                    }
                    None => break,
                }
            }
        }
        let replacement_waiting = held
            .iter()
            .any(|e| matches!(e, SignalEvent::PeerJoined(p) if p.name == "receiver"));
        // While the path is lost: restart ICE (over signaling), and in the end give up.
        let wake = lost_since.map(|since| {
            let restart = match last_restart {
                Some(at) => at + RESTART_RETRY,
                None => since + RESTART_AFTER,
            };
            let give_up = since + GIVE_UP_AFTER;
            if signaling_open {
                restart.min(give_up)
            } else {
                give_up
            }
        });
        tokio::select! {
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now).into()), if wake.is_some() => {
                let since = lost_since.unwrap_or_else(Instant::now);
                if since.elapsed() >= GIVE_UP_AFTER {
                    bar.abandon();
                    return Ok(Attempt::Lost(format!(
                        "no path to the receiver for {} s",
                        GIVE_UP_AFTER.as_secs()
                    )));
                }
                say(&bar, "The connection dropped; restarting ICE on fresh candidates...");
                match conn.restart_ice().await {
                    Ok(offer) => signaling.signal(
                        peer,
                        serde_json::json!({"description": {"type": "offer", "sdp": offer}}),
                    ),
                    Err(err) => say(&bar, format!("ICE restart failed: {err:#}")),
                }
                last_restart = Some(Instant::now());
            }
            event = conn.next_event() => match event {
                PeerEvent::ChannelData(_, data) => {
                    if let Err(err) = sender.handle(&data) {
                        while let Some(message) = sender.poll_transmit() {
                            outbox.push(message);
                        }
                        outbox.flush(conn, channel)?;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        return Err(anyhow!(err).context("the receiver broke the protocol"));
                    }
                }
                PeerEvent::Disconnected if replacement_waiting => {
                    bar.abandon();
                    return Ok(Attempt::Lost("the receiver restarted".into()));
                }
                PeerEvent::Disconnected => {
                    lost_since.get_or_insert_with(Instant::now);
                }
                PeerEvent::Connected => {
                    if last_restart.is_some() {
                        say(&bar, format!("Reconnected {}; the transfer goes on.", conn.route()));
                    }
                    lost_since = None;
                    last_restart = None;
                }
                PeerEvent::ChannelClosed(id) if id == channel => {
                    bar.abandon();
                    return Ok(Attempt::Lost("the receiver closed the channel".into()));
                }
                PeerEvent::Closed(reason) => {
                    bar.abandon();
                    return Ok(Attempt::Lost(reason));
                }
                _ => {}
            },
            event = signaling.recv(), if signaling_open => match event {
                SignalEvent::Closed(reason) => {
                    say(&bar, format!("signaling closed ({reason}); the transfer goes on"));
                    signaling_open = false;
                }
                SignalEvent::Signal { from, message }
                    if from == *peer
                        && renegotiate(conn, peer, remote_fingerprint, signaling, &message).await? => {}
                event => {
                    let restarted = matches!(&event, SignalEvent::PeerJoined(p) if p.name == "receiver");
                    held.push(event);
                    if restarted && lost_since.is_some() {
                        bar.abandon();
                        return Ok(Attempt::Lost("the receiver restarted".into()));
                    }
                }
            },
        }
    }
}
