//! `netlab-delayer`: holds every packet an iptables `NFQUEUE` rule hands it for a fixed delay
//! plus random jitter, then lets it go on. The connectivity lab (`tests/netlab/`) uses it because
//! the test machines' kernel has no netem.
//!
//! ```text
//! iptables -t mangle -A FORWARD -o wan0 -j NFQUEUE --queue-num 3 --queue-bypass
//! netlab-delayer --queue 3 --delay-ms 50 --jitter-ms 5
//! ```
//!
//! Packets leave in the order they came (a packet is never released before the one ahead of it),
//! so jitter stretches gaps but does not reorder. Only metadata is copied from the kernel; the
//! payload is never read. It is not a general traffic shaper: no rate limit, no loss (use
//! iptables `statistic` for loss, `tbf` for rate).

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use nfq::{Queue, Verdict};

struct Options {
    queue: u16,
    delay: Duration,
    jitter: Duration,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        queue: 0,
        delay: Duration::from_millis(50),
        jitter: Duration::ZERO,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value"))
                .and_then(|v| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}")))
        };
        match flag.as_str() {
            "--queue" => {
                options.queue =
                    u16::try_from(value()?).map_err(|_| "--queue is 0 to 65535".to_owned())?
            }
            "--delay-ms" => options.delay = Duration::from_millis(value()?),
            "--jitter-ms" => options.jitter = Duration::from_millis(value()?),
            "-h" | "--help" => {
                println!("usage: netlab-delayer [--queue N] [--delay-ms MS] [--jitter-ms MS]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

/// xorshift64*: jitter needs no cryptographic randomness.
struct Jitter(u64);

impl Jitter {
    fn next(&mut self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let span = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(r % (span + 1))
    }
}

fn main() {
    let options = match parse_args() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("netlab-delayer: {err}");
            std::process::exit(2);
        }
    };
    if let Err(err) = run(&options) {
        eprintln!("netlab-delayer: {err}");
        std::process::exit(1);
    }
}

fn run(options: &Options) -> std::io::Result<()> {
    let mut queue = Queue::open()?;
    queue.bind(options.queue)?;
    queue.set_copy_range(options.queue, 0)?;
    queue.set_queue_max_len(options.queue, 8192)?;
    // Accept rather than drop when the kernel queue overflows: overflow is not our loss model.
    queue.set_fail_open(options.queue, true)?;
    queue.set_nonblocking(true);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut jitter = Jitter(seed);
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    eprintln!(
        "netlab-delayer: queue {} delay {:?} jitter {:?}",
        options.queue, options.delay, options.jitter
    );
    loop {
        // Take everything waiting in the kernel.
        loop {
            match queue.recv() {
                Ok(mut message) => {
                    let mut release = Instant::now() + options.delay + jitter.next(options.jitter);
                    if let Some((last, _)) = held.back() {
                        release = release.max(*last);
                    }
                    message.set_verdict(Verdict::Accept);
                    held.push_back((release, message));
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                // ENOBUFS: the kernel dropped notifications (fail-open passes those packets).
                Err(err) if err.raw_os_error() == Some(105) => break,
                Err(err) => return Err(err),
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(release, _)| *release <= now) {
            if let Some((_, message)) = held.pop_front() {
                queue.verdict(message)?;
            }
        }
        // Polling at 0.5 ms keeps the added delay within about a millisecond of the target.
        let wait = held
            .front()
            .map(|(release, _)| release.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_micros(500))
            .min(Duration::from_micros(500));
        std::thread::sleep(wait);
    }
}
