//! `switchboard send` / `recv` end to end: a real server, real processes, real files.
//!
//! Every test starts its own `serve` on 127.0.0.1:0 and uses its own code, so they run in
//! parallel; child processes are killed on drop, panics included.
#![allow(clippy::unwrap_used)]

mod common;

use common::{BIN, Proc};

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const TIMEOUT: Duration = Duration::from_secs(120);

/// `switchboard serve` on a free port; returns it with its base URL.
fn serve() -> (Proc, String) {
    let server = Proc::spawn(&[
        "serve",
        "--data-dir",
        "none",
        "--http",
        "127.0.0.1:0",
        "--turn",
        "127.0.0.1:0",
        "--media",
        "127.0.0.1:0",
    ]);
    server.wait_for_output("listening on http://");
    let output = server.output();
    let url = output
        .lines()
        .find_map(|l| l.split("listening on ").nth(1))
        .unwrap()
        .trim()
        .to_owned();
    (server, url)
}

fn random_file(path: &Path, len: usize) {
    let mut file = std::fs::File::create(path).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ len as u64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for byte in block.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        let n = left.min(block.len());
        file.write_all(&block[..n]).unwrap();
        left -= n;
    }
}

fn sha256(path: &Path) -> String {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    format!("{:x}", hasher.finalize())
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-share-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("out")).unwrap();
    dir
}

fn send(url: &str, code: &str, path: &Path) -> Proc {
    let sender = Proc::spawn(&[
        "send",
        "--server",
        url,
        "--code",
        code,
        path.to_str().unwrap(),
    ]);
    sender.wait_for_output("Code: ");
    sender
}

fn recv(url: &str, code: &str, out: &Path) -> Proc {
    Proc::spawn(&[
        "recv",
        "--server",
        url,
        "--yes",
        "--out",
        out.to_str().unwrap(),
        code,
    ])
}

#[test]
fn cli_to_cli_50_mb_random_file_arrives_intact() {
    let (_server, url) = serve();
    let dir = temp_dir("fifty");
    let source = dir.join("random.bin");
    random_file(&source, 50 * 1000 * 1000);
    let mut sender = send(&url, "11-tiger-orbit", &source);
    let mut receiver = recv(&url, "11-tiger-orbit", &dir.join("out"));
    assert!(receiver.wait().success(), "{}", receiver.output());
    assert!(sender.wait().success(), "{}", sender.output());
    assert_eq!(sha256(&dir.join("out/random.bin")), sha256(&source));
    assert!(!dir.join("out/random.bin.part").exists());
    assert!(receiver.output().contains("Received 50.0 MB"));
    assert!(
        receiver.output().contains("Connected directly."),
        "{}",
        receiver.output()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wrong_code_fails_on_both_sides_and_nothing_is_written() {
    let (_server, url) = serve();
    let dir = temp_dir("wrong");
    let source = dir.join("secret.txt");
    std::fs::write(&source, "not for you").unwrap();
    let mut sender = send(&url, "12-tiger-orbit", &source);
    // Same number (so the same room), different words.
    let mut receiver = recv(&url, "12-tiger-apple", &dir.join("out"));
    let status = receiver.wait();
    assert!(!status.success());
    assert!(
        receiver.output().contains("wrong code"),
        "{}",
        receiver.output()
    );
    assert!(!sender.wait().success());
    assert!(
        sender.output().contains("wrong code"),
        "{}",
        sender.output()
    );
    assert_eq!(std::fs::read_dir(dir.join("out")).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_killed_receiver_resumes_from_its_offset() {
    let (_server, url) = serve();
    let dir = temp_dir("resume");
    let source = dir.join("movie.bin");
    random_file(&source, 40 * 1000 * 1000);
    let mut sender = send(&url, "13-tiger-orbit", &source);
    let part = dir.join("out/movie.bin.part");
    let mut first = recv(&url, "13-tiger-orbit", &dir.join("out"));
    let deadline = Instant::now() + TIMEOUT;
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < 8_000_000 {
        assert!(Instant::now() < deadline, "{}", first.output());
        assert!(
            first.child.try_wait().unwrap().is_none(),
            "{}",
            first.output()
        );
        thread::sleep(Duration::from_millis(20));
    }
    first.child.kill().unwrap(); // SIGKILL: no goodbye to anyone
    first.wait();
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!((8_000_000..40_000_000).contains(&kept), "{kept}");

    let mut second = recv(&url, "13-tiger-orbit", &dir.join("out"));
    assert!(second.wait().success(), "{}", second.output());
    assert!(sender.wait().success(), "{}", sender.output());
    assert!(sender.output().contains("Resuming"), "{}", sender.output());
    assert_eq!(sha256(&dir.join("out/movie.bin")), sha256(&source));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn recv_refuses_a_code_that_is_not_a_code() {
    let out = Command::new(BIN)
        .args(["recv", "--server", "http://127.0.0.1:9", "7-tiger-orbitt"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did you mean \"orbit\""), "{stderr}");
}

#[test]
fn relay_only_transfer_goes_through_our_turn_server() {
    let server = Proc::spawn(&[
        "serve",
        "--data-dir",
        "none",
        "--http",
        "127.0.0.1:0",
        "--turn",
        "127.0.0.1:0",
        "--media",
        "127.0.0.1:0",
        // Both relayed addresses are on 127.0.0.1, which the peer policy refuses by default.
        "--dangerous-allow-loopback-peers",
    ]);
    server.wait_for_output("listening on http://");
    let url = server
        .output()
        .lines()
        .find_map(|l| l.split("listening on ").nth(1).map(|u| u.trim().to_owned()))
        .unwrap();
    let dir = temp_dir("relay");
    let source = dir.join("relayed.bin");
    random_file(&source, 5 * 1000 * 1000);
    let sender = Proc::spawn(&[
        "send",
        "--relay",
        "--server",
        &url,
        "--code",
        "15-tiger-orbit",
        source.to_str().unwrap(),
    ]);
    sender.wait_for_output("Code: ");
    let mut sender = sender;
    let mut receiver = Proc::spawn(&[
        "recv",
        "--relay",
        "--server",
        &url,
        "--yes",
        "--out",
        dir.join("out").to_str().unwrap(),
        "15-tiger-orbit",
    ]);
    assert!(receiver.wait().success(), "{}", receiver.output());
    assert!(sender.wait().success(), "{}", sender.output());
    assert_eq!(sha256(&dir.join("out/relayed.bin")), sha256(&source));
    for side in [&receiver, &sender] {
        assert!(
            side.output().contains("Connected through the TURN relay."),
            "{}",
            side.output()
        );
    }
    // Every byte crossed the relay: at least one relayed datagram per 1,200 bytes each way.
    let health = http_get(&url, "/healthz");
    let relayed: u64 = health
        .lines()
        .find_map(|l| l.strip_prefix("turn_packets_to_peers "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(relayed > 5_000_000 / 1_200, "{health}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A STUN/TURN server of its own (`switchboard turn`) on `port`, relaying to loopback.
fn turn_server(port: u16) -> Proc {
    let listen = format!("127.0.0.1:{port}");
    let turn = Proc::spawn(&[
        "turn",
        "--turn",
        &listen,
        "--turn-user",
        "alice:wonderland",
        "--dangerous-allow-loopback-peers",
    ]);
    turn.wait_for_output("TURN listening on");
    turn
}

#[test]
fn a_transfer_survives_its_turn_server_restarting_through_an_ice_restart() {
    // Relay-only peers lose their only path when the TURN server dies; a new server on the
    // same port has none of their allocations. The sender restarts ICE, both sides allocate
    // again, and the same DTLS and SCTP association carries the rest of the file.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut turn = turn_server(port);
    let dir = temp_dir("ice-restart");
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[[ice_servers]]\nurls = [\"turn:127.0.0.1:{port}?transport=udp\"]\n\
             username = \"alice\"\ncredential = \"wonderland\"\n"
        ),
    )
    .unwrap();
    let server = Proc::spawn(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
        "--no-turn",
        "--media",
        "127.0.0.1:0",
    ]);
    server.wait_for_output("listening on http://");
    let url = server
        .output()
        .lines()
        .find_map(|l| l.split("listening on ").nth(1).map(|u| u.trim().to_owned()))
        .unwrap();
    let source = dir.join("restarted.bin");
    random_file(&source, 20 * 1000 * 1000);
    let code = "16-tiger-orbit";
    let mut sender = Proc::spawn(&[
        "send",
        "--relay",
        "--server",
        &url,
        "--code",
        code,
        source.to_str().unwrap(),
    ]);
    sender.wait_for_output("Code: ");
    let mut receiver = Proc::spawn(&[
        "recv",
        "--relay",
        "--server",
        &url,
        "--yes",
        "--out",
        dir.join("out").to_str().unwrap(),
        code,
    ]);
    receiver.wait_for_output("Connected through the TURN relay.");
    thread::sleep(Duration::from_millis(300));
    let _ = turn.child.kill();
    let _ = turn.child.wait();
    let _turn = turn_server(port);
    assert!(receiver.wait().success(), "{}", receiver.output());
    assert!(sender.wait().success(), "{}", sender.output());
    assert_eq!(sha256(&dir.join("out/restarted.bin")), sha256(&source));
    let said = sender.output();
    assert!(said.contains("restarting ICE"), "{said}");
    assert!(
        said.contains("Reconnected through the TURN relay"),
        "{said}"
    );
    // The same connection went on: no new pairing, no resume from an offset.
    assert!(!said.contains("Connection lost"), "{said}");
    assert!(!said.contains("Resuming"), "{said}");
}

/// A plain HTTP/1.1 GET; returns the body.
fn http_get(base: &str, path: &str) -> String {
    let authority = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// A sender that pairs correctly and then offers `path`: the receiver must refuse the offer and
/// write nothing, inside or outside its folder.
async fn offer_hostile_name(code: &str, path: &str) -> (String, String) {
    use pairing::{Code, Pairing, Role, Step};
    use peer::{Connection, PeerEvent, PeerOptions, SignalEvent, Signaling};
    use serde_json::json;

    let (_server, url) = serve();
    let dir = temp_dir(&format!("hostile-{}", code.split('-').next().unwrap()));
    let code = Code::parse(code).unwrap();
    let mut signaling = Signaling::join(&url, &code.room(), "sender").await.unwrap();
    let mut receiver = recv(&url, &code.to_string(), &dir.join("out"));
    let peer = loop {
        if let SignalEvent::PeerJoined(p) = signaling.recv().await {
            break p.id;
        }
    };
    let options = PeerOptions {
        loopback: true,
        ..PeerOptions::default()
    };
    let mut conn = Connection::new(&options).await.unwrap();
    let (mut pairing, first) =
        Pairing::start(&code, Role::Sender, &conn.local_fingerprint()).unwrap();
    signaling.app(&peer, first);
    loop {
        if let SignalEvent::Signal { message, .. } = signaling.recv().await {
            match pairing.handle(&message["app"]).unwrap() {
                Step::Send(messages) => messages.into_iter().for_each(|m| signaling.app(&peer, m)),
                Step::Verified { .. } => break,
            }
        }
    }
    let offer = conn.offer_with_channel("switchboard-transfer").unwrap();
    signaling.signal(
        &peer,
        json!({"description": {"type": "offer", "sdp": offer}}),
    );
    let channel = loop {
        tokio::select! {
            event = signaling.recv() => {
                if let SignalEvent::Signal { message, .. } = event
                    && message["description"]["type"] == "answer"
                {
                    conn.accept_answer(message["description"]["sdp"].as_str().unwrap()).unwrap();
                }
            }
            event = conn.next_event() => match event {
                PeerEvent::ChannelOpen(id, _) => break id,
                PeerEvent::Closed(reason) => panic!("{reason}"),
                _ => {}
            },
        }
    };
    let manifest = json!({"v": 1, "files": [
        {"path": "fine.txt", "size": 5,
         "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"},
        {"path": path, "size": 5,
         "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"},
    ]});
    let mut message = vec![0x01];
    message.extend_from_slice(manifest.to_string().as_bytes());
    assert!(conn.write(channel, &message).unwrap());
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(30), conn.next_event())
            .await
            .unwrap()
        {
            PeerEvent::ChannelData(_, data) if data.first() == Some(&0x06) => {
                break String::from_utf8_lossy(&data[1..]).into_owned();
            }
            PeerEvent::Closed(reason) => break format!("closed: {reason}"),
            _ => {}
        }
    };
    let status = tokio::task::spawn_blocking(move || {
        let status = receiver.wait();
        (status, receiver.output())
    })
    .await
    .unwrap();
    assert!(!status.0.success(), "{}", status.1);
    let written: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        written,
        vec![std::ffi::OsString::from("out")],
        "{}",
        status.1
    );
    assert_eq!(std::fs::read_dir(dir.join("out")).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
    (reason, status.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_climbing_out_of_the_folder_is_refused() {
    let (reason, output) = offer_hostile_name("16-tiger-orbit", "../escape.txt").await;
    assert!(
        reason.contains("refused") || reason.contains("name"),
        "{reason}"
    );
    assert!(output.contains("escape.txt"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_with_an_absolute_path_is_refused() {
    let target = std::env::temp_dir().join("switchboard-absolute-target.txt");
    let _ = std::fs::remove_file(&target);
    let (reason, _) = offer_hostile_name("17-tiger-orbit", target.to_str().unwrap()).await;
    assert!(!reason.is_empty());
    assert!(!target.exists());
}

#[test]
fn without_yes_and_without_an_answer_the_offer_is_declined() {
    let (_server, url) = serve();
    let dir = temp_dir("decline");
    let source = dir.join("maybe.txt");
    std::fs::write(&source, "only if you say so").unwrap();
    let mut sender = send(&url, "18-tiger-orbit", &source);
    // Standard input is empty: no "y", so no.
    let out = dir.join("out");
    let mut receiver = Proc::spawn(&[
        "recv",
        "--server",
        &url,
        "--out",
        out.to_str().unwrap(),
        "18-tiger-orbit",
    ]);
    assert!(!receiver.wait().success());
    assert!(
        receiver.output().contains("Accept? [y/N]"),
        "{}",
        receiver.output()
    );
    assert!(
        receiver.output().contains("you declined the offer"),
        "{}",
        receiver.output()
    );
    assert!(!sender.wait().success());
    assert!(sender.output().contains("declined"), "{}", sender.output());
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
