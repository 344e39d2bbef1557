// A small QR code encoder (ISO/IEC 18004:2015) for the share link: byte mode, error
// correction level M, versions 1 to 10 (up to 213 bytes, plenty for a URL). Section numbers
// refer to that standard. qrMatrix() is pure (tests run it in Node); qrSvg() draws it.

// Per version 1–10 at level M (table 9): error-correction codewords per block, and the
// blocks as [count, data codewords] groups.
const BLOCKS_M = [
  null,
  [10, [[1, 16]]],
  [16, [[1, 28]]],
  [26, [[1, 44]]],
  [18, [[2, 32]]],
  [24, [[2, 43]]],
  [16, [[4, 27]]],
  [18, [[4, 31]]],
  [22, [[2, 38], [2, 39]]],
  [22, [[3, 36], [2, 37]]],
  [26, [[4, 43], [1, 44]]],
];

// Annex E: row/column centres of the alignment patterns.
const ALIGNMENT = [
  null, [], [6, 18], [6, 22], [6, 26], [6, 30], [6, 34],
  [6, 22, 38], [6, 24, 42], [6, 26, 46], [6, 28, 50],
];

const MAX_VERSION = 10;
const EC_LEVEL_M = 0b00; // table 12

/**
 * Encodes `text` (UTF-8) and returns {version, mask, size, dark(x, y)} where dark() tells
 * whether the module in column x, row y is dark. `mask` forces a mask pattern (0–7); by default
 * the one with the lowest penalty (section 7.8.3) is used. Throws RangeError when the text
 * does not fit version 10.
 */
export function qrMatrix(text, { mask = null } = {}) {
  const data = new TextEncoder().encode(text);
  const version = chooseVersion(data.length);
  const codewords = addErrorCorrection(encodeData(data, version), version);
  const base = new QrSymbol(version);
  base.drawFunctionPatterns();
  base.placeCodewords(codewords);
  let best = null;
  for (let m = 0; m < 8; m++) {
    if (mask !== null && m !== mask) continue;
    const candidate = base.copy();
    candidate.applyMask(m);
    candidate.drawFormat(m);
    const score = mask === null ? candidate.penalty() : 0;
    if (best === null || score < best.score) best = { symbol: candidate, mask: m, score };
  }
  const { symbol } = best;
  return {
    version,
    mask: best.mask,
    size: symbol.size,
    dark: (x, y) => symbol.modules[y * symbol.size + x] === 1,
  };
}

/** An SVG element drawing the code for `text` with a 4-module quiet zone. */
export function qrSvg(text, { title = text } = {}) {
  const qr = qrMatrix(text);
  const side = qr.size + 8;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${side} ${side}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('shape-rendering', 'crispEdges');
  const label = document.createElementNS(ns, 'title');
  label.textContent = title;
  const background = document.createElementNS(ns, 'rect');
  background.setAttribute('width', String(side));
  background.setAttribute('height', String(side));
  background.setAttribute('fill', '#fff');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', svgPath(qr, 4));
  path.setAttribute('fill', '#000');
  svg.append(label, background, path);
  return svg;
}

/** The dark modules as one SVG path, a rectangle per horizontal run, offset by `margin`. */
export function svgPath(qr, margin = 4) {
  let d = '';
  for (let y = 0; y < qr.size; y++) {
    for (let x = 0; x < qr.size; x++) {
      if (!qr.dark(x, y)) continue;
      let end = x;
      while (end + 1 < qr.size && qr.dark(end + 1, y)) end++;
      d += `M${x + margin} ${y + margin}h${end - x + 1}v1h${x - end - 1}z`;
      x = end;
    }
  }
  return d;
}

function dataCodewords(version) {
  return BLOCKS_M[version][1].reduce((sum, [count, size]) => sum + count * size, 0);
}

function countBits(version) {
  return version <= 9 ? 8 : 16; // table 3, byte mode
}

function chooseVersion(length) {
  for (let v = 1; v <= MAX_VERSION; v++) {
    if (4 + countBits(v) + 8 * length <= dataCodewords(v) * 8) return v;
  }
  throw new RangeError(`${length} bytes do not fit a version ${MAX_VERSION} QR code`);
}

// Section 7.4: mode indicator, character count, data, terminator, padding.
function encodeData(data, version) {
  const bits = [];
  const put = (value, length) => {
    for (let i = length - 1; i >= 0; i--) bits.push((value >>> i) & 1);
  };
  put(0b0100, 4);
  put(data.length, countBits(version));
  for (const byte of data) put(byte, 8);
  const capacity = dataCodewords(version) * 8;
  put(0, Math.min(4, capacity - bits.length));
  put(0, (8 - (bits.length % 8)) % 8);
  const out = [];
  for (let i = 0; i < bits.length; i += 8) {
    out.push(bits.slice(i, i + 8).reduce((byte, bit) => (byte << 1) | bit, 0));
  }
  for (let pad = 0xec; out.length < capacity / 8; pad ^= 0xec ^ 0x11) out.push(pad);
  return out;
}

// Section 7.5 and 7.6: Reed–Solomon per block, then data and error correction interleaved.
function addErrorCorrection(data, version) {
  const [ecLength, groups] = BLOCKS_M[version];
  const generator = rsGenerator(ecLength);
  const blocks = [];
  let at = 0;
  for (const [count, size] of groups) {
    for (let i = 0; i < count; i++) {
      const block = data.slice(at, at + size);
      at += size;
      blocks.push({ data: block, ec: rsRemainder(block, generator) });
    }
  }
  const out = [];
  const longest = Math.max(...blocks.map((b) => b.data.length));
  for (let i = 0; i < longest; i++) {
    for (const block of blocks) if (i < block.data.length) out.push(block.data[i]);
  }
  for (let i = 0; i < ecLength; i++) {
    for (const block of blocks) out.push(block.ec[i]);
  }
  return out;
}

// GF(256) with the primitive polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d).
const EXP = new Uint8Array(512);
const LOG = new Uint8Array(256);
{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = x;
    LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= 0x11d;
  }
  for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255];
}
const gfMultiply = (a, b) => (a === 0 || b === 0 ? 0 : EXP[LOG[a] + LOG[b]]);

// (x − α^0)(x − α^1)…(x − α^(n−1)), highest degree first, leading 1 left out.
function rsGenerator(degree) {
  let poly = [1];
  for (let i = 0; i < degree; i++) {
    const next = new Array(poly.length + 1).fill(0);
    for (let j = 0; j < poly.length; j++) {
      next[j] ^= poly[j];
      next[j + 1] ^= gfMultiply(poly[j], EXP[i]);
    }
    poly = next;
  }
  return poly.slice(1);
}

function rsRemainder(data, generator) {
  const remainder = new Array(generator.length).fill(0);
  for (const byte of data) {
    const factor = byte ^ remainder.shift();
    remainder.push(0);
    for (let i = 0; i < generator.length; i++) remainder[i] ^= gfMultiply(generator[i], factor);
  }
  return remainder;
}

class QrSymbol {
  constructor(version) {
    this.version = version;
    this.size = 17 + 4 * version;
    this.modules = new Uint8Array(this.size * this.size);
    this.reserved = new Uint8Array(this.size * this.size); // function patterns
  }

  copy() {
    const other = new QrSymbol(this.version);
    other.modules.set(this.modules);
    other.reserved.set(this.reserved);
    return other;
  }

  set(x, y, dark) {
    this.modules[y * this.size + x] = dark ? 1 : 0;
    this.reserved[y * this.size + x] = 1;
  }

  // Section 6.3: finders with separators, timing, alignment, the dark module, and the
  // format and version areas (reserved now, written once the mask is known).
  drawFunctionPatterns() {
    const n = this.size;
    for (let i = 0; i < n; i++) {
      this.set(6, i, i % 2 === 0);
      this.set(i, 6, i % 2 === 0);
    }
    for (const [cx, cy] of [[3, 3], [n - 4, 3], [3, n - 4]]) {
      for (let dy = -4; dy <= 4; dy++) {
        for (let dx = -4; dx <= 4; dx++) {
          const x = cx + dx;
          const y = cy + dy;
          if (x < 0 || y < 0 || x >= n || y >= n) continue;
          const ring = Math.max(Math.abs(dx), Math.abs(dy));
          this.set(x, y, ring !== 2 && ring !== 4);
        }
      }
    }
    const centres = ALIGNMENT[this.version];
    for (const cy of centres) {
      for (const cx of centres) {
        const nearFinder = (cx === 6 && cy === 6) || (cx === 6 && cy === centres.at(-1)) || (cx === centres.at(-1) && cy === 6);
        if (nearFinder) continue;
        for (let dy = -2; dy <= 2; dy++) {
          for (let dx = -2; dx <= 2; dx++) this.set(cx + dx, cy + dy, Math.max(Math.abs(dx), Math.abs(dy)) !== 1);
        }
      }
    }
    this.drawFormat(0); // reserves the areas; rewritten after masking
    if (this.version >= 7) this.drawVersion();
  }

  // Section 7.9: 15 format bits, BCH(15,5), XOR 101010000010010, in both copies.
  drawFormat(mask) {
    const data = (EC_LEVEL_M << 3) | mask;
    let rem = data;
    for (let i = 0; i < 10; i++) rem = (rem << 1) ^ ((rem >>> 9) * 0x537);
    const bits = ((data << 10) | rem) ^ 0x5412;
    const bit = (i) => ((bits >>> i) & 1) === 1;
    const n = this.size;
    for (let i = 0; i <= 5; i++) this.set(8, i, bit(i));
    this.set(8, 7, bit(6));
    this.set(8, 8, bit(7));
    this.set(7, 8, bit(8));
    for (let i = 9; i < 15; i++) this.set(14 - i, 8, bit(i));
    for (let i = 0; i < 8; i++) this.set(n - 1 - i, 8, bit(i));
    for (let i = 8; i < 15; i++) this.set(8, n - 15 + i, bit(i));
    this.set(8, n - 8, true); // the dark module
  }

  // Section 7.10: 18 version bits, BCH(18,6), for versions 7 and up.
  drawVersion() {
    let rem = this.version;
    for (let i = 0; i < 12; i++) rem = (rem << 1) ^ ((rem >>> 11) * 0x1f25);
    const bits = (this.version << 12) | rem;
    for (let i = 0; i < 18; i++) {
      const dark = ((bits >>> i) & 1) === 1;
      const a = this.size - 11 + (i % 3);
      const b = Math.floor(i / 3);
      this.set(a, b, dark);
      this.set(b, a, dark);
    }
  }

  // Section 7.7.3: two-module columns, right to left, zig-zagging up and down, skipping the
  // vertical timing pattern; modules left over (remainder bits) stay light.
  placeCodewords(codewords) {
    const n = this.size;
    const total = codewords.length * 8;
    let i = 0;
    for (let right = n - 1; right >= 1; right -= 2) {
      if (right === 6) right = 5;
      const upward = ((right + 1) & 2) === 0;
      for (let step = 0; step < n; step++) {
        const y = upward ? n - 1 - step : step;
        for (let j = 0; j < 2; j++) {
          const x = right - j;
          if (this.reserved[y * n + x] || i >= total) continue;
          this.modules[y * n + x] = (codewords[i >>> 3] >>> (7 - (i & 7))) & 1;
          i++;
        }
      }
    }
  }

  // Section 7.8.2, table 10; i is the row, j the column.
  applyMask(mask) {
    const n = this.size;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        if (this.reserved[i * n + j]) continue;
        let flip;
        switch (mask) {
          case 0: flip = (i + j) % 2 === 0; break;
          case 1: flip = i % 2 === 0; break;
          case 2: flip = j % 3 === 0; break;
          case 3: flip = (i + j) % 3 === 0; break;
          case 4: flip = (Math.floor(i / 2) + Math.floor(j / 3)) % 2 === 0; break;
          case 5: flip = ((i * j) % 2) + ((i * j) % 3) === 0; break;
          case 6: flip = (((i * j) % 2) + ((i * j) % 3)) % 2 === 0; break;
          default: flip = (((i + j) % 2) + ((i * j) % 3)) % 2 === 0;
        }
        if (flip) this.modules[i * n + j] ^= 1;
      }
    }
  }

  // Section 7.8.3, table 11: runs, 2×2 blocks, finder-like patterns, dark proportion.
  penalty() {
    const n = this.size;
    const at = (x, y) => this.modules[y * n + x];
    let score = 0;
    for (let pass = 0; pass < 2; pass++) {
      const get = pass === 0 ? (a, b) => at(b, a) : (a, b) => at(a, b);
      for (let a = 0; a < n; a++) {
        let run = 1;
        for (let b = 1; b <= n; b++) {
          if (b < n && get(a, b) === get(a, b - 1)) {
            run++;
          } else {
            if (run >= 5) score += 3 + (run - 5);
            run = 1;
          }
        }
        for (let b = 0; b + 11 <= n; b++) {
          let forward = true;
          let backward = true;
          for (let k = 0; k < 11; k++) {
            const v = get(a, b + k);
            if (v !== FINDER_LIKE[k]) forward = false;
            if (v !== FINDER_LIKE[10 - k]) backward = false;
          }
          if (forward) score += 40;
          if (backward) score += 40;
        }
      }
    }
    for (let y = 0; y + 1 < n; y++) {
      for (let x = 0; x + 1 < n; x++) {
        const c = at(x, y);
        if (c === at(x + 1, y) && c === at(x, y + 1) && c === at(x + 1, y + 1)) score += 3;
      }
    }
    let dark = 0;
    for (const m of this.modules) dark += m;
    score += 10 * Math.floor(Math.abs((dark * 100) / (n * n) - 50) / 5);
    return score;
  }
}

// 1:1:3:1:1 dark-light-dark-light-dark followed by four light modules.
const FINDER_LIKE = [1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0];
