//! TLS for the HTTP listener (HTTPS and WSS) and the certificate shared with TURN over TLS:
//! loading a PEM chain and key, generating a self-signed certificate, the fingerprints printed at
//! start, and an accept loop that handshakes off the accepting task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::debug;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more wait in the kernel's accept queue.
const MAX_HANDSHAKES: usize = 1024;

/// A certificate and key generated at start (`--tls-self-signed`), kept in memory only.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedCert {
    /// The certificate, DER.
    pub cert: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for GeneratedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCert").finish_non_exhaustive()
    }
}

/// What an operator or a client needs to recognise the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// SHA-256 of the end-entity certificate (DER), lowercase hex: what
    /// `--server-cert-sha256` takes.
    pub cert_sha256: String,
    /// base64 of the SHA-256 of its SubjectPublicKeyInfo: what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    pub spki_sha256_base64: String,
    /// The certificate was generated at start.
    pub self_signed: bool,
}

/// Generates a self-signed certificate for `hosts` (DNS names or IP addresses).
pub fn self_signed(hosts: &[String]) -> Result<GeneratedCert, String> {
    let certified =
        rcgen::generate_simple_self_signed(hosts.to_vec()).map_err(|e| e.to_string())?;
    Ok(GeneratedCert {
        cert: certified.cert.der().to_vec(),
        key: certified.signing_key.serialize_der(),
    })
}

/// The names a self-signed certificate for a server listening on `http` covers: localhost,
/// the loopback addresses, the listening address when it is a concrete one, and `extra`.
pub fn self_signed_hosts(http: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if !http.ip().is_unspecified() {
        hosts.push(http.ip().to_string());
    }
    for host in extra {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if !host.is_empty() {
            hosts.push(host.to_owned());
        }
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The fingerprints of `cert`.
pub fn identity(cert: &CertificateDer<'_>, self_signed: bool) -> Result<TlsIdentity, String> {
    use base64::Engine as _;
    let parsed = rustls::server::ParsedCertificate::try_from(cert)
        .map_err(|e| format!("bad certificate: {e}"))?;
    let spki = parsed.subject_public_key_info();
    Ok(TlsIdentity {
        cert_sha256: hex(&Sha256::digest(cert.as_ref())),
        spki_sha256_base64: base64::engine::general_purpose::STANDARD
            .encode(Sha256::digest(spki.as_ref())),
        self_signed,
    })
}

/// A rustls server configuration with safe defaults: TLS 1.2 and 1.3, no client
/// authentication; ALPN `http/1.1` (the WebSocket upgrade needs HTTP/1.1).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The HTTP listener with TLS: a task accepts TCP connections and spawns a handshake for each,
/// so a slow or silent client cannot hold up the others; finished handshakes come out of
/// [`axum::serve::Listener::accept`].
pub(crate) struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, ready) = mpsc::channel(64);
        let accept_task = tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(TlsListener {
            local_addr,
            ready,
            accept_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait rather than spin.
                debug!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if ready.is_closed() {
            return;
        }
        // Signaling frames are small and latency-bound (see `Server::run`).
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(err)) => debug!(%peer, %err, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task ended (it never does while the listener lives): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_has_fingerprints() {
        let hosts = self_signed_hosts("0.0.0.0:8443".parse().unwrap(), &["[2001:db8::1]".into()]);
        assert!(hosts.contains(&"localhost".to_owned()));
        assert!(hosts.contains(&"2001:db8::1".to_owned()));
        assert!(!hosts.contains(&"0.0.0.0".to_owned()));
        let generated = self_signed(&hosts).unwrap();
        let id = identity(&CertificateDer::from(generated.cert.clone()), true).unwrap();
        assert_eq!(id.cert_sha256.len(), 64);
        assert_eq!(id.spki_sha256_base64.len(), 44);
        let key = PrivateKeyDer::try_from(generated.key).unwrap();
        assert!(server_config(vec![CertificateDer::from(generated.cert)], key).is_ok());
    }
}
