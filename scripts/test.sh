#!/usr/bin/env bash
# The test command (README, .ci/run): set up everything, then run every test this host can run.
# Tests that need hardware this host lacks (an NVIDIA GPU, TensorRT) skip with their reason.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -x scripts/setup_emulation.sh ]; then scripts/setup_emulation.sh; fi
python3 -m ruff check .
python3 -m ruff format --check compiler passes targets tests scripts perf
python3 -m mypy compiler passes targets
# the layer contracts in .importlinter (docs/architecture.md)
python3 -c "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
exec python3 -m pytest -q -ra --durations=20 "$@"
