//! coturn's own test clients against `switchboard turn` on 127.0.0.1.
//!
//! `turnutils_stunclient` (Binding), `turnutils_uclient` (Allocate, CreatePermission, ChannelBind,
//! ChannelData, Send/Data indications, over UDP and TCP) and `turnutils_peer` (a UDP echo peer)
//! come from Debian's `coturn` package. Every test starts its own server on port 0 and its own
//! peer, so the tests run in parallel; every child process is killed on drop, panics included.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Long-term credentials (RFC 8489 §9.2) of the static user.
const USER: &str = "test";
const PASS: &str = "testpass";
/// Shared secret for REST credentials (coturn's `--use-auth-secret`).
const SECRET: &str = "switchboard-test-secret";
const REALM: &str = "test.local";

/// Clients per `turnutils_uclient` run and messages per client. The client waits a random
/// 1–6 s before each session starts sending, so a run takes about 6 s whatever these are.
const CLIENTS: u32 = 2;
const MESSAGES: u32 = 25;
/// Not a multiple of 4, so ChannelData over TCP needs padding (RFC 8656 §12.5).
const LENGTH: u32 = 101;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Kills and reaps the child when dropped.
struct Guard {
    child: Child,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Our server, running `switchboard turn`.
struct Server {
    port: u16,
    stderr: Arc<Mutex<String>>,
    _guard: Guard,
}

impl Server {
    /// A client's output and the server's log, for assertion messages.
    fn context(&self, client_output: &str) -> String {
        format!(
            "client output:\n{client_output}\nserver log:\n{}",
            self.stderr.lock().unwrap()
        )
    }
}

/// Credentials and peer policy of a server under test.
#[derive(Clone, Copy)]
enum Auth {
    /// `--turn-user USER:PASS`.
    LongTerm,
    /// `--turn-secret SECRET`.
    Rest,
}

#[derive(Clone, Copy)]
enum Transport {
    Udp,
    Tcp,
}

#[derive(Clone, Copy)]
enum Method {
    /// ChannelBind, then ChannelData (the client's default).
    ChannelData,
    /// CreatePermission, then Send and Data indications (`-s`).
    Send,
}

/// Starts `switchboard turn` on 127.0.0.1:0 and waits for its ready line.
fn start_server(auth: Auth, allow_loopback: bool) -> Server {
    require_coturn();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args(["turn", "--turn", "127.0.0.1:0", "--turn-realm", REALM]);
    match auth {
        Auth::LongTerm => cmd.args(["--turn-user", &format!("{USER}:{PASS}")]),
        Auth::Rest => cmd.args(["--turn-secret", SECRET]),
    };
    if allow_loopback {
        cmd.arg("--dangerous-allow-loopback-peers");
    }
    cmd.env("SWITCHBOARD_LOG", "debug")
        .env_remove("SWITCHBOARD_CONFIG")
        .env_remove("SWITCHBOARD_TURN_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn switchboard turn");
    let stdout = child.stdout.take().unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    collect(child.stderr.take().unwrap(), stderr.clone());
    let guard = Guard { child };

    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_else(|_| {
        panic!(
            "switchboard turn printed no ready line within {START_TIMEOUT:?}; stderr:\n{}",
            stderr.lock().unwrap()
        )
    });
    let port = parse_ready_line(&line)
        .unwrap_or_else(|| panic!("unexpected ready line from switchboard turn: {line:?}"));
    Server {
        port,
        stderr,
        _guard: guard,
    }
}

/// `switchboard: TURN listening on 127.0.0.1:PORT (udp, tcp)` → PORT.
fn parse_ready_line(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("switchboard: TURN listening on 127.0.0.1:")?;
    let port = rest.strip_suffix(" (udp, tcp)")?.parse().ok()?;
    (port != 0).then_some(port)
}

/// A `turnutils_peer` UDP echo server on a free loopback port.
struct Peer {
    port: u16,
    _guard: Guard,
}

fn start_peer() -> Peer {
    require_coturn();
    for _ in 0..5 {
        let port = free_udp_port();
        let child = Command::new("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn turnutils_peer");
        let guard = Guard { child };
        if echoes(port) {
            return Peer {
                port,
                _guard: guard,
            };
        }
    }
    panic!("turnutils_peer never echoed on any port tried");
}

fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// Whether a datagram sent straight to 127.0.0.1:`port` comes back within about 5 s.
fn echoes(port: u16) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..50 {
        let _ = socket.send_to(b"ping", ("127.0.0.1", port));
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            if &buf[..n] == b"ping" && from.port() == port {
                return true;
            }
        }
    }
    false
}

/// Fails with how to install coturn's clients when they are missing.
fn require_coturn() {
    for tool in [
        "turnutils_uclient",
        "turnutils_stunclient",
        "turnutils_peer",
    ] {
        let found = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "{tool} is not installed: these tests run coturn's own clients; \
             install them with `apt-get install coturn` (Debian)"
        );
    }
}

/// Appends everything read from `from` to `into`, on a thread that ends at EOF.
fn collect(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
}

/// What a finished client printed.
struct Run {
    status: ExitStatus,
    /// stdout then stderr.
    output: String,
}

/// Runs a coturn client to completion, killing it after `CLIENT_TIMEOUT`.
fn run(program: &str, args: &[String]) -> Run {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {program}: {err}"));
    let stdout = Arc::new(Mutex::new(String::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let readers = [
        collect(child.stdout.take().unwrap(), stdout.clone()),
        collect(child.stderr.take().unwrap(), stderr.clone()),
    ];
    let mut guard = Guard { child };
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let status = loop {
        if let Some(status) = guard.child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            panic!(
                "{program} {} still running after {CLIENT_TIMEOUT:?}; output so far:\n{}{}",
                args.join(" "),
                stdout.lock().unwrap(),
                stderr.lock().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    // Everything the client wrote before exiting, up to EOF.
    for reader in readers {
        reader.join().unwrap();
    }
    let output = format!("{}{}", stdout.lock().unwrap(), stderr.lock().unwrap());
    Run { status, output }
}

/// `turnutils_uclient` relaying to `peer` through `server`.
fn uclient(
    server: &Server,
    peer: &Peer,
    auth: Auth,
    password: &str,
    transport: Transport,
    method: Method,
    extra: &[&str],
) -> Run {
    let mut args: Vec<String> = Vec::new();
    if let Transport::Tcp = transport {
        args.push("-t".into());
    }
    if let Method::Send = method {
        args.push("-s".into());
    }
    let credential_flag = match auth {
        Auth::LongTerm => "-w",
        Auth::Rest => "-W",
    };
    for arg in [
        "-u",
        USER,
        credential_flag,
        password,
        "-e",
        "127.0.0.1",
        "-r",
        &peer.port.to_string(),
        "-p",
        &server.port.to_string(),
        "-m",
        &CLIENTS.to_string(),
        "-n",
        &MESSAGES.to_string(),
        "-l",
        &LENGTH.to_string(),
    ] {
        args.push(arg.into());
    }
    args.extend(extra.iter().map(|arg| arg.to_string()));
    args.push("127.0.0.1".into());
    run("turnutils_uclient", &args)
}

/// The client's closing summary.
#[derive(Debug, PartialEq)]
struct Summary {
    sent: u64,
    received: u64,
    lost: u64,
    send_dropped: u64,
}

/// Parses `start_mclient: tot_send_msgs=S, tot_recv_msgs=R` and
/// `Total lost packets L (..%), total send dropped D (..%)`.
fn summary(output: &str) -> Option<Summary> {
    let mut sent_received = None;
    let mut lost_dropped = None;
    for line in output.lines() {
        if let Some(rest) = line.split("start_mclient: tot_send_msgs=").nth(1) {
            let (sent, rest) = rest.split_once(", tot_recv_msgs=")?;
            sent_received = Some((sent.trim().parse().ok()?, rest.trim().parse().ok()?));
        }
        if let Some(rest) = line.split("Total lost packets ").nth(1) {
            let (lost, rest) = rest.split_once(' ')?;
            let dropped = rest.split("total send dropped ").nth(1)?;
            let (dropped, _) = dropped.split_once(' ')?;
            lost_dropped = Some((lost.parse().ok()?, dropped.parse().ok()?));
        }
    }
    let (sent, received) = sent_received?;
    let (lost, send_dropped) = lost_dropped?;
    Some(Summary {
        sent,
        received,
        lost,
        send_dropped,
    })
}

/// Relays `CLIENTS × MESSAGES` messages and asserts every one came back from the echo peer.
fn assert_relays(auth: Auth, transport: Transport, method: Method, extra: &[&str]) {
    let server = start_server(auth, true);
    let peer = start_peer();
    let password = match auth {
        Auth::LongTerm => PASS,
        Auth::Rest => SECRET,
    };
    let run = uclient(&server, &peer, auth, password, transport, method, extra);
    let context = || server.context(&run.output);
    assert!(
        run.status.success(),
        "uclient failed: {}\n{}",
        run.status,
        context()
    );
    let summary = summary(&run.output)
        .unwrap_or_else(|| panic!("no summary in uclient output\n{}", context()));
    let expected = u64::from(CLIENTS * MESSAGES);
    assert_eq!(
        summary,
        Summary {
            sent: expected,
            received: expected,
            lost: 0,
            send_dropped: 0,
        },
        "{}",
        context()
    );
}

/// Asserts that the client failed and printed `expected`.
fn assert_refused(run: &Run, server: &Server, expected: &str) {
    let context = || server.context(&run.output);
    assert!(!run.status.success(), "uclient succeeded\n{}", context());
    assert!(
        run.output.contains(expected),
        "expected {expected:?} in uclient output\n{}",
        context()
    );
    assert!(
        summary(&run.output).is_none(),
        "uclient got as far as relaying\n{}",
        context()
    );
}

#[test]
fn stunclient_gets_a_mapped_address() {
    let server = start_server(Auth::LongTerm, false);
    let run = run(
        "turnutils_stunclient",
        &["-p".into(), server.port.to_string(), "127.0.0.1".into()],
    );
    assert!(
        run.status.success(),
        "stunclient failed: {}\n{}",
        run.status,
        run.output
    );
    // `0: : IPv4. UDP reflexive addr: 127.0.0.1:PORT`
    let mapped = run
        .output
        .lines()
        .find_map(|line| line.split("UDP reflexive addr: ").nth(1))
        .unwrap_or_else(|| panic!("no reflexive address in:\n{}", run.output));
    let addr: std::net::SocketAddr = mapped
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("bad reflexive address {mapped:?}"));
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    assert_ne!(addr.port(), server.port);
}

#[test]
fn long_term_udp_channel_data() {
    assert_relays(Auth::LongTerm, Transport::Udp, Method::ChannelData, &["-c"]);
}

#[test]
fn long_term_udp_send_indications() {
    assert_relays(Auth::LongTerm, Transport::Udp, Method::Send, &["-c"]);
}

#[test]
fn long_term_tcp_channel_data() {
    assert_relays(Auth::LongTerm, Transport::Tcp, Method::ChannelData, &["-c"]);
}

#[test]
fn long_term_tcp_send_indications() {
    assert_relays(Auth::LongTerm, Transport::Tcp, Method::Send, &["-c"]);
}

#[test]
fn rest_udp_channel_data() {
    assert_relays(Auth::Rest, Transport::Udp, Method::ChannelData, &["-c"]);
}

#[test]
fn rest_udp_send_indications() {
    assert_relays(Auth::Rest, Transport::Udp, Method::Send, &["-c"]);
}

#[test]
fn rest_tcp_channel_data() {
    assert_relays(Auth::Rest, Transport::Tcp, Method::ChannelData, &["-c"]);
}

#[test]
fn rest_tcp_send_indications() {
    assert_relays(Auth::Rest, Transport::Tcp, Method::Send, &["-c"]);
}

/// Without `-c` each client also allocates an RTCP relay: EVEN-PORT with the R bit, then
/// RESERVATION-TOKEN (RFC 8656 §14.6, §14.9); `-D` pads every ChannelData message.
#[test]
fn long_term_udp_rtp_rtcp_pairs_padded() {
    assert_relays(Auth::LongTerm, Transport::Udp, Method::ChannelData, &["-D"]);
}

/// Payloads as large as video packets; uclient takes the last `-l` given.
#[test]
fn mtu_sized_send_indications_over_udp() {
    assert_relays(
        Auth::LongTerm,
        Transport::Udp,
        Method::Send,
        &["-c", "-l", "1400"],
    );
}

#[test]
fn mtu_sized_channel_data_over_tcp() {
    assert_relays(
        Auth::Rest,
        Transport::Tcp,
        Method::ChannelData,
        &["-c", "-l", "1400"],
    );
}

/// The secure default: a loopback peer is refused with 403 (RFC 8656 §9), for ChannelBind and
/// CreatePermission, over UDP and TCP.
#[test]
fn loopback_peer_is_forbidden_by_default() {
    let server = start_server(Auth::LongTerm, false);
    let peer = start_peer();
    for transport in [Transport::Udp, Transport::Tcp] {
        let run = uclient(
            &server,
            &peer,
            Auth::LongTerm,
            PASS,
            transport,
            Method::ChannelData,
            &["-c"],
        );
        assert_refused(&run, &server, "channel bind: error 403");
        let run = uclient(
            &server,
            &peer,
            Auth::LongTerm,
            PASS,
            transport,
            Method::Send,
            &["-c"],
        );
        assert_refused(&run, &server, "create permission error 403");
    }
}

#[test]
fn wrong_long_term_password_is_refused() {
    let server = start_server(Auth::LongTerm, true);
    let peer = start_peer();
    for transport in [Transport::Udp, Transport::Tcp] {
        let run = uclient(
            &server,
            &peer,
            Auth::LongTerm,
            "wrongpass",
            transport,
            Method::ChannelData,
            &["-c"],
        );
        assert_refused(&run, &server, "Cannot complete Allocation");
    }
    // REST credentials are not accepted by a server that only has static users.
    let run = uclient(
        &server,
        &peer,
        Auth::Rest,
        SECRET,
        Transport::Udp,
        Method::ChannelData,
        &["-c"],
    );
    assert_refused(&run, &server, "Cannot complete Allocation");
}

#[test]
fn wrong_rest_secret_is_refused() {
    let server = start_server(Auth::Rest, true);
    let peer = start_peer();
    for transport in [Transport::Udp, Transport::Tcp] {
        let run = uclient(
            &server,
            &peer,
            Auth::Rest,
            "not-the-shared-secret",
            transport,
            Method::ChannelData,
            &["-c"],
        );
        assert_refused(&run, &server, "Cannot complete Allocation");
    }
}

#[test]
fn ready_line_parses() {
    assert_eq!(
        parse_ready_line("switchboard: TURN listening on 127.0.0.1:40123 (udp, tcp)"),
        Some(40123)
    );
    assert_eq!(
        parse_ready_line("switchboard: TURN listening on 127.0.0.1:0 (udp, tcp)"),
        None
    );
}

#[test]
fn summary_parses() {
    let output = "\
4: : start_mclient: msz=2, tot_send_msgs=40, tot_recv_msgs=40, tot_send_bytes ~ 4000, tot_recv_bytes ~ 4000
4: : start_mclient: tot_send_msgs=50, tot_recv_msgs=48
4: : start_mclient: tot_send_bytes ~ 5000, tot_recv_bytes ~ 4800
4: : Total transmit time is 4
4: : Total lost packets 2 (4.000000%), total send dropped 0 (0.000000%)
";
    assert_eq!(
        summary(output),
        Some(Summary {
            sent: 50,
            received: 48,
            lost: 2,
            send_dropped: 0,
        })
    );
    assert_eq!(summary("0: : ERROR: Cannot complete Allocation\n"), None);
}
