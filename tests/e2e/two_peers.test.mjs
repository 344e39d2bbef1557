// (a) Two pages in a room: each decodes the other's video, chat goes both ways
// over the data channel, and leaving removes the tile on the other side.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  withServer, launchBrowser, openPage, waitForDecoding, callState, sendChat, waitForChat, pollUntil, roomName,
} from './lib/harness.mjs';

test('two peers see each other and chat', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const room = roomName('two');

    const alice = await openPage(browser, `${ctx.server.url}/r/${room}?name=Alice`, { label: 'alice' });
    ctx.pages.push(alice);
    const bob = await openPage(browser, `${ctx.server.url}/r/${room}?name=Bob`, { label: 'bob' });
    ctx.pages.push(bob);

    const a = await waitForDecoding(alice, 1);
    const b = await waitForDecoding(bob, 1);
    assert.equal(a.peers[0].id, b.peerId, 'alice is connected to bob');
    assert.equal(b.peers[0].id, a.peerId, 'bob is connected to alice');
    assert.match(a.peerId, /^[0-9a-f]{16}$/);
    assert.equal(a.peers[0].name, 'Bob');
    assert.equal(b.peers[0].name, 'Alice');
    assert.ok(a.peers[0].width > 0 && b.peers[0].width > 0, 'decoded frames have a size');

    // The tile shows the name and the connection state.
    assert.equal(a.peers[0].tileName, 'Bob');
    await pollUntil(async () => (await callState(alice)).peers[0].tileState === 'connected', { what: 'tile state connected' });
    assert.match(await alice.textContent('#signaling-state'), /connected/);

    // The name typed via ?name= is remembered.
    assert.equal(await alice.evaluate(() => localStorage.getItem('switchboard.name')), 'Alice');

    await pollUntil(async () => (await callState(alice)).peers[0].dc === 'open', { what: 'data channel open' });
    await sendChat(alice, 'hello from Alice');
    await waitForChat(bob, 'Alice', 'hello from Alice');
    await sendChat(bob, 'hi Alice, Bob here');
    await waitForChat(alice, 'Bob', 'hi Alice, Bob here');

    // Leaving closes the connection and removes the tile on the other side.
    await bob.click('#leave-btn');
    await pollUntil(async () => (await callState(alice)).peers.length === 0, { what: 'bob gone from alice' });
    assert.equal(await alice.locator('.tile').count(), 1, 'only the self tile is left');
  });
});
