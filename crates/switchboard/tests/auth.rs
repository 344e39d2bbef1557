//! Access tokens and the admin API against a spawned `switchboard serve`, over real sockets:
//! every refusal (no token, malformed, bad signature, expired, another room, a missing grant,
//! open rooms on a public address) and the positive paths (a token from `switchboard token`
//! joins; kick and close through the admin API).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const KEY: &str = "APItest";
const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

fn switchboard() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        // The database in memory: tests never write into the user's home.
        .env("SWITCHBOARD_DATA_DIR", "none")
        .env_remove("SWITCHBOARD_API_KEY")
        .env_remove("SWITCHBOARD_API_SECRET")
        .env_remove("SWITCHBOARD_CONFIG")
        .env_remove("SWITCHBOARD_HTTP")
        .env_remove("SWITCHBOARD_TOKEN");
    command
}

struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` on loopback with a free port, no TURN, and `extra` arguments.
fn serve(extra: &[&str]) -> Serve {
    serve_on("127.0.0.1:0", extra)
}

fn serve_on(http: &str, extra: &[&str]) -> Serve {
    let mut child = switchboard()
        .args([
            "serve",
            "--http",
            http,
            "--no-turn",
            "--media",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    // Keep reading: the server prints more lines, and a closed pipe would fail its writes.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let addr = line
        .trim()
        .strip_prefix("switchboard: listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    Serve { child, addr }
}

fn serve_with_key() -> Serve {
    serve(&["--api-key", KEY, "--api-secret", SECRET])
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(room: &str, publish: bool, subscribe: bool, admin: bool) -> String {
    token_with(SECRET, room, now() + 600, publish, subscribe, admin)
}

fn token_with(
    secret: &str,
    room: &str,
    exp: u64,
    publish: bool,
    subscribe: bool,
    admin: bool,
) -> String {
    auth::mint(
        secret.as_bytes(),
        &auth::Claims {
            iss: KEY.into(),
            sub: "tester".into(),
            nbf: None,
            exp,
            room: room.into(),
            grants: auth::Grants {
                publish,
                subscribe,
                admin,
            },
        },
    )
}

async fn connect(addr: SocketAddr) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap()
        .0
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

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

/// Sends a join with `token` and returns the first answer.
async fn join(addr: SocketAddr, room: &str, token: Option<&str>) -> (Ws, Value) {
    let mut ws = connect(addr).await;
    let mut message = json!({"type": "join", "v": 1, "room": room, "name": "N"});
    if let Some(token) = token {
        message["token"] = json!(token);
    }
    send(&mut ws, message).await;
    let answer = recv(&mut ws).await;
    (ws, answer)
}

/// Expects the join to be refused with `code` and the connection closed with `close`.
async fn refused(
    addr: SocketAddr,
    room: &str,
    token: Option<&str>,
    code: &str,
    close: u16,
) -> String {
    let (mut ws, answer) = join(addr, room, token).await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], code, "{answer}");
    assert_eq!(close_code(&mut ws).await, close);
    answer["message"].as_str().unwrap().to_owned()
}

/// One HTTP/1.1 request; returns status, headers (lowercase names) and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn signaling_refuses_every_bad_token_and_accepts_a_minted_one() {
    let server = serve_with_key();
    let addr = server.addr;
    let message = refused(addr, "standup", None, "unauthorized", 4401).await;
    assert!(message.contains("requires an access token"), "{message}");
    refused(addr, "standup", Some("not.a.jwt"), "unauthorized", 4401).await;
    let forged = token_with(
        "another-secret-0123456789abcdef-0123",
        "standup",
        now() + 600,
        true,
        true,
        false,
    );
    let message = refused(addr, "standup", Some(&forged), "unauthorized", 4401).await;
    assert!(message.contains("signature"), "{message}");
    let expired = token_with(SECRET, "standup", now() - 3600, true, true, false);
    let message = refused(addr, "standup", Some(&expired), "unauthorized", 4401).await;
    assert!(message.contains("expired"), "{message}");
    let elsewhere = token("elsewhere", true, true, false);
    let message = refused(addr, "standup", Some(&elsewhere), "forbidden", 4403).await;
    assert!(message.contains("elsewhere"), "{message}");
    let publish_only = token("standup", true, false, false);
    let message = refused(addr, "standup", Some(&publish_only), "forbidden", 4403).await;
    assert!(message.contains("subscribe"), "{message}");

    // A token from `switchboard token` joins.
    let output = switchboard()
        .args([
            "token",
            "--room",
            "standup",
            "--identity",
            "ann",
            "--subscribe",
        ])
        .args(["--publish", "--ttl", "5m"])
        .env("SWITCHBOARD_API_KEY", KEY)
        .env("SWITCHBOARD_API_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let minted = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let (_ann, welcome) = join(addr, "standup", Some(&minted)).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    // So does a token for any room.
    let any = token("*", false, true, false);
    let (mut ben, welcome) = join(addr, "standup", Some(&any)).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    // Ben may not publish: an SFU offer that sends media is refused, the connection stays.
    let sends = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
                 m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=sendrecv\r\n";
    send(
        &mut ben,
        json!({"type": "sfu", "description": {"type": "offer", "sdp": sends}}),
    )
    .await;
    let answer = recv(&mut ben).await;
    assert_eq!(answer["code"], "forbidden", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("publish"));
    send(&mut ben, json!({"type": "ping", "id": 1})).await;
    assert_eq!(recv(&mut ben).await["type"], "pong");
}

#[tokio::test]
async fn whip_and_whep_need_bearer_tokens_with_the_right_grant() {
    let server = serve_with_key();
    let addr = server.addr;
    let sdp = [("Content-Type", "application/sdp")];
    let (status, head, _) = http(addr, "POST", "/whip/stage", &sdp, "v=0\r\n").await;
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let subscriber = bearer(&token("stage", false, true, false));
    let publisher = bearer(&token("stage", true, false, false));
    fn with(auth: &str) -> [(&'static str, &str); 2] {
        [("Content-Type", "application/sdp"), ("Authorization", auth)]
    }
    let (status, _, body) = http(addr, "POST", "/whip/stage", &with(&subscriber), "v=0\r\n").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("publish"), "{body}");
    let (status, _, body) = http(addr, "POST", "/whep/stage", &with(&publisher), "v=0\r\n").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("subscribe"), "{body}");
    let (status, _, _) = http(addr, "POST", "/whip/other", &with(&publisher), "v=0\r\n").await;
    assert_eq!(status, 403);
    let (status, head, _) = http(addr, "POST", "/whip/stage", &with("Bearer x.y.z"), "").await;
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let (status, _, _) = http(addr, "POST", "/whip/stage", &with("Basic YTpi"), "").await;
    assert_eq!(status, 401);
    // With the grant the request gets past auth: this body is no SDP offer.
    let (status, _, body) = http(addr, "POST", "/whip/stage", &with(&publisher), "v=0\r\n").await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = http(addr, "POST", "/whep/stage", &with(&subscriber), "v=0\r\n").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn admin_api_lists_kicks_and_closes_with_an_admin_token() {
    let server = serve_with_key();
    let addr = server.addr;
    let member = token("standup", true, true, false);
    let (mut ann, welcome) = join(addr, "standup", Some(&member)).await;
    let ann_id = welcome["peer"].as_str().unwrap().to_owned();
    let (mut ben, _) = join(addr, "standup", Some(&member)).await;
    let (mut cy, _) = join(addr, "standup", Some(&member)).await;
    assert_eq!(recv(&mut ann).await["type"], "peer_joined");
    assert_eq!(recv(&mut ann).await["type"], "peer_joined");
    assert_eq!(recv(&mut ben).await["type"], "peer_joined");

    // Refusals: no token, no admin grant, an admin token for another room.
    let (status, head, body) = http(addr, "GET", "/api/v1/rooms", &[], "").await;
    assert_eq!(status, 401, "{body}");
    assert!(head.contains("www-authenticate: bearer"));
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "unauthorized");
    let not_admin = bearer(&token("*", true, true, false));
    let (status, _, body) = http(
        addr,
        "GET",
        "/api/v1/rooms",
        &[("Authorization", &not_admin)],
        "",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin"), "{body}");
    let other_room_admin = bearer(&token("other", false, false, true));
    let path = format!("/api/v1/rooms/standup/participants/{ann_id}");
    let (status, _, _) = http(
        addr,
        "DELETE",
        &path,
        &[("Authorization", &other_room_admin)],
        "",
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = http(
        addr,
        "GET",
        "/api/v1/rooms",
        &[("Authorization", &other_room_admin)],
        "",
    )
    .await;
    assert_eq!(status, 403, "listing every room needs a token for room *");

    let admin = bearer(&token("*", false, false, true));
    let auth = [("Authorization", admin.as_str())];
    let (status, _, body) = http(addr, "GET", "/api/v1/rooms", &auth, "").await;
    assert_eq!(status, 200, "{body}");
    let rooms: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rooms["rooms"][0]["name"], "standup");
    assert_eq!(rooms["rooms"][0]["participants"], 3);
    assert_eq!(rooms["rooms"][0]["mode"], "p2p");
    let (status, _, body) =
        http(addr, "GET", "/api/v1/rooms/standup/participants", &auth, "").await;
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["participants"].as_array().unwrap().len(), 3);
    assert_eq!(list["participants"][0]["id"], ann_id.as_str());
    assert_eq!(list["participants"][0]["identity"], "tester");

    // Kick Ann: she is told and closed; Ben sees her leave.
    let (status, _, body) = http(addr, "DELETE", &path, &auth, "").await;
    assert_eq!(status, 200, "{body}");
    let told = recv(&mut ann).await;
    assert_eq!(told["code"], "kicked", "{told}");
    assert_eq!(close_code(&mut ann).await, 4003);
    let left = recv(&mut ben).await;
    assert_eq!(left["type"], "peer_left");
    assert_eq!(left["peer"], ann_id.as_str());
    assert_eq!(left["reason"], "kicked");
    let (status, _, body) = http(addr, "DELETE", &path, &auth, "").await;
    assert_eq!(status, 404, "{body}");

    // Close the room: Ben and Cy are told and closed; the room is gone.
    let (status, _, body) = http(addr, "POST", "/api/v1/rooms/standup/close", &auth, "").await;
    assert_eq!(status, 200, "{body}");
    for ws in [&mut ben, &mut cy] {
        loop {
            let frame = recv(ws).await;
            if frame["type"] == "error" {
                assert_eq!(frame["code"], "room_closed", "{frame}");
                break;
            }
        }
        assert_eq!(close_code(ws).await, 4004);
    }
    let (_, _, body) = http(addr, "GET", "/api/v1/rooms", &auth, "").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["rooms"],
        json!([])
    );
    let (status, _, _) = http(addr, "POST", "/api/v1/rooms/standup/close", &auth, "").await;
    assert_eq!(status, 404);
    let (status, _, body) = http(addr, "GET", "/api/v1/nothing", &auth, "").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn without_a_key_rooms_are_open_and_the_admin_api_is_loopback_only() {
    let server = serve(&[]);
    let addr = server.addr;
    let (_ann, welcome) = join(addr, "open", None).await;
    assert_eq!(welcome["type"], "welcome");
    let (status, _, body) = http(addr, "GET", "/api/v1/rooms", &[], "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"open\""), "{body}");
    let (status, _, body) = http(
        addr,
        "GET",
        "/api/v1/rooms",
        &[("X-Forwarded-For", "198.51.100.7")],
        "",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("api_key"), "{body}");
}

#[tokio::test]
async fn open_rooms_on_a_public_address_are_refused_unless_dangerous() {
    let output = switchboard()
        .args([
            "serve",
            "--http",
            "0.0.0.0:0",
            "--no-turn",
            "--media",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to serve open rooms on 0.0.0.0:0"),
        "{stderr}"
    );
    assert!(stderr.contains("--dangerous-open-rooms"), "{stderr}");
    assert!(stderr.contains("api_key"), "{stderr}");

    let server = serve_on("0.0.0.0:0", &["--dangerous-open-rooms"]);
    let loopback = SocketAddr::from(([127, 0, 0, 1], server.addr.port()));
    let (_ws, welcome) = join(loopback, "lan", None).await;
    assert_eq!(welcome["type"], "welcome");

    let keyed = serve_on("0.0.0.0:0", &["--api-key", KEY, "--api-secret", SECRET]);
    let loopback = SocketAddr::from(([127, 0, 0, 1], keyed.addr.port()));
    refused(loopback, "lan", None, "unauthorized", 4401).await;
}

#[test]
fn bad_auth_settings_name_the_field() {
    let output = switchboard()
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--no-turn",
            "--api-key",
            KEY,
        ])
        .args(["--api-secret", "too-short"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("auth.api_secret"), "{stderr}");
    assert!(stderr.contains("32 bytes"), "{stderr}");

    let output = switchboard()
        .args(["token", "--room", "r", "--identity", "me", "--subscribe"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no API key"));
    let output = switchboard()
        .args(["token", "--room", "r", "--identity", "me", "--api-key", KEY])
        .args(["--api-secret", SECRET])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least one grant"));
}

#[tokio::test]
async fn metrics_need_an_admin_token_when_a_key_is_configured() {
    let server = serve_with_key();
    let addr = server.addr;
    let (status, head, _) = http(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let member = bearer(&token("*", true, true, false));
    let (status, _, _) = http(addr, "GET", "/metrics", &[("Authorization", &member)], "").await;
    assert_eq!(status, 403);
    let admin = bearer(&token("*", false, false, true));
    let (status, _, body) = http(addr, "GET", "/metrics", &[("Authorization", &admin)], "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("# TYPE"), "{body}");
    let (status, _, _) = http(addr, "GET", "/healthz", &[], "").await;
    assert_eq!(status, 200, "health checks stay open");
}

#[test]
fn send_and_recv_carry_a_token_and_without_one_are_told_why() {
    let server = serve_with_key();
    let url = format!("http://{}", server.addr);
    let dir = std::env::temp_dir().join(format!("switchboard-auth-share-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let source = dir.join("note.txt");
    std::fs::write(&source, b"for authorised eyes only\n").unwrap();

    let refused = switchboard()
        .args(["recv", "--server", &url, "--yes", "--out"])
        .arg(dir.join("out"))
        .arg("5-tiger-orbit")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("unauthorized"), "{stderr}");
    assert!(stderr.contains("access token"), "{stderr}");

    // The room comes from the code, so the token is for any room.
    let token = token("*", true, true, false);
    let mut sender = switchboard()
        .args(["send", "--server", &url, "--code", "5-tiger-orbit"])
        .arg(&source)
        .env("SWITCHBOARD_TOKEN", &token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The sender goes first and shows the code, as a person would.
    std::thread::sleep(Duration::from_millis(500));
    let received = switchboard()
        .args([
            "recv", "--server", &url, "--yes", "--token", &token, "--out",
        ])
        .arg(dir.join("out"))
        .arg("5-tiger-orbit")
        .output()
        .unwrap();
    assert!(received.status.success(), "{received:?}");
    assert!(sender.wait().unwrap().success());
    assert_eq!(
        std::fs::read(dir.join("out/note.txt")).unwrap(),
        b"for authorised eyes only\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../media-file/tests/data")
        .join(name)
}

#[test]
fn stream_publishes_through_whip_with_a_publish_token_only() {
    let server = serve_with_key();
    let url = format!("http://{}", server.addr);
    let stream = |token: Option<&str>| {
        let mut command = switchboard();
        command.args(["stream", "--quiet", "--room", "stage", "--server", &url]);
        if let Some(token) = token {
            command.env("SWITCHBOARD_TOKEN", token);
        }
        command.arg(fixture("vp8.ivf")).output().unwrap()
    };
    let output = stream(None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(stderr.contains("access token"), "{stderr}");
    let output = stream(Some(&token("stage", false, true, false)));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("403") && stderr.contains("publish"),
        "{stderr}"
    );
    let output = stream(Some(&token("stage", true, false, false)));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
}

#[tokio::test]
async fn admin_api_sees_a_whip_stream_and_closing_the_room_ends_it() {
    let server = serve_with_key();
    let addr = server.addr;
    let mut stream = switchboard()
        .args(["stream", "--quiet", "--loop", "--room", "stage", "--server"])
        .arg(format!("http://{addr}"))
        .arg(fixture("vp8.ivf"))
        .env("SWITCHBOARD_TOKEN", token("stage", true, false, false))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let admin = bearer(&token("*", false, false, true));
    let auth = [("Authorization", admin.as_str())];
    let rooms = || async {
        let (status, _, body) = http(addr, "GET", "/api/v1/rooms", &auth, "").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["rooms"].clone()
    };
    let mut listed = json!([]);
    for _ in 0..100 {
        listed = rooms().await;
        if listed.as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed[0]["name"], "stage", "{listed}");
    assert_eq!(listed[0]["mode"], "sfu");
    assert_eq!(listed[0]["participants"], 1);
    let (_, _, body) = http(addr, "GET", "/api/v1/rooms/stage/participants", &auth, "").await;
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["participants"][0]["kind"], "whip", "{list}");

    let (status, _, body) = http(addr, "POST", "/api/v1/rooms/stage/close", &auth, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["participants"],
        1
    );
    let mut gone = false;
    for _ in 0..100 {
        if rooms().await == json!([]) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stream.kill();
    let _ = stream.wait();
    assert!(gone, "the stream's room is gone after close");
}

#[tokio::test]
async fn without_a_key_an_authorization_header_is_ignored() {
    let server = serve(&[]);
    let headers = [
        ("Content-Type", "application/sdp"),
        ("Authorization", "Basic YTpi"),
    ];
    // Past auth: the body is no SDP offer.
    let (status, _, body) = http(server.addr, "POST", "/whip/open", &headers, "v=0\r\n").await;
    assert_eq!(status, 400, "{body}");
}
