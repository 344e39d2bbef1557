// The largest room (6, the server's default limit): every page connects to the
// five others, decodes all five videos and gets a chat line from each; a
// seventh page is told the room is full. Heavy (30 encoders and 30 decoders
// on one machine), so it only runs with E2E_HEAVY=1.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  withServer, launchBrowser, openPage, callState, pollUntil, roomName, sendChat, waitForChat,
} from './lib/harness.mjs';

const NAMES = ['Ada', 'Ben', 'Cy', 'Dee', 'Eve', 'Fay'];

const skip = process.env.E2E_HEAVY ? false : 'heavy: set E2E_HEAVY=1 to run';

test('six peers in a full mesh', { timeout: 240_000, skip }, async () => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const room = roomName('six');
    const pages = [];
    for (const name of NAMES) {
      const page = await openPage(browser, `${ctx.server.url}/r/${room}?mode=p2p&name=${name}`, { label: name });
      pages.push(page);
      ctx.pages.push(page);
    }
    for (const page of pages) {
      await pollUntil(async () => {
        const s = await callState(page);
        return s.peers.length === 5 && s.peers.every((p) => p.state === 'connected' && p.framesDecoded > 0 && p.dc === 'open');
      }, { timeoutMs: 150_000, intervalMs: 1_000, what: `${page.label} decoding five videos` });
    }
    await Promise.all(pages.map((page) => sendChat(page, `hello from ${page.label}`)));
    for (const page of pages) {
      for (const from of NAMES.filter((n) => n !== page.label)) await waitForChat(page, from, `hello from ${from}`);
    }

    const seventh = await openPage(browser, `${ctx.server.url}/r/${room}?mode=p2p&name=Gus`, { label: 'Gus' });
    ctx.pages.push(seventh);
    await seventh.locator('#error-notice').waitFor({ state: 'visible' });
    assert.match(await seventh.textContent('#error-notice'), /this room is full/i);
  }, { args: ['--max-peers-per-room', '6'] });
});
