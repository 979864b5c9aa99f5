#!/usr/bin/env bash
# One-shot set-up on a fresh Debian 12 / Python 3.11 machine: system packages, then the
# project with every backend that installs from PyPI. Idempotent; safe to re-run.
#
# Where the Python packages go:
#   - the active virtual environment, when there is one (README: `python3 -m venv .venv &&
#     . .venv/bin/activate` first);
#   - else the `python3` on PATH (or $PYTHON) when pip may install into it (CI's pyenv Python);
#   - else, when that Python is externally managed (PEP 668: Debian 12's /usr/bin/python3,
#     where pip refuses with "externally-managed-environment"), a virtual environment .venv/
#     made here; activate it with `. .venv/bin/activate` to use compile-pkg.
# `scripts/setup.sh --which` prints the interpreter it installs into, and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

# True when $1 is outside any virtual environment and its installation is externally managed.
externally_managed() {
  "$1" - <<'PYCODE'
import os, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if not in_venv and os.path.exists(marker) else 1)
PYCODE
}

if externally_managed "$PY"; then
  VENV_PY=.venv/bin/python
  if [ "${1:-}" = "--which" ]; then echo "$VENV_PY"; exit 0; fi
  if [ ! -x "$VENV_PY" ]; then
    if ! "$PY" -m venv .venv; then
      echo "setup: $PY is externally managed and cannot make a virtual environment:" \
        "apt-get install python3-venv, or make and activate one yourself" >&2
      exit 1
    fi
  fi
  echo "setup: $("$PY" -c 'import sys; print(sys.executable)') is externally managed (PEP 668);" \
    "installing into .venv (use it: . .venv/bin/activate)" >&2
  PY=$VENV_PY
elif [ "${1:-}" = "--which" ]; then
  "$PY" -c 'import sys; print(sys.executable)'
  exit 0
fi

# --- system packages (Debian) -------------------------------------------------------
# gcc-aarch64-linux-gnu: links TVM's aarch64 shared libraries (cross-compiled arm target).
# chromium: renders reports/report.html headless in its test; docker-registry: a real OCI
# registry on loopback for the export --push/pull test (both skip with the reason if absent).
APT_PACKAGES="gcc-aarch64-linux-gnu file chromium docker-registry"
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
$PY -m pip install -q --disable-pip-version-check -e ".[passes,torch,openvino,tvm,tvm-tuning,signing,report,export,ray,dev]" "torch==2.13.0" "fsspec>=2024.2"
# only its grpc/model_config_pb2 (needs protobuf) is used, to parse exported Triton configs
$PY -m pip install -q --disable-pip-version-check --no-deps "tritonclient==2.73.0"
echo "setup: done ($($PY -c 'import compiler; print("compile-pkg", compiler.__version__)'))"
