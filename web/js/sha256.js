// Incremental SHA-256 (FIPS 180-4) in plain JavaScript, for hashing files of any size in
// the browser as they stream past: WebCrypto's digest() only takes the whole input at once.
//
//   const hash = new Sha256();
//   for await (const chunk of file.stream()) hash.update(chunk);
//   hash.digestHex(); // 64 lowercase hex digits
//
// Full 64-byte blocks are compressed straight out of the caller's array; only a partial
// block is copied. No allocation per block.

// FIPS 180-4 section 4.2.2: first 32 bits of the fractional parts of the cube roots of the
// first 64 primes.
const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

// Section 5.3.3: initial hash value.
const H0 = [
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

export class Sha256 {
  #h = Int32Array.from(H0);
  #w = new Int32Array(64);
  #block = new Uint8Array(64);
  #blockLength = 0;
  #length = 0; // bytes hashed so far; exact up to 2^53
  #digest = null;

  /**
   * Adds bytes (a Uint8Array, another typed array or DataView, or an ArrayBuffer).
   * Returns this, for chaining. Throws after digest().
   */
  update(data) {
    if (this.#digest !== null) throw new Error('Sha256: update() after digest()');
    const bytes = asBytes(data);
    let offset = 0;
    const end = bytes.length;
    this.#length += end;
    if (this.#blockLength > 0) {
      const take = Math.min(64 - this.#blockLength, end);
      this.#block.set(bytes.subarray(0, take), this.#blockLength);
      this.#blockLength += take;
      offset = take;
      if (this.#blockLength < 64) return this;
      compress(this.#h, this.#w, this.#block, 0, 64);
      this.#blockLength = 0;
    }
    const blocksEnd = offset + ((end - offset) & ~63);
    compress(this.#h, this.#w, bytes, offset, blocksEnd);
    offset = blocksEnd;
    if (offset < end) {
      this.#block.set(bytes.subarray(offset), 0);
      this.#blockLength = end - offset;
    }
    return this;
  }

  /** The 32-byte digest. Further calls return the same value; update() is no longer allowed. */
  digest() {
    if (this.#digest !== null) return this.#digest.slice();
    // Section 5.1.1: 0x80, zeros, then the length in bits as a 64-bit big-endian number.
    const block = this.#block;
    let used = this.#blockLength;
    block[used++] = 0x80;
    if (used > 56) {
      block.fill(0, used);
      compress(this.#h, this.#w, block, 0, 64);
      used = 0;
    }
    block.fill(0, used, 56);
    const high = Math.floor(this.#length / 0x20000000); // bits above 2^32, i.e. bytes / 2^29
    const low = (this.#length * 8) >>> 0;
    writeUint32BE(block, 56, high);
    writeUint32BE(block, 60, low);
    compress(this.#h, this.#w, block, 0, 64);
    const out = new Uint8Array(32);
    for (let i = 0; i < 8; i++) writeUint32BE(out, i * 4, this.#h[i]);
    this.#digest = out;
    return out.slice();
  }

  /** The digest as 64 lowercase hex digits. */
  digestHex() {
    let hex = '';
    for (const b of this.digest()) hex += HEX[b];
    return hex;
  }
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new TypeError('Sha256.update() takes bytes');
}

function writeUint32BE(bytes, offset, value) {
  bytes[offset] = value >>> 24;
  bytes[offset + 1] = value >>> 16;
  bytes[offset + 2] = value >>> 8;
  bytes[offset + 3] = value;
}

// Section 6.2.2: the 64-byte blocks of `bytes` from `offset` to `end` into the state `h`,
// with `w` as the message-schedule scratch.
function compress(h, w, bytes, offset, end) {
  let h0 = h[0];
  let h1 = h[1];
  let h2 = h[2];
  let h3 = h[3];
  let h4 = h[4];
  let h5 = h[5];
  let h6 = h[6];
  let h7 = h[7];
  for (; offset < end; offset += 64) {
    for (let i = 0, o = offset; i < 16; i++, o += 4) {
      w[i] = (bytes[o] << 24) | (bytes[o + 1] << 16) | (bytes[o + 2] << 8) | bytes[o + 3];
    }
    for (let i = 16; i < 64; i++) {
      const x = w[i - 15];
      const y = w[i - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    let a = h0;
    let b = h1;
    let c = h2;
    let d = h3;
    let e = h4;
    let f = h5;
    let g = h6;
    let hh = h7;
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (hh + S1 + ch + K[i] + w[i]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & b) ^ (a & c) ^ (b & c);
      hh = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + S0 + maj) | 0;
    }
    h0 = (h0 + a) | 0;
    h1 = (h1 + b) | 0;
    h2 = (h2 + c) | 0;
    h3 = (h3 + d) | 0;
    h4 = (h4 + e) | 0;
    h5 = (h5 + f) | 0;
    h6 = (h6 + g) | 0;
    h7 = (h7 + hh) | 0;
  }
  h[0] = h0;
  h[1] = h1;
  h[2] = h2;
  h[3] = h3;
  h[4] = h4;
  h[5] = h5;
  h[6] = h6;
  h[7] = h7;
}
