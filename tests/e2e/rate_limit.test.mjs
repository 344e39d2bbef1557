// With a strict server message rate, the app paces its signals instead of
// having them dropped: a three-way call still comes up and the server never
// answers rate_limited.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, launchBrowser, openPage, waitForDecoding, roomName } from './lib/harness.mjs';

test('signals are paced under a strict message rate', { timeout: 120_000 }, async () => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const room = roomName('rate');
    const pages = [];
    for (const name of ['Ann', 'Ben', 'Cat']) {
      const page = await openPage(browser, `${ctx.server.url}/r/${room}?mode=p2p&name=${name}`, { label: name });
      pages.push(page);
      ctx.pages.push(page);
    }
    for (const page of pages) await waitForDecoding(page, 2, { timeoutMs: 60_000 });
    for (const page of pages) {
      const limited = page.logs.filter((l) => l.includes('"rate_limited"'));
      assert.deepEqual(limited, [], `${page.label} was never rate limited`);
      assert.equal(await page.locator('#error-notice').isVisible(), false);
    }
  }, { args: ['--messages-per-second', '5', '--message-burst', '10'] });
});
