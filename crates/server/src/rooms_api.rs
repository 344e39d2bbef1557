//! Persistent rooms in the admin API: `POST /api/v1/rooms` creates one with its settings,
//! `GET`/`PATCH`/`DELETE /api/v1/rooms/{room}` read, change and delete the stored settings
//! (`docs/admin-api.md`). The database is written first; the hub learns the new settings only
//! once they are committed.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use signal::RoomName;
use store::{RoomSettings, StoreError};
use tokio::sync::mpsc;
use tracing::warn;

use crate::admin::{AdminState, error};
use crate::hub_task::HubCommand;
use crate::store_task::{StoreHandle, hub_settings, now_ms};

/// `POST /api/v1/rooms`. A token for the room named in the body is enough (or one for `*`).
pub(crate) async fn create(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let named = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("name")?.as_str().map(str::to_owned));
    if let Err(refused) = state.authorize(&headers, client, named.as_deref()) {
        return refused.json();
    }
    state.rooms.create(&body).await
}

/// `GET /api/v1/rooms/{room}`.
pub(crate) async fn get(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = state.authorize(&headers, client, Some(&room)) {
        return refused.json();
    }
    state.rooms.get(room).await
}

/// `PATCH /api/v1/rooms/{room}`.
pub(crate) async fn patch(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = state.authorize(&headers, client, Some(&room)) {
        return refused.json();
    }
    state.rooms.patch(room, &body).await
}

/// `DELETE /api/v1/rooms/{room}`.
pub(crate) async fn delete(
    State(state): State<AdminState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = state.authorize(&headers, client, Some(&room)) {
        return refused.json();
    }
    state.rooms.delete(room).await
}

/// What the room routes reach.
#[derive(Clone)]
pub(crate) struct RoomsApi {
    pub(crate) store: StoreHandle,
    pub(crate) hub: mpsc::Sender<HubCommand>,
    /// The server's `max_peers_per_room`, for rooms that set no limit of their own.
    pub(crate) default_max: usize,
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn no_such_room(room: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no_such_room",
        format!("no stored room {room:?}"),
    )
}

fn storage_failed(err: &StoreError) -> Response {
    warn!(%err, "admin API: database call failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage_failed",
        "the database call failed; see the server log",
    )
}

fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the database is not running",
    )
}

/// A stored room as the API shows it.
fn room_json(room: &store::Room) -> Value {
    json!({
        "name": room.name,
        "created_at": room.created_at_ms,
        "max_participants": room.settings.max_participants,
        "chat_history": room.settings.chat_history,
    })
}

impl RoomsApi {
    /// The names of the stored rooms (empty when the database fails; that is logged).
    pub(crate) async fn stored_names(&self) -> BTreeSet<String> {
        match self.store.call(|store| store.rooms()).await {
            Some(Ok(rooms)) => rooms.into_iter().map(|r| r.name).collect(),
            Some(Err(err)) => {
                warn!(%err, "admin API: cannot list stored rooms");
                BTreeSet::new()
            }
            None => BTreeSet::new(),
        }
    }

    /// `POST /api/v1/rooms` with `{"name", "max_participants"?, "chat_history"?}`.
    pub(crate) async fn create(&self, body: &[u8]) -> Response {
        let fields = match object(body) {
            Ok(fields) => fields,
            Err(why) => return bad_request(why),
        };
        let name = match fields.get("name") {
            Some(Value::String(name)) => name.clone(),
            Some(_) => return bad_request("`name` must be a string"),
            None => return bad_request("`name` is required"),
        };
        if let Err(why) = RoomName::parse(&name) {
            return bad_request(format!("the room name {why}"));
        }
        let settings = match apply(RoomSettings::default(), &fields, &["name"]) {
            Ok(settings) => settings,
            Err(why) => return bad_request(why),
        };
        let created_at = now_ms();
        let stored = {
            let name = name.clone();
            self.store
                .call(move |store| store.create_room(&name, settings, created_at))
                .await
        };
        match stored {
            None => unavailable(),
            Some(Ok(room)) => {
                self.tell_hub(&room, Some(Vec::new())).await;
                (StatusCode::CREATED, axum::Json(room_json(&room))).into_response()
            }
            Some(Err(StoreError::RoomExists(_))) => error(
                StatusCode::CONFLICT,
                "room_exists",
                format!("room {name:?} is already stored; PATCH it to change its settings"),
            ),
            Some(Err(StoreError::InvalidSettings { field, problem })) => {
                bad_request(format!("`{field}`: {problem}"))
            }
            Some(Err(err)) => storage_failed(&err),
        }
    }

    /// `GET /api/v1/rooms/{room}`: the stored settings.
    pub(crate) async fn get(&self, room: String) -> Response {
        let shown = room.clone();
        match self.store.call(move |store| store.room(&room)).await {
            None => unavailable(),
            Some(Ok(Some(room))) => axum::Json(room_json(&room)).into_response(),
            Some(Ok(None)) => no_such_room(&shown),
            Some(Err(err)) => storage_failed(&err),
        }
    }

    /// `PATCH /api/v1/rooms/{room}` with any of `max_participants` (`null`: the server's
    /// default) and `chat_history`.
    pub(crate) async fn patch(&self, room: String, body: &[u8]) -> Response {
        let fields = match object(body) {
            Ok(fields) => fields,
            Err(why) => return bad_request(why),
        };
        // Checked before the database call, so that a bad field names itself.
        if let Err(why) = apply(RoomSettings::default(), &fields, &[]) {
            return bad_request(why);
        }
        let shown = room.clone();
        let updated = self
            .store
            .call(move |store| {
                let Some(current) = store.room(&room)? else {
                    return Err(StoreError::NoSuchRoom(room));
                };
                match apply(current.settings, &fields, &[]) {
                    Ok(settings) => store.update_room(&room, settings),
                    Err(_) => unreachable_settings(),
                }
            })
            .await;
        match updated {
            None => unavailable(),
            Some(Ok(room)) => {
                self.tell_hub(&room, None).await;
                axum::Json(room_json(&room)).into_response()
            }
            Some(Err(StoreError::NoSuchRoom(_))) => no_such_room(&shown),
            Some(Err(StoreError::InvalidSettings { field, problem })) => {
                bad_request(format!("`{field}`: {problem}"))
            }
            Some(Err(err)) => storage_failed(&err),
        }
    }

    /// `DELETE /api/v1/rooms/{room}`: the settings and the chat history go; people in the room
    /// stay, in an ordinary room.
    pub(crate) async fn delete(&self, room: String) -> Response {
        let name = room.clone();
        match self.store.call(move |store| store.delete_room(&name)).await {
            None => unavailable(),
            Some(Ok(true)) => {
                let _ = self
                    .hub
                    .send(HubCommand::RoomSettings {
                        room,
                        settings: None,
                        history: None,
                    })
                    .await;
                StatusCode::NO_CONTENT.into_response()
            }
            Some(Ok(false)) => no_such_room(&room),
            Some(Err(err)) => storage_failed(&err),
        }
    }

    async fn tell_hub(&self, room: &store::Room, history: Option<Vec<signal::ChatMessage>>) {
        let _ = self
            .hub
            .send(HubCommand::RoomSettings {
                room: room.name.clone(),
                settings: Some(hub_settings(room.settings, self.default_max)),
                history,
            })
            .await;
    }
}

/// The fields were checked before: applying them again cannot fail.
fn unreachable_settings() -> Result<store::Room, StoreError> {
    Err(StoreError::InvalidSettings {
        field: "settings",
        problem: "changed while being applied".into(),
    })
}

/// The body as a JSON object, or why it is a bad request.
fn object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(err) => Err(format!("the body is not JSON: {err}")),
    }
}

/// `settings` with the given fields applied; unknown fields (besides `also`) are refused by name.
fn apply(
    mut settings: RoomSettings,
    fields: &Map<String, Value>,
    also: &[&str],
) -> Result<RoomSettings, String> {
    for (key, value) in fields {
        match key.as_str() {
            "max_participants" => {
                settings.max_participants = match value {
                    Value::Null => None,
                    value => Some(number(key, value)?),
                }
            }
            "chat_history" => settings.chat_history = number(key, value)?,
            other if also.contains(&other) => {}
            other => {
                let shown: String = other.chars().take(40).collect();
                return Err(format!(
                    "unknown field `{shown}` (settings are max_participants and chat_history)"
                ));
            }
        }
    }
    settings.validate().map_err(|err| err.to_string())?;
    Ok(settings)
}

fn number(key: &str, value: &Value) -> Result<u32, String> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("`{key}` must be a non-negative integer"))
}
