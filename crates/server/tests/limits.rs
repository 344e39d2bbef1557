//! Every per-address abuse limit hit over real sockets: too many WebSocket connections (HTTP
//! 429), joins over the rate (`rate_limited`), a TURN flood without credentials (dropped, while
//! another source is still answered), a WHIP POST flood (429), and trusted proxies' forwarding
//! headers. Loopback has a whole /8, so 127.0.0.2 plays the second client.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::json;
use server::Config;
use stun::{Class, Message, MessageType, MessageWriter, Method, TransactionId};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Opens a WebSocket from `local` (an address on loopback) with extra headers; the HTTP status
/// when the upgrade is refused.
async fn ws_from(server: SocketAddr, local: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(server).await.unwrap();
    let mut request = format!("ws://{server}/ws").into_client_request().unwrap();
    for (name, value) in headers {
        let name: tokio_tungstenite::tungstenite::http::HeaderName = name.parse().unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    match tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
        .await
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("unexpected WebSocket error: {other}"),
    }
}

async fn scrape(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    let (status, _, body) = http(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    parse_exposition(&body)
}

fn error_count(metrics: &std::collections::HashMap<String, f64>, kind: &str) -> f64 {
    metrics[&format!("switchboard_errors_total{{kind=\"{kind}\"}}")]
}

#[tokio::test]
async fn too_many_connections_from_one_address_get_429() {
    let mut config = Config::default();
    config.limits.connections_per_ip = 3;
    let server = start(config).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(ws_from(server.addr, "127.0.0.1", &[]).await.unwrap());
    }
    assert_eq!(
        ws_from(server.addr, "127.0.0.1", &[]).await.err(),
        Some(429)
    );
    // Another address is not affected.
    let mut other = ws_from(server.addr, "127.0.0.2", &[]).await.unwrap();
    send(
        &mut other,
        json!({"type": "join", "v": 1, "room": "limits", "name": "B"}),
    )
    .await;
    assert_eq!(recv(&mut other).await["type"], "welcome");
    // A closed connection frees its slot.
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    drop(first);
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(ws) = ws_from(server.addr, "127.0.0.1", &[]).await {
            reopened = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        reopened.is_some(),
        "the slot is released when the connection ends"
    );
    assert_eq!(
        error_count(&scrape(server.addr).await, "ip_connection_limit"),
        1.0
    );
}

#[tokio::test]
async fn trusted_proxies_forwarding_headers_name_the_client() {
    // Untrusted: the header is ignored, both connections count against 127.0.0.1.
    let mut config = Config::default();
    config.limits.connections_per_ip = 1;
    let server = start(config.clone()).await;
    let a = [("x-forwarded-for", "198.51.100.1")];
    let b = [("x-forwarded-for", "198.51.100.2")];
    let _first = ws_from(server.addr, "127.0.0.1", &a).await.unwrap();
    assert_eq!(ws_from(server.addr, "127.0.0.1", &b).await.err(), Some(429));

    // Trusted: each forwarded client has its own count.
    config.limits.trusted_proxies = vec!["127.0.0.1".into()];
    let server = start(config).await;
    let _first = ws_from(server.addr, "127.0.0.1", &a).await.unwrap();
    let _second = ws_from(server.addr, "127.0.0.1", &b).await.unwrap();
    assert_eq!(ws_from(server.addr, "127.0.0.1", &a).await.err(), Some(429));
    let rfc = [("forwarded", "for=198.51.100.3;proto=http")];
    let _third = ws_from(server.addr, "127.0.0.1", &rfc).await.unwrap();
}

#[tokio::test]
async fn joins_over_the_rate_get_rate_limited() {
    let mut config = Config::default();
    config.limits.joins_per_sec_per_ip = 2; // bursts of 4
    let server = start(config).await;
    let mut outcomes = Vec::new();
    let mut keep = Vec::new();
    for i in 0..6 {
        let mut ws = ws_from(server.addr, "127.0.0.1", &[]).await.unwrap();
        send(
            &mut ws,
            json!({"type": "join", "v": 1, "room": "rate", "name": format!("p{i}")}),
        )
        .await;
        let reply = recv(&mut ws).await;
        outcomes.push(if reply["type"] == "welcome" {
            "welcome".to_owned()
        } else {
            reply["code"].as_str().unwrap_or("?").to_owned()
        });
        keep.push(ws);
    }
    assert_eq!(&outcomes[..4], ["welcome"; 4], "{outcomes:?}");
    assert_eq!(outcomes[5], "rate_limited", "{outcomes:?}");
    // Another address joins at once; the refused connection may join once its bucket refills.
    let mut other = ws_from(server.addr, "127.0.0.2", &[]).await.unwrap();
    send(
        &mut other,
        json!({"type": "join", "v": 1, "room": "rate", "name": "other"}),
    )
    .await;
    assert_eq!(recv(&mut other).await["type"], "welcome");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let refused = keep.last_mut().unwrap();
    send(
        refused,
        json!({"type": "join", "v": 1, "room": "rate", "name": "later"}),
    )
    .await;
    loop {
        let reply = recv(refused).await;
        if reply["type"] == "welcome" {
            break;
        }
        assert_ne!(reply["type"], "error", "{reply}");
    }
    assert!(error_count(&scrape(server.addr).await, "join_rate_limited") >= 1.0);
}

fn binding(tid: u8) -> Vec<u8> {
    let mut buf = Vec::new();
    let w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::BINDING, Class::Request),
        TransactionId([tid; 12]),
    );
    w.finish();
    buf
}

/// Sends `count` Binding requests from `socket` and counts the answers within 500 ms.
async fn binding_flood(socket: &tokio::net::UdpSocket, turn: SocketAddr, count: u8) -> usize {
    for i in 0..count {
        socket.send_to(&binding(i), turn).await.unwrap();
    }
    let mut answers = 0;
    let mut buf = [0u8; 1500];
    while let Ok(Ok((len, _))) =
        tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await
    {
        let message = Message::parse(&buf[..len]).unwrap();
        assert_eq!(message.class(), Class::SuccessResponse);
        answers += 1;
    }
    answers
}

#[tokio::test]
async fn a_turn_flood_without_credentials_is_dropped_while_another_source_is_answered() {
    let mut config = Config::default();
    config.turn.unauthenticated_per_sec_per_ip = 5; // bursts of 10
    let server = start(config).await;
    let turn = server.turn.unwrap();
    let flooder = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let answered = binding_flood(&flooder, turn, 100).await;
    assert!((10..=14).contains(&answered), "{answered} of 100 answered");
    let other = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    assert_eq!(binding_flood(&other, turn, 3).await, 3);
    // TURN counters reach the HTTP side a few times a second.
    let mut dropped = 0.0;
    for _ in 0..20 {
        dropped = error_count(&scrape(server.addr).await, "turn_rate_limited");
        if dropped > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped >= 80.0, "{dropped}");
}

#[tokio::test]
async fn a_whip_post_flood_gets_429() {
    let mut config = Config::default();
    config.limits.whip_per_sec_per_ip = 2; // bursts of 4
    let server = start(config).await;
    let offer = b"v=0\r\n";
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (status, headers, _) = http(
            server.addr,
            "POST",
            "/whip/flood",
            &[("Content-Type", "text/plain")],
            offer,
        )
        .await;
        if status == 429 {
            assert!(headers.iter().any(|(n, v)| n == "retry-after" && v == "1"));
        }
        statuses.push(status);
    }
    // The first four reach the endpoint (and fail there: not an SDP body), the rest are refused.
    assert_eq!(&statuses[..4], [415; 4], "{statuses:?}");
    assert!(statuses[5..].iter().all(|&s| s == 429), "{statuses:?}");
    assert!(error_count(&scrape(server.addr).await, "whip_rate_limited") >= 3.0);
}
