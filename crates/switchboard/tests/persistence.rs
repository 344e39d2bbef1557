//! Persistence through real `switchboard serve` processes: rooms created through the admin API
//! and their chat survive a restart, and a `kill -9` in the middle of a stream of chat messages
//! loses none that the server had acknowledged (echoed).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const TIMEOUT: Duration = Duration::from_secs(60);

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-persistence-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `switchboard serve --data-dir DIR` on free ports; killed (SIGKILL) on drop.
struct Server {
    child: Child,
    output: Arc<Mutex<String>>,
    addr: String,
}

impl Server {
    fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--http", "127.0.0.1:0", "--no-turn", "--no-sfu"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("SWITCHBOARD_LOG", "warn")
            .env_remove("SWITCHBOARD_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        let deadline = Instant::now() + TIMEOUT;
        let addr = loop {
            let text = output.lock().unwrap().clone();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.split("listening on http://").nth(1))
            {
                break addr.trim().to_owned();
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("serve exited ({status}):\n{text}");
            }
            assert!(Instant::now() < deadline, "serve did not start:\n{text}");
            thread::sleep(Duration::from_millis(20));
        };
        Server {
            child,
            output,
            addr,
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// One HTTP/1.1 request; returns the status and the body as JSON (`Null` when empty).
    fn http(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let body = body.trim();
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|_| json!({ "raw": body }))
        };
        (status, value)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects and joins `room`; returns the socket and every frame up to and including
/// `chat_history` (or just `welcome` in a room that keeps no chat).
async fn join(addr: &str, room: &str, name: &str) -> (Ws, Vec<Value>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let join = json!({"type": "join", "room": room, "name": name});
    ws.send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    let mut frames = Vec::new();
    loop {
        let frame = next(&mut ws).await.expect("a frame after join");
        let kind = frame["type"].as_str().unwrap_or_default().to_owned();
        frames.push(frame);
        let keeps_chat = frames[0]["room_settings"]["chat_history"]
            .as_u64()
            .is_some_and(|n| n > 0);
        if kind == "chat_history" || kind == "error" || (kind == "welcome" && !keeps_chat) {
            return (ws, frames);
        }
    }
}

/// The next JSON frame; `None` when the connection ended.
async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        let frame = tokio::time::timeout(TIMEOUT, ws.next()).await.ok()??.ok()?;
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).ok(),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

async fn chat(ws: &mut Ws, text: &str) {
    let message = json!({"type": "chat", "text": text});
    ws.send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_room_and_its_chat_survive_a_restart() {
    let dir = TempDir::new("restart");
    let server = Server::start(&dir.0, &[]);
    let (status, created) = server.http(
        "POST",
        "/api/v1/rooms",
        Some(json!({"name": "standup", "max_participants": 2, "chat_history": 3})),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["max_participants"], 2);
    let (status, again) = server.http("POST", "/api/v1/rooms", Some(json!({"name": "standup"})));
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("room_exists"))
    );
    let (status, bad) = server.http(
        "POST",
        "/api/v1/rooms",
        Some(json!({"name": "x", "chat_history": 1_000_000})),
    );
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("chat_history"),
        "{bad}"
    );

    runtime().block_on(async {
        let (mut ada, frames) = join(&server.addr, "standup", "Ada").await;
        assert_eq!(
            frames[0]["room_settings"],
            json!({"max_participants": 2, "chat_history": 3}),
            "{frames:?}"
        );
        assert_eq!(frames[1], json!({"type": "chat_history", "messages": []}));
        let mut ids = Vec::new();
        for i in 0..5 {
            chat(&mut ada, &format!("line {i}")).await;
            let echo = next(&mut ada).await.unwrap();
            assert_eq!(echo["type"], "chat", "{echo}");
            assert_eq!(echo["name"], "Ada");
            assert_eq!(echo["from"], frames[0]["peer"]);
            assert_eq!(echo["text"], format!("line {i}"));
            assert!(echo["at"].as_i64().unwrap() > 1_700_000_000_000);
            ids.push(echo["id"].as_i64().unwrap());
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    });
    let (_, metrics) = server.http("GET", "/metrics", None);
    assert!(
        metrics["raw"]
            .as_str()
            .unwrap()
            .contains("switchboard_chat_messages_stored_total 5"),
        "{metrics}"
    );
    let (_, listed) = server.http("GET", "/api/v1/rooms", None);
    assert_eq!(listed["rooms"][0]["name"], "standup", "{listed}");
    assert_eq!(listed["rooms"][0]["persistent"], true, "{listed}");
    let (_, settings_before) = server.http("GET", "/api/v1/rooms/standup", None);
    server.kill();

    let server = Server::start(&dir.0, &[]);
    let (status, settings) = server.http("GET", "/api/v1/rooms/standup", None);
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings, settings_before);
    assert_eq!(settings["chat_history"], 3);
    runtime().block_on(async {
        let (_bob, frames) = join(&server.addr, "standup", "Bob").await;
        let texts: Vec<&str> = frames[1]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["line 2", "line 3", "line 4"], "trimmed to 3");
        // The stored room size holds after the restart: two fit, the third is refused.
        let (_cy, _) = join(&server.addr, "standup", "Cy").await;
        let (_di, frames) = join(&server.addr, "standup", "Di").await;
        assert_eq!(frames[0]["code"], "room_full", "{frames:?}");
    });
    // Changed and deleted through the API, also across a restart.
    let (status, patched) = server.http(
        "PATCH",
        "/api/v1/rooms/standup",
        Some(json!({"max_participants": null, "chat_history": 0})),
    );
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["max_participants"], Value::Null);
    let (status, _) = server.http("DELETE", "/api/v1/rooms/standup", None);
    assert_eq!(status, 204);
    server.kill();
    let server = Server::start(&dir.0, &[]);
    let (status, gone) = server.http("GET", "/api/v1/rooms/standup", None);
    assert_eq!(
        (status, gone["error"]["code"].as_str()),
        (404, Some("no_such_room"))
    );
    assert!(
        server.output().contains("switchboard.db"),
        "{}",
        server.output()
    );
}

/// A client streams chat as fast as the server takes it and records every echo (the server's
/// acknowledgement, sent only after the commit); the server is SIGKILLed mid-stream. Every
/// acknowledged message must be in the database exactly once, and the file must pass
/// `PRAGMA integrity_check`. Three kills on the same directory.
#[test]
fn kill_9_during_chat_loses_no_acknowledged_message() {
    let dir = TempDir::new("kill9");
    // Rates raised so that the client is limited only by the server's commits.
    let config = dir.0.join("switchboard.toml");
    std::fs::write(
        &config,
        "[signaling]\nmessages_per_second = 100000\nmessage_burst = 100000\n\
         chat_per_second = 100000\nchat_burst = 100000\nchat_history_on_join = 10000\n",
    )
    .unwrap();
    let data = dir.0.join("data");
    let config_arg = config.to_str().unwrap();
    let mut acknowledged: HashMap<String, i64> = HashMap::new();
    for round in 0..3 {
        let server = Server::start(&data, &["--config", config_arg]);
        if round == 0 {
            let (status, body) = server.http(
                "POST",
                "/api/v1/rooms",
                Some(json!({"name": "busy", "chat_history": 10000})),
            );
            assert_eq!(status, 201, "{body}");
        }
        let kill_after = 150 + 100 * round;
        let (acked, sent) = runtime().block_on(async {
            let (ws, frames) = join(&server.addr, "busy", &format!("round{round}")).await;
            let history = frames.last().unwrap()["messages"].as_array().unwrap().len();
            assert!(history >= acknowledged.len(), "{history} in the history");
            // A window of unacknowledged messages keeps commits in flight at all times without
            // outrunning the server's per-connection queue (a client that never reads is
            // closed as a slow consumer).
            const WINDOW: usize = 64;
            let mut ws = ws;
            let mut acked: Vec<(i64, String)> = Vec::new();
            let mut sent = 0usize;
            let mut server = Some(server);
            'stream: loop {
                while sent - acked.len() < WINDOW {
                    let text = json!({"type": "chat", "text": format!("r{round}-m{sent}")});
                    if ws
                        .send(Message::Text(text.to_string().into()))
                        .await
                        .is_err()
                    {
                        break 'stream;
                    }
                    sent += 1;
                }
                let frame = tokio::time::timeout(TIMEOUT, ws.next()).await;
                let Ok(Some(Ok(Message::Text(text)))) = frame else {
                    match frame {
                        Ok(Some(Ok(Message::Close(close)))) if server.is_some() => {
                            panic!("closed before the kill: {close:?}")
                        }
                        Ok(Some(Ok(_))) => continue,
                        other if server.is_some() => panic!(
                            "ended before the kill: {other:?}\n{}",
                            server.as_ref().map(Server::output).unwrap_or_default()
                        ),
                        _ => break,
                    }
                };
                let value: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(value["type"], "chat", "{value}");
                acked.push((
                    value["id"].as_i64().unwrap(),
                    value["text"].as_str().unwrap().to_owned(),
                ));
                if acked.len() == kill_after
                    && let Some(server) = server.take()
                {
                    // Mid-stream: WINDOW messages are sent and not yet acknowledged.
                    server.kill();
                }
            }
            assert!(server.is_none(), "the stream ended before the kill");
            (acked, sent)
        });
        assert!(
            acked.len() >= kill_after,
            "round {round}: {} acks",
            acked.len()
        );
        assert!(
            sent > acked.len(),
            "round {round}: the kill came after the last send"
        );
        for (id, text) in acked {
            assert!(acknowledged.insert(text, id).is_none(), "echoed twice");
        }

        // The file as the kill left it (with its write-ahead log): it opens, passes the
        // integrity check, and holds every acknowledged message once, under its echoed id.
        let db = store::file_in(&data);
        let store = store::Store::open(&db, store::Options::default()).unwrap();
        store.integrity_check().unwrap();
        let stored = store.recent_chat("busy", store::MAX_CHAT_HISTORY).unwrap();
        drop(store);
        let mut by_text: HashMap<&str, Vec<i64>> = HashMap::new();
        for message in &stored {
            by_text.entry(&message.text).or_default().push(message.id);
        }
        for (text, id) in &acknowledged {
            assert_eq!(
                by_text.get(text.as_str()),
                Some(&vec![*id]),
                "round {round}: acknowledged {text:?} (id {id}) must be stored exactly once"
            );
        }
        eprintln!(
            "round {round}: {} acknowledged in total, {} stored (unacknowledged ones may be too)",
            acknowledged.len(),
            stored.len()
        );
    }
    // And the server itself starts on what the last kill left.
    let server = Server::start(&data, &["--config", config_arg]);
    runtime().block_on(async {
        let (_ws, frames) = join(&server.addr, "busy", "reader").await;
        let history = frames.last().unwrap()["messages"].as_array().unwrap();
        let ids: std::collections::HashSet<i64> =
            history.iter().map(|m| m["id"].as_i64().unwrap()).collect();
        assert!(acknowledged.values().all(|id| ids.contains(id)));
    });
}
