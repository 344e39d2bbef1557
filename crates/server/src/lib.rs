//! `switchboard serve`: the HTTP listener with the embedded web app, `/healthz`, and WebSocket
//! signaling at `/ws`, driving the sans-IO [`signal::Hub`].
//!
//! What this crate is not: the protocol. Rooms, presence, relay rules and limits live in
//! `signal`; this crate only moves bytes between sockets and the hub.

pub mod config;

mod hub_task;
mod web;
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

pub use config::{Config, ConfigError};

use crate::hub_task::HubCommand;

/// A server whose listener is bound, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    config: Config,
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
    /// The operating system's random source failed.
    #[error("no operating-system randomness: {0}")]
    Random(String),
    /// Serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
struct AppState {
    hub: mpsc::Sender<HubCommand>,
    max_frame_bytes: usize,
}

impl Server {
    /// Validates `config` and binds the HTTP listener.
    pub async fn bind(config: Config) -> Result<Self, ServeError> {
        config.validate()?;
        let listener = TcpListener::bind(config.http)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.http,
                source,
            })?;
        Ok(Server { listener, config })
    }

    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> Result<SocketAddr, ServeError> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` completes, then closes every signaling connection with 1001 and
    /// waits up to the configured grace for them to go.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| ServeError::Random(e.to_string()))?;
        let hub = Hub::new(self.config.hub_config(), seed);
        let (hub_tx, hub_rx) = mpsc::channel(4096);
        let hub_task = tokio::spawn(hub_task::run(hub, hub_rx));
        let state = AppState {
            hub: hub_tx.clone(),
            max_frame_bytes: self.config.signaling.max_frame_bytes,
        };
        let app = router(state);
        let grace = Duration::from_secs(self.config.shutdown_grace_secs);
        let (stopped_tx, stopped_rx) = oneshot::channel::<()>();
        let signal_hub = hub_tx.clone();
        let on_shutdown = async move {
            shutdown.await;
            info!("shutting down: closing signaling connections");
            let _ = signal_hub.send(HubCommand::Shutdown).await;
            let _ = stopped_tx.send(());
        };
        let serve = axum::serve(self.listener, app).with_graceful_shutdown(on_shutdown);
        let result = tokio::select! {
            result = serve => result.map_err(ServeError::from),
            () = async {
                let _ = stopped_rx.await;
                tokio::time::sleep(grace).await;
            } => {
                warn!("connections still open after the shutdown grace; stopping anyway");
                Ok(())
            }
        };
        drop(hub_tx);
        hub_task.abort();
        result
    }
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
        .route("/ws", get(websocket))
        .route("/", get(web::index))
        .route("/r/{room}", get(web::index))
        .fallback(get(web::file))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Response {
    use axum::response::IntoResponse;
    match hub_stats(&state.hub).await {
        Some(stats) => format!(
            "ok\nconnections {}\nrooms {}\npeers {}\n",
            stats.connections, stats.rooms, stats.peers
        )
        .into_response(),
        None => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "signaling is down\n",
        )
            .into_response(),
    }
}

async fn websocket(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(state.max_frame_bytes)
        .max_frame_size(state.max_frame_bytes)
        .on_upgrade(move |socket| ws::serve_connection(socket, state.hub))
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
