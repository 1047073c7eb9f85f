# syntax=docker/dockerfile:1
#
# An image holding a set of encrypted models (`.cloak` containers, made by `cloak model
# encrypt`), for the copy-models init container of deploy/kubernetes/base/server.yaml, which
# copies them into the pod's writable models directory.
#
#   docker build -f deploy/docker/models.Dockerfile -t cloak-models:0.1.0 DIR_OF_CLOAK_FILES
#
# The containers are ciphertext, authenticated chunk by chunk inside the enclave with keys only
# the broker releases, so a registry may hold them like any other image. Keys (`*.key`) and
# sealed keys never belong here: the build context should be a directory of .cloak files only.
#
# Any small image with `sh` and `cp` serves; pin it by digest.
ARG BASE_IMAGE=busybox:1.36
FROM ${BASE_IMAGE}
COPY *.cloak /models/
USER 10001:10001
