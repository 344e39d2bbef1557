// Transfer codes and the PAKE that authenticates both peers' DTLS fingerprints: the browser
// side of crates/pairing (whose crate documentation describes the protocol). It must agree
// with the Rust side byte for byte; crates/pairing/tests/data/vectors.json and
// tests/e2e/pairing.test.mjs check that.
//
// SPAKE2 is the spake2 0.4 crate's symmetric mode over Ed25519, recomputed here with BigInt
// (WebCrypto has no raw curve arithmetic); SHA-256, HKDF, HMAC and randomness come from
// WebCrypto, so this works in browsers and in Node 20 alike. BigInt arithmetic is not
// constant time; the secrets live for one pairing and the PAKE transcript is what a remote
// attacker sees, so timing leaks stay on this machine.

import { WORDS } from './words.js';

/** SPAKE2 identity and prefix of every confirmation MAC. */
export const IDENTITY = 'switchboard-transfer-v1';

/** The two roles. Only the confirmation MAC depends on them. */
export const ROLES = Object.freeze(['sender', 'receiver']);

// WebCrypto's subtle API exists only in secure contexts (HTTPS, or http://localhost).
function subtle() {
  const api = globalThis.crypto?.subtle;
  if (!api) {
    throw new Error('transfer codes need WebCrypto, which browsers offer only on HTTPS pages');
  }
  return api;
}
const encoder = new TextEncoder();

// ---------------------------------------------------------------------------------------
// Codes

/** Why a string is not a transfer code; `kind` is empty | shape | number | unknown_word. */
export class CodeError extends Error {
  constructor(kind, message, { word = null, suggestion = null } = {}) {
    super(message);
    this.name = 'CodeError';
    this.kind = kind;
    this.word = word;
    this.suggestion = suggestion;
  }
}

/** A fresh code `N-word-word` from WebCrypto randomness (N uniform in 1..999). */
export function generateCode() {
  const bytes = new Uint8Array(4);
  for (;;) {
    globalThis.crypto.getRandomValues(bytes);
    const number = (bytes[0] | (bytes[1] << 8)) & 0x3ff;
    if (number >= 1 && number <= 999) return `${number}-${WORDS[bytes[2]]}-${WORDS[bytes[3]]}`;
  }
}

/**
 * Parses a code as a person typed it (surrounding whitespace ignored, any case, runs of
 * spaces or dashes as separators) and returns its normal form `N-word-word`.
 * Throws CodeError.
 */
export function parseCode(input) {
  const lowered = String(input).trim().toLowerCase();
  const parts = lowered.split(/[\s-]+/).filter((part) => part !== '');
  if (parts.length === 0) {
    throw new CodeError('empty', 'no code given: a code looks like 7-tiger-orbit');
  }
  if (parts.length !== 3) {
    throw new CodeError('shape', 'a code is a number and two words, like 7-tiger-orbit');
  }
  const [number, first, second] = parts;
  if (!/^[1-9][0-9]{0,2}$/.test(number)) {
    throw new CodeError(
      'number',
      'the code must start with a number from 1 to 999, like 7-tiger-orbit',
    );
  }
  checkWord(first);
  checkWord(second);
  return `${number}-${first}-${second}`;
}

/** The signaling room for a code: `xfer-N`. Throws CodeError for an invalid code. */
export function roomFor(code) {
  return `xfer-${parseCode(code).split('-')[0]}`;
}

function checkWord(word) {
  if (WORDS.includes(word)) return;
  const prefix = word.length >= 3 ? word.slice(0, 3) : null;
  const suggestion = prefix === null ? null : (WORDS.find((w) => w.startsWith(prefix)) ?? null);
  const message = suggestion
    ? `unknown word "${word}" in the code; did you mean "${suggestion}"?`
    : `unknown word "${word}" in the code`;
  throw new CodeError('unknown_word', message, { word, suggestion });
}

// ---------------------------------------------------------------------------------------
// Fingerprints

// Accepted hash functions and digest lengths; SHA-1 and MD5 are refused on purpose.
const FINGERPRINT_LENGTHS = new Map([
  ['sha-256', 32],
  ['sha-384', 48],
  ['sha-512', 64],
]);

/**
 * `SHA-256 ab:cd:…` → `sha-256 AB:CD:…`, or null for anything that is not a SHA-256/384/512
 * fingerprint with a digest of the right length.
 */
export function normalizeFingerprint(fingerprint) {
  if (typeof fingerprint !== 'string') return null;
  const parts = fingerprint.trim().split(/\s+/);
  if (parts.length !== 2) return null;
  const algorithm = parts[0].replace(/[A-Z]/g, (c) => c.toLowerCase());
  const length = FINGERPRINT_LENGTHS.get(algorithm);
  if (length === undefined) return null;
  const bytes = parts[1].split(':');
  if (bytes.length !== length || !bytes.every((b) => /^[0-9A-Fa-f]{2}$/.test(b))) return null;
  return `${algorithm} ${bytes.join(':').toUpperCase()}`;
}

/**
 * The normalised fingerprint of an SDP's `a=fingerprint:` lines (session or media level),
 * or null when there is none, one is malformed, or they disagree.
 */
export function sdpFingerprint(sdp) {
  let found = null;
  for (const line of String(sdp).split('\n')) {
    const trimmed = line.trimEnd();
    if (!trimmed.startsWith('a=fingerprint:')) continue;
    const fingerprint = normalizeFingerprint(trimmed.slice('a=fingerprint:'.length));
    if (fingerprint === null) return null;
    if (found !== null && found !== fingerprint) return null;
    found = fingerprint;
  }
  return found;
}

// ---------------------------------------------------------------------------------------
// Pairing

/**
 * Why a pairing failed. `kind` is one of
 * - `wrong_code`: the codes differ (`byPeer` when the peer found it and told us),
 * - `malformed`: the peer sent something that is not a pairing message,
 * - `unexpected`: a valid message at the wrong time,
 * - `peer_aborted`: the peer gave up for another reason,
 * - `invalid_fingerprint`: our caller's local fingerprint is not one,
 * - `finished`: handle() after the pairing had failed.
 * `reply` is the message to send the peer before giving up, or null.
 */
export class PairingError extends Error {
  constructor(kind, message, { byPeer = false } = {}) {
    super(message);
    this.name = 'PairingError';
    this.kind = kind;
    this.byPeer = byPeer;
    if (kind === 'wrong_code' && !byPeer) {
      this.reply = { abort: 'wrong_code' };
    } else if (kind === 'malformed' || kind === 'unexpected') {
      this.reply = { abort: 'protocol_error' };
    } else {
      this.reply = null;
    }
  }

  get isWrongCode() {
    return this.kind === 'wrong_code';
  }
}

const malformed = (what) => new PairingError('malformed', `malformed pairing message: ${what}`);
const unexpected = (what) => new PairingError('unexpected', `unexpected pairing message: ${what}`);

let keyOf; // test hook, set in Pairing's static block

/**
 * One side of a pairing. Feed handle() every pairing message the peer relays, in order, and
 * relay what it returns:
 *
 *   const { pairing, message } = await Pairing.start(code, 'sender', fingerprint);
 *   send(message);
 *   on each peer message: const step = await pairing.handle(msg)
 *     step.type === 'send'     → send each of step.messages
 *     step.type === 'verified' → step.remoteFingerprint must equal sdpFingerprint(remote SDP)
 *   on a PairingError e: if (e.reply) send(e.reply); stop ("wrong code" when e.isWrongCode)
 *
 * handle() calls are queued, so it is safe to call it from an event handler without waiting.
 */
export class Pairing {
  #role;
  #fingerprint;
  #state; // await-pake | await-confirm | verified | failed
  #spake;
  #key = null;
  #queue = Promise.resolve();

  static {
    keyOf = (pairing) => pairing.#key;
  }

  constructor(secret, role, fingerprint, spake) {
    if (secret !== constructing) throw new TypeError('use Pairing.start()');
    this.#role = role;
    this.#fingerprint = fingerprint;
    this.#spake = spake;
    this.#state = 'await-pake';
  }

  /**
   * Starts SPAKE2 with the normalised code as password. Resolves to
   * `{ pairing, message }`, message being the first one to send, `{pake}`.
   * Rejects with CodeError, PairingError (invalid_fingerprint) or TypeError (role).
   */
  static async start(code, role, localFingerprint) {
    const random = new Uint8Array(64);
    globalThis.crypto.getRandomValues(random);
    return startWithRandom(code, role, localFingerprint, random);
  }

  get role() {
    return this.#role;
  }

  get verified() {
    return this.#state === 'verified';
  }

  /**
   * Handles one message from the peer. Resolves to `{type: 'send', messages}` or
   * `{type: 'verified', remoteFingerprint}`; rejects with PairingError, after which the
   * pairing is finished.
   */
  handle(message) {
    const result = this.#queue.then(() => this.#handle(message));
    this.#queue = result.catch(() => {});
    return result;
  }

  async #handle(message) {
    const state = this.#state;
    this.#state = 'failed';
    if (state === 'failed') throw new PairingError('finished', 'the pairing already failed');
    const parsed = parseMessage(message);
    if (parsed.kind === 'abort') throw abortError(parsed.reason);
    if (state === 'await-pake') {
      if (parsed.kind === 'confirm') throw unexpected('confirmation before the SPAKE2 message');
      if (equalBytes(parsed.bytes, this.#spake.message)) {
        throw unexpected('our own SPAKE2 message came back');
      }
      const key = await spake2Finish(this.#spake, parsed.bytes);
      this.#spake = null;
      const mac = await confirmMac(key, this.#role, this.#fingerprint);
      this.#key = key;
      this.#state = 'await-confirm';
      return {
        type: 'send',
        messages: [{ confirm: base64Encode(mac), fingerprint: this.#fingerprint }],
      };
    }
    if (state === 'await-confirm') {
      if (parsed.kind === 'pake') throw unexpected('second SPAKE2 message');
      const peerRole = this.#role === 'sender' ? 'receiver' : 'sender';
      const expected = await confirmMac(this.#key, peerRole, parsed.fingerprint);
      if (!constantTimeEqual(expected, parsed.mac)) {
        throw new PairingError('wrong_code', 'wrong code');
      }
      this.#state = 'verified';
      return { type: 'verified', remoteFingerprint: parsed.fingerprint };
    }
    throw unexpected('message after verification');
  }
}

const constructing = Symbol('constructing');

async function startWithRandom(code, role, localFingerprint, random) {
  const password = parseCode(code);
  if (!ROLES.includes(role)) throw new TypeError(`role must be "sender" or "receiver"`);
  const fingerprint = normalizeFingerprint(localFingerprint);
  if (fingerprint === null) {
    throw new PairingError('invalid_fingerprint', 'invalid local DTLS fingerprint');
  }
  const spake = await spake2Start(encoder.encode(password), encoder.encode(IDENTITY), random);
  const pairing = new Pairing(constructing, role, fingerprint, spake);
  return { pairing, message: { pake: base64Encode(spake.message) } };
}

function abortError(reason) {
  if (reason === 'wrong_code') {
    return new PairingError('wrong_code', 'wrong code', { byPeer: true });
  }
  const shown = Array.from(reason)
    .filter((c) => c >= ' ' && c <= '~')
    .slice(0, 64)
    .join('');
  return new PairingError('peer_aborted', `the peer aborted the pairing: ${shown}`);
}

function parseMessage(value) {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw malformed('not a JSON object');
  }
  const field = (name) => {
    if (!Object.prototype.hasOwnProperty.call(value, name)) return null;
    if (typeof value[name] !== 'string') throw malformed('a field is not a string');
    return value[name];
  };
  const pake = field('pake');
  const confirm = field('confirm');
  const fingerprint = field('fingerprint');
  const abort = field('abort');
  const count = Object.keys(value).length;
  if (pake !== null && confirm === null && fingerprint === null && abort === null && count === 1) {
    const bytes = base64Decode(pake);
    if (bytes === null) throw malformed('pake is not base64');
    return { kind: 'pake', bytes };
  }
  if (pake === null && confirm !== null && fingerprint !== null && abort === null && count === 2) {
    const mac = base64Decode(confirm);
    if (mac === null) throw malformed('confirm is not base64');
    if (mac.length !== 32) throw malformed('confirm is not 32 bytes');
    if (normalizeFingerprint(fingerprint) !== fingerprint) {
      throw malformed('fingerprint not in normal form');
    }
    return { kind: 'confirm', mac, fingerprint };
  }
  if (pake === null && confirm === null && fingerprint === null && abort !== null && count === 1) {
    return { kind: 'abort', reason: abort };
  }
  throw malformed('not a pake, confirm or abort message');
}

async function confirmMac(key, role, fingerprint) {
  const hmacKey = await subtle().importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, [
    'sign',
  ]);
  const data = encoder.encode(`${IDENTITY}|${role}|${fingerprint}`);
  return new Uint8Array(await subtle().sign('HMAC', hmacKey, data));
}

function constantTimeEqual(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

function equalBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// Standard base64 with padding, canonical only (as the Rust base64 crate's STANDARD engine).
function base64Encode(bytes) {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

function base64Decode(text) {
  if (text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return null;
  let binary;
  try {
    binary = atob(text);
  } catch {
    return null;
  }
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return base64Encode(bytes) === text ? bytes : null;
}

// ---------------------------------------------------------------------------------------
// SPAKE2, symmetric mode, Ed25519 group, as the spake2 0.4 crate computes it.

const P = 2n ** 255n - 19n; // field prime
const L = 2n ** 252n + 27742317777372353535851937790883648493n; // group order
const mod = (a, m = P) => {
  const r = a % m;
  return r < 0n ? r + m : r;
};
function pow(base, exponent) {
  let result = 1n;
  let b = mod(base);
  let e = exponent;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % P;
    b = (b * b) % P;
    e >>= 1n;
  }
  return result;
}
const invert = (a) => pow(a, P - 2n);
const D = mod(-121665n * invert(121666n)); // curve constant d
const D2 = (2n * D) % P;
const SQRT_M1 = pow(2n, (P - 1n) / 4n);

function bytesToNumberLE(bytes) {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]);
  return n;
}

function bytesToNumberBE(bytes) {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

function hexToBytes(hex) {
  return Uint8Array.from(hex.match(/../g), (h) => parseInt(h, 16));
}

// Points in extended coordinates (X:Y:Z:T), x = X/Z, y = Y/Z, xy = T/Z.
const IDENTITY_POINT = Object.freeze({ X: 0n, Y: 1n, Z: 1n, T: 0n });

function add(p, q) {
  // add-2008-hwcd-3: complete for a = -1 and a non-square d, so it also doubles.
  const a = ((p.Y - p.X) * (q.Y - q.X)) % P;
  const b = ((p.Y + p.X) * (q.Y + q.X)) % P;
  const c = (((p.T * D2) % P) * q.T) % P;
  const d = (2n * p.Z * q.Z) % P;
  const e = b - a;
  const f = d - c;
  const g = d + c;
  const h = b + a;
  return { X: mod(e * f), Y: mod(g * h), Z: mod(f * g), T: mod(e * h) };
}

function multiply(point, scalar) {
  let result = IDENTITY_POINT;
  for (let i = BigInt(scalar.toString(2).length) - 1n; i >= 0n; i--) {
    result = add(result, result);
    if ((scalar >> i) & 1n) result = add(result, point);
  }
  return result;
}

function compress(point) {
  const zInv = invert(point.Z);
  const x = (point.X * zInv) % P;
  const y = (point.Y * zInv) % P;
  const bytes = new Uint8Array(32);
  let n = y;
  for (let i = 0; i < 32; i++) {
    bytes[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  bytes[31] |= Number(x & 1n) << 7;
  return bytes;
}

// As curve25519-dalek 4 decompresses: y is the low 255 bits taken mod p (non-canonical
// encodings are accepted), x the root from sqrt_ratio_i made even, then negated when the
// sign bit is set (even when x = 0). Returns null when y is not on the curve.
function decompress(bytes) {
  if (bytes.length !== 32) return null;
  const sign = bytes[31] >> 7;
  const masked = Uint8Array.from(bytes);
  masked[31] &= 0x7f;
  const y = bytesToNumberLE(masked) % P;
  const yy = (y * y) % P;
  const u = mod(yy - 1n);
  const v = (D * yy + 1n) % P;
  const v3 = (((v * v) % P) * v) % P;
  const v7 = (((v3 * v3) % P) * v) % P;
  let r = (((u * v3) % P) * pow((u * v7) % P, (P - 5n) / 8n)) % P;
  const check = (v * ((r * r) % P)) % P;
  const correctSign = check === u;
  const flippedSign = check === mod(-u);
  const flippedSignI = check === mod(-u * SQRT_M1);
  if (flippedSign || flippedSignI) r = (r * SQRT_M1) % P;
  if (r & 1n) r = mod(-r);
  if (!(correctSign || flippedSign)) return null;
  const x = sign ? mod(-r) : r;
  return { X: x, Y: y, Z: 1n, T: (x * y) % P };
}

const BASE = decompress(
  hexToBytes('5866666666666666666666666666666666666666666666666666666666666666'),
);
// The symmetric-mode blinding element S of the spake2 crate (and python-spake2).
const S = decompress(
  hexToBytes('6f00dae87c1be1a73b5922ef431cd8f57879569c222d22b1cd71e8546ab8e6f1'),
);
const SIDE_SYMMETRIC = 0x53; // 'S'

// HKDF-SHA256(salt = empty, ikm = password, info = "SPAKE2 pw", 48 bytes), big-endian, mod L.
async function hashToScalar(password) {
  const ikm = await subtle().importKey('raw', password, 'HKDF', false, ['deriveBits']);
  const okm = await subtle().deriveBits(
    { name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info: encoder.encode('SPAKE2 pw') },
    ikm,
    48 * 8,
  );
  return bytesToNumberBE(new Uint8Array(okm)) % L;
}

async function sha256(bytes) {
  return new Uint8Array(await subtle().digest('SHA-256', bytes));
}

// random: the 64 bytes curve25519-dalek's Scalar::random would draw, little-endian mod L.
async function spake2Start(password, identity, random) {
  if (random.length !== 64) throw new TypeError('64 random bytes');
  const x = bytesToNumberLE(random) % L;
  const w = await hashToScalar(password);
  const element = compress(add(multiply(BASE, x), multiply(S, w)));
  const message = new Uint8Array(33);
  message[0] = SIDE_SYMMETRIC;
  message.set(element, 1);
  return { password, identity, x, w, element, message };
}

async function spake2Finish(spake, peerMessage) {
  if (peerMessage.length !== 33) throw malformed('SPAKE2 message of the wrong length');
  if (peerMessage[0] !== SIDE_SYMMETRIC) throw malformed('SPAKE2 message not for symmetric mode');
  const peerElement = peerMessage.subarray(1);
  const Y = decompress(peerElement);
  if (Y === null) throw malformed('SPAKE2 message is not a curve point');
  const K = compress(multiply(add(Y, multiply(S, (L - spake.w) % L)), spake.x));
  const [first, second] =
    compareBytes(spake.element, peerElement) < 0
      ? [spake.element, peerElement]
      : [peerElement, spake.element];
  const transcript = new Uint8Array(160);
  transcript.set(await sha256(spake.password), 0);
  transcript.set(await sha256(spake.identity), 32);
  transcript.set(first, 64);
  transcript.set(second, 96);
  transcript.set(K, 128);
  return sha256(transcript);
}

function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}

/** Internals for tests only: deterministic starts and the derived key. */
export const _testing = Object.freeze({
  startWithRandom,
  key: (pairing) => keyOf(pairing),
  hashToScalar: (password) => hashToScalar(encoder.encode(password)),
  decompress,
  compress,
});
