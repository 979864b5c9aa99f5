"""The executor a build's config asks for."""

from __future__ import annotations

from compiler.pipeline.config import ExecutorConfig
from compiler.pipeline.executors.base import Executor, OnStart
from compiler.pipeline.executors.inprocess import InProcessExecutor
from compiler.pipeline.executors.processes import ProcessExecutor
from compiler.pipeline.executors.ray_executor import RayExecutor

__all__ = ["make_executor"]


def make_executor(config: ExecutorConfig, on_start: OnStart | None = None) -> Executor:
    """`on_start` hears of each worker process the processes executor starts (Ray's workers
    are the cluster's: tests find them through `ray.util.state`)."""
    if config.kind == "in-process":
        return InProcessExecutor()
    if config.kind == "ray":
        return RayExecutor(config)
    return ProcessExecutor(config.workers, config.memory_mb, config.wall_s, on_start)
