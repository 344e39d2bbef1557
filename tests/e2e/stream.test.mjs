// Live streaming end to end: `switchboard stream` publishes a VP8/Opus file into a room over
// WHIP; the /watch page (Chromium, WHEP) and an aiortc WHEP viewer (an independent WebRTC
// stack) both decode it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  REPO, withServer, launchBrowser, openPage, pollUntil, roomName, serverBinary,
} from './lib/harness.mjs';

const FIXTURES = path.join(REPO, 'crates/media-file/tests/data');

function startStream(ctx, room) {
  const proc = spawn(serverBinary(), ['stream', '--server', ctx.server.url, '--room', room, '--loop', '-q',
    path.join(FIXTURES, 'vp8.ivf'), path.join(FIXTURES, 'opus.ogg')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (d) => { output += d; });
  proc.stderr.on('data', (d) => { output += d; });
  ctx.cleanup.push(async () => { proc.kill('SIGINT'); });
  return { proc, output: () => output };
}

test('switchboard stream plays on the /watch page', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const room = roomName('stream');
    const stream = startStream(ctx, room);
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const viewer = await openPage(browser, `${ctx.server.url}/watch/${room}`, { label: 'watch' });
    ctx.pages.push(viewer);
    await pollUntil(async () => (await viewer.evaluate(() => window.switchboardWatch.framesDecoded())) > 20,
      { timeoutMs: 30_000, what: `the /watch page decoding the stream (stream output: ${stream.output()})` });
    const size = await viewer.evaluate(() => [document.getElementById('watch-video').videoWidth, document.getElementById('watch-video').videoHeight]);
    assert.deepEqual(size, [160, 120]);
  });
});

test('an aiortc WHEP viewer decodes switchboard stream', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const room = roomName('aiortc');
    startStream(ctx, room);
    const { stdout } = await promisify(execFile)('python3',
      [path.join(REPO, 'tests/e2e/aiortc/whep_viewer.py'), `${ctx.server.url}/whep/${room}`, '30', '30'],
      { timeout: 60_000 });
    const result = JSON.parse(stdout.trim().split('\n').pop());
    assert.ok(result.frames >= 30, `aiortc decoded ${result.frames} frames`);
    assert.equal(result.width, 160);
    assert.equal(result.height, 120);
    assert.ok(result.audio_frames > 0, 'and audio');
    assert.equal(result.state, 'connected');
    assert.equal(result.delete, 200);
  });
});
