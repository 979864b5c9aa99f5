#!/usr/bin/env bash
# One-shot set-up on a fresh Debian 12 / Python 3.11 machine: system packages, then the
# project with every backend that installs from PyPI. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

# --- system packages (Debian) -------------------------------------------------------
# gcc-aarch64-linux-gnu: links TVM's aarch64 shared libraries (cross-compiled arm target).
APT_PACKAGES="gcc-aarch64-linux-gnu file"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "setup: please install:$missing (apt-get install)" >&2
  fi
fi

# --- Python packages ----------------------------------------------------------------
# torch==2.13.0 pinned in the same install: a bare 'torch' would pull a multi-GB CUDA build.
$PY -m pip install -q --disable-pip-version-check -e ".[passes,torch,openvino,tvm,dev]" "torch==2.13.0"
echo "setup: done ($($PY -c 'import compiler; print("compile-pkg", compiler.__version__)'))"
