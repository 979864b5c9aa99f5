"""The main job: source -> normalized model -> DAG run -> package on disk."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compiler.core.errors import BackendUnavailable, CompilePkgError, InputModelError
from compiler.core.host import probe_host
from compiler.core.records import NodeResult
from compiler.measure.verify import now_utc
from compiler.packaging.assemble import assemble
from compiler.packaging.emulated import verify_emulated
from compiler.packaging.write import finish_package, rewrite_manifest, write_atomically
from compiler.pipeline.cache import Cache, default_cache_dir
from compiler.pipeline.config import BuildConfig
from compiler.pipeline.graph import build_graph
from compiler.pipeline.instruments import ProgressInstrument, TimingInstrument
from compiler.pipeline.nodes.context import BuildInputs, NodeContext
from compiler.pipeline.nodes.registry import KINDS
from compiler.pipeline.normalize import Source, export_torch, save_model, source_digest
from compiler.pipeline.scheduler import Scheduler
from compiler.serving.manifest import Manifest, read_manifest

__all__ = ["BuildOutcome", "build_package", "prepare_source"]


@dataclass
class BuildOutcome:
    manifest: Manifest
    results: dict[str, NodeResult]
    package: Path

    @property
    def failures(self) -> list[str]:
        return [f"{n}: {r.reason}" for n, r in self.results.items() if r.status == "failed"]


def prepare_source(
    source: Source, config: BuildConfig, workdir: Path
) -> tuple[Path, str, str, str]:
    """(onnx path, digest, display name, kind). Torch modules are exported to ONNX first."""
    if source.onnx_path is not None:
        path = source.onnx_path
        if not path.is_file():
            raise InputModelError(
                f"{path}: no such file; give an .onnx model or package.module:factory"
            )
        return path, source_digest(path), path.name, "onnx"
    assert source.torch_factory is not None
    dims_opt = {k: v.opt for k, v in config.dims.items()}
    model = export_torch(source.torch_factory, source.input_specs, dims_opt)
    path = save_model(model, workdir / "torch-export")
    return path, source_digest(path), source.torch_factory, "torch"


def _verify_arm_emulated(staging: Path) -> None:
    """Append emulated aarch64 parity records; a missing environment is recorded, not fatal."""
    try:
        verify_emulated(staging, "aarch64", write=True)
    except BackendUnavailable as exc:
        m = read_manifest(staging)
        m.build.emulated_verification = f"not run: {exc}"
        rewrite_manifest(staging, m)


def build_package(
    source: Source,
    config: BuildConfig,
    targets: tuple[str, ...],
    out: Path,
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    sample_data: Path | None = None,
    calibration_data: Path | None = None,
    on_event: Callable[[str, NodeResult | None], None] = lambda nid, r: None,
) -> BuildOutcome:
    started = now_utc()
    with tempfile.TemporaryDirectory(prefix="compile-pkg-") as tmp:
        tmpdir = Path(tmp)
        src_path, digest, name, kind = prepare_source(source, config, tmpdir)
        cache = Cache(cache_dir or default_cache_dir()) if use_cache else Cache(tmpdir / "cache")
        g = build_graph(config, targets)
        inputs = BuildInputs(src_path, digest, config, targets, sample_data, calibration_data)
        # progress outermost, so each event carries the node's time
        instruments = (ProgressInstrument(on_event), TimingInstrument())
        try:
            results = Scheduler(KINDS, cache, instruments).run(NodeContext(inputs, g, probe_host()))
        finally:
            cache.clear_scratch()
        for head in (g.normalize, g.data, g.reference):
            if results[head.id].status == "failed":
                raise CompilePkgError(f"{head.id} failed: {results[head.id].reason}")

        def fill(staging: Path) -> Manifest:
            m = assemble(
                staging,
                g=g,
                results=results,
                config=config,
                source_name=name,
                source_kind=kind,
                source_digest=digest,
                source_path=source.onnx_path or Path(name),
                started_at=started,
            )
            finish_package(staging, m)
            if config.verify.emulate_arm and any(
                a.status == "built" and a.target == "arm" for a in m.artifacts
            ):
                _verify_arm_emulated(staging)
                m = read_manifest(staging)
            return m

        manifest = write_atomically(out, fill)
    return BuildOutcome(manifest=manifest, results=results, package=out)
