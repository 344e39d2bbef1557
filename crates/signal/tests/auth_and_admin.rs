//! Joins checked by an authorizer (tokens are the glue's business; here a table stands in for
//! it), offers that send media without the publish grant, and the administrator's kick and
//! room close.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::Sim;
use serde_json::json;
use signal::hub::sdp_sends_media;
use signal::{Authorizer, CloseCode, HubConfig, Input, JoinRefusal, PeerGrants, PeerId};

/// Tokens: "pub" may publish in any room, "sub" only receive, "other" is for room "elsewhere".
fn authorizer() -> Authorizer {
    Authorizer(Arc::new(|room, token| match token {
        None => Err(JoinRefusal {
            forbidden: false,
            message: "a token is required".into(),
        }),
        Some("pub") => Ok(PeerGrants {
            identity: Some("ann".into()),
            publish: true,
        }),
        Some("sub") => Ok(PeerGrants {
            identity: Some("ben".into()),
            publish: false,
        }),
        Some("other") if room != "elsewhere" => Err(JoinRefusal {
            forbidden: true,
            message: "the token is for room \"elsewhere\"".into(),
        }),
        Some(_) => Err(JoinRefusal {
            forbidden: false,
            message: "malformed token".into(),
        }),
    }))
}

fn sim_with_auth() -> Sim {
    Sim::new(HubConfig {
        authorizer: Some(authorizer()),
        ..HubConfig::default()
    })
}

fn join_with(sim: &mut Sim, conn: u64, room: &str, token: Option<&str>) -> serde_json::Value {
    sim.connect(conn);
    let mut join = json!({"type": "join", "v": 1, "room": room, "name": "N"});
    if let Some(token) = token {
        join["token"] = json!(token);
    }
    sim.send(conn, join);
    sim.last(conn)
}

#[test]
fn joins_without_a_valid_token_are_refused_and_closed() {
    let mut sim = sim_with_auth();
    assert_eq!(
        join_with(&mut sim, 1, "standup", None)["code"],
        "unauthorized"
    );
    assert_eq!(sim.closed.get(&1), Some(&CloseCode::Unauthorized));
    assert_eq!(
        join_with(&mut sim, 2, "standup", Some("junk"))["code"],
        "unauthorized"
    );
    assert_eq!(sim.closed.get(&2), Some(&CloseCode::Unauthorized));
    let refused = join_with(&mut sim, 3, "standup", Some("other"));
    assert_eq!(refused["code"], "forbidden");
    assert!(refused["message"].as_str().unwrap().contains("elsewhere"));
    assert_eq!(sim.closed.get(&3), Some(&CloseCode::Forbidden));
    assert_eq!(sim.hub.stats().peers, 0);
    assert_eq!(
        join_with(&mut sim, 4, "elsewhere", Some("other"))["code"],
        "unauthorized"
    );
    assert_eq!(
        join_with(&mut sim, 5, "standup", Some("pub"))["type"],
        "welcome"
    );
    let peers = sim.hub.room_peers("standup").unwrap();
    assert_eq!(peers[0].identity.as_deref(), Some("ann"));
}

#[test]
fn a_resume_needs_a_token_too() {
    let mut sim = sim_with_auth();
    let welcome = join_with(&mut sim, 1, "standup", Some("pub"));
    let peer = welcome["peer"].as_str().unwrap().to_owned();
    let resume_token = welcome["resume_token"].as_str().unwrap().to_owned();
    sim.drop_conn(1);
    sim.connect(2);
    sim.send(
        2,
        json!({"type": "join", "room": "standup", "name": "N",
               "resume": {"peer": peer, "token": resume_token}}),
    );
    assert_eq!(sim.last_error(2), "unauthorized");
    sim.connect(3);
    sim.send(
        3,
        json!({"type": "join", "room": "standup", "name": "N", "token": "pub",
               "resume": {"peer": peer, "token": resume_token}}),
    );
    assert_eq!(sim.last(3)["resumed"], true);
}

#[test]
fn an_offer_that_sends_media_needs_the_publish_grant() {
    let mut sim = sim_with_auth();
    join_with(&mut sim, 1, "standup", Some("sub"));
    let sends = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\n";
    sim.send(
        1,
        json!({"type": "sfu", "description": {"type": "offer", "sdp": sends}}),
    );
    assert_eq!(sim.last_error(1), "forbidden");
    assert!(sim.sfu.is_empty());
    assert!(!sim.closed.contains_key(&1), "only the offer is refused");
    let receives = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n\
                    m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
    sim.send(
        1,
        json!({"type": "sfu", "description": {"type": "offer", "sdp": receives}}),
    );
    assert_eq!(sim.sfu.len(), 1);
    join_with(&mut sim, 2, "standup", Some("pub"));
    sim.send(
        2,
        json!({"type": "sfu", "description": {"type": "offer", "sdp": sends}}),
    );
    assert_eq!(sim.sfu.len(), 2);
}

#[test]
fn sdp_directions() {
    assert!(sdp_sends_media("m=audio 9 RTP/AVP 0\r\n"));
    assert!(sdp_sends_media("m=audio 9 RTP/AVP 0\na=sendonly\n"));
    assert!(!sdp_sends_media("m=audio 9 RTP/AVP 0\r\na=recvonly\r\n"));
    assert!(!sdp_sends_media("m=audio 0 RTP/AVP 0\r\n"));
    assert!(!sdp_sends_media(
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    ));
    assert!(sdp_sends_media(
        "m=audio 9 RTP/AVP 0\r\na=inactive\r\nm=video 9 RTP/AVP 96\r\na=sendrecv\r\n"
    ));
    assert!(!sdp_sends_media("v=0\r\n"));
}

#[test]
fn kick_tells_the_peer_and_the_others_see_it_leave() {
    let mut sim = Sim::new(HubConfig::default());
    let ann = sim.join(1, "standup", "Ann");
    let _ben = sim.join(2, "standup", "Ben");
    sim.take(1);
    sim.take(2);
    let peer = PeerId::parse(&ann).unwrap();
    sim.input(Input::Kick { peer });
    assert_eq!(sim.last_error(1), "kicked");
    assert_eq!(sim.closed.get(&1), Some(&CloseCode::Kicked));
    let left = sim.last(2);
    assert_eq!(left["type"], "peer_left");
    assert_eq!(left["peer"], ann.as_str());
    assert_eq!(left["reason"], "kicked");
    assert_eq!(
        sim.sfu.last(),
        Some(&("standup".to_owned(), ann.clone(), None)),
        "the SFU drops it too"
    );
    assert_eq!(sim.hub.room_peers("standup").unwrap().len(), 1);
    // The connection is gone: its late frames are ignored.
    sim.send(1, json!({"type": "ping"}));
    assert_eq!(sim.last_error(1), "kicked");
}

#[test]
fn close_room_removes_everyone_and_the_name_can_be_used_again() {
    let mut sim = Sim::new(HubConfig::default());
    sim.join(1, "standup", "Ann");
    sim.join(2, "standup", "Ben");
    sim.join(3, "other", "Cy");
    sim.take(1);
    sim.take(2);
    sim.take(3);
    assert_eq!(sim.hub.rooms().len(), 2);
    sim.input(Input::CloseRoom {
        room: "standup".into(),
    });
    for conn in [1, 2] {
        let got = sim.take(conn);
        assert_eq!(got.len(), 1, "only the room_closed error: {got:?}");
        assert_eq!(got[0]["code"], "room_closed");
        assert_eq!(sim.closed.get(&conn), Some(&CloseCode::RoomClosed));
    }
    assert!(sim.take(3).is_empty());
    let rooms = sim.hub.rooms();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].name, "other");
    assert!(sim.hub.room_peers("standup").is_none());
    assert_eq!(
        sim.sfu.iter().filter(|(_, _, sdp)| sdp.is_none()).count(),
        2
    );
    sim.join(4, "standup", "Dee");
}
