// The receive page's storage, run as a dedicated worker: it writes received files into the
// Origin Private File System and hashes them as they arrive, off the page's main thread.
//
// Files go to OPFS `switchboard-received/<transfer key>/PATH`, written through
// `createSyncAccessHandle()`, which writes in place: a page that is closed or reloaded keeps
// every byte already written in `PATH.part`, and the next visit resumes from its length, as
// docs/transfer.md's Resume section asks. (`createWritable()` writes to a swap file that only
// replaces the file on close(), so a reload would lose the partial file.) The transfer key
// comes from the offered names, sizes and digests, so the same offer lands in the same folder
// and different offers never meet.
//
// Without OPFS sync access handles the files are kept in memory as Blob parts instead (no
// resume after a reload).
//
// Requests `{id, op, ...}` are answered `{id, result}` or `{id, error: {kind, message}}`, in
// order. Writes are not answered; progress comes as `{event: 'written', file, bytes}` and a
// failed write as `{event: 'error', error}` (later writes are then dropped).

import { Sha256 } from './sha256.js';

const ROOT = 'switchboard-received';
const PART = '.part';
const READ_BLOCK = 1 << 20;
const HOUR_MS = 3600_000;
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

let backend = null; // 'opfs' | 'memory'
let folder = null; // this transfer's OPFS folder
let current = null; // the file being written
let failed = null;

class StoreError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

const refusedInTheWay = () =>
  new StoreError('obstructed', 'refused: something on the receiving side is in the way of a file in the offer');

function storeError(error, what) {
  if (error instanceof StoreError) return error;
  if (error?.name === 'QuotaExceededError') {
    return new StoreError('disk_full', 'the receiving disk is full');
  }
  return new StoreError('fs', `file-system error: ${what}: ${error?.name ?? 'Error'}: ${error?.message ?? error}`);
}

const ops = {
  async init({ key, memory }) {
    const opfs = typeof navigator !== 'undefined' && navigator.storage?.getDirectory
      && typeof FileSystemFileHandle !== 'undefined' && 'createSyncAccessHandle' in FileSystemFileHandle.prototype;
    if (memory || !opfs) {
      backend = 'memory';
      return { backend, reason: memory ? 'asked for memory' : 'this browser has no OPFS sync access handles' };
    }
    try {
      const root = await (await navigator.storage.getDirectory()).getDirectoryHandle(ROOT, { create: true });
      await tidy(root, key);
      folder = await root.getDirectoryHandle(key, { create: true });
      backend = 'opfs';
      return { backend };
    } catch (error) {
      backend = 'memory';
      return { backend, reason: `the browser's file storage failed (${error?.name ?? error})` };
    }
  },

  // docs/transfer.md, Receiver step 2. Names were checked against each other already. Files
  // that exist with other contents are replaced: this folder is the app's own scratch space,
  // not a place the user chose, so there is nothing of theirs to protect.
  async plan({ files }) {
    const plans = [];
    for (const file of files) {
      if (backend === 'memory') {
        plans.push(file.size === 0 ? { kind: 'empty', offset: 0 } : { kind: 'fresh', offset: 0 });
        continue;
      }
      const { dir, name } = await locate(file.path, false);
      let plan = { kind: 'fresh', offset: 0 };
      if (dir) {
        const target = await existingFile(dir, name);
        if (target && target.size === file.size && (await hashBlob(target)) === file.sha256) {
          plans.push({ kind: 'in_place', offset: file.size });
          continue;
        }
        const part = await existingFile(dir, name + PART);
        if (part && part.size === file.size && file.size > 0) {
          if ((await hashBlob(part)) === file.sha256) plan = { kind: 'part_complete', offset: file.size };
        } else if (part && part.size > 0 && part.size < file.size) {
          plan = { kind: 'resume', offset: part.size };
        }
      }
      if (file.size === 0) plan = { kind: 'empty', offset: 0 };
      plans.push(plan);
    }
    return { plans };
  },

  // Opens PATH.part for writing from `offset`, hashing what it already holds.
  async open({ file, path, offset }) {
    failed = null;
    const hasher = new Sha256();
    if (backend === 'memory') {
      current = { file, path, pos: 0, hasher, chunks: [] };
      return {};
    }
    const { dir, name } = await locate(path, true);
    const handle = await dir.getFileHandle(name + PART, { create: true });
    const access = await syncAccess(handle);
    try {
      access.truncate(offset);
      const buffer = new Uint8Array(READ_BLOCK);
      for (let at = 0; at < offset;) {
        const n = access.read(buffer.subarray(0, Math.min(READ_BLOCK, offset - at)), { at });
        if (n <= 0) throw new StoreError('fs', 'file-system error: the partial file is shorter than it was');
        hasher.update(buffer.subarray(0, n));
        at += n;
      }
    } catch (error) {
      access.close();
      throw error;
    }
    current = { file, path, pos: offset, hasher, dir, name, handle, access };
    return {};
  },

  // Called after the last write of the current file: compares the digest, then renames
  // PATH.part to PATH. A mismatch deletes the partial file.
  async finish({ sha256 }) {
    if (failed) throw failed;
    const c = current;
    current = null;
    const digest = c.hasher.digestHex();
    if (backend === 'memory') {
      if (digest !== sha256) return { match: false, digest };
      return { match: true, digest, blob: new File(c.chunks, baseName(c.path)) };
    }
    c.access.flush();
    c.access.close();
    if (digest !== sha256) {
      await c.dir.removeEntry(c.name + PART).catch(() => {});
      return { match: false, digest };
    }
    return { match: true, digest, blob: await promote(c.dir, c.name, c.handle) };
  },

  // A file that needs no data: already in place, a complete .part, or empty.
  async complete({ path, sha256, kind }) {
    if (backend === 'memory') {
      // Memory plans only skip empty files.
      if (sha256 !== EMPTY_SHA256) return { match: false, digest: EMPTY_SHA256 };
      return { match: true, digest: EMPTY_SHA256, blob: new File([], baseName(path)) };
    }
    const { dir, name } = await locate(path, true);
    if (kind === 'in_place') {
      return { digest: sha256, blob: await (await dir.getFileHandle(name)).getFile() };
    }
    const handle = await dir.getFileHandle(name + PART, { create: true });
    if (kind === 'empty') {
      const access = await syncAccess(handle);
      access.truncate(0);
      access.flush();
      access.close();
      if (sha256 !== EMPTY_SHA256) {
        await dir.removeEntry(name + PART).catch(() => {});
        return { match: false, digest: EMPTY_SHA256 };
      }
    }
    return { digest: sha256, blob: await promote(dir, name, handle) };
  },

  // Drops this transfer's folder (the user is done with the files).
  async discard() {
    if (backend !== 'opfs' || !folder) return {};
    const root = await (await navigator.storage.getDirectory()).getDirectoryHandle(ROOT);
    await root.removeEntry(folder.name, { recursive: true });
    folder = null;
    return {};
  },
};

function write({ file, buffer, offset }) {
  if (failed || !current || current.file !== file) return;
  const data = new Uint8Array(buffer, offset);
  try {
    if (backend === 'memory') {
      current.chunks.push(data);
    } else {
      const n = current.access.write(data, { at: current.pos });
      if (n !== data.length) throw new DOMException('short write', 'QuotaExceededError');
    }
    current.hasher.update(data);
    current.pos += data.length;
    postMessage({ event: 'written', file, bytes: current.pos });
  } catch (error) {
    failed = storeError(error, current.path);
    try {
      current.access?.flush();
    } catch { /* keep what was written */ }
    postMessage({ event: 'error', error: { kind: failed.kind, message: failed.message } });
  }
}

// PATH.part → PATH (replacing an older PATH); returns the final file.
async function promote(dir, name, partHandle) {
  await dir.removeEntry(name).catch((e) => {
    if (e?.name !== 'NotFoundError') throw e;
  });
  if (typeof partHandle.move === 'function') {
    await partHandle.move(name);
    return (await dir.getFileHandle(name)).getFile();
  }
  // No FileSystemHandle.move(): copy, then drop the partial file.
  const target = await syncAccess(await dir.getFileHandle(name, { create: true }));
  try {
    const part = await partHandle.getFile();
    for (let at = 0; at < part.size; at += READ_BLOCK) {
      target.write(new Uint8Array(await part.slice(at, at + READ_BLOCK).arrayBuffer()), { at });
    }
    target.flush();
  } finally {
    target.close();
  }
  await dir.removeEntry(name + PART);
  return (await dir.getFileHandle(name)).getFile();
}

// An access handle locks its file. After a reload the previous page's worker may still hold
// the lock for a moment, so a locked file is retried for a while.
async function syncAccess(handle) {
  for (let delay = 50; ; delay *= 2) {
    try {
      return await handle.createSyncAccessHandle();
    } catch (error) {
      if (error?.name !== 'NoModificationAllowedError' || delay > 6400) throw error;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

// The folder holding PATH and its last component. Without `create`, dir is null when a folder
// on the way does not exist. A file where a folder should be is refused.
async function locate(path, create) {
  const parts = path.split('/');
  const name = parts.pop();
  let dir = folder;
  for (const part of parts) {
    try {
      dir = await dir.getDirectoryHandle(part, { create });
    } catch (error) {
      if (error?.name === 'NotFoundError' && !create) return { dir: null, name };
      if (error?.name === 'TypeMismatchError') throw refusedInTheWay();
      throw error;
    }
  }
  return { dir, name };
}

// The File at `name` in `dir`, or null; a folder there is refused.
async function existingFile(dir, name) {
  try {
    return await (await dir.getFileHandle(name)).getFile();
  } catch (error) {
    if (error?.name === 'NotFoundError') return null;
    if (error?.name === 'TypeMismatchError') throw refusedInTheWay();
    throw error;
  }
}

async function hashBlob(blob) {
  const hasher = new Sha256();
  for (let at = 0; at < blob.size; at += READ_BLOCK) {
    hasher.update(new Uint8Array(await blob.slice(at, at + READ_BLOCK).arrayBuffer()));
  }
  return hasher.digestHex();
}

function baseName(path) {
  return path.slice(path.lastIndexOf('/') + 1);
}

// Removes earlier transfers' folders: finished ones (no .part inside) an hour after their
// last file was written, unfinished ones after a week. Locked or vanishing entries are skipped.
async function tidy(root, keep) {
  const now = Date.now();
  for await (const [name, handle] of root.entries()) {
    if (name === keep || handle.kind !== 'directory') continue;
    try {
      const { parts, newest } = await survey(handle);
      const age = now - newest;
      if ((parts === 0 && age > HOUR_MS) || age > 7 * 24 * HOUR_MS) {
        await root.removeEntry(name, { recursive: true });
      }
    } catch { /* in use by another page, or already gone */ }
  }
}

async function survey(dir) {
  let parts = 0;
  let newest = 0;
  for await (const [name, handle] of dir.entries()) {
    if (handle.kind === 'directory') {
      const inner = await survey(handle);
      parts += inner.parts;
      newest = Math.max(newest, inner.newest);
    } else {
      if (name.endsWith(PART)) parts++;
      newest = Math.max(newest, (await handle.getFile()).lastModified);
    }
  }
  return { parts, newest };
}

let queue = Promise.resolve();
self.onmessage = ({ data }) => {
  if (data.op === 'release') {
    // The page is going away: unlock the partial file now rather than when the worker dies.
    try {
      current?.access?.flush();
      current?.access?.close();
    } catch { /* already closed */ }
    failed = new StoreError('fs', 'file-system error: the page was closed');
    return;
  }
  if (data.op === 'write') {
    // In order with the requests around it.
    queue = queue.then(() => write(data));
    return;
  }
  queue = queue.then(async () => {
    try {
      const result = await ops[data.op](data);
      postMessage({ id: data.id, result });
    } catch (error) {
      const e = storeError(error, data.path ?? 'storage');
      postMessage({ id: data.id, error: { kind: e.kind, message: e.message } });
    }
  });
};
