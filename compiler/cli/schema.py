"""`compile-pkg schema WHAT`: the JSON Schemas people validate against.

`config` is the config file's (point an editor's YAML language server at it), `manifest` the
package manifest's, and each command with `--json` its document's.
"""

from __future__ import annotations

import json

import click

from compiler.cli.app import JSON_DOCS, cli, echo_result
from compiler.pipeline.config import config_file_schema
from compiler.serving.manifest import SCHEMA_PATH

__all__ = ["schema", "schema_of"]


def schema_of(what: str) -> dict[str, object]:
    if what == "config":
        return config_file_schema()
    if what == "manifest":
        doc: dict[str, object] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
        return doc
    return JSON_DOCS[what].model_json_schema()


class _Names(click.ParamType):
    """The schema names, read when the command runs (commands register their documents)."""

    name = "WHAT"

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        names = ["config", "manifest", *sorted(JSON_DOCS)]
        if value not in names:
            self.fail(f"{value!r}: choose from {', '.join(names)}", param, ctx)
        return value


@cli.command()
@click.argument("what", type=_Names())
def schema(what: str) -> None:
    """Print a JSON Schema: config, manifest, or a command's --json document (build, inspect,
    run, compare, verify)."""

    echo_result(json.dumps(schema_of(what), indent=2, sort_keys=True) + "\n")
