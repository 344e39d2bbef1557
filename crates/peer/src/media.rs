//! Media sessions for WHIP (publish), WHEP (play) and SFU room members: one str0m peer
//! connection over one UDP socket, offering to a server that answers as ICE-lite with its
//! candidates in the answer.
//!
//! A room member ([`Role::Member`]) speaks the SFU's side of `docs/sfu.md`: its offer carries a
//! data channel labelled `sfu` next to its send-only tracks, and the session itself answers
//! every `offer` the server sends over that channel, so the member receives everyone else's
//! tracks without the caller taking part in the renegotiation.
//!
//! A [`MediaSession`] is cheap enough to run hundreds in one process (`switchboard loadtest`):
//! no task of its own, no channel hop; the caller drives it with [`MediaSession::next_event`],
//! which also wakes it when its next frame is due. Every call into str0m goes through
//! [`guarded`], so a panic in the engine ends that session, not the process.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelData, ChannelId};
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig, RtcError};
use tokio::net::UdpSocket;
use tracing::{debug, trace};

pub use str0m::format::Codec;
pub use str0m::media::MediaKind;

/// Largest datagram we expect.
const RECV_BUFFER: usize = 2048;
/// Datagrams handed to the engine before its output is drained again.
const RECV_BATCH: usize = 16;
/// Kernel socket buffers: a key frame is a burst of packets.
const SOCKET_BUFFER: usize = 1024 * 1024;
/// The label of the SFU's control channel (`docs/sfu.md`).
const CONTROL_LABEL: &str = "sfu";
/// Largest control message read from the server; an offer for a room of 100 is far below.
const MAX_CONTROL_BYTES: usize = 1024 * 1024;

/// The video codecs a publisher can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8 (RFC 7741).
    Vp8,
    /// H.264, packetization mode 1 (RFC 6184).
    H264,
}

/// What a session does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// WHIP: send an audio track (Opus) and/or a video track.
    Publish {
        /// Send Opus audio.
        audio: bool,
        /// Send video in this codec.
        video: Option<VideoCodec>,
    },
    /// WHEP: receive one audio and one video track (Opus; VP8 or H.264).
    Play,
    /// A member of an SFU room (`docs/sfu.md`): sends its tracks like a publisher, with a data
    /// channel labelled `sfu`, and receives every other member's tracks (Opus; VP8 or H.264)
    /// as the server offers them over that channel. The offer goes to the server in a
    /// signaling `sfu` message, not to a WHIP endpoint.
    Member {
        /// Send Opus audio.
        audio: bool,
        /// Send video in this codec.
        video: Option<VideoCodec>,
    },
}

/// A whole frame (or audio packet) that arrived.
#[derive(Debug)]
pub struct ReceivedFrame {
    /// Audio or video.
    pub kind: MediaKind,
    /// The codec it is in.
    pub codec: Codec,
    /// The depacketized frame: a VP8 frame, H.264 access unit (Annex B) or Opus packet.
    pub data: Vec<u8>,
    /// Its RTP time, in the codec's clock.
    pub rtp_time: u64,
    /// When its first packet arrived.
    pub arrived: Instant,
    /// False when packets were lost before it.
    pub contiguous: bool,
    /// RTP packets it came in.
    pub packets: u64,
    /// Whose media it is, as the SFU named the track's publisher (its signaling peer id, or
    /// `whip-…`): room members only.
    pub from: Option<String>,
}

/// Counters of one direction of one track, from the engine's periodic statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackCounters {
    /// RTP packets.
    pub packets: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// NACKs (sent when receiving, received when sending).
    pub nacks: u64,
    /// Picture loss indications (sent when receiving, received when sending).
    pub plis: u64,
}

/// What the session reports.
#[derive(Debug)]
pub enum MediaEvent {
    /// ICE and DTLS are up: media can flow.
    Connected,
    /// A frame arrived (players).
    Frame(ReceivedFrame),
    /// The remote side asks for a key frame on the video track (publishers).
    KeyframeRequested,
    /// Updated counters for a track: `sent` for publishers, received for players.
    Counters {
        /// Audio or video.
        kind: MediaKind,
        /// The totals so far.
        counters: TrackCounters,
    },
    /// The wake-up time passed to [`MediaSession::next_event`] has come.
    Wake,
    /// The session is over (closed by us, lost, or failed).
    Closed(String),
}

#[derive(Debug, Clone, Copy)]
struct Track {
    mid: Mid,
    kind: MediaKind,
    pt: Option<Pt>,
}

/// One track the SFU sends a room member, from the `tracks` of its latest offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTrack {
    /// The m-line that carries it.
    pub mid: String,
    /// Its publisher: a signaling peer id, or `whip-…` for a WHIP publisher.
    pub peer: String,
    /// `audio` or `video`.
    pub kind: String,
    /// `audio`, `camera` or `screen`.
    pub source: String,
}

/// What the SFU says on the control channel that a member acts on; the rest (chat, state,
/// speaker) is ignored here.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ControlMessage {
    /// The server renegotiates: answer it.
    Offer {
        sdp: String,
        #[serde(default)]
        tracks: Vec<WireTrack>,
    },
    /// Anything else: answers (we make no offer after the first), chat, state, speaker.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct WireTrack {
    mid: String,
    peer: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    source: String,
}

/// One WHIP, WHEP or SFU room member peer connection and its socket.
pub struct MediaSession {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    buffer: Vec<u8>,
    pending: Option<SdpPendingOffer>,
    tracks: Vec<Track>,
    video_codec: Option<VideoCodec>,
    connected: bool,
    closed: Option<String>,
    /// Members: the `sfu` control channel, once open.
    control: Option<ChannelId>,
    /// Members: whose media each received m-line carries.
    remote: HashMap<Mid, RemoteTrack>,
    /// Members: server offers answered.
    offers_answered: u64,
}

impl std::fmt::Debug for MediaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSession")
            .field("local", &self.local)
            .field("connected", &self.connected)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// Runs one call into the engine, turning a panic into an error.
fn guarded<T>(call: impl FnOnce() -> Result<T, RtcError>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(result) => result.map_err(|err| anyhow!("WebRTC engine: {err}")),
        Err(_) => Err(anyhow!(
            "the WebRTC engine panicked; this session is closed"
        )),
    }
}

/// The local address the system would send from to reach `remote` (no packet is sent).
pub fn local_ip_towards(remote: IpAddr) -> Result<IpAddr> {
    let unspecified: IpAddr = if remote.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let probe = std::net::UdpSocket::bind(SocketAddr::new(unspecified, 0))?;
    probe
        .connect(SocketAddr::new(remote, 9))
        .with_context(|| format!("no route to {remote}"))?;
    Ok(probe.local_addr()?.ip())
}

impl MediaSession {
    /// Binds a UDP socket on `local_ip` and prepares the engine for `role`; returns the
    /// session and the SDP offer to send to the server.
    pub fn offer(role: Role, local_ip: IpAddr) -> Result<(MediaSession, String)> {
        let mut config = RtcConfig::new()
            .clear_codecs()
            .set_stats_interval(Some(Duration::from_secs(1)));
        let video_codec = match role {
            Role::Publish { audio, video } | Role::Member { audio, video } => {
                if audio {
                    config = config.enable_opus(true, false);
                }
                match video {
                    Some(VideoCodec::Vp8) => config = config.enable_vp8(true),
                    Some(VideoCodec::H264) => config = config.enable_h264(true),
                    None => {}
                }
                if !audio && video.is_none() {
                    bail!("nothing to publish");
                }
                if matches!(role, Role::Member { .. }) {
                    // Receive whatever the others send.
                    config = config
                        .clear_codecs()
                        .enable_opus(true, false)
                        .enable_vp8(true)
                        .enable_h264(true);
                }
                video
            }
            Role::Play => {
                config = config
                    .enable_opus(true, false)
                    .enable_vp8(true)
                    .enable_h264(true);
                None
            }
        };
        let mut rtc = config.build(Instant::now());
        let socket = bind_udp(SocketAddr::new(local_ip, 0))?;
        let local = socket.local_addr()?;
        let candidate =
            Candidate::host(local, "udp").map_err(|err| anyhow!("local candidate: {err}"))?;
        rtc.add_local_candidate(candidate);
        let mut kinds = Vec::new();
        let direction = match role {
            Role::Publish { audio, video } | Role::Member { audio, video } => {
                if audio {
                    kinds.push(MediaKind::Audio);
                }
                if video.is_some() {
                    kinds.push(MediaKind::Video);
                }
                Direction::SendOnly
            }
            Role::Play => {
                kinds.extend([MediaKind::Audio, MediaKind::Video]);
                Direction::RecvOnly
            }
        };
        let (offer, pending, tracks) = guarded(|| {
            let mut api = rtc.sdp_api();
            let tracks: Vec<Track> = kinds
                .iter()
                .map(|&kind| Track {
                    mid: api.add_media(kind, direction, None, None, None),
                    kind,
                    pt: None,
                })
                .collect();
            if matches!(role, Role::Member { .. }) {
                api.add_channel(CONTROL_LABEL.into());
            }
            Ok(api.apply().map(|(offer, pending)| (offer, pending, tracks)))
        })?
        .ok_or_else(|| anyhow!("nothing to offer"))?;
        let session = MediaSession {
            rtc,
            socket,
            local,
            buffer: vec![0; RECV_BUFFER],
            pending: Some(pending),
            tracks,
            video_codec,
            connected: false,
            closed: None,
            control: None,
            remote: HashMap::new(),
            offers_answered: 0,
        };
        Ok((session, offer.to_sdp_string()))
    }

    /// Applies the server's answer (with its candidates in it).
    pub fn accept_answer(&mut self, sdp: &str) -> Result<()> {
        let answer = SdpAnswer::from_sdp_string(sdp).context("the answer is not valid SDP")?;
        let pending = self
            .pending
            .take()
            .ok_or_else(|| anyhow!("an answer arrived but no offer is pending"))?;
        guarded(|| self.rtc.sdp_api().accept_answer(pending, answer))?;
        // The ICE agent schedules nothing before its first timeout.
        guarded(|| self.rtc.handle_input(Input::Timeout(Instant::now())))?;
        Ok(())
    }

    /// The local address of the session's socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Members: the tracks the SFU sends us, as its latest offer listed them.
    pub fn remote_tracks(&self) -> impl Iterator<Item = &RemoteTrack> {
        self.remote.values()
    }

    /// Members: how many offers from the SFU this session has answered.
    pub fn offers_answered(&self) -> u64 {
        self.offers_answered
    }

    /// Sends one frame on the track of `kind`. `rtp_time` is in the codec's clock (48 kHz
    /// for Opus, 90 kHz for video). Frames written before [`MediaEvent::Connected`] are dropped
    /// (`Ok(false)`).
    pub fn write(&mut self, kind: MediaKind, rtp_time: u64, data: &[u8]) -> Result<bool> {
        if !self.connected {
            return Ok(false);
        }
        let Some(index) = self.tracks.iter().position(|t| t.kind == kind) else {
            bail!("no {kind:?} track in this session");
        };
        let track = self.tracks[index];
        let pt = match track.pt {
            Some(pt) => pt,
            None => {
                let wanted = match (kind, self.video_codec) {
                    (MediaKind::Audio, _) => Codec::Opus,
                    (MediaKind::Video, Some(VideoCodec::H264)) => Codec::H264,
                    (MediaKind::Video, _) => Codec::Vp8,
                };
                let writer = self
                    .rtc
                    .writer(track.mid)
                    .ok_or_else(|| anyhow!("the server did not accept the {kind:?} track"))?;
                let pt = writer
                    .payload_params()
                    .find(|p| p.spec().codec == wanted)
                    .map(|p| p.pt())
                    .ok_or_else(|| anyhow!("the server does not take {wanted:?}"))?;
                self.tracks[index].pt = Some(pt);
                pt
            }
        };
        let frequency = match kind {
            MediaKind::Audio => Frequency::FORTY_EIGHT_KHZ,
            MediaKind::Video => Frequency::NINETY_KHZ,
        };
        let result = guarded(|| match self.rtc.writer(track.mid) {
            Some(writer) => writer.write(
                pt,
                Instant::now(),
                MediaTime::new(rtp_time, frequency),
                data.to_vec(),
            ),
            None => Ok(()),
        });
        if let Err(err) = &result {
            self.closed.get_or_insert_with(|| err.to_string());
        }
        result.map(|()| true)
    }

    /// Asks the publisher (through the server) for a key frame on the video track.
    pub fn request_keyframe(&mut self) {
        let Some(track) = self.tracks.iter().find(|t| t.kind == MediaKind::Video) else {
            return;
        };
        let mid = track.mid;
        let _ = guarded(|| match self.rtc.direct_api().stream_rx_by_mid(mid, None) {
            Some(stream) => {
                stream.request_keyframe(KeyframeRequestKind::Pli);
                Ok(())
            }
            None => Ok(()),
        });
    }

    /// Closes the session; the next [`MediaSession::next_event`] returns `Closed`.
    pub fn close(&mut self) {
        self.rtc.disconnect();
        self.closed.get_or_insert_with(|| "closed".into());
    }

    /// Drives the engine until it has something to report, or until `wake` (then
    /// [`MediaEvent::Wake`]). Cancel-safe.
    pub async fn next_event(&mut self, wake: Option<Instant>) -> MediaEvent {
        loop {
            if let Some(reason) = &self.closed {
                return MediaEvent::Closed(reason.clone());
            }
            let output = match guarded(|| self.rtc.poll_output()) {
                Ok(output) => output,
                Err(err) => {
                    self.closed = Some(err.to_string());
                    continue;
                }
            };
            let deadline = match output {
                Output::Timeout(at) => at,
                Output::Transmit(transmit) => {
                    self.send(transmit.destination, &transmit.contents).await;
                    continue;
                }
                Output::Event(event) => {
                    if let Some(event) = self.translate(event) {
                        return event;
                    }
                    continue;
                }
            };
            let now = Instant::now();
            if wake.is_some_and(|wake| wake <= now) {
                return MediaEvent::Wake;
            }
            let mut progressed = false;
            if deadline <= now {
                if let Err(err) = guarded(|| self.rtc.handle_input(Input::Timeout(now))) {
                    self.closed = Some(err.to_string());
                    continue;
                }
                progressed = true;
            }
            match self.receive_ready() {
                Ok(read) => progressed |= read > 0,
                Err(err) => {
                    self.closed = Some(err.to_string());
                    continue;
                }
            }
            if progressed {
                tokio::task::coop::consume_budget().await;
                continue;
            }
            let sleep_until = wake.map_or(deadline, |wake| wake.min(deadline));
            tokio::select! {
                _ = self.socket.readable() => {}
                _ = tokio::time::sleep_until(sleep_until.into()) => {}
            }
        }
    }

    fn receive_ready(&mut self) -> Result<usize> {
        let mut read = 0;
        while read < RECV_BATCH {
            let (len, source) = match self.socket.try_recv_from(&mut self.buffer) {
                Ok(received) => received,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    trace!(%err, "receive error");
                    read += 1;
                    continue;
                }
            };
            read += 1;
            let Ok(contents) = self.buffer[..len].try_into() else {
                trace!(%source, "dropping a datagram the engine does not take");
                continue;
            };
            let input = Input::Receive(
                Instant::now(),
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: self.local,
                    contents,
                },
            );
            let rtc = &mut self.rtc;
            guarded(|| rtc.handle_input(input))?;
        }
        Ok(read)
    }

    async fn send(&mut self, destination: SocketAddr, data: &[u8]) {
        match self.socket.try_send_to(data, destination) {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                if let Err(err) = self.socket.send_to(data, destination).await {
                    debug!(%destination, %err, "send failed");
                }
            }
            Err(err) => trace!(%destination, %err, "send failed"),
        }
    }

    /// A message from the SFU on the control channel: answers its offers (`docs/sfu.md`).
    fn control_message(&mut self, data: &ChannelData) -> Result<()> {
        if data.data.len() > MAX_CONTROL_BYTES {
            bail!("a {} byte message is too large", data.data.len());
        }
        let message: ControlMessage = match serde_json::from_slice(&data.data) {
            Ok(message) => message,
            Err(err) => {
                debug!(%err, "ignoring a control message");
                return Ok(());
            }
        };
        let ControlMessage::Offer { sdp, tracks } = message else {
            return Ok(());
        };
        let offer = SdpOffer::from_sdp_string(&sdp).context("the SFU's offer is not valid SDP")?;
        let answer = guarded(|| self.rtc.sdp_api().accept_offer(offer))?;
        let reply = serde_json::json!({"type": "answer", "sdp": answer.to_sdp_string()});
        let Some(id) = self.control else {
            bail!("the control channel is gone");
        };
        let written = guarded(|| match self.rtc.channel(id) {
            Some(mut channel) => channel.write(false, reply.to_string().as_bytes()),
            None => Ok(false),
        })?;
        if !written {
            bail!("the answer did not fit in the control channel's buffer");
        }
        self.offers_answered += 1;
        self.remote = tracks
            .into_iter()
            .map(|t| {
                let track = RemoteTrack {
                    mid: t.mid,
                    peer: t.peer,
                    kind: t.kind,
                    source: t.source,
                };
                (Mid::from(track.mid.as_str()), track)
            })
            .collect();
        Ok(())
    }

    fn kind_of(&self, mid: Mid) -> Option<MediaKind> {
        self.tracks.iter().find(|t| t.mid == mid).map(|t| t.kind)
    }

    fn translate(&mut self, event: Event) -> Option<MediaEvent> {
        match event {
            Event::Connected => {
                self.connected = true;
                Some(MediaEvent::Connected)
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.closed = Some("lost the connection to the server".into());
                None
            }
            Event::ChannelOpen(id, label) if label == CONTROL_LABEL => {
                self.control = Some(id);
                None
            }
            Event::ChannelData(data) if Some(data.id) == self.control => {
                if let Err(err) = self.control_message(&data) {
                    self.closed = Some(format!("SFU control channel: {err:#}"));
                }
                None
            }
            Event::MediaData(data) => Some(MediaEvent::Frame(ReceivedFrame {
                kind: self.kind_of(data.mid).unwrap_or({
                    if data.params.spec().codec.is_audio() {
                        MediaKind::Audio
                    } else {
                        MediaKind::Video
                    }
                }),
                from: self.remote.get(&data.mid).map(|t| t.peer.clone()),
                codec: data.params.spec().codec,
                data: data.data.to_vec(),
                rtp_time: data.time.numer(),
                arrived: data.network_time,
                contiguous: data.contiguous,
                packets: (**data.seq_range.end())
                    .saturating_sub(**data.seq_range.start())
                    .saturating_add(1),
            })),
            Event::KeyframeRequest(_) => Some(MediaEvent::KeyframeRequested),
            Event::MediaEgressStats(stats) => Some(MediaEvent::Counters {
                kind: self.kind_of(stats.mid)?,
                counters: TrackCounters {
                    packets: stats.packets,
                    bytes: stats.bytes,
                    nacks: stats.nacks,
                    plis: stats.plis,
                },
            }),
            Event::MediaIngressStats(stats) => Some(MediaEvent::Counters {
                kind: self.kind_of(stats.mid)?,
                counters: TrackCounters {
                    packets: stats.packets,
                    bytes: stats.bytes,
                    nacks: stats.nacks,
                    plis: stats.plis,
                },
            }),
            other => {
                trace!(?other, "engine event");
                None
            }
        }
    }
}

/// Binds a non-blocking UDP socket with room for a key frame's burst.
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}
