//! Resume after a dropped connection, and the grace running out.

mod common;

use std::time::Duration;

use common::Sim;
use serde_json::json;
use signal::{CloseCode, HubConfig};

fn resume_frame(room: &str, peer: &str, token: &str) -> serde_json::Value {
    json!({"type": "join", "room": room, "name": "Ada", "resume": {"peer": peer, "token": token}})
}

#[test]
fn resume_within_the_grace_keeps_the_id_and_delivers_queued_signals() {
    let mut sim = Sim::new(HubConfig::default());
    let ada = sim.join(1, "standup", "Ada");
    let token = sim.last(1)["resume_token"].as_str().unwrap().to_owned();
    let grace = sim.join(2, "standup", "Grace");
    sim.take(2);
    sim.drop_conn(1);
    assert!(sim.take(2).is_empty(), "others are not told about a drop");
    sim.send(2, json!({"type": "signal", "to": ada, "candidate": null}));
    assert!(
        sim.take(2).is_empty(),
        "a signal to an absent peer is queued, not refused"
    );
    sim.advance(Duration::from_secs(20));
    sim.connect(3);
    sim.send(3, resume_frame("standup", &ada, &token));
    let frames = sim.take(3);
    assert_eq!(frames[0]["type"], "welcome");
    assert_eq!(frames[0]["peer"], json!(ada));
    assert_eq!(frames[0]["resumed"], true);
    assert_ne!(
        frames[0]["resume_token"],
        json!(token),
        "a fresh token each time"
    );
    assert_eq!(frames[0]["peers"][0]["id"], json!(grace));
    assert_eq!(
        frames[1],
        json!({"type": "signal", "from": grace, "candidate": null})
    );
    // The grace timer of the dropped connection (due at 30 s) must not remove the resumed peer.
    sim.advance(Duration::from_secs(15));
    assert_eq!(sim.hub.stats().peers, 2);
    assert!(sim.take(2).iter().all(|m| m["type"] != "peer_left"));
}

#[test]
fn grace_running_out_removes_the_peer_with_reason_timeout() {
    let mut sim = Sim::new(HubConfig::default());
    let ada = sim.join(1, "standup", "Ada");
    let token = sim.last(1)["resume_token"].as_str().unwrap().to_owned();
    sim.join(2, "standup", "Grace");
    sim.drop_conn(1);
    sim.advance(Duration::from_secs(29));
    assert_eq!(sim.hub.stats().peers, 2);
    sim.advance(Duration::from_secs(2));
    assert_eq!(
        sim.last(2),
        json!({"type": "peer_left", "peer": ada, "reason": "timeout"})
    );
    sim.connect(3);
    sim.send(3, resume_frame("standup", &ada, &token));
    assert_eq!(sim.last_error(3), "resume_failed");
}

#[test]
fn a_wrong_token_or_room_fails() {
    let mut sim = Sim::new(HubConfig::default());
    let ada = sim.join(1, "standup", "Ada");
    let token = sim.last(1)["resume_token"].as_str().unwrap().to_owned();
    sim.drop_conn(1);
    sim.connect(2);
    sim.send(2, resume_frame("standup", &ada, "AAAAAAAAAAAAAAAAAAAAAA"));
    assert_eq!(sim.last_error(2), "resume_failed");
    sim.send(2, resume_frame("elsewhere", &ada, &token));
    assert_eq!(sim.last_error(2), "resume_failed");
    sim.send(2, resume_frame("standup", "zz", &token));
    assert_eq!(sim.last_error(2), "resume_failed");
}

#[test]
fn resuming_while_the_old_connection_is_open_replaces_it() {
    let mut sim = Sim::new(HubConfig::default());
    let ada = sim.join(1, "standup", "Ada");
    let token = sim.last(1)["resume_token"].as_str().unwrap().to_owned();
    sim.connect(2);
    sim.send(2, resume_frame("standup", &ada, &token));
    assert_eq!(sim.closed.get(&1), Some(&CloseCode::Replaced));
    assert_eq!(sim.last(2)["peer"], json!(ada));
    assert_eq!(sim.hub.stats().peers, 1);
    assert_eq!(sim.hub.stats().connections, 1);
}

#[test]
fn idle_connections_are_closed_and_their_peer_can_resume() {
    let mut sim = Sim::new(HubConfig::default());
    let ada = sim.join(1, "standup", "Ada");
    let token = sim.last(1)["resume_token"].as_str().unwrap().to_owned();
    sim.advance(Duration::from_secs(30));
    sim.send(1, json!({"type": "ping"}));
    sim.advance(Duration::from_secs(30));
    assert!(sim.closed.is_empty(), "activity resets the idle timer");
    sim.advance(Duration::from_secs(16));
    assert_eq!(sim.closed.get(&1), Some(&CloseCode::IdleTimeout));
    sim.connect(2);
    sim.send(2, resume_frame("standup", &ada, &token));
    assert_eq!(sim.last(2)["resumed"], true);
}
