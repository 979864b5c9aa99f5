"""The executor a build's config asks for."""

from __future__ import annotations

from compiler.pipeline.config import ExecutorConfig
from compiler.pipeline.executors.base import Executor, OnStart
from compiler.pipeline.executors.inprocess import InProcessExecutor
from compiler.pipeline.executors.memory import MemoryGate
from compiler.pipeline.executors.processes import ProcessExecutor
from compiler.pipeline.executors.ray_executor import RayExecutor

__all__ = ["make_executor", "memory_gate"]


def make_executor(config: ExecutorConfig, on_start: OnStart | None = None) -> Executor:
    """`on_start` hears of each worker process the processes executor starts (Ray's workers
    are the cluster's: tests find them through `ray.util.state`)."""
    if config.kind == "in-process":
        return InProcessExecutor()
    if config.kind == "ray":
        return RayExecutor(config)
    return ProcessExecutor(config.workers, config.memory_mb, config.wall_s, on_start)


def memory_gate(config: ExecutorConfig, executor: Executor) -> MemoryGate | None:
    """What admits `executor`'s nodes by this host's memory (None: the check is off, or the
    nodes run on a Ray cluster, which places tasks by their `memory` resource)."""
    if isinstance(executor, RayExecutor) or config.memory_margin_mb < 0:
        return None
    return MemoryGate(config.memory_margin_mb)
