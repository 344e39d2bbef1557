//! Every limit, and bad input: each gets its documented answer and nothing else is disturbed.

mod common;

use std::time::Duration;

use common::Sim;
use serde_json::json;
use signal::{CloseCode, ConnId, Frame, HubConfig, Input};

#[test]
fn room_full() {
    let mut sim = Sim::new(HubConfig {
        max_peers_per_room: 2,
        ..HubConfig::default()
    });
    sim.join(1, "standup", "A");
    sim.join(2, "standup", "B");
    sim.connect(3);
    sim.send(3, json!({"type": "join", "room": "standup", "name": "C"}));
    assert_eq!(sim.last_error(3), "room_full");
    sim.send(3, json!({"type": "join", "room": "other", "name": "C"}));
    assert_eq!(
        sim.last(3)["type"],
        "welcome",
        "the connection can still join elsewhere"
    );
}

#[test]
fn oversized_frames_close_with_1009_and_the_peer_may_resume() {
    let mut sim = Sim::new(HubConfig {
        max_frame_bytes: 1024,
        ..HubConfig::default()
    });
    sim.join(1, "standup", "A");
    sim.join(2, "standup", "B");
    sim.take(2);
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(2000));
    sim.text(1, &big);
    assert_eq!(sim.closed.get(&1), Some(&CloseCode::MessageTooBig));
    assert!(sim.take(2).is_empty(), "the peer is in its grace, not gone");
    let now = sim.now;
    sim.input(Input::Frame {
        conn: ConnId(2),
        now,
        frame: Frame::Binary(5000),
    });
    assert_eq!(sim.closed.get(&2), Some(&CloseCode::MessageTooBig));
}

#[test]
fn flooding_is_rate_limited_then_closed_without_touching_others() {
    let mut sim = Sim::new(HubConfig::default());
    sim.join(1, "standup", "flooder");
    let quiet = sim.join(2, "standup", "quiet");
    sim.take(1);
    // 1,000 messages within one second.
    for i in 0..1000u64 {
        if sim.closed.contains_key(&1) {
            break;
        }
        sim.send(1, json!({"type": "ping", "id": i}));
        sim.advance(Duration::from_millis(1));
    }
    let frames = sim.take(1);
    let pongs = frames.iter().filter(|f| f["type"] == "pong").count();
    let limited = frames
        .iter()
        .filter(|f| f["code"] == "rate_limited")
        .count();
    assert!((100..=160).contains(&pongs), "{pongs} pongs");
    assert!(
        (1..=2).contains(&limited),
        "one rate_limited error per second, got {limited}"
    );
    assert_eq!(sim.closed.get(&1), Some(&CloseCode::PolicyViolation));
    // The flooder's peer is gone for good; the other peer is told and carries on.
    assert_eq!(sim.last(2)["type"], "peer_left");
    sim.send(2, json!({"type": "ping", "id": 1}));
    assert_eq!(sim.last(2), json!({"type": "pong", "id": 1}));
    assert!(sim.hub.stats().rate_limited > 400);
    let _ = quiet;
}

#[test]
fn a_client_at_the_sustained_rate_is_never_limited() {
    let mut sim = Sim::new(HubConfig::default());
    sim.connect(1);
    for i in 0..500u64 {
        sim.send(1, json!({"type": "ping", "id": i}));
        sim.advance(Duration::from_millis(20));
    }
    assert!(sim.take(1).iter().all(|f| f["type"] == "pong"));
}

#[test]
fn connection_limit() {
    let mut sim = Sim::new(HubConfig {
        max_connections: 2,
        ..HubConfig::default()
    });
    sim.connect(1);
    sim.connect(2);
    sim.connect(3);
    assert_eq!(sim.last_error(3), "server_busy");
    assert_eq!(sim.closed.get(&3), Some(&CloseCode::TryAgainLater));
    assert_eq!(sim.hub.stats().connections, 2);
}

#[test]
fn bad_frames_get_their_error_codes() {
    let mut sim = Sim::new(HubConfig::default());
    sim.connect(1);
    let cases: &[(&str, &str)] = &[
        ("{not json", "bad_json"),
        ("[]", "bad_json"),
        ("\"join\"", "bad_json"),
        (r#"{"type":"dance"}"#, "unknown_type"),
        (r#"{"type":"join","room":"r"}"#, "bad_json"),
        (
            r#"{"type":"join","v":2,"room":"r","name":"A"}"#,
            "unsupported_version",
        ),
        (
            r#"{"type":"join","room":"a b","name":"A"}"#,
            "bad_room_name",
        ),
        (
            r#"{"type":"join","room":"r","name":"A\u0007"}"#,
            "bad_display_name",
        ),
        (
            r#"{"type":"join","room":"r","name":""}"#,
            "bad_display_name",
        ),
        (r#"{"type":"signal","to":"x"}"#, "bad_signal"),
        (r#"{"type":"leave"}"#, "not_joined"),
    ];
    for (frame, code) in cases {
        sim.text(1, frame);
        assert_eq!(&sim.last_error(1), code, "frame {frame}");
    }
    let long = format!(
        r#"{{"type":"join","room":"{}","name":"A"}}"#,
        "r".repeat(10_240)
    );
    sim.text(1, &long);
    assert_eq!(sim.last_error(1), "bad_room_name");
    let long = format!(
        r#"{{"type":"join","room":"r","name":"{}"}}"#,
        "n".repeat(10_240)
    );
    sim.text(1, &long);
    assert_eq!(sim.last_error(1), "bad_display_name");
    let now = sim.now;
    sim.input(Input::Frame {
        conn: ConnId(1),
        now,
        frame: Frame::Binary(10),
    });
    assert_eq!(sim.last_error(1), "binary_unsupported");
    assert!(sim.closed.is_empty(), "errors never close the connection");
    sim.send(1, json!({"type": "join", "room": "r", "name": "A"}));
    sim.send(1, json!({"type": "join", "room": "r", "name": "A"}));
    assert_eq!(sim.last_error(1), "already_joined");
}
