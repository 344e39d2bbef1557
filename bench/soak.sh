#!/usr/bin/env bash
# Soak test: one `switchboard serve` (release build, loopback only) under a steady mix of work for
# SOAK_MINUTES, its resident memory (RSS) and open file descriptors sampled every SAMPLE_SECS.
# It passes only when both stay flat, the server logged no ERROR and no panic, and the load
# itself succeeded.
#
# The load, all at once, all on 127.0.0.1:
#   signaling: `switchboard-sigload churn`: JOIN_RATE join/signal/leave cycles per second over 8
#              rooms, one cycle in 10 dropping its connection without a goodbye (so resume-grace
#              expiry runs too);
#   transfers: `switchboard send` / `switchboard recv` of a TRANSFER_KB file, one after another,
#              a pause of TRANSFER_PAUSE s between them (every fourth one `--relay`, through TURN);
#   TURN:      coturn's `turnutils_uclient` (2 clients, 2 allocations each, 200 ChannelData
#              messages of 200 bytes to a `turnutils_peer` echo) every TURN_PAUSE s;
#   SFU:       `switchboard loadtest` (1 WHIP publisher, 2 WHEP viewers, 10 s) every SFU_PAUSE s
#              (SFU_PAUSE=0 skips it).
#
# Figures: "start" is before any load; "warm" the median of the first 6 samples after WARMUP_SECS
# of load; "end" the median of the last 6 samples under load; "idle" after the load stopped and
# SETTLE_SECS passed (longer than the resume grace, 10 s here, so dropped peers are gone).
#
# Tolerances, and why:
#   RSS: end <= warm * (1 + RSS_TOL_PCT/100) + RSS_TOL_MB. The allocator keeps freed memory in its
#        arenas and the tokio runtime grows its queues to the peak load, so memory after warm-up is
#        the baseline and not the empty server's. 10 % + 8 MiB of drift is allowed: a leak of only
#        1 KiB per signaling cycle at the default 10 cycles/s adds 18 MiB in 30 minutes, more than
#        that (and a leak per transfer, per allocation or per SFU session of the usual size shows
#        up far sooner).
#   fds: counted less one relay socket per live TURN allocation (read from /metrics with each
#        sample): turnutils_uclient exits without deleting its allocations, which then live out
#        their lifetime (10 minutes), so their number climbs for the first 10 minutes of any run
#        and is bounded by the quotas, not by this process's bookkeeping. idle <= start + FD_TOL
#        (4): every connection and SFU session is gone, so the count must return to the start's;
#        end <= warm + FD_LOAD_TOL (40): under load it moves with the connections open at the
#        moment of the sample.
#
# Env: SOAK_MINUTES (30; load time, warm-up included), WARMUP_SECS (120), SAMPLE_SECS (5),
#      SETTLE_SECS (20), JOIN_RATE (10), TRANSFER_KB (256), TRANSFER_PAUSE (2), TURN_PAUSE (10),
#      SFU_PAUSE (60), NICE (10: every process here runs at this niceness), RSS_TOL_PCT (10),
#      RSS_TOL_MB (8), FD_TOL (4), FD_LOAD_TOL (40), HTTP_PORT (18480), TURN_PORT (18478),
#      PEER_PORT (18479), SWITCHBOARD_BIN / SIGLOAD_BIN (default: cargo build --release),
#      KEEP (unset; a directory to keep the samples and the server log in).
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK_MINUTES=${SOAK_MINUTES:-30}
WARMUP_SECS=${WARMUP_SECS:-120}
SAMPLE_SECS=${SAMPLE_SECS:-5}
SETTLE_SECS=${SETTLE_SECS:-20}
JOIN_RATE=${JOIN_RATE:-10}
TRANSFER_KB=${TRANSFER_KB:-256}
TRANSFER_PAUSE=${TRANSFER_PAUSE:-2}
TURN_PAUSE=${TURN_PAUSE:-10}
SFU_PAUSE=${SFU_PAUSE:-60}
NICE=${NICE:-10}
RSS_TOL_PCT=${RSS_TOL_PCT:-10}
RSS_TOL_MB=${RSS_TOL_MB:-8}
FD_TOL=${FD_TOL:-4}
FD_LOAD_TOL=${FD_LOAD_TOL:-40}
HTTP_PORT=${HTTP_PORT:-18480}
TURN_PORT=${TURN_PORT:-18478}
PEER_PORT=${PEER_PORT:-18479}

log() { printf '[soak %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in turnutils_uclient turnutils_peer python3 curl; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install coturn python3 curl)"
done
target=${CARGO_TARGET_DIR:-$PWD/target}
if [[ -z "${SWITCHBOARD_BIN:-}" || -z "${SIGLOAD_BIN:-}" ]]; then
  nice -n "$NICE" cargo build --release --locked -p switchboard -p switchboard-sigload >&2
fi
SWITCHBOARD_BIN=${SWITCHBOARD_BIN:-$target/release/switchboard}
SIGLOAD_BIN=${SIGLOAD_BIN:-$target/release/switchboard-sigload}
[[ -x $SWITCHBOARD_BIN && -x $SIGLOAD_BIN ]] || die "no binaries at $SWITCHBOARD_BIN, $SIGLOAD_BIN"
run=(nice -n "$NICE")

tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP" && cp -r "$tmp"/. "$KEEP"/; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

cat >"$tmp/soak.toml" <<EOF
http = "127.0.0.1:$HTTP_PORT"
shutdown_grace_secs = 5
[signaling]
resume_grace_secs = 10
[turn]
listen = "127.0.0.1:$TURN_PORT"
users = ["soak:soak-password"]
relay_ports = "40000-44999"
dangerous_allow_loopback_peers = true
# All the load comes from 127.0.0.1: per-address limits high enough not to refuse it, but on,
# so their tables are part of what is soaked.
unauthenticated_per_sec_per_ip = 1000
[limits]
connections_per_ip = 10000
joins_per_sec_per_ip = 1000
whip_per_sec_per_ip = 100
[sfu]
listen = "127.0.0.1:0"
EOF
"${run[@]}" "$SWITCHBOARD_BIN" --log info --log-format json serve --config "$tmp/soak.toml" \
  --data-dir "$tmp/data" \
  >"$tmp/server.out" 2>"$tmp/server.log" &
server=$!
pids+=("$server")
for _ in $(seq 100); do
  grep -q 'listening on' "$tmp/server.out" 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || die "the server did not start: $(tail -5 "$tmp/server.log")"
  sleep 0.1
done
grep -q 'listening on' "$tmp/server.out" || die "the server did not start"
url="http://127.0.0.1:$HTTP_PORT"
log "server pid $server at $url ($SWITCHBOARD_BIN)"
"${run[@]}" turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" >/dev/null 2>&1 &
pids+=("$!")

sample() { # prints "epoch rss_kb fds turn_allocations"
  local rss fds allocations
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$server/status")
  fds=$(find "/proc/$server/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  allocations=$(curl -s "$url/metrics" | awk '$1 == "switchboard_turn_allocations" {print $2}')
  echo "$(date +%s) $rss $fds ${allocations:-0}"
}
sleep 2
start=$(sample)
log "start: rss $(cut -d' ' -f2 <<<"$start") KiB, fds $(cut -d' ' -f3 <<<"$start")"

load_secs=$((SOAK_MINUTES * 60))
(( load_secs > WARMUP_SECS + 12 * SAMPLE_SECS )) || die "SOAK_MINUTES too short for the warm-up"
end_at=$(( $(date +%s) + load_secs ))

# Signaling churn.
"${run[@]}" "$SIGLOAD_BIN" churn --url "ws://127.0.0.1:$HTTP_PORT/ws" --rate "$JOIN_RATE" \
  --seconds "$load_secs" >"$tmp/churn.out" 2>"$tmp/churn.err" &
churn=$!
pids+=("$churn")

# Transfers, one after another.
head -c $((TRANSFER_KB * 1024)) /dev/urandom >"$tmp/payload.bin"
(
  n=0 ok=0 failed=0
  while (( $(date +%s) < end_at )); do
    n=$((n + 1))
    code="$(( n % 999 + 1 ))-tiger-orbit"
    relay=()
    if (( n % 4 == 0 )); then relay=(--relay); fi
    rm -rf "$tmp/recv" && mkdir -p "$tmp/recv"
    timeout 60 "${run[@]}" "$SWITCHBOARD_BIN" send --server "$url" --code "$code" "${relay[@]}" \
      "$tmp/payload.bin" >/dev/null 2>>"$tmp/send.err" &
    sender=$!
    if timeout 60 "${run[@]}" "$SWITCHBOARD_BIN" recv --server "$url" --yes --overwrite \
         --out "$tmp/recv" "${relay[@]}" "$code" >/dev/null 2>>"$tmp/recv.err" \
       && wait "$sender" && cmp -s "$tmp/payload.bin" "$tmp/recv/payload.bin"; then
      ok=$((ok + 1))
    else
      failed=$((failed + 1))
      wait "$sender" 2>/dev/null || true
    fi
    echo "$ok $failed" >"$tmp/transfers"
    sleep "$TRANSFER_PAUSE"
  done
) &
pids+=("$!")

# TURN allocations and relayed traffic.
(
  runs=0 failed=0
  while (( $(date +%s) < end_at )); do
    runs=$((runs + 1))
    if ! timeout 60 "${run[@]}" turnutils_uclient -u soak -w soak-password -p "$TURN_PORT" \
         -e 127.0.0.1 -r "$PEER_PORT" -m 2 -n 200 -l 200 -z 5 -c 127.0.0.1 \
         >"$tmp/uclient.last" 2>&1; then
      failed=$((failed + 1))
    fi
    echo "$runs $failed" >"$tmp/turn"
    sleep "$TURN_PAUSE"
  done
) &
pids+=("$!")

# SFU sessions through WHIP/WHEP.
if (( SFU_PAUSE > 0 )); then
  (
    runs=0 failed=0
    while (( $(date +%s) + 15 < end_at )); do
      runs=$((runs + 1))
      if ! timeout 60 "${run[@]}" "$SWITCHBOARD_BIN" loadtest --server "$url" --room soak-sfu \
           --publishers 1 --subscribers 2 --duration 10s --video-bitrate 300k --fps 15 \
           >"$tmp/loadtest.last" 2>&1; then
        failed=$((failed + 1))
      fi
      echo "$runs $failed" >"$tmp/sfu"
      sleep "$SFU_PAUSE"
    done
  ) &
  pids+=("$!")
fi

: >"$tmp/samples"
while (( $(date +%s) < end_at )); do
  kill -0 "$server" 2>/dev/null || die "the server died: $(tail -5 "$tmp/server.log")"
  sample >>"$tmp/samples"
  sleep "$SAMPLE_SECS"
done
log "load over; waiting for the load generators"
wait "$churn" || true
for pid in "${pids[@]:3}"; do wait "$pid" 2>/dev/null || true; done
log "settling for $SETTLE_SECS s"
sleep "$SETTLE_SECS"
idle=$(sample)
curl -s "$url/metrics" >"$tmp/metrics" || true

start_epoch=$(cut -d' ' -f1 <<<"$start")
python3 - "$tmp" "$start" "$idle" "$((start_epoch + 2 + WARMUP_SECS))" \
  "$RSS_TOL_PCT" "$RSS_TOL_MB" "$FD_TOL" "$FD_LOAD_TOL" <<'PY'
import json, re, statistics, sys
tmp, start, idle, warm_from = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), int(sys.argv[4])
rss_pct, rss_mb, fd_tol, fd_load_tol = (float(a) for a in sys.argv[5:9])
samples = [tuple(int(x) for x in l.split()) for l in open(f"{tmp}/samples") if l.strip()]
warm = [s for s in samples if s[0] >= warm_from][:6]
end = samples[-6:]
if len(warm) < 6 or len(end) < 6:
    sys.exit("not enough samples")
med = lambda rows, i: statistics.median(r[i] for r in rows)
# Each live TURN allocation holds one relay socket: fds are compared without them.
own = lambda rows: [(r[0], r[1], r[2] - r[3]) for r in rows]
fig = {
    "start": (int(start[1]), int(start[2]) - int(start[3])),
    "warm": (med(warm, 1), med(own(warm), 2)),
    "end": (med(end, 1), med(own(end), 2)),
    "idle": (int(idle[1]), int(idle[2]) - int(idle[3])),
    "peak": (max(s[1] for s in samples), max(s[2] for s in samples)),
}
print(f"{'':6} {'RSS MiB':>8} {'fds':>5}   (fds less one relay socket per live TURN allocation;"
      f" peak: all fds)")
for name, (rss, fds) in fig.items():
    print(f"{name:6} {rss / 1024:8.1f} {fds:5.0f}")
print(f"live TURN allocations: warm {med(warm, 3):.0f}, end {med(end, 3):.0f}, idle {idle[3]}")
print(f"samples {len(samples)}, warm from +{warm[0][0] - samples[0][0]} s, "
      f"end at +{end[-1][0] - samples[0][0]} s")

def read_lines(name):
    try:
        return open(f"{tmp}/{name}", errors="replace").readlines()
    except OSError:
        return []
def read(name):
    return "".join(read_lines(name)).split()
churn = dict(kv.split("=") for kv in read("churn.out") if "=" in kv)
transfers, turn, sfu = read("transfers"), read("turn"), read("sfu")
print(f"churn cycles {churn.get('cycles', '?')} (failed {churn.get('failed', '?')}, "
      f"signals relayed {churn.get('signals', '?')}); transfers ok {transfers[0] if transfers else '?'} "
      f"failed {transfers[1] if transfers else '?'}; uclient runs {turn[0] if turn else '?'} "
      f"failed {turn[1] if turn else '?'}; SFU loadtests {sfu[0] if sfu else 0} failed {sfu[1] if sfu else 0}")
metrics = {}
for line in read_lines("metrics"):
    if line.strip() and not line.startswith("#"):
        name, _, value = line.strip().rpartition(" ")
        metrics[name] = float(value)
for key in ["switchboard_signaling_connections_total", "switchboard_signaling_joins_total",
            "switchboard_turn_allocations_total", "switchboard_turn_allocations",
            "switchboard_sfu_forwarded_packets_total", "switchboard_participants",
            "switchboard_signaling_connections"]:
    if key in metrics:
        print(f"  {key} {metrics[key]:.0f}")

errors, panics = 0, 0
for line in open(f"{tmp}/server.log", errors="replace"):
    if "panicked" in line:
        panics += 1
    try:
        if json.loads(line).get("level") == "ERROR":
            errors += 1
    except ValueError:
        if "ERROR" in line:
            errors += 1
problems = []
(warm_rss, warm_fds), (end_rss, end_fds) = fig["warm"], fig["end"]
limit = warm_rss * (1 + rss_pct / 100) + rss_mb * 1024
if end_rss > limit:
    problems.append(f"RSS grew: end {end_rss / 1024:.1f} MiB > {limit / 1024:.1f} MiB allowed")
alive = int(idle[3])
if fig["idle"][1] > fig["start"][1] + fd_tol:
    problems.append(f"fds at idle {fig['idle'][1]} (less {alive} live relay sockets) > "
                    f"start {fig['start'][1]} + {fd_tol:.0f}")
if end_fds > warm_fds + fd_load_tol:
    problems.append(f"fds under load grew: end {end_fds} > warm {warm_fds} + {fd_load_tol:.0f}")
if errors or panics:
    problems.append(f"server log: {errors} ERROR lines, {panics} panics")
cycles, failed = int(churn.get("cycles", 0)), int(churn.get("failed", 0))
if cycles == 0 or failed > 0.005 * (cycles + failed):
    problems.append(f"signaling churn: {cycles} cycles, {failed} failed")
if not transfers or int(transfers[0]) == 0 or int(transfers[1]) > 0:
    problems.append(f"transfers: {transfers}")
if not turn or int(turn[1]) > 0:
    problems.append(f"uclient runs: {turn}")
if sfu and int(sfu[1]) > 0:
    problems.append(f"SFU loadtests: {sfu}")
if problems:
    print("FAIL: " + "; ".join(problems))
    sys.exit(1)
print(f"PASS: RSS within {rss_pct:.0f} % + {rss_mb:.0f} MiB of warm, fds back to start "
      f"(+{fd_tol:.0f}, {alive} live relay sockets aside), no ERROR, no panic")
PY
