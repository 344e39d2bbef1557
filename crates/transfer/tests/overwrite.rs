//! Existing files are never replaced unless overwriting is allowed; obstacles are refused.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common;

use std::fs;

use common::{Pair, drain, offer, tree, write};
use transfer::{Error, Receiver, wire};

#[test]
fn an_existing_file_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("src/new"), b"new file");
    write(&dir.path().join("src/taken"), b"sender's version");
    let out = dir.path().join("out");
    write(&out.join("taken"), b"receiver's own file");
    let mut pair = Pair::new(
        &[dir.path().join("src/new"), dir.path().join("src/taken")],
        &out,
        false,
    );
    pair.run();
    let error = &pair.receiver_errors[0];
    assert!(matches!(error, Error::WouldOverwrite { path } if *path == out.join("taken")));
    let message = error.to_string();
    assert!(
        message.contains(&out.join("taken").display().to_string()),
        "{message}"
    );
    assert_eq!(tree(&out), ["taken"], "not even the first file was started");
    assert_eq!(fs::read(out.join("taken")).unwrap(), b"receiver's own file");
    let reason = pair.receiver_cancel().unwrap();
    assert!(reason.contains("already exists"), "{reason}");
    assert!(
        !reason.contains(out.to_str().unwrap()),
        "no local path goes to the peer: {reason}"
    );
    assert_eq!(pair.sent_of(wire::CHUNK), 0);
}

#[test]
fn overwrite_replaces_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("src/taken"), b"sender's version");
    write(&dir.path().join("src/empty"), b"");
    let out = dir.path().join("out");
    write(&out.join("taken"), b"old");
    write(&out.join("empty"), b"not empty");
    let mut pair = Pair::new(
        &[dir.path().join("src/taken"), dir.path().join("src/empty")],
        &out,
        true,
    );
    pair.run_to_completion();
    assert_eq!(fs::read(out.join("taken")).unwrap(), b"sender's version");
    assert_eq!(fs::read(out.join("empty")).unwrap(), b"");
    assert_eq!(tree(&out), ["empty", "taken"]);
}

#[test]
fn a_folder_where_the_file_goes_is_refused_even_with_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("name/inside")).unwrap();
    let mut receiver = Receiver::new(dir.path(), true);
    receiver.handle(&offer(&[("name", b"x")])).unwrap();
    assert!(matches!(
        receiver.accept(),
        Err(Error::Obstructed { ref path, .. }) if *path == dir.path().join("name")
    ));
    assert_eq!(drain(&mut receiver)[0][0], wire::CANCEL);
    assert_eq!(tree(dir.path()), ["name", "name/inside"]);
}

#[test]
fn a_file_where_a_folder_goes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("photos"), b"a file");
    let mut receiver = Receiver::new(dir.path(), true);
    receiver.handle(&offer(&[("photos/a.jpg", b"x")])).unwrap();
    assert!(matches!(
        receiver.accept(),
        Err(Error::Obstructed { ref path, .. }) if *path == dir.path().join("photos")
    ));
    assert_eq!(tree(dir.path()), ["photos"]);
}

#[test]
fn a_missing_output_folder_is_created_on_accept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new/out");
    let mut receiver = Receiver::new(&out, false);
    receiver.handle(&offer(&[("e", b"")])).unwrap();
    assert!(!out.exists(), "nothing before accept");
    receiver.accept().unwrap();
    assert!(receiver.is_complete());
    assert_eq!(tree(&out), ["e"]);
}
