//! `/metrics`: the cores' counters in the Prometheus text exposition format (version 0.0.4).
//!
//! The protocol cores count into plain stats structs ([`signal::HubStats`], [`turn::TurnStats`],
//! [`sfu::SfuStats`]); what only the glue sees (refusals before a connection reaches the hub,
//! slow consumers, WHIP/WHEP refusals) is counted in [`Counters`]. This module only formats:
//! every family has `# HELP` and `# TYPE`, names start with `switchboard_`, counters end in
//! `_total`, and `switchboard_errors_total{kind="..."}` lists every kind even at zero, so a
//! dashboard's series exist from the first scrape.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use signal::HubStats;

/// The content type of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counters kept by the glue (the HTTP side), shared by every connection task.
#[derive(Debug, Default)]
pub struct Counters {
    /// WebSocket upgrades refused because the client address had too many connections (429).
    pub ws_refused_per_ip: AtomicU64,
    /// WebSocket messages over the size limit, refused by the WebSocket layer (1009).
    pub ws_oversized: AtomicU64,
    /// Connections closed for not reading their frames (4002).
    pub slow_consumers: AtomicU64,
    /// WHIP/WHEP offers refused by the per-address rate (429).
    pub whip_rate_limited: AtomicU64,
    /// WHIP/WHEP sessions started.
    pub whip_sessions: AtomicU64,
    /// WHIP/WHEP offers the SFU refused (bad offer, full).
    pub whip_refused: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Everything one scrape reports; `None` for a part the server does not run.
pub struct Snapshot<'a> {
    /// Signaling (absent when the hub task is gone).
    pub hub: Option<HubStats>,
    /// The built-in TURN server.
    pub turn: Option<turn::TurnStats>,
    /// The SFU.
    pub sfu: Option<sfu::SfuStats>,
    /// The glue's own counters.
    pub counters: &'a Counters,
}

/// Renders a scrape.
pub fn render(snapshot: &Snapshot<'_>) -> String {
    let mut out = Exposition::default();
    out.gauge_labeled(
        "switchboard_build_info",
        "The running version (always 1).",
        &[(format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1)],
    );
    let c = snapshot.counters;
    if let Some(h) = &snapshot.hub {
        out.gauge(
            "switchboard_signaling_connections",
            "Signaling WebSocket connections open now.",
            h.connections as u64,
        );
        out.counter(
            "switchboard_signaling_connections_total",
            "Signaling WebSocket connections accepted.",
            h.connections_total,
        );
        out.gauge(
            "switchboard_rooms",
            "Signaling rooms that exist now.",
            h.rooms as u64,
        );
        out.gauge(
            "switchboard_participants",
            "Peers in signaling rooms now (including those inside their resume grace).",
            h.peers as u64,
        );
        out.counter(
            "switchboard_signaling_frames_received_total",
            "Signaling frames received.",
            h.frames_in,
        );
        out.counter(
            "switchboard_signaling_joins_total",
            "Successful fresh joins.",
            h.joins,
        );
        out.counter(
            "switchboard_signaling_resumes_total",
            "Successful resumes after a dropped connection.",
            h.resumes,
        );
        out.counter(
            "switchboard_signaling_signals_relayed_total",
            "Offers, answers, candidates and app messages relayed between peers.",
            h.signals_relayed,
        );
        out.counter(
            "switchboard_signaling_error_frames_total",
            "Error frames sent to clients.",
            h.errors_sent,
        );
        out.counter(
            "switchboard_signaling_closed_by_server_total",
            "Signaling connections the server closed (any close code).",
            h.closed_by_server,
        );
        out.counter(
            "switchboard_signaling_grace_expired_total",
            "Peers removed when their resume grace ran out.",
            h.grace_expired,
        );
        out.counter(
            "switchboard_chat_messages_stored_total",
            "Chat messages of persistent rooms committed to the database and broadcast.",
            h.chats_stored,
        );
    }
    if let Some(t) = &snapshot.turn {
        out.gauge(
            "switchboard_turn_allocations",
            "TURN allocations now.",
            t.allocations as u64,
        );
        out.counter(
            "switchboard_turn_allocations_total",
            "TURN allocations created.",
            t.allocations_created,
        );
        out.counter(
            "switchboard_turn_requests_total",
            "STUN/TURN requests received (every method).",
            t.requests,
        );
        out.counter(
            "switchboard_stun_bindings_total",
            "STUN Binding requests answered.",
            t.bindings,
        );
        out.counter_labeled(
            "switchboard_turn_relayed_packets_total",
            "Packets relayed, by direction.",
            &[
                ("direction=\"to_peer\"".into(), t.packets_to_peers),
                ("direction=\"to_client\"".into(), t.packets_to_clients),
            ],
        );
        out.counter_labeled(
            "switchboard_turn_relayed_bytes_total",
            "Payload bytes relayed, by direction.",
            &[
                ("direction=\"to_peer\"".into(), t.bytes_to_peers),
                ("direction=\"to_client\"".into(), t.bytes_to_clients),
            ],
        );
    }
    if let Some(s) = &snapshot.sfu {
        out.gauge(
            "switchboard_sfu_rooms",
            "SFU rooms with at least one participant.",
            s.rooms as u64,
        );
        out.gauge(
            "switchboard_sfu_participants",
            "SFU participants now (members, WHIP publishers, WHEP viewers).",
            s.participants as u64,
        );
        out.gauge(
            "switchboard_sfu_tracks",
            "Tracks published into the SFU now.",
            s.tracks as u64,
        );
        out.counter(
            "switchboard_sfu_forwarded_packets_total",
            "Media packets the SFU wrote to subscribers.",
            s.media_forwarded,
        );
        out.counter_labeled(
            "switchboard_sfu_datagrams_total",
            "Datagrams on the SFU media port, by direction.",
            &[
                ("direction=\"in\"".into(), s.datagrams_in),
                ("direction=\"out\"".into(), s.datagrams_out),
            ],
        );
        out.counter_labeled(
            "switchboard_sfu_bytes_total",
            "Bytes on the SFU media port, by direction.",
            &[
                ("direction=\"in\"".into(), s.bytes_in),
                ("direction=\"out\"".into(), s.bytes_out),
            ],
        );
        out.counter(
            "switchboard_sfu_keyframe_requests_total",
            "Keyframe requests (PLI/FIR) sent to publishers.",
            s.keyframe_requests,
        );
    }
    out.counter(
        "switchboard_whip_sessions_total",
        "WHIP and WHEP sessions started.",
        Counters::get(&c.whip_sessions),
    );
    let hub = snapshot.hub.clone().unwrap_or_default();
    let turn = snapshot.turn.clone().unwrap_or_default();
    let sfu = snapshot.sfu.unwrap_or_default();
    let errors: [(&str, u64); 20] = [
        ("malformed_frame", hub.malformed_frames),
        (
            "oversized_frame",
            hub.oversized_frames + Counters::get(&c.ws_oversized),
        ),
        ("rate_limited", hub.rate_limited),
        ("join_rate_limited", hub.joins_rate_limited),
        ("flood_closed", hub.flood_closed),
        ("connection_limit", hub.connections_refused),
        ("ip_connection_limit", Counters::get(&c.ws_refused_per_ip)),
        ("slow_consumer", Counters::get(&c.slow_consumers)),
        ("whip_rate_limited", Counters::get(&c.whip_rate_limited)),
        ("whip_refused", Counters::get(&c.whip_refused)),
        ("turn_rate_limited", turn.rate_limited),
        ("turn_auth_failure", turn.auth_failures),
        ("turn_stale_nonce", turn.stale_nonces),
        ("turn_malformed", turn.malformed_dropped),
        ("turn_denied_peer", turn.denied_peers),
        ("turn_unroutable", turn.unroutable_dropped),
        ("turn_bandwidth_dropped", turn.bandwidth_dropped),
        ("sfu_unroutable", sfu.unroutable),
        ("sfu_rejected_input", sfu.rejected_inputs),
        ("sfu_dropped_participant", sfu.dropped_participants),
    ];
    let samples: Vec<(String, u64)> = errors
        .iter()
        .map(|(kind, value)| (format!("kind=\"{kind}\""), *value))
        .collect();
    out.counter_labeled(
        "switchboard_errors_total",
        "Refused or dropped input and limits hit, by kind (see docs/operations.md, \"Metrics\").",
        &samples,
    );
    out.0
}

/// An exposition being written.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, "gauge", help);
        let _ = writeln!(self.0, "{name} {value}");
    }

    fn gauge_labeled(&mut self, name: &str, help: &str, samples: &[(String, u64)]) {
        self.header(name, "gauge", help);
        for (labels, value) in samples {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, "counter", help);
        let _ = writeln!(self.0, "{name} {value}");
    }

    fn counter_labeled(&mut self, name: &str, help: &str, samples: &[(String, u64)]) {
        self.header(name, "counter", help);
        for (labels, value) in samples {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_and_counters_end_in_total() {
        let counters = Counters::default();
        let text = render(&Snapshot {
            hub: Some(HubStats::default()),
            turn: Some(turn::TurnStats::default()),
            sfu: Some(sfu::SfuStats::default()),
            counters: &counters,
        });
        let mut typed = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(name.starts_with("switchboard_"), "{name}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{name}");
                }
                typed.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(typed.contains_key(name), "{name} has no TYPE line");
            }
        }
        assert!(text.contains("switchboard_errors_total{kind=\"turn_auth_failure\"} 0\n"));
    }
}
