// Full mesh of RTCPeerConnections, one per remote peer, negotiated with the
// "perfect negotiation" pattern so that offers crossing each other (glare) can
// never wedge a call: the polite side rolls back, the impolite side ignores.
// Also owns the per-peer chat data channel and ICE restarts after failures.

const DISCONNECTED_RESTART_MS = 3_000;
const POLITE_RESTART_DELAY_MS = 2_000;
const RESPONDER_WAIT_MS = 3_000;
// Generous: a relay-only connection waits for TURN allocations before its first candidate.
const GATHER_STALL_MS = 8_000;
const ICE_NEW_REBUILD_MS = 15_000;
const KINDS = ['audio', 'video'];

/**
 * Events: `peeradded` {peer}, `peerupdated` {peer}, `peerremoved` {peer, reason},
 * `track` {peer, track}, `chat` {peer, text, at}, `remotestate` {peer}.
 */
export class Mesh extends EventTarget {
  /**
   * @param {object} opts
   * @param {import('./signaling.js').SignalingClient} opts.signaling
   * @param {import('./media.js').LocalMedia} opts.media
   */
  constructor({ signaling, media, relayOnly = false }) {
    super();
    this.signaling = signaling;
    this.media = media;
    // Relay-only: media goes through the TURN server and peers never learn each other's IP
    // addresses (`?relay=1`); slower, but private and the way through strict firewalls.
    this.relayOnly = relayOnly;
    this.selfId = null;
    this.iceServers = [];
    /** @type {Map<string, Peer>} */
    this.peers = new Map();
  }

  /** Called after every `welcome`: sets our id and ICE servers. */
  configure({ selfId, iceServers }) {
    this.selfId = selfId;
    this.iceServers = iceServers ?? [];
  }

  /**
   * Makes sure a connection to `id` exists; returns its Peer. `initiator`:
   * we offer first (we are the newcomer); otherwise we wait for their offer.
   */
  ensurePeer(id, name, { initiator = false } = {}) {
    let peer = this.peers.get(id);
    if (peer) {
      if (name && peer.name !== name) {
        peer.name = name;
        this.emit('peerupdated', { peer });
      }
      return peer;
    }
    peer = new Peer(this, id, name ?? id.slice(0, 6));
    this.peers.set(id, peer);
    this.emit('peeradded', { peer });
    peer.start({ initiator });
    this.tuneVideo();
    return peer;
  }

  removePeer(id, reason = 'left') {
    const peer = this.peers.get(id);
    if (!peer) return;
    this.peers.delete(id);
    peer.close();
    this.emit('peerremoved', { peer, reason });
    this.tuneVideo();
  }

  /**
   * In a mesh we send one copy of our video per peer, so each copy gets
   * smaller as the room grows: uplink and encoder load stay about flat.
   */
  tuneVideo() {
    for (const peer of this.peers.values()) peer.tuneVideo(this.peers.size);
  }

  /**
   * Keeps exactly the peers in `list`: after a resume the server's list is
   * the truth (we are not told who came and went while we were away).
   * Newcomers found here joined while we were away, saw us in their
   * `welcome` and offer to us, so we wait for their offer.
   */
  reconcile(list) {
    const keep = new Set(list.map((p) => p.id));
    for (const id of [...this.peers.keys()]) {
      if (!keep.has(id)) this.removePeer(id, 'gone');
    }
    for (const p of list) this.ensurePeer(p.id, p.name, { initiator: false });
  }

  closeAll(reason = 'closed') {
    for (const id of [...this.peers.keys()]) this.removePeer(id, reason);
  }

  /** Routes a `signal` frame from the server to its peer connection. */
  handleSignal({ from, description, candidate }) {
    const peer = this.peers.get(from);
    if (!peer) return;
    peer.enqueue(() => peer.onSignal(description, candidate));
  }

  /** Puts `track` (or null) on the `kind` sender of every connection. */
  async setTrack(kind, track) {
    await Promise.all([...this.peers.values()].map((p) => p.setTrack(kind, track)));
  }

  /** Shares a screen in place of the camera (null: back to the camera). */
  async setScreen(track) {
    await this.setTrack('video', track ?? this.media.track('video') ?? null);
  }

  /** Sends a chat line to every peer with an open channel; returns how many got it. */
  sendChat(text) {
    return this.broadcast({ type: 'chat', text });
  }

  /** Tells every peer whether our mic/camera are on (shown on their tiles). */
  sendMediaState() {
    this.broadcast(this.mediaStateMessage());
  }

  mediaStateMessage() {
    return { type: 'state', audio: this.media.isSending('audio'), video: this.media.isSending('video') };
  }

  broadcast(msg) {
    const data = JSON.stringify(msg);
    let n = 0;
    for (const peer of this.peers.values()) {
      if (peer.dc?.readyState === 'open') {
        peer.dc.send(data);
        n++;
      }
    }
    return n;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** One remote participant and our RTCPeerConnection to it. */
class Peer {
  constructor(mesh, id, name) {
    this.mesh = mesh;
    this.id = id;
    this.name = name;
    // Both ends must agree on who yields; comparing the ids gives opposite answers.
    this.polite = mesh.selfId < id;
    this.pc = null;
    this.dc = null;
    this.senders = {};
    this.transceivers = {};
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    this.queue = Promise.resolve();
    this.stream = new MediaStream();
    this.remote = { audio: true, video: true }; // what the peer says it sends
    this.initiator = false;
    this.attached = false;
    this.attachTimer = null;
    this.watchdog = null;
    this.restartTimer = null;
    this.gatherTimer = null;
    this.gatheredUfrags = new Set(); // ICE ufrags we have gathered candidates for
    this.remoteSession = null; // SDP session id (o= line) of the other side's connection
    this.iceRestarts = 0;
    this.rebuilds = 0;
    this.createdAt = performance.now();
    this.firstFrameAt = null;
    /** performance.now() of the first offer/answer sent and received and of ICE connected. */
    this.timeline = {};
    this.closed = false;
  }

  get connectionState() {
    return this.closed ? 'closed' : this.pc?.connectionState ?? 'new';
  }

  /**
   * Creates the RTCPeerConnection. The initiator attaches its media at once
   * (so it offers first); the other side waits for that offer and attaches
   * right before answering it. Both would converge anyway (perfect
   * negotiation), but avoiding glare on every join is faster and avoids
   * rollbacks while ICE is gathering, which Chromium sometimes does not
   * survive (see rebuild()).
   */
  start({ initiator }) {
    const pc = new RTCPeerConnection({
      iceServers: this.mesh.iceServers,
      iceTransportPolicy: this.mesh.relayOnly ? 'relay' : 'all',
      bundlePolicy: 'max-bundle',
    });
    this.pc = pc;
    this.initiator = initiator;

    pc.onnegotiationneeded = () => this.enqueue(() => this.makeOffer());
    pc.onicecandidate = ({ candidate }) => {
      if (candidate?.usernameFragment) this.gatheredUfrags.add(candidate.usernameFragment);
      this.mesh.signaling.signal(this.id, { candidate: candidateToWire(candidate) });
    };
    pc.ontrack = ({ track }) => this.onTrack(track);
    pc.onconnectionstatechange = () => this.changed();
    pc.oniceconnectionstatechange = () => {
      const s = pc.iceConnectionState;
      if (s === 'connected') this.timeline.iceConnected ??= performance.now();
      clearTimeout(this.restartTimer);
      // Both ends usually see a failure at the same moment; the polite one
      // gives the impolite one's restart a head start so offers do not cross.
      if (s === 'failed') {
        if (!this.polite) this.restartIce('ICE failed');
        else {
          this.restartTimer = setTimeout(() => {
            if (pc.iceConnectionState === 'failed' && pc.signalingState === 'stable') this.restartIce('ICE failed');
          }, POLITE_RESTART_DELAY_MS);
        }
      } else if (s === 'disconnected') {
        // Often recovers by itself (a brief network blip); restart if it does not.
        this.restartTimer = setTimeout(() => {
          if (pc.iceConnectionState === 'disconnected') this.restartIce('still disconnected');
        }, DISCONNECTED_RESTART_MS + (this.polite ? POLITE_RESTART_DELAY_MS : 0));
      }
      this.armWatchdog();
      this.changed();
    };
    pc.onsignalingstatechange = () => {
      this.armWatchdog();
      // Encoding parameters can only be set once the sender is negotiated.
      if (pc.signalingState === 'stable') this.tuneVideo(this.mesh.peers.size);
      this.changed();
    };

    if (initiator) {
      this.attach({ recvOnlyFor: true });
    } else {
      // If the initiator's offer never comes (e.g. an older client), offer ourselves.
      this.attachTimer = setTimeout(() => this.enqueue(async () => this.attach({ recvOnlyFor: true })), RESPONDER_WAIT_MS);
    }
  }

  /**
   * Adds our tracks and the chat channel. `recvOnlyFor`: add receive-only
   * transceivers for kinds we cannot send, so that our offer asks for them
   * (an answerer gets them from the offer instead).
   */
  attach({ recvOnlyFor }) {
    if (this.attached || this.closed) return;
    this.attached = true;
    clearTimeout(this.attachTimer);
    const pc = this.pc;
    const media = this.mesh.media;
    for (const kind of KINDS) {
      const track = media.track(kind);
      if (track) {
        // addTrack (not addTransceiver) so that a remote offer can reuse the transceiver.
        this.senders[kind] = pc.addTrack(track, media.stream);
        this.transceivers[kind] = pc.getTransceivers().find((t) => t.sender === this.senders[kind]);
      } else if (recvOnlyFor) {
        const t = pc.addTransceiver(kind, { direction: 'recvonly' });
        this.transceivers[kind] = t;
        this.senders[kind] = t.sender;
      }
    }

    // Pre-negotiated channel: both ends create it, so no in-band open and no glare.
    this.dc = pc.createDataChannel('chat', { negotiated: true, id: 0, ordered: true });
    this.dc.onopen = () => {
      this.dc.send(JSON.stringify(this.mesh.mediaStateMessage()));
      this.changed();
    };
    this.dc.onclose = () => this.changed();
    this.dc.onmessage = (ev) => this.onData(ev.data);
  }

  /**
   * Chromium sometimes never gathers a single candidate again after rolling
   * back an offer whose gathering had just started: the connection stays
   * "new" for good and ICE restarts do not help. Checked after every local
   * description: if gathering for its ICE credentials produced nothing, the
   * connection is rebuilt.
   */
  armGatherCheck() {
    clearTimeout(this.gatherTimer);
    const pc = this.pc;
    const ufrag = iceUfrag(pc.localDescription?.sdp);
    this.gatherTimer = setTimeout(() => {
      if (this.closed || pc !== this.pc) return;
      if (pc.iceGatheringState === 'gathering' && ufrag && !this.gatheredUfrags.has(ufrag)
          && iceUfrag(pc.localDescription?.sdp) === ufrag) {
        this.enqueue(() => this.rebuild('ICE gathering stalled'));
      }
    }, this.backoff(GATHER_STALL_MS));
  }

  /**
   * Last resort for anything else that wedges: ICE still "new" long after a
   * completed offer/answer. The impolite side acts first so that both do not
   * rebuild at once.
   */
  armWatchdog() {
    clearTimeout(this.watchdog);
    const pc = this.pc;
    if (this.closed || pc.iceConnectionState !== 'new' || pc.signalingState !== 'stable' || !pc.remoteDescription) return;
    this.watchdog = setTimeout(() => {
      if (!this.closed && pc === this.pc && pc.iceConnectionState === 'new' && pc.signalingState === 'stable') {
        this.enqueue(() => this.rebuild('ICE never started'));
      }
    }, this.backoff(this.polite ? ICE_NEW_REBUILD_MS * 1.5 : ICE_NEW_REBUILD_MS));
  }

  /** Waits longer after each rebuild, so that an overloaded machine is not made busier. */
  backoff(ms) {
    return ms * 2 ** Math.min(this.rebuilds, 3);
  }

  /**
   * Replaces the RTCPeerConnection with a fresh one. As initiator we offer at
   * once; the other side sees an offer from a new SDP session (o= line) and
   * rebuilds its end as responder (see onSignal).
   */
  rebuild(why, { initiator = true } = {}) {
    if (this.closed) return;
    console.info(`peer ${this.id}: new connection (${why})`);
    this.rebuilds++;
    this.dropConnection();
    this.senders = {};
    this.transceivers = {};
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    this.attached = false;
    this.remoteSession = null;
    this.gatheredUfrags.clear();
    for (const t of this.stream.getTracks()) this.stream.removeTrack(t);
    this.start({ initiator });
    this.changed();
  }

  dropConnection() {
    clearTimeout(this.restartTimer);
    clearTimeout(this.watchdog);
    clearTimeout(this.attachTimer);
    clearTimeout(this.gatherTimer);
    const { pc, dc } = this;
    if (dc) dc.onopen = dc.onclose = dc.onmessage = null;
    if (pc) {
      pc.onnegotiationneeded = pc.onicecandidate = pc.ontrack = null;
      pc.onconnectionstatechange = pc.oniceconnectionstatechange = pc.onsignalingstatechange = null;
    }
    try { dc?.close(); } catch { /* ignore */ }
    try { pc?.close(); } catch { /* ignore */ }
  }

  /** Runs `fn` after every earlier signaling step of this peer has finished. */
  enqueue(fn) {
    this.queue = this.queue.then(fn).catch((err) => {
      if (!this.closed) console.warn(`peer ${this.id}: negotiation step failed`, err);
    });
    return this.queue;
  }

  async makeOffer() {
    const pc = this.pc;
    // Only offer from stable; the browser fires negotiationneeded again once we
    // are back in stable if it is still needed.
    if (this.closed || pc.signalingState !== 'stable') return;
    try {
      this.makingOffer = true;
      await pc.setLocalDescription();
      this.sendDescription();
      this.armGatherCheck();
    } finally {
      this.makingOffer = false;
    }
  }

  async onSignal(description, candidate) {
    if (this.closed) return;
    if (description) {
      this.timeline[`${description.type}Received`] ??= performance.now();
      const session = sdpSession(description.sdp);
      if (description.type === 'offer' && this.remoteSession && session && session !== this.remoteSession) {
        // The other side replaced its connection (rebuild()): follow suit.
        this.rebuild('the other side started a new connection', { initiator: false });
      }
      const pc = this.pc;
      if (description.type === 'offer') this.attach({ recvOnlyFor: false });
      const readyForOffer = !this.makingOffer && (pc.signalingState === 'stable' || this.settingRemoteAnswer);
      const collision = description.type === 'offer' && !readyForOffer;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      this.settingRemoteAnswer = description.type === 'answer';
      try {
        // For the polite side a colliding offer rolls back our own offer implicitly.
        await pc.setRemoteDescription(description);
        if (session) this.remoteSession = session;
      } finally {
        this.settingRemoteAnswer = false;
      }
      if (description.type === 'offer') {
        await pc.setLocalDescription();
        this.sendDescription();
        this.armGatherCheck();
      }
    } else if (candidate !== undefined) {
      const pc = this.pc;
      const init = candidateFromWire(candidate);
      if (!init) return; // end-of-candidates: nothing to do for trickle here
      try {
        await pc.addIceCandidate(init);
      } catch (err) {
        // Candidates for an offer we ignored are expected to fail.
        if (!this.ignoreOffer) throw err;
      }
    }
  }

  sendDescription() {
    const { type, sdp } = this.pc.localDescription;
    this.timeline[`${type}Sent`] ??= performance.now();
    this.mesh.signaling.signal(this.id, { description: { type, sdp } });
  }

  restartIce(why) {
    if (this.closed) return;
    this.iceRestarts++;
    console.info(`peer ${this.id}: restarting ICE (${why})`);
    // Fires negotiationneeded; the perfect-negotiation path sends the new offer.
    this.pc.restartIce();
  }

  /** Applies the video size and bitrate for a mesh with `n` other peers (see videoQuality). */
  async tuneVideo(n) {
    const sender = this.senders.video;
    if (this.closed || !sender) return;
    const params = sender.getParameters();
    const enc = params.encodings?.[0];
    if (!enc) return; // not negotiated yet; called again when stable
    const q = videoQuality(n);
    if (enc.scaleResolutionDownBy === q.scaleResolutionDownBy && enc.maxBitrate === q.maxBitrate
        && enc.maxFramerate === q.maxFramerate) return;
    Object.assign(enc, q);
    try {
      await sender.setParameters(params);
    } catch (err) {
      console.warn(`peer ${this.id}: could not set video parameters`, err);
    }
  }

  async setTrack(kind, track) {
    if (this.closed || !this.attached) return; // attach() picks up the current tracks
    let t = this.transceivers[kind];
    if (!t) {
      // We answered without a track of this kind: use the transceiver the
      // offer created, or add one (renegotiates).
      t = this.pc.getTransceivers().find((x) => !x.stopped && x.receiver.track.kind === kind && !x.sender.track);
      if (!t) {
        if (!track) return;
        this.senders[kind] = this.pc.addTrack(track, this.mesh.media.stream);
        this.transceivers[kind] = this.pc.getTransceivers().find((x) => x.sender === this.senders[kind]);
        return;
      }
      this.transceivers[kind] = t;
      this.senders[kind] = t.sender;
    }
    await t.sender.replaceTrack(track);
    if (track && !t.stopped && (t.direction === 'recvonly' || t.direction === 'inactive')) {
      // We had nothing to send before: start sending (renegotiates).
      t.direction = 'sendrecv';
      t.sender.setStreams?.(this.mesh.media.stream);
    }
  }

  onTrack(track) {
    for (const old of this.stream.getTracks()) {
      if (old.kind === track.kind && old !== track) this.stream.removeTrack(old);
    }
    if (!this.stream.getTracks().includes(track)) this.stream.addTrack(track);
    this.mesh.emit('track', { peer: this, track });
  }

  onData(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg.type === 'chat' && typeof msg.text === 'string') {
      this.mesh.emit('chat', { peer: this, text: msg.text.slice(0, 2000), at: Date.now() });
    } else if (msg.type === 'state') {
      this.remote = { audio: msg.audio !== false, video: msg.video !== false };
      this.mesh.emit('remotestate', { peer: this });
    }
  }

  changed() {
    if (!this.closed) this.mesh.emit('peerupdated', { peer: this });
  }

  close() {
    this.closed = true;
    this.dropConnection();
    for (const t of this.stream.getTracks()) t.stop();
  }
}

/** Per-copy video settings for a mesh of `n` other peers (640x480 camera). */
export function videoQuality(n) {
  if (n <= 2) return { scaleResolutionDownBy: 1, maxBitrate: 1_200_000, maxFramerate: 30 };
  if (n === 3) return { scaleResolutionDownBy: 1.5, maxBitrate: 600_000, maxFramerate: 24 };
  return { scaleResolutionDownBy: 2, maxBitrate: 350_000, maxFramerate: 15 };
}

/** The ICE ufrag of an SDP (the first one; all m-sections share it under max-bundle). */
function iceUfrag(sdp) {
  return sdp?.match(/^a=ice-ufrag:(\S+)/m)?.[1] ?? null;
}

/** The session id of an SDP's o= line: one per RTCPeerConnection. */
function sdpSession(sdp) {
  return sdp?.match(/^o=\S+ (\d+) /m)?.[1] ?? null;
}

/** RTCIceCandidate (camelCase) → protocol candidate (snake_case); null = end of candidates. */
export function candidateToWire(c) {
  if (!c) return null;
  return {
    candidate: c.candidate ?? '',
    sdp_mid: c.sdpMid ?? null,
    sdp_m_line_index: c.sdpMLineIndex ?? null,
    username_fragment: c.usernameFragment ?? null,
  };
}

/** Protocol candidate → RTCIceCandidateInit, or null for an end-of-candidates marker. */
export function candidateFromWire(c) {
  if (!c || !c.candidate) return null;
  return {
    candidate: c.candidate,
    sdpMid: c.sdp_mid ?? null,
    sdpMLineIndex: c.sdp_m_line_index ?? null,
    usernameFragment: c.username_fragment ?? null,
  };
}
