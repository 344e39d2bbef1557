// (b) Three pages in a full mesh: each decodes both remote videos.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, launchBrowser, openPage, waitForDecoding, roomName } from './lib/harness.mjs';

test('three peers form a full mesh', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const room = roomName('three');

    // Open them concurrently so that offers really can cross.
    const pages = await Promise.all(['Ann', 'Ben', 'Cat'].map((name) =>
      openPage(browser, `${ctx.server.url}/r/${room}?name=${name}`, { label: name })));
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
  });
});
