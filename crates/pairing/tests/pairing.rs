//! Two pairing state machines talking through a relay, with right and wrong codes and with a
//! peer that sends garbage.

use pairing::{Code, Pairing, PairingError, Role, Step, sdp_fingerprint};
use serde_json::{Value, json};

fn fp(byte: &str) -> String {
    format!("sha-256 {}", [byte; 32].join(":"))
}

fn code(text: &str) -> Code {
    Code::parse(text).expect("valid code")
}

fn send(step: Result<Step, PairingError>) -> Vec<Value> {
    match step {
        Ok(Step::Send(messages)) => messages,
        other => panic!("expected messages to send, got {other:?}"),
    }
}

/// What each side ended with after relaying until both stopped.
#[derive(Debug)]
struct Outcome {
    sender: Result<String, PairingError>,
    receiver: Result<String, PairingError>,
}

/// Relays every message (including abort replies) in order until neither side has anything to
/// say, like the signaling server would.
fn run(sender_code: &str, receiver_code: &str) -> Outcome {
    let (mut sender, s_first) =
        Pairing::start(&code(sender_code), Role::Sender, &fp("aa")).expect("start");
    let (mut receiver, r_first) =
        Pairing::start(&code(receiver_code), Role::Receiver, &fp("bb")).expect("start");
    let mut to_receiver = vec![s_first];
    let mut to_sender = vec![r_first];
    let mut results: [Option<Result<String, PairingError>>; 2] = [None, None];
    while !to_receiver.is_empty() || !to_sender.is_empty() {
        let inbox = std::mem::take(&mut to_sender);
        to_receiver.extend(deliver(&mut sender, inbox, &mut results[0]));
        let inbox = std::mem::take(&mut to_receiver);
        to_sender.extend(deliver(&mut receiver, inbox, &mut results[1]));
    }
    let [sender, receiver] = results.map(|r| r.expect("both sides finish"));
    Outcome { sender, receiver }
}

/// Feeds one side its messages until it finishes; returns what it has to send.
fn deliver(
    pairing: &mut Pairing,
    inbox: Vec<Value>,
    result: &mut Option<Result<String, PairingError>>,
) -> Vec<Value> {
    let mut outbox = Vec::new();
    for message in inbox {
        if result.is_some() {
            break;
        }
        match pairing.handle(&message) {
            Ok(Step::Send(messages)) => outbox.extend(messages),
            Ok(Step::Verified { remote_fingerprint }) => *result = Some(Ok(remote_fingerprint)),
            Err(error) => {
                outbox.extend(error.reply());
                *result = Some(Err(error));
            }
        }
    }
    outbox
}

#[test]
fn same_code_verifies_both_fingerprints() {
    let outcome = run("7-tiger-orbit", " 7 TIGER orbit ");
    assert_eq!(outcome.sender, Ok(fp("BB")));
    assert_eq!(outcome.receiver, Ok(fp("AA")));
}

#[test]
fn wrong_code_fails_on_both_sides() {
    for (a, b) in [
        ("7-tiger-orbit", "7-tiger-otter"),
        ("7-tiger-orbit", "7-orbit-tiger"),
        ("7-tiger-orbit", "8-tiger-orbit"),
    ] {
        let outcome = run(a, b);
        // The first to check (the sender, fed first) finds the mismatch and tells the other;
        // either way both report "wrong code".
        for result in [&outcome.sender, &outcome.receiver] {
            let error = result.as_ref().expect_err("wrong code");
            assert!(error.is_wrong_code(), "{a} / {b}: {error:?}");
            assert_eq!(error.to_string(), "wrong code");
        }
    }
}

#[test]
fn wrong_code_reply_and_peer_report() {
    let (mut s, s_pake) = Pairing::start(&code("7-tiger-orbit"), Role::Sender, &fp("aa")).unwrap();
    let (mut r, r_pake) =
        Pairing::start(&code("7-tiger-otter"), Role::Receiver, &fp("bb")).unwrap();
    let s_confirm = send(s.handle(&r_pake));
    let r_confirm = send(r.handle(&s_pake));
    let error = s.handle(&r_confirm[0]).expect_err("mismatch");
    assert_eq!(error, PairingError::WrongCode { by_peer: false });
    assert_eq!(error.reply(), Some(json!({ "abort": "wrong_code" })));
    // The receiver gets the abort before (or instead of) the sender's confirmation.
    let reported = r.handle(&error.reply().unwrap()).expect_err("abort");
    assert_eq!(reported, PairingError::WrongCode { by_peer: true });
    assert_eq!(reported.reply(), None);
    assert_eq!(r.handle(&s_confirm[0]), Err(PairingError::Finished));
}

#[test]
fn roles_matter() {
    // Two "senders" with the same code do not verify: each checks the other's MAC as a
    // receiver's, which is also what makes a reflected confirmation fail.
    let (mut a, a_pake) = Pairing::start(&code("7-tiger-orbit"), Role::Sender, &fp("aa")).unwrap();
    let (mut b, b_pake) = Pairing::start(&code("7-tiger-orbit"), Role::Sender, &fp("bb")).unwrap();
    let _ = send(a.handle(&b_pake));
    let b_confirm = send(b.handle(&a_pake));
    assert!(
        a.handle(&b_confirm[0])
            .expect_err("same role")
            .is_wrong_code()
    );
}

#[test]
fn tampered_fingerprint_is_a_wrong_code() {
    let (mut s, s_pake) = Pairing::start(&code("7-tiger-orbit"), Role::Sender, &fp("aa")).unwrap();
    let (mut r, r_pake) =
        Pairing::start(&code("7-tiger-orbit"), Role::Receiver, &fp("bb")).unwrap();
    let _ = send(s.handle(&r_pake));
    let mut r_confirm = send(r.handle(&s_pake)).remove(0);
    r_confirm["fingerprint"] = json!(fp("CC"));
    assert_eq!(
        s.handle(&r_confirm),
        Err(PairingError::WrongCode { by_peer: false })
    );
}

#[test]
fn out_of_order_messages() {
    let start = |role, f: &str| Pairing::start(&code("7-tiger-orbit"), role, &fp(f)).unwrap();
    let (mut s, s_pake) = start(Role::Sender, "aa");
    let (mut r, r_pake) = start(Role::Receiver, "bb");
    let (mut other, _) = start(Role::Receiver, "bb");
    let r_confirm = send(r.handle(&s_pake));

    // A confirmation before the pake.
    let error = other.handle(&r_confirm[0]).expect_err("too early");
    assert!(matches!(error, PairingError::Unexpected(_)), "{error:?}");
    assert_eq!(error.reply(), Some(json!({ "abort": "protocol_error" })));
    assert_eq!(other.handle(&s_pake), Err(PairingError::Finished));

    // A second pake.
    let _ = send(s.handle(&r_pake));
    assert!(matches!(
        s.handle(&r_pake),
        Err(PairingError::Unexpected(_))
    ));

    // Anything after verification.
    let (mut s, s_pake) = start(Role::Sender, "aa");
    let (mut r, r_pake) = start(Role::Receiver, "bb");
    let _ = send(s.handle(&r_pake));
    let r_confirm = send(r.handle(&s_pake));
    assert!(matches!(s.handle(&r_confirm[0]), Ok(Step::Verified { .. })));
    assert!(s.is_verified());
    assert!(matches!(
        s.handle(&r_confirm[0]),
        Err(PairingError::Unexpected(_))
    ));
}

#[test]
fn reflected_pake() {
    let (mut s, s_pake) = Pairing::start(&code("7-tiger-orbit"), Role::Sender, &fp("aa")).unwrap();
    assert!(matches!(
        s.handle(&s_pake),
        Err(PairingError::Unexpected(_))
    ));
}

#[test]
fn malformed_messages() {
    let good_confirm = {
        let (_, s_pake) = Pairing::start(&code("7-tiger-orbit"), Role::Sender, &fp("aa")).unwrap();
        let (mut r, _) = Pairing::start(&code("7-tiger-orbit"), Role::Receiver, &fp("bb")).unwrap();
        send(r.handle(&s_pake)).remove(0)
    };
    let mac = good_confirm["confirm"].clone();
    let a_message = "S".to_owned() + &"A".repeat(43);
    let cases = [
        json!(null),
        json!("pake"),
        json!([1, 2]),
        json!({}),
        json!({ "pake": 5 }),
        json!({ "pake": "not base64!" }),
        json!({ "pake": "AAAA" }),    // 3 bytes
        json!({ "pake": "QUFB" }),    // wrong length again
        json!({ "pake": a_message }), // 33 bytes, side byte 0x48
        // 'S' + a y-coordinate that is not on the curve (y = 2).
        json!({ "pake": "UwIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" }),
        json!({ "pake": "UwIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" }), // no padding
        json!({ "pake": "QQ==", "extra": 1 }),
        json!({ "confirm": mac }),
        json!({ "fingerprint": fp("AA") }),
        json!({ "abort": 1 }),
        json!({ "abort": "wrong_code", "pake": "QQ==" }),
    ];
    for message in cases {
        let (mut p, _) = Pairing::start(&code("7-tiger-orbit"), Role::Sender, &fp("aa")).unwrap();
        let error = p.handle(&message).expect_err("malformed");
        assert!(
            matches!(error, PairingError::Malformed(_)),
            "{message}: {error:?}"
        );
        assert_eq!(error.reply(), Some(json!({ "abort": "protocol_error" })));
        assert_eq!(p.handle(&message), Err(PairingError::Finished));
    }

    // Confirmation shape problems, checked once the key exists.
    let (_, r_pake) = Pairing::start(&code("7-tiger-orbit"), Role::Receiver, &fp("bb")).unwrap();
    for message in [
        json!({ "confirm": "AAAA", "fingerprint": fp("BB") }),
        json!({ "confirm": mac, "fingerprint": fp("bb") }),
        json!({ "confirm": mac, "fingerprint": "sha-1 AB" }),
        json!({ "confirm": mac, "fingerprint": 7 }),
        json!({ "confirm": mac, "fingerprint": fp("BB"), "x": null }),
    ] {
        let (mut s, _) = Pairing::start(&code("7-tiger-orbit"), Role::Sender, &fp("aa")).unwrap();
        let _ = send(s.handle(&r_pake));
        assert!(
            matches!(s.handle(&message), Err(PairingError::Malformed(_))),
            "{message}"
        );
    }
}

#[test]
fn other_abort_reasons() {
    let (mut p, _) = Pairing::start(&code("7-tiger-orbit"), Role::Sender, &fp("aa")).unwrap();
    let error = p
        .handle(&json!({ "abort": "protocol_error\n\u{7}" }))
        .expect_err("abort");
    assert_eq!(error, PairingError::PeerAborted("protocol_error".into()));
    assert_eq!(error.reply(), None);
}

#[test]
fn invalid_local_fingerprint() {
    let result = Pairing::start(&code("7-tiger-orbit"), Role::Sender, "sha-256 AB");
    assert_eq!(result.map(|_| ()), Err(PairingError::InvalidFingerprint));
    // A non-normalised but valid one is normalised before it goes out.
    let (mut s, s_pake) = Pairing::start(&code("7-tiger-orbit"), Role::Sender, &fp("ab")).unwrap();
    let (_, r_pake) = Pairing::start(&code("7-tiger-orbit"), Role::Receiver, &fp("cd")).unwrap();
    drop(s_pake);
    let confirm = send(s.handle(&r_pake)).remove(0);
    assert_eq!(confirm["fingerprint"], json!(fp("AB")));
}

#[test]
fn driver_checks_the_sdp() {
    let outcome = run("12-lemon-ocean", "12-lemon-ocean");
    let authenticated = outcome.sender.expect("verified");
    let sdp = format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=fingerprint:{}\r\n",
        fp("bb")
    );
    assert_eq!(sdp_fingerprint(&sdp), Some(authenticated.clone()));
    let forged = sdp.replace(&fp("bb"), &fp("ee"));
    assert_ne!(sdp_fingerprint(&forged), Some(authenticated));
}

#[test]
fn fuzz_body_survives_garbage() {
    let samples: [&[u8]; 5] = [
        b"",
        b"\x00",
        b"\x01{\"pake\":\"QQ==\"}\n{\"abort\":\"x\"}",
        b"\x00 7 tiger orbit\n{\"confirm\":\"\",\"fingerprint\":\"\"}\na=fingerprint:sha-256 AB\n\xff\xfe",
        b"\x02{\"pake\":\"UwIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}\n{}",
    ];
    for sample in samples {
        pairing::fuzz_pairing(sample);
    }
}
