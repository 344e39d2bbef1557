//! The browser app from `web/`, embedded into the binary at build time.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "../../web"]
#[exclude = "*.md"]
struct Assets;

/// The app's entry page, for `/` and `/r/{room}`.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    asset("index.html", &headers)
}

/// The page that sends files, for `/send`.
pub(crate) async fn send_page(headers: HeaderMap) -> Response {
    asset("send.html", &headers)
}

/// The page that receives files, for `/recv/{code}`.
pub(crate) async fn recv_page(headers: HeaderMap) -> Response {
    asset("recv.html", &headers)
}

/// The live-stream viewer, for `/watch/{room}`.
pub(crate) async fn watch_page(headers: HeaderMap) -> Response {
    asset("watch.html", &headers)
}

/// Any other file of the app, by path.
pub(crate) async fn file(uri: Uri, headers: HeaderMap) -> Response {
    asset(uri.path().trim_start_matches('/'), &headers)
}

fn asset(path: &str, request: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..12]));
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mime = mime_guess::from_path(path).first_or_octet_stream();
        let mut response = Body::from(file.data.into_owned()).into_response();
        if let Ok(value) = HeaderValue::from_str(mime.as_ref()) {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
