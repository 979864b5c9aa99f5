"""data: the sample inputs parity is judged on and the calibration inputs, from the user's
files or data loader (split so the two never share a feed) or generated from the contract;
generated samples are run on the reference model first, so data the model cannot use stops
the build here, before any compile.

Writes `samples.npz`, `calibration.npz` and, when the user's data has labels, `labels.json`
(a JSON list, one label per sample)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from compiler.core.contract import ValueDomain
from compiler.core.errors import ConfigError
from compiler.core.feeds import Feeds, feeds_digest, read_feeds_npz, write_feeds_npz
from compiler.core.hashing import dir_digest, file_sha256
from compiler.core.records import DataOutput, DataSource
from compiler.pipeline.data import generate_feeds, resolve_domains
from compiler.pipeline.graph import DataNode
from compiler.pipeline.nodes.base import KeyMaterial, Kind
from compiler.pipeline.nodes.context import NodeContext
from compiler.pipeline.probe import check_generated
from compiler.pipeline.userdata import LABELS_FILE, Labelled, load_user_data, run_loader

__all__ = ["DataKind"]


def _path_digest(path: Path) -> str:
    """A user file's or folder's content, with the labels.json beside a single file."""
    if path.is_dir():
        return dir_digest(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file or folder; give a .npz file or a folder of them")
    labels = path.parent / LABELS_FILE
    return file_sha256(path) + (file_sha256(labels) if labels.is_file() else "")


def _stash(ctx: NodeContext, loader: str) -> Path | None:
    """Where the key step leaves a loader's data for the run step: the build's scratch."""
    if ctx.scratch is None:
        return None
    return ctx.scratch / "data-loader" / hashlib.sha256(loader.encode()).hexdigest()[:32]


def _save(folder: Path, loaded: Labelled) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_feeds_npz(folder / "feeds.npz", loaded.feeds)
    (folder / LABELS_FILE).write_text(json.dumps(loaded.labels), encoding="utf-8")
    (folder / "digest").write_text(loaded.digest(), encoding="ascii")  # written last


def _saved(folder: Path | None) -> Labelled | None:
    """The data `_save` left in `folder`, if whole and unchanged; else None."""
    if folder is None or not (folder / "digest").is_file():
        return None
    labels = json.loads((folder / LABELS_FILE).read_text(encoding="utf-8"))
    loaded = Labelled(read_feeds_npz(folder / "feeds.npz"), labels)
    return loaded if loaded.digest() == (folder / "digest").read_text(encoding="ascii") else None


class DataKind(Kind[DataNode]):
    """Holds no state between `key` and `run`: they may run in different processes (the
    build's and a worker's), which share the cache. A data loader runs once, for the key (its
    data's digest); its data waits in the build's scratch for the run step, wherever it runs."""

    version = "3"

    def key(self, node: DataNode, ctx: NodeContext) -> KeyMaterial:
        cfg = ctx.config
        user = {}
        for label, path in (
            ("samples", ctx.inputs.sample_data),
            ("calibration", ctx.inputs.calibration_data),
        ):
            if path is not None:
                user[label] = _path_digest(path)
        if cfg.data.loader is not None:
            loaded = run_loader(cfg.data.loader, ctx.contract(node.normalize))
            stash = _stash(ctx, cfg.data.loader)
            if stash is not None:
                _save(stash, loaded)
            user["loader"] = loaded.digest()
        return {
            "samples": cfg.parity.samples,
            "seed": cfg.parity.seed,
            "data": cfg.data.model_dump(mode="json"),
            "inputs": {k: v.model_dump(mode="json") for k, v in cfg.inputs.items()},
            "user": user,
        }

    def run(self, node: DataNode, ctx: NodeContext, out: Path) -> DataOutput:
        cfg, contract = ctx.config, ctx.contract(node.normalize)
        domains = resolve_domains(contract, cfg.inputs)
        user = load_user_data(
            contract,
            samples=ctx.inputs.sample_data,
            calibration=ctx.inputs.calibration_data,
            loader=cfg.data.loader,
            validation_fraction=cfg.data.validation_fraction,
            loaded=_saved(_stash(ctx, cfg.data.loader)) if cfg.data.loader else None,
        )
        model, where = ctx.model_path(node.normalize), ctx.inputs.source_path.name
        used: dict[str, ValueDomain] = {}
        samples_source: DataSource = "user"
        calibration_source: DataSource = "user"
        if user.samples is not None:
            samples, labels = user.samples.feeds, user.samples.labels
        else:
            samples = generate_feeds(contract, cfg.parity.samples, cfg.parity.seed, domains)
            labels, samples_source = None, "generated"
            check_generated(model, contract, samples, domains, where)
            used = domains
        calibration: list[Feeds]
        if user.calibration is not None:
            calibration = user.calibration
        else:
            calibration = generate_feeds(
                contract, cfg.data.calibration_samples, cfg.parity.seed + 1, domains
            )
            if samples_source == "user":
                check_generated(model, contract, calibration, domains, where)
            calibration_source, used = "generated", domains
        write_feeds_npz(out / "samples.npz", samples)
        write_feeds_npz(out / "calibration.npz", calibration)
        if labels is not None:
            (out / LABELS_FILE).write_text(json.dumps(labels, indent=1) + "\n", encoding="utf-8")
        return DataOutput(
            samples=len(samples),
            samples_source=samples_source,
            calibration=len(calibration),
            calibration_source=calibration_source,
            samples_digest=feeds_digest(samples),
            labels=labels is not None,
            split_from=user.split_from,
            overlap_removed=user.overlap_removed,
            domains=used,
        )
