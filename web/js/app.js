// Entry point: routes `/` (lobby) and `/r/NAME` (a room), remembers the display
// name, and wires local media, the signaling client, the peer mesh and the UI
// together. Exposes `window.switchboard` as a small debug handle for tests.

import { SignalingClient, tokenGrants, withToken } from './signaling.js';
import { Mesh } from './mesh.js';
import { SfuCall } from './sfu.js';
import { LocalMedia, explain } from './media.js';
import * as ui from './ui.js';

const NAME_KEY = 'switchboard.name';
const ROOM_RE = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/;
const SELF = 'self';
/** In `auto` mode a room moves from peer-to-peer to the SFU when it reaches this many people. */
const SFU_FROM = 3;

main();

function main() {
  const params = new URLSearchParams(location.search);
  const fromQuery = params.get('name');
  if (fromQuery != null && validName(fromQuery)) storeName(fromQuery.trim());

  const match = location.pathname.match(/^\/r\/([^/]+)\/?$/);
  if (!match) {
    showLobby();
    return;
  }
  let room;
  try {
    room = decodeURIComponent(match[1]);
  } catch {
    room = '';
  }
  if (!ROOM_RE.test(room)) {
    showLobby(`"${room}" is not a valid room name: use 1–64 letters, digits, ".", "_" or "-", not starting with ".".`);
    return;
  }
  const name = storedName();
  if (name) enterRoom(room, name);
  else askName(room);
}

// --- names -------------------------------------------------------------------

function storedName() {
  try {
    const n = localStorage.getItem(NAME_KEY);
    return n && validName(n) ? n.trim() : null;
  } catch {
    return null;
  }
}

function storeName(name) {
  try {
    localStorage.setItem(NAME_KEY, name);
  } catch { /* private mode: keep it for this page only */ }
}

/** Same rule as the server: 1–64 characters after trimming, no control characters. */
function validName(name) {
  const t = String(name).trim();
  const len = [...t].length;
  return len >= 1 && len <= 64 && !/[\u0000-\u001f\u007f-\u009f]/.test(t);
}

// --- lobby and name prompt ---------------------------------------------------

function showLobby(error) {
  ui.showView('lobby');
  ui.setRoomLabel(null);
  const form = document.getElementById('lobby-form');
  const roomInput = document.getElementById('room-input');
  const nameInput = document.getElementById('name-input');
  const errorEl = document.getElementById('lobby-error');
  nameInput.value = storedName() ?? '';
  if (!roomInput.value) roomInput.value = suggestRoom();
  errorEl.textContent = error ?? '';
  errorEl.hidden = !error;
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const room = roomInput.value.trim();
    const name = nameInput.value.trim();
    if (!ROOM_RE.test(room)) {
      errorEl.textContent = 'Room names are 1–64 letters, digits, ".", "_" or "-", not starting with ".".';
      errorEl.hidden = false;
      return;
    }
    if (!validName(name)) {
      errorEl.textContent = 'Please enter a display name (up to 64 characters).';
      errorEl.hidden = false;
      return;
    }
    storeName(name);
    location.assign(withToken(`/r/${encodeURIComponent(room)}`));
  });
}

function askName(room) {
  ui.showView('name-prompt');
  ui.setRoomLabel(room);
  document.getElementById('prompt-room').textContent = room;
  const form = document.getElementById('name-form');
  const input = document.getElementById('prompt-name-input');
  input.focus();
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = input.value.trim();
    if (!validName(name)) {
      input.setCustomValidity('Please enter a display name (up to 64 characters).');
      input.reportValidity();
      return;
    }
    storeName(name);
    enterRoom(room, name);
  }, { once: false });
  input.addEventListener('input', () => input.setCustomValidity(''));
}

function suggestRoom() {
  const words = ['amber', 'brisk', 'cedar', 'delta', 'ember', 'fjord', 'gala', 'harbor', 'indigo', 'juniper'];
  const w = words[Math.floor(Math.random() * words.length)];
  return `${w}-${Math.random().toString(36).slice(2, 6)}`;
}

// --- the room ----------------------------------------------------------------

async function enterRoom(room, name) {
  ui.showView('room');
  ui.setRoomLabel(room);
  ui.setSignalingState('idle');

  const media = new LocalMedia();
  const signaling = new SignalingClient({ room, name });
  const params = new URLSearchParams(location.search);
  const relayOnly = params.get('relay') === '1';
  // `?mode=p2p` or `?mode=sfu` forces a mode; otherwise a call is peer-to-peer until the room
  // has SFU_FROM people, then everyone moves to the SFU (and stays there).
  const mode = ['p2p', 'sfu'].includes(params.get('mode')) ? params.get('mode') : 'auto';
  const ctx = { call: null, mode };
  // A token without the publish grant: join receive-only rather than be refused by the SFU.
  const canPublish = tokenGrants(signaling.token)?.publish ?? true;
  const makeCall = (kind) => kind === 'sfu'
    ? new SfuCall({ signaling, media, relayOnly, viewSize: ui.videoSize, canPublish })
    : new Mesh({ signaling, media, relayOnly });
  ctx.call = makeCall(mode === 'sfu' ? 'sfu' : 'p2p');
  ctx.switchToSfu = (joining = []) => {
    const old = ctx.call;
    if (old instanceof SfuCall) return;
    const peers = [...old.peers.values()].map((p) => ({ id: p.id, name: p.name })).concat(joining);
    old.closeAll('moved to the SFU');
    const call = makeCall('sfu');
    ctx.call = call;
    wireCall(call);
    call.configure({ selfId: signaling.peerId, iceServers: signaling.iceServers });
    for (const p of peers) call.ensurePeer(p.id, p.name);
    ui.appendChat({ system: true, text: 'The call now goes through the server (SFU).' });
  };
  ctx.maybeSfu = () => {
    if (ctx.mode === 'auto' && ctx.call.peers.size + 1 >= SFU_FROM) ctx.switchToSfu();
  };

  window.switchboard = {
    room,
    name,
    get peerId() { return signaling.peerId; },
    get signalingState() { return signaling.state; },
    get peers() { return ctx.call.peers; },
    get mesh() { return ctx.call; },
    get call() { return ctx.call; },
    get mode() { return ctx.call instanceof SfuCall ? 'sfu' : 'p2p'; },
    signaling,
    media,
    mediaResult: null,
    /** performance.now() of milestones, for benchmarks. */
    marks: { enterRoom: performance.now() },
  };

  ui.ensureTile(SELF, { name, self: true });
  ui.setTileState(SELF, 'starting camera…');
  signaling.addEventListener('statechange', (ev) => ui.setSignalingState(ev.detail.state, ev.detail));
  // The socket opens while the camera starts; we join once media is settled
  // so that our connections are created with our tracks on them.
  signaling.preconnect();

  // (Without a camera to wait for, let the page finish loading first: a video element whose
  // stream has no tracks would hold back the load event.)
  const result = canPublish
    ? await media.acquire()
    : await pageLoaded() && {
      audio: false,
      video: false,
      notice: 'Your access token lets you see and hear this room but not send: you joined receive-only.',
    };
  window.switchboard.mediaResult = result;
  window.switchboard.marks.media = performance.now();
  ui.setMediaNotice(result.notice);
  ui.setTileStream(SELF, media.stream);
  refreshSelf(media);
  refreshControls(media);
  refreshPickers(media);

  wireSignaling(signaling, ctx, media);
  wireServerChat(signaling, ctx);
  wireCall(ctx.call);
  wireMedia(media, ctx);
  wireControls(media, ctx, signaling, name, room);

  signaling.start();
}

function pageLoaded() {
  if (document.readyState === 'complete') return Promise.resolve(true);
  return new Promise((resolve) => window.addEventListener('load', () => resolve(true), { once: true }));
}

function refreshSelf(media) {
  const audio = media.isSending('audio');
  const video = media.isSending('video');
  const has = { audio: !!media.track('audio'), video: !!media.track('video') };
  ui.setTileMedia(SELF, { audio, video });
  let state = 'camera and mic';
  if (!has.audio && !has.video) state = 'receive-only';
  else if (!has.video) state = 'audio only';
  else if (!has.audio) state = 'video only';
  ui.setTileState(SELF, state);
}

function refreshControls(media) {
  const hasAudio = !!media.track('audio');
  const hasVideo = !!media.track('video');
  ui.setToggle(ui.els.micToggle(), {
    on: hasAudio && !media.muted.audio,
    label: !hasAudio ? 'No microphone' : media.muted.audio ? 'Unmute mic' : 'Mute mic',
    available: hasAudio,
  });
  ui.setToggle(ui.els.camToggle(), {
    on: hasVideo && !media.muted.video,
    label: !hasVideo ? 'No camera' : media.muted.video ? 'Start camera' : 'Stop camera',
    available: hasVideo,
  });
}

async function refreshPickers(media) {
  try {
    const d = await media.devices();
    ui.fillSelect(ui.els.camSelect(), d.videoinput, media.currentDevice('video'), 'No camera');
    ui.fillSelect(ui.els.micSelect(), d.audioinput, media.currentDevice('audio'), 'No microphone');
  } catch (err) {
    console.warn('could not list devices', err);
  }
}

function wireSignaling(signaling, ctx, media) {
  signaling.addEventListener('welcome', (ev) => {
    const mesh = ctx.call;
    const { msg, resumed, previous } = ev.detail;
    if (!resumed && previous) {
      // Our old session is gone (resume failed): those connections belong to a
      // peer id nobody knows any more.
      mesh.closeAll('rejoined');
      ui.clearRemoteTiles();
      ui.appendChat({ system: true, text: 'Reconnected as a new participant.' });
    }
    window.switchboard.marks.welcome ??= performance.now();
    mesh.configure({ selfId: msg.peer, iceServers: signaling.iceServers });
    const peers = Array.isArray(msg.peers) ? msg.peers : [];
    if (resumed) mesh.reconcile(peers);
    else if (ctx.mode === 'auto' && peers.length + 1 >= SFU_FROM && !(mesh instanceof SfuCall)) {
      // Joining a room that is already big: straight to the SFU.
      ctx.switchToSfu(peers);
    } else for (const p of peers) mesh.ensurePeer(p.id, p.name, { initiator: true });
    ui.setError(null);
    document.body.dataset.peer = msg.peer;
  });

  signaling.addEventListener('peer_joined', (ev) => {
    const { id, name: who } = ev.detail.peer ?? {};
    if (!id || id === signaling.peerId) return;
    ctx.call.ensurePeer(id, who);
    ctx.maybeSfu();
    ui.appendChat({ system: true, text: `${who ?? 'Someone'} joined.` });
  });

  signaling.addEventListener('peer_left', (ev) => {
    const { peer: id, reason } = ev.detail;
    const who = ctx.call.peers.get(id)?.name ?? 'Someone';
    ctx.call.removePeer(id, reason);
    ui.appendChat({ system: true, text: reason === 'timeout' ? `${who} lost their connection.` : `${who} left.` });
  });

  signaling.addEventListener('signal', (ev) => {
    const { from } = ev.detail;
    if (!ctx.call.peers.has(from)) {
      // The server announces every peer (welcome/peer_joined) before relaying
      // its signals, so this is a late signal from someone who already left.
      console.warn('ignoring a signal from unknown peer', from);
      return;
    }
    // A room that once had three people stays on the SFU even when two are left: a newcomer
    // who starts peer-to-peer is told so, and follows.
    if (ev.detail.app?.mode === 'sfu') {
      if (ctx.mode === 'auto') ctx.switchToSfu();
      return;
    }
    if (ctx.call instanceof SfuCall) {
      if (ev.detail.description?.type === 'offer') signaling.signal(from, { app: { mode: 'sfu' } });
      return;
    }
    ctx.call.handleSignal(ev.detail);
  });

  signaling.addEventListener('servererror', (ev) => {
    const { code, message } = ev.detail;
    if (code === 'resume_failed') {
      ui.appendChat({ system: true, text: 'Could not resume the previous session; rejoining.' });
      return;
    }
    if (['chat_failed', 'bad_chat', 'chat_unavailable'].includes(code)) return; // shown in the chat
    if (['unknown_peer', 'bad_signal', 'bad_json', 'unknown_type', 'not_joined', 'already_joined'].includes(code)) {
      // Races (a signal to someone who just left) or our own bugs: nothing the
      // person can act on.
      console.warn(`signaling error ${code}: ${message}`);
      return;
    }
    const text = describeError(code, message, signaling);
    ui.setError(text);
    if (code === 'rate_limited' || code === 'server_busy') {
      setTimeout(() => { if (ui.els.errorNotice().textContent === text) ui.setError(null); }, 6_000);
    }
  });

  signaling.addEventListener('stopped', (ev) => {
    const { reason } = ev.detail;
    if (reason === 'left') return;
    ctx.call.closeAll(reason);
    ui.clearRemoteTiles();
    if (reason === 'replaced') {
      ui.setError('This call continued in another tab or window, so it was closed here.');
    }
    if (reason !== 'replaced') media.stop();
    refreshSelf(media);
  });

  // An explicit leave is friendlier than waiting for the socket to close.
  window.addEventListener('pagehide', () => signaling.leave());
}

/**
 * Chat in rooms that keep it on the server (`welcome.room_settings.chat_history > 0`): the
 * stored history on join, and every message once stored, deduplicated by id (a resume sends
 * the history again). Other rooms keep chat on the peer-to-peer data channels.
 */
function wireServerChat(signaling, ctx) {
  ctx.pendingChat = [];
  const shown = new Set();
  const show = (m, { history = false } = {}) => {
    if (shown.has(m.id)) return;
    shown.add(m.id);
    const mine = m.from === signaling.peerId;
    const pending = mine && !history ? ctx.pendingChat.findIndex((p) => p.text === m.text) : -1;
    if (pending >= 0) {
      const [{ li }] = ctx.pendingChat.splice(pending, 1);
      ui.confirmChat(li, m);
      return;
    }
    ui.appendChat({ from: m.name, text: m.text, self: mine, at: m.at, id: m.id });
  };
  signaling.addEventListener('chat_history', ({ detail: { messages } }) => {
    const list = Array.isArray(messages) ? messages : [];
    const fresh = list.filter((m) => !shown.has(m.id));
    if (fresh.length && shown.size === 0) ui.appendChat({ system: true, text: 'Earlier messages in this room:' });
    for (const m of fresh) show(m, { history: true });
    window.switchboard.marks.history ??= performance.now();
  });
  signaling.addEventListener('chat', ({ detail }) => show(detail));
  signaling.addEventListener('servererror', ({ detail: { code, message } }) => {
    const chatRate = code === 'rate_limited' && /chat/.test(message ?? '');
    if (!['chat_failed', 'bad_chat', 'chat_unavailable'].includes(code) && !chatRate) return;
    // The server answers in order: the oldest pending line is the one refused.
    const refused = ctx.pendingChat.shift();
    if (refused) ui.failChat(refused.li, message ?? code);
    ui.appendChat({ system: true, text: `Not sent: ${message ?? code}` });
  });
}

function describeError(code, message, signaling) {
  switch (code) {
    case 'room_full': {
      const max = signaling.limits?.max_peers_per_room;
      return `This room is full${max ? ` (at most ${max} people)` : ''}. Try again later or pick another room.`;
    }
    case 'bad_room_name':
      return `That room name is not allowed: ${message ?? ''}`;
    case 'bad_display_name':
      return `That display name is not allowed: ${message ?? ''}`;
    case 'rate_limited':
      return 'Too many messages too fast; some were dropped.';
    case 'server_busy':
      return 'The server is busy right now; retrying…';
    case 'unauthorized':
      if (/expired/.test(message ?? '')) {
        return 'Your access token has expired. Ask for a new link (with a fresh ?token=) and open it.';
      }
      return `This server needs an access token to join: open the link you were given ` +
        `(it ends in ?token=…). ${message ?? ''}`;
    case 'forbidden':
      return `Your access token does not allow this: ${message ?? ''}`;
    case 'kicked':
      return 'An administrator removed you from this room.';
    case 'room_closed':
      return 'An administrator closed this room.';
    default:
      return message ? `Server: ${message}` : `Server error: ${code}`;
  }
}

function wireCall(mesh) {
  mesh.addEventListener('peeradded', ({ detail: { peer } }) => {
    ui.ensureTile(peer.id, { name: peer.name });
    ui.setTileState(peer.id, peer.connectionState);
  });
  mesh.addEventListener('peerupdated', ({ detail: { peer } }) => {
    ui.setTileName(peer.id, peer.name);
    ui.setTileState(peer.id, peer.connectionState);
  });
  mesh.addEventListener('peerremoved', ({ detail: { peer } }) => ui.removeTile(peer.id));
  mesh.addEventListener('track', ({ detail: { peer, track } }) => {
    const video = ui.setTileStream(peer.id, peer.stream, () => ui.showSoundPrompt(ui.unmuteBlocked));
    if (video && track.kind === 'video') watchFirstFrame(peer, video);
  });
  mesh.addEventListener('remotestate', ({ detail: { peer } }) => ui.setTileMedia(peer.id, peer.remote));
  mesh.addEventListener('chat', ({ detail: { peer, text } }) => ui.appendChat({ from: peer.name, text }));
  mesh.addEventListener('speaker', ({ detail: { id } }) => ui.setSpeaker(id));
  mesh.addEventListener('error', ({ detail: { message } }) => ui.setError(message));
}

/** Records when the first remote video frame of `peer` was shown (performance.now()). */
function watchFirstFrame(peer, video) {
  if (peer.firstFrameAt != null) return;
  const mark = () => {
    if (peer.firstFrameAt == null) peer.firstFrameAt = performance.now();
  };
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(mark);
  else video.addEventListener('loadeddata', mark, { once: true });
}

function wireMedia(media, ctx) {
  media.addEventListener('trackchange', async ({ detail: { kind, track, ended } }) => {
    if (ended) {
      ui.setMediaNotice(`Your ${kind === 'video' ? 'camera' : 'microphone'} stopped working. ` +
        'Pick another device below; you can still see and hear everyone.');
    } else {
      ui.setMediaNotice(media.notice());
      await ctx.call.setTrack(kind, track);
    }
    refreshSelf(media);
    refreshControls(media);
    refreshPickers(media);
    ctx.call.sendMediaState();
  });
  media.addEventListener('mutechange', () => {
    refreshSelf(media);
    refreshControls(media);
    ctx.call.sendMediaState();
  });
  media.addEventListener('devicechange', () => refreshPickers(media));
}

function wireControls(media, ctx, signaling, name, room) {
  ui.els.micToggle().addEventListener('click', () => media.setMuted('audio', !media.muted.audio));
  ui.els.camToggle().addEventListener('click', () => media.setMuted('video', !media.muted.video));

  const onPick = (kind) => async (ev) => {
    const id = ev.target.value;
    if (!id || id === media.currentDevice(kind)) return;
    try {
      await media.switchDevice(kind, id);
      ui.setError(null);
    } catch (err) {
      ui.setError(`Couldn't switch ${kind === 'video' ? 'camera' : 'microphone'}: ${explain(err)}`);
      refreshPickers(media);
    }
  };
  ui.els.camSelect().addEventListener('change', onPick('video'));
  ui.els.micSelect().addEventListener('change', onPick('audio'));

  let screenTrack = null;
  const stopScreen = async () => {
    screenTrack?.stop();
    screenTrack = null;
    ui.els.screenToggle().textContent = 'Share screen';
    await ctx.call.setScreen(null);
  };
  ui.els.screenToggle().addEventListener('click', async () => {
    if (screenTrack) return stopScreen();
    try {
      const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
      screenTrack = stream.getVideoTracks()[0];
      screenTrack.addEventListener('ended', () => { if (screenTrack) stopScreen(); });
      ui.els.screenToggle().textContent = 'Stop sharing';
      await ctx.call.setScreen(screenTrack);
      ui.setError(null);
    } catch (err) {
      screenTrack = null;
      if (err?.name !== 'NotAllowedError') ui.setError(`Couldn't share the screen: ${explain(err)}`);
    }
  });

  ui.els.leave().addEventListener('click', () => {
    signaling.leave();
    ctx.call.closeAll('left');
    media.stop();
    ui.clearRemoteTiles();
    document.getElementById('rejoin-link').href = withToken(`/r/${encodeURIComponent(room)}`);
    ui.showView('left');
  });

  ui.els.chatForm().addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = ui.els.chatInput();
    const text = input.value.trim();
    if (!text) return;
    if (signaling.serverChat) {
      // Stored by the server, then echoed to everyone (us included): shown as pending until then.
      ctx.pendingChat.push({ text, li: ui.appendChat({ from: name, text, self: true, pending: true }) });
      signaling.chat(text);
      input.value = '';
      return;
    }
    const delivered = ctx.call.sendChat(text);
    ui.appendChat({ from: name, text, self: true });
    if (delivered === 0) {
      ui.appendChat({ system: true, text: ctx.call.peers.size ? 'Not delivered: still connecting to the others.' : 'Nobody else is here yet.' });
    }
    input.value = '';
  });
}
