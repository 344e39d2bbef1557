#!/usr/bin/env bash
# SFU benchmark: `switchboard serve` pinned to one core (SERVER_CPU), `switchboard loadtest` on
# the other (CLIENT_CPU), everything on 127.0.0.1. Per scenario it reads the server's CPU time
# (utime + stime of every thread, /proc/PID/stat) before and after the load, and the packets the
# SFU sent (`sfu_datagrams_out` from /healthz), and reports:
#
#   audio fan-out:  1 publisher (Opus-sized packets every 20 ms) → AUDIO_SUBS subscribers.
#                   Packets out per second per fully used core = packets out/s ÷ CPU fraction.
#                   Anchor: LiveKit's published audio fan-out figure, about 75,000 packets/s out
#                   per vCPU (docs.livekit.io, "Benchmarks").
#   livestream:     1 publisher (VP8-shaped video at VIDEO_BITRATE + audio) → VIDEO_SUBS viewers.
#                   Viewers per core at 80 % CPU = viewers × 0.8 ÷ CPU fraction.
#                   Anchor: LiveKit's published livestream figure, about 204 viewers per vCPU
#                   (same page; 720p simulcast publisher).
#   meeting:        MEETING_MEMBERS room members (`loadtest --members`: each joins over signaling
#                   and speaks the browser's SFU protocol), each sending VP8-shaped video at
#                   MEETING_BITRATE + audio and receiving every other member's: an M×M meeting,
#                   M×(M−1) audio and M×(M−1) video streams out of the server. Reports packets
#                   out per second per fully used core, and fails unless every member received
#                   audio and video from every other member.
#                   No anchor, no ratio: LiveKit publishes no per-vCPU figure for M×M meetings,
#                   and its audio fan-out figure is not comparable (one publisher and small audio
#                   packets there; M publishers to decrypt and mostly video packets here, whose
#                   cost per packet differs), so dividing by it would mean nothing.
#                   MEETING_BITRATE 300k keeps the load generator's core far from full (10
#                   members took about a quarter of it). Members send no simulcast, so each
#                   receives M−1 whole videos. Seen at 300k: video p99 5 ms with 4 members, 34 ms
#                   with 6, about 0.5 s with 10, audio p99 under 10 ms throughout; likely the
#                   SFU pacing video to its bandwidth estimate for a member, which starts at
#                   1.5 Mbit/s (4 members receive 1.0 Mbit/s each, 10 members 3.1).
#
# Latency is what the load generator measures from a publisher's (or member's) write to a
# subscriber's (or other member's) first packet of that frame, through the server and both client stacks (all in one process, so the
# clocks agree): an upper bound of what the server adds. The ratio columns divide our figure by
# the anchor's (above 1 means more per core than LiveKit's published figure). LiveKit and Janus
# are not run here: LiveKit is not packaged for Debian 12, and Janus from Debian has no WHIP/WHEP
# endpoint our load generator speaks; the anchors are the published per-vCPU figures.
#
# Env: RUNS (3; medians), DURATION (20s), AUDIO_SUBS (100), VIDEO_SUBS (100),
# VIDEO_BITRATE (1M), MEETING_MEMBERS (10), MEETING_BITRATE (300k), SCENARIOS ("audio video
# meeting": which to run), SERVER_CPU (0), CLIENT_CPU (1),
# SWITCHBOARD_BIN (default: cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-20s}
AUDIO_SUBS=${AUDIO_SUBS:-100}
VIDEO_SUBS=${VIDEO_SUBS:-100}
VIDEO_BITRATE=${VIDEO_BITRATE:-1M}
MEETING_MEMBERS=${MEETING_MEMBERS:-10}
MEETING_BITRATE=${MEETING_BITRATE:-300k}
SCENARIOS=${SCENARIOS:-audio video meeting}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
LIVEKIT_AUDIO_PPS_PER_VCPU=75000
LIVEKIT_VIEWERS_PER_VCPU=204

if [[ -z "${SWITCHBOARD_BIN:-}" ]]; then
  cargo build --release --locked -p switchboard >&2
  SWITCHBOARD_BIN="$PWD/target/release/switchboard"
fi
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 2; }

work=$(mktemp -d)
server_pid=
cleanup() {
  [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start_server() {
  # Rooms larger than the default limit of 100 participants (SFU) and 50 peers (signaling); the
  # load generator opens all its WHIP/WHEP sessions and signaling connections from one address,
  # so the per-address limits are raised and the WHIP/WHEP offer limit is off.
  printf '[sfu]\nmax_per_room = 5000\nmax_participants = 10000\n[signaling]\nmax_peers_per_room = 5000\n[limits]\nconnections_per_ip = 10000\njoins_per_sec_per_ip = 1000\n' \
    >"$work/switchboard.toml"
  taskset -c "$SERVER_CPU" "$SWITCHBOARD_BIN" serve --config "$work/switchboard.toml" \
    --http 127.0.0.1:0 --turn 127.0.0.1:0 --data-dir none \
    --media 127.0.0.1:0 --whip-per-sec-per-ip 0 --log warn >"$work/server.out" 2>"$work/server.err" &
  server_pid=$!
  for _ in $(seq 100); do
    url=$(sed -n 's/^switchboard: listening on \(http:[^ ]*\).*/\1/p' "$work/server.out")
    [[ -n "$url" ]] && return 0
    sleep 0.1
  done
  echo "server did not start" >&2; cat "$work/server.err" >&2; exit 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
datagrams_out() { curl -s "$url/healthz" | awk '$1 == "sfu_datagrams_out" {print $2}'; }

# run_load NAME ARGS...: one loadtest against a fresh room; prints "cpu_fraction pkts_out_per_s
# connected p50 p99 missing_streams errors" (connected: subscribers + members; missing_streams:
# member streams expected but not received) and keeps the JSON in $work/NAME.json.
run_load() {
  local name=$1; shift
  local room="bench-$name-$RANDOM"
  local t0 c0 d0 t1 c1 d1
  t0=$(date +%s.%N); c0=$(cpu_ticks); d0=$(datagrams_out)
  taskset -c "$CLIENT_CPU" "$SWITCHBOARD_BIN" loadtest --server "$url" --room "$room" \
    --duration "$DURATION" --json "$@" >"$work/$name.json" 2>"$work/$name.err" || true
  t1=$(date +%s.%N); c1=$(cpu_ticks); d1=$(datagrams_out)
  python3 - "$work/$name.json" "$t0" "$t1" "$c0" "$c1" "$d0" "$d1" "$(getconf CLK_TCK)" <<'EOF'
import json, sys
path, t0, t1, c0, c1, d0, d1, hz = sys.argv[1:]
try:
    j = json.load(open(path))
except Exception:
    j = {}
wall = float(t1) - float(t0)
cpu = (int(c1) - int(c0)) / int(hz) / wall
dur = j.get("duration_s") or wall
pps = (int(d1) - int(d0)) / wall
members = j.get("members", {})
subs = j.get("subscribers", {}).get("connected", 0) + members.get("connected", 0)
missing = members.get("streams_expected", 0) - members.get("streams_received", 0)
lat = j.get("latency", {}).get("all", {})
print(f"{cpu:.4f} {pps:.0f} {subs} {lat.get('p50_ms') or 0:.2f} {lat.get('p99_ms') or 0:.2f} {missing} {j.get('errors', 'n/a')}")
EOF
}

median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):.4g}")' "$@"; }

start_server
echo "server: $url (CPU $SERVER_CPU), load generator on CPU $CLIENT_CPU, $RUNS runs of $DURATION each"
printf '\n%-12s %4s %8s %12s %6s %8s %8s %s\n' scenario run cpu pkts_out/s peers p50_ms p99_ms errors

declare -A results
failed=0
for run in $(seq "$RUNS"); do
  for scenario in $SCENARIOS; do
    case $scenario in
      audio) want=$AUDIO_SUBS; line=$(run_load audio --publishers 1 --subscribers "$AUDIO_SUBS" --audio-only) ;;
      video) want=$VIDEO_SUBS; line=$(run_load video --publishers 1 --subscribers "$VIDEO_SUBS" --video-bitrate "$VIDEO_BITRATE") ;;
      meeting) want=$MEETING_MEMBERS; line=$(run_load meeting --members "$MEETING_MEMBERS" --video-bitrate "$MEETING_BITRATE") ;;
      *) echo "unknown scenario $scenario (audio, video, meeting)" >&2; exit 2 ;;
    esac
    read -r cpu pps subs p50 p99 missing errors <<<"$line"
    if (( subs < want )); then
      echo "$scenario run $run: only $subs of $want subscribers/members connected; errors: $errors" >&2
      failed=1
    fi
    if (( missing > 0 )); then
      echo "$scenario run $run: $missing member streams (sender, kind) never arrived; errors: $errors" >&2
      failed=1
    fi
    printf '%-12s %4s %8s %12s %6s %8s %8s %s\n' "$scenario" "$run" "$cpu" "$pps" "$subs" "$p50" "$p99" "$errors"
    results[$scenario.cpu]+=" $cpu"; results[$scenario.pps]+=" $pps"; results[$scenario.subs]+=" $subs"
    results[$scenario.p50]+=" $p50"; results[$scenario.p99]+=" $p99"
  done
done

echo
echo "== medians over $RUNS runs =="
for scenario in $SCENARIOS; do
  cpu=$(median ${results[$scenario.cpu]}); pps=$(median ${results[$scenario.pps]})
  subs=$(median ${results[$scenario.subs]}); p50=$(median ${results[$scenario.p50]}); p99=$(median ${results[$scenario.p99]})
  who=subscribers; [[ $scenario == meeting ]] && who=members
  echo "$scenario: server CPU $cpu of a core, $pps packets out/s, $subs $who connected, latency p50 $p50 ms p99 $p99 ms"
  results[$scenario.m_cpu]=$cpu; results[$scenario.m_pps]=$pps; results[$scenario.m_subs]=$subs
done
python3 - "${results[audio.m_cpu]:-0}" "${results[audio.m_pps]:-0}" "${results[video.m_cpu]:-0}" \
  "${results[video.m_subs]:-0}" "${results[meeting.m_cpu]:-0}" "${results[meeting.m_pps]:-0}" \
  "$MEETING_MEMBERS" "$LIVEKIT_AUDIO_PPS_PER_VCPU" "$LIVEKIT_VIEWERS_PER_VCPU" "$SCENARIOS" <<'EOF'
import sys
a_cpu, a_pps, v_cpu, v_subs, m_cpu, m_pps, members, lk_pps, lk_viewers = map(float, sys.argv[1:10])
scenarios = sys.argv[10].split()
print()
if "audio" in scenarios:
    pps_core = a_pps / a_cpu if a_cpu > 0 else float('nan')
    print(f"audio fan-out: {pps_core:,.0f} packets out/s per core  (LiveKit published: {lk_pps:,.0f}/vCPU; ratio {pps_core / lk_pps:.2f})")
if "video" in scenarios:
    viewers_core = v_subs * 0.8 / v_cpu if v_cpu > 0 else float('nan')
    print(f"livestream:    {viewers_core:,.0f} viewers per core at 80 % CPU  (LiveKit published: {lk_viewers:.0f}/vCPU; ratio {viewers_core / lk_viewers:.2f})")
if "meeting" in scenarios:
    pps_core = m_pps / m_cpu if m_cpu > 0 else float('nan')
    print(f"meeting:       {pps_core:,.0f} packets out/s per core, {members:.0f}×{members:.0f}  (no published anchor for meetings: no ratio)")
EOF
(( failed == 0 )) || { echo "some subscribers or members did not connect or receive: the figures above undercount" >&2; exit 1; }
