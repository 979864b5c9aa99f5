"""`python -m compiler.cli` runs the command line, like the `compile-pkg` script."""

from __future__ import annotations

from compiler.cli.app import main

main()
