// Test harness for the browser tests: starts the switchboard binary on a free
// port, launches headless Chromium (fake camera and microphone), opens pages,
// reads WebRTC stats through the app's `window.switchboard` debug handle, and
// polls for conditions with timeouts instead of sleeping.

import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
];

/** Where the server binary is: $SWITCHBOARD_BIN or the debug build. */
export function serverBinary() {
  return process.env.SWITCHBOARD_BIN ?? path.join(REPO, 'target/debug/switchboard');
}

/**
 * Extra `serve` arguments: $E2E_SERVER_ARGS if set, else the built-in TURN
 * server on a free port (when the binary has one), so that several servers
 * can run at once and the pages also get STUN/TURN in `ice_servers`. Either
 * way the database stays in memory (`--data-dir none`) unless the test passes
 * its own `--data-dir`: tests never write into the user's home.
 */
function defaultServerArgs(bin, testArgs) {
  const help = spawnSync(bin, ['serve', '--help'], { encoding: 'utf8' });
  const out = help.stdout ?? '';
  const args = [];
  if (/--data-dir </.test(out) && !testArgs.includes('--data-dir')) args.push('--data-dir', 'none');
  if (process.env.E2E_SERVER_ARGS != null) return [...args, ...process.env.E2E_SERVER_ARGS.split(/\s+/).filter(Boolean)];
  if (/--turn <ADDR/.test(out)) args.push('--turn', '127.0.0.1:0');
  if (/--media <ADDR/.test(out)) args.push('--media', '127.0.0.1:0');
  return args;
}

/**
 * Starts `switchboard serve --http 127.0.0.1:0` and resolves once it prints
 * `listening on http://...`. Returns {url, port, proc, output(), stop()}.
 */
export async function startServer({ bin = serverBinary(), args = [], env = {}, timeoutMs = 20_000 } = {}) {
  if (!existsSync(bin)) {
    throw new Error(`server binary not found at ${bin}: build it (cargo build -p switchboard) or set SWITCHBOARD_BIN`);
  }
  const proc = spawn(bin, ['serve', '--http', '127.0.0.1:0', ...defaultServerArgs(bin, args), ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = [];
  const keep = (prefix) => (line) => {
    lines.push(`${prefix}${line}`);
    if (lines.length > 2000) lines.shift();
    if (process.env.E2E_SERVER_LOG) console.error(`[server] ${line}`);
  };
  const err = createInterface({ input: proc.stderr });
  err.on('line', keep('! '));
  const out = createInterface({ input: proc.stdout });

  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not say "listening on" within ${timeoutMs} ms:\n${lines.join('\n')}`)), timeoutMs);
    out.on('line', (line) => {
      keep('')(line);
      const m = line.match(/listening on (https?:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1].replace(/\/$/, ''));
      }
    });
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`server exited early (code ${code}, signal ${signal}):\n${lines.join('\n')}`));
    });
  });

  let exited = false;
  proc.once('exit', () => { exited = true; });
  return {
    url,
    port: Number(new URL(url).port),
    proc,
    output: () => lines.join('\n'),
    async stop() {
      if (exited) return;
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 3_000);
      await gone;
      clearTimeout(t);
    },
  };
}

/**
 * Launches headless Chromium. `fakeUi` grants camera/microphone without a
 * prompt; without it, pass `deny: true` to refuse every permission prompt.
 */
export async function launchBrowser({ fakeUi = true, deny = false, cameras = 1, args = [] } = {}) {
  let flags = [...CHROMIUM_ARGS, ...args];
  if (cameras === 0) {
    // No fake devices at all: like a machine without camera or microphone.
    flags = flags.filter((f) => f !== '--use-fake-device-for-media-stream');
  } else if (cameras !== 1) {
    const i = flags.indexOf('--use-fake-device-for-media-stream');
    flags[i] = `--use-fake-device-for-media-stream=device-count=${cameras}`;
  }
  if (fakeUi) flags.push('--use-fake-ui-for-media-stream');
  if (deny) flags.push('--deny-permission-prompts');
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: flags });
}

/**
 * Opens `url` in a fresh browser context (own localStorage) and returns the
 * page. Console output is kept on `page.logs` for failure reports.
 */
export async function openPage(browser, url, { label = '', contextOptions = {} } = {}) {
  const context = await browser.newContext({ viewport: { width: 960, height: 640 }, ...contextOptions });
  const page = await context.newPage();
  page.label = label;
  page.logs = [];
  const log = (line) => {
    page.logs.push(line);
    if (page.logs.length > 500) page.logs.shift();
    if (process.env.E2E_PAGE_LOG) console.error(`[${label}] ${line}`);
  };
  page.on('console', (m) => log(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log(`pageerror: ${e.stack ?? e}`));
  page.on('websocket', (ws) => {
    const t0 = Date.now();
    const frame = (dir) => (f) => log(`ws ${dir} +${Date.now() - t0}ms ${String(f.payload).slice(0, 140)}`);
    log(`ws open ${ws.url()}`);
    ws.on('framesent', frame('>>'));
    ws.on('framereceived', frame('<<'));
    ws.on('close', () => log('ws closed'));
  });
  await page.goto(url);
  return page;
}

/** Polls `fn` until it returns a truthy value; throws with `what` and the last value after `timeoutMs`. */
export async function pollUntil(fn, { timeoutMs = 20_000, intervalMs = 200, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  let lastErr;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      const detail = lastErr ? `last error: ${lastErr.message}` : `last value: ${JSON.stringify(last)}`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${detail})`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * A snapshot of the page's call, from `window.switchboard` and getStats():
 * {peerId, signaling, resumes, peers: [{id, name, state, dc, framesDecoded,
 * audioPackets, width, tileState}]}.
 */
export async function callState(page) {
  return page.evaluate(async () => {
    const sb = window.switchboard;
    if (!sb) return null;
    const peers = [];
    for (const [id, p] of sb.peers) {
      let framesDecoded = 0;
      let audioPackets = 0;
      let width = 0;
      if (p.pc && p.pc.connectionState !== 'closed') {
        const stats = await p.pc.getStats();
        stats.forEach((r) => {
          if (r.type !== 'inbound-rtp') return;
          if (r.kind === 'video') {
            framesDecoded += r.framesDecoded ?? 0;
            width = Math.max(width, r.frameWidth ?? 0);
          } else if (r.kind === 'audio') {
            audioPackets += r.packetsReceived ?? 0;
          }
        });
      }
      const tile = document.querySelector(`.tile[data-peer="${CSS.escape(id)}"]`);
      peers.push({
        id,
        name: p.name,
        state: p.pc?.connectionState,
        dc: p.dc?.readyState,
        framesDecoded,
        audioPackets,
        width,
        tileName: tile?.querySelector('.tile-name')?.textContent ?? null,
        tileState: tile?.querySelector('.tile-state')?.textContent ?? null,
      });
    }
    return {
      peerId: sb.peerId,
      signaling: sb.signalingState,
      resumes: sb.signaling.resumes,
      reconnects: sb.signaling.reconnects,
      peers,
    };
  });
}

/** Waits until the page decodes video from exactly `n` peers (framesDecoded > 0 each). */
export async function waitForDecoding(page, n, { timeoutMs = 30_000 } = {}) {
  return pollUntil(async () => {
    const s = await callState(page);
    if (!s || s.peers.length !== n) return false;
    return s.peers.every((p) => p.state === 'connected' && p.framesDecoded > 0) ? s : false;
  }, { timeoutMs, intervalMs: 250, what: `${page.label || 'page'} decoding video from ${n} peer(s)` })
    .catch(async (err) => {
      err.message += `\nstate: ${JSON.stringify(await callState(page).catch(() => null))}`;
      throw err;
    });
}

/** Sum of framesDecoded over every peer of the page. */
export async function totalFramesDecoded(page) {
  const s = await callState(page);
  return s ? s.peers.reduce((sum, p) => sum + p.framesDecoded, 0) : 0;
}

/** Types `text` into the chat box and sends it. */
export async function sendChat(page, text) {
  await page.fill('#chat-input', text);
  await page.press('#chat-input', 'Enter');
}

/** Waits for a chat line from `from` with `text` (or, with `system`, a system line) on the page. */
export async function waitForChat(page, from, text, { timeoutMs = 10_000, system = false } = {}) {
  return pollUntil(() => page.evaluate(([f, t, sys]) => [...document.querySelectorAll('#chat-log .chat-msg')].some(
    (li) => (sys ? li.classList.contains('system') : li.querySelector('.chat-from')?.textContent === f)
      && li.querySelector('.chat-text')?.textContent === t,
  ), [from, text, system]), { timeoutMs, what: `chat "${text}" from ${system ? 'the app' : from} on ${page.label}` });
}

/** A room name unique to this run. */
export function roomName(prefix) {
  return `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * Runs `body(ctx)` with a server and cleanup: everything pushed onto
 * `ctx.cleanup` is awaited in reverse order; on failure, page logs and the
 * server output are printed to help diagnosis.
 */
export async function withServer(body, serverOptions = {}) {
  const server = await startServer(serverOptions);
  const ctx = { server, pages: [], cleanup: [] };
  try {
    await body(ctx);
  } catch (err) {
    for (const p of ctx.pages) {
      console.error(`--- console of ${p.label} ---\n${p.logs.slice(-80).join('\n')}`);
    }
    console.error(`--- server output (tail) ---\n${server.output().split('\n').slice(-80).join('\n')}`);
    throw err;
  } finally {
    for (const fn of ctx.cleanup.reverse()) {
      await fn().catch(() => {});
    }
    await server.stop();
  }
}
