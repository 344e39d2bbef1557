// Device pickers and mute buttons: switching camera or microphone replaces the
// track on the existing connection (no renegotiation, the other side keeps
// decoding), and muting is shown on the other side's tile.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  withServer, launchBrowser, openPage, waitForDecoding, totalFramesDecoded, pollUntil, roomName,
} from './lib/harness.mjs';

/** What Alice sends: the label and id of each sender's track and the media-source in getStats. */
const sending = (page) => page.evaluate(async () => {
  const [peer] = window.switchboard.peers.values();
  const out = { sdp: peer.pc.remoteDescription.sdp.length };
  for (const s of peer.pc.getSenders()) {
    if (s.track) out[s.track.kind] = { label: s.track.label, id: s.track.id };
  }
  const stats = await peer.pc.getStats();
  stats.forEach((r) => {
    if (r.type === 'media-source' && r.kind === 'video') out.videoSource = r.trackIdentifier;
  });
  return out;
});

test('switching devices and muting', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    // Chromium's fake camera 1 is a 16-bit depth camera that WebRTC cannot
    // encode; cameras 0 (I420) and 2 (MJPEG) are ordinary.
    const browser = await launchBrowser({ cameras: 3 });
    ctx.cleanup.push(() => browser.close());
    const room = roomName('dev');
    const alice = await openPage(browser, `${ctx.server.url}/r/${room}?name=Alice`, { label: 'alice' });
    const bob = await openPage(browser, `${ctx.server.url}/r/${room}?name=Bob`, { label: 'bob' });
    ctx.pages.push(alice, bob);
    await waitForDecoding(alice, 1);
    await waitForDecoding(bob, 1);

    // Both cameras and all microphones are offered.
    const cams = await alice.locator('#camera-select option').allTextContents();
    assert.deepEqual(cams, ['fake_device_0', 'fake_device_1', 'fake_device_2']);
    assert.ok((await alice.locator('#mic-select option').count()) >= 2);

    const before = await sending(alice);
    assert.equal(before.video.label, 'fake_device_0');
    const negotiations = () => bob.evaluate(() => [...window.switchboard.peers.values()][0].pc.remoteDescription.sdp);
    const bobRemoteSdp = await negotiations();

    // Camera.
    await alice.selectOption('#camera-select', { label: 'fake_device_2' });
    const afterCam = await pollUntil(async () => {
      const s = await sending(alice);
      return s.video.label === 'fake_device_2' && s.videoSource === s.video.id && s;
    }, { what: 'alice sending fake_device_2' });
    assert.notEqual(afterCam.video.id, before.video.id);
    const frames = await totalFramesDecoded(bob);
    await pollUntil(async () => (await totalFramesDecoded(bob)) > frames + 10, { what: 'bob decoding the new camera' });

    // Microphone.
    await alice.selectOption('#mic-select', { label: 'Fake Audio Input 1' });
    await pollUntil(async () => (await sending(alice)).audio?.label === 'Fake Audio Input 1', { what: 'alice sending Fake Audio Input 1' });
    assert.equal(await negotiations(), bobRemoteSdp, 'replaceTrack needed no renegotiation');

    // Mute: the track is disabled and Bob's tile says so.
    const aliceId = await alice.evaluate(() => window.switchboard.peerId);
    const bobTile = bob.locator(`.tile[data-peer="${aliceId}"]`);
    await alice.click('#mic-toggle');
    assert.equal(await alice.evaluate(() => window.switchboard.media.track('audio').enabled), false);
    assert.equal(await alice.textContent('#mic-toggle'), 'Unmute mic');
    await pollUntil(async () => (await bobTile.locator('.tile-muted').textContent()) === 'mic off', { what: "bob's tile saying mic off" });
    await alice.click('#cam-toggle');
    await pollUntil(async () => (await bobTile.getAttribute('class')).includes('no-video'), { what: "bob's tile hiding alice's video" });
    assert.match(await bobTile.locator('.tile-muted').textContent(), /camera off/);
    await alice.click('#mic-toggle');
    await alice.click('#cam-toggle');
    await pollUntil(async () => (await bobTile.locator('.tile-muted').textContent()) === '', { what: "bob's tile clear again" });
  });
});
