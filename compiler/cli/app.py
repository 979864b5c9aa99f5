"""The `compile-pkg` command group, its console output and `main` (exit codes below).

`compile-pkg MODEL --targets gpu,cpu,arm -o OUT` builds (the `build` subcommand is implied);
`inspect`, `verify`, `run`, `pack` and `compare` work on packages. Exit codes: 0 success;
1 a build or run failed; 2 bad input or config; 3 bad package; 4 nothing loadable here.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from compiler.core.errors import CompilePkgError, ConfigError
from compiler.core.targets import check_targets
from compiler.packaging.report import artifact_rows

__all__ = ["cli", "console", "main", "out_console", "parse_targets", "print_artifacts"]

console = Console(stderr=True)
# tables stay readable when piped (rich would fall back to 80 columns)
out_console = Console(width=None if sys.stdout.isatty() else 160)


class _DefaultBuild(click.Group):
    """Treat `compile-pkg MODEL ...` as `compile-pkg build MODEL ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["build", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultBuild, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="compile-pkg")
def cli() -> None:
    """Compile one model into one deployment package for gpu, cpu and arm targets."""


def parse_targets(value: str) -> tuple[str, ...]:
    """The --targets list, checked by the one target table (compiler.core.targets)."""
    try:
        return check_targets(value.split(","))
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def print_artifacts(manifest: Any) -> None:
    table = Table(title="artifacts")
    for col in (
        "artifact",
        "backend",
        "precision",
        "status",
        "parity",
        "max abs err",
        "p50 ms",
        "speedup",
    ):
        table.add_column(col)
    for r in artifact_rows(manifest):
        status = r.status + (f": {r.reason[:70]}" if r.reason else "")
        table.add_row(
            r.id,
            r.backend,
            r.precision,
            status,
            r.parity,
            f"{r.max_abs_err:.2e}" if r.max_abs_err is not None else "-",
            f"{r.p50_ms:.3f}" if r.p50_ms is not None else "-",
            f"{r.speedup:.2f}x" if r.speedup is not None else "-",
        )
    out_console.print(table)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="compile-pkg", standalone_mode=False)
    except CompilePkgError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug of ours: one line by default, the traceback on request
        if os.environ.get("COMPILE_PKG_DEBUG"):
            raise
        console.print(
            f"[red]internal error:[/] {type(exc).__name__}: {exc} "
            "(set COMPILE_PKG_DEBUG=1 for the traceback, and please report it)",
            highlight=False,
        )
        sys.exit(70)


if __name__ == "__main__":
    main()
