#!/usr/bin/env bash
# The connectivity lab (docs/connectivity.md): builds namespaced networks with NATs, a firewall
# and impaired links, runs Switchboard, coturn, the native peer and Chromium in them, and checks
# which candidate pair carried each call and transfer. Needs root (namespaces, iptables).
#
# Installs what is missing: iproute2, iptables, coturn, chromium (Debian); playwright-core (npm
# ci in tests/e2e). Builds the switchboard binary and netlab-delayer (debug) unless
# SWITCHBOARD_BIN / NETLAB_DELAYER are set. Everything it creates is removed on exit, also when
# a case fails.
#
# Usage: tests/netlab/run.sh [--no-install] [extra node --test arguments]
#   NETLAB_RESULTS=FILE  also write the matrix (markdown) to FILE
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

install=1
if [[ ${1:-} == --no-install ]]; then install=0; shift; fi
if [[ $(id -u) != 0 ]]; then
  echo "tests/netlab/run.sh needs root (network namespaces, iptables)" >&2
  exit 1
fi

if [[ $install == 1 ]]; then
  packages=()
  command -v ip >/dev/null || packages+=(iproute2)
  command -v iptables >/dev/null || packages+=(iptables)
  command -v turnserver >/dev/null || packages+=(coturn)
  command -v chromium >/dev/null || packages+=(chromium)
  if [[ ${#packages[@]} -gt 0 ]]; then
    echo "installing ${packages[*]} (Debian)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq "${packages[@]}" >/dev/null
  fi
  if [[ ! -d $root/tests/e2e/node_modules/playwright-core ]]; then
    (cd "$root/tests/e2e" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
fi
# coturn's package starts a system service on install; the lab runs its own.
systemctl stop coturn >/dev/null 2>&1 || true

target=${CARGO_TARGET_DIR:-$root/target}
if [[ -z ${SWITCHBOARD_BIN:-} || -z ${NETLAB_DELAYER:-} ]]; then
  (cd "$root" && cargo build --locked -q -p switchboard -p switchboard-netlab-delayer >&2)
fi
export SWITCHBOARD_BIN=${SWITCHBOARD_BIN:-$target/debug/switchboard}
export NETLAB_DELAYER=${NETLAB_DELAYER:-$target/debug/netlab-delayer}

# Unique per run, short (namespace names show up in `ip netns list`).
export NETLAB_PREFIX="nl$$"
trap '"$here/net.sh" down "$NETLAB_PREFIX"' EXIT
"$here/net.sh" up "$NETLAB_PREFIX"

cd "$here"
node --test --test-concurrency=1 --test-reporter=spec "$@" lab.test.mjs
