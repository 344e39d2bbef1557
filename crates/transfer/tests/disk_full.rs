//! A full disk is `Error::DiskFull` naming the file, and the partial file stays for a resume.
//! Needs permission to mount a small tmpfs (root); skipped with a note otherwise.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Pair, random_bytes, write};
use transfer::{Error, SenderEvent};

struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(at: &Path, size: &str) -> Option<Mounted> {
        fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mounted(at.to_owned()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_keeps_the_part_file_for_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Mounted::tmpfs(&dir.path().join("small"), "1m") else {
        eprintln!("note: skipping the disk-full test: cannot mount a tmpfs here (needs root)");
        return;
    };
    let data = random_bytes(3 * 1024 * 1024, 42);
    write(&dir.path().join("src/big.bin"), &data);
    let out = mount.0.join("out");

    let mut pair = Pair::new(&[dir.path().join("src/big.bin")], &out, false);
    pair.run();
    let part = out.join("big.bin.part");
    assert!(
        matches!(pair.receiver_errors[..], [Error::DiskFull { ref path }] if *path == part),
        "{:?}",
        pair.receiver_errors
    );
    let message = pair.receiver_errors[0].to_string();
    assert!(message.contains("big.bin.part") && message.contains("disk is full"));
    let kept = fs::metadata(&part).unwrap().len();
    assert!(kept > 0 && kept <= 1024 * 1024, "{kept}");
    assert!(!out.join("big.bin").exists());
    assert!(matches!(
        pair.sender_events.last(),
        Some(SenderEvent::Cancelled { reason }) if reason.contains("disk is full")
    ));

    // With room again, the next transfer resumes from what was kept.
    mount.resize("8m");
    let mut pair = Pair::new(&[dir.path().join("src/big.bin")], &out, false);
    pair.run_to_completion();
    assert_eq!(
        pair.sender_events[0],
        SenderEvent::Accepted { resumed: kept }
    );
    assert_eq!(fs::read(out.join("big.bin")).unwrap(), data);
    assert!(!part.exists());
}
