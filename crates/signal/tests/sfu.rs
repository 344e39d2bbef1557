//! The `sfu` message: offers go to the SFU with the sender's room and id, answers come back to
//! that peer only, and a peer that leaves is taken out of the SFU.

mod common;

use common::Sim;
use serde_json::json;
use signal::protocol::SessionDescription;
use signal::{HubConfig, Input, PeerId, ServerMessage};

#[test]
fn an_offer_goes_to_the_sfu_with_room_and_peer_and_the_answer_comes_back() {
    let mut sim = Sim::new(HubConfig::default());
    let ann = sim.join(1, "standup", "Ann");
    let _ben = sim.join(2, "standup", "Ben");
    sim.take(1);
    sim.take(2);
    sim.send(
        1,
        json!({"type": "sfu", "description": {"type": "offer", "sdp": "v=0 offer"}}),
    );
    assert_eq!(
        sim.sfu,
        vec![(
            "standup".to_owned(),
            ann.clone(),
            Some("v=0 offer".to_owned())
        )]
    );
    assert!(sim.take(1).is_empty(), "no error for a good offer");

    let peer = PeerId::parse(&ann).unwrap();
    sim.input(Input::FromSfu {
        peer,
        message: ServerMessage::Sfu {
            description: Some(SessionDescription {
                kind: "answer".into(),
                sdp: "v=0 answer".into(),
            }),
            error: None,
        },
    });
    let answer = sim.last(1);
    assert_eq!(answer["type"], "sfu");
    assert_eq!(answer["description"]["type"], "answer");
    assert_eq!(answer["description"]["sdp"], "v=0 answer");
    assert!(answer.get("error").is_none());
    assert!(sim.take(2).is_empty(), "only the offerer gets the answer");

    sim.send(1, json!({"type": "leave"}));
    assert_eq!(sim.sfu.last(), Some(&("standup".to_owned(), ann, None)));
}

#[test]
fn bad_sfu_messages_get_errors() {
    let mut sim = Sim::new(HubConfig::default());
    sim.connect(1);
    sim.send(
        1,
        json!({"type": "sfu", "description": {"type": "offer", "sdp": "v=0"}}),
    );
    assert_eq!(sim.last_error(1), "not_joined");
    sim.join(2, "room", "Cy");
    for bad in [
        json!({"type": "sfu", "description": {"type": "answer", "sdp": "v=0"}}),
        json!({"type": "sfu", "description": {"type": "offer", "sdp": ""}}),
    ] {
        sim.send(2, bad);
        assert_eq!(sim.last_error(2), "bad_signal");
    }
    sim.send(2, json!({"type": "sfu"}));
    assert_eq!(sim.last_error(2), "bad_json");
    assert!(sim.sfu.is_empty());
}

#[test]
fn a_peer_whose_grace_runs_out_leaves_the_sfu_too() {
    let mut sim = Sim::new(HubConfig::default());
    let cy = sim.join(1, "room", "Cy");
    sim.drop_conn(1);
    assert!(sim.sfu.is_empty(), "still in its resume grace");
    sim.advance(HubConfig::default().resume_grace + std::time::Duration::from_secs(1));
    assert_eq!(sim.sfu, vec![("room".to_owned(), cy, None)]);
}
