// (b) Three pages in a full mesh: each decodes both remote videos. Then every
// page restarts ICE on every connection at the same moment, so that offers
// cross on each pair (glare): perfect negotiation must sort it out and the
// calls carry on with new ICE credentials.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  withServer, launchBrowser, openPage, waitForDecoding, totalFramesDecoded, pollUntil, roomName,
} from './lib/harness.mjs';

test('three peers form a full mesh', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const room = roomName('three');

    // Open them concurrently so that offers really can cross.
    const pages = await Promise.all(['Ann', 'Ben', 'Cat'].map((name) =>
      openPage(browser, `${ctx.server.url}/r/${room}?mode=p2p&name=${name}`, { label: name })));
    ctx.pages.push(...pages);

    const states = [];
    for (const page of pages) states.push(await waitForDecoding(page, 2));
    const ids = states.map((s) => s.peerId);
    assert.equal(new Set(ids).size, 3, 'three distinct peer ids');
    for (const s of states) {
      const expected = ids.filter((id) => id !== s.peerId).sort();
      assert.deepEqual(s.peers.map((p) => p.id).sort(), expected);
      for (const p of s.peers) assert.ok(p.framesDecoded > 0);
    }
    for (const page of pages) assert.equal(await page.locator('.tile').count(), 3);

    // Glare on every pair at once.
    const ufrags = (page) => page.evaluate(() => Object.fromEntries([...window.switchboard.peers].map(([id, p]) => [
      id, `${p.pc.localDescription.sdp.match(/a=ice-ufrag:(\S+)/)[1]}/${p.pc.remoteDescription.sdp.match(/a=ice-ufrag:(\S+)/)[1]}`,
    ])));
    const before = await Promise.all(pages.map(ufrags));
    const frames = await Promise.all(pages.map(totalFramesDecoded));
    await Promise.all(pages.map((page) => page.evaluate(() => {
      for (const p of window.switchboard.peers.values()) p.pc.restartIce();
    })));
    for (const [i, page] of pages.entries()) {
      await pollUntil(async () => {
        const now = await ufrags(page);
        const settled = await page.evaluate(() => [...window.switchboard.peers.values()].every(
          (p) => p.pc.signalingState === 'stable' && p.pc.connectionState === 'connected'));
        return settled && Object.entries(now).every(([id, u]) => before[i][id].split('/').every((old, k) => old !== u.split('/')[k]));
      }, { timeoutMs: 20_000, what: `${page.label}: every connection renegotiated with new ICE credentials` });
      await pollUntil(async () => (await totalFramesDecoded(page)) > frames[i] + 20, { what: `${page.label} still decoding` });
      await waitForDecoding(page, 2);
    }
  });
});
