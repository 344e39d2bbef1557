// Calls through the server's SFU: four pages each decode the three others
// (every video crosses the server once per viewer), the small-tile viewer gets
// the small simulcast layer, a room moves from peer-to-peer to the SFU when the
// third person arrives, a publisher that rejoins is seen again quickly, chat and
// the active speaker go through the server, and junk sent at the media port
// harms nobody.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import {
  withServer, launchBrowser, openPage, pollUntil, roomName, sendChat, waitForChat,
} from './lib/harness.mjs';

/** Per remote participant: video frames decoded and the widest frame, from each receiver's stats. */
export async function sfuState(page) {
  return page.evaluate(async () => {
    const sb = window.switchboard;
    const call = sb?.call;
    if (!call?.pc) return null;
    const peers = [];
    for (const [id, p] of call.peers) {
      let framesDecoded = 0;
      let width = 0;
      for (const t of call.pc.getTransceivers()) {
        if (!p.mids?.has(String(t.mid)) || t.receiver.track.kind !== 'video') continue;
        const stats = await t.receiver.getStats();
        stats.forEach((r) => {
          if (r.type !== 'inbound-rtp') return;
          framesDecoded += r.framesDecoded ?? 0;
          width = Math.max(width, r.frameWidth ?? 0);
        });
      }
      peers.push({ id, name: p.name, framesDecoded, width });
    }
    return { mode: sb.mode, peerId: sb.peerId, state: call.pc.connectionState, peers };
  });
}

async function waitForSfuDecoding(page, n, { timeoutMs = 40_000 } = {}) {
  return pollUntil(async () => {
    const s = await sfuState(page);
    if (!s || s.mode !== 'sfu' || s.state !== 'connected') return false;
    const decoding = s.peers.filter((p) => p.framesDecoded > 0);
    return decoding.length >= n ? s : false;
  }, { timeoutMs, intervalMs: 300, what: `${page.label} decoding ${n} videos through the SFU` })
    .catch(async (err) => {
      err.message += `\nstate: ${JSON.stringify(await sfuState(page).catch(() => null))}`;
      throw err;
    });
}

async function healthz(url) {
  const text = await (await fetch(`${url}/healthz`)).text();
  return Object.fromEntries(text.split('\n').map((l) => l.split(' ')).filter((p) => p.length === 2).map(([k, v]) => [k, Number(v)]));
}

test('four pages in an SFU room each decode the three others; chat goes through the server', { timeout: 150_000 }, async () => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const room = roomName('sfu4');
    const names = ['Ann', 'Ben', 'Cat', 'Dan'];
    const pages = [];
    for (const name of names) {
      const page = await openPage(browser, `${ctx.server.url}/r/${room}?mode=sfu&name=${name}`, { label: name });
      ctx.pages.push(page);
      pages.push(page);
    }
    for (const page of pages) {
      const s = await waitForSfuDecoding(page, 3, { timeoutMs: 90_000 });
      assert.equal(s.peers.length, 3, `${page.label} sees three others`);
      assert.equal(await page.locator('.tile').count(), 4);
    }
    const h = await healthz(ctx.server.url);
    assert.equal(h.sfu_participants, 4);
    assert.ok(h.sfu_media_forwarded > 100, `forwarded ${h.sfu_media_forwarded}`);

    await sendChat(pages[0], 'hello through the SFU');
    for (const page of pages.slice(1)) await waitForChat(page, 'Ann', 'hello through the SFU');

    // Mic and camera state travel too.
    await pages[1].click('#cam-toggle');
    await pollUntil(() => pages[2].evaluate(() => {
      const tiles = [...document.querySelectorAll('.tile')];
      return tiles.some((t) => t.querySelector('.tile-name')?.textContent === 'Ben' && t.classList.contains('no-video'));
    }), { what: "Ben's camera-off shown to Cat" });
  });
});

test('a viewer with a small tile gets the small simulcast layer, a big tile a bigger one', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const room = roomName('simulcast');
    const sender = await openPage(browser, `${ctx.server.url}/r/${room}?mode=sfu&name=Sender`, { label: 'sender' });
    ctx.pages.push(sender);
    const viewer = await openPage(browser, `${ctx.server.url}/r/${room}?mode=sfu&name=Viewer`, { label: 'viewer' });
    ctx.pages.push(viewer);
    await waitForSfuDecoding(viewer, 1);
    // A tiny tile: the server should switch this viewer to the lowest layer.
    await viewer.addStyleTag({ content: '.tile:not(.self) video { width: 100px !important; height: 75px !important; }' });
    const small = await pollUntil(async () => {
      const s = await sfuState(viewer);
      const w = s?.peers[0]?.width ?? 0;
      return w > 0 && w <= 200 ? w : false;
    }, { timeoutMs: 30_000, what: 'the viewer receiving a small layer (width <= 200)' });
    // A large tile: a bigger layer.
    await viewer.addStyleTag({ content: '.tile:not(.self) video { width: 640px !important; height: 480px !important; }' });
    const big = await pollUntil(async () => {
      const s = await sfuState(viewer);
      const w = s?.peers[0]?.width ?? 0;
      return w >= 320 ? w : false;
    }, { timeoutMs: 30_000, what: 'the viewer receiving a bigger layer (width >= 320)' });
    assert.ok(big > small, `big ${big} > small ${small}`);
  });
});

test('a room moves to the SFU when a third person joins and stays there; a rejoining publisher is seen again within 2 s', { timeout: 120_000 }, async () => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const room = roomName('auto');
    const ann = await openPage(browser, `${ctx.server.url}/r/${room}?name=Ann`, { label: 'ann' });
    const ben = await openPage(browser, `${ctx.server.url}/r/${room}?name=Ben`, { label: 'ben' });
    ctx.pages.push(ann, ben);
    await pollUntil(() => ann.evaluate(() => window.switchboard.mode === 'p2p'
      && [...window.switchboard.peers.values()].some((p) => p.pc?.connectionState === 'connected')),
    { what: 'two people talking peer-to-peer' });
    const cat = await openPage(browser, `${ctx.server.url}/r/${room}?name=Cat`, { label: 'cat' });
    ctx.pages.push(cat);
    for (const page of [ann, ben, cat]) await waitForSfuDecoding(page, 2, { timeoutMs: 60_000 });

    // Cat leaves and comes back: Ann sees Cat's video again soon after Cat's connection is up.
    const catId = await cat.evaluate(() => window.switchboard.peerId);
    await cat.click('#leave-btn');
    await pollUntil(() => ann.evaluate((id) => !window.switchboard.peers.has(id), catId), { what: 'Cat gone for Ann' });
    await cat.goto(`${ctx.server.url}/r/${room}?name=Cat`);
    const connectedAt = await pollUntil(() => cat.evaluate(() => {
      const t = window.switchboard.call?.timeline?.connected;
      return t != null && window.switchboard.mode === 'sfu' ? performance.timeOrigin + t : false;
    }), { timeoutMs: 30_000, what: "Cat's SFU connection up again" });
    const newCat = await cat.evaluate(() => window.switchboard.peerId);
    const seenAt = await pollUntil(async () => {
      const s = await sfuState(ann);
      return s?.peers.some((p) => p.id === newCat && p.framesDecoded > 0) ? Date.now() : false;
    }, { timeoutMs: 10_000, intervalMs: 50, what: "Ann decoding Cat's video again" });
    const delay = seenAt - connectedAt;
    console.log(`rejoined publisher seen after ${delay} ms`);
    assert.ok(delay < 2_000, `seen again after ${delay} ms`);

    // Down to one person, the room stays on the SFU: a newcomer who starts peer-to-peer is told
    // so by the one already there and follows.
    await ben.click('#leave-btn');
    await cat.click('#leave-btn');
    await pollUntil(() => ann.evaluate(() => window.switchboard.peers.size === 0), { what: 'Ann alone' });
    const dan = await openPage(browser, `${ctx.server.url}/r/${room}?name=Dan`, { label: 'dan' });
    ctx.pages.push(dan);
    const s = await waitForSfuDecoding(dan, 1, { timeoutMs: 30_000 });
    assert.equal(s.peers[0].name, 'Ann');
    await waitForSfuDecoding(ann, 1, { timeoutMs: 30_000 });
  });
});

test('junk at the media port and bad offers harm nobody', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const room = roomName('junk');
    const a = await openPage(browser, `${ctx.server.url}/r/${room}?mode=sfu&name=A`, { label: 'a' });
    const b = await openPage(browser, `${ctx.server.url}/r/${room}?mode=sfu&name=B`, { label: 'b' });
    ctx.pages.push(a, b);
    await waitForSfuDecoding(b, 1);
    const media = ctx.server.output().match(/SFU media on (\S+):(\d+)/);
    assert.ok(media, 'the server prints its media port');
    const before = await healthz(ctx.server.url);

    // Random bytes, truncated RTP and RTCP headers, a STUN header with a bogus length.
    const socket = dgram.createSocket('udp4');
    const junk = [
      Buffer.from([0x80, 0x60, 0x00]),
      Buffer.from([0x80, 0xc8, 0xff, 0xff, 0, 0, 0, 1]),
      Buffer.from([0x00, 0x01, 0xff, 0xff, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
      Buffer.from([0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]),
    ];
    for (let i = 0; i < 2000; i++) {
      const pkt = i % 5 === 4 ? Buffer.from(Array.from({ length: 1 + (i % 1200) }, () => Math.floor(Math.random() * 256))) : junk[i % 4];
      await new Promise((r) => socket.send(pkt, Number(media[2]), media[1], r));
    }
    socket.close();

    // A bad SDP over WHIP and over signaling: clear errors, nothing else.
    const res = await fetch(`${ctx.server.url}/whip/${room}`, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: 'v=0\r\nthis is not sdp' });
    assert.equal(res.status, 400);
    const wrongType = await fetch(`${ctx.server.url}/whip/${room}`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: 'x' });
    assert.equal(wrongType.status, 415);

    // /healthz reads counters the media thread publishes a few times a second.
    const after = await pollUntil(async () => {
      const h = await healthz(ctx.server.url);
      return h.sfu_unroutable >= before.sfu_unroutable + 1500 ? h : false;
    }, { timeoutMs: 5_000, what: `at least 1500 more unroutable datagrams than ${before.sfu_unroutable}` });
    assert.equal(after.sfu_participants, 2);
    const frames = (await sfuState(b)).peers[0].framesDecoded;
    await pollUntil(async () => (await sfuState(b)).peers[0].framesDecoded > frames + 30, { what: 'B still decoding A' });
  });
});

test('WHIP from a browser plays on the /watch page (WHEP), restarts ICE over PATCH; after DELETE the viewer moves to a room member', { timeout: 120_000 }, async () => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const room = roomName('live');
    // A browser publishes over WHIP (what OBS or any WHIP encoder does).
    const publisher = await openPage(browser, `${ctx.server.url}/watch/unused-${room}`, { label: 'whip' });
    ctx.pages.push(publisher);
    const location = await publisher.evaluate(async (r) => {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      const pc = new RTCPeerConnection();
      for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: 'sendonly' });
      await pc.setLocalDescription(await pc.createOffer());
      const res = await fetch(`/whip/${r}`, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
      if (res.status !== 201) throw new Error(`WHIP answered ${res.status}`);
      await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
      window.whip = pc;
      return res.headers.get('Location');
    }, room);
    assert.match(location, new RegExp(`^/whip/${room}/[0-9a-f]{32}$`));

    const viewer = await openPage(browser, `${ctx.server.url}/watch/${room}`, { label: 'watch' });
    ctx.pages.push(viewer);
    await pollUntil(async () => (await viewer.evaluate(() => window.switchboardWatch.framesDecoded())) > 10,
      { timeoutMs: 30_000, what: 'the /watch page decoding the WHIP stream' });
    assert.equal(await viewer.evaluate(() => window.switchboardWatch.state), 'connected');

    // ICE restart over PATCH (RFC 9725 §4.4.2): new credentials both ways, the stream goes on.
    const restart = await publisher.evaluate(async (loc) => {
      const pc = window.whip;
      const ufragOf = (sdp) => sdp.match(/a=ice-ufrag:(.*)/)[1].trim();
      const pwdOf = (sdp) => sdp.match(/a=ice-pwd:(.*)/)[1].trim();
      const before = ufragOf(pc.remoteDescription.sdp);
      await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
      const frag = `a=ice-ufrag:${ufragOf(pc.localDescription.sdp)}\r\na=ice-pwd:${pwdOf(pc.localDescription.sdp)}\r\n`;
      const patch = (ifMatch) => fetch(loc, {
        method: 'PATCH',
        headers: { 'Content-Type': 'application/trickle-ice-sdpfrag', 'If-Match': ifMatch },
        body: frag,
      });
      const stale = await patch('"another-state"');
      const res = await patch('*');
      const answer = await res.text();
      const after = ufragOf(answer);
      await pc.setRemoteDescription({
        type: 'answer',
        sdp: pc.remoteDescription.sdp
          .replace(/a=ice-ufrag:.*\r\n/g, `a=ice-ufrag:${after}\r\n`)
          .replace(/a=ice-pwd:.*\r\n/g, `a=ice-pwd:${pwdOf(answer)}\r\n`),
      });
      return { stale: stale.status, status: res.status, type: res.headers.get('Content-Type'), before, after };
    }, location);
    assert.equal(restart.stale, 412);
    assert.equal(restart.status, 200);
    assert.equal(restart.type, 'application/trickle-ice-sdpfrag');
    assert.notEqual(restart.after, restart.before);
    await pollUntil(() => publisher.evaluate(() => ['connected', 'completed'].includes(window.whip.iceConnectionState)),
      { what: 'the publisher connected again after the ICE restart' });
    // Media keeps flowing on the new ICE session: the viewer decodes on.
    const afterRestart = await viewer.evaluate(() => window.switchboardWatch.framesDecoded());
    await pollUntil(async () => (await viewer.evaluate(() => window.switchboardWatch.framesDecoded())) > afterRestart + 30,
      { timeoutMs: 20_000, what: 'the /watch page decoding after the ICE restart' });

    // DELETE ends the publisher; a second DELETE is 404.
    assert.equal((await fetch(`${ctx.server.url}${location}`, { method: 'DELETE' })).status, 200);
    assert.equal((await fetch(`${ctx.server.url}${location}`, { method: 'DELETE' })).status, 404);
    await pollUntil(async () => (await healthz(ctx.server.url)).sfu_tracks === 0, { what: 'the published tracks gone' });

    // Someone joins the room with a camera: the same viewer now plays them.
    const member = await openPage(browser, `${ctx.server.url}/r/${room}?mode=sfu&name=Cam`, { label: 'member' });
    ctx.pages.push(member);
    const before = await viewer.evaluate(() => window.switchboardWatch.framesDecoded());
    await pollUntil(async () => (await viewer.evaluate(() => window.switchboardWatch.framesDecoded())) > before + 30,
      { timeoutMs: 30_000, what: "the /watch page decoding the member's camera" });
  });
});

test('ICE-TCP: a WHEP viewer given only the TCP candidate plays over TCP', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const room = roomName('tcp');
    const member = await openPage(browser, `${ctx.server.url}/r/${room}?mode=sfu&name=Cam`, { label: 'member' });
    ctx.pages.push(member);
    const viewer = await openPage(browser, `${ctx.server.url}/watch/unused-${room}`, { label: 'tcp-viewer' });
    ctx.pages.push(viewer);
    const candidates = await viewer.evaluate(async (r) => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver('video', { direction: 'recvonly' });
      pc.addTransceiver('audio', { direction: 'recvonly' });
      await pc.setLocalDescription(await pc.createOffer());
      const res = await fetch(`/whep/${r}`, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
      const answer = await res.text();
      // As if UDP to the server were blocked: keep only the TCP candidates.
      const tcpOnly = answer.split('\r\n').filter((l) => !(l.startsWith('a=candidate:') && / udp /i.test(l))).join('\r\n');
      await pc.setRemoteDescription({ type: 'answer', sdp: tcpOnly });
      window.tcpPc = pc;
      return answer.split('\r\n').filter((l) => l.startsWith('a=candidate:'));
    }, room);
    assert.ok(candidates.some((c) => / tcp /i.test(c) && /tcptype passive/.test(c)), `a passive TCP candidate in ${candidates}`);
    const result = await pollUntil(() => viewer.evaluate(async () => {
      const stats = await window.tcpPc.getStats();
      let frames = 0;
      let protocol = null;
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded ?? 0;
        if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
          protocol = stats.get(s.remoteCandidateId)?.protocol ?? null;
        }
      });
      return frames > 10 ? { frames, protocol } : false;
    }), { timeoutMs: 30_000, what: 'the TCP-only viewer decoding' });
    assert.equal(result.protocol, 'tcp');
  });
});

test('screen sharing through the SFU gets its own tile; the active speaker is highlighted', { timeout: 120_000 }, async () => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser({ args: ['--auto-select-desktop-capture-source=Entire screen'] });
    ctx.cleanup.push(() => browser.close());
    const room = roomName('screen');
    const ann = await openPage(browser, `${ctx.server.url}/r/${room}?mode=sfu&name=Ann`, { label: 'ann' });
    const ben = await openPage(browser, `${ctx.server.url}/r/${room}?mode=sfu&name=Ben`, { label: 'ben' });
    ctx.pages.push(ann, ben);
    await waitForSfuDecoding(ben, 1);
    await waitForSfuDecoding(ann, 1);

    // Ben mutes; Ann's (fake, beeping) microphone makes her the speaker on Ben's page.
    await ben.click('#mic-toggle');
    await pollUntil(() => ben.evaluate(() => document.querySelector('.tile.speaking .tile-name')?.textContent === 'Ann'),
      { timeoutMs: 30_000, what: "Ann's tile highlighted as the speaker on Ben's page" });

    await ann.click('#screen-toggle');
    await pollUntil(() => ann.evaluate(() => document.getElementById('screen-toggle').textContent === 'Stop sharing'),
      { what: 'Ann sharing' });
    const screen = await pollUntil(async () => {
      const s = await sfuState(ben);
      const p = s?.peers.find((x) => x.name === 'Ann (screen)');
      return p && p.framesDecoded > 5 ? p : false;
    }, { timeoutMs: 30_000, what: "Ben decoding Ann's screen in its own tile" });
    assert.ok(screen.width >= 640, `screen width ${screen.width}`);
    assert.equal(await ben.locator('.tile').count(), 3, 'Ben, Ann, Ann (screen)');

    await ann.click('#screen-toggle');
    await pollUntil(async () => (await ben.locator('.tile').count()) === 2, { timeoutMs: 20_000, what: 'the screen tile gone after sharing stops' });
  });
});

test('someone without camera or microphone joins an SFU room receive-only and sees the others', { timeout: 90_000 }, async () => {
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    const denying = await launchBrowser({ fakeUi: false, deny: true });
    ctx.cleanup.push(() => denying.close());
    const room = roomName('sfu-recvonly');
    const ann = await openPage(browser, `${ctx.server.url}/r/${room}?mode=sfu&name=Ann`, { label: 'ann' });
    const viewer = await openPage(denying, `${ctx.server.url}/r/${room}?mode=sfu&name=Viewer`, { label: 'viewer' });
    ctx.pages.push(ann, viewer);
    await viewer.locator('#media-notice').waitFor({ state: 'visible' });
    const s = await waitForSfuDecoding(viewer, 1);
    assert.equal(s.peers[0].name, 'Ann');
    // Ann sees the viewer's tile, with nothing to decode from it.
    await pollUntil(() => ann.evaluate(() => [...document.querySelectorAll('.tile .tile-name')].some((n) => n.textContent === 'Viewer')),
      { what: "the viewer's tile on Ann's page" });
  });
});
