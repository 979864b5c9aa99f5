"""`compile-pkg run PKG`: load a package as serving would and run it once."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import Any, Literal

import click
import numpy as np
from pydantic import BaseModel, ConfigDict
from rich.table import Table

from compiler.cli.app import (
    JsonDoc,
    cli,
    emit_json,
    json_doc,
    out_console,
    output_options,
    say,
    trust_options,
    trust_policy,
    ui,
)
from compiler.cli.capture import third_party_output
from compiler.core.errors import PackageError
from compiler.core.feeds import read_feeds_npz, read_npz, write_npz
from compiler.serving.loader import load

__all__ = ["RunDoc", "run"]

_SAMPLES = "/reference/inputs.npz"


class OutputSummary(BaseModel):
    """One output of `run`: its shape and dtype, and for float outputs a few statistics."""

    model_config = ConfigDict(extra="forbid")
    shape: list[int]
    dtype: str
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    argmax_last_axis: list[int] | None = None


@json_doc
class RunDoc(JsonDoc):
    """`compile-pkg run --json`: what serving picked, why, and a summary of the outputs."""

    command: Literal["run"] = "run"
    artifact: str
    reason: str
    outputs: dict[str, OutputSummary]
    saved: str = ""


def _summary(value: Any) -> OutputSummary:
    a = np.asarray(value)
    info = OutputSummary(shape=list(a.shape), dtype=str(a.dtype))
    if a.dtype.kind == "f" and a.size:
        info.min, info.max, info.mean = float(a.min()), float(a.max()), float(a.mean())
        if a.ndim >= 2:
            info.argmax_last_axis = a.reshape(-1, a.shape[-1]).argmax(axis=1)[:16].tolist()
    return info


def _first_reference_sample(package: Path) -> dict[str, np.ndarray]:
    """The package's first reference input, from its folder or from inside its archive."""
    if package.is_dir():
        return read_feeds_npz(package / "reference" / "inputs.npz")[0]
    with tarfile.open(package) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith(_SAMPLES)), None)
        data = tar.extractfile(member) if member is not None and member.isfile() else None
        if data is None:
            raise PackageError(f"{package}: no {_SAMPLES} inside; give --input FILE.npz")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "inputs.npz"
            path.write_bytes(data.read())
            return read_feeds_npz(path)[0]


@cli.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path),
    help=".npz with one array per input (default: the package's first reference sample)",
)
@click.option("--order", help="comma-separated artifact ids to try first")
@click.option("--target", help="only artifacts of this target (cpu, arm, gpu)")
@click.option("--backend", help="only artifacts of this backend (onnxruntime, openvino, ...)")
@click.option("--precision", help="only artifacts of this precision (fp32, bf16, fp16, int8)")
@click.option(
    "--require", help="comma-separated artifact ids: only these, in order; an error if none loads"
)
@click.option("--allow-unverified", is_flag=True)
@trust_options()
@click.option(
    "--integrity",
    type=click.Choice(["strict", "fallback"]),
    default="strict",
    show_default=True,
    help="fallback: skip damaged artifacts (logged, recorded) instead of failing",
)
@click.option("--save", type=click.Path(path_type=Path), help="write the outputs to this .npz")
@output_options()
def run(
    package: Path,
    input_path: Path | None,
    order: str | None,
    target: str | None,
    backend: str | None,
    precision: str | None,
    require: str | None,
    allow_unverified: bool,
    trusted_keys: tuple[Path, ...],
    allow_unsigned_native: bool,
    integrity: Literal["strict", "fallback"],
    save: Path | None,
) -> None:
    """Load PACKAGE (a folder or .tar.gz) as serving would, print what was picked and why, and
    the outputs of one run (on --input, or the package's first reference sample)."""

    steer: dict[str, Any] = {
        k: v for k, v in (("target", target), ("backend", backend), ("precision", precision)) if v
    }
    if require:
        steer["require"] = require.split(",")
    with (
        third_party_output(None, to_stderr=True),
        load(
            package,
            order=order.split(",") if order else None,
            allow_unverified=allow_unverified,
            trust=trust_policy(trusted_keys, allow_unsigned_native),
            integrity=integrity,
            **steer,
        ) as session,
    ):
        say(session.explain())
        feeds = read_npz(input_path) if input_path else _first_reference_sample(package)
        outputs = session.run(feeds)
        picked, reason = session.artifact, session.reason
    if save:
        write_npz(save, {k: np.asarray(v) for k, v in outputs.items()})
    doc = RunDoc(
        artifact=picked,
        reason=reason,
        outputs={name: _summary(v) for name, v in outputs.items()},
        saved=str(save) if save else "",
    )
    if ui.json:
        emit_json(doc)
        return
    table = Table(title=f"outputs of {picked}")
    for col in ("output", "shape", "dtype", "min", "max", "mean", "argmax (last axis)"):
        table.add_column(col)
    for name, o in doc.outputs.items():
        stats = ["-" if v is None else f"{v:.4g}" for v in (o.min, o.max, o.mean)]
        argmax = "-" if o.argmax_last_axis is None else str(o.argmax_last_axis)
        table.add_row(name, str(o.shape), o.dtype, *stats, argmax)
    out_console.print(table)
