//! Whole transfers between a sender and a receiver wired in memory, on real temporary folders.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common;

use std::fs;

use common::{Pair, random_bytes, tree, write};
use transfer::{Outgoing, ReceiverEvent, SenderEvent, wire};

#[test]
fn files_and_a_folder_arrive_intact() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let out = dir.path().join("out");
    let big = random_bytes(5_000_000, 7);
    write(&src.join("a.txt"), b"hello\n");
    write(&src.join("empty.bin"), b"");
    write(&src.join("big.bin"), &big);
    write(&src.join("photos/x.jpg"), &random_bytes(40_000, 1));
    write(&src.join("photos/sub/y.jpg"), &random_bytes(16 * 1024, 2));
    write(&src.join("photos/sub/nothing"), b"");
    fs::create_dir_all(src.join("photos/empty-folder")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("photos/link")).unwrap();

    let paths = [
        src.join("a.txt"),
        src.join("empty.bin"),
        src.join("big.bin"),
        src.join("photos/"),
    ];
    let mut hashed = Vec::new();
    let outgoing = Outgoing::scan(&paths, |done, total| hashed.push((done, total))).unwrap();
    let names: Vec<&str> = outgoing
        .manifest()
        .files
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "a.txt",
            "empty.bin",
            "big.bin",
            "photos/sub/nothing",
            "photos/sub/y.jpg",
            "photos/x.jpg"
        ]
    );
    assert_eq!(outgoing.skipped(), [src.join("photos/link")]);
    let total = outgoing.manifest().total_size();
    assert!(hashed.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(hashed.last(), Some(&(total, total)));

    let mut pair = Pair::with(
        transfer::Sender::new(outgoing).unwrap(),
        transfer::Receiver::new(&out, false),
    );
    pair.run_to_completion();

    for (name, source) in [
        ("a.txt", "a.txt"),
        ("empty.bin", "empty.bin"),
        ("big.bin", "big.bin"),
        ("photos/x.jpg", "photos/x.jpg"),
        ("photos/sub/y.jpg", "photos/sub/y.jpg"),
        ("photos/sub/nothing", "photos/sub/nothing"),
    ] {
        assert_eq!(
            fs::read(out.join(name)).unwrap(),
            fs::read(src.join(source)).unwrap(),
            "{name}"
        );
    }
    assert_eq!(
        tree(&out),
        [
            "a.txt",
            "big.bin",
            "empty.bin",
            "photos",
            "photos/sub",
            "photos/sub/nothing",
            "photos/sub/y.jpg",
            "photos/x.jpg"
        ]
    );

    // One VERIFIED per file; chunks of 16 KiB; an ACK at least every MiB of the big file.
    assert_eq!(pair.received_of(wire::VERIFIED), 6);
    let chunks = pair.sent_of(wire::CHUNK);
    assert_eq!(
        chunks,
        1 + big.len().div_ceil(wire::CHUNK_SIZE) + 40_000usize.div_ceil(wire::CHUNK_SIZE) + 1
    );
    assert!(
        pair.to_receiver_log
            .iter()
            .filter(|m| m[0] == wire::CHUNK)
            .all(|m| m.len() <= wire::CHUNK_HEADER_LEN + wire::CHUNK_SIZE)
    );
    let big_acks: Vec<u64> = pair
        .to_sender_log
        .iter()
        .filter_map(|m| match wire::decode(m).unwrap() {
            wire::Message::Ack { file: 2, offset } => Some(offset),
            _ => None,
        })
        .collect();
    assert_eq!(big_acks.last(), Some(&(big.len() as u64)));
    let mut previous = 0;
    for offset in &big_acks {
        assert!(offset - previous <= wire::ACK_INTERVAL + wire::CHUNK_SIZE as u64);
        previous = *offset;
    }

    let verified: Vec<u32> = pair
        .receiver_events
        .iter()
        .filter_map(|e| match e {
            ReceiverEvent::FileVerified { file, .. } => Some(*file),
            _ => None,
        })
        .collect();
    assert_eq!(verified, [0, 1, 2, 3, 4, 5], "verified in manifest order");
    assert!(matches!(
        pair.sender_events[0],
        SenderEvent::Accepted { resumed: 0 }
    ));
    assert!(matches!(
        pair.receiver_events.iter().rev().nth(1),
        Some(ReceiverEvent::FileVerified { file: 5, .. })
    ));
    let last_progress = pair.receiver_events.iter().rev().find_map(|e| match e {
        ReceiverEvent::Progress { bytes, total } => Some((*bytes, *total)),
        _ => None,
    });
    assert_eq!(last_progress, Some((total, total)));
}

#[test]
fn names_are_relative_to_the_folder_parent() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("deep/er");
    write(&root.join("photos/a.jpg"), b"a");
    write(&root.join("photos/b/c.jpg"), b"c");
    for given in ["photos", "photos/", "photos/."] {
        let outgoing = Outgoing::scan(&[root.join(given)], |_, _| {}).unwrap();
        let names: Vec<&str> = outgoing
            .manifest()
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(names, ["photos/a.jpg", "photos/b/c.jpg"], "{given}");
    }
    let outgoing = Outgoing::scan(&[root.join("photos/b/..")], |_, _| {}).unwrap();
    assert_eq!(outgoing.manifest().files[0].path, "photos/a.jpg");
}

#[test]
fn a_single_empty_file_needs_no_chunk() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("zero"), b"");
    let out = dir.path().join("out");
    let mut pair = Pair::new(&[dir.path().join("zero")], &out, false);
    pair.run_to_completion();
    assert_eq!(pair.sent_of(wire::CHUNK), 0);
    assert_eq!(pair.received_of(wire::VERIFIED), 1);
    assert_eq!(fs::read(out.join("zero")).unwrap(), b"");
    assert_eq!(tree(&out), ["zero"]);
}

#[test]
fn declining_the_offer_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("src/f"), b"data");
    let out = dir.path().join("out");
    let mut pair = Pair::new(&[dir.path().join("src/f")], &out, false);
    pair.auto_accept = false;
    pair.run();
    assert!(matches!(
        pair.receiver_events[..],
        [ReceiverEvent::Offered(_)]
    ));
    pair.receiver.cancel("not now");
    pair.run();
    assert!(pair.sender.is_finished() && !pair.sender.is_complete());
    assert_eq!(
        pair.sender_events,
        [SenderEvent::Cancelled {
            reason: "not now".into()
        }]
    );
    assert!(!out.exists());
}

#[test]
fn sender_cancels_midway() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("f"), &random_bytes(1_000_000, 3));
    let out = dir.path().join("out");
    let mut pair = Pair::new(&[dir.path().join("f")], &out, false);
    pair.window = 2;
    for _ in 0..5 {
        pair.step();
    }
    pair.sender.cancel("user pressed Ctrl-C");
    pair.run();
    assert!(pair.receiver.is_finished() && !pair.receiver.is_complete());
    assert_eq!(
        pair.receiver_events.last(),
        Some(&ReceiverEvent::Cancelled {
            reason: "user pressed Ctrl-C".into()
        })
    );
    assert_eq!(
        tree(&out),
        ["f.part"],
        "the partial file stays for a resume"
    );
    // Both ends refuse anything after the end.
    assert!(matches!(
        pair.receiver.handle(&[wire::VERIFIED, 0, 0, 0, 0]),
        Err(transfer::Error::Finished)
    ));
    assert!(pair.receiver.poll_transmit().is_none());
}
