//! WHIP ingest (`/whip/{room}`, RFC 9725) and WHEP egress (`/whep/{room}`): one HTTP POST with
//! an SDP offer joins the room's SFU as a publisher or a viewer; the answer comes back with
//! `201 Created` and a `Location` whose `DELETE` ends the session.
//!
//! The SFU is ICE-lite with its candidates in the answer, so clients need not trickle: a
//! `PATCH` with candidates is acknowledged and not needed. A `PATCH` with new ICE credentials
//! restarts ICE (RFC 9725 §4.4.2): `200` with ours in an SDP fragment and a new `ETag`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use sfu::{ParticipantId, Role, SfuError, SfuEvent};
use signal::RoomName;

use crate::sfu_loop::SfuHandle;

/// Largest SDP offer accepted, in bytes.
const MAX_OFFER_BYTES: usize = 64 * 1024;

/// The live WHIP/WHEP sessions, by resource id.
#[derive(Clone, Default)]
pub(crate) struct Sessions {
    inner: Arc<Mutex<HashMap<String, Session>>>,
}

#[derive(Debug, Clone)]
struct Session {
    id: ParticipantId,
    room: String,
    kind: Kind,
    /// The entity tag of the session's ICE state; an ICE restart changes it.
    etag: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Whip,
    Whep,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }
}

impl Sessions {
    /// Forgets sessions whose participant left (ICE timeout, replaced...).
    pub(crate) fn forget_on(&self, event: &SfuEvent) {
        if let SfuEvent::Left { id, .. } = event
            && let Ok(mut sessions) = self.inner.lock()
        {
            sessions.retain(|_, s| s.id != *id);
        }
    }
}

#[derive(Clone)]
pub(crate) struct WhipState {
    pub(crate) sfu: SfuHandle,
    pub(crate) sessions: Sessions,
    pub(crate) counters: std::sync::Arc<crate::metrics::Counters>,
    pub(crate) limits: crate::limits::Limits,
    pub(crate) access: crate::access::Access,
}

/// The `/whip` and `/whep` routes.
pub(crate) fn routes(state: WhipState) -> Router {
    Router::new()
        .route("/whip/{room}", post(publish).options(preflight))
        .route("/whep/{room}", post(view).options(preflight))
        .route(
            "/whip/{room}/{id}",
            patch(patch_session).delete(end_session).options(preflight),
        )
        .route(
            "/whep/{room}/{id}",
            patch(patch_session).delete(end_session).options(preflight),
        )
        .layer(axum::middleware::map_response(cors))
        .with_state(state)
}

async fn publish(
    State(state): State<WhipState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = over_rate(&state, peer, &headers) {
        return refused;
    }
    start(state, Kind::Whip, room, headers, body).await
}

async fn view(
    State(state): State<WhipState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = over_rate(&state, peer, &headers) {
        return refused;
    }
    start(state, Kind::Whep, room, headers, body).await
}

/// HTTP 429 when the client's address is over `limits.whip_per_sec_per_ip`.
fn over_rate(
    state: &WhipState,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
) -> Option<Response> {
    let source = state.limits.client_ip(peer, headers);
    if state.limits.whip(source) {
        return None;
    }
    crate::metrics::Counters::bump(&state.counters.whip_rate_limited);
    let mut response = plain(
        StatusCode::TOO_MANY_REQUESTS,
        "too many WHIP/WHEP offers from your address; try again in a second",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    Some(response)
}

async fn start(
    state: WhipState,
    kind: Kind,
    room: String,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(problem) = RoomName::parse(&room) {
        return plain(
            StatusCode::BAD_REQUEST,
            &format!("bad room name: {problem}"),
        );
    }
    // WHIP needs `publish`, WHEP `subscribe` (RFC 9725 §4.5: bearer tokens).
    let grant = match kind {
        Kind::Whip => auth::Grant::Publish,
        Kind::Whep => auth::Grant::Subscribe,
    };
    if let Err(refusal) = state.access.check(&headers, Some(&room), grant) {
        return refusal.plain();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/sdp") {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be an SDP offer with Content-Type: application/sdp",
        );
    }
    if body.len() > MAX_OFFER_BYTES {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "the offer is too large");
    }
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        return plain(StatusCode::BAD_REQUEST, "the offer is not UTF-8 text");
    };
    let resource = random_id();
    let label = format!("{}-{}", kind.path(), &resource[..8]);
    let role = match kind {
        Kind::Whip => Role::Publisher,
        Kind::Whep => Role::Viewer,
    };
    match state.sfu.join(&room, &label, role, offer).await {
        Ok(joined) => {
            crate::metrics::Counters::bump(&state.counters.whip_sessions);
            if let Ok(mut sessions) = state.sessions.inner.lock() {
                sessions.insert(
                    resource.clone(),
                    Session {
                        id: joined.id,
                        room: room.clone(),
                        kind,
                        etag: format!("\"{resource}\""),
                    },
                );
            }
            let location = format!("/{}/{}/{}", kind.path(), room, resource);
            let mut response = (StatusCode::CREATED, joined.answer).into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            if let Ok(value) = HeaderValue::from_str(&location) {
                h.insert(header::LOCATION, value);
            }
            if let Ok(value) = HeaderValue::from_str(&format!("\"{resource}\"")) {
                h.insert(header::ETAG, value);
            }
            response
        }
        Err(err) => {
            crate::metrics::Counters::bump(&state.counters.whip_refused);
            let status = match err {
                SfuError::BadOffer(_) | SfuError::OfferRefused(_) => StatusCode::BAD_REQUEST,
                SfuError::RoomFull(_) | SfuError::ServerFull => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            plain(status, &err.to_string())
        }
    }
}

fn find(state: &WhipState, kind: Kind, room: &str, id: &str) -> Option<Session> {
    let sessions = state.sessions.inner.lock().ok()?;
    sessions
        .get(id)
        .filter(|s| s.room == room && s.kind == kind)
        .cloned()
}

fn kind_of(method_path: &str) -> Kind {
    if method_path.starts_with("/whep/") {
        Kind::Whep
    } else {
        Kind::Whip
    }
}

async fn end_session(
    State(state): State<WhipState>,
    Path((room, id)): Path<(String, String)>,
    uri: axum::http::Uri,
) -> Response {
    let kind = kind_of(uri.path());
    let Some(session) = find(&state, kind, &room, &id) else {
        return plain(StatusCode::NOT_FOUND, "no such session");
    };
    if let Ok(mut sessions) = state.sessions.inner.lock() {
        sessions.remove(&id);
    }
    state.sfu.leave(session.id);
    StatusCode::OK.into_response()
}

async fn patch_session(
    State(state): State<WhipState>,
    Path((room, id)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kind = kind_of(uri.path());
    let Some(session) = find(&state, kind, &room, &id) else {
        return plain(StatusCode::NOT_FOUND, "no such session");
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/trickle-ice-sdpfrag") {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "PATCH takes application/trickle-ice-sdpfrag",
        );
    }
    let fragment = match sfu::trickle::parse(&body) {
        Ok(fragment) => fragment,
        Err(err) => return plain(StatusCode::BAD_REQUEST, &err.to_string()),
    };
    // RFC 9725 §4.4.1: a PATCH for another state of the session is refused.
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    if let Some(tag) = if_match
        && tag != "*"
        && tag != session.etag
    {
        return plain(
            StatusCode::PRECONDITION_FAILED,
            "If-Match does not name this session's current state",
        );
    }
    match (fragment.ice_ufrag, fragment.ice_pwd) {
        (Some(ufrag), Some(pwd)) => return restart_ice(&state, &id, &session, ufrag, pwd).await,
        (Some(_), None) | (None, Some(_)) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "an ICE restart needs both a=ice-ufrag and a=ice-pwd",
            );
        }
        (None, None) => {}
    }
    // ICE-lite: the server learns the client's addresses from its connectivity checks, so
    // trickled candidates are not needed.
    StatusCode::NO_CONTENT.into_response()
}

/// RFC 9725 §4.4.2: the session gets new ICE credentials on both sides; the answer is an
/// SDP fragment with ours, and the session a new entity tag.
async fn restart_ice(
    state: &WhipState,
    resource: &str,
    session: &Session,
    ufrag: &str,
    pwd: &str,
) -> Response {
    let credentials = match state.sfu.restart_ice(session.id, ufrag, pwd).await {
        Ok(credentials) => credentials,
        Err(SfuError::UnknownParticipant) => {
            return plain(StatusCode::NOT_FOUND, "no such session");
        }
        Err(err) => return plain(StatusCode::BAD_REQUEST, &err.to_string()),
    };
    let etag = format!("\"{resource}-{}\"", &random_id()[..8]);
    if let Ok(mut sessions) = state.sessions.inner.lock()
        && let Some(stored) = sessions.get_mut(resource)
    {
        stored.etag = etag.clone();
    }
    let body = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
        credentials.ufrag, credentials.pwd
    );
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, value);
    }
    response
}

async fn preflight() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// CORS for players and encoders on other origins (RFC 9725 §4.1 recommends it).
async fn cors(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, PATCH, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization, If-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link"),
    );
    response
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, format!("{text}\n")).into_response()
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Unique enough for a resource name when the OS has no randomness to give.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
