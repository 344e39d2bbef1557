//! `/metrics` scraped from a real server after real activity: a WebSocket join, a malformed
//! frame, a TURN allocation.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use server::Config;

#[tokio::test]
async fn metrics_count_joins_allocations_and_errors() {
    let mut config = Config::default();
    config.turn.users = vec!["metrics:secret-pass".into()];
    let server = start(config).await;

    let (status, headers, body) = http(server.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    let content_type = headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(
        content_type,
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let before = parse_exposition(&body);
    assert_eq!(before["switchboard_signaling_connections_total"], 0.0);
    assert_eq!(before["switchboard_turn_allocations_total"], 0.0);

    let (mut ws, _) = join(server.addr, "metrics", "Ada").await;
    send(&mut ws, json!({"type": "nonsense"})).await;
    assert_eq!(recv(&mut ws).await["code"], "unknown_type");
    let turn = server.turn.unwrap();
    tokio::task::spawn_blocking(move || turn_allocate(turn, "metrics", "secret-pass"))
        .await
        .unwrap();

    // TURN's counters reach the HTTP side a few times a second.
    let mut after = before.clone();
    for _ in 0..40 {
        let (status, _, body) = http(server.addr, "GET", "/metrics", &[], b"").await;
        assert_eq!(status, 200);
        after = parse_exposition(&body);
        if after["switchboard_turn_allocations_total"] >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(after["switchboard_signaling_connections"], 1.0);
    assert_eq!(after["switchboard_signaling_connections_total"], 1.0);
    assert_eq!(after["switchboard_rooms"], 1.0);
    assert_eq!(after["switchboard_participants"], 1.0);
    assert_eq!(after["switchboard_signaling_joins_total"], 1.0);
    assert_eq!(
        after["switchboard_errors_total{kind=\"malformed_frame\"}"],
        1.0
    );
    assert_eq!(after["switchboard_turn_allocations"], 1.0);
    assert_eq!(after["switchboard_turn_allocations_total"], 1.0);
    // The unauthenticated Allocate (401) and the authenticated one.
    assert!(after["switchboard_turn_requests_total"] >= 2.0);
    assert_eq!(after["switchboard_sfu_participants"], 0.0);
    assert!(after.contains_key("switchboard_sfu_forwarded_packets_total"));
    assert!(after.contains_key("switchboard_errors_total{kind=\"turn_auth_failure\"}"));
    drop(ws);
}
