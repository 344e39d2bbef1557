//! Every file-system access of the crate: walking and hashing what is sent, reading it in chunks,
//! and on the receiving side looking at what is already there, creating folders and partial files
//! without following symbolic links, and renaming verified files into place.
//!
//! Symbolic links: the receiver never creates a folder or file through one. Each folder on the
//! way is checked with `symlink_metadata` before it is used; a new partial file is created with
//! `create_new` (which refuses to follow a link), a stale one is unlinked first, and an existing
//! one being resumed is checked to be the same inode before and after it is opened. The output
//! folder itself is the user's choice and may be a link.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::Error;
use crate::manifest::{Digest, PART_SUFFIX};

/// Read buffer for hashing.
const HASH_BUFFER: usize = 64 * 1024;

/// Wraps an I/O error with its path; a full disk or exhausted quota becomes [`Error::DiskFull`].
pub(crate) fn io_error(path: &Path, source: io::Error) -> Error {
    match source.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Error::DiskFull {
            path: path.to_owned(),
        },
        _ => Error::Io {
            path: path.to_owned(),
            source,
        },
    }
}

// ---- Sending side ----

/// The regular files under the paths to send.
pub(crate) struct Walk {
    /// In sending order.
    pub files: Vec<Source>,
    /// Symbolic links and special files met inside folders, not sent.
    pub skipped: Vec<PathBuf>,
}

/// One file to send.
pub(crate) struct Source {
    /// Its name in the manifest.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Its size when walked (the size sent is the size hashed).
    pub len: u64,
}

/// Walks the paths to send in order. A path named here is followed if it is a link (the user
/// named it); inside folders, entries are taken in byte order of their names, links are not
/// followed and are skipped along with sockets, FIFOs and devices. Names are relative to each
/// path's parent: `photos/` gives `photos/a.jpg`.
pub(crate) fn walk(paths: &[PathBuf]) -> Result<Walk, Error> {
    let mut walk = Walk {
        files: Vec::new(),
        skipped: Vec::new(),
    };
    for path in paths {
        let meta = fs::metadata(path).map_err(|e| io_error(path, e))?;
        let name = top_name(path)?;
        if meta.is_file() {
            walk.files.push(Source {
                name,
                path: path.clone(),
                len: meta.len(),
            });
        } else if meta.is_dir() {
            walk_folder(path, &name, &mut walk)?;
        } else {
            return Err(Error::NotAFile { path: path.clone() });
        }
    }
    Ok(walk)
}

fn walk_folder(folder: &Path, prefix: &str, walk: &mut Walk) -> Result<(), Error> {
    let mut entries = fs::read_dir(folder)
        .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
        .map_err(|e| io_error(folder, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| io_error(&path, e))?;
        if kind.is_symlink() || !(kind.is_file() || kind.is_dir()) {
            walk.skipped.push(path);
            continue;
        }
        let Ok(name) = entry.file_name().into_string() else {
            return Err(Error::NonUtf8Name { path });
        };
        let name = format!("{prefix}/{name}");
        if kind.is_dir() {
            walk_folder(&path, &name, walk)?;
        } else {
            let len = entry.metadata().map_err(|e| io_error(&path, e))?.len();
            walk.files.push(Source { name, path, len });
        }
    }
    Ok(())
}

/// The last component of a path to send; `.` and `..` are resolved first.
fn top_name(path: &Path) -> Result<String, Error> {
    let name = match path.file_name() {
        Some(name) => name.to_owned(),
        None => fs::canonicalize(path)
            .map_err(|e| io_error(path, e))?
            .file_name()
            .ok_or_else(|| Error::Unnamed {
                path: path.to_owned(),
            })?
            .to_owned(),
    };
    name.into_string().map_err(|_| Error::NonUtf8Name {
        path: path.to_owned(),
    })
}

/// Hashes a whole file, calling `on_bytes` with the length of each piece read. Returns the
/// number of bytes hashed, which is the size that will be offered.
pub(crate) fn hash_file(
    path: &Path,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<(u64, Digest), Error> {
    let mut file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut hasher = Sha256::new();
    let len =
        hash_from(&mut file, u64::MAX, &mut hasher, on_bytes).map_err(|e| io_error(path, e))?;
    Ok((len, Digest(hasher.finalize().into())))
}

/// A file being read for CHUNKs.
#[derive(Debug)]
pub(crate) struct SourceFile {
    file: File,
    path: PathBuf,
}

impl SourceFile {
    /// Opens a file whose offered size is `size`, positioned at `offset`.
    pub fn open(path: &Path, size: u64, offset: u64) -> Result<Self, Error> {
        let mut file = File::open(path).map_err(|e| io_error(path, e))?;
        let len = file.metadata().map_err(|e| io_error(path, e))?.len();
        if len != size {
            return Err(Error::FileChanged {
                path: path.to_owned(),
            });
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| io_error(path, e))?;
        Ok(SourceFile {
            file,
            path: path.to_owned(),
        })
    }

    /// Appends exactly `n` bytes from the current position to `out`.
    pub fn read_into(&mut self, out: &mut Vec<u8>, n: usize) -> Result<(), Error> {
        let start = out.len();
        out.resize(start + n, 0);
        self.file
            .read_exact(&mut out[start..])
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => Error::FileChanged {
                    path: self.path.clone(),
                },
                _ => io_error(&self.path, e),
            })
    }
}

// ---- Receiving side ----

/// What is at a destination path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// Nothing.
    Missing,
    /// A regular file of this length.
    File(u64),
}

/// What already exists for one offered file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Existing {
    /// At `OUT/PATH`.
    pub target: Found,
    /// At `OUT/PATH.part`.
    pub part: Found,
}

/// `PATH.part` next to `PATH`.
pub(crate) fn part_path(target: &Path) -> PathBuf {
    let mut part = target.as_os_str().to_owned();
    part.push(PART_SUFFIX);
    PathBuf::from(part)
}

/// Looks at `out/rel` and `out/rel.part` without changing anything. Every folder on the way that
/// exists must be a real folder, not a link; the file and partial file, where present, must be
/// regular files.
pub(crate) fn inspect(out: &Path, rel: &Path) -> Result<Existing, Error> {
    let missing = Existing {
        target: Found::Missing,
        part: Found::Missing,
    };
    match fs::metadata(out) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(Error::Obstructed {
                path: out.to_owned(),
                what: "the output folder is not a folder",
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(missing),
        Err(e) => return Err(io_error(out, e)),
    }
    let mut path = out.to_owned();
    for component in rel.parent().into_iter().flat_map(Path::components) {
        path.push(component);
        match lstat(&path)? {
            None => return Ok(missing),
            Some(meta) => check_folder(&path, &meta)?,
        }
    }
    let target = out.join(rel);
    let part = part_path(&target);
    Ok(Existing {
        target: found(&target)?,
        part: found(&part)?,
    })
}

/// Creates `out` (following links: the user chose it) and the folders of `rel` under it, one by
/// one, refusing links and non-folders on the way.
pub(crate) fn create_folders(out: &Path, rel: &Path) -> Result<(), Error> {
    fs::create_dir_all(out).map_err(|e| io_error(out, e))?;
    let mut path = out.to_owned();
    for component in rel.parent().into_iter().flat_map(Path::components) {
        path.push(component);
        if let Some(meta) = lstat(&path)? {
            check_folder(&path, &meta)?;
            continue;
        }
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Created meanwhile by someone else: look again.
                let meta = lstat(&path)?.ok_or_else(|| io_error(&path, e))?;
                check_folder(&path, &meta)?;
            }
            Err(e) => return Err(io_error(&path, e)),
        }
    }
    Ok(())
}

/// Hashes an existing regular file (a complete partial file, or a file already in place).
pub(crate) fn hash_existing(path: &Path) -> Result<Digest, Error> {
    let mut file = open_no_link(path, OpenOptions::new().read(true))?;
    let mut hasher = Sha256::new();
    hash_from(&mut file, u64::MAX, &mut hasher, &mut |_| {}).map_err(|e| io_error(path, e))?;
    Ok(Digest(hasher.finalize().into()))
}

/// Renames a verified partial file to its final name. Refuses a link or folder at the final
/// name, and an existing file unless `overwrite`.
pub(crate) fn rename_into_place(part: &Path, target: &Path, overwrite: bool) -> Result<(), Error> {
    match found(target)? {
        Found::File(_) if !overwrite => {
            return Err(Error::WouldOverwrite {
                path: target.to_owned(),
            });
        }
        _ => {}
    }
    fs::rename(part, target).map_err(|e| io_error(target, e))
}

/// Flushes an existing partial file to disk, as [`PartFile::finish`] does before its rename.
pub(crate) fn sync_existing(path: &Path) -> Result<(), Error> {
    let file = open_no_link(path, OpenOptions::new().read(true))?;
    file.sync_all().map_err(|e| io_error(path, e))
}

/// A partial file being written.
#[derive(Debug)]
pub(crate) struct PartFile {
    file: File,
    path: PathBuf,
}

impl PartFile {
    /// A new, empty partial file. A stale one at the path is unlinked first (unlinking a link
    /// removes the link, not its target) and the new one is created with `create_new`, which
    /// never follows a link.
    pub fn create(path: PathBuf) -> Result<Self, Error> {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path, e)),
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        Ok(PartFile { file, path })
    }

    /// Opens an existing partial file of `len` bytes to append to, feeding its content to
    /// `hasher` so that the final digest covers the whole file.
    pub fn resume(path: PathBuf, len: u64, hasher: &mut Sha256) -> Result<Self, Error> {
        let mut file = open_no_link(&path, OpenOptions::new().read(true).write(true))?;
        let hashed =
            hash_from(&mut file, len, hasher, &mut |_| {}).map_err(|e| io_error(&path, e))?;
        let now = file.metadata().map_err(|e| io_error(&path, e))?.len();
        if hashed != len || now != len {
            return Err(Error::Obstructed {
                path,
                what: "the partial file changed size after the transfer was accepted",
            });
        }
        Ok(PartFile { file, path })
    }

    /// Appends data; a full disk is [`Error::DiskFull`] and leaves the file for a later resume.
    pub fn append(&mut self, data: &[u8]) -> Result<(), Error> {
        self.file
            .write_all(data)
            .map_err(|e| io_error(&self.path, e))
    }

    /// Flushes the data to disk and renames the file to `target`.
    pub fn finish(self, target: &Path, overwrite: bool) -> Result<(), Error> {
        self.file.sync_all().map_err(|e| io_error(&self.path, e))?;
        drop(self.file);
        rename_into_place(&self.path, target, overwrite)
    }

    /// Closes and deletes the file (its content failed verification).
    pub fn discard(self) {
        drop(self.file);
        // Nothing more to do if it is already gone; the transfer is failing anyway.
        let _ = fs::remove_file(&self.path);
    }
}

/// Opens an existing regular file, refusing a link at its path: checked before opening, and the
/// opened file must be the inode the path names afterwards (a link swapped in between is caught).
fn open_no_link(path: &Path, options: &OpenOptions) -> Result<File, Error> {
    match lstat(path)? {
        Some(meta) if meta.file_type().is_symlink() => {
            return Err(Error::Symlink {
                path: path.to_owned(),
            });
        }
        Some(meta) if meta.is_file() => {}
        Some(_) => {
            return Err(Error::Obstructed {
                path: path.to_owned(),
                what: "not a regular file",
            });
        }
        None => {
            return Err(io_error(path, io::ErrorKind::NotFound.into()));
        }
    }
    let file = options.open(path).map_err(|e| io_error(path, e))?;
    let opened = file.metadata().map_err(|e| io_error(path, e))?;
    match lstat(path)? {
        Some(now) if now.is_file() && same_file(&now, &opened) => Ok(file),
        _ => Err(Error::Symlink {
            path: path.to_owned(),
        }),
    }
}

/// Feeds up to `limit` bytes from the current position to `hasher`; returns how many there were.
fn hash_from(
    file: &mut File,
    limit: u64,
    hasher: &mut Sha256,
    on_bytes: &mut dyn FnMut(u64),
) -> io::Result<u64> {
    let mut buf = vec![0u8; HASH_BUFFER];
    let mut total = 0u64;
    let mut reader = file.take(limit);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
        on_bytes(n as u64);
    }
}

/// `symlink_metadata`, with `None` for a path that does not exist.
fn lstat(path: &Path) -> Result<Option<Metadata>, Error> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

fn check_folder(path: &Path, meta: &Metadata) -> Result<(), Error> {
    if meta.file_type().is_symlink() {
        Err(Error::Symlink {
            path: path.to_owned(),
        })
    } else if meta.is_dir() {
        Ok(())
    } else {
        Err(Error::Obstructed {
            path: path.to_owned(),
            what: "a folder is needed here",
        })
    }
}

/// What is at a file path (the target or its partial file).
fn found(path: &Path) -> Result<Found, Error> {
    match lstat(path)? {
        None => Ok(Found::Missing),
        Some(meta) if meta.file_type().is_symlink() => Err(Error::Symlink {
            path: path.to_owned(),
        }),
        Some(meta) if meta.is_file() => Ok(Found::File(meta.len())),
        Some(meta) if meta.is_dir() => Err(Error::Obstructed {
            path: path.to_owned(),
            what: "a folder is where a file goes",
        }),
        Some(_) => Err(Error::Obstructed {
            path: path.to_owned(),
            what: "not a regular file",
        }),
    }
}

#[cfg(unix)]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.len() == b.len()
}
