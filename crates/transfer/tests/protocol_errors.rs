//! A peer that breaks the protocol gets a named error and a CANCEL, never a panic.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common;

use std::fs;

use common::{chunk, drain, offer, random_bytes, tree, write};
use transfer::{Error, Outgoing, Receiver, Sender, SenderEvent, Violation, WireError, wire};

fn cancel_reason(messages: &[Vec<u8>]) -> String {
    match messages {
        [m] => match wire::decode(m).unwrap() {
            wire::Message::Cancel { reason } => reason,
            other => panic!("not a CANCEL: {other:?}"),
        },
        _ => panic!("expected one CANCEL, got {messages:?}"),
    }
}

/// A receiver that accepted `a` (40,000 bytes) and `b` (3 bytes), with its ACCEPT drained.
fn receiving(dir: &std::path::Path) -> (Receiver, Vec<u8>) {
    let a = random_bytes(40_000, 1);
    let mut receiver = Receiver::new(dir, false);
    receiver
        .handle(&offer(&[("a", &a), ("b", b"xyz")]))
        .unwrap();
    receiver.accept().unwrap();
    assert_eq!(drain(&mut receiver).len(), 1);
    (receiver, a)
}

fn violation(result: Result<(), Error>) -> Violation {
    match result {
        Err(Error::Protocol(v)) => v,
        other => panic!("expected a protocol violation, got {other:?}"),
    }
}

#[test]
fn receiver_refuses_out_of_order_chunks() {
    let cases: Vec<(Vec<u8>, Violation)> = vec![
        (
            chunk(0, 5, b"x"),
            Violation::WrongOffset {
                file: 0,
                offset: 5,
                expected: 0,
            },
        ),
        (
            chunk(1, 0, b"xyz"),
            Violation::WrongFile {
                file: 1,
                expected: 0,
            },
        ),
        (chunk(7, 0, b"x"), Violation::UnknownFile { file: 7 }),
        (
            chunk(0, 0, &[0; 40_001]),
            Violation::PastEnd {
                file: 0,
                end: 40_001,
                size: 40_000,
            },
        ),
        (
            offer(&[("c", b"")]),
            Violation::Unexpected {
                message: "OFFER",
                phase: "receiving",
            },
        ),
        (
            wire::Message::Ack { file: 0, offset: 0 }.to_vec().unwrap(),
            Violation::Unexpected {
                message: "ACK",
                phase: "receiving",
            },
        ),
    ];
    for (message, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (mut receiver, _) = receiving(dir.path());
        assert_eq!(violation(receiver.handle(&message)), expected);
        let reason = cancel_reason(&drain(&mut receiver));
        assert!(reason.starts_with("protocol error"), "{reason}");
        assert!(receiver.is_finished());
        // Anything after the end is refused without another CANCEL.
        assert!(matches!(
            receiver.handle(&chunk(0, 0, b"x")),
            Err(Error::Finished)
        ));
        assert!(drain(&mut receiver).is_empty());
    }
}

#[test]
fn receiver_accepts_chunks_up_to_64_kib_and_acks_every_mib() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(3 * 1024 * 1024 + 5, 9);
    let mut receiver = Receiver::new(dir.path(), false);
    receiver.handle(&offer(&[("f", &data)])).unwrap();
    receiver.accept().unwrap();
    drain(&mut receiver);
    let mut acks = Vec::new();
    for (i, piece) in data.chunks(wire::MAX_CHUNK_DATA).enumerate() {
        let offset = (i * wire::MAX_CHUNK_DATA) as u64;
        receiver.handle(&chunk(0, offset, piece)).unwrap();
        acks.extend(drain(&mut receiver));
    }
    let kinds: Vec<_> = acks
        .iter()
        .map(|m| wire::decode(m).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(
        kinds,
        [
            wire::Message::Ack {
                file: 0,
                offset: 1024 * 1024
            },
            wire::Message::Ack {
                file: 0,
                offset: 2 * 1024 * 1024
            },
            wire::Message::Ack {
                file: 0,
                offset: 3 * 1024 * 1024
            },
            wire::Message::Ack {
                file: 0,
                offset: data.len() as u64
            },
            wire::Message::Verified { file: 0 },
        ]
    );
    assert!(receiver.is_complete());
    assert_eq!(fs::read(dir.path().join("f")).unwrap(), data);
}

#[test]
fn receiver_refuses_data_before_accept_and_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::new(dir.path(), false);
    assert_eq!(
        violation(receiver.handle(&chunk(0, 0, b"x"))),
        Violation::Unexpected {
            message: "CHUNK",
            phase: "waiting for an OFFER"
        }
    );
    drain(&mut receiver);

    let mut receiver = Receiver::new(dir.path(), false);
    receiver.handle(&offer(&[("a", b"x")])).unwrap();
    assert_eq!(
        violation(receiver.handle(&chunk(0, 0, b"x"))),
        Violation::Unexpected {
            message: "CHUNK",
            phase: "waiting for the user to accept the offer"
        }
    );
    assert!(tree(dir.path()).is_empty());

    for garbage in [&b""[..], b"\x00", b"\x09abc", b"\x01{", b"\x03\x00\x00"] {
        let mut receiver = Receiver::new(dir.path(), false);
        assert!(matches!(receiver.handle(garbage), Err(Error::Wire(_))));
        let reason = cancel_reason(&drain(&mut receiver));
        assert!(reason.starts_with("malformed message"), "{reason}");
    }

    let mut receiver = Receiver::new(dir.path(), false);
    assert!(matches!(
        receiver.handle(b"\x01{\"v\":2,\"files\":{}}"),
        Err(Error::Wire(WireError::UnsupportedVersion(2)))
    ));
    assert!(cancel_reason(&drain(&mut receiver)).contains("version 2"));
}

#[test]
fn accept_is_only_for_a_pending_offer() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::new(dir.path(), false);
    assert!(matches!(receiver.accept(), Err(Error::Misuse(_))));
    assert!(!receiver.is_finished(), "misuse does not end the transfer");
    let (mut receiver, a) = receiving(dir.path());
    assert!(matches!(receiver.accept(), Err(Error::Misuse(_))));
    assert!(drain(&mut receiver).is_empty());
    receiver.handle(&chunk(0, 0, &a[..16_384])).unwrap();
}

/// A sender of one 100,000-byte file `f` and a 3-byte `g`, with its OFFER drained.
fn sender(dir: &std::path::Path) -> Sender {
    write(&dir.join("f"), &random_bytes(100_000, 5));
    write(&dir.join("g"), b"abc");
    let outgoing = Outgoing::scan(&[dir.join("f"), dir.join("g")], |_, _| {}).unwrap();
    let mut sender = Sender::new(outgoing).unwrap();
    assert_eq!(sender.poll_transmit().unwrap()[0], wire::OFFER);
    sender
}

fn accept(offsets: &[u64]) -> Vec<u8> {
    wire::Message::Accept {
        offsets: offsets.to_vec(),
    }
    .to_vec()
    .unwrap()
}

#[test]
fn sender_refuses_bad_answers() {
    let ack = |file, offset| wire::Message::Ack { file, offset }.to_vec().unwrap();
    let verified = |file| wire::Message::Verified { file }.to_vec().unwrap();
    let cases: Vec<(Vec<Vec<u8>>, Violation)> = vec![
        (
            vec![accept(&[0])],
            Violation::AcceptCount {
                got: 1,
                expected: 2,
            },
        ),
        (
            vec![accept(&[0, 4])],
            Violation::AcceptOffset {
                file: 1,
                offset: 4,
                size: 3,
            },
        ),
        (
            vec![ack(0, 0)],
            Violation::Unexpected {
                message: "ACK",
                phase: "waiting for ACCEPT",
            },
        ),
        (
            vec![chunk(0, 0, b"x")],
            Violation::Unexpected {
                message: "CHUNK",
                phase: "waiting for ACCEPT",
            },
        ),
        (
            vec![accept(&[0, 0]), ack(0, 1)],
            Violation::BadAck { file: 0, offset: 1 },
        ),
        (
            vec![accept(&[50, 0]), ack(0, 10)],
            Violation::BadAck {
                file: 0,
                offset: 10,
            },
        ),
        (
            vec![accept(&[0, 0]), verified(0)],
            Violation::BadVerified { file: 0 },
        ),
        (
            vec![accept(&[100_000, 3]), verified(1), verified(1)],
            Violation::BadVerified { file: 1 },
        ),
        (
            vec![accept(&[0, 0]), verified(2)],
            Violation::UnknownFile { file: 2 },
        ),
        (
            vec![accept(&[0, 0]), accept(&[0, 0])],
            Violation::Unexpected {
                message: "ACCEPT",
                phase: "sending",
            },
        ),
    ];
    for (messages, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut sender = sender(dir.path());
        let (last, before) = messages.split_last().unwrap();
        for m in before {
            sender.handle(m).unwrap();
        }
        assert_eq!(violation(sender.handle(last)), expected);
        let reason =
            cancel_reason(&std::iter::from_fn(|| sender.poll_transmit()).collect::<Vec<_>>());
        assert!(reason.starts_with("protocol error"), "{reason}");
        assert!(sender.is_finished() && !sender.is_complete());
        assert_eq!(sender.next_chunk().unwrap(), None);
    }
}

#[test]
fn sender_skips_what_the_receiver_has_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut sender = sender(dir.path());
    sender.handle(&accept(&[100_000 - 10, 3])).unwrap();
    let last = sender.next_chunk().unwrap().unwrap();
    assert_eq!(last.len(), wire::CHUNK_HEADER_LEN + 10);
    assert_eq!(sender.next_chunk().unwrap(), None);
    for m in [
        wire::Message::Ack {
            file: 0,
            offset: 100_000,
        },
        wire::Message::Verified { file: 0 },
        wire::Message::Verified { file: 1 },
    ] {
        sender.handle(&m.to_vec().unwrap()).unwrap();
    }
    let events: Vec<_> = std::iter::from_fn(|| sender.poll_event()).collect();
    assert_eq!(
        events,
        [
            SenderEvent::Accepted { resumed: 99_993 },
            SenderEvent::Acked {
                bytes: 100_003,
                total: 100_003
            },
            SenderEvent::FileVerified {
                file: 0,
                path: "f".into()
            },
            SenderEvent::FileVerified {
                file: 1,
                path: "g".into()
            },
            SenderEvent::Complete,
        ]
    );
    assert!(sender.is_complete());
    assert!(matches!(
        sender.handle(&wire::Message::Verified { file: 1 }.to_vec().unwrap()),
        Err(Error::Finished)
    ));
    assert!(sender.poll_transmit().is_none());
}

#[test]
fn a_file_that_shrinks_after_hashing_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let mut sender = sender(dir.path());
    sender.handle(&accept(&[0, 0])).unwrap();
    fs::write(dir.path().join("f"), b"short now").unwrap();
    assert!(matches!(
        sender.next_chunk(),
        Err(Error::FileChanged { ref path }) if *path == dir.path().join("f")
    ));
    let reason = cancel_reason(&std::iter::from_fn(|| sender.poll_transmit()).collect::<Vec<_>>());
    assert!(reason.contains("changed"), "{reason}");
    assert!(sender.is_finished());
}

#[test]
fn the_peer_cancelling_ends_the_transfer_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let mut sender = sender(dir.path());
    let cancel = wire::Message::Cancel {
        reason: "declined".into(),
    };
    sender.handle(&cancel.to_vec().unwrap()).unwrap();
    assert_eq!(
        sender.poll_event(),
        Some(SenderEvent::Cancelled {
            reason: "declined".into()
        })
    );
    assert!(sender.poll_transmit().is_none(), "no CANCEL back");
    assert!(sender.is_finished());
}

#[test]
fn fuzz_body_survives_random_and_mutated_input() {
    let mut seeds: Vec<Vec<u8>> = vec![
        offer(&[("a/b", b"1"), ("c", b"")]),
        accept(&[0, 17]),
        chunk(3, 99, b"data"),
        wire::Message::Ack { file: 1, offset: 2 }.to_vec().unwrap(),
        wire::Message::Verified { file: 1 }.to_vec().unwrap(),
        wire::Message::Cancel { reason: "r".into() }
            .to_vec()
            .unwrap(),
    ];
    let noise = random_bytes(200_000, 77);
    for (i, window) in noise.chunks(97).enumerate() {
        let mut m = window.to_vec();
        m[0] = (i % 8) as u8;
        seeds.push(m);
    }
    for seed in seeds.clone() {
        for cut in 0..=seed.len().min(64) {
            transfer::fuzz_decode(&seed[..cut]);
        }
        for (i, byte) in noise.iter().take(seed.len()).enumerate() {
            let mut m = seed.clone();
            m[i] ^= byte | 1;
            transfer::fuzz_decode(&m);
        }
        transfer::fuzz_decode(&seed);
    }
}
