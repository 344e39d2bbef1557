//! The SFU core: rooms of WebRTC participants whose media the server forwards without
//! transcoding — for group calls (browsers in a room), live ingest (WHIP publishers) and live
//! viewing (WHEP viewers).
//!
//! Sans-IO: [`Sfu`] owns no socket and reads no clock. The glue feeds it datagrams that arrived
//! on the one media port ([`Input::Receive`]) and the time ([`Input::Timeout`]), and after
//! **every** input drains [`Sfu::poll_output`] until it returns [`Output::Timeout`]: datagrams
//! to send, events (someone connected or left) and the next deadline. Offers come in through
//! [`Sfu::join`], which returns the answer.
//!
//! Each participant is one str0m [`Rtc`] in ICE-lite mode; all of them share the media port and
//! are told apart by source address (after the first STUN check, by ICE username). Browsers in
//! a room get every other member's tracks through renegotiation over a data channel (see
//! `docs/sfu.md` for the messages); simulcast layers are picked per subscriber; keyframe
//! requests are forwarded to the publisher, throttled; NACK/RTX is str0m's per connection.
//!
//! What this crate is not: HTTP, signaling or sockets (that is `server`).

mod control;
pub mod fuzz;
mod layers;
mod rtp;
mod speaker;
pub mod trickle;

use std::collections::{HashMap, VecDeque};

use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol as NetProtocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Vp8Descriptor};
use str0m::{Candidate, Event, IceConnectionState, Rtc};
use tracing::{debug, warn};

pub use control::Source;
use control::{ClientMessage, ServerMessage, TrackInfo};
use layers::{LayerState, LayerTable, RateMeter, Verdict};
use speaker::SpeakerDetector;

/// How often a publisher is asked for a keyframe of one layer, at most.
const KEYFRAME_THROTTLE: Duration = Duration::from_millis(500);
/// How often the active speaker is re-evaluated.
const SPEAKER_INTERVAL: Duration = Duration::from_millis(300);
/// Timeouts already due that one poll of a participant serves itself, at most (the engine asks
/// for one after writes).
const MAX_IMMEDIATE_TIMEOUTS: u32 = 4;
/// Bytes a forwarded packet carries besides its payload, for rates on the wire: RTP header and
/// extensions, the SRTP tag, UDP and IPv4.
const PACKET_OVERHEAD: usize = 60;
/// How often a subscriber's simulcast layer is re-chosen.
const LAYER_INTERVAL: Duration = Duration::from_millis(250);

/// What the SFU needs to know; every field has a default.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Host candidates announced in answers: the media port's addresses (UDP).
    pub candidates: Vec<SocketAddr>,
    /// Passive ICE-TCP candidates (RFC 6544), for clients that cannot send UDP to the server.
    pub tcp_candidates: Vec<SocketAddr>,
    /// Most participants in one room. Default 100.
    pub max_per_room: usize,
    /// Most participants in total. Default 2000.
    pub max_participants: usize,
    /// Bandwidth estimate a subscriber starts with, bits per second. Default 1.5 Mbit/s.
    pub initial_bandwidth: u64,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            candidates: Vec::new(),
            tcp_candidates: Vec::new(),
            max_per_room: 100,
            max_participants: 2000,
            initial_bandwidth: 1_500_000,
        }
    }
}

/// Who a participant is in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// A browser in a call: publishes what it offers, receives everyone else through
    /// renegotiation on its `sfu` data channel.
    Member,
    /// A WHIP publisher: only sends.
    Publisher,
    /// A WHEP viewer: receives the room's first audio and video on the m-lines it offered.
    Viewer,
}

/// An offer to join a room.
#[derive(Debug, Clone, Copy)]
pub struct JoinRequest<'a> {
    /// Room name.
    pub room: &'a str,
    /// Who this is: the signaling peer id of a member, `whip-N` / `whep-N` otherwise. A second
    /// join with the same room and label replaces the first.
    pub label: &'a str,
    /// Its role.
    pub role: Role,
    /// The SDP offer.
    pub offer: &'a str,
}

/// A participant, as long as it is in the SFU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

/// The answer to a [`JoinRequest`].
#[derive(Debug, Clone)]
pub struct Joined {
    /// The new participant.
    pub id: ParticipantId,
    /// The SDP answer.
    pub answer: String,
}

/// Why a join was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    /// The offer is not valid SDP.
    #[error("the SDP offer cannot be parsed: {0}")]
    BadOffer(String),
    /// The offer parses but cannot be answered (no usable codec, no ICE credentials...).
    #[error("the SDP offer cannot be answered: {0}")]
    OfferRefused(String),
    /// The room has [`SfuConfig::max_per_room`] participants.
    #[error("the room is full ({0} participants)")]
    RoomFull(usize),
    /// The SFU has [`SfuConfig::max_participants`] participants.
    #[error("the server is at its participant limit")]
    ServerFull,
    /// No participant has this id (any more).
    #[error("no such participant")]
    UnknownParticipant,
}

/// ICE credentials (RFC 8445 §5.3), as an ICE restart hands them back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    /// The username fragment.
    pub ufrag: String,
    /// The password.
    pub pwd: String,
}

fn no_credentials() -> SfuError {
    SfuError::OfferRefused("the restarted session has no ICE credentials".into())
}

/// `sdp` with every `a=ice-ufrag`/`a=ice-pwd` replaced and its candidates dropped: the offer
/// an ICE restart that sends only credentials stands for (RFC 8840 §4.4).
fn with_ice_credentials(sdp: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines() {
        let line = line.trim_end();
        let kept = if line.starts_with("a=ice-ufrag:") {
            format!("a=ice-ufrag:{ufrag}")
        } else if line.starts_with("a=ice-pwd:") {
            format!("a=ice-pwd:{pwd}")
        } else if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        } else {
            line.to_owned()
        };
        out.push_str(&kept);
        out.push_str("\r\n");
    }
    out
}

/// Transport of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// UDP.
    Udp,
    /// TCP (ICE-TCP, RFC 6544 framing removed by the caller).
    Tcp,
}

/// An input to the SFU.
#[derive(Debug)]
pub enum Input<'a> {
    /// A datagram arrived on the media port.
    Receive {
        /// When.
        now: Instant,
        /// Over what.
        proto: Protocol,
        /// From whom.
        source: SocketAddr,
        /// To which of our addresses.
        destination: SocketAddr,
        /// The bytes.
        contents: &'a [u8],
    },
    /// Time passed.
    Timeout(Instant),
}

/// A datagram to send.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// Over what.
    pub proto: Protocol,
    /// From which of our addresses.
    pub source: SocketAddr,
    /// To whom.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
}

/// Something the glue should know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SfuEvent {
    /// ICE and DTLS are up.
    Connected {
        /// Who.
        id: ParticipantId,
        /// Room.
        room: String,
        /// Label from the join.
        label: String,
    },
    /// The participant is gone.
    Left {
        /// Who.
        id: ParticipantId,
        /// Room.
        room: String,
        /// Label from the join.
        label: String,
        /// Why.
        reason: LeaveReason,
    },
}

/// Why a participant left.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaveReason {
    /// [`Sfu::leave`] (the glue: signaling leave, WHIP/WHEP DELETE, a replacing join).
    Requested,
    /// ICE lost the peer (consent expired).
    Disconnected,
    /// The peer sent something the SFU cannot accept (a bad answer, a broken DTLS...).
    Misbehaved(String),
    /// The WebRTC engine failed on this connection (an error or a caught panic).
    EngineFailure(String),
}

/// What happened since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SfuStats {
    /// Rooms with at least one participant.
    pub rooms: usize,
    /// Participants now.
    pub participants: usize,
    /// Published tracks now.
    pub tracks: usize,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Media frames/packets written to subscribers.
    pub media_forwarded: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
    /// Datagrams no participant accepted (unknown source, stray or malformed).
    pub unroutable: u64,
    /// Inputs the engine rejected (malformed RTP/RTCP/DTLS from a participant).
    pub rejected_inputs: u64,
    /// Participants dropped for misbehaving or an engine failure.
    pub dropped_participants: u64,
}

/// The output of [`Sfu::poll_output`].
#[derive(Debug)]
#[must_use]
pub enum Output {
    /// Send this.
    Transmit(Transmit),
    /// Tell the glue.
    Event(SfuEvent),
    /// Nothing more until this time (or the next input); `None`: until the next input.
    Timeout(Option<Instant>),
}

/// A published track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TrackId(u64);

#[derive(Debug)]
struct Published {
    owner: ParticipantId,
    owner_label: String,
    mid: Mid,
    kind: MediaKind,
    source: Source,
    layers: LayerTable,
    /// Subscribers have been given it (after its first media).
    announced: bool,
    keyframe_asked: HashMap<Option<String>, Instant>,
    /// The whole track's rate as it arrives (payload plus per-packet overhead).
    rate: RateMeter,
}

impl Published {
    /// What a subscriber showing this track at `view` needs to receive it: the simulcast layer
    /// its size calls for, as if bandwidth were no limit, or the whole track.
    fn wanted_bitrate(&self, now: Instant, view: Option<(u32, u32)>, prefers_high: bool) -> u64 {
        if !self.layers.is_simulcast() {
            return self.rate.bitrate;
        }
        match self.layers.choose(now, view, None, prefers_high) {
            Some(rid) => self
                .layers
                .layers()
                .iter()
                .find(|l| l.rid == rid)
                .map_or(0, layers::Layer::bitrate),
            None => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    NegotiatingStop(Mid),
}

impl OutState {
    fn mid(self) -> Option<Mid> {
        match self {
            OutState::ToOpen => None,
            OutState::Negotiating(m)
            | OutState::Open(m)
            | OutState::ToStop(m)
            | OutState::NegotiatingStop(m) => Some(m),
        }
    }
}

/// One m-line we send on: a member's renegotiated track, or a viewer's offered slot.
#[derive(Debug)]
struct OutTrack {
    track: Option<TrackId>,
    kind: MediaKind,
    state: OutState,
    layer: LayerState,
    view: Option<(u32, u32)>,
    next_choice: Option<Instant>,
    /// The payload type we send for the publisher's last one: (track, theirs, ours). Matching
    /// codec parameters costs more than the rest of a write, and they rarely change.
    pt_map: Option<(TrackId, Pt, Pt)>,
    /// Sequence numbers and VP8 picture ids, continuous across layers and publishers.
    rewriter: rtp::Rewriter,
}

impl OutTrack {
    /// A member's new subscription, to be negotiated.
    fn to_open(track: TrackId, kind: MediaKind) -> OutTrack {
        OutTrack {
            track: Some(track),
            kind,
            state: OutState::ToOpen,
            layer: LayerState::default(),
            view: None,
            next_choice: None,
            pt_map: None,
            rewriter: rtp::Rewriter::default(),
        }
    }

    /// A viewer's offered m-line, bound to a track later.
    fn slot(mid: Mid, kind: MediaKind) -> OutTrack {
        OutTrack {
            track: None,
            kind,
            state: OutState::Open(mid),
            layer: LayerState::default(),
            view: None,
            next_choice: None,
            pt_map: None,
            rewriter: rtp::Rewriter::default(),
        }
    }
}

#[derive(Debug)]
struct Participant {
    room: String,
    label: String,
    role: Role,
    rtc: Rtc,
    next_timeout: Option<Instant>,
    dirty: bool,
    /// In [`Sfu::written`].
    written: bool,
    control: Option<ChannelId>,
    pending: Option<SdpPendingOffer>,
    outs: Vec<OutTrack>,
    published: FxHashMap<Mid, TrackId>,
    sources: HashMap<String, Source>,
    bandwidth: Option<u64>,
    /// The desired bitrate last given to its bandwidth estimator.
    desired_bitrate: Option<u64>,
    media_state: Option<(bool, bool)>,
    failed: Option<LeaveReason>,
    /// False for a member whose access token lacks the publish grant: media it offers later
    /// (renegotiation over the control channel) is not forwarded.
    may_publish: bool,
    /// The client's offer as it stands: the base of an ICE restart that sends only new
    /// credentials (WHIP/WHEP `PATCH`).
    remote_offer: String,
}

#[derive(Debug, Default)]
struct Room {
    members: Vec<ParticipantId>,
    speaker: SpeakerDetector,
}

/// What polling one participant produced that concerns others.
enum Effect {
    MediaAdded(Mid, MediaKind, Direction, Vec<String>),
    Rtp(Box<(Mid, Option<Rid>, RtpPacket)>),
    KeyframeRequest(Mid, KeyframeRequestKind),
    ChannelOpen(ChannelId),
    Control(Vec<u8>),
    Connected,
    Disconnected,
    Bandwidth(u64),
}

/// The SFU. See the crate documentation for how to drive it.
#[derive(Debug)]
pub struct Sfu {
    config: SfuConfig,
    // Looked up several times per forwarded packet: a fast hasher (the keys are ours, or
    // addresses routed only after ICE accepted them).
    participants: FxHashMap<ParticipantId, Participant>,
    tracks: FxHashMap<TrackId, Published>,
    rooms: HashMap<String, Room>,
    routes: FxHashMap<SocketAddr, ParticipantId>,
    next_participant: u64,
    next_track: u64,
    dirty: Vec<ParticipantId>,
    /// Participants with packets written to them since they were last polled: polled when the
    /// driver next asks for output, so a burst of incoming packets (a video frame) is sent to
    /// each subscriber in one poll instead of one per packet.
    written: Vec<ParticipantId>,
    /// The time of the last input.
    now: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SfuEvent>,
    next_speaker_check: Option<Instant>,
    stats: SfuStats,
    /// The DTLS certificate every participant's connection presents: made once, because making
    /// one (a key pair from the FIPS random generator) takes milliseconds of this thread, which
    /// forwards everyone's media. Each handshake still agrees on fresh ephemeral keys.
    dtls_cert: Option<DtlsCert>,
}

impl Sfu {
    /// An SFU with no rooms.
    pub fn new(config: SfuConfig) -> Sfu {
        Sfu {
            config,
            participants: FxHashMap::default(),
            tracks: FxHashMap::default(),
            rooms: HashMap::new(),
            routes: FxHashMap::default(),
            next_participant: 1,
            next_track: 1,
            dirty: Vec::new(),
            written: Vec::new(),
            now: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_speaker_check: None,
            stats: SfuStats::default(),
            dtls_cert: None,
        }
    }

    /// The shared DTLS certificate, made on first use; `None` (each connection makes its own)
    /// if the crypto provider cannot make one.
    fn dtls_cert(&mut self) -> Option<DtlsCert> {
        if self.dtls_cert.is_none() {
            self.dtls_cert = str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate();
        }
        self.dtls_cert.clone()
    }

    /// Counters and current sizes.
    pub fn stats(&self) -> SfuStats {
        SfuStats {
            rooms: self.rooms.len(),
            participants: self.participants.len(),
            tracks: self.tracks.len(),
            ..self.stats
        }
    }

    /// Room names and their participants' labels.
    pub fn rooms(&self) -> Vec<(String, Vec<String>)> {
        let mut rooms: Vec<_> = self
            .rooms
            .iter()
            .map(|(name, room)| {
                let labels = room
                    .members
                    .iter()
                    .filter_map(|id| self.participants.get(id))
                    .map(|p| p.label.clone())
                    .collect();
                (name.clone(), labels)
            })
            .collect();
        rooms.sort();
        rooms
    }

    /// Answers an offer to join a room. A participant with the same room and label is replaced.
    pub fn join(&mut self, now: Instant, request: JoinRequest<'_>) -> Result<Joined, SfuError> {
        let offer = SdpOffer::from_sdp_string(request.offer)
            .map_err(|e| SfuError::BadOffer(e.to_string()))?;
        if let Some(old) = self.find(request.room, request.label) {
            self.remove(old, LeaveReason::Requested, now);
        }
        let in_room = self.rooms.get(request.room).map_or(0, |r| r.members.len());
        if in_room >= self.config.max_per_room {
            return Err(SfuError::RoomFull(in_room));
        }
        if self.participants.len() >= self.config.max_participants {
            return Err(SfuError::ServerFull);
        }
        // RTP mode: packets are forwarded as they came (rewritten per subscriber), not
        // reassembled into frames and packetized again for every subscriber.
        let mut builder = Rtc::builder().set_ice_lite(true).set_rtp_mode(true);
        // Members need the estimate to pick simulcast layers; WHEP viewers get the largest
        // layer, and the estimator's pacing would only add per-packet cost and queueing delay.
        if request.role == Role::Member {
            builder = builder.enable_bwe(Some(str0m::bwe::Bitrate::bps(
                self.config.initial_bandwidth,
            )));
        }
        if let Some(cert) = self.dtls_cert() {
            builder = builder.set_dtls_cert(cert);
        }
        let mut rtc = builder.build(now);
        for addr in &self.config.candidates {
            match Candidate::host(*addr, "udp") {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => warn!(%addr, "unusable media address: {e}"),
            }
        }
        for addr in &self.config.tcp_candidates {
            let candidate = Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(str0m::net::TcpType::Passive)
                .build();
            match candidate {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => warn!(%addr, "unusable media address (tcp): {e}"),
            }
        }
        let answer = catch_unwind(AssertUnwindSafe(|| rtc.sdp_api().accept_offer(offer)))
            .map_err(|_| SfuError::OfferRefused("the engine failed on this offer".into()))?
            .map_err(|e| SfuError::OfferRefused(e.to_string()))?;
        let id = ParticipantId(self.next_participant);
        self.next_participant += 1;
        self.participants.insert(
            id,
            Participant {
                room: request.room.to_owned(),
                label: request.label.to_owned(),
                role: request.role,
                rtc,
                next_timeout: None,
                dirty: false,
                written: false,
                control: None,
                pending: None,
                outs: Vec::new(),
                published: FxHashMap::default(),
                sources: HashMap::new(),
                bandwidth: None,
                desired_bitrate: None,
                media_state: None,
                failed: None,
                may_publish: true,
                remote_offer: request.offer.to_owned(),
            },
        );
        self.rooms
            .entry(request.room.to_owned())
            .or_default()
            .members
            .push(id);
        if request.role == Role::Member {
            // Everything already flowing in the room, offered once the control channel opens.
            let existing = self.announced_in(request.room, id);
            if let Some(p) = self.participants.get_mut(&id) {
                for (track, kind) in existing {
                    p.outs.push(OutTrack::to_open(track, kind));
                }
            }
        }
        debug!(room = request.room, label = request.label, ?request.role, "joined");
        self.mark(id);
        self.run(now);
        Ok(Joined {
            id,
            answer: answer.to_sdp_string(),
        })
    }

    /// Restarts ICE for a participant whose client sent only new ICE credentials (RFC 9725
    /// §4.4.2, a WHIP/WHEP `PATCH`): its last offer with those credentials and no candidates
    /// is answered again, and our new credentials come back. Media and DTLS carry on once the
    /// client's checks arrive with the new username.
    pub fn restart_ice(
        &mut self,
        now: Instant,
        id: ParticipantId,
        ufrag: &str,
        pwd: &str,
    ) -> Result<IceCredentials, SfuError> {
        let p = self
            .participants
            .get_mut(&id)
            .ok_or(SfuError::UnknownParticipant)?;
        let restarted = with_ice_credentials(&p.remote_offer, ufrag, pwd);
        let offer =
            SdpOffer::from_sdp_string(&restarted).map_err(|e| SfuError::BadOffer(e.to_string()))?;
        let answer = catch_unwind(AssertUnwindSafe(|| p.rtc.sdp_api().accept_offer(offer)))
            .map_err(|_| SfuError::OfferRefused("the engine failed on this ICE restart".into()))?
            .map_err(|e| SfuError::OfferRefused(e.to_string()))?
            .to_sdp_string();
        p.remote_offer = restarted;
        let attribute = |name: &str| {
            answer
                .lines()
                .find_map(|l| l.trim_end().strip_prefix(name))
                .map(str::to_owned)
        };
        let credentials = IceCredentials {
            ufrag: attribute("a=ice-ufrag:").ok_or_else(no_credentials)?,
            pwd: attribute("a=ice-pwd:").ok_or_else(no_credentials)?,
        };
        debug!(?id, "ICE restarted");
        self.mark(id);
        self.run(now);
        Ok(credentials)
    }

    /// The announced tracks of `room` not published by `except`, oldest first.
    fn announced_in(&self, room: &str, except: ParticipantId) -> Vec<(TrackId, MediaKind)> {
        let mut tracks: Vec<(TrackId, MediaKind)> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.announced && t.owner != except)
            .filter(|(_, t)| {
                self.participants
                    .get(&t.owner)
                    .is_some_and(|p| p.room == room)
            })
            .map(|(id, t)| (*id, t.kind))
            .collect();
        tracks.sort_by_key(|(id, _)| id.0);
        tracks
    }

    /// From now on, media the participant sends is not taken in (no track is published for
    /// it): a member without the publish grant. Tracks it already publishes stay.
    pub fn forbid_publishing(&mut self, id: ParticipantId) {
        if let Some(p) = self.participants.get_mut(&id) {
            p.may_publish = false;
        }
    }

    /// The participant with this room and label.
    pub fn find(&self, room: &str, label: &str) -> Option<ParticipantId> {
        let room = self.rooms.get(room)?;
        room.members
            .iter()
            .copied()
            .find(|id| self.participants.get(id).is_some_and(|p| p.label == label))
    }

    /// Removes a participant (its leave, a DELETE). Its tracks stop for everyone.
    pub fn leave(&mut self, now: Instant, id: ParticipantId) -> Result<(), SfuError> {
        if !self.participants.contains_key(&id) {
            return Err(SfuError::UnknownParticipant);
        }
        self.remove(id, LeaveReason::Requested, now);
        self.run(now);
        Ok(())
    }

    /// Feeds one input. Drain [`Sfu::poll_output`] until [`Output::Timeout`] afterwards; a
    /// batch of received datagrams may be fed first and drained once, which sends what they
    /// carry to each subscriber in one go.
    pub fn handle_input(&mut self, input: Input<'_>) {
        self.now = Some(match &input {
            Input::Receive { now, .. } | Input::Timeout(now) => *now,
        });
        match input {
            Input::Receive {
                now,
                proto,
                source,
                destination,
                contents,
            } => {
                self.stats.datagrams_in += 1;
                self.stats.bytes_in += contents.len() as u64;
                self.receive(now, proto, source, destination, contents);
                self.run(now);
            }
            Input::Timeout(now) => {
                let due: Vec<ParticipantId> = self
                    .participants
                    .iter()
                    .filter(|(_, p)| p.next_timeout.is_none_or(|t| t <= now))
                    .map(|(id, _)| *id)
                    .collect();
                for id in due {
                    self.feed(id, str0m::Input::Timeout(now));
                }
                if self.next_speaker_check.is_none_or(|t| t <= now) {
                    self.next_speaker_check = Some(now + SPEAKER_INTERVAL);
                    self.evaluate_speakers(now);
                    self.update_desired_bitrates(now);
                }
                self.run(now);
            }
        }
    }

    /// The next thing to do; see the crate documentation.
    pub fn poll_output(&mut self) -> Output {
        if !self.written.is_empty()
            && let Some(now) = self.now
        {
            for id in std::mem::take(&mut self.written) {
                if let Some(p) = self.participants.get_mut(&id) {
                    p.written = false;
                }
                self.mark(id);
            }
            self.run(now);
        }
        if let Some(t) = self.transmits.pop_front() {
            return Output::Transmit(t);
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        let participants = self
            .participants
            .values()
            .filter_map(|p| p.next_timeout)
            .min();
        let speaker = (!self.participants.is_empty())
            .then_some(self.next_speaker_check)
            .flatten();
        Output::Timeout(match (participants, speaker) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    fn receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        let Ok(contents) = contents.try_into() else {
            self.stats.unroutable += 1;
            return;
        };
        let input = str0m::Input::Receive(
            now,
            Receive {
                proto: match proto {
                    Protocol::Udp => NetProtocol::Udp,
                    Protocol::Tcp => NetProtocol::Tcp,
                },
                source,
                destination,
                contents,
            },
        );
        let routed = self.routes.get(&source).copied().filter(|id| {
            self.participants
                .get(id)
                .is_some_and(|p| p.rtc.accepts(&input))
        });
        let owner = routed.or_else(|| {
            self.participants
                .iter()
                .find(|(_, p)| p.rtc.accepts(&input))
                .map(|(id, _)| *id)
        });
        let Some(id) = owner else {
            self.stats.unroutable += 1;
            return;
        };
        if routed.is_none() {
            self.routes.insert(source, id);
        }
        self.feed(id, input);
    }

    /// Hands one input to a participant's engine.
    fn feed(&mut self, id: ParticipantId, input: str0m::Input<'_>) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        match catch_unwind(AssertUnwindSafe(|| p.rtc.handle_input(input))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.stats.rejected_inputs += 1;
                debug!(label = %p.label, "input rejected: {e}");
                if !p.rtc.is_alive() {
                    p.failed = Some(LeaveReason::EngineFailure(e.to_string()));
                }
            }
            Err(_) => p.failed = Some(LeaveReason::EngineFailure("the engine panicked".into())),
        }
        self.mark(id);
    }

    /// Notes that packets were written to `id`, to be sent at the next [`Sfu::poll_output`].
    fn mark_written(&mut self, id: ParticipantId) {
        if let Some(p) = self.participants.get_mut(&id)
            && !p.written
        {
            p.written = true;
            self.written.push(id);
        }
    }

    fn mark(&mut self, id: ParticipantId) {
        if let Some(p) = self.participants.get_mut(&id)
            && !p.dirty
        {
            p.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Polls every participant that had input until all are idle.
    fn run(&mut self, now: Instant) {
        while let Some(id) = self.dirty.pop() {
            let effects = self.poll(id, now);
            for effect in effects {
                self.apply(id, effect, now);
            }
            if let Some(reason) = self.participants.get_mut(&id).and_then(|p| p.failed.take()) {
                if !matches!(reason, LeaveReason::Disconnected) {
                    self.stats.dropped_participants += 1;
                }
                self.remove(id, reason, now);
            }
        }
    }

    /// Negotiates if needed, then drains one engine.
    fn poll(&mut self, id: ParticipantId, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(p) = self.participants.get_mut(&id) else {
            return effects;
        };
        p.dirty = false;
        negotiate(p, &self.tracks);
        // After a write the engine asks for a timeout at once (to move the new packets to its
        // send queue): serve those here, so the packets leave in this round (and this batch of
        // datagrams) instead of the next wake-up.
        let mut immediate_timeouts = 0;
        loop {
            let output = match catch_unwind(AssertUnwindSafe(|| p.rtc.poll_output())) {
                Ok(Ok(output)) => output,
                Ok(Err(e)) => {
                    p.failed = Some(LeaveReason::EngineFailure(e.to_string()));
                    break;
                }
                Err(_) => {
                    p.failed = Some(LeaveReason::EngineFailure("the engine panicked".into()));
                    break;
                }
            };
            match output {
                str0m::Output::Timeout(t) => {
                    if t <= now && immediate_timeouts < MAX_IMMEDIATE_TIMEOUTS {
                        immediate_timeouts += 1;
                        match catch_unwind(AssertUnwindSafe(|| {
                            p.rtc.handle_input(str0m::Input::Timeout(now))
                        })) {
                            Ok(Ok(())) => continue,
                            Ok(Err(e)) => {
                                p.failed = Some(LeaveReason::EngineFailure(e.to_string()));
                            }
                            Err(_) => {
                                p.failed =
                                    Some(LeaveReason::EngineFailure("the engine panicked".into()));
                            }
                        }
                    }
                    p.next_timeout = Some(t.max(now));
                    break;
                }
                str0m::Output::Transmit(t) => {
                    self.stats.datagrams_out += 1;
                    self.stats.bytes_out += t.contents.len() as u64;
                    self.transmits.push_back(Transmit {
                        proto: match t.proto {
                            NetProtocol::Tcp => Protocol::Tcp,
                            _ => Protocol::Udp,
                        },
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.into(),
                    });
                }
                str0m::Output::Event(event) => match event {
                    Event::Connected => effects.push(Effect::Connected),
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        effects.push(Effect::Disconnected);
                    }
                    Event::MediaAdded(added) => {
                        let rids = added
                            .simulcast
                            .map(|s| s.recv.into_iter().map(|l| l.rid.to_string()).collect())
                            .unwrap_or_default();
                        effects.push(Effect::MediaAdded(
                            added.mid,
                            added.kind,
                            added.direction,
                            rids,
                        ));
                    }
                    Event::RtpPacket(packet) => {
                        let ssrc = packet.header.ssrc;
                        if let Some(stream) = p.rtc.direct_api().stream_rx(&ssrc) {
                            let (mid, rid) = (stream.mid(), stream.rid());
                            effects.push(Effect::Rtp(Box::new((mid, rid, packet))));
                        }
                    }
                    Event::KeyframeRequest(req) => {
                        effects.push(Effect::KeyframeRequest(req.mid, req.kind));
                    }
                    Event::ChannelOpen(cid, label) if label == "sfu" => {
                        effects.push(Effect::ChannelOpen(cid));
                    }
                    Event::ChannelData(data) if Some(data.id) == p.control => {
                        effects.push(Effect::Control(data.data));
                    }
                    Event::EgressBitrateEstimate(str0m::bwe::BweKind::Twcc {
                        estimate, ..
                    }) => effects.push(Effect::Bandwidth(estimate.as_u64())),
                    _ => {}
                },
            }
        }
        effects
    }

    fn apply(&mut self, id: ParticipantId, effect: Effect, now: Instant) {
        match effect {
            Effect::Connected => {
                if let Some(p) = self.participants.get(&id) {
                    self.events.push_back(SfuEvent::Connected {
                        id,
                        room: p.room.clone(),
                        label: p.label.clone(),
                    });
                }
            }
            Effect::Disconnected => {
                if let Some(p) = self.participants.get_mut(&id) {
                    p.failed = Some(LeaveReason::Disconnected);
                }
            }
            Effect::MediaAdded(mid, kind, direction, rids) => {
                self.media_added(id, mid, kind, direction, rids, now);
            }
            Effect::Rtp(packet) => {
                let (mid, rid, packet) = *packet;
                self.forward(id, mid, rid, packet, now);
            }
            Effect::KeyframeRequest(mid, kind) => self.keyframe_wanted(id, mid, kind, now),
            Effect::ChannelOpen(cid) => self.control_open(id, cid),
            Effect::Control(bytes) => self.control(id, &bytes, now),
            Effect::Bandwidth(bps) => {
                if let Some(p) = self.participants.get_mut(&id) {
                    p.bandwidth = Some(bps);
                }
            }
        }
    }

    fn media_added(
        &mut self,
        id: ParticipantId,
        mid: Mid,
        kind: MediaKind,
        direction: Direction,
        rids: Vec<String>,
        now: Instant,
    ) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let we_receive = matches!(direction, Direction::RecvOnly | Direction::SendRecv);
        let we_send = matches!(direction, Direction::SendOnly | Direction::SendRecv);
        if p.role == Role::Viewer && we_send {
            p.outs.push(OutTrack::slot(mid, kind));
            self.bind_slots(id, now);
            return;
        }
        if p.role == Role::Viewer || !we_receive || p.published.contains_key(&mid) {
            return;
        }
        if !p.may_publish {
            debug!(participant = %p.label, %mid, "media refused: no publish grant");
            return;
        }
        let track = TrackId(self.next_track);
        self.next_track += 1;
        let videos = p
            .published
            .values()
            .filter(|t| {
                self.tracks
                    .get(t)
                    .is_some_and(|t| t.kind == MediaKind::Video)
            })
            .count();
        let source = match kind {
            MediaKind::Audio => Source::Audio,
            MediaKind::Video if videos == 0 => Source::Camera,
            MediaKind::Video => Source::Screen,
        };
        p.published.insert(mid, track);
        self.tracks.insert(
            track,
            Published {
                owner: id,
                owner_label: p.label.clone(),
                mid,
                kind,
                source,
                layers: LayerTable::new(rids),
                announced: false,
                keyframe_asked: HashMap::new(),
                rate: RateMeter::default(),
            },
        );
    }

    /// Gives a newly flowing track to everyone else in the room.
    fn announce(&mut self, track: TrackId, now: Instant) {
        let Some(published) = self.tracks.get_mut(&track) else {
            return;
        };
        published.announced = true;
        let (owner, kind) = (published.owner, published.kind);
        if let Some(source) = self
            .participants
            .get(&owner)
            .and_then(|p| p.sources.get(&published.mid.to_string()))
        {
            published.source = *source;
        }
        let Some(room) = self.participants.get(&owner).map(|p| p.room.clone()) else {
            return;
        };
        let others: Vec<ParticipantId> = self
            .rooms
            .get(&room)
            .map(|r| r.members.iter().copied().filter(|m| *m != owner).collect())
            .unwrap_or_default();
        for other in others {
            let Some(p) = self.participants.get_mut(&other) else {
                continue;
            };
            match p.role {
                Role::Member => {
                    p.outs.push(OutTrack::to_open(track, kind));
                    self.mark(other);
                }
                Role::Viewer => self.bind_slots(other, now),
                Role::Publisher => {}
            }
        }
    }

    /// Points a viewer's free slots at the room's announced tracks of their kind.
    fn bind_slots(&mut self, viewer: ParticipantId, now: Instant) {
        let Some(p) = self.participants.get(&viewer) else {
            return;
        };
        let Some(room) = self.rooms.get(&p.room) else {
            return;
        };
        let mut candidates: Vec<(TrackId, MediaKind, Source)> = room
            .members
            .iter()
            .filter_map(|m| self.participants.get(m))
            .flat_map(|m| m.published.values())
            .filter_map(|t| {
                let published = self.tracks.get(t)?;
                published
                    .announced
                    .then_some((*t, published.kind, published.source))
            })
            .collect();
        // Cameras before screens, oldest first.
        candidates.sort_by_key(|(t, _, source)| (*source == Source::Screen, t.0));
        let mut wanted = Vec::new();
        if let Some(p) = self.participants.get_mut(&viewer) {
            for out in p.outs.iter_mut().filter(|o| o.track.is_none()) {
                if let Some((t, _, _)) = candidates.iter().find(|(_, k, _)| *k == out.kind) {
                    out.track = Some(*t);
                    out.layer.rebind();
                    out.next_choice = None;
                    if out.kind == MediaKind::Video {
                        wanted.push(*t);
                    }
                }
            }
        }
        for t in wanted {
            self.request_keyframe(t, None, now);
        }
        self.mark(viewer);
    }

    /// Forwards one RTP packet from `from` (on its m-line `mid`, simulcast layer `rid`) to
    /// everyone in the room whose m-lines carry that track and layer.
    fn forward(
        &mut self,
        from: ParticipantId,
        mid: Mid,
        rid: Option<Rid>,
        packet: RtpPacket,
        now: Instant,
    ) {
        let Some(p) = self.participants.get(&from) else {
            return;
        };
        let Some(&track) = p.published.get(&mid) else {
            return;
        };
        // A track the publisher withdrew (screen sharing stopped) stays withdrawn even if a few
        // packets were still on their way.
        if !p.sources.is_empty() && !p.sources.contains_key(&mid.to_string()) {
            return;
        }
        let their_pt = packet.header.payload_type;
        let Some(params) = p
            .rtc
            .codec_config()
            .find(|params| params.pt() == their_pt)
            .copied()
        else {
            return;
        };
        let codec = params.spec().codec;
        let room_name = p.room.clone();
        let label = p.label.clone();
        if !self.tracks.get(&track).is_some_and(|t| t.announced) {
            self.announce(track, now);
        }
        let payload = &packet.payload;
        let keyframe = rtp::starts_keyframe(codec, payload);
        // Parsed once here, renumbered per subscriber below.
        let vp8 = if codec == Codec::Vp8 {
            Vp8Descriptor::parse(payload).ok()
        } else {
            None
        };
        let keyframes_known = rtp::keyframes_known(codec);
        let rid_name: Option<String> = rid.map(|r| r.to_string());
        let Some(published) = self.tracks.get_mut(&track) else {
            return;
        };
        if let Some(rid) = &rid_name {
            let size = if keyframe && codec == Codec::Vp8 {
                rtp::vp8_frame(payload).and_then(vp8_size)
            } else {
                None
            };
            published.layers.observe(rid, now, payload.len(), size);
        }
        published.rate.add(now, payload.len() + PACKET_OVERHEAD);
        let simulcast = published.layers.is_simulcast();
        let kind = published.kind;
        let ext = &packet.header.ext_vals;
        if kind == MediaKind::Audio
            && let Some(level) = ext.audio_level
            && let Some(room) = self.rooms.get_mut(&room_name)
        {
            room.speaker.observe(&label, level.unsigned_abs(), now);
        }
        let out_ext = ExtensionValues {
            audio_level: ext.audio_level,
            voice_activity: ext.voice_activity,
            video_orientation: ext.video_orientation,
            ..ExtensionValues::default()
        };
        let members: Vec<ParticipantId> = self
            .rooms
            .get(&room_name)
            .map(|r| r.members.iter().copied().filter(|m| *m != from).collect())
            .unwrap_or_default();
        let time = packet.time.numer();
        let clock = u64::from(packet.time.denom());
        let source: rtp::SourceKey = (track.0, rid);
        let mut keyframes_wanted: Vec<String> = Vec::new();
        for member in members {
            let Some(sub) = self.participants.get_mut(&member) else {
                continue;
            };
            let share = sub.bandwidth.map(|b| {
                let videos = sub
                    .outs
                    .iter()
                    .filter(|o| o.kind == MediaKind::Video)
                    .count();
                b / videos.max(1) as u64
            });
            let prefers_high = sub.role == Role::Viewer;
            let mut wrote = false;
            for out in sub.outs.iter_mut() {
                let OutState::Open(out_mid) = out.state else {
                    continue;
                };
                if out.track != Some(track) {
                    continue;
                }
                let layer = rid_name.as_deref().unwrap_or("");
                if simulcast {
                    if out.view == Some((0, 0)) {
                        continue;
                    }
                    if out.next_choice.is_none_or(|t| t <= now) {
                        out.next_choice = Some(now + LAYER_INTERVAL);
                        let published = &self.tracks[&track];
                        let choice = published.layers.choose(now, out.view, share, prefers_high);
                        if out.layer.set_target(choice) {
                            keyframes_wanted.extend(choice.map(str::to_owned));
                        }
                    }
                } else if out.layer.current().is_none() && out.layer.pending().is_none() {
                    out.layer.set_target(Some(layer));
                }
                // Every stream starts (and every switch happens) at a keyframe, and its RTP time
                // continues the m-line's, whichever publisher or layer it comes from.
                let starts = keyframe || kind == MediaKind::Audio || !keyframes_known;
                let out_time = match out.layer.admit(layer, starts, time, clock, now) {
                    Verdict::Forward(t) => t,
                    Verdict::Drop => continue,
                };
                let our_pt = match out.pt_map {
                    Some((t, theirs, ours)) if t == track && theirs == their_pt => ours,
                    _ => {
                        let Some(ours) = sub.rtc.codec_config().match_params(params) else {
                            continue;
                        };
                        let ours = ours.pt();
                        out.pt_map = Some((track, their_pt, ours));
                        ours
                    }
                };
                let Some(seq) = out.rewriter.sequence(source, *packet.seq_no) else {
                    continue;
                };
                let patch = vp8.as_ref().and_then(|d| out.rewriter.vp8_patch(d));
                let mut api = sub.rtc.direct_api();
                let Some(stream) = api.stream_tx_by_mid(out_mid, None) else {
                    continue;
                };
                // RTP time is the low 32 bits of the rebased timeline.
                let mut write = RtpWrite::new(
                    our_pt,
                    seq.into(),
                    out_time as u32,
                    packet.timestamp,
                    packet.payload.clone(),
                )
                .marker(packet.header.marker)
                .ext_vals(out_ext.clone())
                .nackable(kind == MediaKind::Video);
                if let Some(patch) = patch {
                    write = write.vp8_patch(patch);
                }
                stream.write_rtp(write);
                self.stats.media_forwarded += 1;
                wrote = true;
            }
            if wrote {
                self.mark_written(member);
            }
        }
        keyframes_wanted.sort();
        keyframes_wanted.dedup();
        for rid in keyframes_wanted {
            self.request_keyframe(track, Some(rid), now);
        }
    }

    /// Asks a track's publisher for a keyframe of one layer, at most every
    /// [`KEYFRAME_THROTTLE`].
    fn request_keyframe(&mut self, track: TrackId, rid: Option<String>, now: Instant) {
        let Some(published) = self.tracks.get_mut(&track) else {
            return;
        };
        if published.kind != MediaKind::Video {
            return;
        }
        if published
            .keyframe_asked
            .get(&rid)
            .is_some_and(|t| now.saturating_duration_since(*t) < KEYFRAME_THROTTLE)
        {
            return;
        }
        published.keyframe_asked.insert(rid.clone(), now);
        let (owner, mid) = (published.owner, published.mid);
        let rids: Vec<Option<Rid>> = match rid {
            Some(r) => vec![Some(Rid::from(r.as_str()))],
            None if published.layers.is_simulcast() => published
                .layers
                .layers()
                .iter()
                .map(|l| Some(Rid::from(l.rid.as_str())))
                .collect(),
            None => vec![None],
        };
        let Some(p) = self.participants.get_mut(&owner) else {
            return;
        };
        let mut api = p.rtc.direct_api();
        for rid in rids {
            // A layer that has not sent anything yet has no stream to ask.
            if let Some(stream) = api.stream_rx_by_mid(mid, rid) {
                stream.request_keyframe(KeyframeRequestKind::Pli);
                self.stats.keyframe_requests += 1;
            }
        }
        self.mark(owner);
    }

    /// A subscriber's PLI/FIR on one of our m-lines: ask the publisher of what it gets there.
    fn keyframe_wanted(
        &mut self,
        id: ParticipantId,
        mid: Mid,
        _kind: KeyframeRequestKind,
        now: Instant,
    ) {
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        let Some(out) = p.outs.iter().find(|o| o.state.mid() == Some(mid)) else {
            return;
        };
        let Some(track) = out.track else { return };
        let rid = out.layer.current().map(str::to_owned);
        let simulcast = self
            .tracks
            .get(&track)
            .is_some_and(|t| t.layers.is_simulcast());
        if simulcast && rid.is_none() {
            // Nothing forwarded yet; the pending switch already asked.
            let pending = out.layer.pending().map(str::to_owned);
            self.request_keyframe(track, pending, now);
        } else {
            self.request_keyframe(track, rid, now);
        }
    }

    fn control_open(&mut self, id: ParticipantId, cid: ChannelId) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        p.control = Some(cid);
        let room = p.room.clone();
        // Tell the newcomer everyone's microphone/camera state.
        let states: Vec<String> = self
            .rooms
            .get(&room)
            .map(|r| {
                r.members
                    .iter()
                    .filter(|m| **m != id)
                    .filter_map(|m| self.participants.get(m))
                    .filter_map(|m| {
                        let (audio, video) = m.media_state?;
                        Some(
                            ServerMessage::State {
                                from: &m.label,
                                audio,
                                video,
                            }
                            .to_json(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        // And who is speaking: the change was announced before this channel was open.
        let speaker = self
            .rooms
            .get(&room)
            .and_then(|r| r.speaker.current())
            .map(|peer| ServerMessage::Speaker { peer: Some(peer) }.to_json());
        for json in states.into_iter().chain(speaker) {
            self.send_control(id, &json);
        }
        self.mark(id);
    }

    fn send_control(&mut self, id: ParticipantId, json: &str) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        let Some(mut channel) = p.control.and_then(|c| p.rtc.channel(c)) else {
            return;
        };
        if let Err(e) = channel.write(false, json.as_bytes()) {
            debug!(label = %p.label, "control write failed: {e}");
        }
        self.mark(id);
    }

    /// Sends `json` to every member of `room` but `except`.
    fn broadcast(&mut self, room: &str, except: ParticipantId, json: &str) {
        let members: Vec<ParticipantId> = self
            .rooms
            .get(room)
            .map(|r| r.members.iter().copied().filter(|m| *m != except).collect())
            .unwrap_or_default();
        for member in members {
            self.send_control(member, json);
        }
    }

    fn control(&mut self, id: ParticipantId, bytes: &[u8], now: Instant) {
        if bytes.len() > control::MAX_CONTROL_BYTES {
            return;
        }
        let message: ClientMessage = match serde_json::from_slice(bytes) {
            Ok(m) => m,
            Err(e) => {
                debug!("ignoring a control message: {e}");
                return;
            }
        };
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        match message {
            ClientMessage::Answer { sdp } => {
                let Some(pending) = p.pending.take() else {
                    return;
                };
                let answer = match SdpAnswer::from_sdp_string(&sdp) {
                    Ok(a) => a,
                    Err(e) => {
                        p.failed = Some(LeaveReason::Misbehaved(format!("bad answer: {e}")));
                        return;
                    }
                };
                let accepted = catch_unwind(AssertUnwindSafe(|| {
                    p.rtc.sdp_api().accept_answer(pending, answer)
                }));
                if !matches!(accepted, Ok(Ok(()))) {
                    p.failed = Some(LeaveReason::Misbehaved("answer not accepted".into()));
                    return;
                }
                let mut opened = Vec::new();
                for out in &mut p.outs {
                    if let OutState::Negotiating(m) = out.state {
                        out.state = OutState::Open(m);
                        opened.extend(out.track);
                    }
                }
                p.outs
                    .retain(|o| !matches!(o.state, OutState::NegotiatingStop(_)));
                self.mark(id);
                for track in opened {
                    self.request_keyframe(track, None, now);
                }
            }
            ClientMessage::Offer { sdp } => {
                let offer = match SdpOffer::from_sdp_string(&sdp) {
                    Ok(o) => o,
                    Err(e) => {
                        p.failed = Some(LeaveReason::Misbehaved(format!("bad offer: {e}")));
                        return;
                    }
                };
                let answer = catch_unwind(AssertUnwindSafe(|| p.rtc.sdp_api().accept_offer(offer)));
                let Ok(Ok(answer)) = answer else {
                    p.failed = Some(LeaveReason::Misbehaved("offer not accepted".into()));
                    return;
                };
                // Our own pending offer was rolled back: renegotiate it afterwards.
                p.pending = None;
                for out in &mut p.outs {
                    match out.state {
                        OutState::Negotiating(_) => out.state = OutState::ToOpen,
                        OutState::NegotiatingStop(m) => out.state = OutState::ToStop(m),
                        _ => {}
                    }
                }
                let json = ServerMessage::Answer {
                    sdp: answer.to_sdp_string(),
                }
                .to_json();
                self.send_control(id, &json);
            }
            ClientMessage::Sources { sources } => {
                p.sources = sources;
                // A track whose source was withdrawn (screen sharing stopped) is unpublished
                // until it flows again.
                let withdrawn: Vec<TrackId> = p
                    .published
                    .iter()
                    .filter(|(mid, _)| !p.sources.contains_key(&mid.to_string()))
                    .map(|(_, t)| *t)
                    .collect();
                for track in withdrawn {
                    if self.tracks.get(&track).is_some_and(|t| t.announced) {
                        self.unannounce(track, now);
                    }
                }
            }
            ClientMessage::View { tracks } => {
                for out in &mut p.outs {
                    if let Some(mid) = out.state.mid()
                        && let Some(size) = tracks.get(&mid.to_string())
                    {
                        out.view = Some((size.width, size.height));
                        out.next_choice = None;
                    }
                }
            }
            ClientMessage::Chat { text } => {
                let room = p.room.clone();
                let label = p.label.clone();
                let json = ServerMessage::Chat {
                    from: &label,
                    text: control::clip_chat(&text),
                }
                .to_json();
                self.broadcast(&room, id, &json);
            }
            ClientMessage::State { audio, video } => {
                p.media_state = Some((audio, video));
                let room = p.room.clone();
                let label = p.label.clone();
                let json = ServerMessage::State {
                    from: &label,
                    audio,
                    video,
                }
                .to_json();
                self.broadcast(&room, id, &json);
            }
        }
    }

    /// Takes a track away from its subscribers (its publisher left or withdrew it).
    fn unannounce(&mut self, track: TrackId, now: Instant) {
        if let Some(published) = self.tracks.get_mut(&track) {
            published.announced = false;
        }
        let ids: Vec<ParticipantId> = self.participants.keys().copied().collect();
        let mut viewers = Vec::new();
        for id in ids {
            let Some(p) = self.participants.get_mut(&id) else {
                continue;
            };
            let mut touched = false;
            for out in p.outs.iter_mut().filter(|o| o.track == Some(track)) {
                touched = true;
                if p.role == Role::Viewer {
                    out.track = None;
                    out.layer.rebind();
                    continue;
                }
                out.state = match out.state {
                    OutState::Open(m) | OutState::Negotiating(m) => OutState::ToStop(m),
                    other => other,
                };
            }
            if touched {
                p.outs
                    .retain(|o| o.state != OutState::ToOpen || o.track != Some(track));
                if p.role == Role::Viewer {
                    viewers.push(id);
                }
                self.mark(id);
            }
        }
        for viewer in viewers {
            self.bind_slots(viewer, now);
        }
    }

    fn remove(&mut self, id: ParticipantId, reason: LeaveReason, now: Instant) {
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        let published: Vec<TrackId> = p.published.values().copied().collect();
        for track in &published {
            self.unannounce(*track, now);
            self.tracks.remove(track);
        }
        let Some(mut p) = self.participants.remove(&id) else {
            return;
        };
        p.rtc.disconnect();
        self.routes.retain(|_, owner| *owner != id);
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.members.retain(|m| *m != id);
            room.speaker.remove(&p.label);
            if room.members.is_empty() {
                self.rooms.remove(&p.room);
            }
        }
        debug!(room = %p.room, label = %p.label, ?reason, "left");
        self.events.push_back(SfuEvent::Left {
            id,
            room: p.room,
            label: p.label,
            reason,
        });
    }

    /// Tells each room member's bandwidth estimator what it would take to send it everything
    /// it subscribes to at the best layer, so the estimator probes up to that quickly instead
    /// of growing slowly from its starting value while the pacer holds video back (a publisher
    /// without simulcast has no smaller layer to fall back on).
    fn update_desired_bitrates(&mut self, now: Instant) {
        let mut updates = Vec::new();
        for (id, p) in &self.participants {
            if p.role != Role::Member {
                continue;
            }
            let wanted: u64 = p
                .outs
                .iter()
                .filter(|o| matches!(o.state, OutState::Open(_)) && o.view != Some((0, 0)))
                .filter_map(|o| {
                    let track = self.tracks.get(&o.track?)?;
                    Some(track.wanted_bitrate(now, o.view, false))
                })
                .sum();
            let desired = wanted + wanted / 5;
            let changed = p
                .desired_bitrate
                .is_none_or(|d| desired.abs_diff(d) > d / 10);
            if desired > 0 && changed {
                updates.push((*id, desired));
            }
        }
        for (id, desired) in updates {
            if let Some(p) = self.participants.get_mut(&id) {
                p.desired_bitrate = Some(desired);
                p.rtc
                    .bwe()
                    .set_bitrate(str0m::bwe::Bitrate::ZERO, str0m::bwe::Bitrate::bps(desired));
            }
            self.mark(id);
        }
    }

    fn evaluate_speakers(&mut self, now: Instant) {
        let changes: Vec<(String, Option<String>)> = self
            .rooms
            .iter_mut()
            .filter_map(|(name, room)| Some((name.clone(), room.speaker.evaluate(now)?)))
            .collect();
        for (room, speaker) in changes {
            let json = ServerMessage::Speaker {
                peer: speaker.as_deref(),
            }
            .to_json();
            self.broadcast(&room, ParticipantId(0), &json);
        }
    }
}

/// Adds and stops m-lines for a member's changed subscriptions and sends the offer on its
/// control channel. One negotiation at a time.
fn negotiate(p: &mut Participant, tracks: &FxHashMap<TrackId, Published>) {
    if p.role != Role::Member || p.pending.is_some() {
        return;
    }
    let Some(cid) = p.control else { return };
    if !p
        .outs
        .iter()
        .any(|o| matches!(o.state, OutState::ToOpen | OutState::ToStop(_)))
    {
        return;
    }
    let mut change = p.rtc.sdp_api();
    for out in &mut p.outs {
        match out.state {
            OutState::ToOpen => {
                let Some(published) = out.track.and_then(|t| tracks.get(&t)) else {
                    continue;
                };
                let stream = match published.source {
                    Source::Screen => format!("{}~screen", published.owner_label),
                    _ => published.owner_label.clone(),
                };
                let track_id = format!("t{}", out.track.map_or(0, |t| t.0));
                let mid = change.add_media(
                    published.kind,
                    Direction::SendOnly,
                    Some(stream),
                    Some(track_id),
                    None,
                );
                out.state = OutState::Negotiating(mid);
            }
            OutState::ToStop(mid) => {
                change.stop_media(mid);
                out.state = OutState::NegotiatingStop(mid);
            }
            _ => {}
        }
    }
    if !change.has_changes() {
        return;
    }
    let Some((offer, pending)) = change.apply() else {
        return;
    };
    p.pending = Some(pending);
    let infos = p
        .outs
        .iter()
        .filter_map(|o| {
            let mid = match o.state {
                OutState::Negotiating(m) | OutState::Open(m) => m,
                _ => return None,
            };
            let published = tracks.get(&o.track?)?;
            Some(TrackInfo {
                mid: mid.to_string(),
                peer: published.owner_label.clone(),
                kind: match published.kind {
                    MediaKind::Audio => "audio",
                    MediaKind::Video => "video",
                },
                source: published.source,
            })
        })
        .collect();
    let json = ServerMessage::Offer {
        sdp: offer.to_sdp_string(),
        tracks: infos,
    }
    .to_json();
    if let Some(mut channel) = p.rtc.channel(cid)
        && let Err(e) = channel.write(false, json.as_bytes())
    {
        debug!(label = %p.label, "offer write failed: {e}");
    }
}

fn vp8_size(frame: &[u8]) -> Option<(u16, u16)> {
    // 3-byte frame tag (bit 0 clear on keyframes), start code 9d 01 2a, then 14-bit sizes.
    if frame.len() < 10 || frame[0] & 1 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_size_is_read_from_the_frame_header() {
        let frame = [
            0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, 0, 0,
        ];
        assert_eq!(vp8_size(&frame), Some((640, 480)));
        let interframe = [0x51, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
        assert_eq!(vp8_size(&interframe), None);
        assert_eq!(vp8_size(&[0x50, 0x42]), None);
    }

    #[test]
    fn an_ice_restart_offer_takes_the_new_credentials_and_drops_the_candidates() {
        let offer = "v=0\r\na=ice-ufrag:old\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                     a=ice-ufrag:old\r\na=ice-pwd:oldpassword\r\n\
                     a=candidate:1 1 udp 2122260223 192.0.2.1 5000 typ host\r\n\
                     a=end-of-candidates\r\na=mid:0\r\n";
        assert_eq!(
            with_ice_credentials(offer, "new", "newpassword"),
            "v=0\r\na=ice-ufrag:new\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
             a=ice-ufrag:new\r\na=ice-pwd:newpassword\r\na=mid:0\r\n"
        );
    }
}
