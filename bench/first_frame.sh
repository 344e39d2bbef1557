#!/usr/bin/env bash
# Time to first remote video frame through Switchboard (second page opening
# /r/NAME) against an in-page RTCPeerConnection pair as the anchor; prints both
# medians and their ratio. Builds the release binary unless SWITCHBOARD_BIN is
# set. Env: RUNS (default 7).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [[ -z "${SWITCHBOARD_BIN:-}" ]]; then
  cargo build --release -p switchboard >&2
  export SWITCHBOARD_BIN="$root/target/release/switchboard"
fi
[[ -x "$SWITCHBOARD_BIN" ]] || { echo "no server binary at $SWITCHBOARD_BIN" >&2; exit 1; }

if [[ ! -x /usr/bin/chromium ]]; then
  echo "installing chromium (apt)" >&2
  apt-get update -qq >&2 && apt-get install -y -qq chromium >&2
fi
if [[ ! -d tests/e2e/node_modules/playwright-core ]]; then
  (cd tests/e2e && npm ci --no-audit --no-fund >&2)
fi

exec node bench/first_frame.mjs
