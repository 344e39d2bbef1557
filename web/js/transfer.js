// The file-transfer protocol of docs/transfer.md (version 1) for the browser: the message
// codec, the file-name rules, and the two sides' state machines. No I/O here: the pages in
// share-send.js and share-recv.js read files, write storage and own the data channel; these
// classes only say what is allowed next. crates/transfer is the reference implementation and
// the CANCEL reasons follow its wording.

export const OFFER = 0x01;
export const ACCEPT = 0x02;
export const CHUNK = 0x03;
export const ACK = 0x04;
export const VERIFIED = 0x05;
export const CANCEL = 0x06;

export const VERSION = 1;
/** Data bytes per CHUNK a sender sends; the last chunk of a file is shorter. */
export const CHUNK_SIZE = 16 * 1024;
/** The most data bytes a receiver accepts in one CHUNK. */
export const MAX_CHUNK_DATA = 64 * 1024;
/** OFFER, ACCEPT and CANCEL, type byte included. */
export const MAX_CONTROL_LEN = 256 * 1024;
export const MAX_FILES = 10_000;
/** 2^53 − 1: every size and offset fits a JavaScript number exactly. */
export const MAX_SIZE = Number.MAX_SAFE_INTEGER;
/** A receiver acknowledges at least every this many bytes written, and at each file's end. */
export const ACK_INTERVAL = 1024 * 1024;
/** The longest CANCEL reason sent, in UTF-8 bytes. */
export const MAX_REASON_LEN = 1024;
export const CHUNK_HEADER_LEN = 13;
export const PART_SUFFIX = '.part';

const MAX_PATH_LEN = 4096;
const MAX_COMPONENT_LEN = 255;
const MAX_NAME_LEN = MAX_COMPONENT_LEN - PART_SUFFIX.length;
const MESSAGE_NAMES = ['', 'OFFER', 'ACCEPT', 'CHUNK', 'ACK', 'VERIFIED', 'CANCEL'];

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Why a transfer stopped. `kind`:
 * - `malformed`: the peer sent bytes that are not a valid message,
 * - `protocol`: a valid message at the wrong time or with wrong numbers,
 * - `refused`: the offer names a file this side will not write,
 * - `mismatch`: a received file's SHA-256 differs from the offer,
 * - `disk_full`, `fs`: this side's storage failed,
 * - `changed`: a file being sent changed,
 * - `local`: this side's own limit or misuse (a manifest too large, ...).
 * `reason` is what goes to the peer in CANCEL; `message` is for this side's user.
 */
export class TransferError extends Error {
  constructor(kind, message, reason = message) {
    super(message);
    this.name = 'TransferError';
    this.kind = kind;
    this.reason = reason;
  }
}

const malformed = (what) => new TransferError('malformed', `malformed message from the peer: ${what}`, `malformed message: ${what}`);
const violation = (what) => new TransferError('protocol', `the peer broke the transfer protocol: ${what}`, `protocol error: ${what}`);

// ---------------------------------------------------------------------------------------
// Codec

/**
 * Decodes one data-channel message (ArrayBuffer or Uint8Array) into
 * `{type: 'offer', files}`, `{type: 'accept', offsets}`, `{type: 'chunk', file, offset, data}`,
 * `{type: 'ack', file, offset}`, `{type: 'verified', file}` or `{type: 'cancel', reason}`.
 * CHUNK data is a view into the input. Throws TransferError (malformed); file names are not
 * checked here (see checkManifest).
 */
export function decode(message) {
  const bytes = asBytes(message);
  if (bytes.length === 0) throw malformed('empty message');
  const type = bytes[0];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const name = MESSAGE_NAMES[type];
  switch (type) {
    case OFFER: {
      checkControlLength(name, bytes.length);
      return { type: 'offer', files: parseOffer(bytes.subarray(1)) };
    }
    case ACCEPT: {
      checkControlLength(name, bytes.length);
      const body = parseBody(name, bytes.subarray(1));
      const offsets = field(name, body, 'offsets', 'array');
      if (offsets.length > MAX_FILES) {
        throw malformed(`ACCEPT message lists ${offsets.length} files; at most ${MAX_FILES} are allowed`);
      }
      return { type: 'accept', offsets: offsets.map((o) => integer(name, o, 'offsets')) };
    }
    case CHUNK: {
      if (bytes.length < CHUNK_HEADER_LEN) throw malformed('truncated CHUNK message');
      const data = bytes.subarray(CHUNK_HEADER_LEN);
      if (data.length === 0) throw malformed('CHUNK message carries no data');
      if (data.length > MAX_CHUNK_DATA) {
        throw malformed(`CHUNK carries ${data.length} data bytes; at most ${MAX_CHUNK_DATA} are allowed`);
      }
      return { type: 'chunk', file: view.getUint32(1), offset: u64(view, 5, name), data };
    }
    case ACK: {
      if (bytes.length < 13) throw malformed('truncated ACK message');
      if (bytes.length > 13) throw malformed('ACK message has extra bytes at the end');
      return { type: 'ack', file: view.getUint32(1), offset: u64(view, 5, name) };
    }
    case VERIFIED: {
      if (bytes.length < 5) throw malformed('truncated VERIFIED message');
      if (bytes.length > 5) throw malformed('VERIFIED message has extra bytes at the end');
      return { type: 'verified', file: view.getUint32(1) };
    }
    case CANCEL: {
      checkControlLength(name, bytes.length);
      const body = parseBody(name, bytes.subarray(1));
      return { type: 'cancel', reason: field(name, body, 'reason', 'string') };
    }
    default:
      throw malformed(`unknown message type 0x${type.toString(16).padStart(2, '0')}`);
  }
}

/** OFFER for `files` ([{path, size, sha256}]). Throws TransferError (local) over the limits. */
export function encodeOffer(files) {
  if (files.length === 0) throw new TransferError('local', 'nothing to send');
  if (files.length > MAX_FILES) {
    throw new TransferError('local', `${files.length} files to send; one transfer carries at most ${MAX_FILES}`);
  }
  const json = JSON.stringify({
    v: VERSION,
    files: files.map((f) => ({ path: f.path, size: f.size, sha256: f.sha256 })),
  });
  const out = withType(OFFER, encoder.encode(json));
  if (out.length > MAX_CONTROL_LEN) {
    throw new TransferError(
      'local',
      `the list of files takes ${out.length} bytes, more than the ${MAX_CONTROL_LEN} one offer may hold; send fewer files or shorten their names`,
    );
  }
  return out;
}

export function encodeAccept(offsets) {
  return withType(ACCEPT, encoder.encode(JSON.stringify({ offsets })));
}

/** CHUNK: the 13-byte header and `data` (1 to 64 KiB) in one new buffer. */
export function encodeChunk(file, offset, data) {
  const out = new Uint8Array(CHUNK_HEADER_LEN + data.length);
  const view = new DataView(out.buffer);
  out[0] = CHUNK;
  view.setUint32(1, file);
  view.setBigUint64(5, BigInt(offset));
  out.set(data, CHUNK_HEADER_LEN);
  return out;
}

export function encodeAck(file, offset) {
  const out = new Uint8Array(13);
  const view = new DataView(out.buffer);
  out[0] = ACK;
  view.setUint32(1, file);
  view.setBigUint64(5, BigInt(offset));
  return out;
}

export function encodeVerified(file) {
  const out = new Uint8Array(5);
  out[0] = VERIFIED;
  new DataView(out.buffer).setUint32(1, file);
  return out;
}

/** CANCEL; the reason is cut to 1,024 UTF-8 bytes on a character boundary. */
export function encodeCancel(reason) {
  return withType(CANCEL, encoder.encode(JSON.stringify({ reason: cutReason(String(reason)) })));
}

function cutReason(reason) {
  if (encoder.encode(reason).length <= MAX_REASON_LEN) return reason;
  let out = '';
  let used = 0;
  for (const c of reason) {
    const n = encoder.encode(c).length;
    if (used + n > MAX_REASON_LEN) break;
    out += c;
    used += n;
  }
  return out;
}

function withType(type, body) {
  const out = new Uint8Array(1 + body.length);
  out[0] = type;
  out.set(body, 1);
  return out;
}

function asBytes(message) {
  if (message instanceof Uint8Array) return message;
  if (message instanceof ArrayBuffer) return new Uint8Array(message);
  if (ArrayBuffer.isView(message)) return new Uint8Array(message.buffer, message.byteOffset, message.byteLength);
  throw malformed('a text message (every message is binary)');
}

function checkControlLength(name, length) {
  if (length > MAX_CONTROL_LEN) {
    throw malformed(`${name} message is ${length} bytes, more than the ${MAX_CONTROL_LEN}-byte limit`);
  }
}

function u64(view, at, name) {
  const value = view.getBigUint64(at);
  if (value > BigInt(MAX_SIZE)) throw malformed(`${name} message holds a size or offset above 2^53-1`);
  return Number(value);
}

function parseOffer(body) {
  const value = parseBody('OFFER', body);
  // The version first, so that another version's different shape is reported as such.
  const v = field('OFFER', value, 'v', 'number');
  if (!/^(0|[1-9][0-9]*)$/.test(v.text)) {
    throw malformed('OFFER message is not the expected JSON: `v` is not a non-negative integer');
  }
  if (v.text !== String(VERSION)) {
    throw malformed(`the offer uses transfer protocol version ${v.text}; this side speaks version ${VERSION}`);
  }
  const files = field('OFFER', value, 'files', 'array');
  if (files.length === 0) throw malformed('the offer lists no files');
  if (files.length > MAX_FILES) {
    throw malformed(`OFFER message lists ${files.length} files; at most ${MAX_FILES} are allowed`);
  }
  return files.map((entry, index) => {
    if (!isObject(entry)) throw malformed(`OFFER message is not the expected JSON: file ${index} is not an object`);
    const path = field('OFFER', entry, 'path', 'string');
    const size = integer('OFFER', field('OFFER', entry, 'size', 'number'), 'size');
    const sha256 = field('OFFER', entry, 'sha256', 'string');
    if (!/^[0-9a-f]{64}$/.test(sha256)) {
      throw malformed(`file ${index} in the offer: sha256 must be 64 lowercase hex digits`);
    }
    return { path, size, sha256 };
  });
}

function parseBody(name, body) {
  let text;
  try {
    text = strictDecoder.decode(body);
  } catch {
    throw malformed(`${name} message is not the expected JSON: invalid UTF-8`);
  }
  let value;
  try {
    value = parseJson(text);
  } catch (error) {
    throw malformed(`${name} message is not the expected JSON: ${error.message}`);
  }
  if (!isObject(value)) throw malformed(`${name} message is not the expected JSON: not an object`);
  return value;
}

function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof JsonNumber);
}

// kind: 'string' | 'array' | 'number' (a JsonNumber)
function field(name, object, key, kind) {
  if (!Object.prototype.hasOwnProperty.call(object, key)) {
    throw malformed(`${name} message is not the expected JSON: missing field \`${key}\``);
  }
  const value = object[key];
  const ok =
    kind === 'string' ? typeof value === 'string'
      : kind === 'array' ? Array.isArray(value)
        : value instanceof JsonNumber;
  if (!ok) throw malformed(`${name} message is not the expected JSON: \`${key}\` has the wrong type`);
  return value;
}

// A size or an offset: an integer literal from 0 to 2^53 − 1.
function integer(name, value, key) {
  if (!(value instanceof JsonNumber) || !/^(0|[1-9][0-9]*)$/.test(value.text)) {
    throw malformed(`${name} message is not the expected JSON: \`${key}\` is not a non-negative integer`);
  }
  if (value.text.length >= 16 && BigInt(value.text) > BigInt(MAX_SIZE)) {
    throw malformed(`${name} message holds a size or offset above 2^53-1`);
  }
  return Number(value.text);
}

/** A JSON number as written, so that `1.0`, `1e3` and `-0` can be told from integers. */
class JsonNumber {
  constructor(text) {
    this.text = text;
  }
}

// A strict JSON parser (RFC 8259) that refuses a key appearing twice in one object and
// keeps numbers as written. JSON.parse would quietly keep the last duplicate.
function parseJson(text) {
  let at = 0;
  const fail = (what) => {
    throw new Error(`${what} at character ${at}`);
  };
  const space = () => {
    while (at < text.length && ' \t\n\r'.includes(text[at])) at++;
  };
  const value = (depth) => {
    if (depth > 64) fail('nested too deeply');
    space();
    const c = text[at];
    if (c === '{') {
      at++;
      const object = Object.create(null);
      space();
      if (text[at] === '}') {
        at++;
        return object;
      }
      for (;;) {
        space();
        if (text[at] !== '"') fail('expected a key');
        const key = string();
        if (Object.prototype.hasOwnProperty.call(object, key)) fail(`duplicate field \`${key}\``);
        space();
        if (text[at] !== ':') fail('expected ":"');
        at++;
        object[key] = value(depth + 1);
        space();
        if (text[at] === ',') {
          at++;
          continue;
        }
        if (text[at] === '}') {
          at++;
          return object;
        }
        fail('expected "," or "}"');
      }
    }
    if (c === '[') {
      at++;
      const array = [];
      space();
      if (text[at] === ']') {
        at++;
        return array;
      }
      for (;;) {
        array.push(value(depth + 1));
        space();
        if (text[at] === ',') {
          at++;
          continue;
        }
        if (text[at] === ']') {
          at++;
          return array;
        }
        fail('expected "," or "]"');
      }
    }
    if (c === '"') return string();
    for (const [word, result] of [['true', true], ['false', false], ['null', null]]) {
      if (text.startsWith(word, at)) {
        at += word.length;
        return result;
      }
    }
    const number = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(at, at + 400));
    if (number) {
      at += number[0].length;
      return new JsonNumber(number[0]);
    }
    return fail('expected a value');
  };
  const string = () => {
    at++; // the opening quote
    let out = '';
    for (;;) {
      const run = /^[^"\\\u0000-\u001f]*/.exec(text.slice(at, at + 65536))[0];
      out += run;
      at += run.length;
      const c = text[at];
      if (c === '"') {
        at++;
        return out;
      }
      if (c !== '\\') fail(c === undefined ? 'unterminated string' : 'control character in a string');
      const e = text[at + 1];
      const simple = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' }[e];
      if (simple !== undefined) {
        out += simple;
        at += 2;
      } else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(at + 2, at + 6))) {
        out += String.fromCharCode(parseInt(text.slice(at + 2, at + 6), 16));
        at += 6;
      } else {
        fail('invalid escape');
      }
      if (out.length > MAX_CONTROL_LEN) fail('string too long');
    }
  };
  const result = value(0);
  space();
  if (at !== text.length) fail('trailing characters');
  // Lone surrogates from \u escapes are not Unicode scalar values: refuse them, as serde does.
  checkSurrogates(result);
  return result;
}

function checkSurrogates(value) {
  if (typeof value === 'string') {
    if (!isWellFormed(value)) throw new Error('lone surrogate in a string');
  } else if (Array.isArray(value)) {
    value.forEach(checkSurrogates);
  } else if (isObject(value)) {
    for (const key of Object.keys(value)) {
      checkSurrogates(key);
      checkSurrogates(value[key]);
    }
  }
}

function isWellFormed(s) {
  if (typeof s.isWellFormed === 'function') return s.isWellFormed();
  return !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);
}

// ---------------------------------------------------------------------------------------
// File names (docs/transfer.md, "File names")

/** Why one name is not allowed (the Rust PathError wording), or null when it is fine. */
export function pathProblem(path) {
  if (path === '') return 'it is empty';
  if (!isWellFormed(path)) return 'it is not valid Unicode';
  if (encoder.encode(path).length > MAX_PATH_LEN) return `it is longer than ${MAX_PATH_LEN} bytes`;
  if (path.startsWith('/')) return 'it is an absolute path';
  if (path.includes('\\')) return 'it contains a backslash';
  if (path.includes(':')) return "it contains ':' (a drive letter or data stream on Windows)";
  if (/[\u0000-\u001f\u007f-\u009f]/.test(path)) return 'it contains a control character';
  const components = path.split('/');
  for (const component of components) {
    if (component === '') return "it has an empty component (a doubled or trailing '/')";
    if (component === '.' || component === '..') return "it has a '.' or '..' component";
    if (encoder.encode(component).length > MAX_COMPONENT_LEN) {
      return `a component is longer than ${MAX_COMPONENT_LEN} bytes`;
    }
    if (isDeviceName(component)) return `${JSON.stringify(component)} is a reserved device name on Windows`;
  }
  if (encoder.encode(components[components.length - 1]).length > MAX_NAME_LEN) {
    return `the file name is longer than ${MAX_NAME_LEN} bytes (NAME.part must fit in 255)`;
  }
  return null;
}

function isDeviceName(component) {
  const stem = component.split('.')[0].replace(/ +$/, '').replace(/[a-z]/g, (c) => c.toUpperCase());
  if (['CON', 'PRN', 'AUX', 'NUL'].includes(stem)) return true;
  return /^(COM|LPT)[1-9¹²³]$/.test(stem);
}

/**
 * Checks every name of a manifest and the names against each other (case-insensitive
 * duplicates, a file used as a folder by another name, a name where another file's partial
 * file goes). Throws TransferError (refused) naming the first problem in manifest order.
 */
export function checkManifest(files) {
  const refuse = (path, problem) =>
    new TransferError(
      'refused',
      `file name ${JSON.stringify(path)} is not allowed: ${problem}`,
      `refused the offer: file name ${JSON.stringify(path)} is not allowed: ${problem}`,
    );
  const names = new Map(); // lowercased name → index
  const folders = new Map(); // lowercased folder → index of the first name under it
  const lowered = [];
  files.forEach((file, i) => {
    const problem = pathProblem(file.path);
    if (problem) throw refuse(file.path, problem);
    const lower = file.path.toLowerCase();
    if (names.has(lower)) {
      throw refuse(file.path, `it names the same file as ${JSON.stringify(files[names.get(lower)].path)} (names are compared ignoring case)`);
    }
    names.set(lower, i);
    for (let at = lower.indexOf('/'); at !== -1; at = lower.indexOf('/', at + 1)) {
      const folder = lower.slice(0, at);
      if (!folders.has(folder)) folders.set(folder, i);
    }
    lowered.push(lower);
  });
  lowered.forEach((lower, i) => {
    if (folders.has(lower)) {
      throw refuse(files[i].path, `it is a file, but ${JSON.stringify(files[folders.get(lower)].path)} uses it as a folder`);
    }
    const part = lower + PART_SUFFIX;
    const j = names.has(part) ? names.get(part) : folders.get(part);
    if (j !== undefined) {
      throw refuse(files[j].path, `it is where the partial file of ${JSON.stringify(files[i].path)} is written while receiving`);
    }
  });
}

// ---------------------------------------------------------------------------------------
// Sender

/**
 * The sending side for one connection. Send offer() first; feed every message from the
 * receiver to handle(); while the channel has room, take chunks from nextChunk() (the caller
 * reads those bytes from the file and sends encodeChunk()). A TransferError from handle()
 * means: send encodeCancel(error.reason) and stop.
 */
export class Sender {
  #phase = 'awaiting-accept'; // sending | complete | closed
  #files;
  #sent;
  #acked;
  #verified;
  #verifiedCount = 0;
  #next = 0;

  /** `files`: [{path, size, sha256}] as hashed; the names must pass checkManifest. */
  constructor(files) {
    this.#files = files;
    this.#sent = files.map(() => 0);
    this.#acked = files.map(() => 0);
    this.#verified = files.map(() => false);
  }

  /** The OFFER message. */
  offer() {
    return encodeOffer(this.#files);
  }

  get phase() {
    return this.#phase;
  }

  get finished() {
    return this.#phase === 'complete' || this.#phase === 'closed';
  }

  get totalBytes() {
    return this.#files.reduce((sum, f) => sum + f.size, 0);
  }

  /** Bytes the receiver has reported written (resumed bytes included). */
  get ackedBytes() {
    return this.#acked.reduce((a, b) => a + b, 0);
  }

  get sentBytes() {
    return this.#sent.reduce((a, b) => a + b, 0);
  }

  /**
   * One message from the receiver. Returns an event: `{type: 'accepted', resumed}`,
   * `{type: 'acked'}`, `{type: 'verified', file, path}`, `{type: 'complete'}` (after the last
   * VERIFIED) or `{type: 'cancelled', reason}`. Throws TransferError.
   */
  handle(bytes) {
    if (this.finished) throw new TransferError('local', 'the transfer is already over');
    try {
      const message = decode(bytes);
      if (message.type === 'cancel') {
        this.#phase = 'closed';
        return { type: 'cancelled', reason: message.reason };
      }
      if (this.#phase === 'awaiting-accept' && message.type === 'accept') return this.#accept(message.offsets);
      if (this.#phase === 'sending' && message.type === 'ack') return this.#ack(message.file, message.offset);
      if (this.#phase === 'sending' && message.type === 'verified') return this.#verify(message.file);
      const phase = this.#phase === 'awaiting-accept' ? 'waiting for ACCEPT' : 'sending';
      throw violation(`unexpected ${message.type.toUpperCase()} while ${phase}`);
    } catch (error) {
      this.#phase = 'closed';
      throw error;
    }
  }

  /**
   * The next chunk to send, `{file, offset, length}`, or null when there is nothing to send
   * now (not accepted yet, every byte sent, or finished). Counts it as sent.
   */
  nextChunk() {
    if (this.#phase !== 'sending') return null;
    while (this.#next < this.#files.length && this.#sent[this.#next] >= this.#files[this.#next].size) {
      this.#next++;
    }
    if (this.#next === this.#files.length) return null;
    const file = this.#next;
    const offset = this.#sent[file];
    const length = Math.min(CHUNK_SIZE, this.#files[file].size - offset);
    this.#sent[file] += length;
    return { file, offset, length };
  }

  /** Stops; returns the CANCEL to send, or null when already finished. */
  cancel(reason) {
    if (this.finished) return null;
    this.#phase = 'closed';
    return encodeCancel(reason);
  }

  #accept(offsets) {
    if (offsets.length !== this.#files.length) {
      throw violation(`ACCEPT holds ${offsets.length} offsets for ${this.#files.length} files`);
    }
    offsets.forEach((offset, i) => {
      if (offset > this.#files[i].size) {
        throw violation(`ACCEPT offset ${offset} for file ${i} is beyond its size ${this.#files[i].size}`);
      }
    });
    this.#sent = offsets.slice();
    this.#acked = offsets.slice();
    this.#phase = 'sending';
    return { type: 'accepted', resumed: offsets.reduce((a, b) => a + b, 0) };
  }

  #index(file) {
    if (file >= this.#files.length) throw violation(`file index ${file} is not in the offer`);
    return file;
  }

  #ack(file, offset) {
    const i = this.#index(file);
    if (offset < this.#acked[i] || offset > this.#sent[i]) {
      throw violation(`ACK for file ${file} at offset ${offset} goes backwards or covers bytes not sent`);
    }
    this.#acked[i] = offset;
    return { type: 'acked' };
  }

  #verify(file) {
    const i = this.#index(file);
    if (this.#verified[i] || this.#sent[i] !== this.#files[i].size) {
      throw violation(`VERIFIED for file ${file}, which is not completely sent or was already verified`);
    }
    this.#verified[i] = true;
    this.#verifiedCount++;
    this.#acked[i] = this.#files[i].size;
    if (this.#verifiedCount === this.#files.length) {
      this.#phase = 'complete';
      return { type: 'complete', file, path: this.#files[i].path };
    }
    return { type: 'verified', file, path: this.#files[i].path };
  }
}

// ---------------------------------------------------------------------------------------
// Receiver

/**
 * The receiving side's rules; the caller does the storage. Feed every message to handle():
 * - `{type: 'offer', files}`: names already checked; show them, then call accepted(offsets)
 *   and send its ACCEPT (or cancel()).
 * - `{type: 'chunk', file, offset, data, last}`: append `data` to the current file's partial
 *   file; when `last`, check and finish the file, then call fileDone() and send VERIFIED.
 * - `{type: 'cancel', reason}`.
 * Files are received strictly in manifest order; `current` is the file expected next (files
 * whose offset equals their size are the caller's to finish, in order, through fileDone()).
 * A TransferError from handle() means: send encodeCancel(error.reason) and stop.
 */
export class Receiver {
  #phase = 'awaiting-offer'; // offered | receiving | complete | closed
  #files = null;
  #received = null; // per file: bytes in its .part (accepted offset + chunks)
  #acked = null;
  #current = 0;

  get phase() {
    return this.#phase;
  }

  get files() {
    return this.#files;
  }

  get finished() {
    return this.#phase === 'complete' || this.#phase === 'closed';
  }

  /** The index of the file being received (or finished next), in manifest order. */
  get current() {
    return this.#current;
  }

  get receivedBytes() {
    return this.#received ? this.#received.reduce((a, b) => a + b, 0) : 0;
  }

  get totalBytes() {
    return this.#files ? this.#files.reduce((sum, f) => sum + f.size, 0) : 0;
  }

  handle(bytes) {
    if (this.finished) throw new TransferError('local', 'the transfer is already over');
    try {
      const message = decode(bytes);
      if (message.type === 'cancel') {
        this.#phase = 'closed';
        return message;
      }
      if (this.#phase === 'awaiting-offer' && message.type === 'offer') {
        checkManifest(message.files);
        this.#files = message.files;
        this.#phase = 'offered';
        return message;
      }
      if (this.#phase === 'receiving' && message.type === 'chunk') return this.#chunk(message);
      const phase = {
        'awaiting-offer': 'waiting for an OFFER',
        offered: 'waiting for the user to accept the offer',
        receiving: 'receiving',
      }[this.#phase];
      throw violation(`unexpected ${message.type.toUpperCase()} while ${phase}`);
    } catch (error) {
      this.#phase = 'closed';
      throw error;
    }
  }

  /** The user accepted with these start offsets (one per file, each ≤ its size); the ACCEPT. */
  accepted(offsets) {
    if (this.#phase !== 'offered') throw new TransferError('local', 'accept needs an offer waiting for an answer');
    if (offsets.length !== this.#files.length || offsets.some((o, i) => !(o >= 0 && o <= this.#files[i].size))) {
      throw new TransferError('local', 'one start offset per file, each at most its size');
    }
    this.#received = offsets.slice();
    this.#acked = offsets.slice();
    this.#phase = 'receiving';
    this.#current = 0;
    this.#settle();
    return encodeAccept(offsets);
  }

  /** True when the current file needs no data: the caller finishes it (in place, complete .part or empty). */
  get currentNeedsNoData() {
    return this.#phase === 'receiving' && this.#current < this.#files.length
      && this.#received[this.#current] === this.#files[this.#current].size;
  }

  /** The current file is verified and in place: returns VERIFIED for it and moves on. */
  fileDone() {
    const i = this.#current;
    if (this.#phase !== 'receiving' || this.#received[i] !== this.#files[i].size) {
      throw new TransferError('local', 'fileDone() before the file was complete');
    }
    this.#current++;
    this.#settle();
    return encodeVerified(i);
  }

  /**
   * `written` bytes of file `file` are now in its .part; returns the ACK to send, or null.
   * ACKs go out every ACK_INTERVAL bytes and when the last byte is written.
   */
  written(file, written) {
    if (!this.#acked || file >= this.#files.length || written <= this.#acked[file]) return null;
    if (written - this.#acked[file] >= ACK_INTERVAL || written === this.#files[file].size) {
      this.#acked[file] = written;
      return encodeAck(file, written);
    }
    return null;
  }

  /** Stops; returns the CANCEL to send, or null when already finished. */
  cancel(reason) {
    if (this.finished) return null;
    this.#phase = 'closed';
    return encodeCancel(reason);
  }

  #settle() {
    if (this.#phase === 'receiving' && this.#current === this.#files.length) this.#phase = 'complete';
  }

  #chunk({ file, offset, data }) {
    if (this.#current >= this.#files.length) {
      throw violation('unexpected CHUNK while every file has been received');
    }
    if (file >= this.#files.length) throw violation(`file index ${file} is not in the offer`);
    const expected = this.#current;
    if (file !== expected) throw violation(`CHUNK for file ${file} while file ${expected} is being received`);
    if (offset !== this.#received[file]) {
      throw violation(`CHUNK for file ${file} at offset ${offset}, expected offset ${this.#received[file]}`);
    }
    const size = this.#files[file].size;
    const end = offset + data.length;
    if (end > size) throw violation(`CHUNK for file ${file} ends at ${end}, past its size ${size}`);
    this.#received[file] = end;
    return { type: 'chunk', file, offset, data, last: end === size };
  }
}
