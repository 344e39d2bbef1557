//! The HTTP side of WHIP (RFC 9725) and WHEP: POST an SDP offer to an endpoint, get the answer
//! and the session's resource URL (`Location`), DELETE the resource to end the session.
//!
//! `http://` and `https://` (TLS as [`crate::tls`] configures it).

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

/// How long one HTTP exchange may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer accepted.
const MAX_BODY: usize = 256 * 1024;

/// What the server answered to an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhipSession {
    /// The session's resource (absolute URL), for DELETE.
    pub resource: String,
    /// The SDP answer.
    pub answer: String,
}

/// The endpoint URL for `kind` (`whip` or `whep`) and `room` on the server at `server`
/// (`http://host:port`, with or without a trailing slash).
pub fn endpoint(server: &str, kind: &str, room: &str) -> String {
    let mut room_part = String::new();
    for byte in room.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            room_part.push(byte as char);
        } else {
            room_part.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{}/{kind}/{room_part}", server.trim_end_matches('/'))
}

/// POSTs `offer` to `endpoint`; expects `201 Created` with a `Location` and an SDP answer.
pub async fn post_offer(endpoint: &str, token: Option<&str>, offer: &str) -> Result<WhipSession> {
    let uri = parse(endpoint)?;
    let (status, location, body) = exchange(
        Method::POST,
        &uri,
        token,
        Some(("application/sdp", offer.to_owned())),
    )
    .await?;
    if status != StatusCode::CREATED {
        let text = String::from_utf8_lossy(&body);
        let text = text.trim();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => bail!(
                "{endpoint} refused the session ({status}){}; pass --token",
                detail(text)
            ),
            StatusCode::NOT_FOUND => bail!(
                "{endpoint} answered 404: this server has no WHIP/WHEP endpoint there{}",
                detail(text)
            ),
            _ => bail!("{endpoint} answered {status}{}", detail(text)),
        }
    }
    let location =
        location.ok_or_else(|| anyhow!("{endpoint} answered 201 without a Location header"))?;
    let answer = String::from_utf8(body).context("the SDP answer is not UTF-8")?;
    Ok(WhipSession {
        resource: resolve(&uri, &location)?,
        answer,
    })
}

/// DELETEs the session's resource, ending it on the server.
pub async fn delete(resource: &str, token: Option<&str>) -> Result<()> {
    let uri = parse(resource)?;
    let (status, _, _) = exchange(Method::DELETE, &uri, token, None).await?;
    if !status.is_success() {
        bail!("DELETE {resource} answered {status}");
    }
    Ok(())
}

/// The local address to offer as our candidate: the one that routes to the endpoint's host.
pub async fn local_ip_for(endpoint: &str) -> Result<std::net::IpAddr> {
    let uri = parse(endpoint)?;
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(default_port(&uri));
    let address = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .ok_or_else(|| anyhow!("{host} has no address"))?;
    crate::media::local_ip_towards(address.ip())
}

fn detail(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        let short: String = text.chars().take(200).collect();
        format!(": {short}")
    }
}

fn parse(url: &str) -> Result<Uri> {
    let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => bail!("{url}: expected an http:// or https:// URL"),
    }
    if uri.host().is_none() {
        bail!("{url}: no host");
    }
    Ok(uri)
}

/// Resolves a `Location` header against the request URL (RFC 9110 section 10.2.2 allows a
/// relative reference).
fn resolve(base: &Uri, location: &str) -> Result<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_owned());
    }
    let authority = base
        .authority()
        .ok_or_else(|| anyhow!("no authority in {base}"))?;
    let scheme = base.scheme_str().unwrap_or("http");
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    let path = base.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Ok(format!("{scheme}://{authority}{dir}{location}"))
}

fn default_port(uri: &Uri) -> u16 {
    if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    }
}

async fn exchange(
    method: Method,
    uri: &Uri,
    token: Option<&str>,
    body: Option<(&str, String)>,
) -> Result<(StatusCode, Option<String>, Vec<u8>)> {
    tokio::time::timeout(HTTP_TIMEOUT, exchange_inner(method, uri, token, body))
        .await
        .map_err(|_| anyhow!("{uri}: no answer within {HTTP_TIMEOUT:?}"))?
}

async fn exchange_inner(
    method: Method,
    uri: &Uri,
    token: Option<&str>,
    body: Option<(&str, String)>,
) -> Result<(StatusCode, Option<String>, Vec<u8>)> {
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(default_port(uri));
    let stream = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, driver) = if uri.scheme_str() == Some("https") {
        let stream = crate::tls::connect(stream, host).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        let driver = tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%err, "HTTP connection");
            }
        });
        (sender, driver)
    } else {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        let driver = tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%err, "HTTP connection");
            }
        });
        (sender, driver)
    };
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, authority)
        .header(
            header::USER_AGENT,
            concat!("switchboard/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let payload = match body {
        Some((content_type, text)) => {
            request = request.header(header::CONTENT_TYPE, content_type);
            Bytes::from(text)
        }
        None => Bytes::new(),
    };
    let request = request.body(Full::new(payload))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| crate::tls::explain_connect(&uri.to_string(), &format!("{err:#}")))
        .context("HTTP request")?;
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|err| anyhow!("reading the answer: {err}"))?
        .to_bytes()
        .to_vec();
    driver.abort();
    Ok((status, location, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_locations() {
        assert_eq!(
            endpoint("http://h:8080/", "whip", "my room/1"),
            "http://h:8080/whip/my%20room%2F1"
        );
        let base: Uri = "http://h:8080/whip/r".parse().expect("uri");
        assert_eq!(
            resolve(&base, "/whip/r/abc").expect("resolve"),
            "http://h:8080/whip/r/abc"
        );
        assert_eq!(
            resolve(&base, "r/abc").expect("resolve"),
            "http://h:8080/whip/r/abc"
        );
        assert_eq!(
            resolve(&base, "http://other/x").expect("resolve"),
            "http://other/x"
        );
        assert!(parse("https://h/whip/r").is_ok());
        let secure: Uri = "https://h/whip/r".parse().expect("uri");
        assert_eq!(
            resolve(&secure, "/whip/r/abc").expect("resolve"),
            "https://h/whip/r/abc"
        );
        assert!(parse("ftp://h/whip/r").is_err());
    }
}
