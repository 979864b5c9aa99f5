"""The main job: source -> normalized model -> DAG run -> package on disk.

Everything that can be checked before work is checked first, each failure one line and exit
2: the data paths, the source, the output location (packaging/output.py: never the current
directory or a folder holding an input; writable; room for the package). The head nodes
(normalize, data, reference) run before any pass; if one fails the build stops with that
node's own error instead of a cascade of "upstream failed" skips.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compiler.core.errors import BackendUnavailable, CompilePkgError, ConfigError, InputModelError
from compiler.core.host import probe_host
from compiler.core.records import NodeResult
from compiler.measure.verify import now_utc
from compiler.packaging.assemble import assemble
from compiler.packaging.emulated import verify_emulated
from compiler.packaging.output import apply_umask, check_output, estimate_package_bytes
from compiler.packaging.report_charts import warm_imports
from compiler.packaging.retime import retime_perturbed
from compiler.packaging.tune_pick import tune_pick
from compiler.packaging.write import finish_package, rewrite_manifest, write_atomically
from compiler.pipeline.cache import Cache, default_cache_dir
from compiler.pipeline.config import BuildConfig
from compiler.pipeline.executors.base import Executor
from compiler.pipeline.executors.registry import make_executor, memory_gate
from compiler.pipeline.graph import build_graph
from compiler.pipeline.instruments import ProgressInstrument, TimingInstrument
from compiler.pipeline.nodes.context import BuildInputs, NodeContext
from compiler.pipeline.nodes.registry import KINDS
from compiler.pipeline.normalize import Source, export_torch, save_model, source_digest
from compiler.pipeline.preflight import preflight_source
from compiler.pipeline.remote_cache import is_url, open_cache
from compiler.pipeline.scheduler import Scheduler, StopBuild
from compiler.serving.manifest import Manifest, read_manifest

__all__ = ["BuildOutcome", "build_package", "check_data_paths", "prepare_source"]


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


def check_data_paths(**paths: Path | None) -> None:
    """Each given data path exists: an .npz file, or a folder holding .npz files."""
    for flag, path in paths.items():
        if path is None:
            continue
        name = "--" + flag.replace("_", "-")
        if path.is_dir():
            if not any(path.glob("*.npz")):
                raise ConfigError(f"{name} {path}: the folder holds no .npz files")
        elif not path.is_file():
            raise ConfigError(
                f"{name} {path}: no such file or folder; give an .npz file or a folder of them"
            )


def _head_failure(stop: StopBuild) -> CompilePkgError:
    """The one error a failed head node stops the build with: its own when it is about the
    user's input (exit 2), else one naming the node (a head node reads only the input)."""
    if isinstance(stop.error, CompilePkgError) and stop.error.exit_code == 2:
        return stop.error
    return InputModelError(f"{stop.node} {stop.result.status}: {stop.result.reason}")


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
    cache_dir: Path | str | None = None,
    use_cache: bool = True,
    sample_data: Path | None = None,
    calibration_data: Path | None = None,
    on_event: Callable[[str, NodeResult | None], None] = lambda nid, r: None,
    overwrite: bool = False,
    config_path: Path | None = None,
    executor: Executor | None = None,
) -> BuildOutcome:
    """Build `source` for `targets` into the package folder `out` (replaced atomically).

    `overwrite` lets `out` be an existing folder that is not a package; `config_path` (the
    config file, if any) is protected like the other inputs. The nodes run on `executor`,
    else on the one `config.executor` names (docs/architecture.md, Executors)."""
    started = now_utc()
    check_data_paths(sample_data=sample_data, calibration_data=calibration_data)
    facts = preflight_source(source)
    cache_root = (cache_dir or default_cache_dir()) if use_cache else None
    local_cache = Path(cache_root) if cache_root and not is_url(cache_root) else None
    given = [
        p for p in (source.onnx_path, sample_data, calibration_data, config_path, local_cache) if p
    ]
    plan = check_output(out, inputs=given, overwrite=overwrite)
    with tempfile.TemporaryDirectory(prefix="compile-pkg-") as tmp:
        tmpdir = Path(tmp)
        src_path, digest, name, kind = prepare_source(source, config, tmpdir)
        g = build_graph(config, targets)
        model_bytes = facts.total_bytes if facts else src_path.stat().st_size
        plan.require_free_space(estimate_package_bytes(model_bytes, len(g.artifacts)))
        # a folder, or an fsspec URL mirrored locally (pipeline/remote_cache.py)
        cache = open_cache(cache_root) if cache_root else Cache(tmpdir / "cache")
        # the backends' own caches (TVM tuning databases, the libcuda stand-in, TensorRT
        # timing caches) beside the node cache; with no cache, in this build's temporary
        # folder, so `--no-cache` leaves nothing behind but the package; for a remote cache,
        # the default root. Absolute: backends build in child processes of their own folders
        backend_cache = local_cache or (None if use_cache else tmpdir / "backends")
        inputs = BuildInputs(
            src_path,
            digest,
            config,
            targets,
            sample_data,
            calibration_data,
            backend_cache.absolute() if backend_cache else None,
        )
        # progress outermost, so each event carries the node's time
        instruments = (ProgressInstrument(on_event), TimingInstrument())
        heads = (g.normalize.id, g.data.id, g.reference.id)
        runs_on = executor or make_executor(config.executor)
        scheduler = Scheduler(
            KINDS,
            cache,
            instruments,
            stop_on=heads,
            # the data checks (files against the contract) before any pass or compile: bad
            # input is refused before work starts, not raced by a compile beside it
            first=(g.normalize.id, g.data.id),
            executor=runs_on,
            exclusive=config.executor.exclusive,
            gate=memory_gate(config.executor, runs_on),
            retry_failed=config.executor.retry_failed,
        )
        warm_imports()  # the report's, while the nodes run
        try:
            host = probe_host()
            results = scheduler.run(NodeContext(inputs, g, host))
        except StopBuild as stop:
            raise _head_failure(stop) from None
        finally:
            cache.clear_scratch()

        def fill(staging: Path) -> Manifest:
            apply_umask(staging)
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
            store = local_cache / "retime" if local_cache is not None else None
            if config.verify.retime_slow and retime_perturbed(staging, store, host):
                m = read_manifest(staging)
            if config.tuning.pick and not config.tuning.enabled:
                seconds = config.tuning.seconds_per_artifact
                store = local_cache / "tune-pick" if local_cache is not None else None
                if tune_pick(staging, seconds, store, host):
                    m = read_manifest(staging)
            if config.verify.emulate_arm and any(
                a.status == "built" and a.target == "arm" for a in m.artifacts
            ):
                _verify_arm_emulated(staging)
                m = read_manifest(staging)
            return m

        manifest = write_atomically(out, fill)
    return BuildOutcome(manifest=manifest, results=results, package=out)
