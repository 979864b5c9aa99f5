"""The executor a build's config asks for."""

from __future__ import annotations

from compiler.pipeline.config import ExecutorConfig
from compiler.pipeline.executors.base import Executor, OnStart
from compiler.pipeline.executors.inprocess import InProcessExecutor
from compiler.pipeline.executors.processes import ProcessExecutor

__all__ = ["make_executor"]


def make_executor(config: ExecutorConfig, on_start: OnStart | None = None) -> Executor:
    if config.kind == "in-process":
        return InProcessExecutor()
    return ProcessExecutor(config.workers, config.memory_mb, config.wall_s, on_start)
