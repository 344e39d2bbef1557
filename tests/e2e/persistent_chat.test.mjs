// Chat in a persistent room goes through the server: a room created through the admin API keeps
// its chat in the database, a message shows as pending until the server's echo confirms it, a
// joiner sees the history, and the history is still there after the server restarts on the same
// data directory. Rooms not created through the API keep chat peer-to-peer (two_peers.test.mjs).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  startServer, launchBrowser, openPage, sendChat, waitForChat, pollUntil, roomName,
} from './lib/harness.mjs';

async function createRoom(url, body) {
  const res = await fetch(`${url}/api/v1/rooms`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 201, await res.text());
}

const chatLines = (page) => page.evaluate(() => [...document.querySelectorAll('#chat-log .chat-msg:not(.system)')].map((li) => ({
  from: li.querySelector('.chat-from')?.textContent,
  text: li.querySelector('.chat-text')?.textContent,
  id: li.dataset.id ?? null,
  pending: li.classList.contains('pending'),
})));

test('persistent room: chat through the server, history on join and after a restart', { timeout: 90_000 }, async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'switchboard-e2e-'));
  const args = ['--data-dir', dir, '--no-sfu'];
  let server = await startServer({ args });
  const browser = await launchBrowser({ cameras: 0 });
  try {
    const room = roomName('kept');
    await createRoom(server.url, { name: room, chat_history: 50 });

    const alice = await openPage(browser, `${server.url}/r/${room}?name=Alice`, { label: 'alice' });
    await pollUntil(() => alice.evaluate(() => window.switchboard?.signaling?.serverChat === true), { what: 'alice knows the room keeps chat' });
    await sendChat(alice, 'hello, stored');
    await waitForChat(alice, 'Alice (you)', 'hello, stored');
    await pollUntil(async () => (await chatLines(alice)).some((l) => l.text === 'hello, stored' && l.id && !l.pending),
      { what: 'the echo confirms alice\'s line with an id' });

    // Nobody else was in the room: Bob still gets it, as history.
    const bob = await openPage(browser, `${server.url}/r/${room}?name=Bob`, { label: 'bob' });
    await waitForChat(bob, 'Alice', 'hello, stored');
    await sendChat(bob, 'hi Alice');
    await waitForChat(alice, 'Bob', 'hi Alice');
    await waitForChat(bob, 'Bob (you)', 'hi Alice');
    await bob.close();
    await alice.close();

    // Restart on the same directory: the room and its chat are still there.
    await server.stop();
    server = await startServer({ args });
    const carol = await openPage(browser, `${server.url}/r/${room}?name=Carol`, { label: 'carol' });
    await waitForChat(carol, 'Alice', 'hello, stored');
    await waitForChat(carol, 'Bob', 'hi Alice');
    const lines = await chatLines(carol);
    assert.deepEqual(lines.map((l) => l.text), ['hello, stored', 'hi Alice'], 'in order, once each');
    await carol.close();
  } finally {
    await browser.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
