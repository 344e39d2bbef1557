// What the send and receive pages share: meeting the other side of a transfer (the code's
// PAKE over signaling, then a peer connection whose DTLS certificate the PAKE authenticated,
// then the data channel), and small formatting helpers. The flow matches the native side in
// crates/switchboard/src/share/session.rs so that browsers and `switchboard send/recv` pair
// with each other in any combination.

import { Pairing, PairingError, normalizeFingerprint, sdpFingerprint } from './pairing.js';

/** The label of the data channel that carries the transfer protocol. */
export const CHANNEL_LABEL = 'switchboard-transfer';
/** How long pairing plus connecting may take once both sides are in the room. */
export const CONNECT_TIMEOUT_MS = 30_000;

/** Why a meeting did not happen. `kind`: wrong_code | tampered | failed. */
export class MeetError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = 'MeetError';
    this.kind = kind;
  }
}

/**
 * A DTLS certificate made here, so that its fingerprint is known before any SDP exists and
 * can go into the pairing: `{certificate, fingerprint}` (fingerprint normalised).
 */
export async function makeCertificate() {
  const certificate = await RTCPeerConnection.generateCertificate({ name: 'ECDSA', namedCurve: 'P-256' });
  const fingerprints = certificate.getFingerprints().map((f) => normalizeFingerprint(`${f.algorithm} ${f.value}`));
  const fingerprint = fingerprints.find((f) => f?.startsWith('sha-256 ')) ?? fingerprints.find(Boolean);
  if (!fingerprint) throw new Error('the browser made a certificate without a usable fingerprint');
  return { certificate, fingerprint };
}

/**
 * One attempt to connect with `peer`: pairing over the code, then the peer connection. The
 * page routes that peer's signals to onSignal(); run() resolves to {pc, dc} once the data
 * channel is open, or rejects with MeetError.
 *
 * The sender starts the PAKE at once; the receiver answers the sender's first PAKE message.
 * (A native sender busy with an earlier, dying connection drops signals; it sends its PAKE
 * message when it turns to this receiver, so nothing is lost by waiting for it.)
 */
export class Meeting {
  #signaling;
  #code;
  #role;
  #peer;
  #cert;
  #iceServers;
  #relayOnly;
  #log;
  #queue = Promise.resolve();
  #pairing = null;
  #firstMessage = null;
  #remoteFingerprint = null;
  #remoteSet = false;
  #pendingCandidates = [];
  #settle = null;
  #timer = null;
  #done = false;

  constructor({ signaling, code, role, peer, cert, iceServers = [], relayOnly = false, log = () => {} }) {
    this.#signaling = signaling;
    this.#code = code;
    this.#role = role;
    this.#peer = peer;
    this.#cert = cert;
    this.#iceServers = iceServers;
    this.#relayOnly = relayOnly;
    this.#log = log;
    this.pc = null;
    this.dc = null;
    this.state = 'pairing'; // pairing | connecting | open | failed
  }

  get peer() {
    return this.#peer;
  }

  run() {
    const result = new Promise((resolve, reject) => {
      this.#settle = { resolve, reject };
    });
    this.#timer = setTimeout(
      () => this.fail(new MeetError('failed', `could not connect to the other side within ${CONNECT_TIMEOUT_MS / 1000} s`)),
      CONNECT_TIMEOUT_MS,
    );
    this.#enqueue(() => this.#start());
    return result;
  }

  /** A signal from this meeting's peer ({app} | {description} | {candidate}). */
  onSignal(msg) {
    this.#enqueue(() => this.#onSignal(msg));
  }

  /**
   * Once connected, a signal from the peer: an ICE restart's offer (answered here, so the
   * same connection and transfer carry on over a new path) or a trickled candidate.
   */
  renegotiate(msg) {
    this.#queue = this.#queue
      .then(() => this.#renegotiate(msg))
      .catch((error) => this.#log(`renegotiation failed: ${error}`));
  }

  async #renegotiate(msg) {
    const pc = this.pc;
    if (!pc || pc.signalingState === 'closed') return;
    if (msg.description) {
      if (sdpFingerprint(msg.description.sdp ?? '') !== this.#remoteFingerprint) {
        this.#log('ignoring a description with a certificate the code did not authenticate');
        return;
      }
      if (msg.description.type === 'offer') {
        await pc.setRemoteDescription(msg.description);
        await pc.setLocalDescription(await pc.createAnswer());
        this.#send({ description: { type: 'answer', sdp: pc.localDescription.sdp } });
        this.#log('answered an ICE restart');
      } else if (msg.description.type === 'answer' && pc.signalingState === 'have-local-offer') {
        await pc.setRemoteDescription(msg.description);
      }
    } else if (msg.candidate !== undefined) {
      const init = candidateFromWire(msg.candidate);
      if (init) await pc.addIceCandidate(init).catch((e) => this.#log(`candidate refused: ${e}`));
    }
  }

  /**
   * Once connected, offers an ICE restart (the sender does when the path is lost); the
   * answer comes back through renegotiate(). A restart still unanswered is rolled back first.
   */
  restartIce() {
    const restart = async () => {
      const pc = this.pc;
      if (!pc || pc.signalingState === 'closed') return;
      if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' });
      await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
      this.#send({ description: { type: 'offer', sdp: pc.localDescription.sdp } });
      this.#log('offered an ICE restart');
    };
    this.#queue = this.#queue.then(restart).catch((error) => this.#log(`ICE restart failed: ${error}`));
  }

  /** Gives up (the peer left, the page is closing); closes the peer connection. */
  fail(error) {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#timer);
    this.state = 'failed';
    this.close();
    this.#settle?.reject(error);
  }

  close() {
    clearTimeout(this.#timer);
    if (this.pc) {
      this.pc.onicecandidate = this.pc.onconnectionstatechange = this.pc.ondatachannel = null;
      try {
        this.pc.close();
      } catch { /* already closed */ }
    }
  }

  #enqueue(task) {
    this.#queue = this.#queue.then(async () => {
      if (this.#done) return;
      try {
        await task();
      } catch (error) {
        this.fail(toMeetError(error));
        if (error instanceof PairingError && error.reply) this.#send({ app: error.reply });
      }
    });
  }

  #send(payload) {
    this.#signaling.signal(this.#peer, payload);
  }

  async #start() {
    const { pairing, message } = await Pairing.start(this.#code, this.#role, this.#cert.fingerprint);
    this.#pairing = pairing;
    if (this.#role === 'sender') this.#send({ app: message });
    else this.#firstMessage = message;
    this.#log('pairing started');
  }

  async #onSignal(msg) {
    if (msg.app !== undefined) {
      if (this.#remoteFingerprint !== null) {
        if (msg.app && typeof msg.app.abort === 'string') {
          throw new MeetError('failed', `the other side gave up: ${printable(msg.app.abort)}`);
        }
        return;
      }
      if (this.#firstMessage) {
        // The receiver's PAKE message goes out once the sender's arrived.
        this.#send({ app: this.#firstMessage });
        this.#firstMessage = null;
      }
      const step = await this.#pairing.handle(msg.app);
      if (step.type === 'send') {
        for (const m of step.messages) this.#send({ app: m });
      } else if (step.type === 'verified') {
        this.#remoteFingerprint = step.remoteFingerprint;
        this.#log('pairing verified');
        await this.#connect();
      }
    } else if (msg.description) {
      if (this.#remoteFingerprint === null) return; // not before the pairing: ignore it
      await this.#onDescription(msg.description);
    } else if (msg.candidate !== undefined) {
      const init = candidateFromWire(msg.candidate);
      if (!init) return;
      if (!this.#remoteSet) this.#pendingCandidates.push(init);
      else await this.pc.addIceCandidate(init).catch((e) => this.#log(`candidate refused: ${e}`));
    }
  }

  async #connect() {
    this.state = 'connecting';
    const pc = new RTCPeerConnection({
      iceServers: this.#iceServers,
      iceTransportPolicy: this.#relayOnly ? 'relay' : 'all',
      certificates: [this.#cert.certificate],
    });
    this.pc = pc;
    pc.onicecandidate = ({ candidate }) => this.#send({ candidate: candidateToWire(candidate) });
    pc.onconnectionstatechange = () => {
      this.#log(`connection ${pc.connectionState}`);
      if (pc.connectionState === 'failed') {
        this.fail(new MeetError('failed', 'the peer connection failed (no network path between the two sides)'));
      }
    };
    if (this.#role === 'sender') {
      this.#watch(pc.createDataChannel(CHANNEL_LABEL, { ordered: true }));
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      this.#checkOwn(pc.localDescription.sdp);
      this.#send({ description: { type: 'offer', sdp: pc.localDescription.sdp } });
    } else {
      pc.ondatachannel = ({ channel }) => {
        if (channel.label === CHANNEL_LABEL) this.#watch(channel);
      };
    }
  }

  async #onDescription(description) {
    const offered = sdpFingerprint(description.sdp ?? '');
    if (offered !== this.#remoteFingerprint) {
      throw new MeetError(
        'tampered',
        "the other side's certificate does not match the one the code authenticated; someone between you (the signaling server?) tampered with the connection",
      );
    }
    const pc = this.pc;
    if (this.#role === 'sender' && description.type === 'answer' && !this.#remoteSet) {
      await pc.setRemoteDescription(description);
    } else if (this.#role === 'receiver' && description.type === 'offer' && !this.#remoteSet) {
      await pc.setRemoteDescription(description);
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      this.#checkOwn(pc.localDescription.sdp);
      this.#send({ description: { type: 'answer', sdp: pc.localDescription.sdp } });
    } else {
      this.#log(`ignoring a ${description.type} description`);
      return;
    }
    this.#remoteSet = true;
    for (const init of this.#pendingCandidates.splice(0)) {
      await pc.addIceCandidate(init).catch((e) => this.#log(`candidate refused: ${e}`));
    }
  }

  // The browser must use the certificate whose fingerprint went into the pairing.
  #checkOwn(sdp) {
    if (sdpFingerprint(sdp) !== this.#cert.fingerprint) {
      throw new MeetError('failed', 'the browser did not use the certificate the pairing authenticated');
    }
  }

  #watch(dc) {
    dc.binaryType = 'arraybuffer';
    this.dc = dc;
    const opened = () => {
      if (this.#done) return;
      this.#done = true;
      clearTimeout(this.#timer);
      this.state = 'open';
      this.pc.onconnectionstatechange = null;
      this.#settle.resolve({ pc: this.pc, dc });
    };
    if (dc.readyState === 'open') opened();
    else dc.addEventListener('open', opened, { once: true });
  }
}

function toMeetError(error) {
  if (error instanceof MeetError) return error;
  if (error instanceof PairingError) {
    if (error.isWrongCode) {
      return new MeetError('wrong_code', 'wrong code: the two sides typed different codes (or someone guessed). Nothing was sent.');
    }
    return new MeetError('failed', `pairing failed: ${error.message}`);
  }
  return new MeetError('failed', String(error?.message ?? error));
}

function printable(text) {
  return Array.from(String(text)).filter((c) => c >= ' ' && c <= '~').slice(0, 64).join('');
}

/** RTCIceCandidate → the signaling protocol's candidate; null = end of candidates. */
function candidateToWire(c) {
  if (!c) return null;
  return {
    candidate: c.candidate ?? '',
    sdp_mid: c.sdpMid ?? null,
    sdp_m_line_index: c.sdpMLineIndex ?? null,
    username_fragment: c.usernameFragment ?? null,
  };
}

function candidateFromWire(c) {
  if (!c || typeof c.candidate !== 'string' || !c.candidate) return null;
  return {
    candidate: c.candidate,
    sdpMid: c.sdp_mid ?? null,
    sdpMLineIndex: c.sdp_m_line_index ?? null,
    usernameFragment: c.username_fragment ?? null,
  };
}

/** The selected candidate pair's types, e.g. {local: 'host', remote: 'prflx'}, or null. */
export async function selectedPair(pc) {
  if (!pc || pc.connectionState === 'closed') return null;
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
  });
  if (!pair) {
    stats.forEach((r) => {
      if (r.type === 'candidate-pair' && r.state === 'succeeded' && r.nominated) pair = r;
    });
  }
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId);
  const remote = stats.get(pair.remoteCandidateId);
  return {
    local: local?.candidateType ?? null,
    remote: remote?.candidateType ?? null,
    protocol: local?.protocol ?? null,
  };
}

/** The data channel's counters, for diagnosis: state, buffered bytes, messages each way. */
export async function channelStats(pc, dc) {
  if (!pc || !dc) return null;
  const out = { readyState: dc.readyState, bufferedAmount: dc.bufferedAmount, connection: pc.connectionState };
  if (pc.connectionState === 'closed') return out;
  (await pc.getStats()).forEach((r) => {
    if (r.type === 'data-channel' && r.label === dc.label) {
      Object.assign(out, {
        messagesSent: r.messagesSent, bytesSent: r.bytesSent,
        messagesReceived: r.messagesReceived, bytesReceived: r.bytesReceived,
      });
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------
// Formatting

/** `1.5 MB`-style sizes (powers of 1000, as the command line prints them). */
export function formatBytes(bytes) {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit + 1 < units.length) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return '–';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

/** Transfer rate over the last few seconds, and the time left at that rate. */
export class RateMeter {
  #samples = [];

  constructor(windowMs = 3000) {
    this.windowMs = windowMs;
  }

  /** Records `bytes` done so far; returns {rate (bytes/s), eta (s)} for `total`. */
  update(bytes, total, now = performance.now()) {
    this.#samples.push([now, bytes]);
    while (this.#samples.length > 2 && now - this.#samples[1][0] > this.windowMs) this.#samples.shift();
    const [t0, b0] = this.#samples[0];
    const rate = now > t0 ? ((bytes - b0) * 1000) / (now - t0) : 0;
    return { rate, eta: rate > 0 ? (total - bytes) / rate : Infinity };
  }

  reset() {
    this.#samples = [];
  }
}

/** Sets the text of the element `#id` (and shows it); empty text hides it. */
export function say(id, text) {
  const el = document.getElementById(id);
  if (!el) return;
  el.textContent = text;
  el.hidden = !text;
}
