//! Persistent rooms: settings the hub enforces, and chat that is broadcast only once stored.
#![allow(clippy::unwrap_used)]

mod common;

use common::Sim;
use serde_json::json;
use signal::{ChatMessage, HubConfig, Input, PeerId, RoomSettings};

fn stored(id: i64, from: &str, text: &str) -> ChatMessage {
    ChatMessage {
        id,
        at: 1_767_225_600_000 + id,
        from: from.into(),
        name: "Ada".into(),
        text: text.into(),
    }
}

fn persistent(sim: &mut Sim, room: &str, max: usize, history: usize, old: Vec<ChatMessage>) {
    sim.input(Input::RoomSettings {
        room: room.into(),
        settings: Some(RoomSettings {
            max_participants: max,
            chat_history: history,
        }),
        history: Some(old),
    });
}

/// Commits every chat the hub asked to store, with ids from `next_id`.
fn commit_all(sim: &mut Sim, next_id: &mut i64) {
    for (room, peer, name, text) in std::mem::take(&mut sim.store) {
        *next_id += 1;
        let message = ChatMessage {
            id: *next_id,
            at: 0,
            from: peer.to_string(),
            name,
            text,
        };
        sim.input(Input::ChatStored { room, message });
    }
}

#[test]
fn a_joiner_gets_the_settings_and_the_stored_history() {
    let mut sim = Sim::new(HubConfig::default());
    persistent(
        &mut sim,
        "standup",
        8,
        50,
        vec![
            stored(1, "00000000000000aa", "first"),
            stored(2, "00000000000000aa", "second"),
        ],
    );
    sim.connect(1);
    sim.send(1, json!({"type": "join", "room": "standup", "name": "Bob"}));
    let frames = sim.take(1);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0]["type"], "welcome");
    assert_eq!(
        frames[0]["room_settings"],
        json!({"max_participants": 8, "chat_history": 50})
    );
    assert_eq!(frames[0]["limits"]["max_peers_per_room"], 8);
    assert_eq!(frames[1]["type"], "chat_history");
    let texts: Vec<&str> = frames[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first", "second"]);
    assert_eq!(frames[1]["messages"][0]["id"], 1);

    // A room that is not persistent has neither.
    sim.connect(2);
    sim.send(2, json!({"type": "join", "room": "adhoc", "name": "Eve"}));
    let frames = sim.take(2);
    assert_eq!(frames.len(), 1);
    assert!(frames[0].get("room_settings").is_none(), "{}", frames[0]);
}

#[test]
fn chat_is_broadcast_only_once_stored_and_the_sender_gets_the_echo() {
    let mut sim = Sim::new(HubConfig::default());
    persistent(&mut sim, "r", 10, 100, Vec::new());
    let ada = sim.join(1, "r", "Ada");
    sim.join(2, "r", "Bob");
    sim.take(1);
    sim.take(2);
    sim.send(1, json!({"type": "chat", "text": "hello"}));
    assert!(
        sim.take(1).is_empty() && sim.take(2).is_empty(),
        "nothing before the commit"
    );
    assert_eq!(sim.store.len(), 1);
    assert_eq!(sim.store[0].0, "r");
    assert_eq!(sim.store[0].1.to_string(), ada);
    assert_eq!(sim.store[0].2, "Ada");
    let mut id = 40;
    commit_all(&mut sim, &mut id);
    for conn in [1, 2] {
        let got = sim.take(conn);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["type"], "chat");
        assert_eq!(got[0]["id"], 41);
        assert_eq!(got[0]["from"], ada.as_str());
        assert_eq!(got[0]["name"], "Ada");
        assert_eq!(got[0]["text"], "hello");
    }
    // A later joiner sees it in the history.
    sim.connect(3);
    sim.send(3, json!({"type": "join", "room": "r", "name": "Cy"}));
    let frames = sim.take(3);
    assert_eq!(frames[1]["messages"][0]["text"], "hello");
    assert_eq!(sim.hub.stats().chats_stored, 1);
}

#[test]
fn chat_refusals() {
    let mut sim = Sim::new(HubConfig {
        max_chat_chars: 10,
        chat_burst: 3,
        chat_per_second: 1,
        ..HubConfig::default()
    });
    sim.connect(9);
    sim.send(9, json!({"type": "chat", "text": "early"}));
    assert_eq!(sim.last_error(9), "not_joined");
    sim.join(1, "adhoc", "Ada");
    sim.send(1, json!({"type": "chat", "text": "hi"}));
    assert_eq!(sim.last_error(1), "chat_unavailable");
    persistent(&mut sim, "quiet", 10, 0, Vec::new());
    sim.join(2, "quiet", "Bob");
    sim.send(2, json!({"type": "chat", "text": "hi"}));
    assert_eq!(sim.last_error(2), "chat_unavailable");

    persistent(&mut sim, "r", 10, 100, Vec::new());
    sim.join(3, "r", "Cy");
    sim.send(3, json!({"type": "chat", "text": "   "}));
    assert_eq!(sim.last_error(3), "bad_chat");
    sim.send(3, json!({"type": "chat", "text": "ééééééééééé"}));
    assert_eq!(sim.last_error(3), "bad_chat");
    sim.send(3, json!({"type": "chat", "text": 5}));
    assert_eq!(sim.last_error(3), "bad_json");
    assert!(sim.store.is_empty());
    // Ten characters is fine however many bytes; the fourth in a burst of three is dropped.
    for _ in 0..4 {
        sim.send(3, json!({"type": "chat", "text": "éééééééééé"}));
    }
    assert_eq!(sim.store.len(), 3);
    assert_eq!(sim.last_error(3), "rate_limited");
    sim.advance(std::time::Duration::from_secs(1));
    sim.send(3, json!({"type": "chat", "text": "again"}));
    assert_eq!(sim.store.len(), 4);

    // A message the glue could not store is an error for its sender only.
    let (_, peer, _, _) = sim.store[0].clone();
    sim.take(3);
    sim.input(Input::ChatFailed {
        peer,
        reason: "disk full".into(),
    });
    assert_eq!(sim.last_error(3), "chat_failed");
    sim.input(Input::ChatFailed {
        peer: PeerId(12345),
        reason: "gone".into(),
    });
}

#[test]
fn the_room_setting_replaces_the_server_room_size() {
    let mut sim = Sim::new(HubConfig {
        max_peers_per_room: 50,
        ..HubConfig::default()
    });
    persistent(&mut sim, "small", 2, 0, Vec::new());
    sim.join(1, "small", "Ada");
    sim.join(2, "small", "Bob");
    sim.connect(3);
    sim.send(3, json!({"type": "join", "room": "small", "name": "Cy"}));
    assert_eq!(sim.last_error(3), "room_full");
    // Raised through the admin API: the next join fits.
    persistent(&mut sim, "small", 3, 0, Vec::new());
    sim.send(3, json!({"type": "join", "room": "small", "name": "Cy"}));
    assert_eq!(sim.last(3)["type"], "welcome");
    // Deleted: an ordinary room again, with the server's limit and no server chat.
    sim.input(Input::RoomSettings {
        room: "small".into(),
        settings: None,
        history: None,
    });
    sim.send(3, json!({"type": "chat", "text": "hi"}));
    assert_eq!(sim.last_error(3), "chat_unavailable");
    sim.join(4, "small", "Di");
    assert!(sim.last(4).get("room_settings").is_none());
}

#[test]
fn history_is_trimmed_to_the_limit_and_resent_on_resume() {
    let mut sim = Sim::new(HubConfig {
        chat_history_on_join: 3,
        chat_burst: 100,
        ..HubConfig::default()
    });
    persistent(&mut sim, "r", 10, 1000, Vec::new());
    sim.join(1, "r", "Ada");
    let welcome = sim
        .take(1)
        .into_iter()
        .find(|f| f["type"] == "welcome")
        .unwrap();
    let mut id = 0;
    for i in 0..5 {
        sim.send(1, json!({"type": "chat", "text": format!("m{i}")}));
    }
    commit_all(&mut sim, &mut id);
    sim.drop_conn(1);
    sim.connect(2);
    sim.send(
        2,
        json!({"type": "join", "room": "r", "name": "Ada",
               "resume": {"peer": welcome["peer"], "token": welcome["resume_token"]}}),
    );
    let frames = sim.take(2);
    assert_eq!(frames[0]["resumed"], true);
    let texts: Vec<&str> = frames[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m2", "m3", "m4"]);
    // Lowering the room's limit trims what joiners get.
    sim.input(Input::RoomSettings {
        room: "r".into(),
        settings: Some(RoomSettings {
            max_participants: 10,
            chat_history: 1,
        }),
        history: None,
    });
    sim.connect(3);
    sim.send(3, json!({"type": "join", "room": "r", "name": "Bob"}));
    let frames = sim.take(3);
    assert_eq!(frames[1]["messages"].as_array().unwrap().len(), 1);
}
