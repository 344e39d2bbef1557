// A call through the server's SFU: one RTCPeerConnection to the server carries
// our microphone and camera (the camera as three simulcast layers) and
// everyone else's media. The first offer goes over signaling (`sfu`); after
// that the server renegotiates over the `sfu` data channel whenever someone's
// track starts or stops, and says whose each track is. Chat, mic/camera state
// and the active speaker travel on the same channel (docs/sfu.md).
//
// Same interface and events as Mesh (mesh.js), so the room UI works with both.

const KINDS = ['audio', 'video'];
const VIEW_REPORT_MS = 1_000;
const RECONNECT_MS = 2_000;
/** Simulcast layers, smallest first; the server picks one per viewer. */
export const LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

/**
 * Events: `peeradded` {peer}, `peerupdated` {peer}, `peerremoved` {peer, reason},
 * `track` {peer, track}, `chat` {peer, text, at}, `remotestate` {peer}, `speaker` {id}.
 */
export class SfuCall extends EventTarget {
  constructor({ signaling, media, relayOnly = false, viewSize = () => null, canPublish = true }) {
    super();
    this.signaling = signaling;
    // Without the publish grant the offer must not send media (the server refuses it).
    this.canPublish = canPublish;
    this.media = media;
    this.relayOnly = relayOnly;
    this.viewSize = viewSize;
    this.mode = 'sfu';
    this.selfId = null;
    this.iceServers = [];
    /** @type {Map<string, RemoteParticipant>} */
    this.peers = new Map();
    this.pc = null;
    this.dc = null;
    this.senders = {};
    this.screen = null; // {transceiver} once we have shared a screen
    /** mid → {peer, kind, source} from the server's last offer. */
    this.trackInfo = new Map();
    this.queue = Promise.resolve();
    this.closed = false;
    this.speaker = null;
    this.reconnectTimer = null;
    this.viewTimer = null;
    this.connects = 0;
    this.timeline = {};
    this.onSignalingSfu = (ev) => this.enqueue(() => this.onAnswer(ev.detail));
    signaling.addEventListener('sfu', this.onSignalingSfu);
  }

  configure({ selfId, iceServers }) {
    if (this.closed) {
      this.closed = false;
      this.signaling.addEventListener('sfu', this.onSignalingSfu);
    }
    this.selfId = selfId;
    this.iceServers = iceServers ?? [];
    // A new peer id (or the first welcome) means a new session with the SFU.
    if (!this.pc || this.pcFor !== selfId) this.connect();
  }

  /** Presence: a member of the room (their media arrives through the SFU). */
  ensurePeer(id, name) {
    let peer = this.peers.get(id);
    if (peer) {
      if (name && peer.name !== name) {
        peer.name = name;
        this.emit('peerupdated', { peer });
      }
      return peer;
    }
    peer = new RemoteParticipant(this, id, name ?? id.slice(0, 6));
    this.peers.set(id, peer);
    this.emit('peeradded', { peer });
    return peer;
  }

  removePeer(id, reason = 'left') {
    const peer = this.peers.get(id);
    if (!peer) return;
    this.peers.delete(id);
    for (const t of peer.stream.getTracks()) peer.stream.removeTrack(t);
    this.emit('peerremoved', { peer, reason });
  }

  reconcile(list) {
    const ids = new Set(list.map((p) => p.id));
    for (const id of [...this.peers.keys()]) if (!ids.has(id) && !this.peers.get(id).streamOnly) this.removePeer(id, 'left');
    for (const p of list) this.ensurePeer(p.id, p.name);
  }

  closeAll(reason = 'closed') {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.viewTimer);
    this.signaling.removeEventListener('sfu', this.onSignalingSfu);
    this.pc?.close();
    this.pc = null;
    for (const id of [...this.peers.keys()]) this.removePeer(id, reason);
  }

  handleSignal() {
    // Peer-to-peer signals are not used through the SFU.
  }

  /** Opens (or reopens) our connection to the SFU and sends the offer. */
  connect() {
    if (this.closed || !this.selfId) return;
    clearTimeout(this.reconnectTimer);
    this.pc?.close();
    this.trackInfo.clear();
    this.screen = null;
    this.connects++;
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.relayOnly ? 'relay' : 'all',
      bundlePolicy: 'max-bundle',
    });
    this.pc = pc;
    this.pcFor = this.selfId;
    this.timeline = { start: performance.now() };
    const dc = pc.createDataChannel('sfu');
    this.dc = dc;
    dc.onopen = () => {
      this.timeline.channelOpen = performance.now();
      this.sendSources();
      this.sendMediaState();
    };
    dc.onmessage = ({ data }) => this.enqueue(() => this.onControl(data));
    const stream = this.media.stream;
    for (const kind of this.canPublish ? KINDS : []) {
      const track = this.media.track(kind);
      const init = { direction: 'sendonly', streams: stream ? [stream] : [] };
      if (kind === 'video') init.sendEncodings = LAYERS.map((l) => ({ ...l }));
      const t = pc.addTransceiver(track ?? kind, init);
      this.senders[kind] = t.sender;
    }
    pc.ontrack = ({ track, transceiver }) => this.onTrack(track, transceiver);
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      if (s === 'connected') this.timeline.connected ??= performance.now();
      for (const peer of this.peers.values()) this.emit('peerupdated', { peer });
      if ((s === 'failed' || s === 'closed') && pc === this.pc && !this.closed) {
        this.reconnectTimer = setTimeout(() => this.connect(), RECONNECT_MS);
      }
    };
    this.enqueue(async () => {
      await pc.setLocalDescription(await pc.createOffer());
      this.signaling.send({ type: 'sfu', description: { type: 'offer', sdp: pc.localDescription.sdp } });
    });
    clearInterval(this.viewTimer);
    this.viewTimer = setInterval(() => this.sendViews(), VIEW_REPORT_MS);
  }

  async onAnswer({ description, error }) {
    const pc = this.pc;
    if (!pc) return;
    if (error || !description) {
      console.warn('SFU refused our offer:', error);
      this.emit('error', { message: `The server could not take the call: ${error ?? 'no answer'}` });
      return;
    }
    if (pc.signalingState !== 'have-local-offer') return;
    await pc.setRemoteDescription({ type: 'answer', sdp: description.sdp });
  }

  async onControl(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    switch (msg.type) {
      case 'offer': {
        const pc = this.pc;
        if (!pc) return;
        this.trackInfo = new Map((msg.tracks ?? []).map((t) => [String(t.mid), t]));
        if (pc.signalingState !== 'stable') await pc.setLocalDescription({ type: 'rollback' });
        await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
        await pc.setLocalDescription(await pc.createAnswer());
        this.send({ type: 'answer', sdp: pc.localDescription.sdp });
        this.pruneTracks();
        break;
      }
      case 'answer':
        if (this.pc?.signalingState === 'have-local-offer') {
          await this.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
        }
        break;
      case 'chat': {
        const peer = this.peers.get(msg.from);
        if (peer && typeof msg.text === 'string') this.emit('chat', { peer, text: msg.text.slice(0, 2000), at: Date.now() });
        break;
      }
      case 'state': {
        const peer = this.peers.get(msg.from);
        if (!peer) break;
        peer.remote = { audio: msg.audio !== false, video: msg.video !== false };
        this.emit('remotestate', { peer });
        break;
      }
      case 'speaker':
        this.speaker = msg.peer ?? null;
        this.emit('speaker', { id: this.speaker });
        break;
      default:
        break;
    }
  }

  onTrack(track, transceiver) {
    const info = this.trackInfo.get(String(transceiver.mid));
    if (!info) return;
    let peer;
    if (info.source === 'screen') {
      // A shared screen gets its own tile.
      const owner = this.peers.get(info.peer)?.name ?? 'Someone';
      peer = this.ensurePeer(`${info.peer}~screen`, `${owner} (screen)`);
      peer.streamOnly = true;
    } else {
      peer = this.peers.get(info.peer);
      if (!peer) {
        // A WHIP publisher: in the SFU room, not in signaling presence.
        peer = this.ensurePeer(info.peer, 'Live stream');
        peer.streamOnly = true;
      }
    }
    peer.mids.add(String(transceiver.mid));
    for (const old of peer.stream.getTracks()) {
      if (old.kind === track.kind && old !== track) peer.stream.removeTrack(old);
    }
    if (!peer.stream.getTracks().includes(track)) peer.stream.addTrack(track);
    this.emit('track', { peer, track });
  }

  /** Drops tracks whose m-lines the server stopped; removes stream-only tiles left empty. */
  pruneTracks() {
    const live = new Set(this.trackInfo.keys());
    for (const peer of [...this.peers.values()]) {
      for (const mid of [...peer.mids]) {
        if (live.has(mid)) continue;
        peer.mids.delete(mid);
        const t = this.pc?.getTransceivers().find((x) => x.mid === mid);
        if (t) peer.stream.removeTrack(t.receiver.track);
      }
      if (peer.streamOnly && peer.mids.size === 0) this.removePeer(peer.id, 'left');
    }
  }

  /** Tells the server what each of our sending m-lines carries. */
  sendSources() {
    const sources = {};
    for (const t of this.pc?.getTransceivers() ?? []) {
      if (t.mid == null || t.direction !== 'sendonly') continue;
      if (!t.sender.track) continue;
      if (t === this.screen?.transceiver) sources[t.mid] = 'screen';
      else sources[t.mid] = t.sender.track.kind === 'audio' ? 'audio' : 'camera';
    }
    this.send({ type: 'sources', sources });
  }

  /** Reports how large each received video is shown, so the server picks the layer. */
  sendViews() {
    if (this.dc?.readyState !== 'open') return;
    const tracks = {};
    for (const [mid, info] of this.trackInfo) {
      if (info.kind !== 'video') continue;
      const size = this.viewSize(info.peer);
      if (size) tracks[mid] = size;
    }
    if (Object.keys(tracks).length) this.send({ type: 'view', tracks });
  }

  async setTrack(kind, track) {
    const sender = this.senders[kind];
    if (sender) await sender.replaceTrack(track);
    this.sendSources();
  }

  /**
   * Shares `track` (from getDisplayMedia) as a screen, or stops sharing with null. The first
   * share adds a transceiver and renegotiates over the data channel; later ones reuse it.
   */
  async setScreen(track) {
    const pc = this.pc;
    if (!pc) return;
    if (!this.screen) {
      if (!track) return;
      const transceiver = pc.addTransceiver(track, { direction: 'sendonly', streams: [new MediaStream([track])] });
      this.screen = { transceiver };
      await this.enqueue(async () => {
        if (pc.signalingState !== 'stable') return;
        await pc.setLocalDescription(await pc.createOffer());
        this.send({ type: 'offer', sdp: pc.localDescription.sdp });
      });
    } else {
      await this.screen.transceiver.sender.replaceTrack(track);
    }
    this.sendSources();
  }

  send(msg) {
    if (this.dc?.readyState !== 'open') return false;
    this.dc.send(JSON.stringify(msg));
    return true;
  }

  sendChat(text) {
    return this.send({ type: 'chat', text }) ? Math.max(1, this.peers.size) : 0;
  }

  sendMediaState() {
    this.send({ type: 'state', audio: this.media.isSending('audio'), video: this.media.isSending('video') });
  }

  enqueue(fn) {
    this.queue = this.queue.then(fn).catch((err) => console.warn('sfu:', err));
    return this.queue;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** Someone else in an SFU room, as the UI sees them. */
class RemoteParticipant {
  constructor(call, id, name) {
    this.call = call;
    this.id = id;
    this.name = name;
    this.stream = new MediaStream();
    this.remote = { audio: true, video: true };
    this.mids = new Set();
    this.streamOnly = false;
    this.firstFrameAt = null;
    this.createdAt = performance.now();
  }

  get connectionState() {
    return this.call.pc?.connectionState ?? 'new';
  }

  get pc() {
    return this.call.pc;
  }
}
