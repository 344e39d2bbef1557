//! TLS for the native client's `https://` and `wss://` connections (signaling, WHIP/WHEP).
//!
//! By default the server's certificate is verified against the Mozilla root store (webpki
//! roots) and the host name. [`set_server_trust`] can instead pin the SHA-256 of the server's
//! certificate, for a server with a self-signed certificate (`serve --tls-self-signed` prints
//! it): then only that exact certificate is accepted, and its signature over the handshake is
//! still checked. Nothing here skips verification.
//!
//! The choice is process-wide: a command line sets it once at start, before connecting.

use std::sync::{Arc, OnceLock, RwLock};

use anyhow::{Context, Result, anyhow, bail};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

/// How the client decides to trust a server's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ServerTrust {
    /// A certificate chaining to a Mozilla root for the server's host name.
    #[default]
    WebPki,
    /// Exactly the certificate whose DER has this SHA-256 (any name, any issuer, any dates).
    PinnedSha256([u8; 32]),
}

impl ServerTrust {
    /// Parses a `--server-cert-sha256` value: 64 hex digits, colons allowed (`AB:CD:...`).
    pub fn pinned_from_hex(text: &str) -> Result<ServerTrust> {
        let digits: String = text.chars().filter(|c| *c != ':').collect();
        if digits.len() != 64 {
            bail!(
                "a SHA-256 fingerprint is 64 hex digits (got {})",
                digits.len()
            );
        }
        let mut pin = [0u8; 32];
        for (i, byte) in pin.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
                .map_err(|_| anyhow!("{text:?} is not hexadecimal"))?;
        }
        Ok(ServerTrust::PinnedSha256(pin))
    }
}

fn trust() -> &'static RwLock<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<RwLock<Arc<rustls::ClientConfig>>> = OnceLock::new();
    CONFIG.get_or_init(|| RwLock::new(Arc::new(client_config(&ServerTrust::WebPki))))
}

/// Sets how this process's `https://`/`wss://` connections trust servers.
pub fn set_server_trust(trust_in: ServerTrust) {
    let config = Arc::new(client_config(&trust_in));
    match trust().write() {
        Ok(mut guard) => *guard = config,
        Err(poisoned) => *poisoned.into_inner() = config,
    }
}

/// The client configuration in force.
pub fn current_client_config() -> Arc<rustls::ClientConfig> {
    match trust().read() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A rustls client configuration for `trust`: TLS 1.2 and 1.3, no client certificate.
pub fn client_config(trust: &ServerTrust) -> rustls::ClientConfig {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| {
            // The provider's defaults always include TLS 1.2 and 1.3.
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(rustls::DEFAULT_VERSIONS)
                .unwrap_or_else(|e| panic!("aws-lc-rs supports the default versions: {e}"))
        });
    match trust {
        ServerTrust::WebPki => {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        ServerTrust::PinnedSha256(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin: *pin,
                provider,
            }))
            .with_no_client_auth(),
    }
}

/// Accepts exactly the pinned certificate, and checks its handshake signatures.
#[derive(Debug)]
struct PinnedVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate has SHA-256 {}, not the pinned {}",
                hex(&got),
                hex(&self.pin)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Connects over TLS to `host:port` with the configuration in force (ALPN `http/1.1`).
pub(crate) async fn connect(
    tcp: TcpStream,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut config = (*current_client_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host:?} is not a valid server name"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|err| explain(err, host))
}

/// A failed connection to `url` with a hint at the usual cause of a TLS mismatch.
pub(crate) fn explain_connect(url: &str, text: &str) -> anyhow::Error {
    let plain = url.starts_with("http://") || url.starts_with("ws://");
    if plain
        && (text.contains("reset")
            || text.contains("Handshake not finished")
            || text.contains("HTTP/0.9")
            || text.contains("invalid HTTP version")
            || text.contains("incomplete message")
            || text.contains("closed"))
    {
        anyhow!("{text}; is the server https:// (TLS)? Use an https:// URL")
    } else {
        explain_text(text, url)
    }
}

/// A TLS failure with a hint at its usual cause.
pub(crate) fn explain(err: std::io::Error, host: &str) -> anyhow::Error {
    explain_text(&err.to_string(), host)
}

fn explain_text(text: &str, host: &str) -> anyhow::Error {
    if text.contains("not the pinned") {
        anyhow!("TLS with {host}: {text} (check --server-cert-sha256)")
    } else if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        anyhow!(
            "TLS with {host}: {text}; for a self-signed server give the SHA-256 it prints with \
             --server-cert-sha256"
        )
    } else if text.contains("InvalidContentType")
        || text.contains("corrupt message")
        || text.contains("received corrupt")
    {
        anyhow!("TLS with {host}: {text}; is the server plain http://?")
    } else {
        anyhow!("TLS with {host}: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_with_or_without_colons() {
        let hex64 = "4e08f0dfb1cc1750f06cfd6227798c8dd669b1fe6e2c5c317ff872248fde78e0";
        let pinned = ServerTrust::pinned_from_hex(hex64).unwrap();
        let with_colons: String = hex64
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(ServerTrust::pinned_from_hex(&with_colons).unwrap(), pinned);
        assert!(ServerTrust::pinned_from_hex("abcd").is_err());
        assert!(ServerTrust::pinned_from_hex(&"zz".repeat(32)).is_err());
        let _ = client_config(&pinned);
        let _ = client_config(&ServerTrust::WebPki);
    }
}
