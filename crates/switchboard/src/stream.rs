//! `switchboard stream`: publishes media files into a room through WHIP, paced in real time.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use media_file::{Frame, Kind, Reader};
use peer::media::{MediaEvent, MediaKind, MediaSession, Role, VideoCodec};

use crate::share::DEFAULT_SERVER;

/// How long ICE and DTLS may take to come up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from a file at a time.
const READ_CHUNK: usize = 64 * 1024;
/// How often the status line is redrawn.
const STATUS_EVERY: Duration = Duration::from_millis(500);
/// A frame this late is sent at once rather than waited for (after a stall).
const LATE_RESET: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  switchboard stream --room live clip.ivf music.ogg
  switchboard stream --room live --loop --fps 25 camera.h264
  ffmpeg -i in.mp4 -c:v libvpx -b:v 1M -deadline realtime out.ivf   # make an IVF file

Viewers play the room through WHEP (POST /whep/ROOM) or the server's /watch/ROOM page.")]
pub(crate) struct StreamArgs {
    /// The room to publish into (the WHIP endpoint is SERVER/whip/ROOM).
    #[arg(long, required_unless_present = "whip_url")]
    room: Option<String>,
    /// The Switchboard server.
    #[arg(long, env = "SWITCHBOARD_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    server: String,
    /// A WHIP endpoint URL to use instead of SERVER/whip/ROOM (another WHIP server).
    #[arg(long, value_name = "URL")]
    whip_url: Option<String>,
    /// Bearer token for the WHIP endpoint, when the server requires one.
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Start the files over when they end, until interrupted.
    #[arg(long = "loop")]
    repeat: bool,
    /// Frame rate of H.264 files (they carry no timestamps).
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// No status line.
    #[arg(long, short)]
    quiet: bool,
    /// Media files: one video (`.ivf` VP8, `.h264`/`.264` H.264 Annex B) and/or one audio
    /// (`.ogg`/`.opus` Opus).
    #[arg(required = true, num_args = 1..=2, value_name = "FILE")]
    files: Vec<PathBuf>,
}

pub(crate) fn run(args: StreamArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(stream(args))
}

/// One file being played.
struct Source {
    path: PathBuf,
    kind: Kind,
    fps: f64,
    file: File,
    reader: Reader,
    /// The next frame, read ahead.
    next: Option<Frame>,
    /// Start of the current pass, on the file's own clock and in RTP ticks.
    pass_time: Duration,
    pass_rtp: u64,
    /// The last frame handed out, and the gap before it, to place the next pass.
    last: Option<(Duration, u64, Duration, u64)>,
    frames: u64,
    bytes: u64,
    passes: u64,
    repeat: bool,
}

impl Source {
    fn open(path: &Path, fps: f64, repeat: bool) -> Result<Source> {
        let mut file =
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut start = [0u8; 8];
        let len = file.read(&mut start)?;
        let name = path.to_string_lossy();
        let kind = Kind::detect(&start[..len], &name).ok_or_else(|| {
            anyhow!(
                "{}: not a file stream plays (IVF/VP8, H.264 Annex B, Ogg/Opus)",
                path.display()
            )
        })?;
        let mut reader = Reader::new(kind, fps)?;
        reader
            .push(&start[..len])
            .map_err(|e| file_error(path, e))?;
        Ok(Source {
            path: path.to_owned(),
            kind,
            fps,
            file,
            reader,
            next: None,
            pass_time: Duration::ZERO,
            pass_rtp: 0,
            last: None,
            frames: 0,
            bytes: 0,
            passes: 0,
            repeat,
        })
    }

    fn media_kind(&self) -> MediaKind {
        if self.kind.is_video() {
            MediaKind::Video
        } else {
            MediaKind::Audio
        }
    }

    /// Reads the next frame into `self.next`, starting a new pass at the end when looping.
    fn advance(&mut self) -> Result<()> {
        loop {
            if let Some(frame) = self
                .reader
                .next_frame()
                .map_err(|e| file_error(&self.path, e))?
            {
                let mut frame = frame;
                frame.time += self.pass_time;
                frame.rtp_time += self.pass_rtp;
                let gap = match self.last {
                    Some((time, rtp, _, _)) => (
                        frame.time.saturating_sub(time),
                        frame.rtp_time.saturating_sub(rtp),
                    ),
                    None => (Duration::ZERO, 0),
                };
                self.last = Some((frame.time, frame.rtp_time, gap.0, gap.1));
                self.next = Some(frame);
                return Ok(());
            }
            if self.reader.wants_input() {
                let mut chunk = vec![0u8; READ_CHUNK];
                let n = self
                    .file
                    .read(&mut chunk)
                    .with_context(|| format!("reading {}", self.path.display()))?;
                if n == 0 {
                    self.reader.finish();
                } else {
                    self.reader
                        .push(&chunk[..n])
                        .map_err(|e| file_error(&self.path, e))?;
                }
                continue;
            }
            // The end of the file.
            self.next = None;
            let Some((time, rtp, gap, gap_rtp)) = self.last else {
                bail!("{}: no frames in the file", self.path.display());
            };
            if !self.repeat {
                return Ok(());
            }
            // The next pass starts one frame after the last one, so RTP time keeps rising.
            let (step, step_rtp) = if gap.is_zero() {
                let step = Duration::from_secs_f64(1.0 / self.fps);
                (step, (step.as_secs_f64() * 90_000.0) as u64)
            } else {
                (gap, gap_rtp)
            };
            self.pass_time = time + step;
            self.pass_rtp = rtp + step_rtp;
            self.passes += 1;
            self.file = File::open(&self.path)
                .with_context(|| format!("cannot reopen {}", self.path.display()))?;
            self.reader = Reader::new(self.kind, self.fps)?;
        }
    }
}

fn file_error(path: &Path, err: media_file::Error) -> anyhow::Error {
    anyhow!("{}: {err}", path.display())
}

async fn stream(args: StreamArgs) -> Result<()> {
    let mut sources = Vec::new();
    for path in &args.files {
        sources.push(Source::open(path, args.fps, args.repeat)?);
    }
    let video = sources.iter().filter(|s| s.kind.is_video()).count();
    if video > 1 || sources.len() - video > 1 {
        bail!("give at most one video file and one audio file");
    }
    let codec = sources.iter().find_map(|s| match s.kind {
        Kind::Ivf => Some(VideoCodec::Vp8),
        Kind::H264 => Some(VideoCodec::H264),
        Kind::Ogg => None,
    });
    for source in &mut sources {
        source.advance()?;
    }
    let endpoint = match (&args.whip_url, &args.room) {
        (Some(url), _) => url.clone(),
        (None, Some(room)) => peer::whip::endpoint(&args.server, "whip", room),
        (None, None) => bail!("--room is required"),
    };
    let token = args.token.as_deref();
    let local_ip = peer::whip::local_ip_for(&endpoint).await?;
    let role = Role::Publish {
        audio: sources.len() > video,
        video: codec,
    };
    let (mut session, offer) = MediaSession::offer(role, local_ip)?;
    let whip = peer::whip::post_offer(&endpoint, token, &offer).await?;
    tracing::debug!(resource = %whip.resource, "WHIP session");
    let result = publish(&mut session, &whip.answer, &mut sources, &args).await;
    session.close();
    let deleted = peer::whip::delete(&whip.resource, token).await;
    let summary = result?;
    if let Err(err) = deleted {
        eprintln!("warning: could not end the session on the server: {err:#}");
    }
    if !args.quiet {
        eprintln!("{summary}");
    }
    Ok(())
}

/// Sends the frames in real time until the files end (or forever with `--loop`) or Ctrl-C.
async fn publish(
    session: &mut MediaSession,
    answer: &str,
    sources: &mut [Source],
    args: &StreamArgs,
) -> Result<String> {
    session.accept_answer(answer)?;
    let connect_by = Instant::now() + CONNECT_TIMEOUT;
    let mut interrupt = std::pin::pin!(interrupted());
    let terminal = !args.quiet && std::io::stderr().is_terminal();
    let mut start: Option<Instant> = None;
    let mut status_at = Instant::now();
    let mut keyframe_requests = 0u64;
    let mut stopped = false;
    loop {
        let now = Instant::now();
        let wake = match start {
            None => connect_by,
            Some(start) => sources
                .iter()
                .filter_map(|s| s.next.as_ref().map(|f| start + f.time))
                .min()
                .unwrap_or(now)
                .min(status_at),
        };
        let event = tokio::select! {
            event = session.next_event(Some(wake)) => event,
            () = &mut interrupt => {
                stopped = true;
                break;
            }
        };
        match event {
            MediaEvent::Connected => {
                tracing::debug!("connected");
                start = Some(Instant::now());
            }
            MediaEvent::Wake => {
                let Some(begun) = start else {
                    bail!(
                        "no media connection to the server within {CONNECT_TIMEOUT:?} (ICE/DTLS); \
                         is UDP to its media port blocked?"
                    );
                };
                let now = Instant::now();
                let mut begun = begun;
                for source in sources.iter_mut() {
                    while let Some(frame) = source.next.take() {
                        let due = begun + frame.time;
                        if due > now {
                            source.next = Some(frame);
                            break;
                        }
                        if now - due > LATE_RESET {
                            // After a stall, go on from here rather than send a burst.
                            tracing::debug!(path = %source.path.display(), "late; rebasing the clock");
                            begun = now - frame.time;
                            start = Some(begun);
                        }
                        session.write(source.media_kind(), frame.rtp_time, &frame.data)?;
                        source.frames += 1;
                        source.bytes += frame.data.len() as u64;
                        source.advance()?;
                    }
                }
                if now >= status_at {
                    status_at = now + STATUS_EVERY;
                    if terminal {
                        eprint!("\r{}\x1b[K", status(sources, now - begun));
                        let _ = std::io::stderr().flush();
                    }
                }
                if sources.iter().all(|s| s.next.is_none()) {
                    break;
                }
            }
            MediaEvent::KeyframeRequested => keyframe_requests += 1,
            MediaEvent::Counters { .. } | MediaEvent::Frame(_) => {}
            MediaEvent::Closed(reason) => bail!("the media session ended: {reason}"),
        }
    }
    if terminal {
        eprintln!();
    }
    // Let the pacer put the last frames on the wire.
    let drain_until = Instant::now() + Duration::from_millis(300);
    while let MediaEvent::Counters { .. }
    | MediaEvent::KeyframeRequested
    | MediaEvent::Frame(_)
    | MediaEvent::Connected = session.next_event(Some(drain_until)).await
    {}
    let elapsed = start.map_or(Duration::ZERO, |s| s.elapsed());
    let mut summary = format!(
        "{} {}",
        if stopped { "stopped after" } else { "streamed" },
        status(sources, elapsed)
    );
    if keyframe_requests > 0 {
        summary.push_str(&format!(
            " ({keyframe_requests} key frame requests; files cannot make key frames on demand)"
        ));
    }
    Ok(summary)
}

fn status(sources: &[Source], elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    let mut line = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    let seconds = elapsed.as_secs_f64().max(0.001);
    for source in sources {
        let what = if source.kind.is_video() {
            "video"
        } else {
            "audio"
        };
        line.push_str(&format!(
            "  {what} {} frames {:.0} kbit/s",
            source.frames,
            source.bytes as f64 * 8.0 / seconds / 1000.0
        ));
        if source.passes > 0 {
            line.push_str(&format!(" (pass {})", source.passes + 1));
        }
    }
    line
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
