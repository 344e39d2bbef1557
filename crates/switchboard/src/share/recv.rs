//! `switchboard recv CODE`: pair with the sender, show the offer, ask, receive into `--out`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::ProgressBar;
use pairing::{Code, Role};
use peer::{PeerEvent, SignalEvent, Signaling};
use transfer::{Manifest, Receiver, ReceiverEvent};

use super::drive::Outbox;
use super::send::bar_style;
use super::session::{MeetError, Meeting, meet, renegotiate, wait_for_peer};
use super::{RecvArgs, human_bytes, say};

/// How long the receiver waits for a sender to appear in the room.
const SENDER_WAIT: Duration = Duration::from_secs(60);

pub(crate) fn run(args: RecvArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(recv(args))
}

async fn recv(args: RecvArgs) -> Result<()> {
    let code = Code::parse(&args.code).context("the code")?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create the output folder {}", args.out.display()))?;
    let started = Instant::now();
    let mut signaling = Signaling::join_with_token(
        &args.server.server,
        &code.room(),
        "receiver",
        args.server.token.as_deref(),
    )
    .await?;
    if signaling.welcome.peers.iter().all(|p| p.name != "sender") {
        eprintln!("Waiting for the sender (code {code})...");
    }
    let peer = tokio::time::timeout(SENDER_WAIT, wait_for_peer(&mut signaling, "sender"))
        .await
        .map_err(|_| {
            anyhow!(
                "no sender with this code showed up within {} s; check the code",
                SENDER_WAIT.as_secs()
            )
        })??;
    let options = args.server.peer_options();
    let mut meeting = match meet(&mut signaling, &code, Role::Receiver, &peer, &options).await {
        Ok(meeting) => meeting,
        Err(MeetError::WrongCode) => {
            signaling.leave().await;
            bail!("wrong code: the sender's code is different. Nothing was received.");
        }
        Err(MeetError::Failed(err)) => {
            signaling.leave().await;
            return Err(err);
        }
    };
    let connected = started.elapsed();
    eprintln!("Connected {}.", meeting.conn.route());
    let mut first_byte = None;
    let Meeting {
        conn,
        channel,
        peer,
        remote_fingerprint,
    } = &mut meeting;
    let channel = *channel;
    let mut signaling_open = true;
    let mut receiver = Receiver::new(&args.out, args.overwrite);
    let mut outbox = Outbox::default();
    let mut bar: Option<ProgressBar> = None;
    let mut total = 0;
    let mut transfer_started = None;
    let mut declined = false;
    loop {
        while let Some(event) = receiver.poll_event() {
            match event {
                ReceiverEvent::Offered(manifest) => {
                    total = manifest.files.iter().map(|f| f.size).sum();
                    show_offer(&manifest);
                    if args.yes || ask("Accept?").await? {
                        receiver.accept()?;
                        let progress = ProgressBar::new(total).with_style(bar_style("receiving"));
                        bar = Some(progress);
                        transfer_started = Some(Instant::now());
                    } else {
                        receiver.cancel("the receiver declined");
                        declined = true;
                    }
                }
                ReceiverEvent::Progress { bytes, .. } => {
                    first_byte.get_or_insert_with(|| started.elapsed());
                    if let Some(bar) = &bar {
                        bar.set_position(bytes);
                    }
                }
                ReceiverEvent::FileVerified { path, .. } => {
                    let line = format!("  received {}", path.display());
                    match &bar {
                        Some(bar) => say(bar, line),
                        None => eprintln!("{line}"),
                    }
                }
                ReceiverEvent::Complete => {
                    if let Some(bar) = &bar {
                        bar.finish_and_clear();
                    }
                }
                ReceiverEvent::Cancelled { reason } => {
                    if let Some(bar) = &bar {
                        bar.abandon();
                    }
                    bail!("the sender cancelled: {reason}");
                }
                _ => {}
            }
        }
        // After the events: accepting the offer queues the ACCEPT, which must leave now, not
        // after the next message from the sender (a browser sender waits for it).
        while let Some(message) = receiver.poll_transmit() {
            outbox.push(message);
        }
        outbox.flush(conn, channel)?;
        if receiver.is_finished() {
            let secs = transfer_started
                .map(|t| t.elapsed().as_secs_f64())
                .unwrap_or_default();
            // Let the last VERIFIED (or our CANCEL) reach the sender before closing.
            while let Some(message) = receiver.poll_transmit() {
                outbox.push(message);
            }
            drain(conn, channel, &mut outbox).await;
            if let Some(pair) = conn.candidate_pair() {
                // One write, so a reader merging stdout and stderr never gets it split.
                let line = format!("Candidate pair: {pair}.\n");
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            }
            conn.close();
            signaling.leave().await;
            if declined {
                bail!("you declined the offer; nothing was written");
            }
            if !receiver.is_complete() {
                bail!("the transfer stopped; run the same command again to resume");
            }
            println!(
                "Received {} in {secs:.1} s ({}/s) into {}; connected after {} ms, first data \
                 after {} ms.",
                human_bytes(total),
                human_bytes((total as f64 / secs.max(0.001)) as u64),
                args.out.display(),
                connected.as_millis(),
                first_byte.unwrap_or_default().as_millis()
            );
            return Ok(());
        }
        tokio::select! {
            event = conn.next_event() => match event {
                PeerEvent::ChannelData(_, data) => {
                    let result = tokio::task::block_in_place(|| receiver.handle(&data));
                    if let Err(err) = result {
                        while let Some(message) = receiver.poll_transmit() {
                            outbox.push(message);
                        }
                        drain(conn, channel, &mut outbox).await;
                        if let Some(bar) = &bar {
                            bar.abandon();
                        }
                        return Err(anyhow!(err));
                    }
                }
                PeerEvent::Closed(reason) => {
                    if let Some(bar) = &bar {
                        bar.abandon();
                    }
                    bail!(
                        "the connection to the sender was lost ({reason}); run the same command again \
                         to resume"
                    );
                }
                PeerEvent::ChannelClosed(id) if id == channel => {
                    bail!("the sender closed the channel; run the same command again to resume");
                }
                _ => {}
            },
            event = signaling.recv(), if signaling_open => match event {
                // The sender restarts ICE when the path drops: answer on fresh candidates.
                SignalEvent::Signal { from, message } if from == *peer => {
                    renegotiate(conn, peer, remote_fingerprint, &mut signaling, &message).await?;
                }
                SignalEvent::Closed(_) => signaling_open = false,
                _ => {}
            },
        }
    }
}

/// Writes what is queued and waits (briefly) until the peer has acknowledged it.
async fn drain(conn: &mut peer::Connection, channel: peer::ChannelId, outbox: &mut Outbox) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        if matches!(outbox.flush(conn, channel), Ok(true)) && conn.buffered_amount(channel) == 0 {
            return;
        }
        if tokio::time::timeout_at(deadline, conn.next_event())
            .await
            .is_err()
        {
            return;
        }
    }
}

fn show_offer(manifest: &Manifest) {
    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    eprintln!(
        "The sender offers {} file{} ({}):",
        manifest.files.len(),
        if manifest.files.len() == 1 { "" } else { "s" },
        human_bytes(total)
    );
    for file in manifest.files.iter().take(20) {
        eprintln!("  {}  ({})", file.path, human_bytes(file.size));
    }
    if manifest.files.len() > 20 {
        eprintln!("  ... and {} more", manifest.files.len() - 20);
    }
}

/// Asks a yes/no question on the terminal; anything but yes (or end of input) is no.
async fn ask(question: &str) -> Result<bool> {
    let question = question.to_owned();
    tokio::task::spawn_blocking(move || {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            eprintln!("{question} [y/N] (reading the answer from standard input)");
        } else {
            eprint!("{question} [y/N] ");
            let _ = std::io::stderr().flush();
        }
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        Ok(matches!(
            line.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        ))
    })
    .await?
}
