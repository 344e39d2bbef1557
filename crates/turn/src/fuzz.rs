//! The body of the TURN client's fuzz target, kept here so ordinary builds compile it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use stun::{AttributeType, Class, ErrorCode, Message, MessageType, MessageWriter, Method};

use crate::client::{Client, ClientCredentials};

const USER: &str = "user";
const PASSWORD: &str = "pass";
const REALM: &str = "fuzz";

/// Server responses chosen by the fuzzer, fed to a client that allocates, creates permissions,
/// binds channels and sends: `data` is a list of records `[op, len, payload...]`. Ops answer the
/// client's latest request with raw bytes (transaction id patched in), a 401 challenge, a signed
/// success or error response with fuzzer-chosen attributes, or move time, or call the API.
/// Nothing panics, and the client keeps its invariants (a relayed address only when allocated).
pub fn client_responses(data: &[u8]) {
    let server = SocketAddr::from(([192, 0, 2, 1], 3478));
    let mut now = Instant::now();
    let mut client = Client::new(server, ClientCredentials::new(USER, PASSWORD));
    let _ = client.allocate(now);
    let key = stun::long_term_key_md5(USER, REALM, PASSWORD);
    let mut last: Option<(MessageType, stun::TransactionId)> = None;
    let mut rest = data;
    let mut out = Vec::new();
    while let [op, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        for transmit in std::iter::from_fn(|| client.poll_transmit()) {
            if let Ok(message) = Message::parse(&transmit.contents) {
                last = Some((message.message_type(), message.transaction_id()));
            }
        }
        let (method, tid) = match last {
            Some((kind, tid)) => (kind.method, tid),
            None => (Method::ALLOCATE, stun::TransactionId([0; 12])),
        };
        let mut buf = Vec::new();
        match op % 6 {
            0 => {
                buf.extend_from_slice(payload);
                if buf.len() >= 20 {
                    buf[8..20].copy_from_slice(&tid.0);
                }
            }
            1 => {
                let mut w = MessageWriter::new(
                    &mut buf,
                    MessageType::new(method, Class::ErrorResponse),
                    tid,
                );
                w.error_code(ErrorCode {
                    code: 401,
                    reason: "Unauthorized",
                });
                w.attribute(AttributeType::REALM, REALM.as_bytes());
                w.attribute(AttributeType::NONCE, payload);
                w.finish();
            }
            2 | 3 => {
                let class = if op % 6 == 2 {
                    Class::SuccessResponse
                } else {
                    Class::ErrorResponse
                };
                let mut w = MessageWriter::new(&mut buf, MessageType::new(method, class), tid);
                let mut attributes = payload;
                if class == Class::ErrorResponse {
                    let code = attributes
                        .get(..2)
                        .map_or(400, |c| u16::from_be_bytes([c[0], c[1]]) % 700);
                    w.error_code(ErrorCode {
                        code,
                        reason: "fuzz",
                    });
                    attributes = attributes.get(2..).unwrap_or_default();
                }
                // Attributes as [type hi, type lo, length, value...].
                while let [hi, lo, n, value @ ..] = attributes {
                    let n = usize::from(*n).min(value.len());
                    w.attribute(AttributeType(u16::from_be_bytes([*hi, *lo])), &value[..n]);
                    attributes = &value[n..];
                }
                if op & 0x40 == 0 {
                    w.message_integrity(&key);
                }
                if op & 0x80 == 0 {
                    w.fingerprint();
                }
                w.finish();
            }
            4 => {
                let step = payload.first().map_or(1, |b| u64::from(*b));
                now += Duration::from_millis(step * 100);
                client.handle_timeout(now);
            }
            _ => {
                let b = |i: usize| payload.get(i).copied().unwrap_or(0);
                let peer =
                    SocketAddr::from(([198, 51, 100, b(1)], u16::from_be_bytes([b(2), b(3)])));
                let _ = match b(0) % 5 {
                    0 => client.create_permission(peer.ip(), now).map(drop),
                    1 => client.bind_channel(peer, now).map(drop),
                    2 => {
                        out.clear();
                        client.send_to(peer, payload, &mut out)
                    }
                    3 => client.deallocate(now),
                    _ => client.allocate(now),
                };
            }
        }
        if !buf.is_empty() {
            let from = if op & 0x20 == 0 {
                server
            } else {
                SocketAddr::from((IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), 3478))
            };
            let _ = client.handle_input(from, &buf, now);
        }
        while client.poll_event().is_some() {}
        if client.relayed().is_some() {
            assert!(
                client.mapped().is_some(),
                "an allocation has both addresses"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_body_runs_on_sample_inputs() {
        super::client_responses(&[]);
        super::client_responses(&[1, 4, 1, 2, 3, 4, 2, 0, 0, 0, 5, 3, 1, 1, 1]);
    }
}
