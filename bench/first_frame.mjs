// Whole-system benchmark: time to first remote video frame.
//
// Measured: a second page opens /r/NAME (a first page is already in the room)
// and we take the time from the start of that navigation to the first remote
// video frame it presents (requestVideoFrameCallback, recorded by the app as
// `firstFrameAt` on the peer). Includes page load, getUserMedia, the WebSocket,
// signaling, ICE, DTLS and decoding.
//
// Anchor, in the same browser: a trivial page that, on load, connects two
// RTCPeerConnections to each other inside the page (no server, no network
// hop for signaling) and shows the remote video; same clock, same fake camera.
// The ratio says how much the app and its signaling add on top of what
// WebRTC itself needs on this machine.
//
// Env: SWITCHBOARD_BIN (server binary), RUNS (default 7).

import { launchBrowser, startServer, pollUntil, roomName } from '../tests/e2e/lib/harness.mjs';

const RUNS = Number(process.env.RUNS ?? 7);

const ANCHOR_URL = 'http://127.0.0.1:9/anchor.html';
const ANCHOR_HTML = `<!doctype html><meta charset="utf-8"><title>anchor</title><body><script type="module">
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: true, video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24, max: 30 } } });
  const a = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  const b = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  const video = document.createElement('video');
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.append(video);
  b.ontrack = (e) => {
    if (e.track.kind !== 'video') return;
    video.srcObject = new MediaStream([e.track]);
    video.play().catch(() => {});
    video.requestVideoFrameCallback(() => { window.firstFrameAt = performance.now(); });
  };
  for (const t of stream.getTracks()) a.addTrack(t, stream);
  a.createDataChannel('chat', { negotiated: true, id: 0 });
  b.createDataChannel('chat', { negotiated: true, id: 0 });
  await a.setLocalDescription();
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription();
  await a.setRemoteDescription(b.localDescription);
</script>`;

function median(xs) {
  const s = [...xs].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function appRun(browser, base) {
  const room = roomName('bench');
  const first = await browser.newContext();
  const second = await browser.newContext();
  try {
    const p1 = await first.newPage();
    await p1.goto(`${base}/r/${room}?name=First`);
    await pollUntil(() => p1.evaluate(() => window.switchboard?.signalingState === 'joined'), {
      what: 'first page joined', intervalMs: 50,
    });
    const p2 = await second.newPage();
    await p2.goto(`${base}/r/${room}?name=Second`);
    return await pollUntil(() => p2.evaluate(() => {
      for (const p of window.switchboard?.peers?.values() ?? []) {
        if (p.firstFrameAt != null) {
          const nav = performance.getEntriesByType('navigation')[0];
          return {
            firstFrame: p.firstFrameAt,
            steps: {
              'page loaded': nav?.loadEventEnd,
              'media acquired': window.switchboard.marks.media,
              welcome: window.switchboard.marks.welcome,
              'offer sent': p.timeline.offerSent,
              'answer received': p.timeline.answerReceived,
              'ICE connected': p.timeline.iceConnected,
              'first frame': p.firstFrameAt,
            },
          };
        }
      }
      return null;
    }), { what: 'first remote frame on the second page', intervalMs: 50, timeoutMs: 30_000 });
  } finally {
    await first.close();
    await second.close();
  }
}

async function anchorRun(browser) {
  const ctx = await browser.newContext();
  try {
    const page = await ctx.newPage();
    await page.route(ANCHOR_URL, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: ANCHOR_HTML }));
    await page.goto(ANCHOR_URL);
    return await pollUntil(() => page.evaluate(() => window.firstFrameAt ?? null), {
      what: 'first frame in the anchor page', intervalMs: 50, timeoutMs: 30_000,
    });
  } finally {
    await ctx.close();
  }
}

const server = await startServer();
const browser = await launchBrowser();
try {
  // One warm-up of each so that neither pays for first-use costs (codec init, caches).
  await appRun(browser, server.url);
  await anchorRun(browser);
  const app = [];
  const anchor = [];
  for (let i = 0; i < RUNS; i++) {
    // Interleaved so that drift on the machine hits both alike.
    app.push(await appRun(browser, server.url));
    anchor.push(await anchorRun(browser));
  }
  const fmt = (xs) => xs.map((x) => x.toFixed(0)).join(' ');
  const steps = Object.keys(app[0].steps);
  const breakdown = steps.map((k) => `${k} ${median(app.map((r) => r.steps[k] ?? NaN)).toFixed(0)}`).join(', ');
  const appMs = app.map((r) => r.firstFrame);
  const mApp = median(appMs);
  const mAnchor = median(anchor);
  console.log(`runs: ${RUNS} (after one warm-up each), ms from navigation start to first remote frame shown`);
  console.log(`switchboard  /r/NAME second page : median ${mApp.toFixed(0)} ms   [${fmt(appMs)}]`);
  console.log(`  (medians, ms since navigation start: ${breakdown})`);
  console.log(`anchor       in-page pc pair     : median ${mAnchor.toFixed(0)} ms   [${fmt(anchor)}]`);
  console.log(`ratio switchboard / anchor       : ${(mApp / mAnchor).toFixed(2)}`);
} finally {
  await browser.close();
  await server.stop();
}
