#!/usr/bin/env bash
# Data-channel file transfer on loopback, in one run:
#   - switchboard send -> switchboard recv (CLI -> CLI), MB/s as recv reports it, time from
#     `recv` start to the first byte of data, over RUNS runs (median);
#   - CLI -> Chromium (/recv/CODE page), when the page exists;
#   - anchors: two aiortc peers in one process, and two RTCPeerConnections in one Chromium page,
#     moving the same number of bytes with the same 16 KiB messages;
#   - peak RSS of sender and receiver during a BIG_MB transfer, sampled every 0.5 s (flat =
#     the same at 10 % and at 90 % of the transfer).
# Env: SIZE_MB (default 200), BIG_MB (default 1024), RUNS (default 3), SWITCHBOARD_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
SIZE_MB=${SIZE_MB:-200}
BIG_MB=${BIG_MB:-1024}
RUNS=${RUNS:-3}
export SIZE_MB

if [[ -z "${SWITCHBOARD_BIN:-}" ]]; then
  cargo build --release -p switchboard >&2
  export SWITCHBOARD_BIN="$root/target/release/switchboard"
fi
bin=$SWITCHBOARD_BIN
python3 -c 'import aiortc' 2>/dev/null || pip install --quiet aiortc >&2
[[ -x /usr/bin/chromium ]] || { apt-get update -qq >&2 && apt-get install -y -qq chromium >&2; }
[[ -d tests/e2e/node_modules/playwright-core ]] || (cd tests/e2e && npm ci --no-audit --no-fund >&2)

work=$(mktemp -d /tmp/switchboard-transfer-bench.XXXXXX)
server_pid=""
cleanup() {
  [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true
  pkill -P $$ 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" serve --http 127.0.0.1:0 --turn 127.0.0.1:0 --media 127.0.0.1:0 --data-dir none >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do grep -q "listening on http://" "$work/serve.log" && break; sleep 0.1; done
url=$(grep -o "http://[0-9.:]*" "$work/serve.log" | head -1)
export SWITCHBOARD_SERVER=$url SWITCHBOARD_LOG=warn

head -c "$((SIZE_MB * 1000 * 1000))" /dev/urandom >"$work/file.bin"

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# One CLI -> CLI transfer of $1 with code $2; prints "MB/s first_ms".
cli_once() {
  local file=$1 code=$2 out="$work/out-$2"
  mkdir -p "$out"
  "$bin" send --code "$code" "$file" >"$work/send-$code.log" 2>&1 &
  local sender=$!
  for _ in $(seq 100); do grep -q "^Code:" "$work/send-$code.log" && break; sleep 0.1; done
  "$bin" recv --yes --out "$out" "$code" >"$work/recv-$code.log" 2>&1
  wait "$sender"
  cmp -s "$file" "$out/$(basename "$file")" || { echo "content mismatch" >&2; exit 1; }
  rm -rf "$out"
  # "Received 200.0 MB in 12.3 s (16.2 MB/s) into ...; connected after 80 ms, first data after 95 ms."
  local line; line=$(grep "^Received" "$work/recv-$code.log")
  awk -v line="$line" -v mb="$SIZE_MB" 'BEGIN {
    split(line, w, " "); secs = w[5];
    match(line, /first data after [0-9]+/); first = substr(line, RSTART + 17, RLENGTH - 17);
    printf "%.1f %d\n", mb / secs, first }'
}

echo "== CLI -> CLI, ${SIZE_MB} MB, ${RUNS} runs"
: >"$work/cli"
for i in $(seq "$RUNS"); do
  r=$(cli_once "$work/file.bin" "$((100 + i))-tiger-orbit")
  echo "  run $i: ${r% *} MB/s, first data after ${r#* } ms"; echo "$r" >>"$work/cli"
done
cli=$(cut -d' ' -f1 "$work/cli" | median)
first=$(cut -d' ' -f2 "$work/cli" | median)

echo "== aiortc -> aiortc (one process), ${SIZE_MB} MB, ${RUNS} runs"
: >"$work/aiortc"
for i in $(seq "$RUNS"); do
  r=$(python3 bench/transfer/aiortc_pair.py | awk '{print $3}'); echo "  run $i: $r MB/s"; echo "$r" >>"$work/aiortc"
done
aiortc=$(median <"$work/aiortc")

echo "== Chromium -> Chromium (one page), ${SIZE_MB} MB, ${RUNS} runs"
: >"$work/chromium"
for i in $(seq "$RUNS"); do
  r=$(node bench/transfer/chromium_pair.mjs 2>/dev/null | awk '/MB\/s/ {print $3}'); echo "  run $i: $r MB/s"; echo "$r" >>"$work/chromium"
done
chromium=$(median <"$work/chromium")

cli_chromium=n/a
if [[ -f bench/transfer/cli_to_chromium.mjs ]]; then
  echo "== CLI -> Chromium (/recv page), ${SIZE_MB} MB, ${RUNS} runs"
  : >"$work/clichr"
  for i in $(seq "$RUNS"); do
    r=$(SWITCHBOARD_BIN="$bin" FILE="$work/file.bin" CODE="$((200 + i))-tiger-orbit" node bench/transfer/cli_to_chromium.mjs 2>/dev/null | awk '/MB\/s/ {print $3}')
    echo "  run $i: $r MB/s"; echo "$r" >>"$work/clichr"
  done
  cli_chromium=$(median <"$work/clichr")
fi

echo "== memory: CLI -> CLI, ${BIG_MB} MB"
head -c "$((BIG_MB * 1000 * 1000))" /dev/urandom >"$work/big.bin"
rm -f "$work/file.bin"
mkdir -p "$work/out-big"
"$bin" send --code 300-tiger-orbit "$work/big.bin" >"$work/send-big.log" 2>&1 &
sender=$!
for _ in $(seq 600); do grep -q "^Code:" "$work/send-big.log" && break; sleep 0.1; done
"$bin" recv --yes --out "$work/out-big" 300-tiger-orbit >"$work/recv-big.log" 2>&1 &
receiver=$!
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
: >"$work/rss"
while kill -0 "$receiver" 2>/dev/null; do
  part=$(stat -c %s "$work/out-big/big.bin.part" 2>/dev/null || echo 0)
  echo "$part $(rss "$sender") $(rss "$receiver")" >>"$work/rss"
  sleep 0.5
done
wait "$receiver"; wait "$sender"
cmp -s "$work/big.bin" "$work/out-big/big.bin" || { echo "content mismatch (big)" >&2; exit 1; }
big=$((BIG_MB * 1000 * 1000))
read -r s10 r10 < <(awk -v t=$((big / 10)) '$1 >= t && $2 > 0 {print $2, $3; exit}' "$work/rss")
read -r s90 r90 < <(awk -v t=$((big * 9 / 10)) '$1 >= t && $2 > 0 {print $2, $3; exit}' "$work/rss")
speak=$(awk '{if ($2 > m) m = $2} END {print m}' "$work/rss")
rpeak=$(awk '{if ($3 > m) m = $3} END {print m}' "$work/rss")
bigrate=$(grep -o "([0-9.]* MB/s)" "$work/recv-big.log" | tr -d '()')

echo
echo "== results (medians of ${RUNS}; MB = 10^6 bytes)"
printf "CLI -> CLI            %6s MB/s\n" "$cli"
printf "CLI -> Chromium       %6s MB/s\n" "$cli_chromium"
printf "aiortc -> aiortc      %6s MB/s   CLI/aiortc   = %s\n" "$aiortc" "$(awk -v a="$cli" -v b="$aiortc" 'BEGIN {printf "%.2f", a / b}')"
printf "Chromium -> Chromium  %6s MB/s   CLI/Chromium = %s\n" "$chromium" "$(awk -v a="$cli" -v b="$chromium" 'BEGIN {printf "%.2f", a / b}')"
printf "recv start -> first data byte: %s ms\n" "$first"
printf "%s MB transfer (%s): sender RSS %s KiB at 10%%, %s KiB at 90%%, peak %s KiB; receiver %s / %s / %s KiB\n" \
  "$BIG_MB" "$bigrate" "$s10" "$s90" "$speak" "$r10" "$r90" "$rpeak"
