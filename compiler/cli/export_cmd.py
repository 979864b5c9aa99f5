"""`compile-pkg export PKG --format triton|oci|mlflow -o OUT`: hand a verified package to the serving
stack people already run (compiler/packaging/export/). Prints what was exported, and one line
per artifact left out with the reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import click

from compiler.cli.app import (
    JsonDoc,
    cli,
    echo_result,
    emit_json,
    json_doc,
    output_options,
    say,
    trust_options,
    trust_policy,
    ui,
)
from compiler.packaging.export.mlflow_model import export_mlflow
from compiler.packaging.export.oci import export_oci
from compiler.packaging.export.records import ExportResult
from compiler.packaging.export.registry import push_layout
from compiler.packaging.export.source import VerifiedPackage, open_verified
from compiler.packaging.export.triton import export_triton

__all__ = ["EXPORTS", "ExportDoc", "export"]

EXPORTS: dict[str, Callable[[VerifiedPackage, Path], ExportResult]] = {
    "triton": export_triton,
    "oci": export_oci,
    "mlflow": export_mlflow,
}


@json_doc
class ExportDoc(ExportResult, JsonDoc):
    """`compile-pkg export --json`: the format, the output, the names exported (in the order
    of `artifacts`, the package's artifact ids) and the artifacts left out with why."""

    command: Literal["export"] = "export"


@cli.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["triton", "oci", "mlflow"]),
    required=True,
    help="triton: a Triton model repository (one model per artifact); oci: an OCI image "
    "layout (one manifest per target, blobs named by the package's sha256s); mlflow: an MLflow pyfunc model "
    "that loads the package with compile-pkg's loader (pip install mlflow-skinny)",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="triton: the model repository (other models in it are left alone); oci: the layout "
    "folder (replaced atomically)",
)
@click.option(
    "--push",
    "repository",
    default=None,
    metavar="HOST[:PORT]/NAME",
    help="oci only: also push each target's manifest, tagged VERSION-TARGET, with ORAS "
    "(pip install oras)",
)
@click.option("--plain-http", is_flag=True, help="--push over http (a registry on loopback)")
@trust_options()
@output_options()
def export(
    package: Path,
    fmt: str,
    output: Path,
    repository: str | None,
    plain_http: bool,
    trusted_keys: tuple[Path, ...],
    allow_unsigned_native: bool,
) -> None:
    """Export PACKAGE, after checking every file against its manifest, into another format.
    Each exported artifact carries its parity and latency record and hardware requirements."""

    if repository and fmt != "oci":
        raise click.UsageError("--push needs --format oci")
    vp = open_verified(package, trust_policy(trusted_keys, allow_unsigned_native))
    result = EXPORTS[fmt](vp, output)
    if repository:
        for ref in push_layout(output, repository, insecure=plain_http):
            say(f"pushed {ref}")
    if ui.json:
        emit_json(ExportDoc.model_validate({**result.model_dump(), "command": "export"}))
        return
    for aid, name in zip(result.artifacts, result.exported, strict=True):
        echo_result(f"{aid} -> {output / name if fmt == 'triton' else name}\n")
    for left in result.left_out:
        say(f"left out {left.id}: {left.reason}")
    say(f"{fmt} export of {len(result.exported)} artifact(s) written to {output}")
