"""data: the sample inputs parity is measured on and the calibration inputs, from the user's
files or generated from the contract."""

from __future__ import annotations

from pathlib import Path

from compiler.core.feeds import Feeds, feeds_digest, write_feeds_npz
from compiler.core.hashing import dir_digest, file_sha256
from compiler.core.records import DataOutput, DataSource
from compiler.pipeline.data import generate_feeds, read_feeds
from compiler.pipeline.graph import DataNode
from compiler.pipeline.nodes.base import KeyMaterial, Kind
from compiler.pipeline.nodes.context import NodeContext

__all__ = ["DataKind"]


class DataKind(Kind[DataNode]):
    version = "2"

    def key(self, node: DataNode, ctx: NodeContext) -> KeyMaterial:
        cfg = ctx.config
        user = {}
        for label, path in (
            ("samples", ctx.inputs.sample_data),
            ("calibration", ctx.inputs.calibration_data),
        ):
            if path is not None:
                user[label] = dir_digest(path) if path.is_dir() else file_sha256(path)
        return {
            "samples": cfg.parity.samples,
            "seed": cfg.parity.seed,
            "ranges": {k: v.model_dump() for k, v in cfg.inputs.items()},
            "user": user,
        }

    def run(self, node: DataNode, ctx: NodeContext, out: Path) -> DataOutput:
        cfg, contract = ctx.config, ctx.contract(node.normalize)
        ranges = {k: (v.low, v.high) for k, v in cfg.inputs.items()}
        samples_source: DataSource = "generated"
        calibration_source: DataSource = "generated"
        if ctx.inputs.sample_data is not None:
            samples, samples_source = read_feeds(ctx.inputs.sample_data, contract), "user"
        else:
            samples = generate_feeds(contract, cfg.parity.samples, cfg.parity.seed, ranges)
        calibration: list[Feeds]
        if ctx.inputs.calibration_data is not None:
            calibration = read_feeds(ctx.inputs.calibration_data, contract)
            calibration_source = "user"
        elif samples_source == "user":
            calibration, calibration_source = samples, "user"
        else:
            count = max(cfg.parity.samples, 16)
            calibration = generate_feeds(contract, count, cfg.parity.seed + 1, ranges)
        write_feeds_npz(out / "samples.npz", samples)
        write_feeds_npz(out / "calibration.npz", calibration)
        return DataOutput(
            samples=len(samples),
            samples_source=samples_source,
            calibration=len(calibration),
            calibration_source=calibration_source,
            samples_digest=feeds_digest(samples),
        )
