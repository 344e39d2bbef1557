// (d) The signaling connection is cut (every TCP connection through a proxy is
// reset and new ones are refused for 3 s): the pages reconnect, resume the same
// peer id, the call keeps decoding throughout, and signaling works afterwards
// (a third page joins and connects with both).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  withServer, launchBrowser, openPage, waitForDecoding, callState, totalFramesDecoded, pollUntil, roomName,
  sendChat, waitForChat,
} from './lib/harness.mjs';
import { startProxy } from './lib/proxy.mjs';

test('a cut signaling connection resumes and the call survives', { timeout: 120_000 }, async () => {
  await withServer(async (ctx) => {
    const proxy = await startProxy({ host: '127.0.0.1', port: ctx.server.port });
    ctx.cleanup.push(() => proxy.close());
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const room = roomName('resume');

    const alice = await openPage(browser, `${proxy.url}/r/${room}?mode=p2p&name=Alice`, { label: 'alice' });
    const bob = await openPage(browser, `${proxy.url}/r/${room}?mode=p2p&name=Bob`, { label: 'bob' });
    ctx.pages.push(alice, bob);
    const a0 = await waitForDecoding(alice, 1);
    const b0 = await waitForDecoding(bob, 1);
    const pcIds = async (page) => page.evaluate(() => [...window.switchboard.peers.values()].map((p) => p.createdAt));
    const alicePcs = await pcIds(alice);

    // The outage.
    const before = { alice: await totalFramesDecoded(alice), bob: await totalFramesDecoded(bob) };
    const cut = proxy.cut(3_000);
    await pollUntil(async () => (await callState(alice)).signaling === 'reconnecting', {
      timeoutMs: 5_000, intervalMs: 50, what: 'alice noticing the cut',
    });
    // Media flows peer to peer, so it keeps decoding while signaling is down.
    await pollUntil(async () => (await totalFramesDecoded(alice)) > before.alice + 10, {
      timeoutMs: 5_000, what: 'alice decoding during the outage',
    });
    await cut;

    // Both resume their old peer ids.
    for (const [page, old] of [[alice, a0], [bob, b0]]) {
      const s = await pollUntil(async () => {
        const st = await callState(page);
        return st.signaling === 'joined' && st.resumes >= 1 && st;
      }, { timeoutMs: 20_000, what: `${page.label} resumed` });
      assert.equal(s.peerId, old.peerId, `${page.label} kept its peer id`);
      assert.ok(s.reconnects >= 1);
      assert.equal(s.peers.length, 1);
      assert.equal(s.peers[0].state, 'connected');
    }
    assert.deepEqual(await pcIds(alice), alicePcs, 'the same RTCPeerConnection carried on');

    const mid = { alice: await totalFramesDecoded(alice), bob: await totalFramesDecoded(bob) };
    assert.ok(mid.alice > before.alice && mid.bob > before.bob, 'frames kept being decoded');
    await pollUntil(async () => (await totalFramesDecoded(alice)) > mid.alice + 10
      && (await totalFramesDecoded(bob)) > mid.bob + 10, { timeoutMs: 10_000, what: 'decoding after resume' });

    // Signaling still works: a third page joins (through the proxy) and
    // connects with both; nobody saw anyone leave.
    const carol = await openPage(browser, `${proxy.url}/r/${room}?mode=p2p&name=Carol`, { label: 'carol' });
    ctx.pages.push(carol);
    const c = await waitForDecoding(carol, 2);
    const ids = c.peers.map((p) => p.id).sort();
    assert.deepEqual(ids, [a0.peerId, b0.peerId].sort());
    await waitForDecoding(alice, 2);
    await waitForDecoding(bob, 2);
    const left = await alice.evaluate(() => [...document.querySelectorAll('#chat-log .system')].map((e) => e.textContent));
    assert.ok(!left.some((t) => /left|lost/.test(t)), `no one left: ${left}`);

    await sendChat(carol, 'made it');
    await waitForChat(alice, 'Carol', 'made it');
    await waitForChat(bob, 'Carol', 'made it');
  });
});

test('someone who joins while a peer is away connects to it once it resumes', { timeout: 120_000 }, async () => {
  await withServer(async (ctx) => {
    const proxy = await startProxy({ host: '127.0.0.1', port: ctx.server.port });
    ctx.cleanup.push(() => proxy.close());
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const room = roomName('away');

    const alice = await openPage(browser, `${proxy.url}/r/${room}?mode=p2p&name=Alice`, { label: 'alice' });
    const bob = await openPage(browser, `${ctx.server.url}/r/${room}?mode=p2p&name=Bob`, { label: 'bob' });
    ctx.pages.push(alice, bob);
    const a0 = await waitForDecoding(alice, 1);
    await waitForDecoding(bob, 1);

    // Alice's signaling is down while Carol joins: Carol's offer to Alice
    // waits in the server's queue for Alice.
    const cut = proxy.cut(5_000);
    await pollUntil(async () => (await callState(alice)).signaling === 'reconnecting', {
      timeoutMs: 5_000, intervalMs: 50, what: 'alice noticing the cut',
    });
    const carol = await openPage(browser, `${ctx.server.url}/r/${room}?mode=p2p&name=Carol`, { label: 'carol' });
    ctx.pages.push(carol);
    await pollUntil(async () => (await callState(carol)).peers.find((p) => p.name === 'Bob' && p.framesDecoded > 0), {
      timeoutMs: 30_000, what: 'carol decoding bob while alice is away',
    });
    await cut;

    const a1 = await waitForDecoding(alice, 2, { timeoutMs: 40_000 });
    assert.equal(a1.peerId, a0.peerId, 'alice resumed her peer id');
    assert.ok(a1.resumes >= 1);
    await waitForDecoding(carol, 2);
    await waitForDecoding(bob, 2);
  });
});

test('after the resume grace, the page rejoins as a new peer', { timeout: 120_000 }, async () => {
  await withServer(async (ctx) => {
    const proxy = await startProxy({ host: '127.0.0.1', port: ctx.server.port });
    ctx.cleanup.push(() => proxy.close());
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const room = roomName('regrace');

    // Only Alice goes through the proxy; Bob stays connected.
    const alice = await openPage(browser, `${proxy.url}/r/${room}?mode=p2p&name=Alice`, { label: 'alice' });
    const bob = await openPage(browser, `${ctx.server.url}/r/${room}?mode=p2p&name=Bob`, { label: 'bob' });
    ctx.pages.push(alice, bob);
    const a0 = await waitForDecoding(alice, 1);
    await waitForDecoding(bob, 1);

    // Longer than the 2 s grace: the server drops Alice and tells Bob.
    await proxy.cut(4_000);
    await waitForChat(bob, undefined, 'Alice lost their connection.', { system: true });

    // Alice's resume is refused, she joins afresh and the call comes back.
    const a1 = await pollUntil(async () => {
      const s = await callState(alice);
      return s.signaling === 'joined' && s.peerId !== a0.peerId && s;
    }, { timeoutMs: 20_000, what: 'alice rejoined with a new peer id' });
    assert.equal(a1.resumes, 0);
    const a2 = await waitForDecoding(alice, 1);
    const b2 = await waitForDecoding(bob, 1);
    assert.equal(b2.peers[0].id, a2.peerId, 'bob talks to the new alice');
    assert.equal(b2.peers[0].name, 'Alice');
    await waitForChat(alice, undefined, 'Reconnected as a new participant.', { system: true });
  }, { args: ['--resume-grace-secs', '2'] });
});
