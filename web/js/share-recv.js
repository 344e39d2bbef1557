// The receive page, /recv/CODE: joins the code's room as "receiver", pairs with the sender,
// answers its connection, shows the offer, and receives into the browser's private file
// storage (share-store.js, a worker), verifying each file's SHA-256 as it arrives. Every
// verified file gets a download link. A page reloaded mid-transfer resumes from what it
// had written.
//
// Test hooks: `?yes=1` accepts the offer without asking; `?storage=memory` keeps files in
// memory instead of OPFS. `window.switchboardShare` is a debug handle for tests.

import { SignalingClient, withToken } from './signaling.js';
import { parseCode, roomFor } from './pairing.js';
import { Sha256 } from './sha256.js';
import { Receiver, TransferError, encodeCancel } from './transfer.js';
import { Meeting, RateMeter, channelStats, formatBytes, formatDuration, makeCertificate, say, selectedPair } from './share.js';

const params = new URLSearchParams(location.search);
const AUTO_ACCEPT = params.get('yes') === '1';
const FORCE_MEMORY = params.get('storage') === 'memory';
// `?relay=1`: connect through the TURN server only (as the call page's option does).
const RELAY_ONLY = params.get('relay') === '1';
// How long the receiver keeps the connection open after the last VERIFIED, waiting for the
// sender to close it.
const CLOSE_GRACE_MS = 10_000;

/** Debug handle for tests: plain data, updated as the transfer goes. */
const debug = {
  role: 'receiver',
  state: 'starting', // waiting | pairing | connecting | offered | receiving | done | cancelled | wrong_code | interrupted | error
  code: null,
  files: [], // [{path, size, sha256, offset, verified, computedSha256}]
  bytes: 0,
  total: 0,
  resumedBytes: 0,
  storage: null, // 'opfs' | 'memory'
  pair: null, // selected candidate pair types
  error: null,
  blobs: [], // verified files, by index
};
window.switchboardShare = debug;
/** For diagnosis: the data channel's counters (a function, so JSON copies of the handle skip it). */
debug.channel = () => channelStats(link?.pc, link?.dc);

const el = (id) => document.getElementById(id);

let signaling = null;
let meeting = null;
let link = null; // {pc, dc, peer} once connected
let receiver = null;
let store = null;
let plans = null;
let progress = []; // bytes of each file written (resumed bytes included)
let queue = Promise.resolve();
let meter = new RateMeter();
let started = 0;
let ticker = null;


function main() {
  const match = location.pathname.match(/^\/recv\/([^/]*)\/?$/);
  let code = null;
  try {
    code = parseCode(decodeURIComponent(match?.[1] ?? ''));
  } catch (error) {
    showCodeForm(match?.[1] ? `That code does not work: ${error.message}` : '');
    return;
  }
  debug.code = code;
  el('code').textContent = code;
  el('code-line').hidden = false;
  document.title = `Receive ${code} · Switchboard`;
  el('retry').addEventListener('click', () => location.reload());
  el('accept').addEventListener('click', () => enqueue(accept));
  el('decline').addEventListener('click', () => enqueue(decline));
  start(code).catch((error) => fail('error', String(error?.message ?? error)));
}

function showCodeForm(problem) {
  el('code-form').hidden = false;
  if (problem) fail('error', problem);
  el('code-form').addEventListener('submit', (event) => {
    event.preventDefault();
    try {
      const code = parseCode(el('code-input').value);
      location.assign(withToken(`/recv/${encodeURIComponent(code)}`));
    } catch (error) {
      say('error', error.message);
    }
  });
}

async function start(code) {
  store = new Store();
  addEventListener('pagehide', () => store.release());
  const cert = await makeCertificate();
  setState('waiting', 'Waiting for the sender…');
  signaling = new SignalingClient({ room: roomFor(code), name: 'receiver' });
  let sender = null; // the sender's peer id once known
  const meet = (peer) => {
    if (meeting || link || sender) return;
    sender = peer;
    setState('pairing', 'Sender found; checking the code…');
    const attempt = new Meeting({
      signaling, code, role: 'receiver', peer, cert,
      iceServers: signaling.iceServers, relayOnly: RELAY_ONLY,
      log: (line) => console.debug(`transfer: ${line}`),
    });
    meeting = attempt;
    attempt.run().then((open) => connected({ ...open, meeting: attempt }), (error) => {
      meeting = null;
      if (error.kind === 'wrong_code') fail('wrong_code', 'Wrong code: the sender has a different code. Nothing was received. Check the code and try again.');
      else fail('error', `${error.message}.`);
      signaling.leave();
    });
  };
  signaling.addEventListener('welcome', ({ detail }) => {
    // The most recent sender first: an earlier one may have restarted since.
    const found = detail.msg.peers?.filter((p) => p.name === 'sender').at(-1);
    if (found) meet(found.id);
  });
  signaling.addEventListener('peer_joined', ({ detail }) => {
    if (detail.peer.name === 'sender') meet(detail.peer.id);
  });
  signaling.addEventListener('peer_left', ({ detail }) => {
    if (detail.peer === sender && meeting) meeting.fail(new Error('the sender left before the connection was up'));
  });
  signaling.addEventListener('signal', ({ detail }) => {
    if (meeting && detail.from === meeting.peer) meeting.onSignal(detail);
    // The sender restarts ICE when the path drops: answer on the same connection.
    else if (link && detail.from === sender && (detail.description || detail.candidate !== undefined)) link.meeting.renegotiate(detail);
    else if (detail.app && detail.from !== sender) signaling.signal(detail.from, { app: { abort: 'busy' } });
  });
  signaling.addEventListener('stopped', ({ detail }) => {
    if (!link && !['left'].includes(detail.reason)) fail('error', `The signaling server refused this page (${detail.reason})${detail.message ? `: ${detail.message}` : '.'}`);
  });
  signaling.start();
}

function connected({ pc, dc, meeting: attempt }) {
  meeting = null;
  link = { pc, dc, meeting: attempt };
  setState('connecting', 'Connected; waiting for the list of files…');
  selectedPair(pc).then((pair) => { debug.pair = pair; });
  receiver = new Receiver();
  dc.onmessage = ({ data }) => enqueue(() => onMessage(data));
  dc.onclose = () => interrupted('the sender closed the connection');
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'failed') interrupted('the connection to the sender failed');
  };
}

function enqueue(task) {
  queue = queue.then(task).catch((error) => abort(error));
}

async function onMessage(data) {
  if (receiver.finished) return;
  const message = receiver.handle(data);
  if (message.type === 'offer') {
    await offered(message.files);
  } else if (message.type === 'chunk') {
    // The worker takes the whole message buffer; the data starts after the header.
    const end = message.offset + message.data.length;
    store.write(message.file, data, message.data.byteOffset);
    if (message.last) await finishFile(message.file, end);
  } else if (message.type === 'cancel') {
    stopTicker();
    fail('cancelled', `The sender cancelled: ${message.reason}`);
    hangUp();
  }
}

async function offered(files) {
  const total = files.reduce((sum, f) => sum + f.size, 0);
  debug.files = files.map((f) => ({ ...f, offset: 0, verified: false, computedSha256: null }));
  debug.total = total;
  el('offer-summary').textContent = `The sender offers ${files.length} file${files.length === 1 ? '' : 's'} (${formatBytes(total)}):`;
  const list = el('offer-files');
  list.replaceChildren(...files.slice(0, 200).map((f) => fileItem(f.path, formatBytes(f.size))));
  if (files.length > 200) list.append(fileItem(`… and ${files.length - 200} more`, ''));
  el('offer').hidden = false;
  const storage = await store.call('init', { key: await transferKey(files), memory: FORCE_MEMORY });
  debug.storage = storage.backend;
  el('storage-note').textContent = storage.backend === 'opfs'
    ? await quotaNote(total)
    : `Files are kept in memory (${storage.reason}); a large transfer may not fit, and a reload starts over.`;
  if (AUTO_ACCEPT) {
    await accept();
  } else {
    setState('offered', 'Accept to receive these files.');
    el('accept-actions').hidden = false;
  }
}

async function accept() {
  if (receiver.phase !== 'offered') return;
  el('accept-actions').hidden = true;
  const files = receiver.files;
  plans = (await store.call('plan', { files })).plans;
  const offsets = plans.map((p) => p.offset);
  progress = offsets.slice();
  debug.resumedBytes = offsets.reduce((a, b) => a + b, 0);
  debug.files.forEach((f, i) => { f.offset = offsets[i]; });
  link.dc.send(receiver.accepted(offsets));
  setState('receiving', debug.resumedBytes > 0 ? `Resuming: ${formatBytes(debug.resumedBytes)} already here.` : 'Receiving…');
  started = performance.now();
  meter.reset();
  el('progress-box').hidden = false;
  startTicker();
  await advance();
}

async function decline() {
  if (receiver.phase !== 'offered') return;
  el('accept-actions').hidden = true;
  link.dc.send(receiver.cancel('declined'));
  fail('cancelled', 'You declined the files.');
  hangUp();
}

// Files that need no data are finished in order; then the next file with data is opened.
async function advance() {
  while (receiver.currentNeedsNoData) {
    const i = receiver.current;
    const file = receiver.files[i];
    const result = await store.call('complete', { path: file.path, sha256: file.sha256, kind: plans[i].kind });
    if (result.match === false) throw mismatch(file.path);
    verified(i, result);
  }
  if (receiver.phase === 'complete') {
    complete();
    return;
  }
  const i = receiver.current;
  await store.call('open', { file: i, path: receiver.files[i].path, offset: progress[i] });
}

async function finishFile(i, end) {
  const file = receiver.files[i];
  if (end !== file.size) return;
  const result = await store.call('finish', { sha256: file.sha256 });
  debug.files[i].computedSha256 = result.digest;
  if (!result.match) throw mismatch(file.path);
  verified(i, result);
  await advance();
}

function mismatch(path) {
  return new TransferError(
    'mismatch',
    `${path}: the received data does not match the SHA-256 in the offer (corrupted in transit, or the file changed while it was sent); the partial file was deleted.`,
    `${path}: SHA-256 mismatch (corrupted in transit, or the file changed while it was sent)`,
  );
}

function verified(i, { digest, blob }) {
  const file = receiver.files[i];
  progress[i] = file.size;
  link.dc.send(receiver.fileDone());
  Object.assign(debug.files[i], { verified: true, computedSha256: digest });
  debug.blobs[i] = blob;
  const name = file.path.slice(file.path.lastIndexOf('/') + 1);
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  a.textContent = file.path;
  a.className = 'download';
  a.dataset.index = String(i);
  const item = fileItem('', formatBytes(file.size));
  item.firstChild.append(a);
  el('downloads').append(item);
  el('downloads-box').hidden = false;
}

function complete() {
  stopTicker();
  const secs = (performance.now() - started) / 1000;
  const received = debug.total - debug.resumedBytes;
  const earlier = debug.resumedBytes > 0 ? ` (${formatBytes(debug.resumedBytes)} were already here)` : '';
  setState('done', `Received ${formatBytes(received)} in ${secs.toFixed(1)} s (${formatBytes(received / Math.max(secs, 0.001))}/s)${earlier}. Every file matched its SHA-256.`);
  render();
  el('offer').hidden = true;
  signaling.leave();
  // The sender closes the channel once it has the last VERIFIED.
  setTimeout(() => link?.pc.close(), CLOSE_GRACE_MS);
}

function interrupted(reason) {
  if (!link || receiver?.finished) return;
  stopTicker();
  fail('interrupted', `The transfer stopped: ${reason}. What arrived is kept; try again to resume where it stopped.`);
  hangUp();
}

// Ends the transfer over a protocol violation, a hash mismatch or a storage failure: CANCEL
// to the sender (partial files stay for a resume, except one that failed verification).
function abort(error) {
  stopTicker();
  const known = error instanceof TransferError || typeof error?.kind === 'string';
  const reason = error instanceof TransferError ? error.reason
    : known ? error.message : `internal error: ${error?.message ?? error}`;
  receiver?.cancel(reason);
  if (link?.dc.readyState === 'open') {
    try {
      link.dc.send(encodeCancel(reason));
    } catch { /* the channel is going away */ }
  }
  const text = error?.kind === 'disk_full'
    ? 'The browser storage is full. What arrived is kept; free some space and try again to resume.'
    : String(error?.message ?? error);
  fail('error', text);
  setTimeout(hangUp, 500);
}

function hangUp() {
  if (link) {
    link.dc.onclose = link.dc.onmessage = null;
    link.pc.onconnectionstatechange = null;
    link.pc.close();
  }
  signaling?.leave();
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
  el('retry').hidden = state === 'done' || state === 'cancelled' || !debug.code;
  el('accept-actions').hidden = true;
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
  const bytes = progress.reduce((a, b) => a + b, 0);
  debug.bytes = bytes;
  const bar = el('progress');
  bar.max = Math.max(debug.total, 1);
  bar.value = bytes;
  const { rate, eta } = meter.update(bytes - debug.resumedBytes, debug.total - debug.resumedBytes);
  el('progress-text').textContent = `${formatBytes(bytes)} of ${formatBytes(debug.total)}`
    + (debug.state === 'receiving' ? ` · ${formatBytes(rate)}/s · ${formatDuration(eta)} left` : '');
}

function fileItem(name, size) {
  const li = document.createElement('li');
  const label = document.createElement('span');
  label.className = 'file-name';
  label.textContent = name;
  const meta = document.createElement('span');
  meta.className = 'file-size';
  meta.textContent = size;
  li.append(label, meta);
  return li;
}

async function quotaNote(total) {
  const base = 'Files are written to this browser\u2019s private storage as they arrive, then offered for download; an interrupted transfer resumes when you open this link again.';
  try {
    const { quota, usage } = await navigator.storage.estimate();
    if (quota - usage < total) {
      return `${base} This browser lets the page store about ${formatBytes(quota - usage)}, less than the ${formatBytes(total)} offered.`;
    }
  } catch { /* no estimate: say nothing */ }
  return base;
}

// The folder a transfer's files go to: the same offer always gets the same folder, so a
// reloaded page finds its partial files.
async function transferKey(files) {
  const text = JSON.stringify(files.map((f) => [f.path, f.size, f.sha256]));
  return new Sha256().update(new TextEncoder().encode(text)).digestHex().slice(0, 32);
}

// --- the storage worker ----------------------------------------------------------------

class Store {
  #worker;
  #pending = new Map();
  #next = 1;

  constructor() {
    this.#worker = new Worker(new URL('./share-store.js', import.meta.url), { type: 'module' });
    this.#worker.onmessage = ({ data }) => {
      if (data.event === 'written') {
        progress[data.file] = data.bytes;
        const ack = receiver?.written(data.file, data.bytes);
        if (ack && link?.dc.readyState === 'open') link.dc.send(ack);
      } else if (data.event === 'error') {
        enqueue(() => {
          throw Object.assign(new Error(data.error.message), { kind: data.error.kind });
        });
      } else {
        const pending = this.#pending.get(data.id);
        this.#pending.delete(data.id);
        if (data.error) pending?.reject(Object.assign(new Error(data.error.message), { kind: data.error.kind }));
        else pending?.resolve(data.result);
      }
    };
    this.#worker.onerror = (event) => {
      event.preventDefault?.();
      for (const pending of this.#pending.values()) pending.reject(new Error('the storage worker failed'));
      this.#pending.clear();
    };
  }

  call(op, args = {}) {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ id, op, ...args });
    });
  }

  /** Unlocks the partial file at once (the page is being closed or reloaded). */
  release() {
    this.#worker.postMessage({ op: 'release' });
  }

  write(file, buffer, offset) {
    this.#worker.postMessage({ op: 'write', file, buffer, offset }, [buffer]);
  }
}

main();
