//! Files written by ffmpeg: the fixtures in `tests/data/` (made with the commands in
//! `tests/data/README.md`), and, when ffmpeg is installed, fresh ones made at run time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use media_file::{Error, Frame, Kind, Reader};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn read(bytes: &[u8], name: &str, chunk: usize) -> Result<Vec<Frame>, Error> {
    let kind = Kind::detect(bytes, name).expect("known kind");
    let mut reader = Reader::new(kind, 15.0)?;
    let mut frames = Vec::new();
    for piece in bytes.chunks(chunk) {
        reader.push(piece)?;
        while let Some(frame) = reader.next_frame()? {
            frames.push(frame);
        }
    }
    reader.finish();
    while let Some(frame) = reader.next_frame()? {
        frames.push(frame);
    }
    Ok(frames)
}

fn check_times(frames: &[Frame]) {
    for pair in frames.windows(2) {
        assert!(pair[0].time <= pair[1].time, "times go forward");
        assert!(pair[0].offset <= pair[1].offset, "offsets go forward");
    }
}

#[test]
fn vp8_ivf_from_ffmpeg() {
    let bytes = std::fs::read(data("vp8.ivf")).expect("fixture");
    for chunk in [1, 1000, 1 << 16] {
        let frames = read(&bytes, "vp8.ivf", chunk).expect("valid");
        assert_eq!(frames.len(), 15);
        let keys: Vec<usize> = (0..15).filter(|&i| frames[i].keyframe).collect();
        assert_eq!(keys, [0, 10], "-g 10");
        assert_eq!(frames[14].rtp_time, 14 * 6000);
        assert_eq!(
            frames[14].time,
            Duration::from_nanos(14 * 1_000_000_000 / 15)
        );
        check_times(&frames);
        let payload: usize = frames.iter().map(|f| f.data.len() + 12).sum();
        assert_eq!(payload + 32, bytes.len());
    }
}

#[test]
fn h264_annex_b_from_ffmpeg() {
    let bytes = std::fs::read(data("baseline.h264")).expect("fixture");
    for chunk in [1, 1000, 1 << 16] {
        let frames = read(&bytes, "baseline.h264", chunk).expect("valid");
        assert_eq!(frames.len(), 15);
        let keys: Vec<usize> = (0..15).filter(|&i| frames[i].keyframe).collect();
        assert_eq!(keys, [0, 10]);
        // The first access unit carries the parameter sets.
        assert_eq!(frames[0].data[4] & 0x1f, 7, "SPS first");
        assert_eq!(frames[14].rtp_time, 14 * 6000);
        check_times(&frames);
    }
}

#[test]
fn ogg_opus_from_ffmpeg() {
    let bytes = std::fs::read(data("opus.ogg")).expect("fixture");
    for chunk in [1, 1000, 1 << 16] {
        let frames = read(&bytes, "opus.ogg", chunk).expect("valid");
        // One second plus the 312-sample pre-skip, in 20 ms packets.
        assert_eq!(frames.len(), 51);
        assert!(frames.iter().all(|f| f.rtp_time % 960 == 0));
        assert_eq!(frames[50].rtp_time, 50 * 960);
        assert_eq!(frames[50].time, Duration::from_secs(1));
        check_times(&frames);
    }
}

/// Cut short or corrupted anywhere, a file gives frames and then maybe an error, never a
/// panic; a cut file whose cut falls inside a frame says it is cut short.
#[test]
fn damaged_files_fail_cleanly() {
    for name in ["vp8.ivf", "baseline.h264", "opus.ogg"] {
        let bytes = std::fs::read(data(name)).expect("fixture");
        for cut in (0..bytes.len()).step_by(37) {
            let _ = read(&bytes[..cut], name, 512);
        }
        for at in (0..bytes.len()).step_by(53) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x5a;
            let _ = read(&damaged, name, 512);
        }
    }
    let bytes = std::fs::read(data("vp8.ivf")).expect("fixture");
    match read(&bytes[..bytes.len() - 10], "vp8.ivf", 512) {
        Err(err @ Error::Truncated { .. }) => {
            assert!(err.to_string().contains("byte"), "{err}");
        }
        other => panic!("expected a truncation error, got {other:?}"),
    }
}

/// Larger files straight from ffmpeg, when it is installed (`apt-get install ffmpeg`).
#[test]
fn fresh_ffmpeg_files() {
    let Ok(status) = std::process::Command::new("ffmpeg")
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .status()
    else {
        eprintln!("ffmpeg is not installed; skipping");
        return;
    };
    assert!(status.success());
    let dir = std::env::temp_dir().join(format!("media-file-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cases: [(&str, &[&str], usize); 3] = [
        (
            "a.ivf",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=30",
                "-t",
                "3",
                "-c:v",
                "libvpx",
                "-b:v",
                "300k",
            ],
            90,
        ),
        (
            "a.h264",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=15",
                "-t",
                "3",
                "-pix_fmt",
                "yuv420p",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-bf",
                "0",
                "-slices",
                "4",
                "-f",
                "h264",
            ],
            45,
        ),
        (
            "a.opus",
            &[
                "-f",
                "lavfi",
                "-i",
                "sine=duration=3",
                "-c:a",
                "libopus",
                "-frame_duration",
                "60",
                "-f",
                "ogg",
            ],
            51,
        ),
    ];
    for (name, args, expected) in cases {
        let path = dir.join(name);
        let status = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(args)
            .arg(&path)
            .status()
            .expect("ffmpeg runs");
        assert!(status.success(), "ffmpeg made {name}");
        let bytes = std::fs::read(&path).expect("read");
        let frames = read(&bytes, name, 4096).expect("valid");
        assert_eq!(frames.len(), expected, "{name}");
        assert!(frames[0].keyframe, "{name}");
        check_times(&frames);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
