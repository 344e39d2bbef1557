#!/usr/bin/env bash
# Signaling benchmark: memory per idle WebSocket connection and relay latency through Switchboard's
# /ws, against a bare tokio-tungstenite echo server (`switchboard-sigload echo-server`) as the
# anchor, started side by side in this script. Prints a table and Switchboard / anchor ratios.
#
#   idle:    CONNECTIONS connections held open (Switchboard: `join`ed, PER_ROOM peers a room;
#            anchor: one echoed frame each); server RSS after minus before, per connection.
#   latency: PAIRS pairs (Switchboard: sender -> receiver `signal` in a room of two, one way;
#            anchor: the same frame to the echo server and back) at RATE messages/s in total for
#            DURATION s after a 2 s warm-up; RUNS runs, alternating targets; medians reported.
#   The anchor uses Switchboard's WebSocket settings (crates/server/src/lib.rs: 4 KiB read
#   buffer, no write buffering, 64 KiB frames). For reference, idle only: the anchor with
#   tungstenite's default 128 KiB buffers (DEFAULT_BUFFER_ANCHOR=0 skips it).
#
# Env: CONNECTIONS (10000), PER_ROOM (5), PAIRS (50), RATE (2000), DURATION (20), RUNS (3),
#      NOFILE (65536; falls back to the hard limit), ANCHOR_READ_BUFFER (4096),
#      ANCHOR_WRITE_BUFFER (0), DEFAULT_BUFFER_ANCHOR (1), NICE (unset; e.g. -10 runs the servers
#      and the load generator at that niceness, to shield them from other work on the machine).
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-10000}
PER_ROOM=${PER_ROOM:-5}
PAIRS=${PAIRS:-50}
RATE=${RATE:-2000}
DURATION=${DURATION:-20}
RUNS=${RUNS:-3}
NOFILE=${NOFILE:-65536}
ANCHOR_READ_BUFFER=${ANCHOR_READ_BUFFER:-4096}
ANCHOR_WRITE_BUFFER=${ANCHOR_WRITE_BUFFER:-0}
DEFAULT_BUFFER_ANCHOR=${DEFAULT_BUFFER_ANCHOR:-1}
prio=()
if [[ -n ${NICE:-} ]]; then prio=(nice -n "$NICE"); fi

cargo build --release -p switchboard -p switchboard-sigload >&2
sb_bin=$PWD/target/release/switchboard
load_bin=$PWD/target/release/switchboard-sigload

# Each process needs a descriptor per connection: the server N, the load generator N.
ulimit -n "$NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if (( $(ulimit -n) < CONNECTIONS + 200 )); then
  echo "warning: ulimit -n is $(ulimit -n), below the $((CONNECTIONS + 200)) descriptors" \
    "CONNECTIONS=$CONNECTIONS needs per process" >&2
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: runs CMD in the background; sets $started_pid and $started_port from the
# "... 127.0.0.1:PORT" line it prints on stdout.
start() {
  local name=$1; shift
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  started_pid=$!
  pids+=("$started_pid")
  for _ in $(seq 100); do
    started_port=$(sed -n 's/.*127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$tmp/$name.out" | head -n1)
    [[ -n $started_port ]] && return 0
    kill -0 "$started_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "$name did not start:" >&2
  cat "$tmp/$name.err" >&2
  exit 1
}

# Signaling only: no built-in STUN/TURN listener (it would also want port 3478).
sb_flags=(--media 127.0.0.1:0)
if "$sb_bin" serve --help | grep -q -- --no-turn; then
  sb_flags+=(--no-turn)
fi
# No database file (rooms and chat in memory).
if "$sb_bin" serve --help | grep -q -- --data-dir; then
  sb_flags+=(--data-dir none)
fi
# Stay inside the server's default limits; raise them only when the parameters need it.
if (( CONNECTIONS + 2 * PAIRS + 100 > 20000 )); then
  sb_flags+=(--max-connections $((CONNECTIONS + 2 * PAIRS + 100)))
fi
if (( PER_ROOM > 6 )); then
  sb_flags+=(--max-peers-per-room "$PER_ROOM")
fi
per_pair=$(awk -v r="$RATE" -v p="$PAIRS" 'BEGIN { printf "%d", (r / p) + 0.999 }')
if (( per_pair > 50 )); then
  sb_flags+=(--messages-per-second $((per_pair * 2)) --message-burst $((per_pair * 4)))
fi

start switchboard "${prio[@]}" "$sb_bin" serve --http 127.0.0.1:0 --log warn "${sb_flags[@]}"
sb_pid=$started_pid sb_url=ws://127.0.0.1:$started_port/ws
start echo "${prio[@]}" "$load_bin" echo-server --listen 127.0.0.1:0 \
  --read-buffer-bytes "$ANCHOR_READ_BUFFER" --write-buffer-bytes "$ANCHOR_WRITE_BUFFER"
echo_pid=$started_pid echo_url=ws://127.0.0.1:$started_port/

# field LINE KEY: the value of KEY=VALUE in a result line.
field() { sed -n "s/.*[ ]$2=\([^ ]*\).*/\1/p" <<<"$1"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

run_load() {
  echo "+ switchboard-sigload $*" >&2
  local line
  line=$("${prio[@]}" "$load_bin" "$@" 2>"$tmp/load.err") || { cat "$tmp/load.err" >&2; exit 1; }
  [[ -s $tmp/load.err ]] && sed 's/^/  /' "$tmp/load.err" >&2
  echo "  $line" >&2
  printf '%s\n' "$line"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "switchboard ${sb_flags[*]} pid $sb_pid; echo anchor pid $echo_pid;" \
  "ulimit -n $(ulimit -n)" >&2

idle_sb=$(run_load idle --url "$sb_url" --connections "$CONNECTIONS" --per-room "$PER_ROOM" \
  --pid "$sb_pid" --mode switchboard)
idle_echo=$(run_load idle --url "$echo_url" --connections "$CONNECTIONS" --pid "$echo_pid" \
  --mode echo)
idle_default=""
if [[ $DEFAULT_BUFFER_ANCHOR == 1 ]]; then
  start echo-default "${prio[@]}" "$load_bin" echo-server --listen 127.0.0.1:0
  default_pid=$started_pid
  idle_default=$(run_load idle --url "ws://127.0.0.1:$started_port/" \
    --connections "$CONNECTIONS" --pid "$default_pid" --mode echo)
  kill "$default_pid"
fi
for line in "$idle_sb" "$idle_echo"; do
  if [[ $(field "$line" held) != "$CONNECTIONS" ]]; then
    echo "warning: not every connection was held: $line" >&2
    tail -n 20 "$tmp/switchboard.err" >&2
  fi
done

declare -A p50 p90 p99 max
for run in $(seq "$RUNS"); do
  for mode in switchboard echo; do
    if [[ $mode == switchboard ]]; then url=$sb_url; else url=$echo_url; fi
    line=$(run_load latency --url "$url" --pairs "$PAIRS" --rate "$RATE" --seconds "$DURATION" \
      --mode "$mode")
    if [[ $(field "$line" lost) != 0 || $(field "$line" errors) != 0 ]]; then
      echo "warning: run $run against $mode lost messages or saw errors" >&2
    fi
    if awk -v a="$(field "$line" achieved_rate)" -v r="$RATE" 'BEGIN { exit !(a < 0.95 * r) }'; then
      echo "warning: run $run against $mode fell behind the rate (the machine is busy?)" >&2
    fi
    p50[$mode]+=" $(field "$line" p50_us)"
    p90[$mode]+=" $(field "$line" p90_us)"
    p99[$mode]+=" $(field "$line" p99_us)"
    max[$mode]+=" $(field "$line" max_us)"
  done
done

# shellcheck disable=SC2086 # word splitting of the sample lists is intended
{
  sb_p50=$(median ${p50[switchboard]}) echo_p50=$(median ${p50[echo]})
  sb_p90=$(median ${p90[switchboard]}) echo_p90=$(median ${p90[echo]})
  sb_p99=$(median ${p99[switchboard]}) echo_p99=$(median ${p99[echo]})
  sb_max=$(median ${max[switchboard]}) echo_max=$(median ${max[echo]})
}
sb_kib=$(field "$idle_sb" rss_per_conn_kib) echo_kib=$(field "$idle_echo" rss_per_conn_kib)

echo
echo "Signaling benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -sr)," \
  "load average $load_before at start, $(cut -d' ' -f1-3 /proc/loadavg) at end"
echo "switchboard serve --http 127.0.0.1:0 ${sb_flags[*]}; ulimit -n $(ulimit -n);" \
  "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "niceness ${NICE:-0} (servers and load generator)"
echo "echo anchor: echo-server --read-buffer-bytes $ANCHOR_READ_BUFFER --write-buffer-bytes $ANCHOR_WRITE_BUFFER"
echo "idle: CONNECTIONS=$CONNECTIONS (rooms of $PER_ROOM); latency: PAIRS=$PAIRS RATE=$RATE/s" \
  "DURATION=${DURATION}s, median of RUNS=$RUNS"
echo
printf '%-34s %14s %14s %8s\n' "" "Switchboard" "echo anchor" "ratio"
printf '%-34s %14s %14s %8s\n' "idle connections held" \
  "$(field "$idle_sb" held)" "$(field "$idle_echo" held)" ""
printf '%-34s %14s %14s %8s\n' "time to open them (s)" \
  "$(field "$idle_sb" open_secs)" "$(field "$idle_echo" open_secs)" \
  "$(ratio "$(field "$idle_sb" open_secs)" "$(field "$idle_echo" open_secs)")"
printf '%-34s %14s %14s %8s\n' "server RSS per connection (KiB)" "$sb_kib" "$echo_kib" \
  "$(ratio "$sb_kib" "$echo_kib")"
printf '%-34s %14s %14s %8s\n' "latency p50 (us)" "$sb_p50" "$echo_p50" "$(ratio "$sb_p50" "$echo_p50")"
printf '%-34s %14s %14s %8s\n' "latency p90 (us)" "$sb_p90" "$echo_p90" "$(ratio "$sb_p90" "$echo_p90")"
printf '%-34s %14s %14s %8s\n' "latency p99 (us)" "$sb_p99" "$echo_p99" "$(ratio "$sb_p99" "$echo_p99")"
printf '%-34s %14s %14s %8s\n' "latency max (us)" "$sb_max" "$echo_max" "$(ratio "$sb_max" "$echo_max")"
if [[ -n $idle_default ]]; then
  default_kib=$(field "$idle_default" rss_per_conn_kib)
  echo
  echo "reference: anchor with tungstenite's default 128 KiB buffers: $default_kib KiB per" \
    "connection ($(field "$idle_default" held) held; Switchboard / it = $(ratio "$sb_kib" "$default_kib"))"
fi
echo
echo "per-run latency p50 (us): switchboard${p50[switchboard]}; echo${p50[echo]}"
echo "per-run latency p99 (us): switchboard${p99[switchboard]}; echo${p99[echo]}"
echo
echo "RATIO rss_per_conn $(ratio "$sb_kib" "$echo_kib")"
echo "RATIO latency_p50 $(ratio "$sb_p50" "$echo_p50")"
echo "RATIO latency_p99 $(ratio "$sb_p99" "$echo_p99")"
