//! Helpers for the real-socket tests: a server on 127.0.0.1:0, WebSocket clients, plain HTTP,
//! and a TURN allocation over UDP.
#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use server::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Running {
    pub addr: SocketAddr,
    pub turn: Option<SocketAddr>,
    pub sfu: Option<SocketAddr>,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts `config` with every listener on a free loopback port.
pub async fn start(config: Config) -> Running {
    let mut config = Config {
        http: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    config.turn.listen = "127.0.0.1:0".parse().unwrap();
    config.sfu.listen = "127.0.0.1:0".parse().unwrap();
    let server = Server::bind(config).await.unwrap();
    let addr = server.http_addr().unwrap();
    let turn = server.turn_addr();
    let sfu = server.sfu_addr();
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
        turn,
        sfu,
        stop: Some(stop),
        task,
    }
}

pub async fn connect(addr: SocketAddr) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws
}

pub async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// The next text frame as JSON, skipping pings.
pub async fn recv(ws: &mut Ws) -> Value {
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
pub async fn close_code(ws: &mut Ws) -> u16 {
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

pub async fn join(addr: SocketAddr, room: &str, name: &str) -> (Ws, Value) {
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

/// One HTTP/1.1 request; returns the status, the headers (lowercase names) and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("a response within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    // The body of a chunked response is only read by tests that do not care about chunking.
    (status, headers, body.to_owned())
}

/// Allocates on the TURN server at `server` with `user`/`password`; returns the relayed address.
pub fn turn_allocate(server: SocketAddr, user: &str, password: &str) -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut client = turn::Client::new(server, turn::ClientCredentials::new(user, password));
    client.allocate(Instant::now()).unwrap();
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        while let Some(transmit) = client.poll_transmit() {
            socket
                .send_to(&transmit.contents, transmit.destination)
                .unwrap();
        }
        while let Some(event) = client.poll_event() {
            match event {
                turn::ClientEvent::Allocated { relayed, .. } => return relayed,
                other => {
                    if format!("{other:?}").contains("Failed") {
                        panic!("allocation failed: {other:?}");
                    }
                }
            }
        }
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        if let Ok((len, from)) = socket.recv_from(&mut buf) {
            let _ = client.handle_input(from, &buf[..len], Instant::now());
        }
        client.handle_timeout(Instant::now());
    }
    panic!("no allocation within 5 s");
}

/// Parses an exposition-format scrape strictly; returns sample name+labels -> value.
pub fn parse_exposition(text: &str) -> std::collections::HashMap<String, f64> {
    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut samples = std::collections::HashMap::new();
    let mut typed = std::collections::HashSet::new();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let keyword = parts.next().unwrap();
            let name = parts.next().expect("a metric name");
            assert!(valid_name(name), "bad metric name in {line:?}");
            match keyword {
                "HELP" => assert!(parts.next().is_some_and(|h| !h.is_empty()), "{line:?}"),
                "TYPE" => {
                    let kind = parts.next().unwrap();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "{line:?}"
                    );
                    assert!(typed.insert(name.to_owned()), "TYPE twice for {name}");
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        assert!(!line.is_empty(), "no empty lines");
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "bad sample name in {line:?}");
        assert!(typed.contains(name), "{name} sampled before its TYPE line");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .expect("labels in braces");
            for pair in inner.split(',') {
                let (key, quoted) = pair.split_once('=').expect("label=value");
                assert!(valid_name(key), "{line:?}");
                assert!(
                    quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
                    "{line:?}"
                );
            }
        }
        let value: f64 = value.parse().expect("a numeric value");
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "{series} twice"
        );
    }
    samples
}
