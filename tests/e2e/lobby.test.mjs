// The ways into a room: the lobby form, /r/NAME without a stored name (asks
// for one), a bad room name, a full room, and a machine with no camera or
// microphone at all (each explained on the page).

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openPage, pollUntil, roomName } from './lib/harness.mjs';

let server;
let browser;
const pages = [];

before(async () => {
  server = await startServer({ args: ['--max-peers-per-room', '2'] });
  browser = await launchBrowser();
});

afterEach(async () => {
  for (const p of pages.splice(0)) await p.context().close();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const joined = (page) => pollUntil(() => page.evaluate(() => window.switchboard?.signalingState === 'joined'), {
  what: `${page.label} joined`,
});

test('the lobby form takes a room and a name and joins', async () => {
  const page = await openPage(browser, `${server.url}/`, { label: 'lobby' });
  pages.push(page);
  assert.ok(await page.locator('#lobby').isVisible());
  const room = roomName('lobby');
  await page.fill('#room-input', room);
  await page.fill('#name-input', 'Grace');
  await page.click('#lobby-form button[type=submit]');
  await page.waitForURL(`${server.url}/r/${room}`);
  await joined(page);
  assert.equal(await page.evaluate(() => localStorage.getItem('switchboard.name')), 'Grace');
  assert.equal(await page.locator('.tile.self .tile-name').textContent(), 'Grace (you)');
  assert.match(await page.locator('#room-label').textContent(), new RegExp(room));

  // Coming back to the lobby, the name is remembered.
  await page.goto(`${server.url}/`);
  assert.equal(await page.inputValue('#name-input'), 'Grace');
});

test('/r/NAME asks for a display name when none is stored', async () => {
  const room = roomName('prompt');
  const page = await openPage(browser, `${server.url}/r/${room}`, { label: 'prompt' });
  pages.push(page);
  await page.locator('#name-prompt').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#room').isVisible(), false);
  await page.fill('#prompt-name-input', 'Linus');
  await page.press('#prompt-name-input', 'Enter');
  await joined(page);
  assert.equal(await page.evaluate(() => window.switchboard.name), 'Linus');
});

test('a bad room name is explained', async () => {
  const page = await openPage(browser, `${server.url}/r/.hidden?mode=p2p&name=Eve`, { label: 'bad' });
  pages.push(page);
  await page.locator('#lobby-error').waitFor({ state: 'visible' });
  assert.match(await page.locator('#lobby-error').textContent(), /not a valid room name/);
});

test('a full room is explained', async () => {
  const room = roomName('full');
  const one = await openPage(browser, `${server.url}/r/${room}?mode=p2p&name=One`, { label: 'one' });
  const two = await openPage(browser, `${server.url}/r/${room}?mode=p2p&name=Two`, { label: 'two' });
  pages.push(one, two);
  await joined(one);
  await joined(two);
  const three = await openPage(browser, `${server.url}/r/${room}?mode=p2p&name=Three`, { label: 'three' });
  pages.push(three);
  const notice = three.locator('#error-notice');
  await notice.waitFor({ state: 'visible' });
  assert.match(await notice.textContent(), /this room is full/i);
  await pollUntil(() => three.evaluate(() => window.switchboard.signalingState === 'stopped'), { what: 'three stopped' });
  assert.match(await three.textContent('#signaling-state'), /disconnected/);
  // The two inside are unaffected.
  assert.equal(await one.evaluate(() => window.switchboard.peers.size), 1);
});

test('no camera or microphone at all is explained', async () => {
  const bare = await launchBrowser({ cameras: 0 });
  try {
    const page = await openPage(bare, `${server.url}/r/${roomName('bare')}?mode=p2p&name=Ida`, { label: 'bare' });
    await joined(page);
    const notice = await page.locator('#media-notice').textContent();
    assert.match(notice, /no such device was found/);
    assert.match(notice, /receive-only/);
    assert.equal(await page.locator('#mic-toggle').isDisabled(), true);
    assert.equal(await page.textContent('#cam-toggle'), 'No camera');
  } finally {
    await bare.close();
  }
});
