#!/usr/bin/env bash
# Runs the browser tests: installs Chromium (apt) and playwright-core (npm ci)
# when missing, builds the debug server unless SWITCHBOARD_BIN is set, then
# runs every *.test.mjs with Node's test runner, one file at a time.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)

if [[ ! -x /usr/bin/chromium ]]; then
  echo "installing chromium (apt)" >&2
  apt-get update -qq >&2 && apt-get install -y -qq chromium >&2
fi
if [[ ! -d node_modules/playwright-core ]]; then
  npm ci --no-audit --no-fund >&2
fi
if [[ -z "${SWITCHBOARD_BIN:-}" ]]; then
  (cd "$root" && cargo build -p switchboard >&2)
fi

exec node --test --test-concurrency=1 --test-timeout=240000 "$@"
