// The live-stream viewer at /watch/ROOM: a WHEP client. It offers to receive
// one audio and one video track, POSTs the offer to /whep/ROOM, and plays what
// the SFU forwards (the room's first camera, or a WHIP publisher). When the
// stream has not started yet it waits; when the connection drops it retries.
// `window.switchboardWatch` is a small debug handle for tests.

const RETRY_MS = 3_000;
// `?token=`: an access token with the subscribe grant, sent as `Authorization: Bearer`.
const token = new URLSearchParams(location.search).get('token');
const auth = token ? { Authorization: `Bearer ${token}` } : {};

const room = decodeURIComponent(location.pathname.split('/')[2] ?? '');
const video = document.getElementById('watch-video');
const stateEl = document.getElementById('watch-state');
const notice = document.getElementById('watch-notice');
const statsEl = document.getElementById('watch-stats');
document.getElementById('watch-room').textContent = `Live: ${room}`;
document.title = `${room} · Watch · Switchboard`;

const watch = { room, pc: null, resource: null, state: 'starting', attempts: 0, error: null };
window.switchboardWatch = watch;

function setState(state, text) {
  watch.state = state;
  stateEl.textContent = text ?? state;
  stateEl.dataset.state = state;
}

function showNotice(text) {
  notice.textContent = text ?? '';
  notice.hidden = !text;
}

async function start() {
  watch.attempts++;
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  watch.pc = pc;
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const stream = new MediaStream();
  video.srcObject = stream;
  pc.ontrack = ({ track }) => {
    stream.addTrack(track);
    video.play().catch(() => {});
  };
  pc.onconnectionstatechange = () => {
    const s = pc.connectionState;
    if (s === 'connected') setState('connected', 'live');
    else if (s === 'failed' || s === 'closed') retry(`connection ${s}`);
    else setState(s);
  };
  setState('connecting', 'connecting…');
  await pc.setLocalDescription(await pc.createOffer());
  let response;
  try {
    response = await fetch(`/whep/${encodeURIComponent(room)}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', ...auth },
      body: pc.localDescription.sdp,
    });
  } catch (err) {
    return retry(`the server cannot be reached (${err.message})`);
  }
  if (response.status === 401 || response.status === 403) {
    // Another try with the same token gets the same answer.
    const text = (await response.text()).trim();
    watch.error = text;
    setState('refused', response.status === 401 ? 'access token needed' : 'not allowed');
    showNotice(response.status === 401 && /expired/.test(text)
      ? `Your access token has expired: ask for a new link. (${text})`
      : response.status === 401
        ? `This stream needs an access token: open the link you were given (it ends in ?token=…). (${text})`
        : `Your access token does not allow watching this stream: ${text}`);
    pc.close();
    watch.pc = null;
    return;
  }
  if (response.status !== 201) {
    const text = (await response.text()).trim();
    return retry(`the server refused: ${response.status} ${text}`);
  }
  watch.resource = response.headers.get('Location');
  await pc.setRemoteDescription({ type: 'answer', sdp: await response.text() });
  showNotice(null);
}

function retry(why) {
  watch.error = why;
  setState('waiting', 'reconnecting…');
  showNotice(`Not playing: ${why}. Trying again…`);
  const pc = watch.pc;
  watch.pc = null;
  pc?.close();
  if (watch.resource) fetch(watch.resource, { method: 'DELETE', headers: auth }).catch(() => {});
  watch.resource = null;
  setTimeout(start, RETRY_MS);
}

/** Frames decoded so far, for the status line and tests. */
watch.framesDecoded = async () => {
  const stats = await watch.pc?.getStats();
  let frames = 0;
  stats?.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded ?? 0; });
  return frames;
};

setInterval(async () => {
  if (!watch.pc) return;
  const frames = await watch.framesDecoded();
  const w = video.videoWidth;
  const h = video.videoHeight;
  statsEl.textContent = frames ? `${w}×${h} · ${frames} frames` : 'waiting for the stream to start…';
}, 1_000);

window.addEventListener('pagehide', () => {
  if (watch.resource) fetch(watch.resource, { method: 'DELETE', headers: auth, keepalive: true }).catch(() => {});
});

// A video element with a source that has no frames yet would hold back the page's load event
// for as long as the stream is absent: start once the page has loaded.
if (document.readyState === 'complete') start().catch((err) => retry(err.message));
else window.addEventListener('load', () => start().catch((err) => retry(err.message)), { once: true });
