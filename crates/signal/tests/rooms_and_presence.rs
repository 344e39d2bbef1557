//! Joining, presence and leaving.

mod common;

use common::Sim;
use serde_json::json;
use signal::HubConfig;

#[test]
fn joiner_gets_its_id_and_the_current_peers() {
    let mut sim = Sim::new(HubConfig::default());
    let ada = sim.join(1, "standup", "Ada");
    sim.connect(2);
    sim.send(
        2,
        json!({"type": "join", "room": "standup", "name": "  Grace "}),
    );
    let welcome = sim.last(2);
    assert_eq!(welcome["name"], "Grace");
    assert_eq!(welcome["resumed"], false);
    assert_eq!(welcome["peers"], json!([{"id": ada, "name": "Ada"}]));
    assert_eq!(welcome["limits"]["max_peers_per_room"], 50);
    assert_eq!(welcome["resume_token"].as_str().unwrap().len(), 22);
    assert_ne!(welcome["peer"], json!(ada));
    let joined = sim.last(1);
    assert_eq!(joined["type"], "peer_joined");
    assert_eq!(joined["peer"]["name"], "Grace");
    assert_eq!(sim.hub.stats().peers, 2);
    assert_eq!(sim.hub.stats().rooms, 1);
}

#[test]
fn rooms_are_separate() {
    let mut sim = Sim::new(HubConfig::default());
    sim.join(1, "a", "Ada");
    sim.take(1);
    sim.join(2, "b", "Bob");
    assert!(sim.take(1).is_empty(), "no presence across rooms");
    assert_eq!(sim.last(2)["peers"], json!([]));
}

#[test]
fn leave_tells_the_others_and_allows_a_new_join() {
    let mut sim = Sim::new(HubConfig::default());
    let ada = sim.join(1, "standup", "Ada");
    sim.join(2, "standup", "Grace");
    sim.send(1, json!({"type": "leave"}));
    assert_eq!(
        sim.last(2),
        json!({"type": "peer_left", "peer": ada, "reason": "left"})
    );
    sim.send(1, json!({"type": "leave"}));
    assert_eq!(sim.last_error(1), "not_joined");
    sim.send(1, json!({"type": "join", "room": "other", "name": "Ada"}));
    assert_eq!(sim.last(1)["type"], "welcome");
    assert_ne!(sim.last(1)["peer"], json!(ada), "a new join gets a new id");
}

#[test]
fn a_clean_close_leaves_at_once() {
    let mut sim = Sim::new(HubConfig::default());
    let ada = sim.join(1, "standup", "Ada");
    sim.join(2, "standup", "Grace");
    let now = sim.now;
    sim.input(signal::Input::Disconnected {
        conn: signal::ConnId(1),
        now,
        graceful: true,
    });
    assert_eq!(
        sim.last(2),
        json!({"type": "peer_left", "peer": ada, "reason": "left"})
    );
    assert_eq!(sim.hub.stats().peers, 1);
}

#[test]
fn the_last_peer_out_removes_the_room() {
    let mut sim = Sim::new(HubConfig::default());
    sim.join(1, "standup", "Ada");
    sim.send(1, json!({"type": "leave"}));
    assert_eq!(sim.hub.stats().rooms, 0);
}

#[test]
fn ping_is_answered() {
    let mut sim = Sim::new(HubConfig::default());
    sim.connect(1);
    sim.send(1, json!({"type": "ping", "id": 42}));
    assert_eq!(sim.last(1), json!({"type": "pong", "id": 42}));
}

#[test]
fn shutdown_closes_everyone_with_going_away() {
    let mut sim = Sim::new(HubConfig::default());
    sim.join(1, "standup", "Ada");
    sim.connect(2);
    sim.input(signal::Input::Shutdown);
    assert_eq!(sim.closed.get(&1), Some(&signal::CloseCode::GoingAway));
    assert_eq!(sim.closed.get(&2), Some(&signal::CloseCode::GoingAway));
}

#[test]
fn welcome_carries_static_and_per_peer_ice_servers() {
    use std::sync::Arc;
    let source = signal::IceServerSource(Arc::new(|peer| {
        vec![signal::IceServer {
            urls: vec!["turn:192.0.2.1:3478".into()],
            username: Some(format!("1800000000:{peer}")),
            credential: Some("pw".into()),
        }]
    }));
    let mut sim = Sim::new(HubConfig {
        ice_servers: vec![signal::IceServer {
            urls: vec!["stun:192.0.2.1:3478".into()],
            username: None,
            credential: None,
        }],
        ice_server_source: Some(source),
        ..HubConfig::default()
    });
    let peer = sim.join(1, "r", "Ada");
    let servers = &sim.last(1)["ice_servers"];
    assert_eq!(servers[0], json!({"urls": ["stun:192.0.2.1:3478"]}));
    assert_eq!(servers[1]["username"], json!(format!("1800000000:{peer}")));
}
