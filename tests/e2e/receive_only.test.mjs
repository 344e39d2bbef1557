// (c) A page that may not use the camera or microphone joins receive-only,
// says so on the page, and still decodes the others' video. A page that may
// use only the microphone joins audio-only and is heard.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  withServer, launchBrowser, openPage, callState, pollUntil, roomName,
} from './lib/harness.mjs';

test('denied camera and mic: receive-only with a notice', { timeout: 120_000 }, async () => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    // No fake UI, and every permission prompt is refused: getUserMedia fails
    // with NotAllowedError, as when a person clicks "Block".
    const denying = await launchBrowser({ fakeUi: false, deny: true });
    ctx.cleanup.push(() => denying.close());
    const room = roomName('deny');
    const url = (name) => `${ctx.server.url}/r/${room}?mode=p2p&name=${name}`;

    const ann = await openPage(browser, url('Ann'), { label: 'ann' });
    const ben = await openPage(browser, url('Ben'), { label: 'ben' });
    const viewer = await openPage(denying, url('Viewer'), { label: 'viewer' });
    // Only the microphone allowed for this one.
    const caller = await openPage(denying, url('Caller'), {
      label: 'caller',
      contextOptions: { permissions: ['microphone'] },
    });
    ctx.pages.push(ann, ben, viewer, caller);

    // The viewer explains what happened and decodes both cameras.
    const notice = viewer.locator('#media-notice');
    await notice.waitFor({ state: 'visible' });
    const text = await notice.textContent();
    assert.match(text, /camera or microphone/i);
    assert.match(text, /permission was denied/i);
    assert.match(text, /still see and hear/i);
    const result = await viewer.evaluate(() => window.switchboard.mediaResult);
    assert.deepEqual({ audio: result.audio, video: result.video }, { audio: false, video: false });
    assert.equal(await viewer.locator('.tile.self .tile-state').textContent(), 'receive-only');

    const v = await pollUntil(async () => {
      const s = await callState(viewer);
      const decoding = s?.peers.filter((p) => p.state === 'connected' && p.framesDecoded > 0) ?? [];
      return decoding.length === 2 && s;
    }, { timeoutMs: 40_000, what: 'viewer decoding Ann and Ben' });
    const names = v.peers.filter((p) => p.framesDecoded > 0).map((p) => p.name).sort();
    assert.deepEqual(names, ['Ann', 'Ben']);

    // The audio-only caller: its notice is about the camera only, and the
    // others receive its audio (but no video from it).
    const callerNotice = await caller.locator('#media-notice').textContent();
    assert.match(callerNotice, /couldn't use your camera/i);
    assert.match(callerNotice, /microphone only/i);
    const callerId = await caller.evaluate(() => window.switchboard.peerId);
    const viewerId = await viewer.evaluate(() => window.switchboard.peerId);
    await pollUntil(async () => {
      const s = await callState(ann);
      const c = s.peers.find((p) => p.id === callerId);
      return c && c.state === 'connected' && c.audioPackets > 0;
    }, { timeoutMs: 30_000, what: "Ann receiving Caller's audio" });

    // The others are connected to the viewer even though it sends nothing.
    for (const page of [ann, ben]) {
      const s = await pollUntil(async () => {
        const st = await callState(page);
        return st.peers.length === 3 && st.peers.every((p) => p.state === 'connected') && st;
      }, { timeoutMs: 30_000, what: `${page.label} connected to all three others` });
      const toViewer = s.peers.find((p) => p.id === viewerId);
      assert.equal(toViewer.framesDecoded, 0, 'no video comes from a receive-only peer');
    }
  });
});
