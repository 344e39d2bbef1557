//! Relaying descriptions and candidates to one peer.

mod common;

use common::Sim;
use serde_json::json;
use signal::HubConfig;

#[test]
fn offers_answers_and_candidates_reach_only_their_addressee() {
    let mut sim = Sim::new(HubConfig::default());
    let ada = sim.join(1, "standup", "Ada");
    let grace = sim.join(2, "standup", "Grace");
    sim.join(3, "standup", "Linus");
    sim.take(1);
    sim.take(2);
    sim.take(3);
    let offer = json!({"type": "offer", "sdp": "v=0\r\n"});
    sim.send(
        1,
        json!({"type": "signal", "to": grace, "description": offer}),
    );
    assert_eq!(
        sim.take(2),
        vec![json!({"type": "signal", "from": ada, "description": offer})]
    );
    let candidate = json!({"candidate": "candidate:1 1 udp 1 192.0.2.1 5000 typ host",
                           "sdp_mid": "0", "sdp_m_line_index": 0, "username_fragment": "u"});
    sim.send(
        2,
        json!({"type": "signal", "to": ada, "candidate": candidate}),
    );
    sim.send(2, json!({"type": "signal", "to": ada, "candidate": null}));
    assert_eq!(
        sim.take(1),
        vec![
            json!({"type": "signal", "from": grace, "candidate": candidate}),
            json!({"type": "signal", "from": grace, "candidate": null}),
        ]
    );
    assert!(sim.take(3).is_empty());
    assert_eq!(sim.hub.stats().signals_relayed, 3);
}

#[test]
fn signals_to_unknown_peers_self_or_other_rooms_are_refused() {
    let mut sim = Sim::new(HubConfig::default());
    let ada = sim.join(1, "a", "Ada");
    let bob = sim.join(2, "b", "Bob");
    let description = json!({"type": "offer", "sdp": "v=0"});
    for to in [bob.as_str(), ada.as_str(), "0000000000000000", "nobody", ""] {
        sim.send(
            1,
            json!({"type": "signal", "to": to, "description": description}),
        );
        assert_eq!(sim.last_error(1), "unknown_peer", "to {to:?}");
    }
    assert!(sim.take(2).iter().all(|m| m["type"] != "signal"));
}

#[test]
fn signal_before_join_is_refused() {
    let mut sim = Sim::new(HubConfig::default());
    sim.connect(1);
    sim.send(
        1,
        json!({"type": "signal", "to": "0000000000000001", "candidate": null}),
    );
    assert_eq!(sim.last_error(1), "not_joined");
}
