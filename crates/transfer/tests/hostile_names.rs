//! A manifest with any unsafe name is refused as a whole, before anything is written.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common;

use std::fs;

use common::{drain, offer, tree};
use transfer::{Error, PathError, Receiver, ReceiverEvent, WireError, wire};

/// Offers `names` to a receiver whose output folder sits alone in a sandbox, and checks that the
/// offer is refused with a CANCEL and that nothing was created inside or beside the output.
fn refused(names: &[&str]) -> Error {
    let sandbox = tempfile::tempdir().unwrap();
    let out = sandbox.path().join("out");
    fs::create_dir(&out).unwrap();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (*n, &b"x"[..])).collect();
    let mut receiver = Receiver::new(&out, true);
    let error = receiver.handle(&offer(&files)).unwrap_err();
    assert!(receiver.is_finished());
    assert!(receiver.poll_event().is_none(), "no Offered event");
    let sent = drain(&mut receiver);
    assert_eq!(sent.len(), 1);
    let wire::Message::Cancel { reason } = wire::decode(&sent[0]).unwrap() else {
        panic!("not a CANCEL: {sent:?}")
    };
    assert!(reason.starts_with("refused the offer"), "{reason}");
    assert!(matches!(receiver.accept(), Err(Error::Misuse(_))));
    assert_eq!(tree(sandbox.path()), ["out"], "{names:?}");
    error
}

fn refused_for(names: &[&str], bad: &str, expected: PathError) {
    match refused(names) {
        Error::UnsafePath { path, problem } => {
            assert_eq!((path.as_str(), problem), (bad, expected), "{names:?}");
        }
        other => panic!("{names:?}: {other:?}"),
    }
}

#[test]
fn every_kind_of_unsafe_name_is_refused() {
    use PathError::*;
    let long_component = format!("{}/x", "c".repeat(256));
    let long_name = "n".repeat(251);
    let cases: Vec<(&str, PathError)> = vec![
        ("/etc/passwd", Absolute),
        ("/tmp/x", Absolute),
        ("C:/Windows/x", Colon),
        ("c:x", Colon),
        ("C:\\x", Backslash),
        ("a\\..\\..\\x", Backslash),
        ("..", DotComponent),
        ("../x", DotComponent),
        ("a/../../x", DotComponent),
        (".", DotComponent),
        ("./x", DotComponent),
        ("a/./b", DotComponent),
        ("", Empty),
        ("a//b", EmptyComponent),
        ("a/", EmptyComponent),
        ("a\0b", ControlCharacter),
        ("a\nb", ControlCharacter),
        ("\u{1b}[31mred", ControlCharacter),
        ("CON", DeviceName("CON".into())),
        ("dir/nul.txt", DeviceName("nul.txt".into())),
        ("COM1", DeviceName("COM1".into())),
        ("logs/LPT9.log", DeviceName("LPT9.log".into())),
        ("aux ", DeviceName("aux ".into())),
        ("Prn.tar.gz", DeviceName("Prn.tar.gz".into())),
        (&long_component, ComponentTooLong),
        (&long_name, NameTooLong),
    ];
    for (name, problem) in cases {
        refused_for(&["fine.txt", name], name, problem);
    }
}

#[test]
fn conflicting_names_are_refused() {
    refused_for(
        &["dup", "other", "dup"],
        "dup",
        PathError::Duplicate("dup".into()),
    );
    refused_for(
        &["Readme.md", "README.MD"],
        "README.MD",
        PathError::Duplicate("Readme.md".into()),
    );
    refused_for(&["a", "a/b"], "a", PathError::FileAndFolder("a/b".into()));
    refused_for(&["a/b", "a"], "a", PathError::FileAndFolder("a/b".into()));
    refused_for(
        &["x/y/z", "x/y"],
        "x/y",
        PathError::FileAndFolder("x/y/z".into()),
    );
    refused_for(
        &["video.mp4", "video.mp4.part"],
        "video.mp4.part",
        PathError::PartCollision("video.mp4".into()),
    );
}

#[test]
fn oversized_offers_are_refused_before_parsing_names() {
    let names: Vec<String> = (0..=wire::MAX_FILES).map(|i| format!("f{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let files: Vec<(&str, &[u8])> = refs.iter().map(|n| (*n, &b""[..])).collect();
    // Built by hand: the encoder refuses to produce it.
    let mut json = String::from(r#"{"v":1,"files":["#);
    for (i, (name, _)) in files.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            r#"{{"path":"{name}","size":0,"sha256":"{}"}}"#,
            transfer::Digest::of(b"")
        ));
    }
    json.push_str("]}");
    let mut message = vec![wire::OFFER];
    message.extend_from_slice(json.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::new(dir.path(), false);
    let error = receiver.handle(&message).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Wire(WireError::TooLong { .. } | WireError::TooManyFiles { .. })
        ),
        "{error:?}"
    );
    assert_eq!(drain(&mut receiver).len(), 1);
    assert!(tree(dir.path()).is_empty());
}

#[test]
fn the_offered_event_carries_checked_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::new(dir.path(), false);
    receiver
        .handle(&offer(&[("ok/file.txt", b"x"), ("ünïcode name.txt", b"y")]))
        .unwrap();
    let Some(ReceiverEvent::Offered(manifest)) = receiver.poll_event() else {
        panic!("no offer")
    };
    assert_eq!(manifest.files.len(), 2);
    assert!(
        drain(&mut receiver).is_empty(),
        "nothing sent before accept"
    );
    assert!(tree(dir.path()).is_empty(), "nothing written before accept");
}

#[test]
fn a_sender_refuses_names_a_receiver_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    common::write(&dir.path().join("a/same.txt"), b"1");
    common::write(&dir.path().join("b/same.txt"), b"2");
    let error = transfer::Outgoing::scan(
        &[dir.path().join("a/same.txt"), dir.path().join("b/same.txt")],
        |_, _| panic!("nothing is hashed before the names are checked"),
    )
    .unwrap_err();
    assert!(matches!(
        error,
        Error::UnsafePath { ref path, problem: PathError::Duplicate(_) } if path == "same.txt"
    ));
    assert!(error.to_string().contains("same.txt"), "{error}");
}
