// Signaling client: one WebSocket to /ws speaking protocol v1 (docs/protocol.md).
// Joins a room, keeps the connection alive with app-level pings, reconnects with
// backoff when the socket drops and resumes the same peer id with the stored
// {peer, token}. Signals sent while disconnected are buffered and flushed after
// the resume. Everything else is reported as events on the client (an EventTarget).

const PING_INTERVAL_MS = 15_000;
const BACKOFF_FIRST_MS = 400;
const BACKOFF_MAX_MS = 8_000;
const MAX_BUFFERED_SIGNALS = 256;
// Stay this far under the server's advertised message rate and burst.
const RATE_MARGIN = 0.8;
// Refusals after which retrying cannot help: the join needs another token, or an administrator
// removed this peer (docs/protocol.md, "Close codes").
const FINAL_CLOSE_CODES = { 4003: 'kicked', 4004: 'room_closed', 4401: 'unauthorized', 4403: 'forbidden' };
const FINAL_ERROR_CODES = ['unauthorized', 'forbidden', 'kicked', 'room_closed'];

/**
 * States (the `state` property, also sent with every `statechange` event):
 * - `idle`: nothing started yet
 * - `connecting`: opening the first WebSocket
 * - `connected`: socket open, waiting for start() to join (after preconnect())
 * - `joining`: socket open, `join` sent, waiting for `welcome`
 * - `joined`: in the room
 * - `reconnecting`: the socket dropped; waiting to retry (`retryInMs` in the event)
 * - `stopped`: left the room, or can no longer continue (see `reason`)
 *
 * Events: `statechange` {state, detail}, `welcome` {msg, resumed, fresh},
 * `peer_joined` {peer}, `peer_left` {peer, reason}, `signal` {from, description, candidate},
 * `chat` {id, at, from, name, text} and `chat_history` {messages} (rooms that keep chat on the
 * server, `roomSettings.chat_history > 0`), `servererror` {code, message}, `stopped` {reason, message}.
 *
 * `token` is the access token sent with every join (the page's `?token=` by default); servers
 * with an API key refuse joins without one.
 */
export class SignalingClient extends EventTarget {
  constructor({ url = defaultUrl(), room, name, token = pageToken() } = {}) {
    super();
    this.url = url;
    this.room = room;
    this.name = name;
    this.token = token || null;
    this.state = 'idle';
    this.peerId = null;
    this.resume = null; // {peer, token} from the latest welcome
    this.limits = null;
    this.iceServers = [];
    this.ws = null;
    this.attempt = 0;
    this.reconnects = 0; // sockets opened after the first one (for tests)
    this.resumes = 0; // successful resumes (for tests)
    this.outbox = []; // signals waiting for the room (while reconnecting)
    this.holdJoin = false; // preconnect(): socket open, join not sent yet
    // Signals wait here when we would exceed the server's message rate (it
    // drops messages over its limit; a dropped offer would stall a call).
    this.paced = [];
    this.tokens = 0;
    this.tokensAt = 0;
    this.paceTimer = null;
    this.pingTimer = null;
    this.retryTimer = null;
    this.pingId = 0;
    this.lastRx = 0;
    this.stopped = false;
  }

  /**
   * Opens the WebSocket without joining yet, so that the connection is ready
   * by the time the camera is (saves a round trip or two on page load).
   */
  preconnect() {
    if (this.state !== 'idle') return;
    this.holdJoin = true;
    this.connect();
  }

  /** Joins the room (opening the connection first if needed). */
  start() {
    this.holdJoin = false;
    if (this.state === 'idle') this.connect();
    else if (this.ws?.readyState === WebSocket.OPEN && this.state === 'connected') this.sendJoin();
  }

  /** Sends a signal to peer `to`; `payload` is {description} or {candidate}. */
  signal(to, payload) {
    const msg = { type: 'signal', to, ...payload };
    if (this.state === 'joined' && this.ws?.readyState === WebSocket.OPEN) {
      this.paced.push(msg);
      this.drainPaced();
    } else if (!this.stopped) {
      // Keep it for after the resume; the peer ids stay valid if resume works.
      this.outbox.push(msg);
      if (this.outbox.length > MAX_BUFFERED_SIGNALS) this.outbox.shift();
    }
  }

  /**
   * Sends a chat line through the server (rooms that keep chat); it comes back as a `chat` event
   * once stored. Paced like signals; kept for after a resume while disconnected.
   */
  chat(text) {
    const msg = { type: 'chat', text };
    if (this.state === 'joined' && this.ws?.readyState === WebSocket.OPEN) {
      this.paced.push(msg);
      this.drainPaced();
    } else if (!this.stopped) {
      this.outbox.push(msg);
      if (this.outbox.length > MAX_BUFFERED_SIGNALS) this.outbox.shift();
    }
  }

  /** Whether this room keeps its chat on the server (known from `welcome`). */
  get serverChat() {
    return (this.roomSettings?.chat_history ?? 0) > 0;
  }

  /** Leaves the room for good and closes the socket normally. */
  leave() {
    if (this.state === 'joined') this.send({ type: 'leave' });
    this.stop('left');
  }

  /** Drops the current socket as if the network failed (used by tests and on liveness loss). */
  dropSocket() {
    if (this.ws) {
      const ws = this.ws;
      this.detach(ws);
      try { ws.close(4100, 'client drop'); } catch { /* already closing */ }
      this.onSocketGone(1006, 'dropped');
    }
  }

  // --- internals -----------------------------------------------------------

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.stopped) return;
    this.setState(this.attempt === 0 && !this.peerId ? 'connecting' : 'reconnecting', { attempt: this.attempt });
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.onSocketGone(1006, String(err));
      return;
    }
    if (this.peerId || this.attempt > 0) this.reconnects++;
    this.ws = ws;
    ws.onopen = () => {
      this.lastRx = Date.now();
      this.startPings();
      if (this.holdJoin) this.setState('connected');
      else this.sendJoin();
    };
    ws.onmessage = (ev) => {
      this.lastRx = Date.now();
      this.onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.detach(ws);
      this.onSocketGone(ev.code, ev.reason);
    };
    ws.onerror = () => { /* onclose follows and handles it */ };
  }

  drainPaced() {
    clearTimeout(this.paceTimer);
    this.paceTimer = null;
    const rate = (this.limits?.messages_per_second ?? 50) * RATE_MARGIN;
    const burst = Math.max(1, (this.limits?.message_burst ?? 100) * RATE_MARGIN);
    const now = performance.now();
    this.tokens = Math.min(burst, this.tokens + ((now - this.tokensAt) / 1000) * rate);
    this.tokensAt = now;
    while (this.paced.length && this.tokens >= 1) {
      if (!this.send(this.paced[0])) return; // socket gone: onSocketGone keeps them
      this.paced.shift();
      this.tokens -= 1;
    }
    if (this.paced.length) {
      this.paceTimer = setTimeout(() => this.drainPaced(), Math.ceil(((1 - this.tokens) / rate) * 1000));
    }
  }

  joinMessage() {
    const join = { type: 'join', v: 1, room: this.room, name: this.name };
    if (this.token) join.token = this.token;
    return join;
  }

  sendJoin() {
    const join = this.joinMessage();
    if (this.resume) join.resume = this.resume;
    this.setState('joining', { resuming: !!this.resume });
    this.send(join);
  }

  detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    if (this.ws === ws) this.ws = null;
    clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  onSocketGone(code, reason) {
    if (this.stopped) return;
    // Unsent signals go out after the resume, in order.
    clearTimeout(this.paceTimer);
    this.outbox = [...this.paced, ...this.outbox].slice(-MAX_BUFFERED_SIGNALS);
    this.paced = [];
    if (code === 4000) {
      // Another connection resumed this peer: that one is the live session now.
      this.stop('replaced');
      return;
    }
    if (FINAL_CLOSE_CODES[code]) {
      this.stop(FINAL_CLOSE_CODES[code], this.lastError?.message ?? reason);
      return;
    }
    this.attempt++;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (this.attempt - 1));
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    this.setState('reconnecting', { code, reason, retryInMs: delay, attempt: this.attempt });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  startPings() {
    clearInterval(this.pingTimer);
    const idle = this.limits?.idle_timeout_secs;
    const every = idle ? Math.min(PING_INTERVAL_MS, (idle * 1000) / 3) : PING_INTERVAL_MS;
    this.pingTimer = setInterval(() => {
      // A socket that has been silent for two ping periods is dead even if the
      // browser has not noticed (half-open TCP): drop it and resume.
      if (Date.now() - this.lastRx > 2 * every + 5_000) {
        this.dropSocket();
        return;
      }
      this.send({ type: 'ping', id: ++this.pingId });
    }, every);
  }

  send(msg) {
    if (this.ws?.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  onFrame(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn('signaling: ignoring a frame that is not JSON');
      return;
    }
    switch (msg.type) {
      case 'welcome': return this.onWelcome(msg);
      case 'peer_joined': return this.emit('peer_joined', { peer: msg.peer });
      case 'peer_left': return this.emit('peer_left', { peer: msg.peer, reason: msg.reason });
      case 'signal': return this.emit('signal', msg);
      case 'sfu': return this.emit('sfu', msg);
      case 'chat': return this.emit('chat', msg);
      case 'chat_history': return this.emit('chat_history', msg);
      case 'pong': return;
      case 'error': return this.onServerError(msg);
      default: console.warn('signaling: unknown frame type', msg.type);
    }
  }

  onWelcome(msg) {
    const previous = this.peerId;
    const resumed = msg.resumed === true && previous === msg.peer;
    this.peerId = msg.peer;
    this.resume = { peer: msg.peer, token: msg.resume_token };
    this.limits = msg.limits ?? null;
    this.roomSettings = msg.room_settings ?? null;
    this.iceServers = mapIceServers(msg.ice_servers);
    this.attempt = 0;
    if (resumed) this.resumes++;
    // A fresh session invalidates anything queued for the old peer id.
    if (!resumed) {
      this.outbox = [];
      this.paced = [];
    }
    this.tokens = Math.max(1, (this.limits?.message_burst ?? 100) * RATE_MARGIN) - 1; // the join
    this.tokensAt = performance.now();
    this.setState('joined', { peer: msg.peer, resumed });
    this.startPings();
    // What waited for the resume goes first, then whatever the app sends now.
    this.paced.push(...this.outbox);
    this.outbox = [];
    this.emit('welcome', { msg, resumed, fresh: !resumed, previous });
    this.drainPaced();
  }

  onServerError(msg) {
    const { code, message } = msg;
    if (code === 'resume_failed') {
      // Grace ran out or token unknown: start over with a new peer id.
      this.resume = null;
      this.outbox = [];
      this.emit('servererror', { code, message });
      this.send(this.joinMessage());
      return;
    }
    this.lastError = { code, message };
    this.emit('servererror', { code, message });
    if (FINAL_ERROR_CODES.includes(code)) {
      this.stop(code, message);
      return;
    }
    if (this.state === 'joining') {
      // The join itself was refused (room full, bad name, ...): retrying would not help.
      if (['room_full', 'bad_room_name', 'bad_display_name', 'unsupported_version'].includes(code)) {
        this.stop(code);
      }
    }
  }

  stop(reason, message) {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    const ws = this.ws;
    if (ws) {
      this.detach(ws);
      try { ws.close(1000, reason); } catch { /* ignore */ }
    }
    this.outbox = [];
    this.paced = [];
    clearTimeout(this.paceTimer);
    this.setState('stopped', { reason, message });
    this.emit('stopped', { reason, message });
  }

  setState(state, detail = {}) {
    this.state = state;
    this.emit('statechange', { state, ...detail });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** The access token in the page's address (`?token=`), or null. */
export function pageToken(loc = window.location) {
  return new URLSearchParams(loc.search).get('token') || null;
}

/**
 * The grants a token claims ({publish, subscribe, admin}), read without verifying it (only the
 * server can): the page uses them to avoid asking for what the server would refuse. Null when
 * there is no token or it cannot be read.
 */
export function tokenGrants(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(payload));
    const g = claims.grants ?? {};
    return { publish: g.publish === true, subscribe: g.subscribe === true, admin: g.admin === true };
  } catch {
    return null;
  }
}

/** `path` with the page's `?token=` carried over, for links to other pages of the app. */
export function withToken(path, loc = window.location) {
  const token = pageToken(loc);
  return token ? `${path}${path.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}` : path;
}

/** ws: or wss: URL of /ws on the page's own host. */
export function defaultUrl(loc = window.location) {
  const proto = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${loc.host}/ws`;
}

/** Maps `ice_servers` from `welcome` to an RTCConfiguration `iceServers` list. */
export function mapIceServers(list) {
  if (!Array.isArray(list)) return [];
  return list
    .filter((s) => s && (typeof s.urls === 'string' || Array.isArray(s.urls)))
    .map((s) => {
      const out = { urls: s.urls };
      if (s.username != null) out.username = s.username;
      if (s.credential != null) out.credential = s.credential;
      return out;
    });
}
