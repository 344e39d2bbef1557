//! `switchboard stream` and `switchboard loadtest` against a real `switchboard serve`: files
//! published through WHIP reach a WHEP viewer through the SFU byte for byte, a load test
//! through the SFU reports its subscribers connected and receiving, and a meeting of native
//! room members has each member receive everyone else's audio and video, never its own.
#![allow(clippy::unwrap_used)]

mod common;

use common::{BIN, Proc};

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use peer::media::{MediaEvent, MediaKind, MediaSession, Role};

/// `switchboard serve` with every port chosen by the system; returns it with its base URL.
fn serve() -> (Proc, String) {
    let server = Proc::spawn(&[
        "serve",
        "--data-dir",
        "none",
        "--http",
        "127.0.0.1:0",
        "--turn",
        "127.0.0.1:0",
        "--media",
        "127.0.0.1:0",
    ]);
    server.wait_for_output("listening on http://");
    let output = server.output();
    let url = output
        .lines()
        .find_map(|l| l.split("listening on ").nth(1))
        .unwrap()
        .trim()
        .to_owned();
    (server, url)
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../media-file/tests/data")
        .join(name)
}

/// The VP8 frames of the fixture, as the file holds them.
fn file_frames() -> Vec<Vec<u8>> {
    let mut reader = media_file::Ivf::new();
    reader
        .push(&std::fs::read(fixture("vp8.ivf")).unwrap())
        .unwrap();
    reader.finish();
    std::iter::from_fn(|| reader.next_frame().unwrap().map(|f| f.data)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_to_a_whep_viewer_through_the_sfu() {
    let (_server, url) = serve();
    let mut stream = Proc::spawn(&[
        "stream",
        "--loop",
        "--quiet",
        "--room",
        "stage",
        "--server",
        &url,
        fixture("vp8.ivf").to_str().unwrap(),
        fixture("opus.ogg").to_str().unwrap(),
    ]);
    // The viewer comes once the publisher is in.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let endpoint = peer::whip::endpoint(&url, "whep", "stage");
    let local = peer::whip::local_ip_for(&endpoint).await.unwrap();
    let (mut viewer, offer) = MediaSession::offer(Role::Play, local).unwrap();
    let session = peer::whip::post_offer(&endpoint, None, &offer)
        .await
        .unwrap();
    viewer.accept_answer(&session.answer).unwrap();
    let expected = file_frames();
    let (mut video, mut audio, mut matching, mut keyframe_seen) = (0, 0, 0, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while (matching < 20 || audio < 50) && Instant::now() < deadline {
        match viewer.next_event(Some(deadline)).await {
            MediaEvent::Frame(frame) if frame.kind == MediaKind::Video => {
                video += 1;
                keyframe_seen |= frame.data.first().is_some_and(|b| b & 1 == 0);
                // Forwarded, not transcoded: each frame is one of the file's, byte for byte.
                if keyframe_seen && expected.contains(&frame.data) {
                    matching += 1;
                }
            }
            MediaEvent::Frame(_) => audio += 1,
            MediaEvent::Closed(reason) => panic!("viewer closed: {reason}"),
            _ => {}
        }
    }
    assert!(
        matching >= 20 && audio >= 50,
        "video {video} ({matching} matching the file), audio {audio}; stream output:\n{}",
        stream.output()
    );
    viewer.close();
    peer::whip::delete(&session.resource, None).await.unwrap();
    let status = stream.interrupt();
    assert!(status.success(), "{status:?}\n{}", stream.output());
    assert!(!stream.output().contains("warning"), "{}", stream.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_through_the_sfu() {
    let (_server, url) = serve();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "loadtest",
                "--room",
                "bench",
                "--server",
                &url,
                "--publishers",
                "1",
                "--subscribers",
                "4",
                "--duration",
                "5s",
                "--video-bitrate",
                "300k",
                "--json",
            ])
            .env("SWITCHBOARD_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["publishers"]["connected"], 1, "{summary:#}");
    assert_eq!(summary["subscribers"]["connected"], 4, "{summary:#}");
    assert_eq!(summary["errors"], serde_json::json!({}), "{summary:#}");
    assert!(
        summary["received"]["video_frames"].as_u64().unwrap() >= 4 * 30,
        "{summary:#}"
    );
    assert!(
        summary["received"]["audio_packets"].as_u64().unwrap() >= 4 * 50,
        "{summary:#}"
    );
    assert!(
        summary["latency"]["all"]["p50_ms"].as_f64().unwrap() < 2000.0,
        "{summary:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_meeting_through_the_sfu() {
    let (_server, url) = serve();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "loadtest",
                "--room",
                "meet",
                "--server",
                &url,
                "--members",
                "3",
                "--duration",
                "4s",
                "--video-bitrate",
                "200k",
                "--json",
            ])
            .env("SWITCHBOARD_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let members = &summary["members"];
    // --members alone: no WHIP publishers or WHEP subscribers.
    assert_eq!(summary["publishers"]["requested"], 0, "{summary:#}");
    assert_eq!(summary["subscribers"]["requested"], 0, "{summary:#}");
    assert_eq!(members["requested"], 3, "{summary:#}");
    assert_eq!(members["connected"], 3, "{summary:#}");
    assert_eq!(summary["errors"], serde_json::json!({}), "{summary:#}");
    // Every member heard exactly the two others, audio and video, and never itself.
    for kind in ["audio_from", "video_from"] {
        assert_eq!(members[kind]["min"], 2, "{kind}: {summary:#}");
        assert_eq!(members[kind]["max"], 2, "{kind}: {summary:#}");
    }
    assert_eq!(members["streams_expected"], 3 * 2 * 2, "{summary:#}");
    assert_eq!(members["streams_received"], 3 * 2 * 2, "{summary:#}");
    assert_eq!(members["own_frames"], 0, "{summary:#}");
    assert_eq!(summary["received"]["foreign_frames"], 0, "{summary:#}");
    // Renegotiated over the data channel: each member answered at least one server offer.
    assert!(
        members["offers_answered"].as_u64().unwrap() >= 3,
        "{summary:#}"
    );
    // Media flowed for most of the run: in 4 s each of the 6 (receiver, sender) pairs carries
    // 50 audio packets and 30 video frames a second.
    assert!(
        members["received"]["audio_packets"].as_u64().unwrap() >= 6 * 50,
        "{summary:#}"
    );
    assert!(
        members["received"]["video_frames"].as_u64().unwrap() >= 6 * 30,
        "{summary:#}"
    );
    assert!(
        summary["latency"]["all"]["p50_ms"].as_f64().unwrap() < 2000.0,
        "{summary:#}"
    );
}
