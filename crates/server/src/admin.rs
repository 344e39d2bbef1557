//! The admin API under `/api/v1` (`docs/admin-api.md`): list rooms and participants, kick a
//! participant, close a room. JSON in and out; errors are `{"error": {"code", "message"}}` with
//! the matching status.
//!
//! Who may call it: with an API key configured, a bearer token with the `admin` grant (for room
//! `*`, or for the room a room-scoped route names). Without one (open rooms), only clients on a
//! loopback address whose request carries no proxy forwarding header.
//!
//! More routes (persistent rooms and their settings, ...) go in [`routes`]; each handler starts
//! with [`AdminState::authorize`] (answer its refusal with `HttpRefusal::json`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use auth::Grant;
use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use serde_json::{Value, json};
use signal::PeerId;
use tokio::sync::{mpsc, oneshot};

use crate::access::{Access, HttpRefusal};
use crate::hub_task::HubCommand;
use crate::sfu_loop::SfuHandle;

/// What admin handlers can reach.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) hub: mpsc::Sender<HubCommand>,
    pub(crate) sfu: Option<SfuHandle>,
    pub(crate) access: Access,
    /// Persistent rooms and their stored settings (`crate::rooms_api`).
    pub(crate) rooms: crate::rooms_api::RoomsApi,
}

/// The `/api/v1` routes.
pub(crate) fn routes(state: AdminState) -> Router {
    Router::new()
        .route(
            "/api/v1/rooms",
            get(list_rooms).post(crate::rooms_api::create),
        )
        .route(
            "/api/v1/rooms/{room}",
            get(crate::rooms_api::get)
                .patch(crate::rooms_api::patch)
                .delete(crate::rooms_api::delete),
        )
        .route("/api/v1/rooms/{room}/participants", get(list_participants))
        .route(
            "/api/v1/rooms/{room}/participants/{id}",
            delete(kick_participant),
        )
        .route("/api/v1/rooms/{room}/close", post(close_room))
        .route("/api/v1", any(not_found))
        .route("/api/v1/{*rest}", any(not_found))
        .with_state(state)
}

/// An admin API error.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"code": code, "message": message.into()}});
    (status, axum::Json(body)).into_response()
}

impl AdminState {
    /// Lets the request through, or answers why not. `room`: the room a room-scoped route acts
    /// on (`None`: the whole server, which needs a token for room `*`).
    pub(crate) fn authorize(
        &self,
        headers: &HeaderMap,
        client: SocketAddr,
        room: Option<&str>,
    ) -> Result<(), HttpRefusal> {
        if self.access.enabled() {
            return self.access.check(headers, room, Grant::Admin).map(|_| ());
        }
        let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
            .iter()
            .any(|h| headers.contains_key(*h));
        if client.ip().is_loopback() && !proxied {
            return Ok(());
        }
        Err(HttpRefusal::forbidden(
            "without an API key the admin API answers only local clients (loopback, not through \
             a proxy); configure [auth] api_key and use a token with the admin grant",
        ))
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> HubCommand) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.hub.send(command(tx)).await.ok()?;
        rx.await.ok()
    }

    /// SFU rooms and their participants' labels.
    async fn sfu_rooms(&self) -> BTreeMap<String, Vec<String>> {
        match &self.sfu {
            Some(sfu) => sfu.rooms().await.into_iter().collect(),
            None => BTreeMap::new(),
        }
    }
}

fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "signaling is down",
    )
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such admin API route",
    )
}

/// A label the SFU uses for a WHIP publisher or WHEP viewer rather than a signaling peer.
fn sfu_kind(label: &str) -> &'static str {
    if label.starts_with("whip-") {
        "whip"
    } else if label.starts_with("whep-") {
        "whep"
    } else {
        "sfu"
    }
}

/// `GET /api/v1/rooms`: every room with its participant counts and mode.
async fn list_rooms(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = state.authorize(&headers, client, None) {
        return refused.json();
    }
    let Some(rooms) = state.ask(HubCommand::Rooms).await else {
        return unavailable();
    };
    let mut sfu = state.sfu_rooms().await;
    let mut stored = state.rooms.stored_names().await;
    let mut list: Vec<Value> = Vec::new();
    for room in rooms {
        let labels = sfu.remove(&room.name).unwrap_or_default();
        let streams = labels.iter().filter(|l| sfu_kind(l) != "sfu").count();
        list.push(json!({
            "name": room.name,
            "participants": room.peers + streams,
            "signaling_participants": room.peers,
            "sfu_participants": labels.len(),
            "mode": if labels.is_empty() { "p2p" } else { "sfu" },
            "persistent": stored.remove(&room.name),
        }));
    }
    for (name, labels) in sfu {
        list.push(json!({
            "name": name,
            "participants": labels.len(),
            "signaling_participants": 0,
            "sfu_participants": labels.len(),
            "mode": "sfu",
            "persistent": stored.remove(&name),
        }));
    }
    // Persistent rooms nobody is in.
    for name in stored {
        list.push(json!({
            "name": name,
            "participants": 0,
            "signaling_participants": 0,
            "sfu_participants": 0,
            "mode": "p2p",
            "persistent": true,
        }));
    }
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    axum::Json(json!({ "rooms": list })).into_response()
}

/// `GET /api/v1/rooms/{room}/participants`.
async fn list_participants(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = state.authorize(&headers, client, Some(&room)) {
        return refused.json();
    }
    let Some(peers) = state
        .ask(|reply| HubCommand::RoomPeers {
            room: room.clone(),
            reply,
        })
        .await
    else {
        return unavailable();
    };
    let labels = state.sfu_rooms().await.remove(&room).unwrap_or_default();
    if peers.is_none() && labels.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "no_such_room",
            format!("no room {room:?}"),
        );
    }
    let mut list: Vec<Value> = peers
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            json!({
                "id": p.id.to_string(),
                "kind": "signaling",
                "name": p.name,
                "identity": p.identity,
                "connected": p.connected,
                "sfu": p.sfu,
                "publish": p.publish,
            })
        })
        .collect();
    for label in labels.iter().filter(|l| sfu_kind(l) != "sfu") {
        list.push(json!({"id": label, "kind": sfu_kind(label), "sfu": true}));
    }
    axum::Json(json!({ "room": room, "participants": list })).into_response()
}

/// `DELETE /api/v1/rooms/{room}/participants/{id}`: a signaling peer is told and removed (and
/// leaves the SFU); a WHIP/WHEP session is ended.
async fn kick_participant(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = state.authorize(&headers, client, Some(&room)) {
        return refused.json();
    }
    if let Some(peer) = PeerId::parse(&id) {
        let kicked = state
            .ask(|reply| HubCommand::Kick {
                room: room.clone(),
                peer,
                reply,
            })
            .await;
        return match kicked {
            None => unavailable(),
            Some(true) => axum::Json(json!({"kicked": id, "room": room})).into_response(),
            Some(false) => no_such_participant(&room, &id),
        };
    }
    let in_sfu = sfu_kind(&id) != "sfu"
        && state
            .sfu_rooms()
            .await
            .get(&room)
            .is_some_and(|labels| labels.contains(&id));
    match (&state.sfu, in_sfu) {
        (Some(sfu), true) => {
            sfu.leave_label(&room, &id);
            axum::Json(json!({"kicked": id, "room": room})).into_response()
        }
        _ => no_such_participant(&room, &id),
    }
}

fn no_such_participant(room: &str, id: &str) -> Response {
    let shown: String = id.chars().take(32).collect();
    error(
        StatusCode::NOT_FOUND,
        "no_such_participant",
        format!("no participant {shown:?} in room {room:?}"),
    )
}

/// `POST /api/v1/rooms/{room}/close`: everyone in the room is told and removed, WHIP/WHEP
/// sessions included. The room may be joined again afterwards.
async fn close_room(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = state.authorize(&headers, client, Some(&room)) {
        return refused.json();
    }
    let Some(removed) = state
        .ask(|reply| HubCommand::CloseRoom {
            room: room.clone(),
            reply,
        })
        .await
    else {
        return unavailable();
    };
    let labels = state.sfu_rooms().await.remove(&room).unwrap_or_default();
    let streams: Vec<&String> = labels.iter().filter(|l| sfu_kind(l) != "sfu").collect();
    if removed == 0 && streams.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "no_such_room",
            format!("no room {room:?}"),
        );
    }
    if let Some(sfu) = &state.sfu {
        for label in &streams {
            sfu.leave_label(&room, label);
        }
    }
    axum::Json(json!({"closed": room, "participants": removed + streams.len()})).into_response()
}
