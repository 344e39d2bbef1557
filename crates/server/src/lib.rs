//! `switchboard serve`: the HTTP listener with the embedded web app, `/healthz`, and WebSocket
//! signaling at `/ws`, driving the sans-IO [`signal::Hub`].
//!
//! What this crate is not: the protocol. Rooms, presence, relay rules and limits live in
//! `signal`; this crate only moves bytes between sockets and the hub.

pub mod access;
mod admin;
pub mod config;

mod hub_task;
pub mod limits;
pub mod metrics;
mod rooms_api;
pub mod sfu_loop;
mod shutdown;
mod store_task;
pub mod tls;
pub mod turn_loop;
mod web;
mod whip;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use signal::{Hub, HubStats};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

pub use access::AuthConfig;
pub use config::{Config, ConfigError, LogFormat, SfuConfig, TlsConfig, TurnConfig};
pub use sfu_loop::{SfuHandle, SfuSettings};
pub use store_task::Location as DataLocation;
pub use turn_loop::{TurnHandle, TurnSettings, TurnStatsReader};

use crate::hub_task::HubCommand;

/// A server whose listeners are bound (and TURN running), ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    config: Config,
    access: access::Access,
    turn: Option<RunningTurn>,
    sfu: Option<RunningSfu>,
    /// TLS on the HTTP listener.
    https: Option<std::sync::Arc<rustls::ServerConfig>>,
    tls_identity: Option<tls::TlsIdentity>,
    store: store_task::StoreHandle,
    loaded: Vec<store_task::Loaded>,
}

/// The SFU thread and what the HTTP side keeps about it.
struct RunningSfu {
    handle: SfuHandle,
    sessions: whip::Sessions,
    events: mpsc::UnboundedReceiver<sfu::SfuEvent>,
}

/// The built-in TURN server and what web clients are told about it.
struct RunningTurn {
    handle: TurnHandle,
    secret: Vec<u8>,
    urls: Vec<String>,
    ttl_secs: u64,
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Open rooms on a non-loopback address without `dangerous_open_rooms`.
    #[error("{0}")]
    OpenRooms(String),
    /// The data directory could not be created.
    #[error("cannot create the data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened (its error names the file).
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The operating system's random source failed.
    #[error("no operating-system randomness: {0}")]
    Random(String),
    /// Serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Read buffer per WebSocket connection; larger frames still arrive, in several reads.
const WS_BUFFER_BYTES: usize = 4096;

#[derive(Clone)]
struct AppState {
    hub: mpsc::Sender<HubCommand>,
    max_frame_bytes: usize,
    turn: Option<turn_loop::TurnStatsReader>,
    sfu: Option<SfuHandle>,
    counters: std::sync::Arc<metrics::Counters>,
    access: access::Access,
    /// Held by every WebSocket connection task: the shutdown waits until all clones are gone.
    live: mpsc::Sender<()>,
    limits: limits::Limits,
}

impl Server {
    /// Validates `config`, binds the HTTP listener and starts TURN when enabled.
    pub async fn bind(mut config: Config) -> Result<Self, ServeError> {
        if config.tls.self_signed && config.tls.generated.is_none() {
            let hosts = tls::self_signed_hosts(config.http, config.turn.external_host.as_slice());
            config.tls.generated =
                Some(
                    tls::self_signed(&hosts).map_err(|problem| ConfigError::Invalid {
                        field: "tls.self_signed",
                        problem,
                    })?,
                );
        }
        config.validate()?;
        let api_key = config.auth.api_key()?;
        if let Some(why) = access::open_rooms_refusal(
            config.http,
            api_key.is_some(),
            config.auth.dangerous_open_rooms,
        ) {
            return Err(ServeError::OpenRooms(why));
        }
        if api_key.is_none() && !config.http.ip().is_loopback() {
            warn!(
                addr = %config.http,
                "DANGEROUS: open rooms on a non-loopback address (--dangerous-open-rooms): anyone \
                 who reaches it can join any room, publish media and use the TURN relay"
            );
        }
        let access = access::Access::new(api_key);
        let loaded = config.tls.load()?;
        let tls_identity = loaded.as_ref().map(|(_, identity)| identity.clone());
        let https = loaded
            .filter(|_| config.tls.https)
            .map(|(server_config, _)| server_config);
        let listener = TcpListener::bind(config.http)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.http,
                source,
            })?;
        let turn = if config.turn.enabled {
            Some(start_turn(&config.turn, &config.tls)?)
        } else {
            None
        };
        let sfu = if config.sfu.enabled {
            let (events_tx, events) = mpsc::unbounded_channel();
            let handle =
                SfuHandle::start(&config.sfu.settings(), Some(events_tx)).map_err(|source| {
                    ServeError::Bind {
                        addr: config.sfu.listen,
                        source,
                    }
                })?;
            Some(RunningSfu {
                handle,
                sessions: whip::Sessions::default(),
                events,
            })
        } else {
            None
        };
        let (store, loaded) = store_task::StoreHandle::start(
            config.data_location(),
            config.data_fsync,
            config.signaling.chat_history_on_join,
        )
        .await?;
        Ok(Server {
            listener,
            config,
            access,
            turn,
            sfu,
            https,
            tls_identity,
            store,
            loaded,
        })
    }

    /// Whether the HTTP listener speaks TLS (HTTPS and WSS).
    pub fn is_https(&self) -> bool {
        self.https.is_some()
    }

    /// The fingerprints of the certificate in use, when TLS is configured.
    pub fn tls_identity(&self) -> Option<&tls::TlsIdentity> {
        self.tls_identity.as_ref()
    }

    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> Result<SocketAddr, ServeError> {
        Ok(self.listener.local_addr()?)
    }

    /// The TURN listening address, when TURN runs.
    pub fn turn_addr(&self) -> Option<SocketAddr> {
        self.turn.as_ref().map(|t| t.handle.local_addr())
    }

    /// The SFU's media port, when the SFU runs.
    pub fn sfu_addr(&self) -> Option<SocketAddr> {
        self.sfu.as_ref().map(|s| s.handle.local_addr())
    }

    /// Where persistent rooms and chat are kept, for people: the database file, or "memory".
    pub fn data_description(&self) -> String {
        match self.config.data_location() {
            DataLocation::Dir(dir) => store::file_in(&dir).display().to_string(),
            DataLocation::Memory => "memory only (--data-dir none)".into(),
        }
    }

    /// The TURN-over-TLS listening address, when configured.
    pub fn turn_tls_addr(&self) -> Option<SocketAddr> {
        self.turn.as_ref().and_then(|t| t.handle.tls_addr())
    }

    /// Serves until `shutdown` completes, then drains within the configured grace: stops
    /// accepting, closes every signaling connection with 1001, lets TURN allocations and SFU
    /// sessions end (relayed transfers finish), and stops TURN and the SFU at the deadline.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| ServeError::Random(e.to_string()))?;
        let mut hub_config = self.config.hub_config();
        if let Some(turn) = &self.turn {
            hub_config.ice_server_source = Some(turn_ice_servers(turn));
        }
        hub_config.authorizer = self.access.authorizer();
        let max_peers = hub_config.max_peers_per_room;
        let mut hub = Hub::new(hub_config, seed);
        for loaded in self.loaded {
            hub.handle_input(signal::Input::RoomSettings {
                room: loaded.room.name,
                settings: Some(store_task::hub_settings(loaded.room.settings, max_peers)),
                history: Some(loaded.history),
            });
            while !matches!(hub.poll_output(), signal::Output::Timeout(_)) {}
        }
        let (hub_tx, hub_rx) = mpsc::channel(4096);
        let link = self.sfu.as_ref().map(|s| hub_task::SfuLink {
            sfu: s.handle.clone(),
            hub: hub_tx.downgrade(),
        });
        let counters = std::sync::Arc::new(metrics::Counters::default());
        let store_link = hub_task::StoreLink {
            store: self.store.clone(),
            hub: hub_tx.downgrade(),
        };
        let hub_task = tokio::spawn(hub_task::run(
            hub,
            hub_rx,
            link,
            counters.clone(),
            store_link,
        ));
        let (live, mut live_rx) = mpsc::channel::<()>(1);
        let limits = limits::Limits::new(&self.config.limits)?;
        let state = AppState {
            live,
            limits: limits.clone(),
            hub: hub_tx.clone(),
            max_frame_bytes: self.config.signaling.max_frame_bytes,
            turn: self.turn.as_ref().map(|t| t.handle.stats_reader()),
            sfu: self.sfu.as_ref().map(|s| s.handle.clone()),
            counters: counters.clone(),
            access: self.access.clone(),
        };
        let mut app = router(state).merge(admin::routes(admin::AdminState {
            hub: hub_tx.clone(),
            sfu: self.sfu.as_ref().map(|s| s.handle.clone()),
            access: self.access.clone(),
            rooms: rooms_api::RoomsApi {
                store: self.store.clone(),
                hub: hub_tx.clone(),
                default_max: self.config.signaling.max_peers_per_room,
            },
        }));
        let mut sfu_handle = None;
        if let Some(RunningSfu {
            handle,
            sessions,
            mut events,
        }) = self.sfu
        {
            let forget = sessions.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    tracing::debug!(?event, "sfu");
                    forget.forget_on(&event);
                }
            });
            app = app.merge(whip::routes(whip::WhipState {
                sfu: handle.clone(),
                sessions,
                counters: counters.clone(),
                access: self.access.clone(),
                limits: limits.clone(),
            }));
            sfu_handle = Some(handle);
        }
        let grace = Duration::from_secs(self.config.shutdown_grace_secs);
        let (deadline_tx, deadline_rx) = tokio::sync::watch::channel(None);
        let signal_hub = hub_tx.clone();
        let on_shutdown = async move {
            shutdown.await;
            let _ = deadline_tx.send(Some(tokio::time::Instant::now() + grace));
            info!("shutting down: closing signaling connections");
            let _ = signal_hub.send(HubCommand::Shutdown).await;
        };
        // Signaling frames are small and latency-bound: without TCP_NODELAY a frame after a
        // server ping can wait for Nagle's algorithm (about 20 ms).
        // The admin API needs the client's address (loopback-only without an API key).
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let serve: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> =
            match self.https {
                Some(tls_config) => {
                    // (Tapped only for axum's client-address extractor, which knows `TapIo`.)
                    let listener = axum::serve::ListenerExt::tap_io(
                        tls::TlsListener::new(self.listener, tls_config)?,
                        |_| {},
                    );
                    let serve = axum::serve(listener, app).with_graceful_shutdown(on_shutdown);
                    Box::pin(async move { serve.await })
                }
                None => {
                    let listener = axum::serve::ListenerExt::tap_io(self.listener, |tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    let serve = axum::serve(listener, app).with_graceful_shutdown(on_shutdown);
                    Box::pin(async move { serve.await })
                }
            };
        let result = tokio::select! {
            result = serve => result.map_err(ServeError::from),
            () = shutdown::deadline(deadline_rx.clone()) => {
                warn!("connections still open after the shutdown grace; stopping anyway");
                Ok(())
            }
        };
        let turn = self.turn.map(|t| t.handle);
        let deadline = *deadline_rx.borrow();
        if let Some(deadline) = deadline {
            // Upgraded WebSocket connections outlive the HTTP server: let them send their 1001.
            let _ = tokio::time::timeout_at(deadline, live_rx.recv()).await;
        }
        drop(hub_tx);
        hub_task.abort();
        if let Some(deadline) = deadline {
            shutdown::drain_media(turn.as_ref(), sfu_handle.as_ref(), deadline).await;
        }
        if let Some(turn) = turn {
            let _ = turn.shutdown();
        }
        if let Some(sfu) = sfu_handle {
            sfu.shutdown();
        }
        result
    }
}

/// Starts the TURN thread; without a configured secret, makes a random one for web clients.
fn start_turn(
    config: &config::TurnConfig,
    tls: &config::TlsConfig,
) -> Result<RunningTurn, ServeError> {
    let mut settings = config.settings(tls)?;
    let secret = match &config.secret {
        Some(secret) => secret.as_bytes().to_vec(),
        None => {
            let mut random = [0u8; 32];
            getrandom::fill(&mut random).map_err(|e| ServeError::Random(e.to_string()))?;
            let secret: Vec<u8> = random
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes();
            settings.credentials.set_rest_secret(&secret);
            secret
        }
    };
    let handle = TurnHandle::start(settings.clone()).map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let host = config.url_host(settings.relay_ip);
    let port = handle.local_addr().port();
    let mut urls = vec![
        format!("stun:{host}:{port}"),
        format!("turn:{host}:{port}?transport=udp"),
        format!("turn:{host}:{port}?transport=tcp"),
    ];
    if let Some(tls) = handle.tls_addr() {
        urls.push(format!("turns:{host}:{}?transport=tcp", tls.port()));
    }
    Ok(RunningTurn {
        handle,
        secret,
        urls,
        ttl_secs: config.credential_ttl_secs,
    })
}

/// Every joining peer gets the TURN URLs with REST credentials naming it, valid for the TTL.
fn turn_ice_servers(turn: &RunningTurn) -> signal::IceServerSource {
    let secret = turn.secret.clone();
    let urls = turn.urls.clone();
    let ttl = turn.ttl_secs;
    signal::IceServerSource(std::sync::Arc::new(move |peer| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (username, credential) = turn::rest_credentials(&secret, now + ttl, &peer.to_string());
        vec![signal::IceServer {
            urls: urls.clone(),
            username: Some(username),
            credential: Some(credential),
        }]
    }))
}

/// Reads the hub's counters from a running server's state (used by tests and `/healthz`).
async fn hub_stats(hub: &mpsc::Sender<HubCommand>) -> Option<HubStats> {
    let (tx, rx) = oneshot::channel();
    hub.send(HubCommand::Stats(tx)).await.ok()?;
    rx.await.ok()
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_page))
        .route("/ws", get(websocket))
        .route("/", get(web::index))
        .route("/r/{room}", get(web::index))
        .route("/send", get(web::send_page))
        .route("/recv/{code}", get(web::recv_page))
        .route("/watch/{room}", get(web::watch_page))
        .fallback(get(web::file))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Response {
    use axum::response::IntoResponse;
    use std::fmt::Write as _;
    let Some(stats) = hub_stats(&state.hub).await else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "signaling is down\n",
        )
            .into_response();
    };
    let mut body = format!(
        "ok\nconnections {}\nrooms {}\npeers {}\n",
        stats.connections, stats.rooms, stats.peers
    );
    if let Some(turn) = &state.turn {
        let t = turn.read();
        let _ = write!(
            body,
            "turn_allocations {}\nturn_allocations_created {}\nturn_bindings {}\n\
             turn_packets_to_peers {}\nturn_bytes_to_peers {}\nturn_packets_to_clients {}\n\
             turn_bytes_to_clients {}\nturn_auth_failures {}\nturn_stale_nonces {}\n\
             turn_malformed_dropped {}\nturn_denied_peers {}\nturn_unroutable_dropped {}\n\
             turn_bandwidth_dropped {}\n",
            t.allocations,
            t.allocations_created,
            t.bindings,
            t.packets_to_peers,
            t.bytes_to_peers,
            t.packets_to_clients,
            t.bytes_to_clients,
            t.auth_failures,
            t.stale_nonces,
            t.malformed_dropped,
            t.denied_peers,
            t.unroutable_dropped,
            t.bandwidth_dropped,
        );
    }
    if let Some(sfu) = &state.sfu {
        let s = sfu.stats();
        let _ = write!(
            body,
            "sfu_rooms {}\nsfu_participants {}\nsfu_tracks {}\nsfu_datagrams_in {}\n\
             sfu_datagrams_out {}\nsfu_media_forwarded {}\nsfu_keyframe_requests {}\n\
             sfu_unroutable {}\nsfu_rejected_inputs {}\nsfu_dropped_participants {}\n",
            s.rooms,
            s.participants,
            s.tracks,
            s.datagrams_in,
            s.datagrams_out,
            s.media_forwarded,
            s.keyframe_requests,
            s.unroutable,
            s.rejected_inputs,
            s.dropped_participants,
        );
    }
    body.into_response()
}

async fn metrics_page(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    use axum::response::IntoResponse;
    // With an API key, scraping needs a token with the admin grant for room `*`.
    if let Err(refusal) = state.access.check(&headers, None, auth::Grant::Admin) {
        return refusal.plain();
    }
    let body = metrics::render(&metrics::Snapshot {
        hub: hub_stats(&state.hub).await,
        turn: state.turn.as_ref().map(|t| t.read()),
        sfu: state.sfu.as_ref().map(|s| s.stats()),
        counters: &state.counters,
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        body,
    )
        .into_response()
}

async fn websocket(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    use axum::response::IntoResponse;
    let source = state.limits.client_ip(peer, &headers);
    let Some(slot) = state.limits.connect(source) else {
        metrics::Counters::bump(&state.counters.ws_refused_per_ip);
        tracing::debug!(%source, "too many connections from one address");
        return (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, HeaderValue::from_static("10"))],
            "too many connections from your address\n",
        )
            .into_response();
    };
    // Signaling frames are small and mostly idle: tungstenite's 128 KiB default buffers would
    // cost far more memory per connection than everything else together.
    upgrade
        .read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(state.max_frame_bytes)
        .max_frame_size(state.max_frame_bytes)
        .on_upgrade(move |socket| async move {
            ws::serve_connection(socket, state.hub, state.counters, Some(source)).await;
            drop(slot);
            drop(state.live);
        })
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; \
             media-src 'self' blob:; style-src 'self' 'unsafe-inline'; object-src 'none'; \
             base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    response
}
