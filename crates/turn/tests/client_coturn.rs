//! The TURN client over real loopback UDP sockets against coturn's `turnserver`: allocate,
//! relay a datagram each way through a permission (Send/Data indications) and through a channel
//! (ChannelData), deallocate. Skipped, with a note, when coturn is not installed.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use turn::{Client, ClientCredentials, ClientEvent};

const TURNSERVER: &str = "/usr/bin/turnserver";

#[test]
fn allocates_and_relays_both_ways_through_coturn() {
    if !Path::new(TURNSERVER).exists() {
        eprintln!("skipping: {TURNSERVER} (coturn) is not installed");
        return;
    }
    let coturn = Coturn::start();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    let peer = UdpSocket::bind("127.0.0.1:0").expect("peer socket");
    peer.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let peer_addr = peer.local_addr().expect("peer address");
    let mut driver = Driver {
        client: Client::new(coturn.addr, ClientCredentials::new("u", "p")),
        socket,
        coturn: &coturn,
        events: Vec::new(),
        received: Vec::new(),
    };

    driver
        .client
        .allocate(Instant::now())
        .expect("a new client is idle");
    let (relayed, mapped) = driver.wait_event("Allocated", |e| match e {
        ClientEvent::Allocated {
            relayed, mapped, ..
        } => Some((*relayed, *mapped)),
        _ => None,
    });
    assert_eq!(mapped, driver.socket.local_addr().expect("address"));
    assert_eq!(relayed.ip(), coturn.addr.ip());
    assert!(coturn.relay_ports.contains(&relayed.port()), "{relayed}");

    // Through a permission: a Send indication out, a Data indication back.
    driver
        .client
        .create_permission(peer_addr.ip(), Instant::now())
        .expect("allocated");
    driver.wait_event("PermissionCreated", |e| {
        (*e == ClientEvent::PermissionCreated(peer_addr.ip())).then_some(())
    });
    driver.send(peer_addr, b"ping by indication", false);
    driver.echo_at_peer(&peer, relayed, b"ping by indication");
    assert_eq!(
        driver.wait_data(),
        (peer_addr, b"ping by indication".to_vec(), false)
    );

    // Through a channel: ChannelData both ways.
    let channel = driver
        .client
        .bind_channel(peer_addr, Instant::now())
        .expect("allocated");
    driver.wait_event("ChannelBound", |e| {
        (*e == ClientEvent::ChannelBound {
            peer: peer_addr,
            channel,
        })
        .then_some(())
    });
    driver.send(peer_addr, b"ping by channel", true);
    driver.echo_at_peer(&peer, relayed, b"ping by channel");
    assert_eq!(
        driver.wait_data(),
        (peer_addr, b"ping by channel".to_vec(), true)
    );

    driver.client.deallocate(Instant::now()).expect("allocated");
    driver.wait_event("Deallocated", |e| {
        (*e == ClientEvent::Deallocated).then_some(())
    });
    let stats = driver.client.stats();
    assert_eq!(stats.integrity_failures, 0, "{stats:?}");
    assert_eq!(stats.malformed_dropped, 0, "{stats:?}");
    assert_eq!(stats.timeouts, 0, "{stats:?}");
    assert_eq!((stats.packets_sent, stats.packets_received), (2, 2));
}

/// A `turnserver` child on a free loopback port, killed on drop.
struct Coturn {
    child: Child,
    addr: SocketAddr,
    relay_ports: std::ops::RangeInclusive<u16>,
    dir: PathBuf,
}

impl Coturn {
    fn start() -> Self {
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free port")
            .port();
        // A relay range of its own, away from the usual 49152-65535 defaults' low end.
        let low = 50_000 + (std::process::id() % 900) as u16 * 16;
        let relay_ports = low..=low + 15;
        let dir = std::env::temp_dir().join(format!(
            "switchboard-turn-client-coturn-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = std::fs::File::create(dir.join("turnserver.log")).expect("log file");
        let child = Command::new(TURNSERVER)
            // UDP only: the port was checked free for UDP, and a TCP listener on the same number
            // can find it taken (an ephemeral port of another test's connection), after which
            // coturn keeps retrying the bind instead of serving.
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--no-tcp"])
            .arg("--lt-cred-mech")
            .args(["--user", "u:p", "--realm", "r", "--allow-loopback-peers"])
            .args(["--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={}", relay_ports.start()))
            .arg(format!("--max-port={}", relay_ports.end()))
            .args(["--log-file", "stdout", "--simple-log"])
            .arg(format!(
                "--pidfile={}",
                dir.join("turnserver.pid").display()
            ))
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("turnserver starts");
        // No need to wait for it to listen: the Allocate is retransmitted until it does.
        Coturn {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            relay_ports,
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("turnserver.log")).unwrap_or_default()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the glue does: the client's transmits onto the socket, datagrams and timeouts into the
/// client.
struct Driver<'c> {
    client: Client,
    socket: UdpSocket,
    coturn: &'c Coturn,
    events: Vec<ClientEvent>,
    /// (peer, data, whether it came as ChannelData)
    received: Vec<(SocketAddr, Vec<u8>, bool)>,
}

impl Driver<'_> {
    /// One turn of the loop: flush, wait for a datagram or the next timeout (at most 50 ms),
    /// handle it.
    fn step(&mut self) {
        self.flush();
        let now = Instant::now();
        let wait = self
            .client
            .poll_timeout()
            .map(|at| at.saturating_duration_since(now))
            .unwrap_or(Duration::MAX)
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        self.socket.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 2048];
        match self.socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                let packet = &buf[..len];
                let channel_data = stun::classify(packet) == stun::PacketKind::ChannelData;
                if let Some(data) = self.client.handle_input(from, packet, Instant::now()) {
                    self.received
                        .push((data.peer, data.data.to_vec(), channel_data));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("recv: {e}"),
        }
        self.client.handle_timeout(Instant::now());
        self.flush();
    }

    fn flush(&mut self) {
        while let Some(transmit) = self.client.poll_transmit() {
            self.socket
                .send_to(&transmit.contents, transmit.destination)
                .expect("send to the server");
        }
        while let Some(event) = self.client.poll_event() {
            self.events.push(event);
        }
    }

    fn wait_event<T>(&mut self, what: &str, mut pick: impl FnMut(&ClientEvent) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.flush();
            if let Some(found) = self.events.iter().find_map(&mut pick) {
                self.events.clear();
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} event; got {:?}\n--- turnserver log ---\n{}",
                self.events,
                self.coturn.log()
            );
            self.step();
        }
    }

    fn wait_data(&mut self) -> (SocketAddr, Vec<u8>, bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.received.is_empty() {
            assert!(
                Instant::now() < deadline,
                "nothing relayed back; events {:?}\n--- turnserver log ---\n{}",
                self.events,
                self.coturn.log()
            );
            self.step();
        }
        self.received.remove(0)
    }

    fn send(&mut self, peer: SocketAddr, data: &[u8], expect_channel_data: bool) {
        let mut datagram = Vec::new();
        self.client
            .send_to(peer, data, &mut datagram)
            .expect("send_to");
        assert_eq!(
            stun::classify(&datagram) == stun::PacketKind::ChannelData,
            expect_channel_data
        );
        self.socket
            .send_to(&datagram, self.client.server())
            .expect("send to the server");
    }

    /// The peer receives `expected` from the relayed address and sends it straight back.
    fn echo_at_peer(&self, peer: &UdpSocket, relayed: SocketAddr, expected: &[u8]) {
        let mut buf = [0u8; 2048];
        let (len, from) = peer.recv_from(&mut buf).unwrap_or_else(|e| {
            panic!(
                "the peer got nothing: {e}\n--- turnserver log ---\n{}",
                self.coturn.log()
            )
        });
        assert_eq!(from, relayed);
        assert_eq!(&buf[..len], expected);
        peer.send_to(&buf[..len], relayed).expect("echo");
    }
}
