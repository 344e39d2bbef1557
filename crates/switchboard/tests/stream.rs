//! `switchboard stream` and `switchboard loadtest` over real sockets against a small WHIP/WHEP
//! relay built in this test: an HTTP endpoint (axum) and an ICE-lite str0m answerer per
//! session, forwarding every frame a WHIP session receives to every WHEP session.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::broadcast;

/// A frame as the relay saw it.
#[derive(Debug, Clone)]
struct Relayed {
    kind: MediaKind,
    codec: Codec,
    rtp_time: u64,
    data: Arc<[u8]>,
}

#[derive(Default)]
struct Log {
    /// Frames received from publishers, by kind.
    received: Vec<Relayed>,
    deleted: Vec<String>,
    authorization: Vec<Option<String>>,
}

#[derive(Clone)]
struct Relay {
    log: Arc<Mutex<Log>>,
    frames: broadcast::Sender<Relayed>,
    next_id: Arc<Mutex<u64>>,
}

impl Relay {
    fn new() -> Relay {
        Relay {
            log: Arc::default(),
            frames: broadcast::channel(1024).0,
            next_id: Arc::default(),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().expect("log lock")
    }
}

async fn start_relay() -> (String, Relay) {
    let relay = Relay::new();
    let app = Router::new()
        .route("/whip/{room}", post(whip))
        .route("/whep/{room}", post(whep))
        .route("/{kind}/{room}/{id}", delete(end))
        .with_state(relay.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), relay)
}

async fn whip(
    State(relay): State<Relay>,
    Path(room): Path<String>,
    headers: HeaderMap,
    offer: String,
) -> Response {
    answer(relay, "whip", room, headers, offer, true).await
}

async fn whep(
    State(relay): State<Relay>,
    Path(room): Path<String>,
    headers: HeaderMap,
    offer: String,
) -> Response {
    answer(relay, "whep", room, headers, offer, false).await
}

async fn end(
    State(relay): State<Relay>,
    Path((kind, room, id)): Path<(String, String, String)>,
) -> StatusCode {
    relay.log().deleted.push(format!("/{kind}/{room}/{id}"));
    StatusCode::OK
}

async fn answer(
    relay: Relay,
    kind: &str,
    room: String,
    headers: HeaderMap,
    offer: String,
    publish: bool,
) -> Response {
    relay.log().authorization.push(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    );
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some("application/sdp")
    {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    let Ok(offer) = SdpOffer::from_sdp_string(&offer) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut rtc = RtcConfig::new().set_ice_lite(true).build(Instant::now());
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    let local = socket.local_addr().expect("address");
    rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
    let Ok(answer) = rtc.sdp_api().accept_offer(offer) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let frames = relay.frames.subscribe();
    tokio::spawn(drive(rtc, socket, relay.clone(), publish, frames));
    let id = {
        let mut next = relay.next_id.lock().expect("id lock");
        *next += 1;
        *next
    };
    (
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                format!("/{kind}/{}/{id}", room.replace(' ', "%20")),
            ),
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
        ],
        answer.to_sdp_string(),
    )
        .into_response()
}

/// Runs one session of the relay until it is idle for 5 s.
async fn drive(
    mut rtc: Rtc,
    socket: UdpSocket,
    relay: Relay,
    publish: bool,
    mut frames: broadcast::Receiver<Relayed>,
) {
    let local = socket.local_addr().expect("address");
    let mut buf = vec![0u8; 2048];
    let mut mids: HashMap<MediaKind, Mid> = HashMap::new();
    let mut connected = false;
    loop {
        let timeout = match rtc.poll_output() {
            Ok(Output::Timeout(at)) => at,
            Ok(Output::Transmit(t)) => {
                let _ = socket.send_to(&t.contents, t.destination).await;
                continue;
            }
            Ok(Output::Event(event)) => {
                match event {
                    Event::Connected => connected = true,
                    Event::MediaAdded(added) => {
                        mids.insert(added.kind, added.mid);
                    }
                    Event::MediaData(data) if publish => {
                        let kind = mids
                            .iter()
                            .find(|(_, mid)| **mid == data.mid)
                            .map(|(kind, _)| *kind)
                            .unwrap_or(MediaKind::Video);
                        let frame = Relayed {
                            kind,
                            codec: data.params.spec().codec,
                            rtp_time: data.time.numer(),
                            data: data.data,
                        };
                        relay.log().received.push(frame.clone());
                        let _ = relay.frames.send(frame);
                    }
                    _ => {}
                }
                continue;
            }
            Err(_) => return,
        };
        let wait = timeout.saturating_duration_since(Instant::now());
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = received else { return };
                let Ok(contents) = buf[..n].try_into() else { continue };
                let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents });
                if rtc.handle_input(input).is_err() { return; }
            }
            frame = frames.recv(), if !publish && connected => {
                let Ok(frame) = frame else { continue };
                let Some(&mid) = mids.get(&frame.kind) else { continue };
                let Some(writer) = rtc.writer(mid) else { continue };
                let Some(pt) = writer.payload_params().find(|p| p.spec().codec == frame.codec).map(|p| p.pt()) else { continue };
                let frequency = if frame.kind == MediaKind::Audio { str0m::media::Frequency::FORTY_EIGHT_KHZ } else { str0m::media::Frequency::NINETY_KHZ };
                let _ = writer.write(pt, Instant::now(), str0m::media::MediaTime::new(frame.rtp_time, frequency), frame.data.to_vec());
            }
            _ = tokio::time::sleep(wait) => {
                if rtc.handle_input(Input::Timeout(Instant::now())).is_err() { return; }
            }
            _ = tokio::time::sleep(Duration::from_secs(5)) => return,
        }
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../media-file/tests/data")
        .join(name)
}

fn switchboard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
}

/// Every frame of the files arrives, bytes intact, in real time, and the session is DELETEd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_vp8_and_opus_to_a_whip_endpoint() {
    let (server, relay) = start_relay().await;
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        switchboard()
            .args([
                "stream",
                "--room",
                "demo room",
                "--token",
                "s3cret",
                "--server",
                &server,
            ])
            .arg(fixture("vp8.ivf"))
            .arg(fixture("opus.ogg"))
            .output()
            .expect("run switchboard stream")
    })
    .await
    .expect("join");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stream failed: {stderr}");
    assert!(stderr.contains("streamed"), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    // One second of media, paced: not much faster, not much slower.
    assert!(elapsed >= Duration::from_millis(950), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
    let log = relay.log();
    let video: Vec<&Relayed> = log
        .received
        .iter()
        .filter(|f| f.kind == MediaKind::Video)
        .collect();
    let audio: Vec<&Relayed> = log
        .received
        .iter()
        .filter(|f| f.kind == MediaKind::Audio)
        .collect();
    assert_eq!(video.len(), 15, "every VP8 frame");
    assert_eq!(audio.len(), 51, "every Opus packet");
    assert!(video.iter().all(|f| f.codec == Codec::Vp8));
    assert!(audio.iter().all(|f| f.codec == Codec::Opus));
    // The bytes are the file's, frame by frame.
    let mut reader = media_file::Ivf::new();
    reader
        .push(&std::fs::read(fixture("vp8.ivf")).expect("fixture"))
        .expect("push");
    reader.finish();
    for (i, sent) in video.iter().enumerate() {
        let frame = reader.next_frame().expect("parse").expect("frame");
        assert_eq!(&*sent.data, &frame.data[..], "frame {i}");
    }
    // RTP time steps as the file's timestamps do (90 kHz / 15 fps = 6000).
    assert_eq!(video[1].rtp_time.wrapping_sub(video[0].rtp_time), 6000);
    // (axum decodes the path: the client sent `demo%20room`.)
    assert_eq!(log.deleted, ["/whip/demo room/1"]);
    assert_eq!(log.authorization, [Some("Bearer s3cret".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_h264_in_a_loop() {
    let (server, relay) = start_relay().await;
    let mut child = switchboard()
        .args([
            "stream", "--quiet", "--loop", "--fps", "30", "--room", "r", "--server", &server,
        ])
        .arg(fixture("baseline.h264"))
        .spawn()
        .expect("spawn");
    // 15 frames at 30 fps is half a second: after 1.6 s the file has played three times.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // SIGINT, as Ctrl-C would: the command ends the session with a DELETE.
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    let status = tokio::task::spawn_blocking(move || child.wait().expect("wait"))
        .await
        .expect("join");
    assert!(status.success(), "{status:?}");
    let log = relay.log();
    let video: Vec<&Relayed> = log
        .received
        .iter()
        .filter(|f| f.kind == MediaKind::Video)
        .collect();
    assert!(video.len() >= 35, "looped: {} frames", video.len());
    assert!(video.iter().all(|f| f.codec == Codec::H264));
    // RTP time keeps rising across the loop.
    for pair in video.windows(2) {
        let step = pair[1].rtp_time.wrapping_sub(pair[0].rtp_time);
        assert_eq!(step, 3000, "30 fps steps, also across the restart");
    }
    // The key frame at the start of each pass starts with the parameter sets.
    assert_eq!(video[15].data[4] & 0x1f, 7, "SPS again on the second pass");
    assert_eq!(log.deleted, ["/whip/r/1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_refuses_bad_files_clearly() {
    let dir = std::env::temp_dir().join(format!("stream-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let whole = std::fs::read(fixture("vp8.ivf")).expect("fixture");
    // Cut inside the first frame: refused before any session is set up. Cut later: the
    // session is set up, the error comes while playing, and the session is still ended.
    for (cut, sessions) in [(1000, 0), (5000, 1)] {
        let path = dir.join("cut.ivf");
        std::fs::write(&path, &whole[..cut]).expect("write");
        let (server, relay) = start_relay().await;
        let output = tokio::task::spawn_blocking(move || {
            switchboard()
                .args(["stream", "--room", "r", "--server", &server])
                .arg(&path)
                .output()
                .expect("run")
        })
        .await
        .expect("join");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(
            stderr.contains("cut.ivf: the file is cut short at byte"),
            "{stderr}"
        );
        assert_eq!(relay.log().authorization.len(), sessions, "{stderr}");
        assert_eq!(relay.log().deleted.len(), sessions, "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Publishers and subscribers through the relay: every subscriber receives, latency is
/// measured, the JSON summary says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_through_a_relay() {
    let (server, _relay) = start_relay().await;
    let output = tokio::task::spawn_blocking(move || {
        switchboard()
            .args([
                "loadtest",
                "--room",
                "load",
                "--server",
                &server,
                "--publishers",
                "1",
                "--subscribers",
                "5",
                "--duration",
                "3s",
                "--video-bitrate",
                "300k",
                "--json",
            ])
            .output()
            .expect("run loadtest")
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON summary");
    assert_eq!(summary["subscribers"]["connected"], 5, "{summary:#}");
    assert_eq!(summary["publishers"]["connected"], 1, "{summary:#}");
    assert_eq!(summary["errors"], serde_json::json!({}), "{summary:#}");
    let sent_video = summary["sent"]["video_frames"].as_u64().expect("sent");
    assert!(sent_video >= 45, "{summary:#}");
    let received_video = summary["received"]["video_frames"]
        .as_u64()
        .expect("received");
    assert!(received_video >= 5 * 20, "{summary:#}");
    let received_audio = summary["received"]["audio_packets"]
        .as_u64()
        .expect("received");
    assert!(received_audio >= 5 * 30, "{summary:#}");
    assert!(summary["received"]["packets_per_s"].as_f64().expect("rate") > 0.0);
    let p99 = summary["latency"]["all"]["p99_ms"].as_f64().expect("p99");
    // Loose: a loaded CI machine delays both ends; the point is that it is measured.
    assert!(p99 > 0.0 && p99 < 5000.0, "{summary:#}");
}

/// Many subscribers in one load-test process (the relay in this test does the forwarding, so
/// this measures the client side, not an SFU). Run by name:
/// `LOADTEST_SUBSCRIBERS=300 cargo test -p switchboard --test stream -- --ignored many`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn loadtest_many_subscribers() {
    let subscribers: usize = std::env::var("LOADTEST_SUBSCRIBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let (server, _relay) = start_relay().await;
    let output = tokio::task::spawn_blocking(move || {
        switchboard()
            .args([
                "loadtest",
                "--room",
                "many",
                "--server",
                &server,
                "--audio-only",
            ])
            .args([
                "--subscribers",
                &subscribers.to_string(),
                "--duration",
                "20s",
                "--json",
            ])
            .output()
            .expect("run loadtest")
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    eprintln!("{summary:#}");
    assert_eq!(
        summary["subscribers"]["connected"], subscribers,
        "{summary:#}"
    );
}
