//! `switchboard serve`: flags over the config file, signals, and the server's lifetime.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use server::{Config, Server};
use signal::IceServer;
use tracing::info;

use crate::turn_args::TurnArgs;

/// Options of `switchboard serve`. Each overrides the same setting of `--config`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML configuration file; flags given here override its values.
    #[arg(long, short = 'c', env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address of the HTTP listener (web app, /ws signaling, /healthz) [default: 127.0.0.1:8080]
    #[arg(long, env = "SWITCHBOARD_HTTP", value_name = "ADDR:PORT")]
    http: Option<SocketAddr>,

    /// ICE server URL announced to clients (stun:HOST:PORT); repeat for several. TURN entries
    /// with credentials go in the config file.
    #[arg(long = "ice-server", value_name = "URL")]
    ice_servers: Vec<String>,

    /// Most participants in one room [default: 50]
    #[arg(long, value_name = "N")]
    max_peers_per_room: Option<usize>,

    /// Largest signaling frame a client may send, in bytes [default: 65536]
    #[arg(long, value_name = "BYTES")]
    max_frame_bytes: Option<usize>,

    /// Sustained signaling messages per second per connection [default: 50]
    #[arg(long, value_name = "N")]
    messages_per_second: Option<u32>,

    /// Burst of signaling messages per connection [default: 100]
    #[arg(long, value_name = "N")]
    message_burst: Option<u32>,

    /// Seconds a peer whose connection dropped may resume [default: 30]
    #[arg(long, value_name = "SECS")]
    resume_grace_secs: Option<u64>,

    /// Seconds of silence before a signaling connection is closed [default: 45]
    #[arg(long, value_name = "SECS")]
    idle_timeout_secs: Option<u64>,

    /// Most simultaneous signaling connections [default: 20000]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,

    /// Simultaneous signaling connections from one client address; 0 = no limit [default: 100]
    #[arg(long, value_name = "N")]
    connections_per_ip: Option<u32>,

    /// Joins per second from one client address (bursts of twice as many); 0 = no limit
    /// [default: 10]
    #[arg(long, value_name = "N")]
    joins_per_sec_per_ip: Option<u32>,

    /// WHIP/WHEP offers per second from one client address (bursts of twice as many); 0 = no
    /// limit [default: 5]
    #[arg(long, value_name = "N")]
    whip_per_sec_per_ip: Option<u32>,

    /// A reverse proxy (address or CIDR) whose X-Forwarded-For/Forwarded header names the client
    /// for the per-address limits; repeatable (replaces the file's list)
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    trusted_proxies: Vec<String>,

    /// Seconds a shutdown waits for connections to close [default: 5]
    #[arg(long, value_name = "SECS")]
    shutdown_grace_secs: Option<u64>,

    /// Do not run the built-in STUN/TURN server
    #[arg(long)]
    no_turn: bool,

    /// The SFU's media port (UDP), shared by every call through the server; port 0 lets the
    /// system choose [default: 127.0.0.1:7882]
    #[arg(long, value_name = "ADDR:PORT")]
    media: Option<std::net::SocketAddr>,

    /// Address to announce for the media port when clients reach it through a NAT or under
    /// another address (repeatable) [default: the media address]
    #[arg(long = "media-announce", value_name = "IP")]
    media_announce: Vec<std::net::IpAddr>,

    /// Do not run the SFU (no group calls through the server, no WHIP/WHEP)
    #[arg(long)]
    no_sfu: bool,

    /// Directory of the database (rooms created through the admin API, chat history), created
    /// with mode 0700; `none` keeps them in memory only, lost at exit
    /// [default: $XDG_DATA_HOME/switchboard, else ~/.local/share/switchboard]
    #[arg(long, env = "SWITCHBOARD_DATA_DIR", value_name = "DIR|none")]
    data_dir: Option<PathBuf>,

    #[command(flatten)]
    turn: TurnArgs,

    #[command(flatten)]
    auth: AuthArgs,
}

/// Access-token options of `serve`.
#[derive(Debug, Args)]
pub(crate) struct AuthArgs {
    /// API key that signs access tokens; with it every join, WHIP/WHEP request and admin call
    /// needs a token (`switchboard token`)
    #[arg(long, env = "SWITCHBOARD_API_KEY", value_name = "KEY")]
    api_key: Option<String>,

    /// The API key's secret, at least 32 bytes (prefer the environment variable or
    /// --api-secret-file: command lines are visible to other local users)
    #[arg(
        long,
        env = "SWITCHBOARD_API_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    api_secret: Option<String>,

    /// File holding the API secret
    #[arg(long, value_name = "FILE", conflicts_with = "api_secret")]
    api_secret_file: Option<PathBuf>,

    /// Serve open rooms (no tokens) on a non-loopback address. DANGEROUS: anyone who can reach
    /// the server may join any room, publish and use its TURN relay
    #[arg(long)]
    dangerous_open_rooms: bool,
}

impl AuthArgs {
    fn apply(self, auth: &mut server::AuthConfig) {
        if let Some(key) = self.api_key {
            auth.api_key = Some(key);
        }
        if let Some(secret) = self.api_secret {
            auth.api_secret = Some(secret);
            auth.api_secret_file = None;
        }
        if let Some(file) = self.api_secret_file {
            auth.api_secret_file = Some(file);
            auth.api_secret = None;
        }
        if self.dangerous_open_rooms {
            auth.dangerous_open_rooms = true;
        }
    }
}

impl ServeArgs {
    /// The config file (or the defaults) with every given flag applied over it.
    fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let s = &mut config.signaling;
        set(&mut config.http, self.http);
        set(&mut s.max_peers_per_room, self.max_peers_per_room);
        set(&mut s.max_frame_bytes, self.max_frame_bytes);
        set(&mut s.messages_per_second, self.messages_per_second);
        set(&mut s.message_burst, self.message_burst);
        set(&mut s.resume_grace_secs, self.resume_grace_secs);
        set(&mut s.idle_timeout_secs, self.idle_timeout_secs);
        set(&mut s.max_connections, self.max_connections);
        set(&mut config.shutdown_grace_secs, self.shutdown_grace_secs);
        let l = &mut config.limits;
        set(&mut l.connections_per_ip, self.connections_per_ip);
        set(&mut l.joins_per_sec_per_ip, self.joins_per_sec_per_ip);
        set(&mut l.whip_per_sec_per_ip, self.whip_per_sec_per_ip);
        if !self.trusted_proxies.is_empty() {
            l.trusted_proxies = self.trusted_proxies;
        }
        if self.no_turn {
            config.turn.enabled = false;
        }
        set(&mut config.sfu.listen, self.media);
        if !self.media_announce.is_empty() {
            config.sfu.announce = self.media_announce;
        }
        if self.no_sfu {
            config.sfu.enabled = false;
        }
        if self.data_dir.is_some() {
            config.data_dir = self.data_dir;
        }
        if config.data_dir.is_none() {
            config.data_dir = Some(default_data_dir()?);
        }
        self.turn.apply(&mut config.turn, &mut config.tls);
        self.auth.apply(&mut config.auth);
        if !self.ice_servers.is_empty() {
            config.ice_servers = self
                .ice_servers
                .into_iter()
                .map(|url| IceServer {
                    urls: vec![url],
                    username: None,
                    credential: None,
                })
                .collect();
        }
        config.validate()?;
        Ok(config)
    }
}

/// `$XDG_DATA_HOME/switchboard`, else `$HOME/.local/share/switchboard`.
fn default_data_dir() -> anyhow::Result<PathBuf> {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(data) = nonempty("XDG_DATA_HOME").map(PathBuf::from)
        && data.is_absolute()
    {
        return Ok(data.join("switchboard"));
    }
    match nonempty("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/switchboard")),
        None => anyhow::bail!(
            "no data directory: neither XDG_DATA_HOME nor HOME is set; pass --data-dir DIR \
             (or --data-dir none to keep rooms and chat in memory only)"
        ),
    }
}

fn set<T>(field: &mut T, flag: Option<T>) {
    if let Some(value) = flag {
        *field = value;
    }
}

/// Runs the server; `init_logs` installs the log subscriber with the config file's format.
pub(crate) fn run(
    args: ServeArgs,
    init_logs: impl FnOnce(server::LogFormat),
) -> anyhow::Result<()> {
    let config = match args.into_config() {
        Ok(config) => config,
        Err(err) => {
            init_logs(server::LogFormat::Text);
            return Err(err);
        }
    };
    init_logs(config.log_format);
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal();
        let server = Server::bind(config).await?;
        let addr = server.http_addr()?;
        info!(%addr, "ready");
        // The one line on stdout: scripts and tests read the address from it.
        // The fingerprints come first: a script that stops reading at "listening on" has them.
        if let Some(id) = server.tls_identity() {
            print_tls_identity(id);
        }
        let scheme = if server.is_https() { "https" } else { "http" };
        println!("switchboard: listening on {scheme}://{addr}");
        if let Some(turn) = server.turn_addr() {
            println!("switchboard: TURN listening on {turn} (udp, tcp)");
        }
        if let Some(tls) = server.turn_tls_addr() {
            println!("switchboard: TURN listening on {tls} (tls)");
        }
        if let Some(media) = server.sfu_addr() {
            println!("switchboard: SFU media on {media} (udp)");
        }
        println!("switchboard: data in {}", server.data_description());
        server.run(shutdown).await?;
        info!("stopped");
        Ok(())
    })
}

/// The certificate's fingerprints, for pinning (`--server-cert-sha256`) and for Chromium
/// (`--ignore-certificate-errors-spki-list`).
pub(crate) fn print_tls_identity(id: &server::tls::TlsIdentity) {
    let kind = if id.self_signed {
        "self-signed certificate"
    } else {
        "certificate"
    };
    println!("switchboard: TLS {kind} sha256 {}", id.cert_sha256);
    println!("switchboard: TLS spki sha256 {}", id.spki_sha256_base64);
}

/// Every signaling connection is a file descriptor; the common soft limit of 1024 would cap the
/// server far below `max_connections`, so raise it to the hard limit.
pub(crate) fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(err) => tracing::warn!(%err, "cannot raise the open file limit"),
    }
}

/// Listens for SIGINT and SIGTERM from now on (call it inside the runtime, before announcing
/// the server: a signal that arrives earlier kills the process the default way); the returned
/// future completes on the first of them, and after it a second SIGINT exits at once.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &str| match signal(kind) {
        Ok(stream) => Some(stream),
        Err(err) => {
            tracing::warn!(%err, "cannot listen for {name}");
            None
        }
    };
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
    let mut term = listen(SignalKind::terminate(), "SIGTERM");
    async move {
        tokio::select! {
            () = recv(interrupt.as_mut()) => {
                info!("SIGINT: shutting down (press Ctrl-C again to stop at once)");
            }
            () = recv(term.as_mut()) => info!("SIGTERM: shutting down"),
        }
        tokio::spawn(async move {
            recv(interrupt.as_mut()).await;
            eprintln!("second SIGINT: stopping now");
            std::process::exit(130);
        });
    }
}

/// The next signal on `stream`; never, without one.
async fn recv(stream: Option<&mut tokio::signal::unix::Signal>) {
    match stream {
        Some(stream) => {
            stream.recv().await;
        }
        None => std::future::pending().await,
    }
}
