"""Safe outputs (issue 14, item 1): a build never replaces the current directory, a folder above
it, the model's folder or a folder that is not a package (unless --overwrite); an unwritable
or full destination is refused before any work; the package root honours the umask."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.core.errors import ConfigError
from compiler.packaging.output import check_output, folder_mode, human_bytes, is_package

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny_cnn.onnx"
ORT_ONLY = str(Path(__file__).with_name("ort_only.yaml"))


def cli(*args: str, cwd: Path = ROOT, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "compiler.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,  # noqa: PLW1509
    )


def build_args(out: str, *more: str) -> list[str]:
    return [str(EXAMPLE), "--targets", "cpu", "--config", ORT_ONLY, "--no-cache", "-o", out, *more]


def test_current_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    r = cli(*build_args("."), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "is the current directory" in r.stderr and "ran " not in r.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_folder_above_the_current_directory_is_refused(tmp_path: Path) -> None:
    inner = tmp_path / "work" / "here"
    inner.mkdir(parents=True)
    r = cli(*build_args(str(tmp_path / "work")), cwd=inner)
    assert r.returncode == 2 and "holds the current directory" in r.stderr
    assert inner.is_dir()


def test_the_models_own_folder_is_refused(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    model = models / "m.onnx"
    shutil.copyfile(EXAMPLE, model)
    r = cli(str(model), "--targets", "cpu", "--config", ORT_ONLY, "--no-cache", "-o", str(models))
    assert r.returncode == 2 and f"holds the build's input {model}" in r.stderr
    assert model.read_bytes() == EXAMPLE.read_bytes()


def test_an_existing_folder_that_is_not_a_package_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    r = cli(*build_args(str(out)))
    assert r.returncode == 2 and "is not a compile-pkg package" in r.stderr
    assert "--overwrite" in r.stderr and (out / "keep.txt").read_text() == "precious"
    r = cli(*build_args(str(out), "--overwrite"))
    assert r.returncode == 0, r.stderr
    assert is_package(out) and not (out / "keep.txt").exists()
    again = cli(*build_args(str(out)))  # a package is replaced without --overwrite
    assert again.returncode == 0, again.stderr


def test_an_unwritable_destination_is_refused_before_any_work(tmp_path: Path) -> None:
    r = cli(*build_args("/proc/pkg"))
    assert r.returncode == 2, r.stderr
    assert "cannot write in /proc" in r.stderr and "ran normalize" not in r.stderr


def test_a_file_is_not_an_output_folder(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        check_output(target, cwd=ROOT)


def test_free_space_is_checked(tmp_path: Path) -> None:
    plan = check_output(tmp_path / "pkg", cwd=ROOT)
    plan.require_free_space(1024)
    with pytest.raises(ConfigError, match=r"not enough free space .* needs about 1024\.0 TiB|GiB"):
        plan.require_free_space(1 << 50)


def test_empty_folder_and_inputs_inside_the_output(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_output(empty, cwd=ROOT).replaces == "empty folder"
    data = tmp_path / "pkg" / "data.npz"
    data.parent.mkdir()
    data.write_bytes(b"")
    (tmp_path / "pkg" / "manifest.json").write_text('{"schema_version": 2}')
    with pytest.raises(ConfigError, match="holds the build's input"):
        check_output(tmp_path / "pkg", inputs=[data], cwd=ROOT)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_the_package_root_honours_the_umask(tmp_path: Path, umask: int) -> None:
    out = tmp_path / "pkg"
    r = cli(*build_args(str(out)), umask=umask)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    old = os.umask(umask)
    try:
        assert folder_mode() == 0o777 & ~umask
    finally:
        os.umask(old)


def test_sizes_read_as_people_read_them() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1536, 6_700_000, 3 << 30)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "6.4 MiB",
        "3.0 GiB",
    ]
