//! Real WebSocket clients against a real server on 127.0.0.1:0.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use server::{Config, Server};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(config: Config) -> Running {
    let mut config = Config {
        http: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    config.turn.listen = "127.0.0.1:0".parse().unwrap();
    config.sfu.listen = "127.0.0.1:0".parse().unwrap();
    let server = Server::bind(config).await.unwrap();
    let addr = server.http_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

async fn connect(addr: SocketAddr) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// The next text frame as JSON, skipping pings.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("the stream is open")
            .expect("no transport error");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame and returns its code.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s");
        match frame {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn join(addr: SocketAddr, room: &str, name: &str) -> (Ws, Value) {
    let mut ws = connect(addr).await;
    send(
        &mut ws,
        json!({"type": "join", "v": 1, "room": room, "name": name}),
    )
    .await;
    let welcome = recv(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

#[tokio::test]
async fn join_relay_and_leave() {
    let server = start(Config::default()).await;
    let (mut ada, welcome_a) = join(server.addr, "standup", "Ada").await;
    let (mut grace, welcome_g) = join(server.addr, "standup", "Grace").await;
    let a = welcome_a["peer"].as_str().unwrap();
    let g = welcome_g["peer"].as_str().unwrap();
    assert_eq!(welcome_g["peers"], json!([{"id": a, "name": "Ada"}]));
    assert_eq!(
        recv(&mut ada).await,
        json!({"type": "peer_joined", "peer": {"id": g, "name": "Grace"}})
    );

    let offer = json!({"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"});
    send(
        &mut ada,
        json!({"type": "signal", "to": g, "description": offer}),
    )
    .await;
    assert_eq!(
        recv(&mut grace).await,
        json!({"type": "signal", "from": a, "description": offer})
    );
    let candidate = json!({"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host",
                           "sdp_mid": "0", "sdp_m_line_index": 0, "username_fragment": "abcd"});
    send(
        &mut grace,
        json!({"type": "signal", "to": a, "candidate": candidate}),
    )
    .await;
    assert_eq!(
        recv(&mut ada).await,
        json!({"type": "signal", "from": g, "candidate": candidate})
    );

    send(&mut grace, json!({"type": "leave"})).await;
    assert_eq!(
        recv(&mut ada).await,
        json!({"type": "peer_left", "peer": g, "reason": "left"})
    );
    send(
        &mut ada,
        json!({"type": "signal", "to": g, "candidate": null}),
    )
    .await;
    assert_eq!(recv(&mut ada).await["code"], "unknown_peer");
}

#[tokio::test]
async fn resume_after_a_dropped_connection_keeps_the_peer_id() {
    let server = start(Config::default()).await;
    let (ada, welcome) = join(server.addr, "standup", "Ada").await;
    let (mut grace, welcome_g) = join(server.addr, "standup", "Grace").await;
    let a = welcome["peer"].as_str().unwrap().to_owned();
    let g = welcome_g["peer"].as_str().unwrap();
    // Drop the TCP connection without a close frame, as a network failure would.
    drop(ada);
    tokio::time::sleep(Duration::from_millis(100)).await;
    send(
        &mut grace,
        json!({"type": "signal", "to": a, "candidate": null}),
    )
    .await;

    let mut again = connect(server.addr).await;
    send(
        &mut again,
        json!({"type": "join", "room": "standup", "name": "Ada",
        "resume": {"peer": a, "token": welcome["resume_token"]}}),
    )
    .await;
    let resumed = recv(&mut again).await;
    assert_eq!(resumed["type"], "welcome");
    assert_eq!(resumed["resumed"], true);
    assert_eq!(resumed["peer"], json!(a));
    assert_eq!(
        recv(&mut again).await,
        json!({"type": "signal", "from": g, "candidate": null})
    );
    // Grace saw no presence change at all.
    send(&mut grace, json!({"type": "ping", "id": 5})).await;
    assert_eq!(recv(&mut grace).await, json!({"type": "pong", "id": 5}));
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_carries_on() {
    let server = start(Config::default()).await;
    let mut ws = connect(server.addr).await;
    ws.send(Message::Text("{oops".into())).await.unwrap();
    assert_eq!(recv(&mut ws).await["code"], "bad_json");
    send(&mut ws, json!({"type": "teleport"})).await;
    assert_eq!(recv(&mut ws).await["code"], "unknown_type");
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(recv(&mut ws).await["code"], "binary_unsupported");
    send(
        &mut ws,
        json!({"type": "join", "room": "x", "name": "n".repeat(10_240)}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["code"], "bad_display_name");
    send(
        &mut ws,
        json!({"type": "join", "room": "x", "name": "bell\u{7}"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["code"], "bad_display_name");
    send(
        &mut ws,
        json!({"type": "signal", "to": "0123456789abcdef", "candidate": null}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["code"], "not_joined");
    send(
        &mut ws,
        json!({"type": "join", "room": "x", "name": "fine"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "welcome");
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009_and_others_are_unaffected() {
    let server = start(Config::default()).await;
    let (mut bystander, _) = join(server.addr, "calm", "B").await;
    let mut ws = connect(server.addr).await;
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(100_000));
    let _ = ws.send(Message::Text(big.into())).await;
    assert_eq!(close_code(&mut ws).await, 1009);
    send(&mut bystander, json!({"type": "ping", "id": 1})).await;
    assert_eq!(recv(&mut bystander).await["type"], "pong");
}

#[tokio::test]
async fn a_flood_of_1000_messages_is_limited_then_closed_with_1008() {
    let server = start(Config::default()).await;
    let (mut bystander, _) = join(server.addr, "standup", "calm").await;
    let (mut flooder, _) = join(server.addr, "standup", "flood").await;
    let _ = recv(&mut bystander).await; // peer_joined
    for i in 0..1000 {
        if flooder
            .send(Message::Text(
                json!({"type": "ping", "id": i}).to_string().into(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    let mut pongs = 0;
    let mut rate_limited = 0;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), flooder.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                match value["type"].as_str() {
                    Some("pong") => pongs += 1,
                    Some("error") if value["code"] == "rate_limited" => rate_limited += 1,
                    _ => panic!("unexpected {value}"),
                }
            }
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, 1008);
    // The burst is 100 and the join took one token; refill during the flood adds a few more.
    assert!((99..=200).contains(&pongs), "{pongs} pongs");
    assert!(rate_limited >= 1);
    assert_eq!(recv(&mut bystander).await["type"], "peer_left");
    send(&mut bystander, json!({"type": "ping", "id": 2})).await;
    assert_eq!(recv(&mut bystander).await, json!({"type": "pong", "id": 2}));
}

#[tokio::test]
async fn room_full_and_connection_limit() {
    let mut config = Config::default();
    config.signaling.max_peers_per_room = 2;
    config.signaling.max_connections = 3;
    let server = start(config).await;
    let (_a, _) = join(server.addr, "small", "A").await;
    let (_b, _) = join(server.addr, "small", "B").await;
    let mut c = connect(server.addr).await;
    send(
        &mut c,
        json!({"type": "join", "room": "small", "name": "C"}),
    )
    .await;
    assert_eq!(recv(&mut c).await["code"], "room_full");
    let mut d = connect(server.addr).await;
    assert_eq!(recv(&mut d).await["code"], "server_busy");
    assert_eq!(close_code(&mut d).await, 1013);
}

#[tokio::test]
async fn shutdown_closes_connections_with_1001() {
    let mut server = start(Config::default()).await;
    let (mut ws, _) = join(server.addr, "standup", "A").await;
    server.stop.take().unwrap().send(()).unwrap();
    assert_eq!(close_code(&mut ws).await, u16::from(CloseCode::Away));
    drop(ws);
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn http_serves_health_and_the_app() {
    let server = start(Config::default()).await;
    let get = |path: &str| http_get(server.addr, path.to_owned());
    let (status, _, body) = get("/healthz").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("ok"));
    let (status, headers, index) = get("/r/standup").await;
    assert_eq!(status, 200);
    assert!(headers.contains("content-type: text/html"), "{headers}");
    assert!(index.contains("<script"), "the app page loads its scripts");
    let (status, _, _) = get("/no/such/file.js").await;
    assert_eq!(status, 404);
}

/// A minimal HTTP/1.1 GET over a raw socket: status, lower-cased headers, body.
async fn http_get(addr: SocketAddr, path: String) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_lowercase(), body.to_owned())
}

#[tokio::test]
async fn close_1000_leaves_at_once_but_other_codes_keep_the_peer_for_resume() {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let server = start(Config::default()).await;
    let (mut watcher, _) = join(server.addr, "standup", "W").await;
    let (mut bye, welcome_bye) = join(server.addr, "standup", "Bye").await;
    let (mut drop4100, welcome_drop) = join(server.addr, "standup", "Drop").await;
    assert_eq!(recv(&mut watcher).await["type"], "peer_joined");
    assert_eq!(recv(&mut watcher).await["type"], "peer_joined");

    let frame = |code: u16| {
        Some(CloseFrame {
            code: code.into(),
            reason: "".into(),
        })
    };
    drop4100.close(frame(4100)).await.unwrap();
    bye.close(frame(1000)).await.unwrap();
    let left = recv(&mut watcher).await;
    assert_eq!(
        left,
        json!({"type": "peer_left", "peer": welcome_bye["peer"], "reason": "left"})
    );

    let mut again = connect(server.addr).await;
    send(
        &mut again,
        json!({"type": "join", "room": "standup", "name": "Drop",
        "resume": {"peer": welcome_drop["peer"], "token": welcome_drop["resume_token"]}}),
    )
    .await;
    assert_eq!(recv(&mut again).await["resumed"], true);
}

#[tokio::test]
async fn welcome_hands_out_turn_urls_with_rest_credentials_that_the_turn_server_accepts() {
    let server = start(Config::default()).await;
    let (_ws, welcome) = join(server.addr, "standup", "Ada").await;
    let turn = &welcome["ice_servers"][0];
    let urls: Vec<&str> = turn["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert!(
        urls.iter().any(|u| u.starts_with("stun:127.0.0.1:")),
        "{urls:?}"
    );
    assert!(
        urls.iter()
            .any(|u| u.starts_with("turn:") && u.ends_with("?transport=udp"))
    );
    assert!(
        urls.iter()
            .any(|u| u.starts_with("turn:") && u.ends_with("?transport=tcp"))
    );
    let username = turn["username"].as_str().unwrap();
    let (expiry, peer) = username.split_once(':').unwrap();
    assert_eq!(
        peer,
        welcome["peer"].as_str().unwrap(),
        "credentials name the peer"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(expiry > now && expiry <= now + 12 * 3600 + 5, "short-lived");

    // The credentials work: a real Allocate over UDP against the TURN port succeeds.
    let port: u16 = urls[0].rsplit(':').next().unwrap().parse().unwrap();
    let password = turn["credential"].as_str().unwrap();
    let relay = allocate_over_udp(port, username, password).await;
    assert_eq!(relay.ip().to_string(), "127.0.0.1");
}

/// A minimal long-term-credential Allocate: unauthenticated request, then signed retry.
async fn allocate_over_udp(port: u16, username: &str, password: &str) -> SocketAddr {
    use stun::{AttributeType, Class, Message, MessageType, MessageWriter, Method, TransactionId};
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(("127.0.0.1", port)).await.unwrap();
    let mut nonce: Option<String> = None;
    let mut realm = String::new();
    for attempt in 0u8..2 {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::new(Method::ALLOCATE, Class::Request),
            TransactionId([attempt; 12]),
        );
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17);
        if let Some(nonce) = &nonce {
            w.attribute(AttributeType::USERNAME, username.as_bytes())
                .attribute(AttributeType::REALM, realm.as_bytes())
                .attribute(AttributeType::NONCE, nonce.as_bytes())
                .message_integrity(&stun::long_term_key_md5(username, &realm, password));
        }
        w.finish();
        socket.send(&buf).await.unwrap();
        let mut response = vec![0u8; 1500];
        let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut response))
            .await
            .unwrap()
            .unwrap();
        let m = Message::parse(&response[..len]).unwrap();
        if m.class() == Class::SuccessResponse {
            return m.xor_address(AttributeType::XOR_RELAYED_ADDRESS).unwrap();
        }
        assert_eq!(m.error_code().unwrap().code, 401);
        realm = m.text(AttributeType::REALM).unwrap().to_owned();
        nonce = Some(m.text(AttributeType::NONCE).unwrap().to_owned());
    }
    panic!("Allocate did not succeed with the handed-out credentials");
}
