#!/usr/bin/env bash
# Compares `cloak model verify` (and decrypt) throughput on a 1 GiB model with
# `openssl speed -evp aes-256-gcm` on the same machine, one core, and reports peak RSS.
#
#   scripts/bench-verify.sh [SIZE_MIB]     (default 1024; needs ~2.2x SIZE free in $TMPDIR)
#
# The container is read from the page cache (a warm-up pass runs first), so the figures measure
# the CPU cost of authentication, not the disk. `decrypt` also writes and fsyncs the model, so on
# a disk-backed TMPDIR it measures the disk; run with TMPDIR=/dev/shm to see its CPU cost.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
work=$(mktemp -d "${TMPDIR:-/tmp}/cloak-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

cargo build --release --locked -p cloak-cli >&2
cloak=target/release/cloak

head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/model.bin"
"$cloak" model encrypt "$work/model.bin" --out "$work/model.cloak" --key-out "$work/model.key" >/dev/null
bytes=$(stat -c %s "$work/model.cloak")

# best-of-3 wall time (seconds) and peak RSS (KiB) of a command, via GNU time
measure() {
  local best="" rss=0
  "$@" >/dev/null 2>&1 # warm-up: the page cache now holds the input
  for _ in 1 2 3; do
    /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>&1
    read -r secs kib < "$work/time"
    if [ -z "$best" ] || awk "BEGIN{exit !($secs < $best)}"; then best=$secs; fi
    [ "$kib" -gt "$rss" ] && rss=$kib
  done
  echo "$best $rss"
}

read -r verify_s verify_rss < <(measure "$cloak" model verify "$work/model.cloak" --key "$work/model.key")
read -r digest_s digest_rss < <(measure "$cloak" model verify "$work/model.cloak" --key "$work/model.key" --check-digest)
read -r decrypt_s decrypt_rss < <(measure "$cloak" model decrypt "$work/model.cloak" --key "$work/model.key" --out "$work/out.bin" --force)

# openssl speed, one core, 16 KiB blocks (its largest): best of three runs each way.
openssl_best() {
  local best=0 v
  for _ in 1 2 3; do
    v=$(openssl speed "$@" -evp aes-256-gcm -seconds 2 2>/dev/null | awk '/^AES-256-GCM/ {print $NF}' | tr -d k)
    best=$(awk -v a="$best" -v b="$v" 'BEGIN{print (b > a) ? b : a}')
  done
  echo "$best"
}
openssl_enc=$(openssl_best)
openssl_dec=$(openssl_best -decrypt)

awk -v b="$bytes" -v v="$verify_s" -v d="$digest_s" -v x="$decrypt_s" \
    -v oe="$openssl_enc" -v od="$openssl_dec" \
    -v rv="$verify_rss" -v rd="$digest_rss" -v rx="$decrypt_rss" -v mib="$size_mib" 'BEGIN {
  mb = 1000 * 1000
  oe_mbs = oe * 1000 / mb; od_mbs = od * 1000 / mb
  printf "container: %d MiB model, %d bytes\n", mib, b
  printf "openssl speed -evp aes-256-gcm (16 KiB blocks, 1 core): encrypt %.0f MB/s, decrypt %.0f MB/s\n", oe_mbs, od_mbs
  printf "%-34s %8s %8s %9s %9s %13s\n", "command", "seconds", "MB/s", "÷ oss enc", "÷ oss dec", "peak RSS MiB"
  row("cloak model verify", v, rv)
  row("cloak model verify --check-digest", d, rd)
  row("cloak model decrypt", x, rx)
}
function row(name, secs, rss,   r) {
  r = b / secs / mb
  printf "%-34s %8.3f %8.0f %9.2f %9.2f %13.1f\n", name, secs, r, r / oe_mbs, r / od_mbs, rss / 1024
}'
