"""The Ray executor: each node one Ray task (`ray.remote`, `ray.wait`), on whichever machine of
the cluster offers what the node needs, so a portfolio of builds spreads over machines.

A task runs `run_node`, the code the process pool's workers run, on the same files: it reads
its parents' outputs from their cache entries and writes its own output, and its outcome, into
the scratch folder the build gave it; the build hashes and commits the entry. Nothing goes
through Ray's object store, so the cache directory (and the model and data paths) must be one
every Ray node sees at the same path: a shared filesystem. A task that finds its scratch
folder missing says so.

Placement: each node takes one CPU and `memory` scaled from the model's size (a scheduling
estimate: `executor.memory_mb` when set); `executor.resources` adds the custom resources a
node needs, by node id, `KIND:TARGET` or `KIND` (a TensorRT compile on the serving GPU class:
`compile:gpu: {compile_pkg_gpu_cc_9_0: 1, GPU: 1}`; native arm verification: `verify:arm:
{aarch64: 1}`). A node no alive Ray node can take fails at once with the reason, instead of
waiting forever. Exclusive nodes (verify: they time latency) take every CPU of the Ray node
they run on, so no other task of any build runs beside them; without a resource of their own
they run on the driver's Ray node (the head, through Ray Client), where the build's host facts
were probed. A task whose worker process or Ray node dies is run again, `executor.retries`
times (`max_retries`); an exception is never retried (`retry_exceptions=False`): `run_node`
turns the node's own errors into its result.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pickle
import platform
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from compiler.core.errors import CompilePkgError, ConfigError, short_message
from compiler.core.host import HostInfo, probe_host
from compiler.core.records import NodeResult
from compiler.pipeline.config import ExecutorConfig
from compiler.pipeline.executors.base import NodeRun, carried_error, pickle_job, run_node
from compiler.pipeline.graph import NodeDef, NodeGraph
from compiler.pipeline.nodes.base import NodeKind
from compiler.pipeline.nodes.context import BuildInputs, NodeContext

__all__ = ["INSTALL", "RayExecutor", "connect", "disconnect", "node_resources", "run_job"]

INSTALL = "pip install 'compile-pkg[ray]'"
OUTCOME_FILE = "ray-outcome.pkl"  # beside the node's out/, in its scratch folder
_MIB = 1 << 20
# a node holds the model a few times over (its proto, a pass's copy, the backend's graph and
# the serialized result): the `memory` Ray reserves for it, a placement estimate, not a limit
_MEMORY_PER_MODEL_BYTE = 6
_MEMORY_FLOOR = 256 * _MIB
_SHARED = (
    "the cache directory must be one every Ray node sees at the same path (a shared "
    "filesystem): give --cache-dir on it"
)


def _ray() -> Any:
    """The `ray` module; a clear one-line error when it is not installed."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"executor.kind ray: cannot import ray ({exc}); {INSTALL}") from None
    return ray


def connect(address: str, cpus: int = 0) -> bool:
    """Join the Ray cluster at `address` once per process (`HOST:PORT`, `ray://HOST:PORT`;
    empty: $RAY_ADDRESS, else the cluster `ray start` started on this machine, else a new
    local one with `cpus` CPUs (0: all)). True when this call made the connection: its
    caller then ends it (`disconnect`)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": False}
    if not address:
        options |= {"include_dashboard": False, "object_store_memory": 80 * _MIB}
        # a cluster of our own reports no usage to Ray's servers unless the user asks
        # (Ray 2.x reports by default; core/telemetry.py says why a build sends nothing)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if cpus:
            options["num_cpus"] = cpus
    try:
        try:
            ray.init(address=address or None, **options)
        except ValueError as exc:  # "" found a running cluster, which takes no start options
            if address or "existing cluster" not in str(exc):
                raise
            ray.init(logging_level="WARNING", log_to_driver=False)
    except Exception as exc:
        where = f"executor.address {address}" if address else "a local Ray cluster"
        raise ConfigError(
            f"{where}: cannot connect ({short_message(exc)}); start the head with "
            "`ray start --head` and give its HOST:PORT, or ray://HOST:PORT for Ray Client"
        ) from None
    return True


def disconnect() -> None:
    """End this process's connection to Ray. Ray's driver prints what the cluster reports
    (a worker that died, a raylet's advice) to `sys.stdout` from a thread of its own until the
    connection ends; ended while the command's stdout is still redirected, none of it can
    land after a `--json` document (compiler/cli/capture.py)."""
    with contextlib.suppress(Exception):
        _ray().shutdown()


def node_resources(node: NodeDef, config: ExecutorConfig, model_bytes: int) -> dict[str, float]:
    """What `node` asks of a Ray node: one CPU, memory, and the resources the config gives
    its id, `KIND:TARGET` or `KIND` (the first that matches)."""
    target = getattr(node, "target", None)
    named = (node.id, f"{node.kind}:{target}" if target else "", node.kind)
    extra = next((config.resources[k] for k in named if k and k in config.resources), {})
    memory = config.memory_mb * _MIB or max(_MEMORY_FLOOR, _MEMORY_PER_MODEL_BYTE * model_bytes)
    return {"CPU": 1.0, "memory": float(memory), **extra}


@dataclass(frozen=True)
class _Job:
    """What a task needs to run one node: the node, its kind, the build's inputs and graph,
    the results so far (outputs in the cache), where to write, and the build's view."""

    node: NodeDef
    kind: NodeKind[Any]
    inputs: BuildInputs
    graph: NodeGraph
    host: HostInfo
    probe_here: bool  # a node placed by its own resources records the host it ran on
    results: dict[str, NodeResult]
    out: Path
    cwd: str
    sys_path: list[str]
    scratch: Path | None = None  # NodeContext.scratch: what keying the node left for its run


def run_job(payload: bytes) -> str:
    """A Ray task's body: run the pickled `_Job`, write its `NodeRun` beside its out/; the
    host name it ran on. A retried task starts from an empty scratch folder."""
    job: _Job = pickle.loads(payload)
    scratch = job.out.parent
    if not scratch.is_dir():
        raise CompilePkgError(
            f"node {job.node.id}: its scratch folder {scratch} does not exist on Ray node "
            f"{platform.node()}: {_SHARED}"
        )
    for entry in list(scratch.iterdir()):  # an earlier try's files, from a worker that died
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    job.out.mkdir()
    sys.path.extend(p for p in job.sys_path if p not in sys.path and os.path.exists(p))
    here = os.getcwd()
    with contextlib.suppress(OSError):
        os.chdir(job.cwd)
    try:
        host = probe_host() if job.probe_here else job.host
        ctx = NodeContext(job.inputs, job.graph, host)
        ctx.results.update(job.results)
        ctx.scratch = job.scratch
        run = run_node(job.kind, job.node, ctx, job.out)
    finally:
        os.chdir(here)
    error = carried_error(run.error) if run.error is not None else None
    tmp = scratch / (OUTCOME_FILE + ".tmp")
    tmp.write_bytes(pickle.dumps(replace(run, error=error)))
    os.replace(tmp, scratch / OUTCOME_FILE)
    return platform.node()


@functools.lru_cache(maxsize=1)
def _remote() -> Any:
    """The task, one worker process per node (`max_calls=1`), as with the process pool: a
    library's process-wide state (OpenVINO's layer counter names the IR's layers) never
    carries from one node into the next, so the artifacts are the ones a fresh build makes."""
    return _ray().remote(max_calls=1)(run_job)


@dataclass
class _Task:
    node: str
    out: Path
    deadline: float | None


def _amount(name: str, value: float) -> str:
    return f"memory={value / _MIB:.0f}MiB" if name == "memory" else f"{name}={value:g}"


def _failed(reason: str, traceback: str = "") -> NodeRun:
    return NodeRun(failure=NodeResult(status="failed", reason=reason, traceback=traceback))


class RayExecutor:
    """Runs each node as a Ray task on the cluster `config.address` names, at most `slots`
    at once (`config.workers`, 0: the cluster's CPUs). One executor per build; several
    builds in one process (threads) share the process's connection to the cluster."""

    def __init__(self, config: ExecutorConfig) -> None:
        for key, wanted in config.resources.items():
            bad = {k: v for k, v in wanted.items() if v <= 0}
            if bad:
                raise ConfigError(f"executor.resources.{key}: amounts must be positive: {bad}")
        self.config = config
        self._connected = connect(config.address, config.workers)  # ended by close()
        self._ray = _ray()
        self.slots = config.workers or max(1, int(self._ray.cluster_resources().get("CPU", 1)))
        self._home = self._ray.get_runtime_context().get_node_id()
        self._running: dict[Any, _Task] = {}  # Ray object ref -> its node
        self._settled: list[tuple[str, NodeRun]] = []  # failed before they were submitted

    def _nodes(self) -> list[dict[str, Any]]:
        return [n for n in self._ray.nodes() if n.get("Alive")]

    def _placement(
        self, node: NodeDef, wanted: dict[str, float], exclusive: bool
    ) -> tuple[dict[str, Any], str]:
        """The task's Ray options, or why no alive Ray node can run it ("" when one can)."""
        nodes = self._nodes()
        labelled = set(wanted) - {"CPU", "memory"}
        pinned = exclusive and not labelled  # to the driver's Ray node
        candidates = [n for n in nodes if n["NodeID"] == self._home] if pinned else nodes
        fits = [
            n for n in candidates if all(n["Resources"].get(k, 0) >= v for k, v in wanted.items())
        ]
        if not fits:
            return {}, self._unplaceable(wanted, candidates, pinned)
        options: dict[str, Any] = {
            "num_cpus": wanted["CPU"],
            "memory": wanted["memory"],
            "max_retries": self.config.retries,
            "retry_exceptions": False,
            "name": f"compile-pkg {node.id}",
        }
        if "GPU" in wanted:
            options["num_gpus"] = wanted["GPU"]
        custom = {k: v for k, v in wanted.items() if k not in ("CPU", "GPU", "memory")}
        if custom:
            options["resources"] = custom
        if exclusive:  # every CPU of the Ray node: nothing of any build runs beside it
            options["num_cpus"] = min(n["Resources"].get("CPU", 1.0) for n in fits)
            if not labelled:
                strategies = self._ray.util.scheduling_strategies
                options["scheduling_strategy"] = strategies.NodeAffinitySchedulingStrategy(
                    node_id=self._home, soft=False
                )
        return options, ""

    def _unplaceable(
        self, wanted: dict[str, float], nodes: list[dict[str, Any]], pinned: bool
    ) -> str:
        """Why none of `nodes` can take a task that wants `wanted`, and what would."""
        most = {k: max((n["Resources"].get(k, 0.0) for n in nodes), default=0.0) for k in wanted}
        short = {k: v for k, v in wanted.items() if most[k] < v}
        cluster = self.config.address or "the local cluster"
        needs = ", ".join(_amount(k, v) for k, v in (short or wanted).items())
        offers = ", ".join(_amount(k, most[k]) for k in short)
        if pinned:  # an exclusive node without resources of its own times latency there
            has = f"offers {offers}" if short else "does not offer them together"
            why = f"needs Ray {needs} on the driver's Ray node, which {has}"
        elif short:
            why = f"needs Ray {needs}, which no alive node of {cluster} offers (most: {offers})"
        else:
            why = f"needs Ray {needs} on one node, which no alive node of {cluster} offers"
        custom = {k: v for k, v in (short or wanted).items() if k not in ("CPU", "GPU", "memory")}
        if custom:
            labels = ", ".join(f"{json.dumps(k)}: {v:g}" for k, v in custom.items())
            start = f"ray start --address=HEAD:PORT --resources='{{{labels}}}'"
            return f"{why}; start a node that has it: {start}"
        return f"{why}; give the node less (executor.memory_mb) or the cluster bigger nodes"

    def submit(self, node: NodeDef, kind: NodeKind[Any], ctx: NodeContext, out: Path) -> None:
        source = ctx.inputs.source_path.absolute()
        size = source.stat().st_size if source.is_file() else 0
        wanted = node_resources(node, self.config, size)
        exclusive = node.kind in self.config.exclusive
        options, missing = self._placement(node, wanted, exclusive)
        if missing:
            self._settled.append((node.id, _failed(missing)))
            return
        inputs = ctx.inputs
        sample, calibration = inputs.sample_data, inputs.calibration_data
        job = _Job(
            node=node,
            kind=kind,
            inputs=replace(
                inputs,
                source_path=source,
                sample_data=sample.absolute() if sample else None,
                calibration_data=calibration.absolute() if calibration else None,
            ),
            graph=ctx.graph,
            host=ctx.host,
            probe_here=bool(set(wanted) - {"CPU", "memory"}),
            results=dict(ctx.results),
            out=out.absolute(),
            cwd=os.getcwd(),
            sys_path=list(sys.path),
            scratch=ctx.scratch.absolute() if ctx.scratch else None,
        )
        payload = pickle_job(job, node, kind, "a Ray task")
        ref = _remote().options(**options).remote(payload)
        deadline = time.monotonic() + self.config.wall_s if self.config.wall_s else None
        self._running[ref] = _Task(node.id, out.absolute(), deadline)

    def resident_mib(self, node_id: str) -> int | None:
        return None  # on the cluster: Ray places tasks by their `memory` resource

    def wait(self) -> list[tuple[str, NodeRun]]:
        if self._settled:
            done, self._settled = self._settled, []
            return done
        if not self._running:
            raise RuntimeError("wait() with no node running")
        while True:
            deadlines = [t.deadline for t in self._running.values() if t.deadline is not None]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            refs = list(self._running)
            ready, rest = self._ray.wait(refs, num_returns=1, timeout=timeout)
            if ready and rest:  # every other task that is done too
                more, _ = self._ray.wait(rest, num_returns=len(rest), timeout=0)
                ready += more
            done = [(self._running[r].node, self._collect(r)) for r in ready]
            for ref in ready:
                del self._running[ref]
            now = time.monotonic()
            for ref, task in list(self._running.items()):
                if task.deadline is not None and now >= task.deadline:
                    self._ray.cancel(ref, force=True)
                    del self._running[ref]
                    limit = f"executor.wall_s={self.config.wall_s:g}"
                    done.append((task.node, _failed(f"ran past its wall-time limit ({limit})")))
            if done:
                return done

    def _collect(self, ref: Any) -> NodeRun:
        """The task's outcome from its scratch folder, or why it has none."""
        task = self._running[ref]
        exceptions = self._ray.exceptions
        try:
            host = self._ray.get(ref)
        except exceptions.RayTaskError as exc:
            return _failed(f"its Ray task raised: {short_message(exc.cause or exc)}", str(exc))
        except (exceptions.WorkerCrashedError, exceptions.NodeDiedError) as exc:
            tries = self.config.retries + 1
            why = f"its Ray worker died {tries} time(s) (executor.retries={self.config.retries})"
            return _failed(f"{why}: {short_message(exc)}")
        except exceptions.RayError as exc:
            return _failed(f"Ray lost its task: {short_message(exc)}")
        outcome = task.out.parent / OUTCOME_FILE
        try:
            run: NodeRun = pickle.loads(outcome.read_bytes())
        except FileNotFoundError:
            return _failed(f"its task on {host} wrote no outcome at {outcome}: {_SHARED}")
        finally:
            outcome.unlink(missing_ok=True)
        return run

    def close(self) -> None:
        for ref in self._running:
            with contextlib.suppress(Exception):
                self._ray.cancel(ref, force=True)
        self._running.clear()
        self._settled.clear()
        if self._connected:
            disconnect()
            self._connected = False
