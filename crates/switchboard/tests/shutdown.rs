//! Graceful shutdown of a real `switchboard serve` process: SIGTERM closes signaling with 1001
//! and exits 0 within the grace; TURN allocations are given the grace to end; a second SIGINT
//! stops at once. Also checks `--log-format json` output and that no secret reaches the log.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

struct Serve {
    child: Child,
    http: SocketAddr,
    turn: Option<SocketAddr>,
    stderr: std::thread::JoinHandle<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(extra: &[&str]) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        // The database in memory: tests never write into the user's home.
        .env("SWITCHBOARD_DATA_DIR", "none")
        .args(["--log", "info", "--log-format", "json", "serve"])
        .args(["--http", "127.0.0.1:0", "--turn", "127.0.0.1:0"])
        .args(["--media", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut http = None;
    let mut turn = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(addr) = line.strip_prefix("switchboard: listening on http://") {
            http = Some(addr.parse().unwrap());
        } else if let Some(rest) = line.strip_prefix("switchboard: TURN listening on ") {
            turn = rest.split_whitespace().next().map(|a| a.parse().unwrap());
        } else if line.starts_with("switchboard: SFU media") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Serve {
        child,
        http: http.expect("the server printed its address"),
        turn,
        stderr,
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Allocates on `server` with static credentials; the allocation stays until it expires.
fn turn_allocate(server: SocketAddr, user: &str, password: &str) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
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
            if matches!(event, turn::ClientEvent::Allocated { .. }) {
                return;
            }
        }
        if let Ok((len, from)) = socket.recv_from(&mut buf) {
            let _ = client.handle_input(from, &buf[..len], Instant::now());
        }
        client.handle_timeout(Instant::now());
    }
    panic!("no allocation within 5 s");
}

#[tokio::test]
async fn sigterm_closes_signaling_with_going_away_and_exits_zero() {
    let mut server = serve(&["--shutdown-grace-secs", "5"]);
    let mut clients = Vec::new();
    let mut secrets = Vec::new();
    for name in ["Ada", "Grace", "Linus"] {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.http))
            .await
            .unwrap();
        let join = serde_json::json!({"type": "join", "v": 1, "room": "drain", "name": name});
        ws.send(Message::Text(join.to_string().into()))
            .await
            .unwrap();
        let welcome = loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(text) => {
                    break serde_json::from_str::<serde_json::Value>(&text).unwrap();
                }
                _ => continue,
            }
        };
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        secrets.push(welcome["resume_token"].as_str().unwrap().to_owned());
        for server in welcome["ice_servers"].as_array().unwrap() {
            if let Some(credential) = server["credential"].as_str() {
                secrets.push(credential.to_owned());
            }
        }
        clients.push(ws);
    }
    assert!(secrets.len() >= 6, "resume tokens and TURN credentials");

    let sent = Instant::now();
    signal(&server.child, "TERM");
    for ws in &mut clients {
        let code = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                    Some(Ok(_)) => continue,
                    other => panic!("expected a close frame, got {other:?}"),
                }
            }
        })
        .await
        .expect("a close frame within 3 s");
        assert_eq!(code, 1001, "going away");
    }
    let status =
        wait_exit(&mut server.child, Duration::from_secs(5)).expect("exits within the grace");
    assert!(status.success(), "{status:?}");
    assert!(sent.elapsed() < Duration::from_secs(5));

    let log = std::mem::replace(&mut server.stderr, std::thread::spawn(String::new))
        .join()
        .unwrap();
    let mut saw_sigterm = false;
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["message"].is_string(),
            "{line}"
        );
        saw_sigterm |= value["message"].as_str().unwrap().contains("SIGTERM");
        for secret in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "a secret in the log: {line}"
            );
        }
    }
    assert!(saw_sigterm, "{log}");
}

#[tokio::test]
async fn turn_allocations_get_the_grace_and_a_second_sigint_stops_at_once() {
    // SIGTERM with a live allocation: the server drains for the grace, then exits 0.
    let mut server = serve(&[
        "--shutdown-grace-secs",
        "2",
        "--turn-user",
        "drain:drain-pass",
    ]);
    let turn = server.turn.unwrap();
    tokio::task::spawn_blocking(move || turn_allocate(turn, "drain", "drain-pass"))
        .await
        .unwrap();
    let sent = Instant::now();
    signal(&server.child, "TERM");
    if let Some(status) = wait_exit(&mut server.child, Duration::from_millis(1000)) {
        let log = std::mem::replace(&mut server.stderr, std::thread::spawn(String::new))
            .join()
            .unwrap();
        panic!("exited while draining: {status:?}\n{log}");
    }
    let status =
        wait_exit(&mut server.child, Duration::from_secs(4)).expect("exits after the grace");
    assert!(status.success(), "{status:?}");
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "{took:?}"
    );

    // A long grace: the first SIGINT starts draining, the second stops the process at once.
    let mut server = serve(&[
        "--shutdown-grace-secs",
        "60",
        "--turn-user",
        "drain:drain-pass",
    ]);
    let turn = server.turn.unwrap();
    tokio::task::spawn_blocking(move || turn_allocate(turn, "drain", "drain-pass"))
        .await
        .unwrap();
    signal(&server.child, "INT");
    assert!(
        wait_exit(&mut server.child, Duration::from_millis(500)).is_none(),
        "draining"
    );
    signal(&server.child, "INT");
    let status = wait_exit(&mut server.child, Duration::from_secs(1)).expect("stops at once");
    assert_eq!(status.code(), Some(130));
}
