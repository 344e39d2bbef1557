//! Resuming from `.part` files and skipping files the receiver already has.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common;

use std::fs;

use common::{Pair, random_bytes, tree, write};
use transfer::{ReceiverEvent, SenderEvent, wire};

#[test]
fn a_new_receiver_continues_from_the_part_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let out = dir.path().join("out");
    let first = random_bytes(100_000, 11);
    let second = random_bytes(3_000_000, 12);
    write(&src.join("d/first"), &first);
    write(&src.join("d/second"), &second);
    let paths = [src.join("d")];

    // First session: stop once the receiver has written some of the second file.
    let mut pair = Pair::new(&paths, &out, false);
    pair.window = 4;
    while !out.join("d/second.part").exists()
        || fs::metadata(out.join("d/second.part")).unwrap().len() < 1_200_000
    {
        assert!(pair.step());
    }
    assert!(pair.sender_errors.is_empty() && pair.receiver_errors.is_empty());
    drop(pair);
    let part_len = fs::metadata(out.join("d/second.part")).unwrap().len();
    assert!(part_len > 0 && part_len < second.len() as u64);
    assert_eq!(fs::read(out.join("d/first")).unwrap(), first);

    // Second session: fresh sender and receiver on the same folders.
    let mut pair = Pair::new(&paths, &out, false);
    pair.run_to_completion();
    let accept = pair
        .to_sender_log
        .iter()
        .find_map(|m| match wire::decode(m).unwrap() {
            wire::Message::Accept { offsets } => Some(offsets),
            _ => None,
        })
        .unwrap();
    assert_eq!(accept, [first.len() as u64, part_len]);
    assert_eq!(
        pair.sender_events[0],
        SenderEvent::Accepted {
            resumed: first.len() as u64 + part_len
        }
    );
    let first_chunk = pair
        .to_receiver_log
        .iter()
        .find(|m| m[0] == wire::CHUNK)
        .unwrap();
    assert_eq!(
        wire::decode(first_chunk).unwrap(),
        wire::Message::Chunk {
            file: 1,
            offset: part_len,
            data: &second[part_len as usize..part_len as usize + wire::CHUNK_SIZE],
        }
    );
    let sent: usize = pair
        .to_receiver_log
        .iter()
        .filter(|m| m[0] == wire::CHUNK)
        .map(|m| m.len() - wire::CHUNK_HEADER_LEN)
        .sum();
    assert_eq!(sent as u64, second.len() as u64 - part_len);
    assert_eq!(fs::read(out.join("d/second")).unwrap(), second);
    assert_eq!(tree(&out), ["d", "d/first", "d/second"]);
    // The file already in place is reported verified without being rewritten.
    assert_eq!(pair.received_of(wire::VERIFIED), 2);
}

#[test]
fn a_complete_part_file_is_checked_then_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(50_000, 4);
    write(&dir.path().join("f"), &data);
    let out = dir.path().join("out");
    write(&out.join("f.part"), &data);
    let mut pair = Pair::new(&[dir.path().join("f")], &out, false);
    pair.run_to_completion();
    assert_eq!(pair.sent_of(wire::CHUNK), 0);
    assert_eq!(fs::read(out.join("f")).unwrap(), data);
    assert_eq!(tree(&out), ["f"]);
}

#[test]
fn a_part_file_with_other_content_or_too_long_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(50_000, 5);
    write(&dir.path().join("src/same_len"), &data);
    write(&dir.path().join("src/longer"), &data);
    let out = dir.path().join("out");
    write(&out.join("same_len.part"), &random_bytes(50_000, 6));
    write(&out.join("longer.part"), &random_bytes(60_000, 6));
    let mut pair = Pair::new(
        &[
            dir.path().join("src/same_len"),
            dir.path().join("src/longer"),
        ],
        &out,
        false,
    );
    pair.run_to_completion();
    assert_eq!(fs::read(out.join("same_len")).unwrap(), data);
    assert_eq!(fs::read(out.join("longer")).unwrap(), data);
    assert_eq!(tree(&out), ["longer", "same_len"]);
    assert_eq!(pair.sender_events[0], SenderEvent::Accepted { resumed: 0 });
}

#[test]
fn a_resumed_prefix_that_is_wrong_fails_verification() {
    // The prefix is hashed as it is; if it was not the start of this file, the whole-file
    // digest catches it at the end.
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(80_000, 8);
    write(&dir.path().join("f"), &data);
    let out = dir.path().join("out");
    write(&out.join("f.part"), &random_bytes(30_000, 20));
    let mut pair = Pair::new(&[dir.path().join("f")], &out, false);
    pair.run();
    assert!(matches!(
        pair.receiver_errors[..],
        [transfer::Error::HashMismatch { ref name }] if name == "f"
    ));
    assert!(tree(&out).is_empty(), "{:?}", tree(&out));
    // Retrying now starts from zero and succeeds.
    let mut pair = Pair::new(&[dir.path().join("f")], &out, false);
    pair.run_to_completion();
    assert_eq!(fs::read(out.join("f")).unwrap(), data);
}

#[test]
fn an_identical_file_in_place_is_skipped_without_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(20_000, 10);
    write(&dir.path().join("src/f"), &data);
    write(&dir.path().join("src/g"), b"new");
    let out = dir.path().join("out");
    write(&out.join("f"), &data);
    let before = fs::metadata(out.join("f")).unwrap().modified().unwrap();
    let mut pair = Pair::new(
        &[dir.path().join("src/f"), dir.path().join("src/g")],
        &out,
        false,
    );
    pair.run_to_completion();
    assert_eq!(pair.sent_of(wire::CHUNK), 1, "only g is sent");
    assert_eq!(
        fs::metadata(out.join("f")).unwrap().modified().unwrap(),
        before
    );
    assert!(matches!(
        pair.receiver_events[1],
        ReceiverEvent::FileVerified { file: 0, .. }
    ));
    assert_eq!(fs::read(out.join("g")).unwrap(), b"new");
}
