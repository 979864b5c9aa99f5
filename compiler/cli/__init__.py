"""The command line: the group and `main` in app.py, one module per family of commands.

Importing this package registers every command on the group.
"""

from __future__ import annotations

from compiler.cli import (
    build,
    build_many,
    export_cmd,
    inspect_cmd,
    packages,
    run_cmd,
    schema,
    trust,
)
from compiler.cli.app import cli, main

__all__ = [
    "build",
    "build_many",
    "cli",
    "export_cmd",
    "inspect_cmd",
    "main",
    "packages",
    "run_cmd",
    "schema",
    "trust",
]
