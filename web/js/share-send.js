// The send page, /send: pick or drop files (or folders), hash them, show a code, its link and
// a QR code of the link, then wait in the code's room as "sender" for a receiver (a browser
// at /recv/CODE or `switchboard recv CODE`), pair, connect and send. When the connection dies
// mid-transfer, the page waits for the receiver to come back and resumes from the offsets in
// its ACCEPT.
//
// Test hook: `?code=N-word-word` uses that code instead of a random one.
// `window.switchboardShare` is a debug handle for tests.

import { SignalingClient } from './signaling.js';
import { generateCode, parseCode, roomFor } from './pairing.js';
import { Sha256 } from './sha256.js';
import { Sender, TransferError, checkManifest, encodeCancel, encodeChunk, encodeOffer } from './transfer.js';
import { Meeting, RateMeter, channelStats, formatBytes, formatDuration, makeCertificate, say, selectedPair } from './share.js';
import { qrSvg } from './qr.js';

// Flow control: refill the data channel when its queue falls under LOW, up to HIGH.
const LOW_WATER = 1 << 20;
const HIGH_WATER = 4 << 20;
// Files are read in blocks of this size and cut into 16 KiB chunks.
const READ_BLOCK = 1 << 20;
const HASH_BLOCK = 4 << 20;
// Messages kept per waiting receiver until it is its turn.
const MAX_INBOX = 16;

const params = new URLSearchParams(location.search);
// `?relay=1`: connect through the TURN server only (as the call page's option does).
const RELAY_ONLY = params.get('relay') === '1';

const debug = {
  role: 'sender',
  state: 'pick', // pick | hashing | waiting | pairing | connecting | offered | sending | done | cancelled | wrong_code | error
  code: null,
  link: null,
  files: [], // [{path, size, sha256, verified}]
  bytes: 0, // acknowledged by the receiver (resumed bytes included)
  total: 0,
  resumedBytes: 0,
  attempts: 0, // connections that reached the transfer
  iceRestarts: 0, // ICE restarts offered to repair a broken path
  pair: null,
  qr: false,
  error: null,
};
window.switchboardShare = debug;
/** For diagnosis: the data channel's counters (a function, so JSON copies of the handle skip it). */
debug.channel = () => channelStats(conn?.pc, conn?.dc);

const el = (id) => document.getElementById(id);

let sources = []; // File objects, by index
let manifest = []; // [{path, size, sha256}]
let code = null;
let cert = null;
let signaling = null;
let receivers = []; // peer ids named "receiver", oldest first, not yet tried
const inbox = new Map(); // peer id → app messages that arrived before its turn
let meeting = null;
let conn = null; // {pc, dc, peer, sender}
let finished = false;
let meter = new RateMeter();
let ticker = null;
let started = 0;


function main() {
  const preset = params.get('code');
  if (preset !== null) {
    try {
      code = parseCode(preset);
    } catch (error) {
      fail('error', `The code in the address does not work: ${error.message}`);
      return;
    }
  }
  const input = el('file-input');
  input.addEventListener('change', () => {
    const picked = [...input.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }));
    if (picked.length > 0) prepare(picked);
  });
  const folderInput = el('folder-input');
  folderInput.addEventListener('change', () => {
    const picked = [...folderInput.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }));
    picked.sort((a, b) => compareBytes(a.path, b.path));
    if (picked.length > 0) prepare(picked);
  });
  const drop = el('drop');
  drop.addEventListener('dragover', (event) => {
    event.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', async (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    try {
      const picked = await dropped(event.dataTransfer);
      if (picked.length > 0) prepare(picked);
      else say('error', 'Nothing to send there: no files (empty folders are not sent).');
    } catch (error) {
      say('error', `Could not read what was dropped: ${error.message}`);
    }
  });
  el('cancel').addEventListener('click', cancelByUser);
}

// --- choosing and hashing --------------------------------------------------------------

// Files in the order dropped; a folder recursively, its entries sorted by the bytes of their
// names, depth first (docs/transfer.md, Sender step 1).
async function dropped(dataTransfer) {
  const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
  if (entries.length === 0) {
    return [...dataTransfer.files].map((file) => ({ file, path: file.name }));
  }
  const out = [];
  const walk = async (entry, path) => {
    if (entry.isFile) {
      out.push({ file: await new Promise((resolve, reject) => entry.file(resolve, reject)), path });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      const children = [];
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (batch.length === 0) break;
        children.push(...batch);
      }
      children.sort((a, b) => compareBytes(a.name, b.name));
      for (const child of children) await walk(child, `${path}/${child.name}`);
    }
  };
  for (const entry of entries) await walk(entry, entry.name);
  return out;
}

function compareBytes(a, b) {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

async function prepare(picked) {
  say('error', '');
  const files = picked.map(({ file, path }) => ({ path, size: file.size, sha256: '0'.repeat(64) }));
  try {
    // Names and limits first, before hashing anything.
    checkManifest(files);
    encodeOffer(files);
  } catch (error) {
    say('error', error instanceof TransferError && error.kind === 'refused'
      ? `Cannot send this: ${error.message}. Rename it or leave it out.`
      : `Cannot send this: ${error.message}.`);
    return;
  }
  el('pick').hidden = true;
  setState('hashing', 'Reading the files…');
  el('hash-box').hidden = false;
  const total = files.reduce((sum, f) => sum + f.size, 0);
  let hashed = 0;
  const bar = el('hash-progress');
  bar.max = Math.max(total, 1);
  try {
    for (const [i, { file }] of picked.entries()) {
      const hasher = new Sha256();
      for (let at = 0; at < file.size; at += HASH_BLOCK) {
        const block = new Uint8Array(await file.slice(at, at + HASH_BLOCK).arrayBuffer());
        hasher.update(block);
        hashed += block.length;
        bar.value = hashed;
        el('hash-text').textContent = `Checking ${formatBytes(hashed)} of ${formatBytes(total)}`;
      }
      files[i].sha256 = hasher.digestHex();
    }
  } catch (error) {
    fail('error', `Could not read ${picked.length === 1 ? 'the file' : 'a file'}: ${error.message}`);
    return;
  }
  el('hash-box').hidden = true;
  sources = picked.map((p) => p.file);
  manifest = files;
  debug.files = files.map((f) => ({ ...f, verified: false }));
  debug.total = total;
  await share();
}

// --- waiting and meeting -----------------------------------------------------------------

async function share() {
  code ??= generateCode();
  debug.code = code;
  const url = `${location.origin}/recv/${code}`;
  debug.link = url;
  el('files-summary').textContent = `${manifest.length} file${manifest.length === 1 ? '' : 's'} (${formatBytes(debug.total)}): `
    + manifest.slice(0, 3).map((f) => f.path).join(', ') + (manifest.length > 3 ? ', …' : '');
  el('code').textContent = code;
  const a = el('link');
  a.href = url;
  a.textContent = url;
  el('cli').textContent = `switchboard recv ${code} --server ${location.origin}`;
  try {
    el('qr').replaceChildren(qrSvg(url, { title: `QR code of ${url}` }));
    debug.qr = true;
  } catch {
    el('qr').hidden = true; // the link is too long for a small QR code: the link alone
  }
  el('share').hidden = false;
  el('cancel').hidden = false;
  document.title = `Send ${code} · Switchboard`;
  cert = await makeCertificate();
  setState('waiting', 'Waiting for the receiver to open the link or type the code…');
  signaling = new SignalingClient({ room: roomFor(code), name: 'sender' });
  signaling.addEventListener('welcome', ({ detail }) => {
    // The welcome's peer list is the truth (after a signaling resume too).
    const present = (detail.msg.peers ?? []).filter((p) => p.name === 'receiver').map((p) => p.id);
    receivers = receivers.filter((id) => present.includes(id));
    for (const id of present) if (!receivers.includes(id) && id !== meeting?.peer && id !== conn?.peer) receivers.push(id);
    maybeMeet();
  });
  signaling.addEventListener('peer_joined', ({ detail }) => {
    if (detail.peer.name !== 'receiver') return;
    receivers.push(detail.peer.id);
    maybeMeet();
  });
  signaling.addEventListener('peer_left', ({ detail }) => {
    receivers = receivers.filter((id) => id !== detail.peer);
    inbox.delete(detail.peer);
    if (meeting?.peer === detail.peer) meeting.fail(new Error('the receiver left during pairing'));
  });
  signaling.addEventListener('signal', ({ detail }) => {
    if (meeting && detail.from === meeting.peer) {
      meeting.onSignal(detail);
    } else if (conn && detail.from === conn.peer && (detail.description || detail.candidate !== undefined)) {
      // The receiver's answer to an ICE restart, and its new candidates.
      conn.meeting.renegotiate(detail);
    } else if (detail.app !== undefined && detail.from !== conn?.peer) {
      // A receiver whose turn has not come yet: keep its pairing messages for then.
      const box = inbox.get(detail.from) ?? [];
      if (box.length < MAX_INBOX) box.push(detail);
      inbox.set(detail.from, box);
    }
  });
  signaling.addEventListener('stopped', ({ detail }) => {
    if (!finished && detail.reason !== 'left') fail('error', `The signaling server refused this page (${detail.reason})${detail.message ? `: ${detail.message}` : '.'}`);
  });
  signaling.start();
}

function maybeMeet() {
  if (finished || meeting || conn) return;
  // The most recent receiver first: an earlier one may be a receiver that has since restarted.
  const peer = receivers.pop();
  if (peer === undefined) return;
  setState('pairing', 'Receiver found; checking the code…');
  const attempt = new Meeting({
    signaling, code, role: 'sender', peer, cert,
    iceServers: signaling.iceServers, relayOnly: RELAY_ONLY,
    log: (line) => console.debug(`transfer: ${line}`),
  });
  meeting = attempt;
  const run = meeting.run();
  for (const msg of inbox.get(peer) ?? []) meeting.onSignal(msg);
  inbox.delete(peer);
  run.then(({ pc, dc }) => startTransfer({ pc, dc, peer, meeting: attempt }), (error) => {
    meeting = null;
    if (finished) return;
    if (error.kind === 'wrong_code') {
      fail('wrong_code', 'Wrong code: the receiver typed a different code (or someone guessed). Nothing was sent, and this code is now burned; send again for a new code.');
      stopAll();
      return;
    }
    setState('waiting', `${capitalise(error.message)}. Waiting for the receiver to try again…`);
    maybeMeet();
  });
}

// --- sending -----------------------------------------------------------------------------

function startTransfer({ pc, dc, peer, meeting: attempt }) {
  meeting = null;
  const c = {
    pc, dc, peer, meeting: attempt,
    sender: new Sender(manifest), reader: new BlockReader(sources), pumping: false,
    lostSince: null, repairTimer: null,
  };
  conn = c;
  debug.attempts++;
  selectedPair(pc).then((pair) => { debug.pair = pair; });
  dc.bufferedAmountLowThreshold = LOW_WATER;
  dc.onmessage = ({ data }) => onMessage(c, data);
  dc.onbufferedamountlow = () => pump(c);
  dc.onclose = () => lost(c, 'the receiver closed the connection');
  pc.onconnectionstatechange = () => {
    const state = pc.connectionState;
    if (state === 'closed') lost(c, 'the connection failed');
    // A new receiver waiting means this one restarted: do not wait for ICE to give up.
    else if ((state === 'disconnected' || state === 'failed') && receivers.length > 0) lost(c, 'the receiver restarted');
    else if (state === 'disconnected' || state === 'failed') repair(c);
    else if (state === 'connected' && c.lostSince !== null) {
      c.lostSince = null;
      say('status', 'Reconnected; the transfer goes on.');
    }
  };
  setState('offered', 'Connected; waiting for the receiver to accept…');
  dc.send(c.sender.offer());
}

// The path to the receiver broke while both pages live (a network change, a TURN server
// restart): restart ICE on the same connection, so the transfer goes on where it was. After
// REPAIR_GIVE_UP_MS without a path, wait for the receiver to come back instead.
const REPAIR_FIRST_MS = 1000;
const REPAIR_RETRY_MS = 8000;
const REPAIR_GIVE_UP_MS = 60_000;

function repair(c) {
  c.lostSince ??= Date.now();
  if (c.repairTimer) return;
  const attempt = () => {
    c.repairTimer = null;
    if (c !== conn || c.lostSince === null) return;
    if (receivers.length > 0) return lost(c, 'the receiver restarted');
    if (Date.now() - c.lostSince > REPAIR_GIVE_UP_MS) return lost(c, 'the connection failed');
    debug.iceRestarts++;
    say('status', 'The connection dropped; restarting ICE…');
    c.meeting.restartIce();
    c.repairTimer = setTimeout(attempt, REPAIR_RETRY_MS);
  };
  c.repairTimer = setTimeout(attempt, REPAIR_FIRST_MS);
}

function onMessage(c, data) {
  if (c !== conn) return;
  let event;
  try {
    event = c.sender.handle(data);
  } catch (error) {
    stop(c, error);
    return;
  }
  switch (event.type) {
    case 'accepted':
      console.debug(`transfer: accepted, ${event.resumed} bytes already there`);
      debug.resumedBytes = event.resumed;
      setState('sending', event.resumed > 0 ? `Resuming: the receiver already has ${formatBytes(event.resumed)}.` : 'Sending…');
      started = performance.now();
      meter.reset();
      el('progress-box').hidden = false;
      startTicker();
      pump(c);
      break;
    case 'verified':
    case 'complete':
      debug.files[event.file].verified = true;
      if (event.type === 'complete') complete(c);
      break;
    case 'cancelled':
      finished = true;
      stopTicker();
      fail('cancelled', event.reason === 'declined' ? 'The receiver declined the files.' : `The receiver cancelled: ${event.reason}`);
      stopAll();
      break;
    default:
      break;
  }
}

// Keeps the channel's queue between LOW_WATER and HIGH_WATER.
async function pump(c) {
  if (c.pumping) return;
  c.pumping = true;
  try {
    while (c === conn && c.dc.readyState === 'open' && c.dc.bufferedAmount < HIGH_WATER) {
      const chunk = c.sender.nextChunk();
      if (!chunk) break;
      const data = await c.reader.read(chunk.file, chunk.offset, chunk.length);
      if (c !== conn || c.dc.readyState !== 'open') break;
      c.dc.send(encodeChunk(chunk.file, chunk.offset, data));
    }
  } catch (error) {
    stop(c, error);
  } finally {
    c.pumping = false;
  }
}

function complete(c) {
  finished = true;
  stopTicker();
  const secs = (performance.now() - started) / 1000;
  const sent = debug.total - debug.resumedBytes;
  const earlier = debug.resumedBytes > 0 ? ` (the receiver already had ${formatBytes(debug.resumedBytes)})` : '';
  setState('done', `Sent ${formatBytes(sent)} in ${secs.toFixed(1)} s (${formatBytes(sent / Math.max(secs, 0.001))}/s)${earlier}. The receiver checked every file.`);
  render();
  el('cancel').hidden = true;
  el('again').hidden = false;
  c.dc.close();
  setTimeout(() => c.pc.close(), 1000);
  signaling.leave();
}

// A protocol violation, a file that changed, or the user: CANCEL and stop.
function stop(c, error) {
  const reason = error instanceof TransferError ? error.reason : `internal error: ${error?.message ?? error}`;
  if (c.dc.readyState === 'open') {
    try {
      c.dc.send(encodeCancel(reason));
    } catch { /* going away */ }
  }
  finished = true;
  stopTicker();
  fail('error', error instanceof TransferError && error.kind === 'changed'
    ? 'A file changed while it was being sent; send it again.'
    : String(error?.message ?? error));
  setTimeout(() => c.pc.close(), 500);
  stopAll();
}

function lost(c, reason) {
  if (c !== conn || finished) return;
  conn = null;
  stopTicker();
  c.dc.onclose = c.dc.onmessage = c.dc.onbufferedamountlow = null;
  c.pc.onconnectionstatechange = null;
  c.pc.close();
  setState('waiting', `Connection lost (${reason}). Waiting for the receiver to come back; it resumes where it stopped.`);
  maybeMeet();
}

function cancelByUser() {
  if (finished) return;
  finished = true;
  stopTicker();
  meeting?.fail(new Error('cancelled'));
  if (conn?.dc.readyState === 'open') conn.dc.send(conn.sender.cancel('the sender cancelled') ?? encodeCancel('the sender cancelled'));
  fail('cancelled', 'You cancelled. Nothing more is sent.');
  const c = conn;
  if (c) setTimeout(() => c.pc.close(), 500);
  stopAll();
}

function stopAll() {
  finished = true;
  el('cancel').hidden = true;
  el('again').hidden = false;
  signaling?.leave();
}

/** Reads file data in 1 MiB blocks and hands out the 16 KiB slices the sender asks for. */
class BlockReader {
  #files;
  #block = null; // {file, start, bytes}

  constructor(files) {
    this.#files = files;
  }

  async read(file, offset, length) {
    let b = this.#block;
    if (!b || b.file !== file || offset < b.start || offset + length > b.start + b.bytes.length) {
      const source = this.#files[file];
      const end = Math.min(source.size, offset + Math.max(READ_BLOCK, length));
      let buffer;
      try {
        buffer = await source.slice(offset, end).arrayBuffer();
      } catch {
        throw changed();
      }
      if (buffer.byteLength !== end - offset) throw changed();
      b = { file, start: offset, bytes: new Uint8Array(buffer) };
      this.#block = b;
    }
    return b.bytes.subarray(offset - b.start, offset - b.start + length);
  }
}

function changed() {
  return new TransferError('changed', 'a file changed while it was being sent', 'a file changed while it was being sent');
}

// --- display -----------------------------------------------------------------------------

function setState(state, text) {
  debug.state = state;
  el('share-state').textContent = state.replace('_', ' ');
  el('share-state').dataset.state = state;
  say('status', text);
}

function fail(state, text) {
  debug.error = text;
  setState(state, '');
  say('error', text);
}

function startTicker() {
  stopTicker();
  ticker = setInterval(render, 250);
}

function stopTicker() {
  clearInterval(ticker);
  ticker = null;
}

function render() {
  const c = conn;
  if (c) debug.bytes = c.sender.ackedBytes;
  const bar = el('progress');
  bar.max = Math.max(debug.total, 1);
  bar.value = debug.bytes;
  const { rate, eta } = meter.update(debug.bytes - debug.resumedBytes, debug.total - debug.resumedBytes);
  el('progress-text').textContent = `${formatBytes(debug.bytes)} of ${formatBytes(debug.total)}`
    + (debug.state === 'sending' ? ` · ${formatBytes(rate)}/s · ${formatDuration(eta)} left` : '');
}

function capitalise(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

main();
