// web/js/pairing.js and web/js/sha256.js in Node, no browser and no server: the JS pairing
// reproduces crates/pairing's test vectors byte for byte, pairs with itself, fails on a wrong
// code, and the streaming SHA-256 agrees with WebCrypto.
//
//   cd tests/e2e && node --test pairing.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import {
  CodeError,
  IDENTITY,
  Pairing,
  PairingError,
  _testing,
  generateCode,
  normalizeFingerprint,
  parseCode,
  roomFor,
  sdpFingerprint,
} from '../../web/js/pairing.js';
import { Sha256 } from '../../web/js/sha256.js';
import { WORDS } from '../../web/js/words.js';

const vectors = JSON.parse(
  readFileSync(new URL('../../crates/pairing/tests/data/vectors.json', import.meta.url), 'utf8'),
);

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const fromHex = (text) => Uint8Array.from(Buffer.from(text, 'hex'));
const fp = (byte) => `sha-256 ${Array(32).fill(byte).join(':')}`;

async function outcome(promise) {
  try {
    const step = await promise;
    assert.equal(step.type, 'verified');
    return 'verified';
  } catch (error) {
    if (error instanceof PairingError && error.isWrongCode && !error.byPeer) return 'wrong_code';
    throw error;
  }
}

test('the word list follows its rules', () => {
  assert.equal(WORDS.length, 256);
  for (const word of WORDS) assert.match(word, /^[a-z]{3,7}$/);
  assert.equal(new Set(WORDS.map((w) => w.slice(0, 3))).size, 256);
});

test('codes parse forgivingly and generate valid codes', () => {
  for (const input of ['7-tiger-orbit', '  7-tiger-orbit\n', '7 Tiger ORBIT', '7  tiger - orbit', '\t7\ttiger\torbit ']) {
    assert.equal(parseCode(input), '7-tiger-orbit', JSON.stringify(input));
  }
  assert.equal(roomFor('7 tiger orbit'), 'xfer-7');
  assert.equal(roomFor('999-able-zoo'), 'xfer-999');
  const kind = (input) => {
    try {
      parseCode(input);
      return 'ok';
    } catch (error) {
      assert.ok(error instanceof CodeError);
      return error.kind;
    }
  };
  assert.equal(kind(''), 'empty');
  assert.equal(kind(' - '), 'empty');
  assert.equal(kind('7-tiger'), 'shape');
  assert.equal(kind('7-tiger-orbit-zoo'), 'shape');
  for (const n of ['0', '07', '1000', '+7', 'x', '7x', '٧']) assert.equal(kind(`${n}-tiger-orbit`), 'number', n);
  assert.throws(() => parseCode('7-tiger-orbitt'), {
    kind: 'unknown_word',
    suggestion: 'orbit',
    message: 'unknown word "orbitt" in the code; did you mean "orbit"?',
  });
  assert.throws(() => parseCode('7-ti-orbit'), { suggestion: null, message: 'unknown word "ti" in the code' });
  const numbers = new Set();
  for (let i = 0; i < 2000; i++) {
    const code = generateCode();
    assert.equal(parseCode(code), code);
    numbers.add(Number(code.split('-')[0]));
  }
  assert.ok(numbers.size > 700 && Math.min(...numbers) >= 1 && Math.max(...numbers) <= 999);
});

test('fingerprints normalise like the Rust side', () => {
  const FP = 'sha-256 0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9';
  assert.equal(normalizeFingerprint(FP), FP);
  assert.equal(normalizeFingerprint(`  SHA-256\t${FP.slice(8).toLowerCase()}  `), FP);
  for (const bad of ['', 'sha-256', `sha-1 ${Array(20).fill('AB').join(':')}`, `sha-256 ${Array(31).fill('AB').join(':')}`,
    `sha-256 ${Array(32).fill('AB').join('')}`, `sha-256 ${Array(32).fill('AB').join(':')}:`, `${FP} x`]) {
    assert.equal(normalizeFingerprint(bad), null, bad);
  }
  const lower = FP.toLowerCase();
  assert.equal(sdpFingerprint(`v=0\r\na=fingerprint:${lower}\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n`), FP);
  assert.equal(sdpFingerprint(`v=0\nm=application 9\na=fingerprint:${FP}\nm=audio 9\na=fingerprint:${lower}\n`), FP);
  assert.equal(sdpFingerprint(`v=0\r\na=fingerprint:${FP}\r\nm=x\r\na=fingerprint:${fp('AB')}\r\n`), null);
  assert.equal(sdpFingerprint('v=0\r\nm=application 9\r\n'), null);
  assert.equal(sdpFingerprint('a=fingerprint:sha-256 AB\r\n'), null);
});

test('the JS side reproduces the Rust vectors byte for byte', async () => {
  assert.equal(vectors.identity, IDENTITY);
  assert.ok(vectors.cases.length >= 4);
  for (const c of vectors.cases) {
    const start = (side, role) =>
      _testing.startWithRandom(side.code, role, side.fingerprint, fromHex(side.random));
    const s = await start(c.sender, 'sender');
    const r = await start(c.receiver, 'receiver');
    assert.deepEqual(s.message, c.sender.pake, `${c.name}: sender pake`);
    assert.deepEqual(r.message, c.receiver.pake, `${c.name}: receiver pake`);
    const sConfirm = await s.pairing.handle(c.receiver.pake);
    const rConfirm = await r.pairing.handle(c.sender.pake);
    assert.equal(hex(_testing.key(s.pairing)), c.sender.key, `${c.name}: sender key`);
    assert.equal(hex(_testing.key(r.pairing)), c.receiver.key, `${c.name}: receiver key`);
    assert.deepEqual(sConfirm, { type: 'send', messages: [c.sender.confirm] }, `${c.name}: sender confirm`);
    assert.deepEqual(rConfirm, { type: 'send', messages: [c.receiver.confirm] }, `${c.name}: receiver confirm`);
    assert.equal(await outcome(s.pairing.handle(c.receiver.confirm)), c.sender.result, `${c.name}: sender result`);
    assert.equal(await outcome(r.pairing.handle(c.sender.confirm)), c.receiver.result, `${c.name}: receiver result`);
  }
});

test('point decoding matches curve25519-dalek on edge cases', () => {
  const { decompress, compress } = _testing;
  const identity = fromHex(`01${'00'.repeat(31)}`);
  assert.equal(hex(compress(decompress(identity))), hex(identity));
  // y = 2 is not on the curve.
  assert.equal(decompress(fromHex(`02${'00'.repeat(31)}`)), null);
  // "-0": x = 0 with the sign bit set decodes (to the identity), as dalek does.
  assert.equal(hex(compress(decompress(fromHex(`01${'00'.repeat(30)}80`)))), hex(identity));
  // Non-canonical y = p + 1 is taken mod p, so it is the identity too.
  const pPlusOne = fromHex(`ee${'ff'.repeat(30)}7f`);
  assert.equal(hex(compress(decompress(pPlusOne))), hex(identity));
});

/** Relays messages between two JS pairings like the signaling server would. */
async function run(senderCode, receiverCode) {
  const s = await Pairing.start(senderCode, 'sender', fp('aa'));
  const r = await Pairing.start(receiverCode, 'receiver', fp('bb'));
  const sides = [
    { pairing: s.pairing, inbox: [r.message], result: null },
    { pairing: r.pairing, inbox: [s.message], result: null },
  ];
  while (sides.some((side) => side.inbox.length > 0)) {
    for (const [i, side] of sides.entries()) {
      const other = sides[1 - i];
      const inbox = side.inbox.splice(0);
      for (const message of inbox) {
        if (side.result) break;
        // Through JSON, as over the wire.
        const wire = JSON.parse(JSON.stringify(message));
        try {
          const step = await side.pairing.handle(wire);
          if (step.type === 'send') other.inbox.push(...step.messages);
          else side.result = { ok: step.remoteFingerprint };
        } catch (error) {
          if (error.reply) other.inbox.push(error.reply);
          side.result = { error };
        }
      }
    }
  }
  return sides.map((side) => side.result);
}

test('two JS sides with the same code verify each other', async () => {
  const [sender, receiver] = await run('7-tiger-orbit', ' 7 TIGER orbit ');
  assert.deepEqual(sender, { ok: fp('BB') });
  assert.deepEqual(receiver, { ok: fp('AA') });
});

test('a wrong code fails on both sides', async () => {
  for (const [a, b] of [['7-tiger-orbit', '7-tiger-otter'], ['7-tiger-orbit', '7-orbit-tiger']]) {
    const results = await run(a, b);
    for (const { error } of results) {
      assert.ok(error instanceof PairingError, `${a}/${b}`);
      assert.ok(error.isWrongCode);
      assert.equal(error.message, 'wrong code');
      assert.deepEqual(error.reply, error.byPeer ? null : { abort: 'wrong_code' });
    }
  }
  // The side that checks first tells the other, which then fails without checking.
  const s = await Pairing.start('7-tiger-orbit', 'sender', fp('aa'));
  const r = await Pairing.start('7-tiger-otter', 'receiver', fp('bb'));
  await s.pairing.handle(r.message);
  const rConfirm = (await r.pairing.handle(s.message)).messages[0];
  const found = await s.pairing.handle(rConfirm).catch((error) => error);
  assert.deepEqual([found.isWrongCode, found.byPeer, found.reply], [true, false, { abort: 'wrong_code' }]);
  const told = await r.pairing.handle(found.reply).catch((error) => error);
  assert.deepEqual([told.isWrongCode, told.byPeer, told.reply], [true, true, null]);
});

test('handle() queues calls made without waiting', async () => {
  const s = await Pairing.start('5-lemon-ocean', 'sender', fp('aa'));
  const r = await Pairing.start('5-lemon-ocean', 'receiver', fp('bb'));
  const rConfirm = (await r.pairing.handle(s.message)).messages[0];
  // The confirmation is handed over while the pake is still being processed.
  const [first, second] = await Promise.all([s.pairing.handle(r.message), s.pairing.handle(rConfirm)]);
  assert.equal(first.type, 'send');
  assert.deepEqual(second, { type: 'verified', remoteFingerprint: fp('BB') });
  assert.ok(s.pairing.verified);
});

test('malformed and out-of-order messages are protocol errors', async () => {
  const code = '7-tiger-orbit';
  const s0 = await Pairing.start(code, 'sender', fp('aa'));
  const r0 = await Pairing.start(code, 'receiver', fp('bb'));
  const goodConfirm = (await r0.pairing.handle(s0.message)).messages[0];
  const expectKind = async (pairing, message, kind) => {
    await assert.rejects(pairing.handle(message), (error) => {
      assert.ok(error instanceof PairingError);
      assert.equal(error.kind, kind, JSON.stringify(message));
      return true;
    });
  };
  const malformed = [
    null, 'pake', [1, 2], {}, { pake: 5 }, { pake: 'not base64!' }, { pake: 'AAAA' }, { pake: 'QUFB' },
    { pake: `S${'A'.repeat(43)}` }, { pake: `UwI${'A'.repeat(41)}` }, { pake: `UwI${'A'.repeat(40)}` },
    { pake: 'QQ==', extra: 1 }, { confirm: goodConfirm.confirm }, { fingerprint: fp('AA') }, { abort: 1 },
    { abort: 'wrong_code', pake: 'QQ==' }, { pake: 'QR==' },
  ];
  for (const message of malformed) {
    const { pairing } = await Pairing.start(code, 'sender', fp('aa'));
    await expectKind(pairing, message, 'malformed');
    await expectKind(pairing, message, 'finished');
  }
  for (const message of [
    { confirm: 'AAAA', fingerprint: fp('BB') },
    { confirm: goodConfirm.confirm, fingerprint: fp('bb') },
    { confirm: goodConfirm.confirm, fingerprint: 7 },
    { ...goodConfirm, x: null },
  ]) {
    const { pairing } = await Pairing.start(code, 'sender', fp('aa'));
    await pairing.handle(r0.message);
    await expectKind(pairing, message, 'malformed');
  }
  {
    const { pairing } = await Pairing.start(code, 'receiver', fp('bb'));
    await expectKind(pairing, goodConfirm, 'unexpected'); // confirmation before the pake
  }
  {
    const { pairing } = await Pairing.start(code, 'sender', fp('aa'));
    await pairing.handle(r0.message);
    await expectKind(pairing, r0.message, 'unexpected'); // second pake
  }
  {
    const { pairing, message } = await Pairing.start(code, 'sender', fp('aa'));
    await expectKind(pairing, message, 'unexpected'); // reflected
  }
  {
    const { pairing } = await Pairing.start(code, 'sender', fp('aa'));
    await assert.rejects(pairing.handle({ abort: 'protocol_error\n\u0007' }), {
      kind: 'peer_aborted',
      message: 'the peer aborted the pairing: protocol_error',
      reply: null,
    });
  }
  await assert.rejects(Pairing.start(code, 'sender', 'sha-256 AB'), { kind: 'invalid_fingerprint' });
  await assert.rejects(Pairing.start(code, 'middle', fp('aa')), TypeError);
  await assert.rejects(Pairing.start('7-tiger', 'sender', fp('aa')), CodeError);
});

test('sha256.js agrees with WebCrypto, whatever the update sizes', async () => {
  const webcrypto = async (bytes) => hex(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)));
  assert.equal(
    new Sha256().update(new TextEncoder().encode('abc')).digestHex(),
    'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
  );
  assert.equal(new Sha256().digestHex(), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  const random = (n) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
    return out;
  };
  for (const size of [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 1 << 20]) {
    const data = random(size);
    const expected = await webcrypto(data);
    assert.equal(new Sha256().update(data).digestHex(), expected, `${size} bytes at once`);
    for (const step of [1, 3, 7, 63, 65, 4099]) {
      if (size > 100_000 && step < 63) continue; // byte-sized steps over 1 MiB only slow the test down
      const hash = new Sha256();
      for (let i = 0; i < size; i += step) hash.update(data.subarray(i, i + step));
      assert.equal(hash.digestHex(), expected, `${size} bytes in steps of ${step}`);
    }
  }
  // Odd, varying chunk sizes over 1 MiB, also as ArrayBuffer and DataView.
  const data = random(1 << 20);
  const hash = new Sha256();
  let offset = 0;
  for (let n = 1; offset < data.length; n = (n * 7 + 13) % 9973) {
    const chunk = data.slice(offset, offset + n);
    hash.update(n % 3 === 0 ? chunk.buffer : n % 3 === 1 ? new DataView(chunk.buffer) : chunk);
    offset += n;
  }
  assert.equal(hash.digestHex(), await webcrypto(data));
  assert.equal(hash.digestHex(), await webcrypto(data), 'digest is repeatable');
  assert.throws(() => hash.update(new Uint8Array(1)));
});

// A floor far below what it does (about 50-100 MB/s on a busy 2-core box), to catch a
// per-byte slow path rather than to measure.
test('sha256.js is fast enough for large files', () => {
  const data = new Uint8Array(16 << 20);
  const hash = new Sha256();
  const started = performance.now();
  for (let i = 0; i < data.length; i += 1 << 16) hash.update(data.subarray(i, i + (1 << 16)));
  hash.digest();
  const seconds = (performance.now() - started) / 1000;
  const mbps = data.length / 1e6 / seconds;
  console.log(`sha256.js: ${mbps.toFixed(0)} MB/s`);
  assert.ok(mbps > 10, `${mbps} MB/s`);
});
