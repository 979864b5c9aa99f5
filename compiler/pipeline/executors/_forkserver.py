"""What the processes executor's fork server imports once, so each worker it forks starts with
it: the node kinds and the libraries every node uses (onnx, onnxruntime, numpy; not OpenVINO
or TVM, whose thread pools must not be forked), then the build's main script.

The main script: a worker re-runs it (as `__mp_main__`) unless the fork server already has
it, and CPython 3.11's fork server never preloads it (it looks for a `main_path` key that
`spawn.get_preparation_data` does not make). A build run from a script or a console entry
point (`compile-pkg`, `pytest`) would import its whole world again in every node's worker.
The executor names the script and its argv in `processes.MAIN_ENV` before the fork server
starts; it is imported here as multiprocessing would import it in each worker. Last, `gc.freeze()`: what is loaded
here stays out of the workers' collections, so their pages stay shared.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from multiprocessing import process, spawn

import onnxruntime  # noqa: F401  (preloaded for the workers)

import compiler.pipeline.executors._worker  # noqa: F401
import compiler.pipeline.nodes.registry  # noqa: F401
from compiler.pipeline.executors.processes import MAIN_ENV

__all__: list[str] = []


def _import_main(spec: str) -> None:
    """Import the build's main script as each worker would (its argv, as `__mp_main__`); a
    script that fails here is left to the workers, as without this module."""
    main = json.loads(spec)
    argv, sys.argv = sys.argv, main["argv"]
    process.current_process()._inheriting = True  # type: ignore[attr-defined]  # as CPython does
    try:
        spawn.import_main_path(main["path"])
    except BaseException:  # noqa: BLE001  (whatever the script raises: SystemExit too)
        sys.argv = argv
    finally:
        del process.current_process()._inheriting  # type: ignore[attr-defined]


if os.environ.get(MAIN_ENV):
    _import_main(os.environ[MAIN_ENV])
gc.freeze()
