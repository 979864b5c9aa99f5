"""What every executor shares: running one node into its scratch folder (`run_node`, the same
code whether it runs in the build's process or in a worker) and the interface the scheduler
drives (`Executor`)."""

from __future__ import annotations

import pickle
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from compiler.core.errors import (
    BackendUnavailable,
    BuildError,
    CompilePkgError,
    NotApplicable,
    PassError,
    short_message,
)
from compiler.core.records import NodeOutput, NodeResult
from compiler.pipeline.graph import NodeDef
from compiler.pipeline.nodes.base import NodeKind
from compiler.pipeline.nodes.context import NodeContext

__all__ = [
    "OUT_OF_MEMORY",
    "Executor",
    "NodeFailed",
    "NodeRun",
    "OnStart",
    "carried_error",
    "pickle_job",
    "run_node",
]

# called with (node id, worker pid) when a worker process starts a node
OnStart = Callable[[str, int], None]


@dataclass(frozen=True)
class NodeRun:
    """One node's run: its output record, or the result that says why it has none (a skip or
    a failure) and the exception behind it."""

    output: NodeOutput | None = None
    failure: NodeResult | None = None
    error: BaseException | None = None
    grew_mib: int = 0  # in a worker: how far its address space grew while the node ran
    peak_rss_mib: int = 0  # in a worker: the most resident memory the node added; 0: unknown
    # the failure would recur with the same inputs and libraries (a backend or pass refused
    # the model), so the cache may remember it; never a kill, a limit, memory or a bug
    repeatable: bool = False


# how libraries word an allocation that failed: such a failure depends on the host's load
OUT_OF_MEMORY = re.compile(
    r"MemoryError|bad_alloc|out of memory|cannot allocate memory|failed to allocate", re.I
)


class NodeFailed(CompilePkgError):
    """An error raised in a worker process that could not cross back as its own type: its
    message and exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self) -> tuple[Any, ...]:
        return (NodeFailed, (str(self), self.exit_code))


def carried_error(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling (to cross a process boundary), else a `NodeFailed` with
    its message and exit code."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return NodeFailed(short_message(exc), getattr(exc, "exit_code", 1))
    return exc


def pickle_job(job: object, node: NodeDef, kind: NodeKind[Any], where: str) -> bytes:
    """`job` pickled to cross into `where` (a worker process, a Ray task); a kind or input
    that cannot cross is a TypeError naming the node."""
    try:
        return pickle.dumps(job)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise TypeError(
            f"node {node.id}: its kind {type(kind).__name__} or its inputs cannot be sent to "
            f"{where} ({exc}); kinds must hold no state, nodes exchange data only through the "
            "cache"
        ) from exc


def run_node(kind: NodeKind[Any], node: NodeDef, ctx: NodeContext, out: Path) -> NodeRun:
    """Run `node` into `out`: a missing library or hardware is a skip that says how to get
    it, a pass that does not apply to the model a skip that says why, our own errors fail it
    with their message, anything else with its traceback."""
    try:
        return NodeRun(output=kind.run(node, ctx, out))
    except BackendUnavailable as exc:
        reason = f"{exc.backend} {exc.what}: {exc.reason}"
        skipped = NodeResult(status="skipped", reason=reason, install=exc.install)
        return NodeRun(failure=skipped, error=exc)
    except NotApplicable as exc:
        return NodeRun(failure=NodeResult(status="skipped", reason=str(exc)), error=exc)
    except CompilePkgError as exc:
        repeatable = isinstance(exc, BuildError | PassError) and not OUT_OF_MEMORY.search(str(exc))
        failure = NodeResult(status="failed", reason=str(exc))
        return NodeRun(failure=failure, error=exc, repeatable=repeatable)
    except Exception as exc:
        failure = NodeResult(
            status="failed", reason=short_message(exc), traceback=traceback.format_exc(limit=8)
        )
        return NodeRun(failure=failure, error=exc)


class Executor(Protocol):
    """Runs the nodes the scheduler submits, at most `slots` at once. `wait` blocks until at
    least one submitted node is done and returns those done; `close` stops whatever still
    runs (a build that stops early) and frees the executor's resources."""

    @property
    def slots(self) -> int: ...

    def submit(self, node: NodeDef, kind: NodeKind[Any], ctx: NodeContext, out: Path) -> None: ...

    def resident_mib(self, node_id: str) -> int | None:
        """Resident memory a running node has added so far (MiB), on this host; None when
        unknown or elsewhere (a Ray task)."""
        ...

    def wait(self) -> list[tuple[str, NodeRun]]: ...

    def close(self) -> None: ...
