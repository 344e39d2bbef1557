// Access tokens in the browser: with an API key configured, a room page whose address carries
// ?token= joins, one without a token says what is missing, and the stream viewer does the same.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startServer, launchBrowser, openPage, pollUntil, roomName, serverBinary } from './lib/harness.mjs';

const KEY = 'APIe2e';
const SECRET = 'e2e-secret-0123456789abcdef-0123456789';
let server;
let browser;

function mint(room, ...grants) {
  const out = spawnSync(serverBinary(), ['token', '--room', room, '--identity', 'e2e', ...grants], {
    env: { ...process.env, SWITCHBOARD_API_KEY: KEY, SWITCHBOARD_API_SECRET: SECRET },
    encoding: 'utf8',
  });
  assert.equal(out.status, 0, out.stderr);
  return out.stdout.trim();
}

before(async () => {
  server = await startServer({ env: { SWITCHBOARD_API_KEY: KEY, SWITCHBOARD_API_SECRET: SECRET } });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('a page with ?token= joins; without a token it says one is needed', async () => {
  const room = roomName('auth');
  const token = mint(room, '--publish', '--subscribe');
  const good = await openPage(browser, `${server.url}/r/${room}?mode=p2p&name=Ann&token=${token}`, { label: 'token' });
  const bare = await openPage(browser, `${server.url}/r/${room}?mode=p2p&name=Bob`, { label: 'bare' });
  try {
    await pollUntil(() => good.evaluate(() => window.switchboard?.signalingState === 'joined'), { what: 'joined with a token' });
    const notice = bare.locator('#error-notice');
    await notice.waitFor({ state: 'visible' });
    assert.match(await notice.textContent(), /needs an access token/);
    assert.equal(await bare.evaluate(() => window.switchboard?.signalingState), 'stopped');

    const watch = await openPage(browser, `${server.url}/watch/${room}`, { label: 'watch' });
    const said = watch.locator('#watch-notice');
    await said.waitFor({ state: 'visible' });
    assert.match(await said.textContent(), /needs an access token/);
    await watch.context().close();
  } finally {
    await good.context().close();
    await bare.context().close();
  }
});

test('a token without publish joins the SFU receive-only instead of being refused', async () => {
  const room = roomName('viewer');
  const token = mint(room, '--subscribe');
  const page = await openPage(browser, `${server.url}/r/${room}?mode=sfu&name=Viewer&token=${token}`, { label: 'viewer' });
  try {
    await pollUntil(() => page.evaluate(() => window.switchboard?.call?.pc?.connectionState === 'connected'), {
      what: 'SFU connection of a subscribe-only participant',
    });
    assert.match(await page.locator('#media-notice').textContent(), /not send: you joined receive-only/);
    assert.equal(await page.locator('#error-notice').isVisible(), false);
  } finally {
    await page.context().close();
  }
});
