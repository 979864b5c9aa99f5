#!/usr/bin/env bash
# One GPU verification session, in two halves (docs/tvm.md, "GPU verification").
#
# Here (the build host):
#   scripts/gpu_session.sh bundle OUT.tar.xz WHEELS PKG [PKG...]
#     WHEELS: a folder of the GPU host's CPython's wheels (pip download --python-version X.Y
#     --only-binary=:all:): apache-tvm, apache-tvm-ffi, ml_dtypes, typing_extensions for the
#     runtime-only TVM copy; pydantic, pydantic_core, annotated_types, typing_inspection for
#     the serving loader. Each PKG travels with only what the checks read: manifest.json,
#     reference/ and its gpu/tvm-* artifacts. Files under PKG/extra-models/ (where a task
#     metric reads a model's tables) go to ../shared/models there.
# There (the GPU host: NVIDIA driver, python3 with numpy; onnxruntime for the reference's
# timing; this source tree):
#   scripts/gpu_session.sh run BUNDLE.tar.xz OUTDIR
#     writes OUTDIR/env.txt (GPU, driver, CPU, Python), OUTDIR/<package>.json
#     (scripts/gpu_verify.py's record) and OUTDIR/run.log (every command's output, with what
#     serving's loader picked on that host and why).
set -uo pipefail
cd "$(dirname "$0")/.."

bundle() {
  local out=$1 wheels=$2
  shift 2
  local stage
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' RETURN
  python scripts/gpu_verify.py pack-runtime "$stage/runtime" --wheels "$wheels" || return 1
  mkdir -p "$stage/site-wheels" "$stage/pkg"
  for w in pydantic- pydantic_core- annotated_types- typing_inspection-; do
    cp "$wheels"/$w*.whl "$stage/site-wheels/" 2>/dev/null ||
      echo "bundle: no $w wheel in $wheels: the loader's check will not run there" >&2
  done
  for pkg in "$@"; do
    local name dst
    name=$(basename "$pkg")
    dst="$stage/pkg/$name"
    mkdir -p "$dst/artifacts"
    cp "$pkg/manifest.json" "$dst/" && cp -r "$pkg/reference" "$dst/" || return 1
    cp -r "$pkg"/artifacts/gpu.tvm-* "$dst/artifacts/" 2>/dev/null
    [ -d "$pkg/extra-models" ] && cp -r "$pkg/extra-models" "$dst/"
  done
  tar -cf - -C "$stage" . | xz -9 -T0 >"$out" || return 1
  echo "$out: $(du -h "$out" | cut -f1)"
}

run() {
  local bundle=$1 out=$2 work=/tmp/gpu-session
  rm -rf "$work" && mkdir -p "$work" "$out"
  # Python's tarfile reads .xz wherever python3 is (the host may lack xz-utils)
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
    "$bundle" "$work" || return 1
  {
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.max.sm --format=csv
    python3 -V
    python3 -c 'import numpy, onnxruntime; print("numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__)'
    grep -m1 'model name' /proc/cpuinfo
    echo "cores: $(nproc)"
    date -u +%FT%TZ
  } >"$out/env.txt" 2>&1
  local loader=1
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" "$work"/site-wheels/*.whl \
    >>"$out/run.log" 2>&1 || loader=0
  local status=0
  for pkg in "$work"/pkg/*; do
    local name
    name=$(basename "$pkg")
    if [ -d "$pkg/extra-models" ]; then mkdir -p ../shared/models && cp "$pkg"/extra-models/* ../shared/models/; fi
    echo "== $name: gpu_verify" >>"$out/run.log"
    python3 scripts/gpu_verify.py verify "$pkg" --tvm-runtime "$work/runtime" --out "$out/$name.json" \
      >>"$out/run.log" 2>&1 || status=1
    echo "== $name: serving's pick on this host" >>"$out/run.log"
    [ $loader = 1 ] || { echo "skipped: the bundle has no loader wheels" >>"$out/run.log"; continue; }
    PYTHONPATH="$work/runtime:$work/site" TVM_USE_RUNTIME_LIB=1 python3 - "$pkg" >>"$out/run.log" 2>&1 <<'PY' || status=1
import sys
import numpy as np
from compiler.core.feeds import read_feeds_npz
from compiler.serving.loader import load
from compiler.serving.signing import TrustPolicy

pkg = sys.argv[1]
# the travelled package holds only its gpu/tvm artifacts (integrity "fallback" names the rest);
# gpu artifacts are "not verified" until a GPU host verifies them, and this one is unsigned
with load(pkg, allow_unverified=True, integrity="fallback",
          trust=TrustPolicy(allow_unsigned_native=True)) as session:
    print(session.explain())
    feed = read_feeds_npz(f"{pkg}/reference/inputs.npz")[0]
    ref = read_feeds_npz(f"{pkg}/reference/outputs.npz")[0]
    got = session.run(feed)
    for name, want in ref.items():
        diff = np.abs(got[name].astype(np.float64) - want.astype(np.float64)).max()
        print(f"sample 0, {name}: max abs err {diff:.3g} against the reference's output")
PY
  done
  return $status
}

case "${1:-}" in
  bundle) shift; bundle "$@" ;;
  run) shift; run "$@" ;;
  *) sed -n '2,19p' "$0"; exit 2 ;;
esac
