#!/usr/bin/env bash
# TURN benchmark: server CPU time per relayed packet, per STUN Binding and per allocation, for
# `switchboard turn` against coturn's `turnserver` as the anchor, both started here on 127.0.0.1
# with the same credentials (coturn-compatible REST secret) and loopback peers allowed.
#
#   relay:      turnutils_uclient -m CLIENTS -n MESSAGES -l LENGTH -z INTERVAL -c through each
#               server to a turnutils_peer echo peer, for each of MODES: udp-channel (ChannelData
#               over UDP), udp-send (Send/Data indications, -s), tcp-channel (ChannelData over
#               TCP, -t). Packets relayed = messages the client sent + messages it got back (both
#               directions through the server; echoes the client itself dropped are not counted,
#               so a lossy run overstates the cost: a run with more than MAX_LOSS % not echoed
#               back is repeated, up to RELAY_ATTEMPTS times). uclient paces itself (about 300
#               messages/s per client) and waits about 10 s for stragglers after any loss, so its
#               packets/s is only logged, not compared.
#   flood:      one allocation, ChannelData over UDP to the same echo peer, FLOOD_WINDOW packets in
#               flight (closed loop) for FLOOD_SECONDS: packets/s is what the load generator
#               (python3, on CLIENT_CPU) can drive, and CPU per packet at that rate.
#   binding:    STUN Binding requests from one socket, WINDOW outstanding, for STUN_SECONDS.
#   allocation: for ALLOC_SECONDS, from a new socket each time: Allocate (401 challenge),
#               authenticated Allocate, Refresh LIFETIME=0.
#   idle:       both servers left alone for IDLE_SECONDS after the runs.
#
# Server CPU = utime + stime from /proc/PID/stat, before and after each run (all threads). The
# servers are pinned to SERVER_CPU and every client to CLIENT_CPU (taskset). Runs alternate
# between the servers; RUNS of each; medians reported, with switchboard / coturn ratios
# (below 1 means Switchboard uses less CPU).
#
# Needs coturn (installed here with apt-get if missing) and python3 (the Binding and Allocate
# loads). Env: RUNS (3), CLIENTS (10; uclient makes 2 allocations per client and Switchboard's
# default quota is 128 per user), MESSAGES (3000), LENGTH (100), INTERVAL (0 ms),
# MODES ("udp-channel udp-send tcp-channel"), FLOOD_SECONDS (5), FLOOD_WINDOW (32),
# MAX_LOSS (2), RELAY_ATTEMPTS (3), STUN_SECONDS (5), WINDOW (16), ALLOC_SECONDS (5), IDLE_SECONDS (10),
# HOLD (1000 allocations held at once for the memory figure), SERVER_CPU (0), CLIENT_CPU (1), COTURN_RELAY_PORTS (20000-24999),
# SWITCHBOARD_RELAY_PORTS (25000-29999), SWITCHBOARD_BIN (default: cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-10}
MESSAGES=${MESSAGES:-3000}
LENGTH=${LENGTH:-100}
INTERVAL=${INTERVAL:-0}
MODES=${MODES:-"udp-channel udp-send tcp-channel"}
MAX_LOSS=${MAX_LOSS:-2}
RELAY_ATTEMPTS=${RELAY_ATTEMPTS:-3}
FLOOD_SECONDS=${FLOOD_SECONDS:-5}
FLOOD_WINDOW=${FLOOD_WINDOW:-32}
STUN_SECONDS=${STUN_SECONDS:-5}
WINDOW=${WINDOW:-16}
ALLOC_SECONDS=${ALLOC_SECONDS:-5}
HOLD=${HOLD:-1000}
IDLE_SECONDS=${IDLE_SECONDS:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
COTURN_RELAY_PORTS=${COTURN_RELAY_PORTS:-20000-24999}
SWITCHBOARD_RELAY_PORTS=${SWITCHBOARD_RELAY_PORTS:-25000-29999}

SECRET="bench-turn-shared-secret-$RANDOM$RANDOM"
REALM=bench.local

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if ! command -v turnutils_uclient >/dev/null || ! command -v turnserver >/dev/null; then
  log "installing coturn (apt-get install coturn)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq coturn >&2
fi
for tool in turnserver turnutils_uclient turnutils_peer turnutils_stunclient python3 taskset; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install coturn python3 util-linux)"
done

if [[ -z "${SWITCHBOARD_BIN:-}" ]]; then
  cargo build --release --locked -p switchboard >&2
  SWITCHBOARD_BIN=$PWD/target/release/switchboard
fi
[[ -x "$SWITCHBOARD_BIN" ]] || die "no server binary at $SWITCHBOARD_BIN"

tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The Binding/Allocate load generator and small helpers (loopback only, bounded in time).
cat >"$tmp/stunload.py" <<'PY'
import base64, hashlib, hmac, os, socket, struct, sys, time, zlib

MAGIC = 0x2112A442
HOST = "127.0.0.1"


def attr(kind, value):
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def header(kind, length, txid):
    return struct.pack("!HHI", kind, length, MAGIC) + txid


def signed(kind, attrs, txid, key):
    """MESSAGE-INTEGRITY (RFC 8489 14.5), then FINGERPRINT (14.7)."""
    body = b"".join(attrs)
    mac = hmac.new(key, header(kind, len(body) + 24, txid) + body, hashlib.sha1).digest()
    body += attr(0x0008, mac)
    crc = zlib.crc32(header(kind, len(body) + 8, txid) + body) ^ 0x5354554E
    body += attr(0x8028, struct.pack("!I", crc & 0xFFFFFFFF))
    return header(kind, len(body), txid) + body


def parse(data):
    kind, length, magic = struct.unpack_from("!HHI", data)
    if magic != MAGIC or len(data) < 20 + length:
        raise ValueError("not a STUN message")
    attrs, i = {}, 20
    while i + 4 <= 20 + length:
        t, n = struct.unpack_from("!HH", data, i)
        attrs.setdefault(t, data[i + 4 : i + 4 + n])
        i += 4 + n + (-n % 4)
    return kind, data[8:20], attrs


def error(attrs):
    code = attrs.get(0x0009, b"\0\0\0\0")
    return f"{code[2] * 100 + code[3]} {code[4:].decode(errors='replace')}"


def binding(src, port, seconds, window):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.connect((HOST, port))
    s.settimeout(0.5)
    pending = set()

    def send():
        txid = os.urandom(12)
        pending.add(txid)
        s.send(header(0x0001, 0, txid))

    done = timeouts = 0
    checked = False
    deadline = time.monotonic() + seconds
    for _ in range(window):
        send()
    while time.monotonic() < deadline:
        try:
            data = s.recv(2048)
        except socket.timeout:
            timeouts += 1
            pending.clear()
            for _ in range(window):
                send()
            continue
        kind, txid, attrs = parse(data)
        if kind != 0x0101 or txid not in pending:
            continue
        pending.discard(txid)
        if not checked:
            value = attrs[0x0020]  # XOR-MAPPED-ADDRESS
            port_ = struct.unpack_from("!H", value, 2)[0] ^ (MAGIC >> 16)
            ip = socket.inet_ntoa(struct.pack("!I", struct.unpack_from("!I", value, 4)[0] ^ MAGIC))
            if (ip, port_) != s.getsockname():
                sys.exit(f"XOR-MAPPED-ADDRESS {ip}:{port_} is not {s.getsockname()}")
            checked = True
        done += 1
        send()
    print(f"count={done} failures={timeouts}")


def transact(s, txid):
    while True:
        data = s.recv(2048)
        if data[0] >> 6 == 1:
            continue  # ChannelData still in flight (RFC 8656 12.4)
        kind, rtxid, attrs = parse(data)
        if rtxid == txid:
            return kind, attrs


def credentials(s, secret, transport, name="bench"):
    """Allocate on socket s: 401 challenge, then REST credentials. Returns (auth attrs, key)."""
    txid = os.urandom(12)
    s.send(header(0x0003, len(transport), txid) + transport)
    kind, attrs = transact(s, txid)
    if kind != 0x0113 or 0x0015 not in attrs:
        raise RuntimeError(f"expected 401 with a NONCE, got {kind:#06x} {error(attrs)}")
    realm, nonce = attrs[0x0014], attrs[0x0015]
    # coturn-compatible REST credentials: EXPIRY:NAME, base64(HMAC-SHA1(secret, username)).
    user = f"{int(time.time()) + 3600}:{name}".encode()
    password = base64.b64encode(hmac.new(secret, user, hashlib.sha1).digest())
    key = hashlib.md5(user + b":" + realm + b":" + password).digest()
    auth = [attr(0x0006, user), attr(0x0014, realm), attr(0x0015, nonce)]
    txid = os.urandom(12)
    s.send(signed(0x0003, [transport] + auth, txid, key))
    kind, attrs = transact(s, txid)
    if kind != 0x0103:
        raise RuntimeError(f"Allocate: {kind:#06x} {error(attrs)}")
    return auth, key


def request(s, method, attrs, auth, key):
    txid = os.urandom(12)
    s.send(signed(method, attrs + auth, txid, key))
    kind, rattrs = transact(s, txid)
    if kind != method | 0x0100:
        raise RuntimeError(f"{method:#06x}: {kind:#06x} {error(rattrs)}")


def flood(src, port, peer_port, seconds, window, secret):
    """ChannelData to an echo peer through the server, WINDOW in flight (closed loop)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.connect((HOST, port))
    s.settimeout(1.0)
    auth, key = credentials(s, secret, attr(0x0019, b"\x11\0\0\0"))
    peer = struct.pack("!BBH", 0, 1, peer_port ^ (MAGIC >> 16))
    peer += struct.pack("!I", struct.unpack("!I", socket.inet_aton(HOST))[0] ^ MAGIC)
    channel = 0x4000
    request(s, 0x0009, [attr(0x000C, struct.pack("!HH", channel, 0)), attr(0x0012, peer)], auth, key)
    payload = os.urandom(100)
    packet = struct.pack("!HH", channel, len(payload)) + payload
    s.settimeout(0.5)
    done = timeouts = 0
    for _ in range(window):
        s.send(packet)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = s.recv(2048)
        except socket.timeout:
            timeouts += 1
            for _ in range(window):
                s.send(packet)
            continue
        if data[:2] == packet[:2] and data[4 : 4 + len(payload)] == payload:
            done += 1
            s.send(packet)
    s.settimeout(1.0)
    request(s, 0x0004, [attr(0x000D, b"\0\0\0\0")], auth, key)
    # Each round trip is two relayed packets: client to peer, peer to client.
    print(f"count={2 * done} failures={timeouts}")


def allocate(src, port, seconds, secret):
    done = failures = 0
    used = set()
    transport = attr(0x0019, b"\x11\0\0\0")  # REQUESTED-TRANSPORT: UDP
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 0))
        # A 5-tuple used before may still have an allocation (437): skip it.
        if s.getsockname()[1] in used:
            s.close()
            continue
        used.add(s.getsockname()[1])
        s.settimeout(1.0)
        s.connect((HOST, port))
        try:
            auth, key = credentials(s, secret, transport)
            request(s, 0x0004, [attr(0x000D, b"\0\0\0\0")], auth, key)
            done += 1
        except (socket.timeout, RuntimeError, ValueError, KeyError) as err:
            failures += 1
            if failures <= 3:
                print(f"allocation failed: {err!r}", file=sys.stderr)
        finally:
            s.close()
    print(f"count={done} failures={failures}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def hold(src, port, count, secret, pid):
    """COUNT allocations held at once: the server's RSS before and after, then all released."""
    transport = attr(0x0019, b"\x11\0\0\0")
    held = []
    before = rss_kib(pid)
    failures = 0
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 0))
        s.settimeout(1.0)
        s.connect((HOST, port))
        try:
            # A user of its own per allocation, so per-user quotas do not apply.
            auth, key = credentials(s, secret, transport, f"hold{i}")
            held.append((s, auth, key))
        except (socket.timeout, RuntimeError, ValueError, KeyError):
            failures += 1
            s.close()
    time.sleep(1.0)
    after = rss_kib(pid)
    for s, auth, key in held:
        try:
            request(s, 0x0004, [attr(0x000D, b"\0\0\0\0")], auth, key)
        except (socket.timeout, RuntimeError):
            pass
        s.close()
    print(f"count={len(held)} rss_before={before} rss_after={after} failures={failures}")


def free_port(pair):
    """A port free for TCP and UDP (and port+1 for UDP when pair), below the relay ranges."""
    while True:
        t = socket.socket()
        t.bind((HOST, 0))
        port = t.getsockname()[1]
        try:
            socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(1 + pair)]
            for i, u in enumerate(socks):
                u.bind((HOST, port + i))
        except OSError:
            continue
        finally:
            t.close()
        for u in socks:
            u.close()
        print(port)
        return


def echoes(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.1)
    for _ in range(100):
        s.sendto(b"ping", (HOST, port))
        try:
            if s.recv(64) == b"ping":
                return
        except (socket.timeout, ConnectionRefusedError):
            pass
    sys.exit(f"nothing echoes on {port}")


mode = sys.argv[1]
if mode == "binding":
    binding(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
elif mode == "allocate":
    allocate(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5].encode())
elif mode == "flood":
    flood(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]),
          sys.argv[7].encode())
elif mode == "hold":
    hold(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].encode(), int(sys.argv[6]))
elif mode == "free-port":
    free_port(len(sys.argv) > 2)
elif mode == "echoes":
    echoes(int(sys.argv[2]))
PY
load() { python3 "$tmp/stunload.py" "$@"; }

clk_tck=$(getconf CLK_TCK)
# utime + stime in clock ticks; fields 14 and 15 of /proc/PID/stat, counted after "(comm)".
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# --- servers and peer ---------------------------------------------------------------------
coturn_port=$(load free-port)
log "starting coturn $(dpkg-query -W -f='${Version}' coturn 2>/dev/null || true) on 127.0.0.1:$coturn_port"
taskset -c "$SERVER_CPU" turnserver -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 \
  --listening-port="$coturn_port" --min-port="${COTURN_RELAY_PORTS%-*}" \
  --max-port="${COTURN_RELAY_PORTS#*-}" --use-auth-secret --static-auth-secret="$SECRET" \
  --realm="$REALM" --fingerprint --no-tls --no-dtls --no-cli --allow-loopback-peers \
  --log-file=stdout --simple-log --pidfile="$tmp/turnserver.pid" --userdb="$tmp/turndb" \
  >"$tmp/coturn.log" 2>&1 &
coturn_pid=$!
pids+=("$coturn_pid")

log "starting switchboard turn ($SWITCHBOARD_BIN)"
# The Binding and Allocate loads come from one address: the per-source limit on requests
# without credentials is off, as coturn has none.
taskset -c "$SERVER_CPU" "$SWITCHBOARD_BIN" turn --turn 127.0.0.1:0 --turn-secret "$SECRET" \
  --turn-realm "$REALM" --relay-ports "$SWITCHBOARD_RELAY_PORTS" --dangerous-allow-loopback-peers \
  --turn-unauthenticated-per-sec 0 >"$tmp/switchboard.out" 2>"$tmp/switchboard.log" &
switchboard_pid=$!
pids+=("$switchboard_pid")

peer_port=$(load free-port pair)
taskset -c "$CLIENT_CPU" turnutils_peer -L 127.0.0.1 -p "$peer_port" >"$tmp/peer.log" 2>&1 &
pids+=("$!")

switchboard_port=
for _ in $(seq 300); do
  switchboard_port=$(sed -n 's/^switchboard: TURN listening on 127\.0\.0\.1:\([0-9]*\) (udp, tcp)$/\1/p' \
    "$tmp/switchboard.out")
  [[ -n "$switchboard_port" ]] && break
  kill -0 "$switchboard_pid" 2>/dev/null || { cat "$tmp/switchboard.log" >&2; die "switchboard turn exited"; }
  sleep 0.1
done
[[ -n "$switchboard_port" ]] || die "switchboard turn printed no ready line"

# Both must answer turnutils_stunclient before any load.
for target in "coturn $coturn_port" "switchboard $switchboard_port"; do
  set -- $target
  ok=0
  for _ in $(seq 50); do
    if timeout 2 turnutils_stunclient -p "$2" 127.0.0.1 2>&1 | grep -q 'UDP reflexive addr: 127.0.0.1:'; then
      ok=1
      break
    fi
    sleep 0.2
  done
  ((ok)) || { cat "$tmp/$1.log" >&2; die "$1 does not answer turnutils_stunclient on $2"; }
done
load echoes "$peer_port"
log "coturn 127.0.0.1:$coturn_port (pid $coturn_pid), switchboard 127.0.0.1:$switchboard_port" \
  "(pid $switchboard_pid), peer 127.0.0.1:$peer_port"

# --- measurements -------------------------------------------------------------------------
results=$tmp/results # lines: METRIC SERVER VALUE
run_index=0

relay() { # SERVER PID PORT MODE
  local attempt line
  for attempt in $(seq "$RELAY_ATTEMPTS"); do
    line=$(relay_once "$@")
    # A lossy run (the client starved of CPU) is repeated: see the header.
    if awk -v l="$(awk '$1 ~ /-loss$/ { print $3 }' <<<"$line")" -v m="$MAX_LOSS" 'BEGIN { exit !(l <= m) }'; then
      break
    fi
    ((attempt < RELAY_ATTEMPTS)) && log "  (more than $MAX_LOSS % not echoed back: run again)"
  done
  printf '%s\n' "$line" >>"$results"
}

relay_once() { # SERVER PID PORT MODE
  local server=$1 pid=$2 port=$3 mode=$4 flags=() out before after start end sent recv
  case $mode in
    udp-channel) flags=() ;;
    udp-send) flags=(-s) ;;
    tcp-channel) flags=(-t) ;;
    tcp-send) flags=(-t -s) ;;
    *) die "unknown mode $mode" ;;
  esac
  run_index=$((run_index + 1))
  out=$tmp/uclient-$run_index.log
  before=$(cpu_ticks "$pid")
  start=$(date +%s.%N)
  # A username of its own per run: uclient leaves allocations behind, and per-user quotas apply.
  if ! timeout 600 taskset -c "$CLIENT_CPU" turnutils_uclient "${flags[@]}" -c -u "run$run_index" -W "$SECRET" \
    -e 127.0.0.1 -r "$peer_port" -p "$port" -m "$CLIENTS" -n "$MESSAGES" -l "$LENGTH" \
    -z "$INTERVAL" 127.0.0.1 >"$out" 2>&1; then
    tail -5 "$out" >&2
    die "turnutils_uclient failed against $server ($mode)"
  fi
  end=$(date +%s.%N)
  after=$(cpu_ticks "$pid")
  read -r sent recv < <(sed -n 's/.*start_mclient: tot_send_msgs=\([0-9]*\), tot_recv_msgs=\([0-9]*\)$/\1 \2/p' "$out" | tail -1) || true
  [[ -n "${sent:-}" ]] || { tail -5 "$out" >&2; die "no summary from turnutils_uclient"; }
  awk -v s="$sent" -v r="$recv" -v t="$((after - before))" -v hz="$clk_tck" -v a="$start" -v b="$end" \
    -v m="$mode" -v srv="$server" 'BEGIN {
      relayed = s + r; us = t * 1e6 / hz
      printf "%s-us %s %.3f\n", m, srv, us / relayed
      printf "%s-pps %s %.0f\n", m, srv, relayed / (b - a)
      printf "%s-loss %s %.2f\n", m, srv, (s - r) * 100 / s
      printf "  %-11s %-11s sent %6d back %6d  cpu %7.0f ms  %6.2f us/packet  %6.0f packets/s  %4.1f s\n", \
        m, srv, s, r, us / 1000, us / relayed, relayed / (b - a), b - a > "/dev/stderr"
    }'
}

stun() { # SERVER PID PORT KIND(binding|allocate|flood)
  local server=$1 pid=$2 port=$3 kind=$4 seconds args before after line count failures src
  run_index=$((run_index + 1))
  # A source address of its own per run (127.0.0.0/8), so 5-tuples never repeat across runs.
  src=127.0.$((run_index / 250 + 1)).$((run_index % 250 + 2))
  case $kind in
    binding) seconds=$STUN_SECONDS; args=("$src" "$port" "$seconds" "$WINDOW") ;;
    allocate) seconds=$ALLOC_SECONDS; args=("$src" "$port" "$seconds" "$SECRET") ;;
    flood) seconds=$FLOOD_SECONDS; args=("$src" "$port" "$peer_port" "$seconds" "$FLOOD_WINDOW" "$SECRET") ;;
  esac
  before=$(cpu_ticks "$pid")
  line=$(timeout $((seconds + 60)) taskset -c "$CLIENT_CPU" python3 "$tmp/stunload.py" "$kind" "${args[@]}")
  after=$(cpu_ticks "$pid")
  count=$(sed -n 's/^count=\([0-9]*\) .*/\1/p' <<<"$line")
  failures=$(sed -n 's/.*failures=\([0-9]*\)$/\1/p' <<<"$line")
  ((count > 0)) || die "no successful $kind against $server: $line"
  awk -v n="$count" -v f="$failures" -v t="$((after - before))" -v hz="$clk_tck" -v d="$seconds" \
    -v k="$kind" -v srv="$server" 'BEGIN {
      us = t * 1e6 / hz
      printf "%s-us %s %.3f\n", k, srv, us / n
      printf "%s-rate %s %.0f\n", k, srv, n / d
      printf "  %-11s %-11s count %7d failed %3d  cpu %7.0f ms  %7.2f us each  %6.0f /s\n", \
        k, srv, n, f, us / 1000, us / n, n / d > "/dev/stderr"
    }' >>"$results"
}

for rep in $(seq "$RUNS"); do
  log "run $rep/$RUNS"
  # Alternate which server goes first.
  if ((rep % 2)); then order="coturn switchboard"; else order="switchboard coturn"; fi
  for mode in $MODES flood binding allocate; do
    for server in $order; do
      if [[ $server == coturn ]]; then pid=$coturn_pid port=$coturn_port; else pid=$switchboard_pid port=$switchboard_port; fi
      kill -0 "$pid" 2>/dev/null || die "$server exited"
      case $mode in
        flood | binding | allocate) stun "$server" "$pid" "$port" "$mode" ;;
        *) relay "$server" "$pid" "$port" "$mode" ;;
      esac
    done
  done
done

# Memory per allocation: HOLD allocations at once (each the client's own socket), server RSS
# before and after.
ulimit -n 8192 2>/dev/null || true
for server in coturn switchboard; do
  if [[ $server == coturn ]]; then pid=$coturn_pid port=$coturn_port; else pid=$switchboard_pid port=$switchboard_port; fi
  line=$(timeout 300 taskset -c "$CLIENT_CPU" python3 "$tmp/stunload.py" hold 127.0.9.$((RANDOM % 200 + 2)) "$port" "$HOLD" "$SECRET" "$pid")
  awk -v srv="$server" -v line="$line" 'BEGIN {
    split(line, kv, /[ =]/); n = kv[2]; b = kv[4]; a = kv[6]
    printf "hold-kib %s %.2f\n", srv, (a - b) / n
    printf "  hold        %-11s %d allocations held, RSS %d -> %d KiB, %.2f KiB each\n", srv, n, b, a, (a - b) / n > "/dev/stderr"
  }' >>"$results"
done

# Idle cost after the runs (uclient leaves one allocation per client behind on both servers).
c0=$(cpu_ticks "$coturn_pid") s0=$(cpu_ticks "$switchboard_pid")
sleep "$IDLE_SECONDS"
c1=$(cpu_ticks "$coturn_pid") s1=$(cpu_ticks "$switchboard_pid")
awk -v c="$((c1 - c0))" -v s="$((s1 - s0))" -v hz="$clk_tck" -v d="$IDLE_SECONDS" 'BEGIN {
  printf "idle-ms coturn %.2f\nidle-ms switchboard %.2f\n", c * 1000 / hz / d, s * 1000 / hz / d
}' >>"$results"

# --- report -------------------------------------------------------------------------------
value() { awk -v m="$1" -v s="$2" '$1 == m && $2 == s { print $3 }' "$results" | median; }
row() { # LABEL METRIC FORMAT [no-ratio]
  local c s
  c=$(value "$2" coturn)
  s=$(value "$2" switchboard)
  awk -v l="$1" -v c="$c" -v s="$s" -v f="$3" -v r="${4:-}" 'BEGIN {
    printf "| %s | " f " | " f " | %s |\n", l, c, s, (c > 0 && r == "" ? sprintf("%.2f", s / c) : "")
  }'
}

echo
echo "TURN: medians of $RUNS runs; server pinned to CPU $SERVER_CPU, clients to CPU $CLIENT_CPU"
echo "uclient: -m $CLIENTS -n $MESSAGES -l $LENGTH -z $INTERVAL -c; flood window $FLOOD_WINDOW for ${FLOOD_SECONDS}s; binding window $WINDOW for ${STUN_SECONDS}s; allocations for ${ALLOC_SECONDS}s"
echo "coturn $(dpkg-query -W -f='${Version}' coturn 2>/dev/null || echo '?'), switchboard $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "| metric | coturn | switchboard | switchboard / coturn |"
echo "| --- | ---: | ---: | ---: |"
for mode in $MODES; do
  row "$mode: server CPU µs per relayed packet" "$mode-us" "%.2f"
  row "$mode: messages not echoed back, %" "$mode-loss" "%.2f" no-ratio
done
row "flood (UDP ChannelData, closed loop): server CPU µs per relayed packet" flood-us "%.2f"
row "flood: packets/s relayed" flood-rate "%.0f"
row "STUN Binding: server CPU µs per request" binding-us "%.2f"
row "STUN Binding: requests/s" binding-rate "%.0f"
row "Allocate+Refresh(0): server CPU µs per allocation" allocate-us "%.1f"
row "Allocate+Refresh(0): allocations/s" allocate-rate "%.0f"
row "memory per allocation ($HOLD held at once): server RSS KiB each" hold-kib "%.2f"
row "idle after the runs: server CPU ms per second" idle-ms "%.1f" no-ratio
