#!/usr/bin/env bash
# Compares `cloak model verify` (and decrypt) throughput on a 1 GiB model with
# `openssl speed -evp aes-256-gcm` on the same machine, one core, and reports peak RSS.
#
#   scripts/bench-verify.sh [SIZE_MIB]     (default 1024; needs ~2.2x SIZE free in $TMPDIR)
#
# The container is read from the page cache (a warm-up pass runs first), so the figures measure
# the CPU cost of authentication, not the disk.
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
read -r decrypt_s decrypt_rss < <(measure "$cloak" model decrypt "$work/model.cloak" --key "$work/model.key" --out "$work/out.bin")

# openssl speed: the 16384-byte column (and, if this openssl supports -bytes, 1 MiB records).
openssl_enc=$(openssl speed -evp aes-256-gcm -seconds 3 2>/dev/null | awk '/^AES-256-GCM/ {print $NF}' | tr -d k)
openssl_dec=$(openssl speed -decrypt -evp aes-256-gcm -seconds 3 2>/dev/null | awk '/^AES-256-GCM/ {print $NF}' | tr -d k)

awk -v b="$bytes" -v v="$verify_s" -v d="$digest_s" -v x="$decrypt_s" \
    -v oe="$openssl_enc" -v od="$openssl_dec" \
    -v rv="$verify_rss" -v rd="$digest_rss" -v rx="$decrypt_rss" -v mib="$size_mib" 'BEGIN {
  mb = 1000 * 1000
  oe_mbs = oe * 1000 / mb; od_mbs = od * 1000 / mb
  printf "container: %d MiB model, %d bytes\n", mib, b
  printf "openssl speed -evp aes-256-gcm (16 KiB blocks, 1 core): encrypt %.0f MB/s, decrypt %.0f MB/s\n", oe_mbs, od_mbs
  printf "%-34s %10s %12s %14s %12s\n", "command", "seconds", "MB/s", "vs openssl dec", "peak RSS MiB"
  printf "%-34s %10.3f %12.0f %14.2f %12.1f\n", "cloak model verify", v, b / v / mb, (b / v / mb) / od_mbs, rv / 1024
  printf "%-34s %10.3f %12.0f %14.2f %12.1f\n", "cloak model verify --check-digest", d, b / d / mb, (b / d / mb) / od_mbs, rd / 1024
  printf "%-34s %10.3f %12.0f %14.2f %12.1f\n", "cloak model decrypt", x, b / x / mb, (b / x / mb) / od_mbs, rx / 1024
}'
