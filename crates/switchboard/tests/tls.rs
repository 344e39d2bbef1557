//! HTTPS/WSS end to end: `serve --tls-self-signed`, native `send`/`recv` pinning its
//! certificate, and the refusals (a wrong pin, no pin, plain http:// to the TLS port).
#![allow(clippy::unwrap_used)]

mod common;

use common::Proc;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// `serve --tls-self-signed` on free ports: the server, its https:// URL and the certificate's
/// SHA-256.
fn serve_tls() -> (Proc, String, String) {
    let server = Proc::spawn(&[
        "serve",
        "--http",
        "127.0.0.1:0",
        "--turn",
        "127.0.0.1:0",
        "--turn-tls",
        "127.0.0.1:0",
        "--media",
        "127.0.0.1:0",
        "--tls-self-signed",
    ]);
    server.wait_for_output("SFU media on ");
    let url = server.after("listening on ");
    assert!(url.starts_with("https://"), "{}", server.output());
    let pin = server.after("self-signed certificate sha256 ");
    assert_eq!(pin.len(), 64, "{}", server.output());
    assert!(
        server.output().contains("(tls)"),
        "TURN over TLS uses the same certificate: {}",
        server.output()
    );
    (server, url, pin)
}

fn recv(url: &str, pin: Option<&str>, code: &str, out: &Path) -> Proc {
    let mut args = vec![
        "recv",
        "--server",
        url,
        "--yes",
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(pin) = pin {
        args.extend(["--server-cert-sha256", pin]);
    }
    args.push(code);
    Proc::spawn(&args)
}

fn sha256_file(path: &Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("out")).unwrap();
    dir
}

#[test]
fn send_and_recv_over_wss_pinning_a_self_signed_certificate() {
    let (_server, url, pin) = serve_tls();
    let dir = temp_dir("pinned");
    let source = dir.join("data.bin");
    let mut data = vec![0u8; 3 << 20];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for byte in &mut data {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    std::fs::File::create(&source)
        .unwrap()
        .write_all(&data)
        .unwrap();
    let mut sender = Proc::spawn(&[
        "send",
        "--server",
        &url,
        "--server-cert-sha256",
        &pin,
        "--code",
        "21-tiger-orbit",
        source.to_str().unwrap(),
    ]);
    sender.wait_for_output("Code: ");
    let mut receiver = recv(&url, Some(&pin), "21-tiger-orbit", &dir.join("out"));
    assert!(receiver.wait().success(), "{}", receiver.output());
    assert!(sender.wait().success(), "{}", sender.output());
    assert_eq!(sha256_file(&dir.join("out/data.bin")), sha256_file(&source));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wrong_pin_no_pin_and_plain_http_fail_with_clear_errors() {
    let (server, url, pin) = serve_tls();
    let dir = temp_dir("refused");
    let out = dir.join("out");

    let wrong = format!(
        "{}{}",
        if pin.starts_with('0') { "1" } else { "0" },
        &pin[1..]
    );
    let mut receiver = recv(&url, Some(&wrong), "22-tiger-orbit", &out);
    assert!(!receiver.wait().success());
    let text = receiver.output();
    assert!(text.contains("not the pinned"), "{text}");
    assert!(text.contains(&pin), "names the certificate it got: {text}");

    let mut receiver = recv(&url, None, "22-tiger-orbit", &out);
    assert!(!receiver.wait().success());
    let text = receiver.output();
    assert!(text.contains("--server-cert-sha256"), "{text}");

    let plain = url.replace("https://", "http://");
    let started = Instant::now();
    let mut receiver = recv(&plain, Some(&pin), "22-tiger-orbit", &out);
    assert!(!receiver.wait().success());
    let text = receiver.output();
    assert!(text.contains("https://"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(15), "{text}");

    // The server shrugged all of that off: a pinned client still gets through.
    let mut bad = Proc::spawn(&[
        "recv",
        "--server",
        &url,
        "--server-cert-sha256",
        "xyz",
        "1-a-b",
    ]);
    assert!(!bad.wait().success());
    assert!(
        bad.output().contains("--server-cert-sha256"),
        "{}",
        bad.output()
    );
    assert!(server.child_alive());
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

impl Proc {
    fn child_alive(&self) -> bool {
        // `try_wait` needs `&mut`; a process that exited has a status in /proc.
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        !stat.is_empty() && !stat.contains(") Z ")
    }
}

#[test]
fn whip_and_whep_over_https_with_the_pin() {
    let (_server, url, pin) = serve_tls();
    let mut loadtest = Proc::spawn(&[
        "loadtest",
        "--server",
        &url,
        "--server-cert-sha256",
        &pin,
        "--room",
        "tls-load",
        "--publishers",
        "1",
        "--subscribers",
        "1",
        "--duration",
        "2s",
    ]);
    assert!(loadtest.wait().success(), "{}", loadtest.output());
    let text = loadtest.output();
    assert!(text.contains("subscribers 1/1 connected"), "{text}");
    assert!(text.contains("errors    none"), "{text}");
}
