// Offers that cross (glare) must never wedge a call. The app normally avoids
// glare on join (the newcomer offers first); here the page already in the room
// is made to offer too, so every join collides and perfect negotiation plus the
// app's recovery (rebuilding a connection whose ICE gathering stalled after a
// rollback) must bring every call up. Also: when one side rebuilds its
// connection, the other follows.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  withServer, launchBrowser, openPage, waitForDecoding, pollUntil, roomName,
} from './lib/harness.mjs';

const ROUNDS = Number(process.env.GLARE_ROUNDS ?? 5);

test('crossing offers on join always end in a working call', { timeout: 240_000 }, async (t) => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    let rebuilds = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const room = roomName(`glare${round}`);
      const first = await openPage(browser, `${ctx.server.url}/r/${room}?name=First`, { label: `first${round}` });
      ctx.pages.push(first);
      await pollUntil(() => first.evaluate(() => window.switchboard?.signalingState === 'joined'), { what: 'first joined' });
      // Make the first page offer as soon as it hears of the second one.
      await first.evaluate(() => {
        const mesh = window.switchboard.mesh;
        const ensure = mesh.ensurePeer.bind(mesh);
        mesh.ensurePeer = (id, name) => ensure(id, name, { initiator: true });
      });
      const second = await openPage(browser, `${ctx.server.url}/r/${room}?name=Second`, { label: `second${round}` });
      ctx.pages.push(second);
      await waitForDecoding(first, 1, { timeoutMs: 40_000 });
      await waitForDecoding(second, 1, { timeoutMs: 40_000 });
      const offers = await first.evaluate(() => [...window.switchboard.peers.values()][0].timeline.offerSent != null);
      assert.ok(offers, 'the first page did send an offer of its own');
      for (const page of [first, second]) {
        rebuilds += await page.evaluate(() => [...window.switchboard.peers.values()][0].rebuilds);
      }
      for (const page of [first, second]) await page.context().close();
      ctx.pages.length = 0;
    }
    t.diagnostic(`${ROUNDS} colliding joins, ${rebuilds} connection rebuild(s) needed`);
  });
});

test('when one side rebuilds its connection the other follows', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const room = roomName('rebuild');
    const alice = await openPage(browser, `${ctx.server.url}/r/${room}?name=Alice`, { label: 'alice' });
    const bob = await openPage(browser, `${ctx.server.url}/r/${room}?name=Bob`, { label: 'bob' });
    ctx.pages.push(alice, bob);
    await waitForDecoding(alice, 1);
    await waitForDecoding(bob, 1);
    const session = (page) => page.evaluate(() => [...window.switchboard.peers.values()][0].pc.localDescription.sdp.match(/^o=\S+ (\d+)/m)[1]);
    const before = { alice: await session(alice), bob: await session(bob) };

    await alice.evaluate(() => [...window.switchboard.peers.values()][0].rebuild('test'));
    for (const page of [alice, bob]) {
      await pollUntil(async () => (await session(page)) !== before[page.label], { what: `${page.label} on a new connection` });
    }
    const a = await waitForDecoding(alice, 1);
    const b = await waitForDecoding(bob, 1);
    assert.equal(a.peers[0].id, b.peerId);
    assert.equal(await bob.evaluate(() => [...window.switchboard.peers.values()][0].rebuilds), 1);
    await pollUntil(async () => (await alice.evaluate(() => [...window.switchboard.peers.values()][0].dc.readyState)) === 'open', {
      what: 'a new chat channel',
    });
  });
});
