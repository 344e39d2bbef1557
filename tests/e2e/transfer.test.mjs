// File transfer between browsers and the command line: the send page (/send) and receive page
// (/recv/CODE) against `switchboard send` / `switchboard recv`, over real WebRTC.
//
// First, without a browser: web/js/transfer.js against docs/transfer.md's examples and rules,
// and web/js/qr.js against matrices of an independent QR encoder. Then, with Chromium and
// the binary:
// - CLI → Chromium: `switchboard send` a 20 MB random file; /recv/CODE?yes=1 receives it into
//   OPFS; its SHA-256 and the downloaded file match.
// - Chromium → CLI: /send?code=... gets a 20 MB file; `switchboard recv` saves it; SHA-256 match.
// - The send page's QR code decodes (with zbarimg, when installed) to the link it shows.
// - A wrong code fails on both sides with "wrong code", in both directions.
// - Resume: the receiving page reloads mid-transfer and finishes from its partial file, with
//   `switchboard send` and with the send page on the other side.
//
//   cd tests/e2e && SWITCHBOARD_BIN=../../target/release/switchboard node --test transfer.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { launchBrowser, openPage, pollUntil, serverBinary, withServer } from './lib/harness.mjs';
import * as T from '../../web/js/transfer.js';
import { qrMatrix, svgPath } from '../../web/js/qr.js';

const MB = 1_000_000;
const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');
const hex = (bytes) => Buffer.from(bytes).toString('hex');
const DIGEST = '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08';

// ---------------------------------------------------------------------------------------
// No browser

test('transfer.js encodes the examples of docs/transfer.md', () => {
  const data = new Uint8Array(16384).fill(7);
  const chunk = T.encodeChunk(1, 16384, data);
  assert.equal(hex(chunk.subarray(0, 13)), '03000000010000000000004000');
  assert.equal(chunk.length, 13 + 16384);
  assert.equal(hex(T.encodeAck(1, 40000)), '04000000010000000000009c40');
  assert.equal(hex(T.encodeVerified(2)), '0500000002');
  assert.deepEqual(T.decode(T.encodeAck(1, 40000)), { type: 'ack', file: 1, offset: 40000 });
  assert.deepEqual(T.decode(T.encodeVerified(2)), { type: 'verified', file: 2 });
  const decoded = T.decode(chunk);
  assert.equal(decoded.type, 'chunk');
  assert.equal(decoded.offset, 16384);
  assert.equal(decoded.data.length, 16384);
  const files = [
    { path: 'photos/a.jpg', size: 5000, sha256: DIGEST },
    { path: 'empty.txt', size: 0, sha256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' },
  ];
  assert.deepEqual(T.decode(T.encodeOffer(files)), { type: 'offer', files });
  assert.deepEqual(T.decode(T.encodeAccept([5000, 0])), { type: 'accept', offsets: [5000, 0] });
  assert.deepEqual(T.decode(T.encodeCancel('declined')), { type: 'cancel', reason: 'declined' });
  // Reasons are cut to 1,024 bytes on a character boundary.
  const long = T.decode(T.encodeCancel('é'.repeat(600))).reason;
  assert.equal(Buffer.byteLength(long), 1024);
  assert.equal(T.decode(T.encodeCancel(`x${'é'.repeat(600)}`)).reason.length, 512);
  // Sizes up to 2^53 − 1 survive.
  assert.equal(T.decode(T.encodeAck(0, Number.MAX_SAFE_INTEGER)).offset, Number.MAX_SAFE_INTEGER);
});

test('transfer.js refuses malformed messages', () => {
  const reason = (bytes) => {
    try {
      T.decode(bytes);
      return 'accepted';
    } catch (error) {
      assert.ok(error instanceof T.TransferError);
      assert.equal(error.kind, 'malformed');
      assert.match(error.reason, /^malformed message: /);
      return error.reason;
    }
  };
  const json = (type, text) => Buffer.concat([Buffer.from([type]), Buffer.from(text)]);
  const file = (extra = '') => `{"path":"a","size":1,"sha256":"${DIGEST}"${extra}}`;
  assert.equal(reason(new Uint8Array(0)), 'malformed message: empty message');
  assert.match(reason(Buffer.from([0x07])), /unknown message type 0x07/);
  assert.match(reason(Buffer.from([0x00])), /unknown message type 0x00/);
  assert.match(reason('text'), /text message/);
  assert.match(reason(Buffer.from('030000000100000000000040', 'hex')), /truncated CHUNK/);
  assert.match(reason(Buffer.from('03000000010000000000004000', 'hex')), /no data/);
  assert.match(reason(Buffer.concat([Buffer.from('03000000000000000000000000', 'hex'), Buffer.alloc(65537)])), /at most 65536/);
  assert.equal(T.decode(Buffer.concat([Buffer.from('03000000000000000000000000', 'hex'), Buffer.alloc(65536)])).data.length, 65536);
  assert.match(reason(Buffer.from('04000000010000000000009c4000', 'hex')), /extra bytes/);
  assert.match(reason(Buffer.from('040000000100000000009c40', 'hex')), /truncated ACK/);
  assert.match(reason(Buffer.from('050000000200', 'hex')), /extra bytes/);
  assert.match(reason(Buffer.from('04000000010020000000000000', 'hex')), /above 2\^53-1/);
  assert.match(reason(json(1, `{"v":2,"files":"whatever"}`)), /uses transfer protocol version 2; this side speaks version 1/);
  assert.match(reason(json(1, `{"v":1,"v":1,"files":[${file()}]}`)), /duplicate field `v`/);
  assert.match(reason(json(1, `{"v":1,"files":[{"path":"a","path":"b","size":1,"sha256":"${DIGEST}"}]}`)), /duplicate field `path`/);
  assert.match(reason(json(1, `{"v":1.0,"files":[${file()}]}`)), /`v` is not a non-negative integer/);
  assert.match(reason(json(1, `{"v":1,"files":[{"path":"a","size":1e3,"sha256":"${DIGEST}"}]}`)), /`size` is not/);
  assert.match(reason(json(1, `{"v":1,"files":[{"path":"a","size":-1,"sha256":"${DIGEST}"}]}`)), /`size` is not/);
  assert.match(reason(json(1, `{"v":1,"files":[{"path":"a","size":9007199254740992,"sha256":"${DIGEST}"}]}`)), /above 2\^53-1/);
  assert.match(reason(json(1, `{"v":1,"files":[{"path":"a","size":"1","sha256":"${DIGEST}"}]}`)), /`size` has the wrong type/);
  assert.match(reason(json(1, `{"v":1,"files":[{"path":"a","size":1,"sha256":"${DIGEST.toUpperCase()}"}]}`)), /64 lowercase hex/);
  assert.match(reason(json(1, `{"v":1,"files":[{"path":"a","size":1}]}`)), /missing field `sha256`/);
  assert.match(reason(json(1, '{"v":1,"files":[]}')), /lists no files/);
  assert.match(reason(json(1, `\ufeff{"v":1,"files":[${file()}]}`)), /not the expected JSON/);
  assert.match(reason(json(1, `{"v":1,"files":[${file()}]} x`)), /trailing/);
  assert.match(reason(json(1, `{"v":1,"files":[{"path":"\\ud800","size":1,"sha256":"${DIGEST}"}]}`)), /lone surrogate/);
  assert.match(reason(Buffer.from([1, 0xff, 0xfe])), /invalid UTF-8/);
  assert.match(reason(json(1, `{"v":1,"files":[${Array(10_001).fill('{}').join(',')}]}`)), /at most 10000/);
  assert.match(reason(json(1, `{"v":1,"pad":"${'x'.repeat(262_144)}","files":[${file()}]}`)), /262144-byte limit/);
  assert.match(reason(json(2, '{"offsets":[1.5]}')), /`offsets` is not/);
  assert.match(reason(json(6, '{"reason":7}')), /`reason` has the wrong type/);
  // Unknown fields are ignored.
  assert.equal(T.decode(json(1, `{"v":1,"x":[1,{"y":null}],"files":[${file(',"mtime":5')}]}`)).files[0].path, 'a');
});

test('transfer.js applies the file-name rules', () => {
  const ok = ['a.txt', 'photos/a.jpg', 'console.txt', 'com10', 'COM0', 'é', 'a'.repeat(250), `${'b'.repeat(255)}/x`, ' x', 'x.'];
  for (const name of ok) assert.equal(T.pathProblem(name), null, name);
  const refused = {
    '': 'it is empty',
    '/etc/passwd': 'it is an absolute path',
    'a\\b': 'it contains a backslash',
    'C:x': "it contains ':'",
    'a\u0000b': 'it contains a control character',
    'a\u0085b': 'it contains a control character',
    'a\u007fb': 'it contains a control character',
    'a//b': 'it has an empty component',
    'a/': 'it has an empty component',
    '../x': "it has a '.' or '..' component",
    'a/./b': "it has a '.' or '..' component",
    'con.txt': 'reserved device name',
    'Nul.tar.gz': 'reserved device name',
    'AUX ': 'reserved device name',
    'dir/lpt9': 'reserved device name',
    'COM¹.txt': 'reserved device name',
    [`${'b'.repeat(256)}/x`]: 'a component is longer than 255 bytes',
    ['é'.repeat(126)]: 'the file name is longer than 250 bytes',
    ['a/'.repeat(2049)]: 'longer than 4096 bytes',
  };
  for (const [name, problem] of Object.entries(refused)) {
    assert.ok(T.pathProblem(name)?.includes(problem), `${JSON.stringify(name.slice(0, 20))}: ${T.pathProblem(name)}`);
  }
  const check = (...paths) => {
    try {
      T.checkManifest(paths.map((p) => ({ path: p, size: 1, sha256: DIGEST })));
      return 'ok';
    } catch (error) {
      assert.equal(error.kind, 'refused');
      return error.reason;
    }
  };
  assert.equal(check('a/b', 'a/c', 'b'), 'ok');
  assert.equal(check('Readme.md', 'README.MD'), 'refused the offer: file name "README.MD" is not allowed: it names the same file as "Readme.md" (names are compared ignoring case)');
  assert.equal(check('a', 'a/b'), 'refused the offer: file name "a" is not allowed: it is a file, but "a/b" uses it as a folder');
  assert.equal(check('A/b', 'a'), 'refused the offer: file name "a" is not allowed: it is a file, but "A/b" uses it as a folder');
  assert.equal(check('v.mp4', 'v.mp4.part'), 'refused the offer: file name "v.mp4.part" is not allowed: it is where the partial file of "v.mp4" is written while receiving');
  assert.equal(check('v.mp4', 'V.MP4.PART/x'), 'refused the offer: file name "V.MP4.PART/x" is not allowed: it is where the partial file of "v.mp4" is written while receiving');
  assert.match(check('ok', '../x'), /^refused the offer: file name "\.\.\/x" is not allowed: it has a '\.' or '\.\.' component$/);
});

test('the sender and receiver state machines follow the protocol', () => {
  const files = [
    { path: 'a', size: 40_000, sha256: DIGEST },
    { path: 'b', size: 0, sha256: DIGEST },
    { path: 'c', size: 10, sha256: DIGEST },
  ];
  const sender = new T.Sender(files);
  const receiver = new T.Receiver();
  assert.equal(receiver.handle(sender.offer()).type, 'offer');
  assert.equal(sender.nextChunk(), null, 'no CHUNK before ACCEPT');
  assert.deepEqual(sender.handle(receiver.accepted([16_384, 0, 10])), { type: 'accepted', resumed: 16_394 });
  const chunks = [];
  for (let c = sender.nextChunk(); c; c = sender.nextChunk()) chunks.push(c);
  assert.deepEqual(chunks, [{ file: 0, offset: 16_384, length: 16_384 }, { file: 0, offset: 32_768, length: 7232 }]);
  const data = (c) => T.encodeChunk(c.file, c.offset, new Uint8Array(c.length));
  assert.equal(receiver.handle(data(chunks[0])).last, false);
  assert.equal(receiver.written(0, 32_768), null, 'less than 1 MiB since the last ACK');
  assert.equal(receiver.handle(data(chunks[1])).last, true);
  assert.deepEqual(sender.handle(receiver.written(0, 40_000)), { type: 'acked' });
  assert.deepEqual(sender.handle(receiver.fileDone()), { type: 'verified', file: 0, path: 'a' });
  assert.ok(receiver.currentNeedsNoData);
  assert.deepEqual(sender.handle(receiver.fileDone()), { type: 'verified', file: 1, path: 'b' });
  assert.deepEqual(sender.handle(receiver.fileDone()), { type: 'complete', file: 2, path: 'c' });
  assert.equal(receiver.phase, 'complete');
  assert.equal(sender.phase, 'complete');

  // Violations are named, and end the transfer.
  const violation = (make, run) => {
    const side = make();
    try {
      run(side);
      return 'accepted';
    } catch (error) {
      assert.equal(side.finished, true);
      return error.reason;
    }
  };
  const offered = () => {
    const r = new T.Receiver();
    r.handle(new T.Sender(files).offer());
    return r;
  };
  const receiving = () => {
    const r = offered();
    r.accepted([0, 0, 0]);
    return r;
  };
  assert.equal(violation(offered, (r) => r.handle(T.encodeChunk(0, 0, new Uint8Array(1)))), 'protocol error: unexpected CHUNK while waiting for the user to accept the offer');
  assert.equal(violation(receiving, (r) => r.handle(T.encodeChunk(1, 0, new Uint8Array(1)))), 'protocol error: CHUNK for file 1 while file 0 is being received');
  assert.equal(violation(receiving, (r) => r.handle(T.encodeChunk(9, 0, new Uint8Array(1)))), 'protocol error: file index 9 is not in the offer');
  assert.equal(violation(receiving, (r) => r.handle(T.encodeChunk(0, 5, new Uint8Array(1)))), 'protocol error: CHUNK for file 0 at offset 5, expected offset 0');
  assert.equal(violation(receiving, (r) => r.handle(T.encodeChunk(0, 0, new Uint8Array(40_001).subarray(0, 40_001)))), 'protocol error: CHUNK for file 0 ends at 40001, past its size 40000');
  assert.equal(violation(() => new T.Receiver(), (r) => r.handle(T.encodeAck(0, 0))), 'protocol error: unexpected ACK while waiting for an OFFER');
  assert.match(violation(() => new T.Receiver(), (r) => r.handle(new T.Sender([{ path: '../x', size: 1, sha256: DIGEST }]).offer())), /^refused the offer: file name "\.\.\/x"/);
  const sending = () => {
    const s = new T.Sender(files);
    s.handle(T.encodeAccept([0, 0, 0]));
    s.nextChunk();
    return s;
  };
  assert.equal(violation(() => new T.Sender(files), (s) => s.handle(T.encodeAccept([0, 0]))), 'protocol error: ACCEPT holds 2 offsets for 3 files');
  assert.equal(violation(() => new T.Sender(files), (s) => s.handle(T.encodeAccept([0, 1, 0]))), 'protocol error: ACCEPT offset 1 for file 1 is beyond its size 0');
  assert.equal(violation(() => new T.Sender(files), (s) => s.handle(T.encodeAck(0, 0))), 'protocol error: unexpected ACK while waiting for ACCEPT');
  assert.equal(violation(sending, (s) => s.handle(T.encodeAck(0, 16_385))), 'protocol error: ACK for file 0 at offset 16385 goes backwards or covers bytes not sent');
  assert.equal(violation(sending, (s) => s.handle(T.encodeVerified(0))), 'protocol error: VERIFIED for file 0, which is not completely sent or was already verified');
  assert.equal(violation(sending, (s) => s.handle(T.encodeVerified(7))), 'protocol error: file index 7 is not in the offer');
  assert.equal(violation(sending, (s) => s.handle(T.encodeAccept([0, 0, 0]))), 'protocol error: unexpected ACCEPT while sending');
  const cancelled = new T.Sender(files);
  assert.deepEqual(cancelled.handle(T.encodeCancel('declined')), { type: 'cancelled', reason: 'declined' });
  assert.equal(cancelled.finished, true);
});

// SHA-256 of each matrix's rows ("1" dark, "0" light, row after row) from the Python `qrcode`
// package 8.x (ERROR_CORRECT_M, the given mask), for texts cut from `QR_TEXT` to each length.
const QR_TEXT = `https://x.test/recv/${Array.from({ length: 213 }, (_, i) => String.fromCharCode(97 + ((i * 7) % 26))).join('')}`;
const QR_VECTORS = [
  [14, 0, 1, '3921ce14b120506dab9a8c8353f0e9f297f73d9c1a2c968495ed6a6c4430f5e8'],
  [26, 1, 2, '63654e55b42e87e55e9c36db5bd05e481eb35070b5be16fb66298bd3bbf45db8'],
  [42, 2, 3, '71c3dac04a2691fc53996b521f24e7ef27cf07a3cc5b57628171a17e373aa38e'],
  [62, 3, 4, 'b386618684abb146eeef2ad13cb2f22dd445bfa9b3437dcd252dab3c4800193f'],
  [84, 4, 5, '86429bba07cca1c890986c0e33846615eafaea426516da01d1b095d65662c43f'],
  [106, 5, 6, '4f067f45bb92b65b901ca461b3eb0716bf1da2ee0d17887e38ce5b6f0abe546c'],
  [122, 6, 7, '5c2c00f0dd3f816551a4bb69404f94b97cbf26e4cd5309181fb3589a952532b6'],
  [152, 7, 8, '178f7ca89af94e739c932646f24dd05d37f6c9ff436c34f4dd6c13b12c826d94'],
  [180, 0, 9, '247c7d006649bcc738ff835c66e9f259fb9e0fffeba7b915de98176e5735e8d5'],
  [213, 1, 10, 'd297da0dda034c789660c3b4edb885433c05d57fbd0d05e7073eb28320b42354'],
];

const qrRows = (qr) => {
  let bits = '';
  for (let y = 0; y < qr.size; y++) for (let x = 0; x < qr.size; x++) bits += qr.dark(x, y) ? '1' : '0';
  return bits;
};

test('qr.js matches another encoder module for module (versions 1–10, every mask)', () => {
  for (const [length, mask, version, digest] of QR_VECTORS) {
    const qr = qrMatrix(QR_TEXT.slice(0, length), { mask });
    assert.equal(qr.version, version, `length ${length}`);
    assert.equal(qr.size, 17 + 4 * version);
    assert.equal(sha256(qrRows(qr)), digest, `length ${length}, mask ${mask}`);
  }
  assert.throws(() => qrMatrix('x'.repeat(214)), RangeError);
  assert.match(svgPath(qrMatrix('x')), /^M4 4h7v1h-7z/);
});

test('qr.js codes decode with zbarimg (skipped without zbar-tools)', (t) => {
  if (spawnSync('zbarimg', ['--version']).status !== 0) {
    t.skip('zbarimg not installed (apt-get install zbar-tools)');
    return;
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'qr-'));
  try {
    for (const text of ['http://127.0.0.1:8080/recv/7-tiger-orbit', `https://example.org/recv/999-zebra-zoo?x=${'é'.repeat(40)}`, QR_TEXT.slice(0, 213)]) {
      const qr = qrMatrix(text);
      const scale = 4;
      const side = (qr.size + 8) * scale;
      const rows = [];
      for (let y = 0; y < side; y++) {
        const row = [];
        for (let x = 0; x < side; x++) {
          const mx = Math.floor(x / scale) - 4;
          const my = Math.floor(y / scale) - 4;
          row.push(mx >= 0 && my >= 0 && mx < qr.size && my < qr.size && qr.dark(mx, my) ? 1 : 0);
        }
        rows.push(row.join(' '));
      }
      const file = path.join(dir, 'code.pbm');
      writeFileSync(file, `P1\n${side} ${side}\n${rows.join('\n')}\n`);
      const out = spawnSync('zbarimg', ['--quiet', '--raw', '-Sbinary', file]);
      assert.equal(out.status, 0, `zbarimg failed for version ${qr.version}: ${out.stderr}`);
      assert.equal(out.stdout.toString('utf8').replace(/\n$/, ''), text);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------
// Browsers and the command line

/** Runs the switchboard binary with `args`; resolves {code, out} when it exits. */
function cli(args, { timeoutMs = 120_000 } = {}) {
  const proc = spawn(serverBinary(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => { out += d; });
  proc.stderr.on('data', (d) => { out += d; });
  const done = new Promise((resolve) => {
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out });
    });
  });
  return { proc, done, output: () => out, kill: () => proc.exitCode === null && proc.kill('SIGKILL') };
}

const share = (page) => page.evaluate(() => {
  const s = window.switchboardShare;
  return s && JSON.parse(JSON.stringify({ ...s, blobs: undefined }));
});

const FAILED = ['error', 'wrong_code', 'cancelled', 'interrupted'];

/** Polls the page's debug handle until its state is one of `states` or a failure state. */
function settled(page, states, { timeoutMs = 120_000, what = states.join(' or '), also = () => true } = {}) {
  return pollUntil(async () => {
    const s = await share(page);
    return s && (FAILED.includes(s.state) || (states.includes(s.state) && also(s))) && s;
  }, { timeoutMs, intervalMs: 250, what: `${page.label}: ${what}` });
}

function randomFile(dir, name, size) {
  const file = path.join(dir, name);
  const data = randomBytes(size);
  writeFileSync(file, data);
  return { file, size, sha256: sha256(data) };
}

/** "Sent 20.0 MB in 1.2 s (16.3 MB/s)." → "16.3 MB/s" */
const rate = (out) => out.match(/\(([\d.]+ [kMG]?B\/s)\)/)?.[1] ?? '?';

async function withBrowser(body) {
  const tmp = mkdtempSync(path.join(tmpdir(), 'transfer-'));
  await withServer(async (ctx) => {
    const browser = await launchBrowser();
    ctx.cleanup.push(() => browser.close());
    ctx.cleanup.push(async () => rmSync(tmp, { recursive: true, force: true }));
    try {
      await body({ ...ctx, browser, tmp });
    } catch (error) {
      for (const page of ctx.pages) {
        const state = await share(page).catch((e) => `unreadable: ${e.message}`);
        console.error(`--- state of ${page.label} ---\n${JSON.stringify(state)}`);
      }
      throw error;
    }
  });
}

test('CLI → Chromium: switchboard send, /recv/CODE saves and verifies 20 MB', async () => {
  await withBrowser(async (ctx) => {
    const src = randomFile(ctx.tmp, 'random.bin', 20 * MB);
    const code = '7-tiger-orbit';
    const send = cli(['send', src.file, '--code', code, '--server', ctx.server.url]);
    ctx.cleanup.push(async () => send.kill());
    await pollUntil(() => send.output().includes(`Code: ${code}`), { what: 'the code from switchboard send' });
    assert.ok(send.output().includes(`${ctx.server.url}/recv/${code}`), send.output());

    const page = await openPage(ctx.browser, `${ctx.server.url}/recv/${code}?yes=1`, { label: 'receiver' });
    ctx.pages.push(page);
    const final = await settled(page, ['done'], { what: 'the file received' });
    assert.equal(final.state, 'done', final.error);
    assert.equal(final.storage, 'opfs');
    assert.equal(final.files.length, 1);
    assert.equal(final.files[0].path, 'random.bin');
    assert.equal(final.files[0].computedSha256, src.sha256);
    assert.equal(final.bytes, src.size);

    const sent = await send.done;
    assert.equal(sent.code, 0, sent.out);

    // The file the page offers is the file on disk: size and SHA-256 of the download.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('a.download')]);
    assert.equal(download.suggestedFilename(), 'random.bin');
    const saved = await download.path();
    assert.equal(statSync(saved).size, src.size);
    assert.equal(sha256(readFileSync(saved)), src.sha256);
    console.log(`CLI → Chromium: ${rate(sent.out)} (switchboard send), pair ${JSON.stringify(final.pair)}`);
  });
});


/** `switchboard turn` relaying to loopback, on `port` (0: any); resolves with it and its port. */
async function turnServer(port = 0) {
  const turn = cli(['turn', '--turn', `127.0.0.1:${port}`, '--turn-user', 'alice:wonderland',
    '--dangerous-allow-loopback-peers'], { timeoutMs: 600_000 });
  const line = await pollUntil(() => turn.output().match(/TURN listening on 127\.0\.0\.1:(\d+) \(udp/),
    { what: 'switchboard turn listening' });
  return { turn, port: Number(line[1]) };
}

test('CLI → Chromium through TURN only: the TURN server restarts, the sender restarts ICE, the same transfer finishes', async () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'transfer-'));
  let { turn, port } = await turnServer();
  const config = path.join(tmp, 'serve.toml');
  writeFileSync(config, `[[ice_servers]]\nurls = ["turn:127.0.0.1:${port}?transport=udp"]\nusername = "alice"\ncredential = "wonderland"\n`);
  try {
    await withServer(async (ctx) => {
      const browser = await launchBrowser();
      ctx.cleanup.push(() => browser.close());
      const src = randomFile(tmp, 'restart.bin', 30 * MB);
      const code = '8-tiger-orbit';
      const send = cli(['send', src.file, '--relay', '--code', code, '--server', ctx.server.url]);
      ctx.cleanup.push(async () => send.kill());
      await pollUntil(() => send.output().includes(`Code: ${code}`), { what: 'the code from switchboard send' });
      const page = await openPage(browser, `${ctx.server.url}/recv/${code}?yes=1&relay=1&storage=memory`, { label: 'receiver' });
      ctx.pages.push(page);
      await settled(page, ['receiving'], { what: 'receiving', also: (s) => s.bytes > 0 });
      turn.kill();
      await turn.done;
      ({ turn } = await turnServer(port));
      const final = await settled(page, ['done'], { what: 'the file received after the restart' });
      assert.equal(final.state, 'done', final.error);
      assert.equal(final.files[0].computedSha256, src.sha256);
      const sent = await send.done;
      assert.equal(sent.code, 0, sent.out);
      assert.match(sent.out, /restarting ICE/);
      assert.match(sent.out, /Reconnected through the TURN relay/);
      assert.doesNotMatch(sent.out, /Connection lost|Resuming/);
      assert.equal(final.pair?.local, 'relay', JSON.stringify(final.pair));
    }, { args: ['--config', config, '--no-turn'] });
  } finally {
    turn.kill();
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('Chromium → CLI: /send?code=..., switchboard recv saves and verifies 20 MB', async () => {
  await withBrowser(async (ctx) => {
    const src = randomFile(ctx.tmp, 'upload.bin', 20 * MB);
    const out = path.join(ctx.tmp, 'out');
    const code = '12-zebra-orbit';
    const page = await openPage(ctx.browser, `${ctx.server.url}/send?code=${code}`, { label: 'sender' });
    ctx.pages.push(page);
    await page.setInputFiles('#file-input', src.file);
    const waiting = await settled(page, ['waiting'], { timeoutMs: 30_000, what: 'hashed and waiting' });
    assert.equal(waiting.state, 'waiting', waiting.error);
    assert.equal(waiting.code, code);
    assert.equal(waiting.link, `${ctx.server.url}/recv/${code}`);
    assert.equal(waiting.files[0].sha256, src.sha256, 'the page hashed the file');
    assert.equal(waiting.qr, true);
    assert.equal(await page.locator('#qr svg').count(), 1);

    const recv = cli(['recv', code, '--yes', '--out', out, '--server', ctx.server.url]);
    ctx.cleanup.push(async () => recv.kill());
    const received = await recv.done;
    assert.equal(received.code, 0, received.out);
    const saved = path.join(out, 'upload.bin');
    assert.equal(statSync(saved).size, src.size);
    assert.equal(sha256(readFileSync(saved)), src.sha256);
    const final = await settled(page, ['done'], { timeoutMs: 10_000, what: 'the transfer complete' });
    assert.equal(final.state, 'done', final.error);
    assert.equal(final.bytes, src.size);
    assert.equal(final.files[0].verified, true);
    console.log(`Chromium → CLI: ${rate(received.out)} (switchboard recv), pair ${JSON.stringify(final.pair)}`);
  });
});

test('Chromium → CLI through TURN only: the TURN server restarts, the page restarts ICE, the same transfer finishes', async () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'transfer-'));
  let { turn, port } = await turnServer();
  const config = path.join(tmp, 'serve.toml');
  writeFileSync(config, `[[ice_servers]]\nurls = ["turn:127.0.0.1:${port}?transport=udp"]\nusername = "alice"\ncredential = "wonderland"\n`);
  try {
    await withServer(async (ctx) => {
      const browser = await launchBrowser();
      ctx.cleanup.push(() => browser.close());
      const src = randomFile(tmp, 'restart.bin', 30 * MB);
      const out = path.join(tmp, 'out');
      mkdirSync(out);
      const code = '13-zebra-orbit';
      const page = await openPage(browser, `${ctx.server.url}/send?code=${code}&relay=1`, { label: 'sender' });
      ctx.pages.push(page);
      await page.setInputFiles('#file-input', src.file);
      await settled(page, ['waiting'], { timeoutMs: 30_000, what: 'hashed and waiting' });
      const recv = cli(['recv', code, '--relay', '--yes', '--out', out, '--server', ctx.server.url]);
      ctx.cleanup.push(async () => recv.kill());
      await settled(page, ['sending'], { what: 'sending', also: (s) => s.bytes > 0 });
      turn.kill();
      await turn.done;
      ({ turn } = await turnServer(port));
      const received = await recv.done;
      assert.equal(received.code, 0, received.out);
      assert.equal(sha256(readFileSync(path.join(out, 'restart.bin'))), src.sha256);
      const final = await settled(page, ['done'], { timeoutMs: 10_000, what: 'the transfer complete' });
      assert.equal(final.state, 'done', final.error);
      assert.ok(final.iceRestarts >= 1, JSON.stringify(final));
      assert.equal(final.attempts, 1, 'the same connection carried the whole transfer');
    }, { args: ['--config', config, '--no-turn'] });
  } finally {
    turn.kill();
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('the send page shows the link as a QR code that decodes to it', async () => {
  await withBrowser(async (ctx) => {
    const src = randomFile(ctx.tmp, 'note.txt', 1000);
    const page = await openPage(ctx.browser, `${ctx.server.url}/send?code=77-quail-ruby`, { label: 'sender' });
    ctx.pages.push(page);
    await page.setInputFiles('#file-input', src.file);
    const s = await settled(page, ['waiting'], { timeoutMs: 30_000 });
    assert.equal(s.state, 'waiting', s.error);
    assert.equal(s.qr, true);
    assert.equal(await page.getAttribute('#link', 'href'), `${ctx.server.url}/recv/77-quail-ruby`);
    if (spawnSync('zbarimg', ['--version']).status !== 0) return; // drawn, not decoded
    const shot = path.join(ctx.tmp, 'qr.png');
    await page.locator('#qr').screenshot({ path: shot });
    const out = spawnSync('zbarimg', ['--quiet', '--raw', shot]);
    assert.equal(out.stdout.toString().trim(), `${ctx.server.url}/recv/77-quail-ruby`);
  });
});

test('a wrong code fails on both sides, either way round', async () => {
  await withBrowser(async (ctx) => {
    const src = randomFile(ctx.tmp, 'secret.bin', 100_000);

    // CLI sender, browser receiver with another code in the same room.
    const send = cli(['send', src.file, '--code', '5-tiger-orbit', '--server', ctx.server.url]);
    ctx.cleanup.push(async () => send.kill());
    await pollUntil(() => send.output().includes('Code: 5-tiger-orbit'), { what: 'switchboard send to start' });
    const receiver = await openPage(ctx.browser, `${ctx.server.url}/recv/5-tiger-zebra?yes=1`, { label: 'receiver' });
    ctx.pages.push(receiver);
    const r = await settled(receiver, ['done'], { timeoutMs: 30_000, what: 'a failure' });
    assert.equal(r.state, 'wrong_code', r.error);
    assert.match(await receiver.textContent('#error'), /wrong code/i);
    assert.deepEqual(r.files, [], 'no offer was shown');
    const sent = await send.done;
    assert.notEqual(sent.code, 0);
    assert.match(sent.out, /wrong code/);

    // Browser sender, CLI receiver with another code.
    const sender = await openPage(ctx.browser, `${ctx.server.url}/send?code=6-tiger-orbit`, { label: 'sender' });
    ctx.pages.push(sender);
    await sender.setInputFiles('#file-input', src.file);
    assert.equal((await settled(sender, ['waiting'], { timeoutMs: 30_000 })).state, 'waiting');
    const recv = cli(['recv', '6-tiger-zebra', '--yes', '--out', path.join(ctx.tmp, 'out'), '--server', ctx.server.url]);
    ctx.cleanup.push(async () => recv.kill());
    const received = await recv.done;
    assert.notEqual(received.code, 0);
    assert.match(received.out, /wrong code/);
    const s = await settled(sender, ['done'], { timeoutMs: 10_000, what: 'a failure' });
    assert.equal(s.state, 'wrong_code', s.error);
    assert.match(await sender.textContent('#error'), /wrong code/i);
    assert.equal(s.bytes, 0);
  });
});

test('resume: the receiving page reloads mid-transfer and finishes from its partial file', async () => {
  await withBrowser(async (ctx) => {
    const src = randomFile(ctx.tmp, 'big.bin', 60 * MB);
    const code = '9-otter-river';
    const send = cli(['send', src.file, '--code', code, '--server', ctx.server.url], { timeoutMs: 180_000 });
    ctx.cleanup.push(async () => send.kill());
    await pollUntil(() => send.output().includes(`Code: ${code}`), { what: 'switchboard send to start' });
    const page = await openPage(ctx.browser, `${ctx.server.url}/recv/${code}?yes=1`, { label: 'receiver' });
    ctx.pages.push(page);
    const first = await settled(page, ['receiving', 'done'], {
      timeoutMs: 60_000, what: '8 MB received', also: (s) => s.state === 'done' || s.bytes >= 8 * MB,
    });
    assert.equal(first.state, 'receiving', first.error ?? 'finished before the reload; use a larger file');
    await page.reload();
    const final = await settled(page, ['done'], { timeoutMs: 150_000, what: 'the reloaded page to finish' });
    assert.equal(final.state, 'done', final.error);
    assert.ok(final.resumedBytes >= first.bytes - 2 * MB, `resumed from ${final.resumedBytes}, had ${first.bytes}`);
    assert.ok(final.resumedBytes < src.size);
    assert.equal(final.files[0].computedSha256, src.sha256);
    const sent = await send.done;
    assert.equal(sent.code, 0, sent.out);
    assert.match(sent.out, /Resuming: the receiver already has/);
    // The whole file, read back from the page's storage.
    const digest = await page.evaluate(async () => {
      const blob = window.switchboardShare.blobs[0];
      const buf = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
      return [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');
    });
    assert.equal(digest, src.sha256);
    console.log(`resume: reloaded at ${(first.bytes / MB).toFixed(1)} MB, resumed from ${(final.resumedBytes / MB).toFixed(1)} MB`);
  });
});

test('resume between browsers: /send pairs with the reloaded /recv page and continues from its ACCEPT', async () => {
  await withBrowser(async (ctx) => {
    const src = randomFile(ctx.tmp, 'big.bin', 60 * MB);
    const code = '21-otter-river';
    const sender = await openPage(ctx.browser, `${ctx.server.url}/send?code=${code}`, { label: 'sender' });
    ctx.pages.push(sender);
    await sender.setInputFiles('#file-input', src.file);
    assert.equal((await settled(sender, ['waiting'], { timeoutMs: 30_000 })).state, 'waiting');
    const receiver = await openPage(ctx.browser, `${ctx.server.url}/recv/${code}?yes=1`, { label: 'receiver' });
    ctx.pages.push(receiver);
    const first = await settled(receiver, ['receiving', 'done'], {
      timeoutMs: 60_000, what: '8 MB received', also: (s) => s.state === 'done' || s.bytes >= 8 * MB,
    });
    assert.equal(first.state, 'receiving', first.error ?? 'finished before the reload; use a larger file');
    await receiver.reload();
    const r = await settled(receiver, ['done'], { timeoutMs: 150_000, what: 'the reloaded page to finish' });
    assert.equal(r.state, 'done', r.error);
    assert.equal(r.files[0].computedSha256, src.sha256);
    assert.ok(r.resumedBytes >= first.bytes - 2 * MB && r.resumedBytes < src.size, `resumed from ${r.resumedBytes}`);
    const s = await settled(sender, ['done'], { timeoutMs: 10_000 });
    assert.equal(s.state, 'done', s.error);
    assert.equal(s.attempts, 2, 'one connection before the reload, one after');
    assert.equal(s.resumedBytes, r.resumedBytes, 'the sender continued from the ACCEPT offsets');
  });
});

test('several files between browsers, empty ones included, into OPFS and into memory', async () => {
  await withBrowser(async (ctx) => {
    const files = [
      randomFile(ctx.tmp, 'a.txt', 5000),
      randomFile(ctx.tmp, 'empty.txt', 0),
      randomFile(ctx.tmp, 'b.bin', 3 * MB),
    ];
    for (const [code, storage] of [['31-koala-lemon', 'opfs'], ['32-koala-lemon', 'memory']]) {
      const sender = await openPage(ctx.browser, `${ctx.server.url}/send?code=${code}`, { label: `sender ${storage}` });
      ctx.pages.push(sender);
      await sender.setInputFiles('#file-input', files.map((f) => f.file));
      assert.equal((await settled(sender, ['waiting'], { timeoutMs: 30_000 })).state, 'waiting');
      const query = storage === 'memory' ? '?yes=1&storage=memory' : '?yes=1';
      const receiver = await openPage(ctx.browser, `${ctx.server.url}/recv/${code}${query}`, { label: `receiver ${storage}` });
      ctx.pages.push(receiver);
      const r = await settled(receiver, ['done'], { timeoutMs: 60_000 });
      assert.equal(r.state, 'done', r.error);
      assert.equal(r.storage, storage);
      assert.deepEqual(r.files.map((f) => [f.path, f.size, f.computedSha256]), files.map((f) => [path.basename(f.file), f.size, f.sha256]));
      // What the page offers for download is the data itself.
      const digests = await receiver.evaluate(async () => Promise.all(window.switchboardShare.blobs.map(async (blob) => {
        const buf = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
        return [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');
      })));
      assert.deepEqual(digests, files.map((f) => f.sha256));
      assert.equal(await receiver.locator('a.download').count(), 3);
      assert.equal((await settled(sender, ['done'], { timeoutMs: 10_000 })).state, 'done');
    }
  });
});
