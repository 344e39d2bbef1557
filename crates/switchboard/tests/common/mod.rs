//! The child-process harness the end-to-end test files share: run `switchboard` with a clean
//! environment, collect what it prints, wait for a line or for its exit, kill it on drop.
// Each test file uses the part it needs.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
/// How long a wait may take before the test fails with the process's output.
pub const PROC_TIMEOUT: Duration = Duration::from_secs(120);

/// A `switchboard` child whose stdout and stderr are collected in the background; killed on
/// drop, panics included.
pub struct Proc {
    pub child: Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    /// Runs `switchboard ARGS` with none of the user's settings: no config file, server, token
    /// or certificate pin from the environment, and the database in memory (tests never write
    /// into the home directory).
    pub fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .env("SWITCHBOARD_LOG", "warn")
            .env("SWITCHBOARD_DATA_DIR", "none")
            .env_remove("SWITCHBOARD_SERVER")
            .env_remove("SWITCHBOARD_CONFIG")
            .env_remove("SWITCHBOARD_TOKEN")
            .env_remove("SWITCHBOARD_SERVER_CERT_SHA256")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Proc { child, output }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for the exit, panicking with the output after [`PROC_TIMEOUT`].
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PROC_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads take the last lines.
                thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {PROC_TIMEOUT:?}; output:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the output contains `needle`.
    pub fn wait_for_output(&self, needle: &str) {
        let deadline = Instant::now() + PROC_TIMEOUT;
        while !self.output().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "never printed {needle:?}; output:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT, then the exit status (as Ctrl-C would end it).
    pub fn interrupt(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        self.wait()
    }

    /// The rest of the first output line containing `prefix`, after it.
    pub fn after(&self, prefix: &str) -> String {
        self.output()
            .lines()
            .find_map(|l| l.split(prefix).nth(1))
            .unwrap()
            .trim()
            .to_owned()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
