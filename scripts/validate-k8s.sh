#!/usr/bin/env bash
# Checks the Kubernetes manifests in deploy/kubernetes offline, without a cluster or kustomize.
#
# Renders the base and every overlay with deploy/kubernetes/render.py (kustomize's semantics for
# the features the manifests use) and checks every rendered object against the Kubernetes
# schemas of a pinned release in strict mode, plus the cross-references a schema cannot see
# (selectors, ports, volumes, resource requests). Exits non-zero on any invalid manifest.
#
#   scripts/validate-k8s.sh                 # check everything
#   scripts/validate-k8s.sh --self-test     # check that broken copies of the manifests are refused
#   scripts/validate-k8s.sh --render deploy/kubernetes/overlays/aks-confcom   # print one rendering
#
# Uses the repository's .venv (created if missing) with the exact packages in
# deploy/kubernetes/requirements.txt; pip reaches PyPI only while one of them is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r deploy/kubernetes/requirements.txt
exec .venv/bin/python deploy/kubernetes/validate.py "$@"
