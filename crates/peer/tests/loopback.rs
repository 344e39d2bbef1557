//! Two native peers on loopback: offer/answer handed over directly, one data channel.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use peer::{Connection, PeerEvent, PeerOptions};

fn loopback() -> PeerOptions {
    PeerOptions {
        loopback: true,
        ..PeerOptions::default()
    }
}

const TOTAL: usize = 8 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_native_peers_move_bytes_over_a_data_channel() {
    let mut offerer = Connection::new(&loopback()).await.unwrap();
    let mut answerer = Connection::new(&loopback()).await.unwrap();
    let offer = offerer.offer_with_channel("bytes").unwrap();
    let answer = answerer.accept_offer(&offer).unwrap();
    offerer.accept_answer(&answer).unwrap();

    let started = Instant::now();
    let sender = tokio::spawn(async move {
        let message = vec![7u8; 16 * 1024];
        let mut channel = None;
        let mut sent = 0usize;
        loop {
            if let Some(id) = channel {
                while sent < TOTAL && offerer.write(id, &message).unwrap() {
                    sent += message.len();
                }
            }
            match offerer.next_event().await {
                PeerEvent::ChannelOpen(id, label) => {
                    assert_eq!(label, "bytes");
                    offerer.set_buffered_low_threshold(id, 64 * 1024);
                    channel = Some(id);
                }
                PeerEvent::Closed(reason) => return reason,
                _ => {}
            }
        }
    });
    let received = tokio::time::timeout(Duration::from_secs(60), async {
        let mut received = 0usize;
        loop {
            match answerer.next_event().await {
                PeerEvent::ChannelData(_, data) => {
                    received += data.len();
                    if received >= TOTAL {
                        return received;
                    }
                }
                PeerEvent::Closed(reason) => panic!("answerer closed: {reason}"),
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    sender.abort();
    assert_eq!(received, TOTAL);
    eprintln!("{:.1} MB/s", TOTAL as f64 / secs / 1e6);
}
