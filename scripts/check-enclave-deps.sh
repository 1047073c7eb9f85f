#!/usr/bin/env bash
# The enclave binary links the serving path and nothing else.
#
# `cloak-server` is what the Gramine manifest runs; everything it links is inside the enclave's
# trusted computing base and in its measurement (MRENCLAVE). Built as the enclave build is —
# `--no-default-features`, so without the simulated platform — its normal dependency tree may
# contain these workspace crates only, none of the external crates listed below (each belongs to
# a tool, a verifier, the broker or tests, never to serving), and cloak-tee without its `sim`
# feature. Prints the tree's crate count; exits 1 on any violation.
#
#   scripts/check-enclave-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."

allowed_workspace="cloak-server cloak-net cloak-engine cloak-tee cloak-proto cloak-crypto cloak-fs"
forbidden_external="criterion dcap-qvl dcap-qvl-webpki governor indicatif ohttp proptest \
  rusqlite tempfile x509-parser"

# `no-dev,no-build`: normal dependencies only, with features resolved as for the binary alone
# (plain `-e normal` resolves features as if the tests were built too).
tree=$(cargo tree --locked -e no-dev,no-build -p cloak-server --no-default-features \
  --prefix none --format '{p}' | sed 's/ (.*//' | sort -u)
names=$(printf '%s\n' "$tree" | awk '{print $1}' | sort -u)
status=0
for name in $names; do
  case "$name" in
    cloak-*)
      if ! printf ' %s ' "$allowed_workspace" | grep -q " $name "; then
        echo "error: the enclave binary links $name, which serving does not need"
        status=1
      fi
      ;;
  esac
  for bad in $forbidden_external; do
    if [ "$name" = "$bad" ]; then
      echo "error: the enclave binary links $name, which serving does not need"
      status=1
    fi
  done
done
if cargo tree --locked -e no-dev,no-build,features -p cloak-server --no-default-features -i cloak-tee \
    --prefix none 2>/dev/null | grep -q 'cloak-tee feature "sim"'; then
  echo "error: the enclave binary enables cloak-tee's simulated platform (feature sim)"
  status=1
fi
count=$(printf '%s\n' "$tree" | grep -c .)
echo "enclave binary (cloak-server --no-default-features): $count crates in its normal dependency tree"
if [ "$status" -eq 0 ]; then
  echo "ok: only the serving path ($allowed_workspace) and no tool, verifier, broker or test crate"
fi
exit "$status"
