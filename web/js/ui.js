// DOM for the app: which view is shown, video tiles, chat log, notices,
// the signaling state pill and the device pickers. No WebRTC logic here.

const $ = (sel) => document.querySelector(sel);

export const els = {
  lobby: () => $('#lobby'),
  namePrompt: () => $('#name-prompt'),
  room: () => $('#room'),
  left: () => $('#left'),
  tiles: () => $('#tiles'),
  chatLog: () => $('#chat-log'),
  chatForm: () => $('#chat-form'),
  chatInput: () => $('#chat-input'),
  mediaNotice: () => $('#media-notice'),
  errorNotice: () => $('#error-notice'),
  soundNotice: () => $('#sound-notice'),
  signalingState: () => $('#signaling-state'),
  roomLabel: () => $('#room-label'),
  micToggle: () => $('#mic-toggle'),
  camToggle: () => $('#cam-toggle'),
  screenToggle: () => $('#screen-toggle'),
  micSelect: () => $('#mic-select'),
  camSelect: () => $('#camera-select'),
  leave: () => $('#leave-btn'),
};

/** Shows exactly one of the views: lobby, name-prompt, room, left. */
export function showView(name) {
  for (const v of ['lobby', 'name-prompt', 'room', 'left']) {
    const el = document.getElementById(v);
    if (el) el.hidden = v !== name;
  }
  document.body.dataset.view = name;
}

export function setRoomLabel(room) {
  els.roomLabel().textContent = room ? `Room ${room}` : '';
  document.title = room ? `${room} · Switchboard` : 'Switchboard';
}

const SIGNALING_LABELS = {
  idle: 'offline',
  connecting: 'connecting…',
  connected: 'waiting for camera…',
  joining: 'joining…',
  joined: 'connected',
  reconnecting: 'reconnecting…',
  stopped: 'disconnected',
};

export function setSignalingState(state, detail = {}) {
  const el = els.signalingState();
  el.dataset.state = state;
  let text = SIGNALING_LABELS[state] ?? state;
  if (state === 'reconnecting' && detail.retryInMs != null) {
    text = `reconnecting (retry in ${Math.max(1, Math.round(detail.retryInMs / 1000))} s)…`;
  }
  if (state === 'joining' && detail.resuming) text = 'resuming…';
  el.textContent = `Signaling: ${text}`;
}

function showNotice(el, text) {
  el.textContent = text ?? '';
  el.hidden = !text;
}

export function setMediaNotice(text) {
  showNotice(els.mediaNotice(), text);
}

export function setError(text) {
  showNotice(els.errorNotice(), text);
}

/** Shows a button that unmutes remote audio after the browser blocked autoplay. */
export function showSoundPrompt(onClick) {
  const box = els.soundNotice();
  box.hidden = false;
  const btn = box.querySelector('button');
  btn.onclick = () => {
    box.hidden = true;
    onClick();
  };
}

// --- tiles -------------------------------------------------------------------

function tileFor(id) {
  return els.tiles().querySelector(`.tile[data-peer="${CSS.escape(id)}"]`);
}

/** Creates (or returns) the tile of peer `id`. */
export function ensureTile(id, { name, self = false } = {}) {
  let tile = tileFor(id);
  if (tile) return tile;
  const tpl = document.getElementById('tile-template');
  tile = tpl.content.firstElementChild.cloneNode(true);
  tile.dataset.peer = id;
  if (self) {
    tile.classList.add('self');
    tile.querySelector('video').muted = true; // never play our own microphone back
  }
  fillName(tile, name, self);
  if (self) els.tiles().prepend(tile); else els.tiles().append(tile);
  layout();
  return tile;
}

export function setTileName(id, name, self = false) {
  const tile = tileFor(id);
  if (tile) fillName(tile, name, self);
}

function fillName(tile, name, self) {
  const label = self ? `${name} (you)` : name;
  tile.querySelector('.tile-name').textContent = label;
  tile.querySelector('.tile-name').title = label;
  tile.querySelector('.tile-initial').textContent = initial(name);
}

export function setTileState(id, state) {
  const tile = tileFor(id);
  if (!tile) return;
  const el = tile.querySelector('.tile-state');
  el.textContent = state;
  tile.dataset.state = state;
}

/** Marks what a participant is not sending: {audio, video} booleans (true = on). */
export function setTileMedia(id, { audio, video }) {
  const tile = tileFor(id);
  if (!tile) return;
  tile.classList.toggle('no-video', !video);
  const flags = [];
  if (!audio) flags.push('mic off');
  if (!video) flags.push('camera off');
  tile.querySelector('.tile-muted').textContent = flags.join(' · ');
}

/**
 * Attaches `stream` to the tile's video element and starts playback. If the
 * browser refuses to autoplay with sound, plays muted and calls `onBlocked`.
 */
export function setTileStream(id, stream, onBlocked) {
  const tile = tileFor(id);
  if (!tile) return null;
  const video = tile.querySelector('video');
  if (video.srcObject !== stream) video.srcObject = stream;
  playVideo(video, onBlocked);
  return video;
}

export function playVideo(video, onBlocked) {
  const p = video.play();
  if (p?.catch) {
    p.catch((err) => {
      if (err?.name === 'NotAllowedError' && !video.muted) {
        video.muted = true;
        video.dataset.autoMuted = '1';
        video.play().catch(() => {});
        onBlocked?.();
      }
    });
  }
}

/** Unmutes every remote video that was muted only because autoplay was blocked. */
export function unmuteBlocked() {
  for (const v of els.tiles().querySelectorAll('video[data-auto-muted]')) {
    v.muted = false;
    delete v.dataset.autoMuted;
    v.play().catch(() => {});
  }
}

export function removeTile(id) {
  tileFor(id)?.remove();
  layout();
}

/** Highlights the tile of the active speaker (`null`: nobody). */
export function setSpeaker(id) {
  for (const t of els.tiles().querySelectorAll('.tile.speaking')) t.classList.remove('speaking');
  if (id) tileFor(id)?.classList.add('speaking');
}

/** How large peer `id`'s video is shown, in device pixels ({width: 0, height: 0} when hidden). */
export function videoSize(id) {
  const video = tileFor(id)?.querySelector('video');
  if (!video) return null;
  const dpr = window.devicePixelRatio || 1;
  const visible = video.offsetParent !== null && document.visibilityState === 'visible';
  if (!visible) return { width: 0, height: 0 };
  return { width: Math.round(video.clientWidth * dpr), height: Math.round(video.clientHeight * dpr) };
}

export function clearRemoteTiles() {
  for (const t of els.tiles().querySelectorAll('.tile:not(.self)')) t.remove();
  layout();
}

function layout() {
  const n = els.tiles().children.length;
  els.tiles().dataset.count = String(n);
}

function initial(name) {
  return (name ?? '?').trim().charAt(0).toUpperCase() || '?';
}

// --- chat --------------------------------------------------------------------

/**
 * Appends a chat line: {from, text, self, system}; `at` (ms) for a stored message's time,
 * `id` for its server id, `pending` while the server has not confirmed it. Returns the line.
 */
export function appendChat({ from, text, self = false, system = false, at = null, id = null, pending = false }) {
  const log = els.chatLog();
  const li = document.createElement('li');
  li.className = 'chat-msg';
  if (self) li.classList.add('self');
  if (system) li.classList.add('system');
  if (pending) li.classList.add('pending');
  if (id != null) li.dataset.id = String(id);
  const time = new Date(at ?? Date.now()).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (!system) {
    const who = document.createElement('span');
    who.className = 'chat-from';
    who.textContent = self ? `${from} (you)` : from;
    li.append(who);
  }
  const body = document.createElement('span');
  body.className = 'chat-text';
  body.textContent = text;
  const when = document.createElement('time');
  when.textContent = time;
  li.append(body, when);
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(li);
  if (atBottom) log.scrollTop = log.scrollHeight;
  return li;
}

/** A pending line the server has now stored: its id and the server's time. */
export function confirmChat(li, { id, at }) {
  li.classList.remove('pending');
  li.dataset.id = String(id);
  const when = li.querySelector('time');
  if (when && at) when.textContent = new Date(at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** A pending line the server refused. */
export function failChat(li, why) {
  li.classList.remove('pending');
  li.classList.add('failed');
  li.title = why;
}

// --- controls ----------------------------------------------------------------

export function setToggle(btn, { on, label, available = true }) {
  btn.setAttribute('aria-pressed', String(!on));
  btn.textContent = label;
  btn.disabled = !available;
  btn.classList.toggle('off', !on);
}

/** Fills a <select> with devices and selects `current`. */
export function fillSelect(select, devices, current, emptyLabel) {
  select.replaceChildren();
  if (devices.length === 0) {
    const o = document.createElement('option');
    o.textContent = emptyLabel;
    o.value = '';
    select.append(o);
    select.disabled = true;
    return;
  }
  select.disabled = false;
  for (const d of devices) {
    const o = document.createElement('option');
    o.value = d.deviceId;
    o.textContent = d.label;
    if (d.deviceId === current) o.selected = true;
    select.append(o);
  }
}
