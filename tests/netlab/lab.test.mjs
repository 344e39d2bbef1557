// The connectivity lab: real peers in network namespaces behind real NATs and firewalls
// (tests/netlab/net.sh builds them; run.sh runs this file). Each case asserts the candidate pair
// that carried the data, for the native peer (`switchboard send`/`recv`) through Switchboard's
// server, and for two Chromium pages through Switchboard's TURN and, as the anchor, through
// coturn, in the same run. The matrix of results is printed at the end and written to
// $NETLAB_RESULTS (markdown) when set.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { mkdtempSync, writeFileSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
// playwright-core comes from the browser tests' node_modules (npm ci in tests/e2e).
const { chromium } = createRequire(path.join(HERE, '../e2e/package.json'))('playwright-core');

const PREFIX = process.env.NETLAB_PREFIX;
const BIN = process.env.SWITCHBOARD_BIN;
const DELAYER = process.env.NETLAB_DELAYER;
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const NET = path.join(HERE, 'net.sh');
const MB = 1_000_000;

// Addresses net.sh puts on the internet namespace's loopback.
const OURS = { name: 'our TURN', http: 'http://203.0.113.20:443' };
const ANCHOR = { name: 'coturn', http: 'http://203.0.113.21:443' };
const COTURN_IP = '203.0.113.11';
const COTURN_USER = 'lab';
const COTURN_PASS = 'labpass';

const tmp = mkdtempSync(path.join(tmpdir(), 'netlab-'));
const procs = [];
const results = [];

const ns = (home) => `${PREFIX}-${home}`;
const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Starts `cmd` inside namespace `home`; output is kept on `.out`. */
function run(home, cmd, args, { label = cmd } = {}) {
  const proc = spawn('ip', ['netns', 'exec', ns(home), cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], cwd: tmp });
  proc.out = '';
  proc.label = label;
  proc.stdout.on('data', (d) => { proc.out += d; });
  proc.stderr.on('data', (d) => { proc.out += d; });
  proc.done = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  procs.push(proc);
  return proc;
}

async function waitForOutput(proc, pattern, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(proc.out)) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      throw new Error(`${proc.label}: no ${pattern} within ${timeoutMs} ms (exit ${proc.exitCode}):\n${proc.out}`);
    }
    await sleep(50);
  }
}

async function pollUntil(fn, { timeoutMs = 30_000, intervalMs = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err.message;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
    await sleep(intervalMs);
  }
}

function impair(home, { loss = 0, delayMs = 0, jitterMs = 0 }) {
  execFileSync(NET, ['impair', PREFIX, home, String(loss), String(delayMs), String(jitterMs), DELAYER],
    { stdio: 'inherit', env: { ...process.env, NETLAB_LOGS: tmp } });
}
function clearImpairment(home) {
  execFileSync(NET, ['clear', PREFIX, home], { stdio: 'inherit' });
}

// ---------------------------------------------------------------------------------------------
// Servers, all in the internet namespace.

// Two servers share the namespace: each SFU media port (unused: rooms of two are p2p) on a free
// port instead of the default 7882.
const MEDIA = ['--media', '127.0.0.1:0'];

before(async () => {
  assert.ok(PREFIX && BIN && DELAYER, 'run through tests/netlab/run.sh (NETLAB_PREFIX, SWITCHBOARD_BIN, NETLAB_DELAYER)');
  // Switchboard: signaling on .20:443, STUN/TURN on .10:443 (UDP and TCP), so that a network
  // that lets only TCP 443 out still reaches both. Every lab address is a documentation address,
  // which the TURN peer policy refuses by default: the lab's ranges are allowed explicitly.
  const ours = run('inet', BIN, ['serve', '--data-dir', 'none', '--http', '203.0.113.20:443', '--dangerous-open-rooms', '--turn', '203.0.113.10:443',
    '--allow-peer', '198.51.100.0/24', '--allow-peer', '203.0.113.0/24', ...MEDIA], { label: 'switchboard serve' });
  // The anchor: coturn on .11:443 (UDP and TCP), announced to browsers by a second Switchboard
  // (signaling only) through [[ice_servers]].
  const coturn = run('inet', 'turnserver', ['-n', `--listening-ip=${COTURN_IP}`, `--relay-ip=${COTURN_IP}`,
    '--listening-port=443', '--lt-cred-mech', `--user=${COTURN_USER}:${COTURN_PASS}`, '--realm=netlab',
    '--fingerprint', '--no-tls', '--no-dtls', '--no-cli', '--log-file=stdout', '--simple-log',
    '--denied-peer-ip=10.0.0.0-10.255.255.255', '--no-multicast-peers'], { label: 'coturn' });
  const config = path.join(tmp, 'anchor.toml');
  writeFileSync(config, `[[ice_servers]]
urls = ["stun:${COTURN_IP}:443", "turn:${COTURN_IP}:443?transport=udp", "turn:${COTURN_IP}:443?transport=tcp"]
username = "${COTURN_USER}"
credential = "${COTURN_PASS}"
`);
  const anchor = run('inet', BIN, ['serve', '--data-dir', 'none', '--no-turn', '--http', '203.0.113.21:443', '--dangerous-open-rooms', '--config', config, ...MEDIA], { label: 'anchor serve' });
  await waitForOutput(ours, /listening on http/);
  await waitForOutput(anchor, /listening on http/);
  await waitForOutput(coturn, /Total General servers/);
  await sleep(300);
});

after(async () => {
  for (const proc of procs) if (proc.exitCode === null) proc.kill('SIGKILL');
  const table = matrix();
  console.log(`\n${table}`);
  if (process.env.NETLAB_RESULTS) writeFileSync(process.env.NETLAB_RESULTS, `${table}\n`);
  rmSync(tmp, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// The native peer.

let codeNumber = 100;

/**
 * `switchboard send` in `from`, `switchboard recv` in `to`, through our server. Returns the
 * candidate pairs each side reports, the receiver's time to connected and rate.
 */
async function nativeTransfer(from, to, size) {
  const name = `file-${codeNumber}.bin`;
  const data = randomBytes(size);
  writeFileSync(path.join(tmp, name), data);
  const code = `${codeNumber++}-tiger-orbit`;
  const server = ['--server', OURS.http];
  const sender = run(from, BIN, ['send', name, '--code', code, ...server], { label: `send in ${from}` });
  await waitForOutput(sender, /Code:/);
  const out = path.join(tmp, `out-${code}`);
  const receiver = run(to, BIN, ['recv', code, '--yes', '--out', out, ...server], { label: `recv in ${to}` });
  const timer = setTimeout(() => { sender.kill('SIGKILL'); receiver.kill('SIGKILL'); }, 600_000);
  const [r, s] = await Promise.all([receiver.done, sender.done]);
  clearTimeout(timer);
  assert.equal(r.code, 0, `recv failed:\n${receiver.out}\n--- sender ---\n${sender.out}`);
  assert.equal(s.code, 0, `send failed:\n${sender.out}`);
  assert.equal(sha256(readFileSync(path.join(out, name))), sha256(data), 'received file matches');
  const pair = (proc) => {
    const m = proc.out.match(/Candidate pair: (\w+) -> (\w+)( \(TURN over TCP\))?\./);
    assert.ok(m, `${proc.label} names its candidate pair:\n${proc.out}`);
    return { local: m[1], remote: m[2], tcp: Boolean(m[3]) };
  };
  const summary = receiver.out.match(/Received .* in ([\d.]+) s .*connected after (\d+) ms/);
  assert.ok(summary, receiver.out);
  return {
    from: pair(sender),
    to: pair(receiver),
    connectedMs: Number(summary[2]),
    mbps: size / MB / Math.max(Number(summary[1]), 0.05),
  };
}

// ---------------------------------------------------------------------------------------------
// Chromium.

const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  // No name resolution in the lab (no DNS server). The servers are IP literals, yet Chromium
  // passes TURN-over-TCP addresses through the resolver: they must be excluded.
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 203.0.113.10 , EXCLUDE 203.0.113.11 , EXCLUDE 203.0.113.20 , EXCLUDE 203.0.113.21',
  // Plain-HTTP origins other than localhost are not secure contexts: getUserMedia and WebCrypto
  // need this for the lab's server addresses.
  `--unsafely-treat-insecure-origin-as-secure=${OURS.http},${ANCHOR.http}`,
];

// Records every RTCPeerConnection the page makes and when the first one connected.
const INIT_SCRIPT = `(() => {
  const Native = window.RTCPeerConnection;
  const lab = window.__netlab = { pcs: [], connectedAt: null };
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      lab.pcs.push(this);
      this.addEventListener('connectionstatechange', () => {
        if (this.connectionState === 'connected' && lab.connectedAt === null) lab.connectedAt = performance.now();
      });
    }
  };
})();`;

/** A headless Chromium running inside namespace `home`. */
async function browserIn(home) {
  const wrapper = path.join(tmp, `chromium-${home}.sh`);
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns(home)} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
  return chromium.launch({ executablePath: wrapper, headless: true, args: CHROMIUM_ARGS });
}

async function openPage(browser, url) {
  const context = await browser.newContext();
  await context.addInitScript(INIT_SCRIPT);
  const page = await context.newPage();
  page.logs = [];
  page.on('console', (m) => { page.logs.push(`${m.type()}: ${m.text()}`); if (page.logs.length > 200) page.logs.shift(); });
  page.on('pageerror', (e) => page.logs.push(`pageerror: ${e}`));
  await page.goto(url);
  return page;
}

/** The connected peer connection's selected pair, with the local relay's transport. */
function selectedPair(page) {
  return page.evaluate(async () => {
    const pc = [...window.__netlab.pcs].reverse().find((p) => p.connectionState === 'connected');
    if (!pc) return null;
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((r) => { if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId); });
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return { local: local?.candidateType, remote: remote?.candidateType, tcp: local?.relayProtocol === 'tcp' || local?.relayProtocol === 'tls' };
  });
}

const connectedAt = (page) => page.evaluate(() => window.__netlab.connectedAt);

/** Video statistics of the page's connected call. */
function videoStats(page) {
  return page.evaluate(async () => {
    const pc = [...window.__netlab.pcs].reverse().find((p) => p.connectionState === 'connected');
    const out = { framesDecoded: 0, nackCount: 0, packetsLost: 0, retransmitted: 0 };
    if (!pc) return out;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        out.framesDecoded += r.framesDecoded ?? 0;
        out.nackCount += r.nackCount ?? 0;
        out.packetsLost += r.packetsLost ?? 0;
        out.retransmitted += r.retransmittedPacketsReceived ?? 0;
      }
    });
    return out;
  });
}

/**
 * Two pages in room NAME of the p2p app at `server`, one in each home. Resolves when both are
 * connected and decoding; returns the pages, their pairs and the second page's time from
 * navigation to connected.
 */
async function chromiumCall(browsers, server, room, settle = () => true) {
  // mode=p2p: the case is about the path between the two browsers, never through an SFU.
  const first = await openPage(browsers[0], `${server.http}/r/${room}?name=first&mode=p2p`);
  const second = await openPage(browsers[1], `${server.http}/r/${room}?name=second&mode=p2p`);
  const pages = [first, second];
  try {
    for (const page of pages) {
      await pollUntil(async () => {
        const pair = await selectedPair(page);
        return pair && (await videoStats(page)).framesDecoded > 0;
      }, { timeoutMs: 30_000, what: `decoding video through ${server.name}` });
    }
  } catch (err) {
    for (const page of pages) err.message += `\n--- page console ---\n${page.logs.slice(-40).join('\n')}`;
    throw err;
  }
  // Chromium may report a relayed pair first (it succeeded first) and move to a better one once
  // the other checks succeed: give the selection a few seconds to settle, then take what it is.
  const pairs = await pollUntil(async () => {
    const now = await Promise.all(pages.map(selectedPair));
    return settle(now) ? now : false;
  }, { timeoutMs: 10_000, intervalMs: 250, what: 'the selected pairs to settle' })
    .catch(() => Promise.all(pages.map(selectedPair)));
  return { pages, pairs, connectedMs: await connectedAt(second) };
}

async function closePages(pages) {
  for (const page of pages) await page.context().close().catch(() => {});
}

/** /send in the first home's browser, /recv/CODE?yes=1 in the second; 20 MB, hash checked. */
async function chromiumTransfer(browsers, server, file, digest) {
  const code = `${codeNumber++}-otter-river`;
  const sender = await openPage(browsers[0], `${server.http}/send?code=${code}`);
  await sender.setInputFiles('#file-input', file);
  const state = (page) => page.evaluate(() => {
    const s = window.switchboardShare;
    return s && JSON.parse(JSON.stringify({ ...s, blobs: undefined }));
  });
  await pollUntil(async () => (await state(sender))?.state === 'waiting', { what: 'the sender to hash and wait' });
  const receiver = await openPage(browsers[1], `${server.http}/recv/${code}?yes=1`);
  let pair = null;
  const started = Date.now();
  const done = await pollUntil(async () => {
    const s = await state(receiver);
    if (!pair) pair = await selectedPair(receiver);
    if (s && ['error', 'wrong_code', 'cancelled', 'interrupted'].includes(s.state)) throw new Error(`receiver: ${s.state} ${s.error}`);
    return s?.state === 'done' && s;
  }, { timeoutMs: 600_000, intervalMs: 250, what: `the /recv page to finish through ${server.name}` });
  const connected = await connectedAt(receiver);
  const elapsed = (Date.now() - started) / 1000;
  assert.equal(done.files[0].computedSha256, digest, 'the page verified the file');
  const pages = [sender, receiver];
  const senderPair = await selectedPair(sender).catch(() => null);
  await closePages(pages);
  // The page's own clock of the transfer when it keeps one, else ours (from page load).
  const secs = done.elapsedMs ? done.elapsedMs / 1000 : elapsed - connected / 1000;
  return { pairs: [senderPair ?? pair, pair], connectedMs: connected, mbps: readFileSync(file).length / MB / secs };
}

// ---------------------------------------------------------------------------------------------
// Assertions on candidate pairs.

const fmt = (p) => (p ? `${p.local} → ${p.remote}${p.tcp ? ' (TCP)' : ''}` : '?');
const relayed = (p) => p.local === 'relay' || p.remote === 'relay';

function expectDirect(pairs, who) {
  for (const p of pairs) {
    assert.ok(p, `${who}: a selected pair`);
    assert.ok(!relayed(p), `${who}: no relay expected, got ${fmt(p)}`);
    assert.ok(['srflx', 'prflx'].includes(p.local) || ['srflx', 'prflx'].includes(p.remote),
      `${who}: a NAT-mapped (srflx/prflx) end expected, got ${fmt(p)}`);
  }
}
function expectRelayed(pairs, who) {
  for (const p of pairs) {
    assert.ok(p, `${who}: a selected pair`);
    assert.ok(relayed(p), `${who}: a relay expected, got ${fmt(p)}`);
  }
}
function expectTcpRelay(pair, who) {
  assert.ok(pair, `${who}: a selected pair`);
  assert.equal(pair.local, 'relay', `${who}: the UDP-blocked side must relay, got ${fmt(pair)}`);
  assert.ok(pair.tcp, `${who}: its relay must be reached over TCP, got ${fmt(pair)}`);
}

function record(caseName, column, row) {
  results.push({ caseName, column, ...row });
}

// ---------------------------------------------------------------------------------------------
// The cases.

const CASES = [
  {
    id: 'cone-cone', title: 'cone ↔ cone', homes: ['a', 'b'], expect: expectDirect,
    settle: (pairs) => pairs.every((p) => p && !relayed(p)),
  },
  { id: 'sym-sym', title: 'symmetric ↔ symmetric', homes: ['c', 'd'], expect: expectRelayed },
  { id: 'sym-cone', title: 'symmetric ↔ cone', homes: ['c', 'a'], expect: expectRelayed },
  {
    id: 'corp-cone', title: 'UDP-blocked (TCP 443 only) ↔ cone', homes: ['e', 'a'],
    expect: (pairs, who) => expectTcpRelay(pairs[0], `${who} (corporate side)`),
  },
];

for (const c of CASES) {
  test(`${c.title}: the selected pair is as expected`, { timeout: 180_000 }, async (t) => {
    await t.test('native peer (switchboard send/recv)', async () => {
      const r = await nativeTransfer(c.homes[0], c.homes[1], 1 * MB);
      record(c.title, 'native', { pairs: [r.from, r.to], connectedMs: r.connectedMs });
      c.expect([r.from, r.to], 'native');
    });
    const browsers = [await browserIn(c.homes[0]), await browserIn(c.homes[1])];
    try {
      for (const server of [OURS, ANCHOR]) {
        await t.test(`Chromium via ${server.name}`, async () => {
          const call = await chromiumCall(browsers, server, `${c.id}-${server === OURS ? 'ours' : 'anchor'}-${process.pid}`, c.settle);
          record(c.title, server.name, { pairs: call.pairs, connectedMs: call.connectedMs });
          await closePages(call.pages);
          c.expect(call.pairs, `Chromium via ${server.name}`);
        });
      }
    } finally {
      await Promise.all(browsers.map((b) => b.close().catch(() => {})));
    }
  });
}

// A transfer across the relay (symmetric home c to cone home a) while home a's link drops 5 % of
// the packets each way and holds its outgoing ones 50 ms (± 5 ms). Loss-based congestion control
// moves about 0.1 MB/s through that (docs/connectivity.md), so the test command sends 2 MB; the
// documented run sends the 20 MB (NETLAB_TRANSFER_MB=20).
const TRANSFER_MB = Number(process.env.NETLAB_TRANSFER_MB ?? 2);
const TRANSFER = { title: `${TRANSFER_MB} MB, 5 % loss + 50 ms delay (sym → cone)`, homes: ['c', 'a'], size: TRANSFER_MB * MB };

test(`${TRANSFER.title}: completes with matching hashes`, { timeout: 1_800_000 }, async (t) => {
  impair('a', { loss: 5, delayMs: 50, jitterMs: 5 });
  try {
    await t.test('native peer (switchboard send/recv)', async () => {
      const r = await nativeTransfer(TRANSFER.homes[0], TRANSFER.homes[1], TRANSFER.size);
      record(TRANSFER.title, 'native', { pairs: [r.from, r.to], connectedMs: r.connectedMs, mbps: r.mbps });
      expectRelayed([r.from, r.to], 'native');
    });
    const file = path.join(tmp, 'browser-20mb.bin');
    const data = randomBytes(TRANSFER.size);
    writeFileSync(file, data);
    const digest = sha256(data);
    const browsers = [await browserIn(TRANSFER.homes[0]), await browserIn(TRANSFER.homes[1])];
    try {
      for (const server of [OURS, ANCHOR]) {
        await t.test(`Chromium via ${server.name} (/send → /recv)`, async () => {
          const r = await chromiumTransfer(browsers, server, file, digest);
          record(TRANSFER.title, server.name, r);
          expectRelayed(r.pairs.filter(Boolean), `Chromium via ${server.name}`);
        });
      }
    } finally {
      await Promise.all(browsers.map((b) => b.close().catch(() => {})));
    }
  } finally {
    clearImpairment('a');
  }
});

// A video call across the relay while home a's link drops 3 % of the packets each way: video
// must keep decoding (NACK/RTX and keyframe requests at work).
const CALL = { title: 'video call, 3 % loss (sym ↔ cone)', homes: ['c', 'a'], seconds: 6 };

test(`${CALL.title}: keeps decoding frames`, { timeout: 180_000 }, async (t) => {
  const browsers = [await browserIn(CALL.homes[0]), await browserIn(CALL.homes[1])];
  try {
    for (const server of [OURS, ANCHOR]) {
      await t.test(`Chromium via ${server.name}`, async () => {
        impair('a', { loss: 3 });
        try {
          const call = await chromiumCall(browsers, server, `call-${server === OURS ? 'ours' : 'anchor'}-${process.pid}`);
          const before = await Promise.all(call.pages.map(videoStats));
          await sleep(CALL.seconds * 1000);
          const later = await Promise.all(call.pages.map(videoStats));
          await closePages(call.pages);
          const fps = later.map((s, i) => (s.framesDecoded - before[i].framesDecoded) / CALL.seconds);
          const nacks = later.reduce((sum, s) => sum + s.nackCount, 0);
          const lost = later.reduce((sum, s) => sum + s.packetsLost, 0);
          record(CALL.title, server.name, { pairs: call.pairs, connectedMs: call.connectedMs, fps: Math.min(...fps), nacks, lost });
          expectRelayed(call.pairs, `Chromium via ${server.name}`);
          for (const f of fps) assert.ok(f >= 5, `each page keeps decoding (${fps.map((x) => x.toFixed(1)).join(', ')} frames/s)`);
          assert.ok(lost > 0, 'the loss was real (packetsLost > 0)');
        } finally {
          clearImpairment('a');
        }
      });
    }
  } finally {
    await Promise.all(browsers.map((b) => b.close().catch(() => {})));
  }
});

// ---------------------------------------------------------------------------------------------
// The matrix.

function matrix() {
  const columns = ['native', OURS.name, ANCHOR.name];
  const titles = [...new Set(results.map((r) => r.caseName))];
  const cell = (r) => {
    if (!r) return 'n/a';
    const pairs = r.pairs.map(fmt).join(' / ');
    const extra = [];
    if (r.connectedMs != null) extra.push(`${Math.round(r.connectedMs)} ms`);
    if (r.mbps != null) extra.push(`${r.mbps.toFixed(2)} MB/s`);
    if (r.fps != null) extra.push(`${r.fps.toFixed(1)} fps, ${r.lost} lost, ${r.nacks} NACKs`);
    return `${pairs}; ${extra.join(', ')}`;
  };
  const lines = [
    '| case | native peer via our server | Chromium via our TURN | Chromium via coturn |',
    '|---|---|---|---|',
  ];
  for (const title of titles) {
    lines.push(`| ${title} | ${columns.map((col) => cell(results.find((r) => r.caseName === title && r.column === col))).join(' | ')} |`);
  }
  return lines.join('\n');
}

if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}`);
