//! TURN over TLS (`turns:`): a real TLS session to `switchboard turn`, a STUN Binding and an
//! authenticated Allocate through it; and a bad certificate path is refused naming the field.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use stun::{AttributeType, Class, Message, MessageType, MessageWriter, Method, TransactionId};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `switchboard turn` with TLS and returns the TLS address.
fn start(dir: &std::path::Path) -> (Server, SocketAddr) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), key.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.signing_key.serialize_pem()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["turn", "--turn", "127.0.0.1:0", "--turn-tls", "127.0.0.1:0"])
        .args([
            "--turn-user",
            "alice:wonderland",
            "--turn-realm",
            "tls.test",
        ])
        .arg("--tls-cert")
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("key.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let server = Server(child);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.ends_with("(tls)") {
            let addr = line.split_whitespace().nth(4).unwrap().parse().unwrap();
            return (server, addr);
        }
    }
    panic!("the server never reported its TLS listener");
}

/// Accepts any certificate: the test checks the TURN server, not a PKI.
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn read_message(tls: &mut impl Read) -> Vec<u8> {
    let mut header = [0u8; 20];
    tls.read_exact(&mut header).unwrap();
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut message = header.to_vec();
    message.resize(20 + len, 0);
    tls.read_exact(&mut message[20..]).unwrap();
    message
}

fn request(method: Method, tid: u8, sign: Option<(&str, &str)>) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(method, Class::Request),
        TransactionId([tid; 12]),
    );
    if method == Method::ALLOCATE {
        w.first_byte(AttributeType::REQUESTED_TRANSPORT, 17);
    }
    if let Some((realm, nonce)) = sign {
        w.attribute(AttributeType::USERNAME, b"alice")
            .attribute(AttributeType::REALM, realm.as_bytes())
            .attribute(AttributeType::NONCE, nonce.as_bytes())
            .message_integrity(&stun::long_term_key_md5("alice", realm, "wonderland"));
    }
    w.finish();
    buf
}

#[test]
fn binding_and_allocate_over_tls() {
    let dir = std::env::temp_dir().join(format!("sb-turn-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_server, addr) = start(&dir);
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);

    tls.write_all(&request(Method::BINDING, 1, None)).unwrap();
    let response = read_message(&mut tls);
    let m = Message::parse(&response).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse);
    assert_eq!(
        m.xor_address(AttributeType::XOR_MAPPED_ADDRESS)
            .unwrap()
            .ip()
            .to_string(),
        "127.0.0.1"
    );

    tls.write_all(&request(Method::ALLOCATE, 2, None)).unwrap();
    let challenge = read_message(&mut tls);
    let m = Message::parse(&challenge).unwrap();
    assert_eq!(m.error_code().unwrap().code, 401);
    let realm = m.text(AttributeType::REALM).unwrap().to_owned();
    let nonce = m.text(AttributeType::NONCE).unwrap().to_owned();
    tls.write_all(&request(Method::ALLOCATE, 3, Some((&realm, &nonce))))
        .unwrap();
    let response = read_message(&mut tls);
    let m = Message::parse(&response).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse, "{:?}", m.error_code());
    assert!(m.xor_address(AttributeType::XOR_RELAYED_ADDRESS).is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_key_is_an_error_naming_the_field() {
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["turn", "--turn", "127.0.0.1:0", "--turn-user", "a:b"])
        .args(["--tls-cert", "/nonexistent/cert.pem"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tls.key"), "{stderr}");
}
