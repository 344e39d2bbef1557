#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time, one after the other, and prints per
# target the executions, the seconds run and the crashes found, then the totals (CPU-hours:
# one libFuzzer process per target). Installs cargo-fuzz when missing. The sanitizer flags need
# nightly features; RUSTC_BOOTSTRAP=1 enables them on the stable toolchain.
#
# Env: FUZZ_SECONDS per target (default 180), FUZZ_TARGETS (default: all, space-separated),
#      FUZZ_NICE (default 10). The corpus is kept in fuzz/corpus/TARGET, crashes in
#      fuzz/artifacts/TARGET (both ignored by git).
# Exit status: 1 when any target crashed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-180}
niceness=${FUZZ_NICE:-10}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz >&2
fi

targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
echo "building fuzz targets: $(echo $targets)" >&2
nice -n "$niceness" cargo fuzz build >&2

total_execs=0
total_secs=0
total_crashes=0
printf '%-18s %14s %8s %8s\n' target executions seconds crashes
for target in $targets; do
  mkdir -p "corpus/$target" "artifacts/$target"
  before=$(find "artifacts/$target" -type f | wc -l)
  log=$(mktemp)
  start=$(date +%s)
  # A crash stops this target's run (libFuzzer exits non-zero); the next target still runs.
  nice -n "$niceness" cargo fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=4096 >"$log" 2>&1 || true
  end=$(date +%s)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  execs=${execs:-0}
  after=$(find "artifacts/$target" -type f | wc -l)
  crashes=$((after - before))
  if ((crashes > 0)); then
    echo "--- $target crashed; last lines of its log:" >&2
    tail -25 "$log" >&2
  fi
  rm -f "$log"
  secs=$((end - start))
  printf '%-18s %14s %8s %8s\n' "$target" "$execs" "$secs" "$crashes"
  total_execs=$((total_execs + execs))
  total_secs=$((total_secs + secs))
  total_crashes=$((total_crashes + crashes))
done
printf '%-18s %14s %8s %8s\n' total "$total_execs" "$total_secs" "$total_crashes"
awk -v s="$total_secs" 'BEGIN { printf "CPU-hours: %.2f\n", s / 3600 }'
((total_crashes == 0))
