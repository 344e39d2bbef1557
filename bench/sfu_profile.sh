#!/usr/bin/env bash
# The SFU core's cost per forwarded datagram, in instructions: crates/sfu/examples/fanout.rs runs
# one publisher and N viewers (real str0m peers on a virtual clock, no sockets) and routes every
# SFU call after the connections are up through one function, which callgrind counts alone.
# Instruction counts repeat exactly for the same build and inputs, whatever else the machine is
# doing, so this is the figure to compare two versions of the forwarding code (bench/sfu.sh
# measures the whole server with its system calls, but needs a quiet machine).
#
# Env: AUDIO_VIEWERS (100), VIDEO_VIEWERS (50), SECONDS_AUDIO (5), SECONDS_VIDEO (3) of virtual
# time.
# Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."

AUDIO_VIEWERS=${AUDIO_VIEWERS:-100}
VIDEO_VIEWERS=${VIDEO_VIEWERS:-50}
command -v valgrind >/dev/null || { echo "valgrind is needed" >&2; exit 2; }
cargo build --release --locked -p switchboard-sfu --example fanout >&2
bin="${CARGO_TARGET_DIR:-target}/release/examples/fanout"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

profile() {
  local kind=$1 viewers=$2 seconds=$3
  valgrind --tool=callgrind --callgrind-out-file="$work/$kind.out" \
    --toggle-collect='fanout::measured*' "$bin" "$viewers" "$seconds" "$kind" \
    >"$work/$kind.txt" 2>"$work/$kind.err"
  local instructions out
  instructions=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/$kind.err")
  out=$(sed -n 's/.*datagrams in [0-9]* out \([0-9]*\);.*/\1/p' "$work/$kind.txt")
  grep viewers "$work/$kind.txt" | sed 's/; time in the SFU.*//'
  python3 -c 'import sys; i, o = map(int, sys.argv[1:]); print(f"  SFU instructions: {i:,}, per datagram out: {i / o:,.0f}")' \
    "$instructions" "$out"
}

profile audio "$AUDIO_VIEWERS" "${SECONDS_AUDIO:-5}"
profile video "$VIDEO_VIEWERS" "${SECONDS_VIDEO:-3}"
