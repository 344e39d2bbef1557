//! Bodies of the SFU's fuzz targets, kept here so ordinary builds compile them (`fuzz/` only
//! wraps them). Each runs on a virtual clock with made-up addresses: no sockets.
//!
//! Panics that the SFU itself catches (str0m's, around `accept_offer` and the engine's input
//! and output) are part of its contract; a target that should not count those as crashes sets
//! a silent panic hook first, so only a panic escaping the SFU aborts.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::Receive;
use str0m::{Candidate, Rtc};

use crate::{Input, JoinRequest, Output, Protocol, Role, Sfu, SfuConfig};

const SFU_ADDR: ([u8; 4], u16) = ([10, 0, 0, 1], 7882);
const CLIENT_ADDR: ([u8; 4], u16) = ([10, 0, 0, 2], 5000);

/// Any bytes as an SDP offer (a WHIP/WHEP POST body, a member's first offer): joining with it
/// in each role, then a timeout, never panics outside what the SFU catches; a refused offer is
/// an error, and an accepted one gets an answer that parses.
pub fn offer(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let role = match selector % 3 {
        0 => Role::Member,
        1 => Role::Publisher,
        _ => Role::Viewer,
    };
    let now = Instant::now();
    let mut sfu = sfu();
    if let Ok(joined) = sfu.join(
        now,
        JoinRequest {
            room: "fuzz",
            label: "peer",
            role,
            offer: &text,
        },
    ) {
        assert!(
            SdpAnswer::from_sdp_string(&joined.answer).is_ok(),
            "the SFU's answer parses"
        );
    }
    sfu.handle_input(Input::Timeout(now + Duration::from_secs(1)));
    drain(&mut sfu);
}

/// A member joins with a real offer (audio, video and the `sfu` data channel) and connects
/// (ICE and DTLS through a str0m client on the virtual clock); then `data`, cut into datagrams
/// by 2-byte big-endian lengths, arrives from the member's address, and from a stranger for
/// odd lengths, with time passing. Nothing panics outside what the SFU catches.
pub fn datagrams(data: &[u8]) {
    let now = Instant::now();
    let Some((mut sfu, mut client, mut now)) = connected_pair(now) else {
        return;
    };
    let member = SocketAddr::from(CLIENT_ADDR);
    let stranger = SocketAddr::from(([10, 0, 0, 3], 6000));
    let mut rest = data;
    while let [a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        let (datagram, tail) = tail.split_at(len);
        rest = tail;
        let source = if len % 7 == 3 { stranger } else { member };
        let proto = if len % 5 == 4 {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        sfu.handle_input(Input::Receive {
            now,
            proto,
            source,
            destination: SocketAddr::from(SFU_ADDR),
            contents: datagram,
        });
        drain(&mut sfu);
        now += Duration::from_millis(u64::from(*a % 64));
        sfu.handle_input(Input::Timeout(now));
        drain(&mut sfu);
    }
    let _ = client.poll_output();
}

/// A member joins (without connecting) and then sends `data`, cut at NUL bytes, as control
/// messages on its data channel: answers, offers, sources, view sizes, chat and state. Nothing
/// panics outside what the SFU catches.
pub fn control(data: &[u8]) {
    let now = Instant::now();
    let mut sfu = sfu();
    let mut client = Rtc::builder().build(now);
    let Some(id) = join_member(&mut sfu, &mut client, now) else {
        return;
    };
    for (i, message) in data.split(|b| *b == 0).enumerate().take(64) {
        let at = now + Duration::from_millis(i as u64 * 10);
        sfu.control(id, message, at);
        sfu.handle_input(Input::Timeout(at));
        drain(&mut sfu);
    }
}

fn sfu() -> Sfu {
    Sfu::new(SfuConfig {
        candidates: vec![SocketAddr::from(SFU_ADDR)],
        tcp_candidates: vec![SocketAddr::from(SFU_ADDR)],
        ..SfuConfig::default()
    })
}

fn drain(sfu: &mut Sfu) -> Vec<crate::Transmit> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        match sfu.poll_output() {
            Output::Transmit(t) => out.push(t),
            Output::Event(_) => {}
            Output::Timeout(_) => return out,
        }
    }
    panic!("poll_output never returned Timeout");
}

fn join_member(sfu: &mut Sfu, client: &mut Rtc, now: Instant) -> Option<crate::ParticipantId> {
    let candidate = Candidate::host(SocketAddr::from(CLIENT_ADDR), "udp").ok()?;
    client.add_local_candidate(candidate);
    let mut change = client.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    change.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    change.add_channel("sfu".into());
    let (offer, pending) = change.apply()?;
    let joined = sfu
        .join(
            now,
            JoinRequest {
                room: "fuzz",
                label: "member",
                role: Role::Member,
                offer: &offer.to_sdp_string(),
            },
        )
        .ok()?;
    let answer = SdpAnswer::from_sdp_string(&joined.answer).ok()?;
    client.sdp_api().accept_answer(pending, answer).ok()?;
    Some(joined.id)
}

/// An SFU with one member whose client has connected, and the time reached.
fn connected_pair(start: Instant) -> Option<(Sfu, Rtc, Instant)> {
    let mut sfu = sfu();
    let mut client = Rtc::builder().build(start);
    join_member(&mut sfu, &mut client, start)?;
    let mut now = start;
    let mut to_sfu: VecDeque<Vec<u8>> = VecDeque::new();
    for _ in 0..400 {
        let mut next = now + Duration::from_millis(5);
        loop {
            match client.poll_output().ok()? {
                str0m::Output::Timeout(t) => {
                    next = next.min(t);
                    break;
                }
                str0m::Output::Transmit(t) => to_sfu.push_back(t.contents.into()),
                str0m::Output::Event(str0m::Event::ChannelOpen(..)) => {
                    return Some((sfu, client, now));
                }
                str0m::Output::Event(_) => {}
            }
        }
        while let Some(datagram) = to_sfu.pop_front() {
            sfu.handle_input(Input::Receive {
                now,
                proto: Protocol::Udp,
                source: SocketAddr::from(CLIENT_ADDR),
                destination: SocketAddr::from(SFU_ADDR),
                contents: &datagram,
            });
        }
        for t in drain(&mut sfu) {
            let receive = Receive {
                proto: str0m::net::Protocol::Udp,
                source: t.source,
                destination: t.destination,
                contents: t.contents.as_slice().try_into().ok()?,
            };
            client
                .handle_input(str0m::Input::Receive(now, receive))
                .ok()?;
        }
        now = next.max(now + Duration::from_micros(100));
        sfu.handle_input(Input::Timeout(now));
        client.handle_input(str0m::Input::Timeout(now)).ok()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bodies_run_on_sample_inputs() {
        offer(b"");
        offer(b"\x00v=0\r\nnot sdp");
        control(b"{\"type\":\"chat\",\"text\":\"hi\"}\0{\"type\":\"offer\",\"sdp\":\"v=0\"}\0junk");
        datagrams(&[0, 4, 1, 2, 3, 4, 0, 3, 0x80, 0, 0]);
    }

    #[test]
    fn the_datagram_body_reaches_a_connected_member() {
        assert!(connected_pair(Instant::now()).is_some());
    }
}
