//! Data that does not match the offer's SHA-256 never becomes a final file.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common;

use common::{Pair, drain, offer, random_bytes, tree, write};
use transfer::{Error, Receiver, SenderEvent, wire};

#[test]
fn a_flipped_byte_cancels_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("src/ok"), b"fine");
    write(&dir.path().join("src/bad.bin"), &random_bytes(100_000, 1));
    let out = dir.path().join("out");
    let mut pair = Pair::new(
        &[dir.path().join("src/ok"), dir.path().join("src/bad.bin")],
        &out,
        false,
    );
    let mut chunks = 0;
    pair.tamper = Some(Box::new(move |m: &mut Vec<u8>| {
        if m[0] == wire::CHUNK {
            chunks += 1;
            if chunks == 3 {
                m[wire::CHUNK_HEADER_LEN + 100] ^= 0x01;
            }
        }
    }));
    pair.run();
    assert!(matches!(
        pair.receiver_errors[..],
        [Error::HashMismatch { ref name }] if name == "bad.bin"
    ));
    let reason = pair.receiver_cancel().unwrap();
    assert!(
        reason.contains("bad.bin") && reason.contains("SHA-256"),
        "{reason}"
    );
    assert!(matches!(
        pair.sender_events.last(),
        Some(SenderEvent::Cancelled { reason }) if reason.contains("bad.bin")
    ));
    assert!(pair.sender.is_finished() && !pair.sender.is_complete());
    assert!(pair.receiver.is_finished() && !pair.receiver.is_complete());
    // The file verified before the corruption stays; the corrupted one and its .part are gone.
    assert_eq!(tree(&out), ["ok"]);
}

#[test]
fn an_empty_file_with_a_wrong_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::new(dir.path(), false);
    let mut message = offer(&[("empty", b"")]);
    // Claim the digest of other content for a zero-length file.
    let lie = transfer::Digest::of(b"x").to_hex();
    let honest = transfer::Digest::of(b"").to_hex();
    let text = String::from_utf8(message[1..].to_vec())
        .unwrap()
        .replace(&honest, &lie);
    message.truncate(1);
    message.extend_from_slice(text.as_bytes());
    receiver.handle(&message).unwrap();
    assert!(matches!(
        receiver.accept(),
        Err(Error::HashMismatch { ref name }) if name == "empty"
    ));
    let sent = drain(&mut receiver);
    assert_eq!(
        sent.iter().map(|m| m[0]).collect::<Vec<_>>(),
        [wire::ACCEPT, wire::CANCEL]
    );
    assert!(tree(dir.path()).is_empty());
}
