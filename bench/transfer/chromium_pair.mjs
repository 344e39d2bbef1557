// Anchor: two RTCPeerConnections inside one Chromium page move SIZE_MB over one data channel,
// 16 KiB messages, bufferedAmount kept under 1 MiB. Prints `chromium MB/s: X`.
import { launchBrowser } from '../../tests/e2e/lib/harness.mjs';

const SIZE = Number(process.env.SIZE_MB ?? 100) * 1000 * 1000;

const html = `<!doctype html><meta charset="utf-8"><script type="module">
  const SIZE = ${SIZE}, CHUNK = 16 * 1024, HIGH = 1024 * 1024;
  const a = new RTCPeerConnection(), b = new RTCPeerConnection();
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  const channel = a.createDataChannel('bytes');
  channel.binaryType = 'arraybuffer';
  let received = 0, sent = 0, started = 0;
  b.ondatachannel = (e) => {
    e.channel.binaryType = 'arraybuffer';
    e.channel.onmessage = (m) => {
      received += m.data.byteLength;
      if (received >= SIZE) window.result = SIZE / ((performance.now() - started) / 1000) / 1e6;
    };
  };
  const payload = new Uint8Array(CHUNK);
  const fill = () => {
    while (sent < SIZE && channel.bufferedAmount < HIGH) {
      const n = Math.min(CHUNK, SIZE - sent);
      channel.send(n === CHUNK ? payload : payload.subarray(0, n));
      sent += n;
    }
  };
  channel.bufferedAmountLowThreshold = HIGH / 2;
  channel.onbufferedamountlow = fill;
  channel.onopen = () => { started = performance.now(); fill(); };
  await a.setLocalDescription();
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription();
  await a.setRemoteDescription(b.localDescription);
</script>`;

// Without getUserMedia Chromium hides host addresses behind mDNS names, which nothing here resolves.
const browser = await launchBrowser({ fakeUi: false, args: ['--disable-features=WebRtcHideLocalIpsWithMdns'] });
try {
  const page = await browser.newPage();
  await page.route('http://127.0.0.1:9/pair.html', (route) =>
    route.fulfill({ status: 200, contentType: 'text/html', body: html }));
  await page.goto('http://127.0.0.1:9/pair.html');
  await page.waitForFunction(() => window.result !== undefined, null, { timeout: 600_000 });
  const rate = await page.evaluate(() => window.result);
  console.log(`chromium MB/s: ${rate.toFixed(1)}`);
} finally {
  await browser.close();
}
