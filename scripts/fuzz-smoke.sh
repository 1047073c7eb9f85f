#!/usr/bin/env bash
# Builds every fuzz target with cargo-fuzz (nightly) and runs each for SECONDS (default 60),
# starting from the committed seeds. Installs cargo-fuzz from crates.io if it is missing.
#
#   scripts/fuzz-smoke.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz smoke skipped: no nightly toolchain (cargo-fuzz needs one)"; exit 0
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo +stable install --locked cargo-fuzz
fi
cd fuzz
for target in $(cargo +nightly fuzz list); do
  corpus="target/corpus/$target"
  mkdir -p "$corpus"
  seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  echo "--- $target: ${seconds}s"
  cargo +nightly fuzz run --release "$target" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -n 12
done
