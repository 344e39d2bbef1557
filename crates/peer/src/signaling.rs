//! A signaling client for the native peer: protocol v1 over a WebSocket (`docs/protocol.md`).

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::debug;

/// How often the client pings the server so idle connections stay open.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Another peer in the room.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RemotePeer {
    /// Its peer id.
    pub id: String,
    /// Its display name.
    pub name: String,
}

/// One entry of the ICE server list the server hands out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username, when the entry is a TURN server.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default)]
    pub credential: Option<String>,
}

impl IceServer {
    /// The first plain `turn:` URL over UDP as a [`RelayServer`](crate::RelayServer), resolving
    /// its host name. `turns:` (TLS) is not supported by the native peer.
    pub async fn relay_server(servers: &[IceServer]) -> Option<crate::RelayServer> {
        Self::relay_server_over(servers, "udp").await
    }

    /// The first `turn:...?transport=tcp` URL, like [`IceServer::relay_server`].
    pub async fn relay_server_tcp(servers: &[IceServer]) -> Option<crate::RelayServer> {
        Self::relay_server_over(servers, "tcp").await
    }

    async fn relay_server_over(
        servers: &[IceServer],
        transport: &str,
    ) -> Option<crate::RelayServer> {
        for server in servers {
            let (Some(username), Some(password)) = (&server.username, &server.credential) else {
                continue;
            };
            for url in &server.urls {
                let Some(rest) = url.strip_prefix("turn:") else {
                    continue;
                };
                let (host_port, query) = rest.split_once('?').unwrap_or((rest, ""));
                // No transport parameter means UDP (RFC 7065 §3.1).
                let wanted = match query.strip_prefix("transport=") {
                    None if query.is_empty() => transport == "udp",
                    Some(given) => given == transport,
                    None => false,
                };
                if !wanted {
                    continue;
                }
                // `host`, `[v6]` and a bare IPv6 address carry no port: TURN's default is 3478.
                let has_port = host_port.parse::<std::net::SocketAddr>().is_ok()
                    || (!host_port.ends_with(']') && host_port.matches(':').count() == 1);
                let host_port = if has_port {
                    host_port.to_owned()
                } else {
                    format!("{host_port}:3478")
                };
                if let Ok(mut addresses) = tokio::net::lookup_host(host_port.as_str()).await
                    && let Some(server) = addresses.next()
                {
                    return Some(crate::RelayServer {
                        server,
                        username: username.clone(),
                        password: password.clone(),
                    });
                }
            }
        }
        None
    }
}

/// What the server answered to `join`.
#[derive(Debug, Clone, Deserialize)]
pub struct Welcome {
    /// Our peer id.
    pub peer: String,
    /// Everyone already in the room.
    pub peers: Vec<RemotePeer>,
    /// STUN/TURN servers to use.
    #[serde(default)]
    pub ice_servers: Vec<IceServer>,
}

/// Something the server told us after the welcome.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalEvent {
    /// A peer joined the room.
    PeerJoined(RemotePeer),
    /// A peer left (or timed out).
    PeerLeft(String),
    /// A `signal` relayed from another peer: the whole message, `from` included.
    Signal {
        /// The sender's peer id.
        from: String,
        /// The relayed message (`description`, `candidate` or `app`).
        message: Value,
    },
    /// The SFU's reply to our `sfu` offer (`docs/sfu.md`): its answer SDP, or why there is none.
    Sfu(Result<String, String>),
    /// The server reported an error.
    Error {
        /// The error code, e.g. `unknown_peer`.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The WebSocket closed.
    Closed(String),
}

/// A joined signaling session. Events arrive through [`Signaling::recv`]; sending never blocks.
#[derive(Debug)]
pub struct Signaling {
    outgoing: mpsc::UnboundedSender<String>,
    incoming: mpsc::UnboundedReceiver<SignalEvent>,
    /// Events put back to be received again, before anything newer.
    held: std::collections::VecDeque<SignalEvent>,
    pump: Option<tokio::task::JoinHandle<()>>,
    /// The welcome the server sent.
    pub welcome: Welcome,
}

/// Turns `http://host:port` (or `ws://...`) into the `/ws` endpoint URL.
pub fn websocket_url(server: &str) -> Result<String> {
    let server = server.trim_end_matches('/');
    let rest = if let Some(rest) = server.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = server.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if server.starts_with("ws://") || server.starts_with("wss://") {
        server.to_owned()
    } else {
        bail!("the server URL must start with http://, https://, ws:// or wss:// (got {server:?})");
    };
    if rest.ends_with("/ws") {
        Ok(rest)
    } else {
        Ok(format!("{rest}/ws"))
    }
}

impl Signaling {
    /// Connects to `server` (an `http://` or `ws://` URL), joins `room` as `name` and waits for
    /// the welcome.
    pub async fn join(server: &str, room: &str, name: &str) -> Result<Signaling> {
        Self::join_with_token(server, room, name, None).await
    }

    /// [`Signaling::join`] with an access token, for servers that require one.
    pub async fn join_with_token(
        server: &str,
        room: &str,
        name: &str,
        token: Option<&str>,
    ) -> Result<Signaling> {
        let url = websocket_url(server)?;
        let connector = tokio_tungstenite::Connector::Rustls(crate::tls::current_client_config());
        let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            url.as_str(),
            None,
            true,
            Some(connector),
        )
        .await
        .map_err(|err| crate::tls::explain_connect(&url, &err.to_string()))
        .with_context(|| format!("cannot reach the signaling server at {url}"))?;
        let mut join = json!({"type": "join", "v": 1, "room": room, "name": name});
        if let Some(token) = token {
            join["token"] = json!(token);
        }
        ws.send(Message::Text(join.to_string().into())).await?;
        let welcome = loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .map_err(|_| anyhow!("the signaling server did not answer the join within 10 s"))?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text)?;
                    match value["type"].as_str() {
                        Some("welcome") => break serde_json::from_value::<Welcome>(value)?,
                        Some("error") => bail!(
                            "the signaling server refused the join: {} ({})",
                            value["message"].as_str().unwrap_or("no message"),
                            value["code"].as_str().unwrap_or("no code")
                        ),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => bail!("the signaling server closed: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err.into()),
                None => bail!("the signaling server closed the connection"),
            }
        };
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let pump = tokio::spawn(pump(ws, out_rx, in_tx));
        Ok(Signaling {
            outgoing: out_tx,
            incoming: in_rx,
            held: std::collections::VecDeque::new(),
            pump: Some(pump),
            welcome,
        })
    }

    /// Sends a `signal` to peer `to`; `payload` holds `description`, `candidate` or `app`.
    pub fn signal(&self, to: &str, payload: Value) {
        let mut message = json!({"type": "signal", "to": to});
        if let (Some(target), Value::Object(fields)) = (message.as_object_mut(), payload) {
            target.extend(fields);
        }
        let _ = self.outgoing.send(message.to_string());
    }

    /// Sends an offer to the server's SFU (`docs/sfu.md`); the reply arrives as
    /// [`SignalEvent::Sfu`].
    pub fn sfu_offer(&self, sdp: &str) {
        let message = json!({"type": "sfu", "description": {"type": "offer", "sdp": sdp}});
        let _ = self.outgoing.send(message.to_string());
    }

    /// Sends an application payload to peer `to`.
    pub fn app(&self, to: &str, app: Value) {
        self.signal(to, json!({ "app": app }));
    }

    /// Puts events back, in order, to be received again before anything newer: for a caller
    /// busy with one peer that must not lose another peer's messages.
    pub fn put_back(&mut self, events: impl IntoIterator<Item = SignalEvent>) {
        let mut events: Vec<_> = events.into_iter().collect();
        while let Some(event) = events.pop() {
            self.held.push_front(event);
        }
    }

    /// The next event; `Closed` once the connection is gone.
    pub async fn recv(&mut self) -> SignalEvent {
        if let Some(event) = self.held.pop_front() {
            return event;
        }
        self.incoming
            .recv()
            .await
            .unwrap_or_else(|| SignalEvent::Closed("signaling task ended".into()))
    }

    /// Leaves the room and closes the WebSocket, after everything sent before has gone out
    /// (waiting at most two seconds).
    pub async fn leave(&mut self) {
        let _ = self.outgoing.send(json!({"type": "leave"}).to_string());
        // Dropping our end makes the pump close the WebSocket once the leave is sent; later
        // sends go nowhere.
        drop(std::mem::replace(
            &mut self.outgoing,
            mpsc::unbounded_channel().0,
        ));
        if let Some(pump) = self.pump.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
        }
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Moves frames between the WebSocket and the channels, and keeps the connection alive.
async fn pump(
    mut ws: Socket,
    mut outgoing: mpsc::UnboundedReceiver<String>,
    incoming: mpsc::UnboundedSender<SignalEvent>,
) {
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    let reason = loop {
        tokio::select! {
            frame = outgoing.recv() => match frame {
                Some(text) => {
                    if let Err(err) = ws.send(Message::Text(text.into())).await {
                        break format!("send failed: {err}");
                    }
                }
                // Left, or the `Signaling` was dropped.
                None => {
                    let _ = ws.close(None).await;
                    break "left".into();
                }
            },
            _ = keepalive.tick() => {
                if ws.send(Message::Text(json!({"type": "ping"}).to_string().into())).await.is_err() {
                    break "keepalive failed".into();
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if let Some(event) = parse_event(&text)
                        && incoming.send(event).is_err()
                    {
                        break "closed".into();
                    }
                }
                Some(Ok(Message::Close(frame))) => break format!("server closed: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(err)) => break format!("connection lost: {err}"),
                None => break "connection lost".into(),
            },
        }
    };
    debug!(%reason, "signaling closed");
    let _ = incoming.send(SignalEvent::Closed(reason));
}

fn parse_event(text: &str) -> Option<SignalEvent> {
    let value: Value = serde_json::from_str(text).ok()?;
    match value["type"].as_str()? {
        "peer_joined" => serde_json::from_value(value["peer"].clone())
            .ok()
            .map(SignalEvent::PeerJoined),
        "peer_left" => Some(SignalEvent::PeerLeft(value["peer"].as_str()?.to_owned())),
        "signal" => Some(SignalEvent::Signal {
            from: value["from"].as_str()?.to_owned(),
            message: value,
        }),
        "sfu" => Some(SignalEvent::Sfu(
            match (
                value["description"]["type"].as_str(),
                value["description"]["sdp"].as_str(),
            ) {
                (Some("answer"), Some(sdp)) => Ok(sdp.to_owned()),
                _ => Err(value["error"]
                    .as_str()
                    .unwrap_or("the SFU sent neither an answer nor an error")
                    .to_owned()),
            },
        )),
        "error" => Some(SignalEvent::Error {
            code: value["code"].as_str().unwrap_or_default().to_owned(),
            message: value["message"].as_str().unwrap_or_default().to_owned(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_become_websocket_urls() {
        assert_eq!(
            websocket_url("http://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(
            websocket_url("https://example.org/").unwrap(),
            "wss://example.org/ws"
        );
        assert_eq!(websocket_url("ws://h:1/ws").unwrap(), "ws://h:1/ws");
        assert!(websocket_url("example.org").is_err());
    }

    #[test]
    fn sfu_replies_are_answers_or_errors() {
        assert_eq!(
            parse_event(r#"{"type":"sfu","description":{"type":"answer","sdp":"v=0"}}"#),
            Some(SignalEvent::Sfu(Ok("v=0".into())))
        );
        assert_eq!(
            parse_event(r#"{"type":"sfu","error":"room full"}"#),
            Some(SignalEvent::Sfu(Err("room full".into())))
        );
        assert!(matches!(
            parse_event(r#"{"type":"sfu","description":{"type":"offer","sdp":"v=0"}}"#),
            Some(SignalEvent::Sfu(Err(_)))
        ));
    }

    #[tokio::test]
    async fn the_first_udp_turn_url_is_the_relay_and_the_first_tcp_one_its_fallback() {
        let servers = vec![
            IceServer {
                urls: vec!["stun:127.0.0.1:3478".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec![
                    "turns:127.0.0.1:5349".into(),
                    "turn:127.0.0.1:4000?transport=tcp".into(),
                    "turn:127.0.0.1:4001?transport=udp".into(),
                ],
                username: Some("1767225600:ab".into()),
                credential: Some("pw".into()),
            },
        ];
        let relay = IceServer::relay_server(&servers).await.unwrap();
        assert_eq!(relay.server, "127.0.0.1:4001".parse().unwrap());
        assert_eq!(relay.username, "1767225600:ab");
        let tcp = IceServer::relay_server_tcp(&servers).await.unwrap();
        assert_eq!(tcp.server, "127.0.0.1:4000".parse().unwrap());
        assert!(IceServer::relay_server_tcp(&servers[..1]).await.is_none());
        let bare = vec![IceServer {
            urls: vec!["turn:127.0.0.1".into()],
            username: Some("u".into()),
            credential: Some("p".into()),
        }];
        let relay = IceServer::relay_server(&bare).await.unwrap();
        assert_eq!(relay.server.port(), 3478);
    }
}
