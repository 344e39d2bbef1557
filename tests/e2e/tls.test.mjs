// HTTPS/WSS: `serve --tls-self-signed`, and Chromium told to trust exactly that certificate
// (`--ignore-certificate-errors-spki-list` with the SPKI hash the server prints) loads the app
// over https:// and joins a room over wss://.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withServer, launchBrowser, openPage, callState, pollUntil, roomName } from './lib/harness.mjs';

test('the app loads over https and joins over wss with a self-signed certificate', { timeout: 60_000 }, async () => {
  await withServer(async (ctx) => {
    assert.match(ctx.server.url, /^https:\/\//);
    const spki = ctx.server.output().match(/TLS spki sha256 (\S+)/)?.[1];
    assert.ok(spki, `the server printed its SPKI hash:\n${ctx.server.output()}`);
    const browser = await launchBrowser({ args: [`--ignore-certificate-errors-spki-list=${spki}`] });
    ctx.cleanup.push(() => browser.close());
    const room = roomName('tls');

    const sockets = [];
    const alice = await openPage(browser, `${ctx.server.url}/r/${room}?name=Alice`, { label: 'alice' });
    ctx.pages.push(alice);
    alice.on('websocket', (ws) => sockets.push(ws.url()));
    const bob = await openPage(browser, `${ctx.server.url}/r/${room}?name=Bob`, { label: 'bob' });
    ctx.pages.push(bob);

    const seen = await pollUntil(async () => {
      const s = await callState(alice);
      return s?.peers.length === 1 && s.peers[0].name === 'Bob' ? s : null;
    }, { what: 'alice sees bob over wss' });
    assert.match(seen.peerId, /^[0-9a-f]{16}$/);
    assert.match(await alice.textContent('#signaling-state'), /connected/);
    assert.ok(alice.url().startsWith('https://'), alice.url());
    assert.ok(
      alice.logs.some((l) => l.startsWith('ws open wss://')) || sockets.some((u) => u.startsWith('wss://')),
      `signaling went over wss: ${alice.logs.filter((l) => l.startsWith('ws open')).join(', ')}`,
    );
  }, { args: ['--tls-self-signed', '--turn-tls', '127.0.0.1:0'] });
});
