//! The manifest an OFFER carries, and the rules a file name must pass before anything is written
//! under it (`docs/transfer.md`, "File names").

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::error::Error;
use crate::wire::{MAX_FILES, MAX_SIZE, VERSION, WireError, parse_json, write_json};

/// The files on offer, in the order they are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// One entry per file; the index in this list is the file index in CHUNK, ACK and VERIFIED.
    pub files: Vec<FileEntry>,
}

/// One offered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative, `/`-separated name; see [`sanitize`] for what a receiver accepts.
    pub path: String,
    /// Size in bytes, at most 2^53 − 1.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: Digest,
}

/// A SHA-256 digest; lowercase hex on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

/// Why a file name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The name is the empty string.
    #[error("it is empty")]
    Empty,
    /// Longer than [`MAX_PATH_LEN`] bytes.
    #[error("it is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// Starts with `/`.
    #[error("it is an absolute path")]
    Absolute,
    /// Contains `\`, a separator on Windows.
    #[error("it contains a backslash")]
    Backslash,
    /// Contains `:`, which makes drive-relative paths and alternate data streams on Windows.
    #[error("it contains ':' (a drive letter or data stream on Windows)")]
    Colon,
    /// Contains a control character (U+0000–U+001F, U+007F–U+009F).
    #[error("it contains a control character")]
    ControlCharacter,
    /// Has an empty component: a doubled or trailing `/`.
    #[error("it has an empty component (a doubled or trailing '/')")]
    EmptyComponent,
    /// Has a `.` or `..` component.
    #[error("it has a '.' or '..' component")]
    DotComponent,
    /// A component is longer than [`MAX_COMPONENT_LEN`] bytes.
    #[error("a component is longer than {MAX_COMPONENT_LEN} bytes")]
    ComponentTooLong,
    /// The last component is longer than [`MAX_NAME_LEN`] bytes, leaving no room for `.part`.
    #[error("the file name is longer than {MAX_NAME_LEN} bytes (NAME.part must fit in 255)")]
    NameTooLong,
    /// A component is a reserved device name on Windows.
    #[error("{0:?} is a reserved device name on Windows")]
    DeviceName(String),
    /// Another file has the same name, ignoring case.
    #[error("it names the same file as {0:?} (names are compared ignoring case)")]
    Duplicate(String),
    /// Another file's name uses this file as a folder.
    #[error("it is a file, but {0:?} uses it as a folder")]
    FileAndFolder(String),
    /// This name is where another file's partial file goes.
    #[error("it is where the partial file of {0:?} is written while receiving")]
    PartCollision(String),
}

/// The longest name, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// The longest component, in bytes.
pub const MAX_COMPONENT_LEN: usize = 255;
/// The longest last component, in bytes: 255 less the `.part` suffix.
pub const MAX_NAME_LEN: usize = MAX_COMPONENT_LEN - PART_SUFFIX.len();
/// Appended to a file's name while it is being received.
pub const PART_SUFFIX: &str = ".part";

/// Checks one manifest name and turns it into a relative path made only of normal components.
/// The checks between names (duplicates, a file used as a folder) are in
/// [`Manifest::safe_paths`].
pub fn sanitize(path: &str) -> Result<PathBuf, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    if path.contains(':') {
        return Err(PathError::Colon);
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    let components: Vec<&str> = path.split('/').collect();
    for component in &components {
        if component.is_empty() {
            return Err(PathError::EmptyComponent);
        }
        if *component == "." || *component == ".." {
            return Err(PathError::DotComponent);
        }
        if component.len() > MAX_COMPONENT_LEN {
            return Err(PathError::ComponentTooLong);
        }
        if is_device_name(component) {
            return Err(PathError::DeviceName((*component).to_owned()));
        }
    }
    if components
        .last()
        .is_some_and(|name| name.len() > MAX_NAME_LEN)
    {
        return Err(PathError::NameTooLong);
    }
    Ok(components.iter().collect())
}

impl Manifest {
    /// The sum of the file sizes.
    pub fn total_size(&self) -> u64 {
        self.files
            .iter()
            .fold(0, |sum, f| sum.saturating_add(f.size))
    }

    /// Checks every name with [`sanitize`] and the names against each other (case-insensitive
    /// duplicates, a file that another name uses as a folder, a name where another file's `.part`
    /// goes), returning the safe relative paths in manifest order. The first problem found, in
    /// manifest order, refuses the whole manifest.
    pub fn safe_paths(&self) -> Result<Vec<PathBuf>, Error> {
        let refuse = |path: &str, problem| Error::UnsafePath {
            path: path.to_owned(),
            problem,
        };
        let mut paths = Vec::with_capacity(self.files.len());
        let mut files: HashMap<String, usize> = HashMap::new();
        let mut folders: HashMap<String, usize> = HashMap::new();
        let mut lowered = Vec::with_capacity(self.files.len());
        for (i, file) in self.files.iter().enumerate() {
            paths.push(sanitize(&file.path).map_err(|p| refuse(&file.path, p))?);
            let lower = file.path.to_lowercase();
            if let Some(&first) = files.get(&lower) {
                return Err(refuse(
                    &file.path,
                    PathError::Duplicate(self.files[first].path.clone()),
                ));
            }
            files.insert(lower.clone(), i);
            for (at, _) in lower.match_indices('/') {
                folders.entry(lower[..at].to_owned()).or_insert(i);
            }
            lowered.push(lower);
        }
        for (i, lower) in lowered.iter().enumerate() {
            let name = &self.files[i].path;
            if let Some(&user) = folders.get(lower) {
                let other = self.files[user].path.clone();
                return Err(refuse(name, PathError::FileAndFolder(other)));
            }
            let part = format!("{lower}{PART_SUFFIX}");
            if let Some(&j) = files.get(&part).or_else(|| folders.get(&part)) {
                return Err(refuse(
                    &self.files[j].path,
                    PathError::PartCollision(name.clone()),
                ));
            }
        }
        Ok(paths)
    }

    /// Parses an OFFER body. Checks the shape, version, digests and limits, not the names.
    pub(crate) fn from_json(body: &[u8]) -> Result<Self, WireError> {
        // The version first, so that a later version's different shape is reported as such.
        let version: VersionJson = parse_json("OFFER", body)?;
        if version.v != VERSION {
            return Err(WireError::UnsupportedVersion(version.v));
        }
        let offer: OfferJson = parse_json("OFFER", body)?;
        check_files(offer.files.len())?;
        let mut files = Vec::with_capacity(offer.files.len());
        for (index, file) in offer.files.into_iter().enumerate() {
            if file.size > MAX_SIZE {
                return Err(WireError::NumberTooLarge { message: "OFFER" });
            }
            let sha256 = Digest::from_hex(&file.sha256).ok_or(WireError::BadDigest { index })?;
            files.push(FileEntry {
                path: file.path,
                size: file.size,
                sha256,
            });
        }
        Ok(Manifest { files })
    }

    /// Appends the OFFER body.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        check_files(self.files.len())?;
        if self.files.iter().any(|f| f.size > MAX_SIZE) {
            return Err(WireError::NumberTooLarge { message: "OFFER" });
        }
        let files = self
            .files
            .iter()
            .map(|f| FileJson {
                path: f.path.clone(),
                size: f.size,
                sha256: f.sha256.to_hex(),
            })
            .collect();
        write_json("OFFER", out, &OfferJson { v: VERSION, files })
    }
}

impl Digest {
    /// The SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Digest(sha2::Sha256::digest(data).into())
    }

    /// Parses exactly 64 lowercase hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Digest(out))
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn check_files(count: usize) -> Result<(), WireError> {
    if count == 0 {
        return Err(WireError::NoFiles);
    }
    if count > MAX_FILES {
        return Err(WireError::TooManyFiles {
            message: "OFFER",
            count,
        });
    }
    Ok(())
}

/// CON, PRN, AUX, NUL, COM1–9 and LPT1–9 (and the superscript-digit forms Windows also reserves),
/// in any case, alone or followed by an extension or trailing spaces.
fn is_device_name(component: &str) -> bool {
    let stem = component.split('.').next().unwrap_or(component);
    let stem = stem.trim_end_matches(' ').to_ascii_uppercase();
    if matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL") {
        return true;
    }
    let Some((prefix, digit)) = stem.split_at_checked(3) else {
        return false;
    };
    matches!(prefix, "COM" | "LPT")
        && matches!(
            digit,
            "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "¹" | "²" | "³"
        )
}

#[derive(Deserialize)]
struct VersionJson {
    v: u64,
}

#[derive(Serialize, Deserialize)]
struct OfferJson {
    v: u64,
    files: Vec<FileJson>,
}

#[derive(Serialize, Deserialize)]
struct FileJson {
    path: String,
    size: u64,
    sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(names: &[&str]) -> Manifest {
        Manifest {
            files: names
                .iter()
                .map(|n| FileEntry {
                    path: (*n).to_owned(),
                    size: 0,
                    sha256: Digest::of(b""),
                })
                .collect(),
        }
    }

    fn problem(names: &[&str]) -> (String, PathError) {
        match manifest(names).safe_paths() {
            Err(Error::UnsafePath { path, problem }) => (path, problem),
            other => panic!("{names:?} -> {other:?}"),
        }
    }

    #[test]
    fn accepted_names() {
        for name in [
            "a",
            "photos/a.jpg",
            "deep/er/still/x.tar.gz",
            ".hidden",
            "...",
            "a..b",
            "CONSOLE.txt",
            "com10",
            "lpt0",
            "nul_",
            "x.con",
            "日本語/ファイル.txt",
            "with space/ and  spaces ",
            &"n".repeat(MAX_NAME_LEN),
            &format!("{}/x", "d".repeat(MAX_COMPONENT_LEN)),
        ] {
            let path = sanitize(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
            assert_eq!(path.to_str().unwrap(), name);
        }
        let ok = manifest(&["a/b", "a/c", "A.txt", "b/a", "x.part2", "x"]);
        assert_eq!(ok.safe_paths().unwrap().len(), 6);
    }

    #[test]
    fn refused_names() {
        use PathError::*;
        let long_path = "a/".repeat(MAX_PATH_LEN / 2) + "b";
        let cases: Vec<(&str, PathError)> = vec![
            ("", Empty),
            (&long_path, TooLong),
            ("/etc/passwd", Absolute),
            ("/", Absolute),
            ("a\\b", Backslash),
            ("..\\evil", Backslash),
            ("C:", Colon),
            ("C:evil", Colon),
            ("c:/windows/x", Colon),
            ("file.txt:stream", Colon),
            ("a\0b", ControlCharacter),
            ("a\nb", ControlCharacter),
            ("a\x7f", ControlCharacter),
            ("a\u{85}", ControlCharacter),
            ("a//b", EmptyComponent),
            ("a/", EmptyComponent),
            ("..", DotComponent),
            ("../x", DotComponent),
            ("a/../../x", DotComponent),
            ("./a", DotComponent),
            ("a/./b", DotComponent),
            ("a/.", DotComponent),
        ];
        for (name, expected) in cases {
            assert_eq!(sanitize(name), Err(expected), "{name:?}");
        }
        let long = "c".repeat(MAX_COMPONENT_LEN + 1);
        assert_eq!(
            sanitize(&format!("{long}/x")),
            Err(PathError::ComponentTooLong)
        );
        assert_eq!(
            sanitize(&"n".repeat(MAX_NAME_LEN + 1)),
            Err(PathError::NameTooLong)
        );
        for device in [
            "CON",
            "con",
            "Prn",
            "aux",
            "NUL",
            "COM1",
            "com9",
            "LPT1",
            "lpt9",
            "COM¹",
            "lpt³",
            "CON.txt",
            "nul.tar.gz",
            "AUX ",
            "con .txt",
        ] {
            assert_eq!(
                sanitize(&format!("dir/{device}")),
                Err(PathError::DeviceName(device.to_owned())),
                "{device:?}"
            );
        }
    }

    #[test]
    fn conflicts_between_names() {
        assert_eq!(
            problem(&["a", "b", "a"]),
            ("a".into(), PathError::Duplicate("a".into()))
        );
        assert_eq!(
            problem(&["Photo.JPG", "photo.jpg"]),
            ("photo.jpg".into(), PathError::Duplicate("Photo.JPG".into()))
        );
        assert_eq!(
            problem(&["a", "a/b"]),
            ("a".into(), PathError::FileAndFolder("a/b".into()))
        );
        assert_eq!(
            problem(&["x/y/z", "x/y"]),
            ("x/y".into(), PathError::FileAndFolder("x/y/z".into()))
        );
        assert_eq!(
            problem(&["A", "a/b"]),
            ("A".into(), PathError::FileAndFolder("a/b".into()))
        );
        assert_eq!(
            problem(&["v.mp4", "v.mp4.part"]),
            (
                "v.mp4.part".into(),
                PathError::PartCollision("v.mp4".into())
            )
        );
        assert_eq!(
            problem(&["v", "v.part/x"]),
            ("v.part/x".into(), PathError::PartCollision("v".into()))
        );
        assert_eq!(
            problem(&["ok", "../bad"]),
            ("../bad".into(), PathError::DotComponent)
        );
    }

    #[test]
    fn digests() {
        let empty = Digest::of(b"");
        assert_eq!(
            empty.to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::from_hex(&empty.to_hex()), Some(empty));
        assert_eq!(Digest::from_hex(&empty.to_hex().to_uppercase()), None);
        assert_eq!(Digest::from_hex(&"0".repeat(63)), None);
        assert_eq!(Digest::from_hex(&"0".repeat(65)), None);
        assert_eq!(Digest::from_hex(&"g".repeat(64)), None);
        // Multi-byte characters cannot sneak in through byte counting.
        assert_eq!(Digest::from_hex(&"é".repeat(32)), None);
    }

    #[test]
    fn total_size() {
        let mut m = manifest(&["a", "b"]);
        m.files[0].size = 5;
        m.files[1].size = 7;
        assert_eq!(m.total_size(), 12);
    }
}
