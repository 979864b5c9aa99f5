#!/usr/bin/env bash
# Build the aarch64 emulation environment that `compile-pkg verify --emulate aarch64` runs
# arm artifacts in: a static qemu-aarch64 (10.x, bookworm-backports), an aarch64 Debian 12
# sysroot with Python 3.11, and aarch64 wheels of numpy, onnxruntime, openvino and a
# runtime-only TVM. Everything comes from Debian and PyPI packages and is unpacked into one
# cached folder; the host's package state (dpkg, apt lists, pip) is never changed.
#
#   scripts/setup_emulation.sh            build once; re-running is a no-op
#   COMPILE_PKG_EMU_DIR=DIR ...           build into DIR instead of the default cache
#   scripts/setup_emulation.sh --force    rebuild
#
# Layout of the result (see docs/emulation.md): bin/qemu-aarch64, sysroot/, site/, env.json
# (written last: its presence means the environment is complete and was smoke-tested).
set -euo pipefail

LAYOUT=1  # bump with any change to what gets built; it is part of the default folder name
EMU_DIR=${COMPILE_PKG_EMU_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/compile-pkg/emu-aarch64-v$LAYOUT}
PY=${PYTHON:-python3}
QEMU_CPU_DEFAULT=neoverse-n1

# aarch64 builds of the runtimes: the same versions as the host's, so a parity difference is
# the architecture's, not a version's. tvm: runtime library only (the compiler is not unpacked).
WHEELS=(
  numpy==2.4.6
  onnxruntime==1.32.0
  openvino==2026.4.1
  apache-tvm==0.27.0.post1
  apache-tvm-ffi==0.1.14.post1
  ml_dtypes==0.6.0
  typing_extensions==4.15.0
)
# Debian arm64 packages of the sysroot: Python 3.11 and the C/C++ libraries the wheels link.
SYSROOT_DEBS=(
  libc6 libgcc-s1 libstdc++6 libgomp1 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5
  libuuid1 libcrypt1 libncursesw6 libtinfo6 python3.11-minimal libpython3.11-minimal
  libpython3.11-stdlib
)
QEMU_DEB=qemu-user  # from <codename>-backports: static binaries (Debian 12's own 7.2 crashes)

FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

say() { echo "setup_emulation: $*" >&2; }
die() { say "error: $*"; exit 1; }

SPEC="layout=$LAYOUT qemu=$QEMU_DEB debs=${SYSROOT_DEBS[*]} wheels=${WHEELS[*]}"

if [ "$FORCE" = 0 ] && [ -f "$EMU_DIR/env.json" ] && [ "$(cat "$EMU_DIR/spec" 2>/dev/null)" = "$SPEC" ]; then
  say "already set up at $EMU_DIR"
  exit 0
fi

for tool in apt-get dpkg-deb flock "$PY"; do
  command -v "$tool" >/dev/null || die "'$tool' not found; this script needs a Debian host with apt and Python 3"
done
[ "$(uname -m)" = x86_64 ] || die "host is $(uname -m); this environment is for x86-64 hosts"

mkdir -p "$(dirname "$EMU_DIR")"
exec 9>"$EMU_DIR.lock"
flock 9  # two set-ups at once: the second waits, then finds the first one's result
if [ "$FORCE" = 0 ] && [ -f "$EMU_DIR/env.json" ] && [ "$(cat "$EMU_DIR/spec" 2>/dev/null)" = "$SPEC" ]; then
  say "already set up at $EMU_DIR"
  exit 0
fi

START=$(date +%s)
BUILD="$EMU_DIR.build"
rm -rf "$BUILD"
mkdir -p "$BUILD"/{apt/lists/partial,apt/cache/archives/partial,apt/etc/parts,debs,wheels,bin,sysroot,site}
trap 'rm -rf "$BUILD"' EXIT

# --- apt sources: the host's own Debian mirrors, plus <codename>-backports ------------------
# Read from /etc/apt (one-line .list and deb822 .sources); nothing is hard-coded.
"$PY" - "$BUILD/apt/etc/sources.list" <<'PYEOF'
import glob, re, sys
from pathlib import Path

codename = ""
for line in Path("/etc/os-release").read_text().splitlines():
    if line.startswith("VERSION_CODENAME="):
        codename = line.split("=", 1)[1].strip().strip('"')
if not codename:
    sys.exit("setup_emulation: error: no VERSION_CODENAME in /etc/os-release")

entries = []  # (uri, suite, components, signed_by)
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        text = Path(path).read_text()
    except OSError:
        continue
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s+(.*)$", line)
        if not m:
            continue
        opts = dict(o.split("=", 1) for o in (m.group(1) or "").split() if "=" in o)
        entries.append((m.group(2), m.group(3), m.group(4).split(), opts.get("signed-by", "")))
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", Path(path).read_text()):
        fields, key = {}, None
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and key:
                fields[key] += "\n" + raw.strip()
            elif ":" in raw:
                key, value = raw.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        signed = fields.get("signed-by", "")
        signed = signed if "\n" not in signed else ""  # an inline key block: apt's default keys
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                entries.append((uri, suite, fields.get("components", "").split(), signed))

wanted = {codename, f"{codename}-updates", f"{codename}-security"}
lines, base = [], []
for uri, suite, comps, signed in entries:
    if suite in wanted and "main" in comps:
        opt = f"[signed-by={signed}] " if signed else ""
        lines.append(f"deb {opt}{uri} {suite} main")
        if suite == codename:
            base.append((uri, opt))
if not base:
    sys.exit(f"setup_emulation: error: /etc/apt configures no Debian '{codename}' main source "
             "to fetch the arm64 packages and qemu from")
for uri, opt in base[:1]:
    lines.append(f"deb {opt}{uri} {codename}-backports main")
Path(sys.argv[1]).write_text("\n".join(dict.fromkeys(lines)) + "\n")
PYEOF
say "apt sources (from /etc/apt, plus backports):"
sed 's/^/  /' "$BUILD/apt/etc/sources.list" >&2

: >"$BUILD/apt/status"
APT_OPTS=(
  -o "Dir::Etc::SourceList=$BUILD/apt/etc/sources.list"
  -o "Dir::Etc::SourceParts=$BUILD/apt/etc/parts"
  -o "Dir::State::Lists=$BUILD/apt/lists"
  -o "Dir::State::status=$BUILD/apt/status"
  -o "Dir::Cache=$BUILD/apt/cache"
  -o "APT::Architecture=arm64"
  -o "APT::Architectures::=arm64"
  -o "APT::Architectures::=amd64"
  -o "Acquire::Languages=none"
  -o "APT::Sandbox::User=root"
  -o "Debug::NoLocking=1"
)
[ "$(id -u)" = 0 ] || APT_OPTS+=(-o "APT::Sandbox::User=$(id -un)")

# --- wheels (in the background while apt works) ------------------------------------------
PLATFORMS=(--platform manylinux2014_aarch64)
for minor in $(seq 17 36); do PLATFORMS+=(--platform "manylinux_2_${minor}_aarch64"); done
(
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    "${PLATFORMS[@]}" --python-version 3.11 --implementation cp --abi cp311 \
    -d "$BUILD/wheels" "${WHEELS[@]}" 2>"$BUILD/pip.log" || { cat "$BUILD/pip.log" >&2; exit 1; }
) &
PIP_PID=$!

say "fetching Debian package lists (arm64 + amd64, into $BUILD/apt)"
apt-get "${APT_OPTS[@]}" -qq update >&2 || die "apt-get update failed with the sources above"
CODENAME=$(. /etc/os-release && echo "$VERSION_CODENAME")
(
  cd "$BUILD/debs"
  apt-get "${APT_OPTS[@]}" -qq download "$QEMU_DEB:amd64/$CODENAME-backports" \
    $(printf '%s:arm64 ' "${SYSROOT_DEBS[@]}") >&2
) || die "apt-get download failed (package names: $QEMU_DEB ${SYSROOT_DEBS[*]})"

# qemu-aarch64 alone out of qemu-user's .deb (the package holds every target: ~370 MB)
dpkg-deb --fsys-tarfile "$BUILD"/debs/"$QEMU_DEB"_*_amd64.deb \
  | tar -x -C "$BUILD" ./usr/bin/qemu-aarch64
mv "$BUILD/usr/bin/qemu-aarch64" "$BUILD/bin/qemu-aarch64"
rm -rf "$BUILD/usr"
QEMU_VERSION=$("$BUILD/bin/qemu-aarch64" --version | head -n1)
case "$QEMU_VERSION" in
  *"version 1"[0-9].*) ;;
  *) die "need qemu >= 10 (Debian 12's 7.2 crashes on 'import onnxruntime'), got: $QEMU_VERSION" ;;
esac

for deb in "$BUILD"/debs/*_arm64.deb; do dpkg-deb -x "$deb" "$BUILD/sysroot"; done
rm -rf "$BUILD"/sysroot/usr/share/{doc,man,lintian}
[ -x "$BUILD/sysroot/usr/bin/python3.11" ] || die "no usr/bin/python3.11 in the arm64 sysroot"

wait "$PIP_PID" || die "pip download of the aarch64 wheels failed (see above): ${WHEELS[*]}"
"$PY" - "$BUILD/wheels" "$BUILD/site" <<'PYEOF'
import sys, zipfile
from pathlib import Path

# TVM: the runtime only. The compiler library (~240 MB), CUDA runtime and headers stay out.
skip = ("tvm/lib/libtvm_compiler.so", "tvm/lib/libtvm_runtime_cuda.so", "tvm/3rdparty/")
for whl in sorted(Path(sys.argv[1]).glob("*.whl")):
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            if info.filename.startswith(skip):
                continue
            z.extract(info, sys.argv[2])
            mode = info.external_attr >> 16
            if mode:
                (Path(sys.argv[2]) / info.filename).chmod(mode & 0o777)
PYEOF

# Byte-compile with the host's Python when it is 3.11 (same .pyc format): compiling under
# emulation on first import would cost tens of seconds per run.
if "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  "$PY" -m compileall -q -j 0 "$BUILD/sysroot/usr/lib/python3.11" "$BUILD/site" >/dev/null 2>&1 || true
fi

# --- smoke test: every runtime imports under emulation, and report their versions -----------
say "smoke test under qemu (cpu $QEMU_CPU_DEFAULT)"
env -i PATH=/usr/bin:/bin PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 \
  PYTHONPATH="$BUILD/site" TVM_USE_RUNTIME_LIB=1 QEMU_CPU="$QEMU_CPU_DEFAULT" \
  "$BUILD/bin/qemu-aarch64" -L "$BUILD/sysroot" "$BUILD/sysroot/usr/bin/python3.11" -c '
import json, platform, sys
import numpy, onnxruntime, openvino, tvm, tvm_ffi
assert platform.machine() == "aarch64", platform.machine()
assert tvm.base._RUNTIME_ONLY
print(json.dumps({
    "machine": platform.machine(),
    "python": platform.python_version(),
    "runtimes": {"numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__,
                 "openvino": openvino.__version__.split("-")[0], "tvm": tvm.__version__,
                 "tvm_ffi": tvm_ffi.__version__},
}))' >"$BUILD/smoke.json" 2>"$BUILD/smoke.log" \
  || { cat "$BUILD/smoke.log" >&2; die "the runtimes do not import under emulation (log above)"; }

"$PY" - "$BUILD" "$QEMU_VERSION" "$QEMU_CPU_DEFAULT" "$LAYOUT" <<'PYEOF'
import json, sys
from pathlib import Path

build, qemu_version, cpu, layout = sys.argv[1:]
smoke = json.loads(Path(build, "smoke.json").read_text())
info = {
    "layout": int(layout),
    "arch": "aarch64",
    "qemu": qemu_version,
    "qemu_cpu": cpu,
    "python": smoke["python"],
    "runtimes": smoke["runtimes"],
    "qemu_binary": "bin/qemu-aarch64",
    "sysroot": "sysroot",
    "site": "site",
}
Path(build, "env.json.tmp").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
PYEOF

rm -rf "$BUILD"/{apt,debs,wheels,pip.log,smoke.json,smoke.log}
echo "$SPEC" >"$BUILD/spec"
mv "$BUILD/env.json.tmp" "$BUILD/env.json"
rm -rf "$EMU_DIR"
mv "$BUILD" "$EMU_DIR"
trap - EXIT
say "ready at $EMU_DIR ($(du -sh "$EMU_DIR" | cut -f1), $(( $(date +%s) - START )) s): $QEMU_VERSION"
