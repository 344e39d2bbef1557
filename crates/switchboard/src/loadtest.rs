//! `switchboard loadtest`: native WHIP publishers, WHEP subscribers and SFU room members over
//! real sockets, to size an SFU. Publishers and members send synthetic media at real rates
//! (VP8-key-frame-shaped video, Opus-sized audio) carrying their send time, so the receivers on
//! this machine measure the latency through the server. Members join a room over signaling and
//! speak the browser's SFU protocol (`docs/sfu.md`): each sends its own tracks and receives
//! everyone else's, as in an M×M meeting.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use peer::media::{
    MediaEvent, MediaKind, MediaSession, ReceivedFrame, Role, TrackCounters, VideoCodec,
};
use peer::{SignalEvent, Signaling};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::share::DEFAULT_SERVER;

/// How long ICE and DTLS may take to come up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Subscribers and members setting up at the same time (HTTP or signaling + ICE + DTLS).
const CONNECT_CONCURRENCY: usize = 16;
/// How long a member waits before joining again when the server rate-limited its join.
const JOIN_RETRY: Duration = Duration::from_millis(500);
/// Audio packet interval (Opus's usual 20 ms).
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// A key frame every this often (and when a subscriber asks).
const KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);
/// At most one key frame asked for by a receiver per this long.
const KEYFRAME_MIN_GAP: Duration = Duration::from_millis(500);
/// Marks the synthetic payload: "SBLT", publisher index, sequence, send time.
const MAGIC: &[u8; 4] = b"SBLT";
const MARKER_LEN: usize = 4 + 4 + 4 + 8;
/// Where the marker sits: after a VP8 key frame's 10-byte header, after Opus's TOC byte.
const VIDEO_MARKER_AT: usize = 10;
const AUDIO_MARKER_AT: usize = 1;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  switchboard loadtest --room bench --publishers 1 --subscribers 200 --duration 30s
  switchboard loadtest --room stage --publishers 4 --subscribers 4 --audio-only --json
  switchboard loadtest --room meet --members 10 --video-bitrate 300k --json

Publishers (WHIP) and subscribers (WHEP) are live-stream peers. Members are room members as the
browser app is in SFU mode: each joins the room over signaling, sends one audio and one video
track (or audio only) and receives every other member's and publisher's tracks, so M members
make an M×M meeting: each receives M-1 audio (and M-1 video) streams. With --members,
--publishers and --subscribers default to 0; given explicitly, they join the same room.

Latency is from a publisher's or member's write to the arrival of the frame's first packet at a
subscriber or member, through the server; both ends are in this process, so the clocks agree.")]
pub(crate) struct LoadtestArgs {
    /// The room to publish into and play from (WHIP SERVER/whip/ROOM, WHEP SERVER/whep/ROOM,
    /// and the signaling room the members join).
    #[arg(long)]
    room: String,
    /// The Switchboard server.
    #[arg(long, env = "SWITCHBOARD_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    server: String,
    /// Bearer token for the WHIP and WHEP endpoints, and the members' access token.
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Publishers (each sends one video and one audio track, or audio only) [default: 1, or 0
    /// with --members].
    #[arg(long)]
    publishers: Option<usize>,
    /// Subscribers (each plays the room through WHEP) [default: 10, or 0 with --members].
    #[arg(long)]
    subscribers: Option<usize>,
    /// Room members through the SFU (each sends like a publisher and receives everyone else).
    #[arg(long, default_value_t = 0)]
    members: usize,
    /// How long to run, from the start: `30s`, `2m`, `500ms`.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Video bitrate per publisher and member: `1M`, `500k`, `250000` (bits per second).
    #[arg(long, default_value = "1M", value_parser = parse_bitrate)]
    video_bitrate: u64,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Audio bitrate per publisher and member (20 ms packets).
    #[arg(long, default_value = "48k", value_parser = parse_bitrate)]
    audio_bitrate: u64,
    /// Publishers and members send audio only (audio fan-out, as in the LiveKit audio
    /// benchmarks).
    #[arg(long)]
    audio_only: bool,
    /// Print the summary as JSON on standard output (for bench scripts).
    #[arg(long)]
    json: bool,
}

impl LoadtestArgs {
    fn publishers(&self) -> usize {
        self.publishers
            .unwrap_or(if self.members > 0 { 0 } else { 1 })
    }

    fn subscribers(&self) -> usize {
        self.subscribers
            .unwrap_or(if self.members > 0 { 0 } else { 10 })
    }
}

pub(crate) fn run(args: LoadtestArgs) -> Result<()> {
    if args.publishers() == 0 && args.subscribers() == 0 && args.members == 0 {
        bail!("nothing to do: --publishers, --subscribers and --members are all 0");
    }
    if args.fps == 0 || args.fps > 240 {
        bail!("--fps must be between 1 and 240");
    }
    // One socket per peer, plus the HTTP connections while they set up.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(loadtest(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary.json(&args))?);
    } else {
        print!("{}", summary.text(&args));
    }
    Ok(())
}

/// Parses `30s`, `2m`, `1h`, `500ms` or a plain number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 2m or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?} (ms, s, m, h)")),
    };
    if !(seconds.is_finite() && seconds > 0.0 && seconds < 1e7) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses `1M`, `1.5M`, `500k`, `64000` (bits per second).
pub(crate) fn parse_bitrate(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, scale) = match text.chars().last() {
        Some('k' | 'K') => (&text[..text.len() - 1], 1e3),
        Some('m' | 'M') => (&text[..text.len() - 1], 1e6),
        Some('g' | 'G') => (&text[..text.len() - 1], 1e9),
        _ => (text, 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a bitrate like 1M or 500k"))?;
    let bits = value * scale;
    if !(bits.is_finite() && (8_000.0..=1e10).contains(&bits)) {
        return Err(format!("{text:?} is out of range (8k to 10G)"));
    }
    Ok(bits as u64)
}

/// Counters shared by all peers, for the live progress line.
#[derive(Debug, Default)]
struct Totals {
    packets_out: AtomicU64,
    packets_in: AtomicU64,
    frames_in: AtomicU64,
    subscribers_connected: AtomicU64,
    members_connected: AtomicU64,
}

/// A latency histogram: buckets of 1/16 octave over microseconds.
#[derive(Debug, Clone)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
}

const BUCKETS_PER_OCTAVE: f64 = 16.0;
const OCTAVES: usize = 40;

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: vec![0; OCTAVES * BUCKETS_PER_OCTAVE as usize],
            count: 0,
            max: 0,
        }
    }

    fn record(&mut self, micros: u64) {
        let index = ((micros.max(1) as f64).log2() * BUCKETS_PER_OCTAVE) as usize;
        let index = index.min(self.buckets.len() - 1);
        self.buckets[index] += 1;
        self.count += 1;
        self.max = self.max.max(micros);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// The `q` quantile in milliseconds (the bucket's upper bound, within 4.4 %).
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let upper = 2f64.powf((index as f64 + 1.0) / BUCKETS_PER_OCTAVE);
                return Some((upper / 1000.0).min(self.max as f64 / 1000.0));
            }
        }
        Some(self.max as f64 / 1000.0)
    }
}

/// What a peer of the load test is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerRole {
    Publisher,
    Subscriber,
    Member,
}

/// What one peer did.
#[derive(Debug)]
struct PeerReport {
    role: PeerRole,
    connected: bool,
    connect_time: Option<Duration>,
    counters: BTreeMap<&'static str, TrackCounters>,
    frames: [u64; 2],
    bytes: [u64; 2],
    /// RTP packets received (subscribers, members; publishers count from the engine's
    /// statistics).
    packets: u64,
    latency: [Histogram; 2],
    foreign_frames: u64,
    /// Members: what they sent (`frames` and `bytes` count what they received).
    sent_frames: [u64; 2],
    sent_bytes: [u64; 2],
    /// Members: frames received per sender (the marker's index) and kind.
    senders: BTreeMap<u32, [u64; 2]>,
    /// Members: frames of their own that came back to them.
    own_frames: u64,
    /// Members: offers from the SFU they answered.
    offers: u64,
    error: Option<String>,
}

impl PeerReport {
    fn new(role: PeerRole) -> PeerReport {
        PeerReport {
            role,
            connected: false,
            connect_time: None,
            counters: BTreeMap::new(),
            frames: [0; 2],
            bytes: [0; 2],
            packets: 0,
            latency: [Histogram::new(), Histogram::new()],
            foreign_frames: 0,
            sent_frames: [0; 2],
            sent_bytes: [0; 2],
            senders: BTreeMap::new(),
            own_frames: 0,
            offers: 0,
            error: None,
        }
    }

    /// Accounts for a frame a subscriber or member received; returns the index of the
    /// publisher or member that sent it, when it carries a marker.
    fn received(&mut self, frame: &ReceivedFrame, totals: &Totals) -> Option<u32> {
        let at = match frame.kind {
            MediaKind::Audio => AUDIO_MARKER_AT,
            MediaKind::Video => VIDEO_MARKER_AT,
        };
        let k = kind_index(frame.kind);
        self.frames[k] += 1;
        self.bytes[k] += frame.data.len() as u64;
        self.packets += frame.packets;
        totals.frames_in.fetch_add(1, Ordering::Relaxed);
        totals
            .packets_in
            .fetch_add(frame.packets, Ordering::Relaxed);
        match marker(&frame.data, at) {
            Some((sender, sent_micros)) => {
                let arrived =
                    unix_micros().saturating_sub(frame.arrived.elapsed().as_micros() as u64);
                self.latency[k].record(arrived.saturating_sub(sent_micros));
                Some(sender)
            }
            None => {
                self.foreign_frames += 1;
                None
            }
        }
    }
}

fn kind_index(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

#[derive(Debug, Clone)]
struct Plan {
    /// Marker index of the first member (publishers come first).
    first_member: u32,
    server: String,
    room: String,
    token: Option<String>,
    local_ip: IpAddr,
    audio_only: bool,
    fps: u32,
    video_frame: usize,
    audio_packet: usize,
    stop: Instant,
}

async fn loadtest(args: &LoadtestArgs) -> Result<Summary> {
    let whip = peer::whip::endpoint(&args.server, "whip", &args.room);
    let local_ip = peer::whip::local_ip_for(&whip).await?;
    let started = Instant::now();
    let (publishers, subscribers) = (args.publishers(), args.subscribers());
    let plan = Arc::new(Plan {
        first_member: publishers as u32,
        server: args.server.clone(),
        room: args.room.clone(),
        token: args.token.clone(),
        local_ip,
        audio_only: args.audio_only,
        fps: args.fps,
        video_frame: ((args.video_bitrate / 8 / u64::from(args.fps)) as usize).max(64),
        audio_packet: ((args.audio_bitrate / 8 / 50) as usize).max(MARKER_LEN + 1),
        stop: started + args.duration,
    });
    let totals = Arc::new(Totals::default());
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..publishers {
        let (plan, totals) = (plan.clone(), totals.clone());
        tasks.spawn(async move { publisher(index as u32, &plan, &totals).await });
    }
    // Subscribers and members come once the publishers are in the room, a few at a time.
    if publishers > 0 && subscribers + args.members > 0 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    for _ in 0..subscribers {
        let (plan, totals, gate) = (plan.clone(), totals.clone(), gate.clone());
        tasks.spawn(async move { subscriber(&plan, &totals, &gate).await });
    }
    for index in 0..args.members {
        let (plan, totals, gate) = (plan.clone(), totals.clone(), gate.clone());
        let index = plan.first_member + index as u32;
        tasks.spawn(async move { member(index, &plan, &totals, &gate).await });
    }
    let progress = !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut reports = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (0u64, 0u64, Instant::now());
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(report)) => reports.push(report),
                Some(Err(err)) => {
                    let mut report = PeerReport::new(PeerRole::Subscriber);
                    report.error = Some(format!("task failed: {err}"));
                    reports.push(report);
                }
                None => break,
            },
            _ = tick.tick(), if progress => {
                let now = Instant::now();
                let out = totals.packets_out.load(Ordering::Relaxed);
                let inn = totals.packets_in.load(Ordering::Relaxed);
                let secs = (now - last.2).as_secs_f64().max(0.001);
                eprint!(
                    "\r{:>5.1} s  subscribers {}/{}  members {}/{}  packets/s out {:.0}  in {:.0}  frames in {}\x1b[K",
                    (now - started).as_secs_f64(),
                    totals.subscribers_connected.load(Ordering::Relaxed),
                    subscribers,
                    totals.members_connected.load(Ordering::Relaxed),
                    args.members,
                    (out - last.0) as f64 / secs,
                    (inn - last.1) as f64 / secs,
                    totals.frames_in.load(Ordering::Relaxed),
                );
                last = (out, inn, now);
            }
        }
    }
    if progress {
        eprintln!();
    }
    Ok(Summary::from_reports(reports, started.elapsed()))
}

/// Sets up a WHIP or WHEP session; returns it connected, with the resource to DELETE.
async fn connect(
    plan: &Plan,
    role: Role,
    report: &mut PeerReport,
) -> Result<(MediaSession, String)> {
    let kind = if matches!(role, Role::Play) {
        "whep"
    } else {
        "whip"
    };
    let endpoint = peer::whip::endpoint(&plan.server, kind, &plan.room);
    let begun = Instant::now();
    let (mut session, offer) = MediaSession::offer(role, plan.local_ip)?;
    let resource = peer::whip::post_offer(&endpoint, plan.token.as_deref(), &offer).await?;
    session.accept_answer(&resource.answer)?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match session.next_event(Some(deadline)).await {
            MediaEvent::Connected => break,
            MediaEvent::Wake => {
                let _ = peer::whip::delete(&resource.resource, plan.token.as_deref()).await;
                bail!("ICE/DTLS did not connect within {CONNECT_TIMEOUT:?}");
            }
            MediaEvent::Closed(reason) => bail!("closed while connecting: {reason}"),
            _ => {}
        }
    }
    report.connected = true;
    report.connect_time = Some(begun.elapsed());
    Ok((session, resource.resource))
}

/// Writes the synthetic media of one publisher or member when it is due.
#[derive(Debug)]
struct MediaClock {
    index: u32,
    frame_interval: Duration,
    next_video: Option<Instant>,
    next_audio: Instant,
    video_seq: u32,
    audio_seq: u32,
    last_key: Option<Instant>,
    want_key: bool,
    buffer: Vec<u8>,
}

impl MediaClock {
    fn new(index: u32, plan: &Plan) -> MediaClock {
        let start = Instant::now();
        MediaClock {
            index,
            frame_interval: Duration::from_secs_f64(1.0 / f64::from(plan.fps)),
            next_video: (!plan.audio_only).then_some(start),
            next_audio: start,
            video_seq: 0,
            audio_seq: 0,
            last_key: None,
            want_key: true,
            buffer: Vec::new(),
        }
    }

    /// When the next frame is due, or `stop`.
    fn wake(&self, stop: Instant) -> Instant {
        self.next_video
            .map_or(self.next_audio, |v| v.min(self.next_audio))
            .min(stop)
    }

    /// Writes the frames due at `now`, counting them into `frames` and `bytes` (per kind).
    fn write_due(
        &mut self,
        session: &mut MediaSession,
        plan: &Plan,
        now: Instant,
        frames: &mut [u64; 2],
        bytes: &mut [u64; 2],
    ) -> Result<()> {
        if let Some(due) = self.next_video
            && due <= now
        {
            let since_key = self.last_key.map(|k| now - k);
            // A request is served at most every 500 ms, as a browser encoder would; one that
            // comes sooner waits for that instead of being dropped.
            let key = since_key.is_none_or(|since| {
                since >= KEYFRAME_INTERVAL || (self.want_key && since >= KEYFRAME_MIN_GAP)
            });
            if key {
                self.last_key = Some(now);
                self.want_key = false;
            }
            synthetic_vp8(
                &mut self.buffer,
                plan.video_frame,
                key,
                self.index,
                self.video_seq,
            );
            let rtp = u64::from(self.video_seq) * 90_000 / u64::from(plan.fps);
            session.write(MediaKind::Video, rtp, &self.buffer)?;
            frames[1] += 1;
            bytes[1] += self.buffer.len() as u64;
            self.video_seq = self.video_seq.wrapping_add(1);
            self.next_video = Some((due + self.frame_interval).max(now - self.frame_interval));
        }
        if self.next_audio <= now {
            synthetic_opus(
                &mut self.buffer,
                plan.audio_packet,
                self.index,
                self.audio_seq,
            );
            let rtp = u64::from(self.audio_seq) * 960;
            session.write(MediaKind::Audio, rtp, &self.buffer)?;
            frames[0] += 1;
            bytes[0] += self.buffer.len() as u64;
            self.audio_seq = self.audio_seq.wrapping_add(1);
            self.next_audio = (self.next_audio + AUDIO_INTERVAL).max(now - AUDIO_INTERVAL);
        }
        Ok(())
    }

    /// The receiving side asked for a key frame.
    fn keyframe_requested(&mut self) {
        self.want_key = true;
    }
}

async fn publisher(index: u32, plan: &Plan, totals: &Totals) -> PeerReport {
    let mut report = PeerReport::new(PeerRole::Publisher);
    let role = Role::Publish {
        audio: true,
        video: (!plan.audio_only).then_some(VideoCodec::Vp8),
    };
    let (mut session, resource) = match connect(plan, role, &mut report).await {
        Ok(connected) => connected,
        Err(err) => {
            report.error = Some(format!("publisher: {err:#}"));
            return report;
        }
    };
    let mut clock = MediaClock::new(index, plan);
    let mut seen = CounterDeltas::default();
    loop {
        match session.next_event(Some(clock.wake(plan.stop))).await {
            MediaEvent::Wake => {
                let now = Instant::now();
                if now >= plan.stop {
                    break;
                }
                let written = clock.write_due(
                    &mut session,
                    plan,
                    now,
                    &mut report.frames,
                    &mut report.bytes,
                );
                if let Err(err) = written {
                    report.error = Some(format!("publisher: {err:#}"));
                    break;
                }
            }
            MediaEvent::KeyframeRequested => clock.keyframe_requested(),
            MediaEvent::Counters { kind, counters } => {
                let delta = seen.update(kind, counters);
                totals.packets_out.fetch_add(delta, Ordering::Relaxed);
                report.counters.insert(kind_name(kind), counters);
            }
            MediaEvent::Closed(reason) => {
                report.error = Some(format!("publisher: session ended: {reason}"));
                break;
            }
            MediaEvent::Connected | MediaEvent::Frame(_) => {}
        }
    }
    finish(&mut session, &resource, plan, &mut report).await;
    report
}

async fn subscriber(plan: &Plan, totals: &Totals, gate: &Semaphore) -> PeerReport {
    let mut report = PeerReport::new(PeerRole::Subscriber);
    let connected = {
        let Ok(_permit) = gate.acquire().await else {
            report.error = Some("subscriber: setup gate closed".into());
            return report;
        };
        connect(plan, Role::Play, &mut report).await
    };
    let (mut session, resource) = match connected {
        Ok(connected) => connected,
        Err(err) => {
            report.error = Some(format!("subscriber: {err:#}"));
            return report;
        }
    };
    totals.subscribers_connected.fetch_add(1, Ordering::Relaxed);
    loop {
        match session.next_event(Some(plan.stop)).await {
            MediaEvent::Wake => break,
            MediaEvent::Frame(frame) => {
                report.received(&frame, totals);
            }
            MediaEvent::Counters { kind, counters } => {
                report.counters.insert(kind_name(kind), counters);
            }
            MediaEvent::Closed(reason) => {
                report.error = Some(format!("subscriber: session ended: {reason}"));
                break;
            }
            MediaEvent::Connected | MediaEvent::KeyframeRequested => {}
        }
    }
    finish(&mut session, &resource, plan, &mut report).await;
    report
}

/// A room member through the SFU (`docs/sfu.md`), as the browser app is in SFU mode: joins the
/// room over signaling, sends its `sfu` offer (a data channel labelled `sfu`, one send-only
/// audio and, unless audio only, one send-only video track), then sends media like a
/// publisher and receives every other member's tracks, whose offers the session answers over
/// the data channel.
async fn member(index: u32, plan: &Plan, totals: &Totals, gate: &Semaphore) -> PeerReport {
    let mut report = PeerReport::new(PeerRole::Member);
    let joined = {
        let Ok(_permit) = gate.acquire().await else {
            report.error = Some("member: setup gate closed".into());
            return report;
        };
        join_member(index, plan, &mut report).await
    };
    let (mut signaling, mut session) = match joined {
        Ok(joined) => joined,
        Err(err) => {
            report.error = Some(format!("member: {err:#}"));
            return report;
        }
    };
    totals.members_connected.fetch_add(1, Ordering::Relaxed);
    let own_peer = signaling.welcome.peer.clone();
    let mut clock = MediaClock::new(index, plan);
    let mut seen = CounterDeltas::default();
    let mut sent = ([0u64; 2], [0u64; 2]);
    loop {
        let event = tokio::select! {
            biased;
            event = session.next_event(Some(clock.wake(plan.stop))) => event,
            signal = signaling.recv() => match signal {
                SignalEvent::Closed(reason) => {
                    report.error = Some(format!("member: signaling closed: {reason}"));
                    break;
                }
                SignalEvent::Error { code, message } => {
                    report.error = Some(format!("member: signaling error {code}: {message}"));
                    continue;
                }
                _ => continue,
            },
        };
        match event {
            MediaEvent::Wake => {
                let now = Instant::now();
                if now >= plan.stop {
                    break;
                }
                if let Err(err) = clock.write_due(&mut session, plan, now, &mut sent.0, &mut sent.1)
                {
                    report.error = Some(format!("member: {err:#}"));
                    break;
                }
            }
            MediaEvent::Frame(frame) => {
                let sender = report.received(&frame, totals);
                let k = kind_index(frame.kind);
                if sender == Some(index) || frame.from.as_deref() == Some(own_peer.as_str()) {
                    report.own_frames += 1;
                } else if let Some(sender) = sender {
                    report.senders.entry(sender).or_default()[k] += 1;
                }
            }
            MediaEvent::KeyframeRequested => clock.keyframe_requested(),
            MediaEvent::Counters { kind, counters } => {
                let delta = seen.update(kind, counters);
                totals.packets_out.fetch_add(delta, Ordering::Relaxed);
                report.counters.insert(kind_name(kind), counters);
            }
            MediaEvent::Closed(reason) => {
                report.error = Some(format!("member: session ended: {reason}"));
                break;
            }
            MediaEvent::Connected => {}
        }
    }
    (report.sent_frames, report.sent_bytes) = sent;
    report.offers = session.offers_answered();
    if report.own_frames > 0 && report.error.is_none() {
        report.error = Some("member: its own media came back to it".into());
    }
    session.close();
    signaling.leave().await;
    report
}

/// Joins the room, has the SFU answer the member's offer, and waits until ICE and DTLS are up.
async fn join_member(
    index: u32,
    plan: &Plan,
    report: &mut PeerReport,
) -> Result<(Signaling, MediaSession)> {
    let begun = Instant::now();
    let deadline = begun + CONNECT_TIMEOUT;
    let name = format!("loadtest member {}", index - plan.first_member + 1);
    let mut signaling = loop {
        match Signaling::join_with_token(&plan.server, &plan.room, &name, plan.token.as_deref())
            .await
        {
            Ok(signaling) => break signaling,
            // Joins from one address are rate limited (docs/protocol.md): wait, as a person
            // pressing "join" again would.
            Err(err)
                if format!("{err:#}").contains("rate_limited")
                    && Instant::now() + JOIN_RETRY < deadline =>
            {
                tokio::time::sleep(JOIN_RETRY).await;
            }
            Err(err) => return Err(err.context("joining the room")),
        }
    };
    let role = Role::Member {
        audio: true,
        video: (!plan.audio_only).then_some(VideoCodec::Vp8),
    };
    let (mut session, offer) = MediaSession::offer(role, plan.local_ip)?;
    signaling.sfu_offer(&offer);
    let answer = loop {
        let signal = tokio::time::timeout_at(deadline.into(), signaling.recv()).await;
        match signal {
            Err(_) => bail!("the SFU did not answer within {CONNECT_TIMEOUT:?}"),
            Ok(SignalEvent::Sfu(Ok(sdp))) => break sdp,
            Ok(SignalEvent::Sfu(Err(reason))) => bail!("the SFU refused the offer: {reason}"),
            Ok(SignalEvent::Error { code, message }) => {
                bail!("signaling error {code}: {message}")
            }
            Ok(SignalEvent::Closed(reason)) => bail!("signaling closed: {reason}"),
            Ok(_) => {}
        }
    };
    session.accept_answer(&answer)?;
    loop {
        match session.next_event(Some(deadline)).await {
            MediaEvent::Connected => break,
            MediaEvent::Wake => {
                session.close();
                bail!("ICE/DTLS did not connect within {CONNECT_TIMEOUT:?}");
            }
            MediaEvent::Closed(reason) => bail!("closed while connecting: {reason}"),
            _ => {}
        }
    }
    report.connected = true;
    report.connect_time = Some(begun.elapsed());
    Ok((signaling, session))
}

/// Closes the session and DELETEs its resource.
async fn finish(session: &mut MediaSession, resource: &str, plan: &Plan, report: &mut PeerReport) {
    session.close();
    if let Err(err) = peer::whip::delete(resource, plan.token.as_deref()).await
        && report.error.is_none()
    {
        report.error = Some(format!("DELETE: {err:#}"));
    }
}

/// Turns the engine's running totals into increments for the live counters.
#[derive(Debug, Default)]
struct CounterDeltas {
    packets: [u64; 2],
}

impl CounterDeltas {
    fn update(&mut self, kind: MediaKind, counters: TrackCounters) -> u64 {
        let last = &mut self.packets[kind_index(kind)];
        let delta = counters.packets.saturating_sub(*last);
        *last = counters.packets.max(*last);
        delta
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn put_marker(buffer: &mut [u8], at: usize, publisher: u32, seq: u32) {
    let marker = &mut buffer[at..at + MARKER_LEN];
    marker[..4].copy_from_slice(MAGIC);
    marker[4..8].copy_from_slice(&publisher.to_be_bytes());
    marker[8..12].copy_from_slice(&seq.to_be_bytes());
    marker[12..20].copy_from_slice(&unix_micros().to_be_bytes());
}

/// The sender's index and the send time in a synthetic payload, when `data` is one.
fn marker(data: &[u8], at: usize) -> Option<(u32, u64)> {
    let marker = data.get(at..at + MARKER_LEN)?;
    if &marker[..4] != MAGIC {
        return None;
    }
    let mut sender = [0u8; 4];
    sender.copy_from_slice(&marker[4..8]);
    let mut time = [0u8; 8];
    time.copy_from_slice(&marker[12..20]);
    Some((u32::from_be_bytes(sender), u64::from_be_bytes(time)))
}

/// A frame shaped like VP8 (RFC 6386 section 9.1: frame tag, and on key frames the start code
/// and dimensions), so a server that looks for key frames finds them.
fn synthetic_vp8(buffer: &mut Vec<u8>, size: usize, key: bool, publisher: u32, seq: u32) {
    let size = size.max(VIDEO_MARKER_AT + MARKER_LEN);
    buffer.clear();
    buffer.resize(size, 0);
    let first_partition = ((size - VIDEO_MARKER_AT) as u32).min((1 << 19) - 1);
    // key_frame (0 = key), version 0, show_frame 1, first_part_size.
    let tag = u32::from(!key) | (1 << 4) | (first_partition << 5);
    buffer[..3].copy_from_slice(&tag.to_le_bytes()[..3]);
    if key {
        buffer[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
        buffer[6..8].copy_from_slice(&640u16.to_le_bytes());
        buffer[8..10].copy_from_slice(&360u16.to_le_bytes());
    }
    put_marker(buffer, VIDEO_MARKER_AT, publisher, seq);
    for (i, byte) in buffer[VIDEO_MARKER_AT + MARKER_LEN..]
        .iter_mut()
        .enumerate()
    {
        *byte = (i as u8).wrapping_mul(31) ^ (seq as u8);
    }
}

/// A packet shaped like Opus: TOC byte for 20 ms CELT full band, mono, one frame.
fn synthetic_opus(buffer: &mut Vec<u8>, size: usize, publisher: u32, seq: u32) {
    let size = size.max(AUDIO_MARKER_AT + MARKER_LEN);
    buffer.clear();
    buffer.resize(size, 0x55);
    buffer[0] = 0xf8;
    put_marker(buffer, AUDIO_MARKER_AT, publisher, seq);
}

/// The figures of a run.
#[derive(Debug)]
struct Summary {
    elapsed: Duration,
    publishers: usize,
    publishers_connected: usize,
    subscribers: usize,
    subscribers_connected: usize,
    packets_out: u64,
    bytes_out: u64,
    frames_out: [u64; 2],
    packets_in: u64,
    bytes_in: u64,
    frames_in: [u64; 2],
    foreign_frames: u64,
    /// NACKs and PLIs the subscribers sent (loss and key-frame requests).
    nacks: u64,
    plis: u64,
    latency: [Histogram; 2],
    connect: Histogram,
    errors: BTreeMap<String, u64>,
    meeting: Meeting,
}

/// What the room members did (part of the totals above too).
#[derive(Debug, Default)]
struct Meeting {
    members: usize,
    connected: usize,
    packets_out: u64,
    frames_out: [u64; 2],
    packets_in: u64,
    bytes_in: u64,
    frames_in: [u64; 2],
    /// Per kind, the fewest and most other senders a connected member received from.
    senders: [Option<(usize, usize)>; 2],
    /// Streams (sender, kind) received by the connected members, all together.
    streams: usize,
    own_frames: u64,
    offers: u64,
}

impl Summary {
    fn from_reports(reports: Vec<PeerReport>, elapsed: Duration) -> Summary {
        let mut s = Summary {
            elapsed,
            publishers: 0,
            publishers_connected: 0,
            subscribers: 0,
            subscribers_connected: 0,
            packets_out: 0,
            bytes_out: 0,
            frames_out: [0; 2],
            packets_in: 0,
            bytes_in: 0,
            frames_in: [0; 2],
            foreign_frames: 0,
            nacks: 0,
            plis: 0,
            latency: [Histogram::new(), Histogram::new()],
            connect: Histogram::new(),
            errors: BTreeMap::new(),
            meeting: Meeting::default(),
        };
        for report in &reports {
            let packets: u64 = report.counters.values().map(|c| c.packets).sum();
            let connected = usize::from(report.connected);
            let (sent_frames, sent_bytes) = match report.role {
                PeerRole::Publisher => (report.frames, report.bytes),
                PeerRole::Member => (report.sent_frames, report.sent_bytes),
                PeerRole::Subscriber => ([0; 2], [0; 2]),
            };
            match report.role {
                PeerRole::Publisher => {
                    s.publishers += 1;
                    s.publishers_connected += connected;
                }
                PeerRole::Subscriber => {
                    s.subscribers += 1;
                    s.subscribers_connected += connected;
                }
                PeerRole::Member => s.meeting.add(report, packets),
            }
            if report.role != PeerRole::Subscriber {
                s.packets_out += packets;
                s.bytes_out += sent_bytes.iter().sum::<u64>();
                for (total, frames) in s.frames_out.iter_mut().zip(sent_frames) {
                    *total += frames;
                }
            }
            if report.role != PeerRole::Publisher {
                s.packets_in += report.packets;
                s.bytes_in += report.bytes.iter().sum::<u64>();
                for k in 0..2 {
                    s.frames_in[k] += report.frames[k];
                    s.latency[k].merge(&report.latency[k]);
                }
                s.foreign_frames += report.foreign_frames;
            }
            if report.role == PeerRole::Subscriber {
                s.nacks += report.counters.values().map(|c| c.nacks).sum::<u64>();
                s.plis += report.counters.values().map(|c| c.plis).sum::<u64>();
            }
            if let Some(time) = report.connect_time {
                s.connect.record(time.as_micros() as u64);
            }
            if let Some(error) = &report.error {
                let short: String = error.chars().take(160).collect();
                *s.errors.entry(short).or_default() += 1;
            }
        }
        s
    }

    /// Streams the connected members should each receive from the others: one per kind from
    /// every other connected member and every connected publisher.
    fn streams_expected(&self, args: &LoadtestArgs) -> usize {
        let kinds = if args.audio_only { 1 } else { 2 };
        let connected = self.meeting.connected;
        connected * (connected.saturating_sub(1) + self.publishers_connected) * kinds
    }

    fn rate(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64().max(0.001)
    }

    fn all_latency(&self) -> Histogram {
        let mut all = self.latency[0].clone();
        all.merge(&self.latency[1]);
        all
    }

    fn text(&self, args: &LoadtestArgs) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
        let mut out = String::new();
        out.push_str(&format!(
            "room {}: {:.1} s, publishers {}/{} connected, subscribers {}/{} connected\n",
            args.room,
            self.elapsed.as_secs_f64(),
            self.publishers_connected,
            self.publishers,
            self.subscribers_connected,
            self.subscribers
        ));
        if self.meeting.members > 0 {
            let m = &self.meeting;
            let range = |r: Option<(usize, usize)>| {
                r.map_or("-".to_owned(), |(lo, hi)| {
                    if lo == hi {
                        lo.to_string()
                    } else {
                        format!("{lo} to {hi}")
                    }
                })
            };
            out.push_str(&format!(
                "members   {}/{} connected, each heard audio from {} and video from {} others \
                 ({} of {} streams), {} offers answered, {} own frames came back\n",
                m.connected,
                m.members,
                range(m.senders[0]),
                range(m.senders[1]),
                m.streams,
                self.streams_expected(args),
                m.offers,
                m.own_frames,
            ));
        }
        out.push_str(&format!(
            "sent      {:>10.0} packets/s  {:>8.2} Mbit/s  ({} video frames, {} audio packets)\n",
            self.rate(self.packets_out),
            self.rate(self.bytes_out) * 8.0 / 1e6,
            self.frames_out[1],
            self.frames_out[0]
        ));
        out.push_str(&format!(
            "received  {:>10.0} packets/s  {:>8.2} Mbit/s  ({} video frames, {} audio packets)\n",
            self.rate(self.packets_in),
            self.rate(self.bytes_in) * 8.0 / 1e6,
            self.frames_in[1],
            self.frames_in[0]
        ));
        let all = self.all_latency();
        out.push_str(&format!(
            "latency   p50 {}  p99 {}  max {}  (audio p99 {}, video p99 {}; sender's write to first packet at a receiver)\n",
            ms(all.quantile_ms(0.5)),
            ms(all.quantile_ms(0.99)),
            ms((all.count > 0).then(|| all.max as f64 / 1000.0)),
            ms(self.latency[0].quantile_ms(0.99)),
            ms(self.latency[1].quantile_ms(0.99)),
        ));
        out.push_str(&format!(
            "loss      {} NACKs, {} PLIs sent by the subscribers\n",
            self.nacks, self.plis
        ));
        out.push_str(&format!(
            "setup     p50 {}  max {}  (POST or join to connected)\n",
            ms(self.connect.quantile_ms(0.5)),
            ms((self.connect.count > 0).then(|| self.connect.max as f64 / 1000.0)),
        ));
        if self.foreign_frames > 0 {
            out.push_str(&format!(
                "note      {} frames did not come from this load test's publishers or members\n",
                self.foreign_frames
            ));
        }
        if self.errors.is_empty() {
            out.push_str("errors    none\n");
        } else {
            for (error, count) in &self.errors {
                out.push_str(&format!("error     {count} x {error}\n"));
            }
        }
        out
    }

    fn json(&self, args: &LoadtestArgs) -> serde_json::Value {
        let all = self.all_latency();
        let hist = |h: &Histogram| {
            json!({
                "count": h.count,
                "p50_ms": h.quantile_ms(0.5),
                "p99_ms": h.quantile_ms(0.99),
                "max_ms": (h.count > 0).then(|| h.max as f64 / 1000.0),
            })
        };
        json!({
            "room": args.room,
            "duration_s": self.elapsed.as_secs_f64(),
            "publishers": { "requested": self.publishers, "connected": self.publishers_connected },
            "subscribers": { "requested": self.subscribers, "connected": self.subscribers_connected },
            "members": self.meeting_json(args),
            "sent": {
                "packets": self.packets_out,
                "packets_per_s": self.rate(self.packets_out),
                "bytes": self.bytes_out,
                "video_frames": self.frames_out[1],
                "audio_packets": self.frames_out[0],
            },
            "received": {
                "packets": self.packets_in,
                "packets_per_s": self.rate(self.packets_in),
                "bytes": self.bytes_in,
                "video_frames": self.frames_in[1],
                "audio_packets": self.frames_in[0],
                "foreign_frames": self.foreign_frames,
                "nacks_sent": self.nacks,
                "plis_sent": self.plis,
            },
            "latency": { "all": hist(&all), "audio": hist(&self.latency[0]), "video": hist(&self.latency[1]) },
            "setup": hist(&self.connect),
            "errors": self.errors,
        })
    }
}

impl Summary {
    fn meeting_json(&self, args: &LoadtestArgs) -> serde_json::Value {
        let m = &self.meeting;
        let range = |r: Option<(usize, usize)>| json!({ "min": r.map(|(lo, _)| lo), "max": r.map(|(_, hi)| hi) });
        json!({
            "requested": m.members,
            "connected": m.connected,
            "audio_from": range(m.senders[0]),
            "video_from": range(m.senders[1]),
            "streams_received": m.streams,
            "streams_expected": self.streams_expected(args),
            "own_frames": m.own_frames,
            "offers_answered": m.offers,
            "sent": {
                "packets": m.packets_out,
                "video_frames": m.frames_out[1],
                "audio_packets": m.frames_out[0],
            },
            "received": {
                "packets": m.packets_in,
                "packets_per_s": self.rate(m.packets_in),
                "bytes": m.bytes_in,
                "video_frames": m.frames_in[1],
                "audio_packets": m.frames_in[0],
            },
        })
    }
}

impl Meeting {
    fn add(&mut self, report: &PeerReport, packets_out: u64) {
        self.members += 1;
        self.packets_out += packets_out;
        self.packets_in += report.packets;
        self.bytes_in += report.bytes.iter().sum::<u64>();
        for k in 0..2 {
            self.frames_out[k] += report.sent_frames[k];
            self.frames_in[k] += report.frames[k];
        }
        self.own_frames += report.own_frames;
        self.offers += report.offers;
        if !report.connected {
            return;
        }
        self.connected += 1;
        for k in 0..2 {
            let heard = report.senders.values().filter(|f| f[k] > 0).count();
            self.streams += heard;
            self.senders[k] = Some(match self.senders[k] {
                Some((lo, hi)) => (lo.min(heard), hi.max(heard)),
                None => (heard, heard),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_bitrates() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_bitrate("1M"), Ok(1_000_000));
        assert_eq!(parse_bitrate("1.5M"), Ok(1_500_000));
        assert_eq!(parse_bitrate("500k"), Ok(500_000));
        assert_eq!(parse_bitrate("64000"), Ok(64_000));
        assert!(parse_bitrate("fast").is_err());
        assert!(parse_bitrate("1").is_err());
    }

    #[test]
    fn synthetic_frames_carry_their_marker() {
        let mut buffer = Vec::new();
        synthetic_vp8(&mut buffer, 4000, true, 3, 9);
        assert_eq!(buffer.len(), 4000);
        assert_eq!(buffer[0] & 1, 0, "key frame");
        assert_eq!(&buffer[3..6], &[0x9d, 0x01, 0x2a]);
        let (sender, sent) = marker(&buffer, VIDEO_MARKER_AT).expect("marker");
        assert_eq!(sender, 3);
        assert!(unix_micros() >= sent);
        synthetic_vp8(&mut buffer, 10, false, 3, 10);
        assert_eq!(buffer[0] & 1, 1, "delta frame");
        assert!(marker(&buffer, VIDEO_MARKER_AT).is_some());
        synthetic_opus(&mut buffer, 120, 0, 1);
        assert_eq!(media_file::opus_packet_samples(&buffer), Some(960));
        assert!(marker(&buffer, AUDIO_MARKER_AT).is_some());
        assert_eq!(marker(b"not a marker at all, no", 1), None);
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 10);
        }
        let p50 = h.quantile_ms(0.5).expect("p50");
        assert!((4.8..=5.3).contains(&p50), "{p50}");
        let p99 = h.quantile_ms(0.99).expect("p99");
        assert!((9.8..=10.0).contains(&p99), "{p99}");
        assert_eq!(Histogram::new().quantile_ms(0.5), None);
    }
}
