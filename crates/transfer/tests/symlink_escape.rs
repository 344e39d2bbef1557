//! A symbolic link already inside the output folder cannot redirect a write outside it.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::{Pair, drain, offer, random_bytes, tree, write};
use transfer::{Error, Receiver, wire};

/// `sandbox/out` (the output) and `sandbox/outside` (must stay as it is).
fn sandbox() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let sandbox = tempfile::tempdir().unwrap();
    let out = sandbox.path().join("out");
    let outside = sandbox.path().join("outside");
    fs::create_dir(&out).unwrap();
    fs::create_dir(&outside).unwrap();
    (sandbox, out, outside)
}

/// Offers the files, accepts, and returns the accept error after checking that a CANCEL went out.
fn accept_error(out: &Path, overwrite: bool, files: &[(&str, &[u8])]) -> Error {
    let mut receiver = Receiver::new(out, overwrite);
    receiver.handle(&offer(files)).unwrap();
    let error = receiver.accept().unwrap_err();
    let sent = drain(&mut receiver);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0][0], wire::CANCEL);
    error
}

#[test]
fn a_linked_folder_is_not_written_through() {
    let (_sandbox, out, outside) = sandbox();
    symlink(&outside, out.join("link")).unwrap();
    let error = accept_error(&out, false, &[("link/evil.txt", b"evil")]);
    assert!(matches!(error, Error::Symlink { ref path } if *path == out.join("link")));
    assert!(tree(&outside).is_empty());
    assert_eq!(tree(&out), ["link"]);
}

#[test]
fn a_linked_folder_deeper_down_is_not_written_through() {
    let (_sandbox, out, outside) = sandbox();
    fs::create_dir(out.join("real")).unwrap();
    symlink(&outside, out.join("real/link")).unwrap();
    let error = accept_error(&out, true, &[("real/link/sub/evil.txt", b"evil")]);
    assert!(matches!(error, Error::Symlink { ref path } if *path == out.join("real/link")));
    assert!(tree(&outside).is_empty());
}

#[test]
fn a_linked_part_file_is_not_resumed_through() {
    let (_sandbox, out, outside) = sandbox();
    write(&outside.join("victim"), b"victim");
    symlink(outside.join("victim"), out.join("a.part")).unwrap();
    let error = accept_error(&out, false, &[("a", b"0123456789")]);
    assert!(matches!(error, Error::Symlink { ref path } if *path == out.join("a.part")));
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"victim");
}

#[test]
fn a_dangling_link_as_part_file_creates_nothing() {
    let (_sandbox, out, outside) = sandbox();
    symlink(outside.join("new"), out.join("b.part")).unwrap();
    let error = accept_error(&out, false, &[("b", b"data")]);
    assert!(matches!(error, Error::Symlink { .. }));
    assert!(tree(&outside).is_empty());
}

#[test]
fn a_linked_final_file_is_not_replaced_even_with_overwrite() {
    let (_sandbox, out, outside) = sandbox();
    write(&outside.join("victim"), b"victim");
    symlink(outside.join("victim"), out.join("c")).unwrap();
    let error = accept_error(&out, true, &[("c", b"new content")]);
    assert!(matches!(error, Error::Symlink { ref path } if *path == out.join("c")));
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"victim");
}

#[test]
fn a_link_planted_after_accept_is_caught() {
    let (sandbox, out, outside) = sandbox();
    let src = sandbox.path().join("src");
    write(&src.join("a"), &random_bytes(200_000, 1));
    write(&src.join("d/b"), b"second");
    let mut pair = Pair::new(&[src.join("a"), src.join("d")], &out, false);
    pair.window = 1;
    while !out.join("a.part").exists() {
        assert!(pair.step());
    }
    // The folder of the second file did not exist at accept time; a link appears there now.
    symlink(&outside, out.join("d")).unwrap();
    pair.run();
    assert!(matches!(
        pair.receiver_errors[..],
        [Error::Symlink { ref path }] if *path == out.join("d")
    ));
    assert!(tree(&outside).is_empty());
    assert!(pair.sender.is_finished() && !pair.sender.is_complete());
}

#[test]
fn a_part_file_swapped_for_a_link_after_accept_is_caught() {
    let (sandbox, out, outside) = sandbox();
    let src = sandbox.path().join("src");
    let first = random_bytes(100_000, 2);
    let second = random_bytes(50_000, 3);
    write(&src.join("first"), &first);
    write(&src.join("second"), &second);
    write(&out.join("second.part"), &second[..1000]);
    write(&outside.join("victim"), &random_bytes(1000, 4));
    let victim = fs::read(outside.join("victim")).unwrap();
    let mut pair = Pair::new(&[src.join("first"), src.join("second")], &out, false);
    pair.window = 1;
    while !out.join("first.part").exists() {
        assert!(pair.step());
    }
    fs::remove_file(out.join("second.part")).unwrap();
    symlink(outside.join("victim"), out.join("second.part")).unwrap();
    pair.run();
    assert!(matches!(
        pair.receiver_errors[..],
        [Error::Symlink { ref path }] if *path == out.join("second.part")
    ));
    assert_eq!(fs::read(outside.join("victim")).unwrap(), victim);
    assert_eq!(fs::read(out.join("first")).unwrap(), first);
}
