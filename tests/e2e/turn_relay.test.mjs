// Two pages forced to iceTransportPolicy 'relay' (`?relay=1`) connect through Switchboard's own
// TURN server, with the REST credentials the server hands out in `welcome`, and decode each
// other's video. The selected candidate pair must be relay on both ends, and the TURN server's
// counters must show the media it relayed.
//
// Both pages and the relay live on 127.0.0.1, so the server is started with
// --dangerous-allow-loopback-peers: by default TURN refuses loopback peers (tested in the Rust
// suite), which is exactly what a relay on one machine needs to reach.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, launchBrowser, openPage, waitForDecoding, pollUntil, roomName } from './lib/harness.mjs';

/** The local and remote candidate types of each connection's selected pair. */
async function selectedPairTypes(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const [, p] of window.switchboard.peers) {
      const stats = await p.pc.getStats();
      let pair = null;
      stats.forEach((r) => {
        if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
      });
      if (!pair) stats.forEach((r) => { if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r; });
      out.push(pair ? [stats.get(pair.localCandidateId)?.candidateType, stats.get(pair.remoteCandidateId)?.candidateType] : null);
    }
    return out;
  });
}

async function turnCounter(url, name) {
  const body = await (await fetch(`${url}/healthz`)).text();
  const line = body.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : NaN;
}

test('a relay-only call goes through our TURN server', { timeout: 120_000 }, async () => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const room = roomName('relay');
    const alice = await openPage(browser, `${ctx.server.url}/r/${room}?name=Alice&relay=1`, { label: 'alice' });
    ctx.pages.push(alice);
    const bob = await openPage(browser, `${ctx.server.url}/r/${room}?name=Bob&relay=1`, { label: 'bob' });
    ctx.pages.push(bob);

    await waitForDecoding(alice, 1, { timeoutMs: 60_000 });
    await waitForDecoding(bob, 1, { timeoutMs: 60_000 });
    for (const page of [alice, bob]) {
      const pairs = await pollUntil(async () => {
        const p = await selectedPairTypes(page);
        return p.length === 1 && p[0] ? p : false;
      }, { what: `${page.label} selected candidate pair` });
      assert.deepEqual(pairs[0], ['relay', 'relay'], `${page.label} talks relay to relay`);
    }
    assert.ok(await turnCounter(ctx.server.url, 'turn_allocations') >= 2, 'both pages allocated on our TURN');
    await pollUntil(async () => await turnCounter(ctx.server.url, 'turn_bytes_to_peers') > 100_000,
      { what: 'media relayed by our TURN server' });
  }, { args: ['--dangerous-allow-loopback-peers'] });
});
