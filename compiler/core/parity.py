"""Parity of an artifact's outputs against the reference outputs, judged by what each output
means: the one implementation the build, `compile-pkg verify`, the emulated aarch64 check and
the GPU verification script use. Standard library and numpy only (and the feeds reader, for
the reference's scores file).

The kind (the contract's: read off the graph, or set in the config) picks the metrics:
- class_scores, probabilities over classes, logits_sequence (one distribution per step):
  decided top-1 agreement over rows of the last axis. A flip counts only where the reference
  scores its own top class more than `top1_tie` (in probability) above the artifact's pick:
  between classes the reference cannot separate, the argmax follows the kernels' rounding and
  differs between AVX2 and AVX-512 VNNI hosts for the same model.
  Steps (rank >= 3: a row per time step, anchor or token) where one class is the top of at
  least COMMON_SHARE of the reference's rows (CTC's blank, a detector's background, a
  tagger's "O") are also judged over the rows where the reference or the artifact picks
  another class (`top1_uncommon`): over all rows, an artifact that lost every character of a
  line or every detection of an image kept 0.9 of them.
- probabilities that are no distribution (a Sigmoid's: a presence flag, a VAD's speech
  probability, multi-label tags): read as decisions at 0.5, decided agreement over every
  element (a flip counts where the reference lies more than `top1_tie` from 0.5), and where
  one decision is COMMON_SHARE of the reference's elements also over those where either side
  decides the other way (`top1_uncommon`); and their RMS error in probability units, both.
  A flag at 0.6 that int8 moves to 0.45 is a decision lost, which an RMS error over many
  samples near 0 and 1 does not show.
- linear_head (a MatMul/Gemm's output the graph does not say the meaning of: class logits or
  a regression): decided top-1 agreement, and L2 error and cosine as for an unknown kind,
  both; an artifact that keeps every argmax of a regression head while it moves every
  coordinate fails.
- embedding: mean cosine of rows (last axis); rows whose reference is near zero are left out.
- dense_map, boxes, state: scale-aware L2 error, ||artifact - reference|| / ||reference||.
- unknown kind (None, `other`): L2 error and cosine; rows that are distributions (softmax
  outputs) are judged as probabilities even where the graph did not say so.
- sampled (an output a random draw in the graph reaches: a VAE's sample, a TTS model's noise;
  two runs of the reference differ there): by its distribution over all elements and samples,
  not value by value: the artifact's mean within SAMPLED_MEAN_SHIFT of the reference's spread
  from the reference's mean, and its spread within SAMPLED_SPREAD of the reference's (the
  smaller over the larger). A gross check, the only one one draw allows: an artifact that
  zeroes, saturates or rescales the output fails; one that draws other numbers passes.
  Shapes may differ (a sampled duration). The model's other outputs are judged as usual.
- index outputs (an ArgMax's class, a TopK's k best: compiler/pipeline/index_scores.py),
  where the reference's scores behind them are given (IndexScores): decided agreement, a
  flip counting only where the reference scores the artifact's pick more than `top1_tie` (in
  probability) below its own, as decided top-1 does for class scores: a TopK's tail ranks,
  all near zero, come in any order from any two kernels. Without scores, as integers.
- integer and bool outputs: exact agreement; where one value is at least COMMON_SHARE of
  the reference's elements (a label map's background, a decoded sequence's blank, a mask's
  False) and a sample holds more than one, also over the elements where either side holds
  another value (`agreement_uncommon`): a segmentation that lost its only object kept 0.9.
fp32 tolerances add an elementwise bound (atol + rtol * peak) on every float output.

Near zero: a reference whose RMS is so small that max_rel_l2 of it is below the tolerance's
atol carries no scale of its own: its L2 error passes when within atol (the floor every
precision has), and cosine is not used. Probabilities have a natural scale, 1.

Non-finite values: a reference may hold NaN or +-inf by design (logits masked with -inf past
a sequence's length, a log of a silent frame). Where the artifact holds the same value at the
same position, the position agrees and is left out of the value metrics (for the kind's own
metrics, -inf and NaN read as below every finite value and +inf above); any position where
one side holds NaN or an infinity and the other another value fails the output at every
precision, and the metrics are those of the positions finite on both sides.

Channels of mixed scale: one tensor may hold quantities in different units along a short
axis, a detector's raw head above all ([1, 4 + classes, anchors]: box coordinates in pixels
beside class probabilities). Its L2 error is the pixels' error; int8 that zeroes every class
score (one quantization scale for the concatenated head) kept 0.06 of it and passed while it
found none of the reference's detections. The channel axis: for rank 2 and 3 the shorter
axis after the first ([N, 4 + classes], [1, 84, 8400], [1, 25200, 85]); for rank 4 and more
axis 1 only (NCHW channels: never the rows or columns of a map, which a sparse map would
make look like channels of mixed scale). It holds 2 to CHANNELS_MAX entries. Where its
channels differ in RMS by CHANNEL_SCALE_RATIO or more (the largest against the median),
lossy artifacts are also judged channel by channel: each channel's L2 error relative to its
own RMS (or to the near-zero floor, for a channel that carries nothing), combined as the
root mean square over channels (`channel_rel_l2`), against max_rel_l2. fp32 keeps its
elementwise bound, whose errors are rounding, not range.

Score channels of a dense map: a detector's head may keep every channel at one scale (raw
box offsets and log sizes beside a sigmoid objectness, YOLOX's [1, anchors, 4 + 1 +
classes]) and its L2 error then says nothing of the few anchors that hold the objects. On
the channel axis above, a channel whose reference lies in [0, 1] everywhere and is above 0.5
in at most SCORE_SHARE of its elements, and in some, is a score channel: its elements are
read as decisions at 0.5 like independent probabilities (decided agreement, and over the
elements where either side is above 0.5), beside the map's L2 error. Box coordinates
normalized to [0, 1] are above 0.5 on about half of the anchors and stay values.

What the model is for (its task metric on labelled samples) is compiler/core/task.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.feeds import read_feeds_npz
from compiler.core.tolerance import Tolerance

__all__ = [
    "CHANNELS_MAX",
    "COMMON_SHARE",
    "CHANNEL_SCALE_RATIO",
    "CLASS_KINDS",
    "SAMPLED_MEAN_SHIFT",
    "SAMPLED_SPREAD",
    "SCORE_SHARE",
    "SHAPE_MISMATCH",
    "Check",
    "IndexScores",
    "SCORES_FILE",
    "OutputParity",
    "checks",
    "compare_outputs",
    "index_agreement",
    "departure",
    "judge",
    "margin",
    "near_zero_scale",
    "output_metrics",
    "pack_scores",
    "read_scores",
    "unpack_scores",
    "worst_output",
]

REL_EPS = 1e-6
# a short axis whose entries are separate quantities (the channels of a detector's head): at
# most this many entries, and their RMS spread (largest / median) at least this
CHANNELS_MAX = 1024
CHANNEL_SCALE_RATIO = 100.0
_CHANNEL_MIN_VALUES = 16  # values per channel over all samples before channels are judged
CLASS_KINDS = ("class_scores", "probabilities", "logits_sequence", "linear_head")
# a class that tops at least this share of a sequence's rows is its common one (blank, background)
COMMON_SHARE = 0.5
# a dense map's channel is a score channel when every reference value lies in [0, 1] and at
# most this share of them is above THRESHOLD, and some are (module docstring)
SCORE_SHARE = 0.1
# probabilities that are no distribution (a Sigmoid's) are read as decisions at this value
THRESHOLD = 0.5
# a sampled output (module docstring): the artifact's mean at most this many of the
# reference's standard deviations from the reference's, and its standard deviation at least
# this share of the reference's (or the reference's of its). A gross check: the elements of
# one output share their draws (a VAE's 8 latent values make all 16 of its outputs), and two
# runs of the reference itself on 8 samples, 2000 times over, came as far apart as spread
# 0.61 and mean shift 0.58 (medians 0.91 and 0.08); an artifact that zeroes or saturates the
# output, or loses the noise's term, is further apart
SAMPLED_MEAN_SHIFT = 0.75
SAMPLED_SPREAD = 0.5
_SUM_TOL = 1e-3  # rows summing to 1 within this (and >= 0) are probability distributions
_MAX_SLACK = 0.05  # at most this more where the values sit on a grid (_rounding_slack)
# Below this cosine (or this exact agreement of an integer output) an output mostly carries
# something other than the reference's signal: no task score beside it makes it pass
# (compiler/core/task.py, `verdict`).
GROSS_FLOOR = 0.9
SHAPE_MISMATCH = "shape mismatch"  # how an output whose shapes differ says so (`error`)

Outputs = Sequence[Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Check:
    """One metric that judged an output: its value, its bound and which side passes."""

    __pydantic_config__ = {"extra": "forbid"}  # read by pydantic where embedded

    metric: str  # max_abs_err, rel_l2, cosine, row_cosine, top1_decided, agreement
    value: float
    bound: float
    at_least: bool  # passes when value >= bound (else value <= bound)
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.value >= self.bound if self.at_least else self.value <= self.bound

    def margin(self) -> float:
        """How far inside the bound (negative: outside); relative for upper bounds."""
        if self.at_least:
            return self.value - self.bound
        if self.bound > 0:
            return (self.bound - self.value) / self.bound
        return 0.0 if self.value == 0 else -1.0

    def describe(self) -> str:
        text = {
            "max_abs_err": f"max abs err {self.value:.3g} > {self.bound:.3g}",
            "rel_l2": f"L2 error {self.value:.3g} of the output's scale > {self.bound}",
            "cosine": f"cosine {self.value:.6f} < {self.bound}",
            "row_cosine": f"mean row cosine {self.value:.6f} < {self.bound}",
            "top1_decided": f"decided top-1 agreement {self.value:.3f} < {self.bound}",
            "top1_uncommon": f"decided top-1 agreement {self.value:.3f} < {self.bound} where "
            "a class other than the common one is picked",
            "agreement": f"exact agreement {self.value:.3f} < {self.bound}",
            "agreement_decided": f"decided agreement {self.value:.3f} < {self.bound}",
            "agreement_uncommon": f"exact agreement {self.value:.3f} < {self.bound} where a "
            "value other than the common one is output",
            "channel_rel_l2": f"L2 error {self.value:.3g} per channel, each of its own scale, "
            f"> {self.bound}",
            "mean_shift": f"mean {self.value:.3g} of the reference's spread from its mean "
            f"> {self.bound}",
            "spread_ratio": f"spread {self.value:.3f} of the reference's (or it of this) "
            f"< {self.bound}",
        }.get(self.metric, f"{self.metric} {self.value:.6g} vs bound {self.bound}")
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class OutputParity:
    """Metrics of one output over all samples, and (once judged) its verdict. `kind` is the
    kind it was judged as; `checks` are the metrics that judged it, with their bounds."""

    __pydantic_config__ = {"extra": "forbid"}  # read by pydantic where embedded

    kind: str = "other"
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    mean_abs_err: float = 0.0
    ref_max_abs: float = 0.0
    ref_rms: float = 0.0
    err_rms: float = 0.0
    rel_l2: float | None = None  # err_rms / ref_rms; None where the reference is all zero
    finite: bool = True
    cosine: float = 1.0  # of the flattened tensors
    top1_agreement: float | None = None  # plain argmax agreement (class outputs)
    top1_decided: float | None = None  # flips only between classes the reference separates
    top5_agreement: float | None = None
    rows: int = 0  # rows judged: class rows, or embedding rows not near zero
    # steps with a common class, or an integer output with a common value (module docstring):
    # that class or value, the share of the reference's rows (elements) it tops, how many
    # rows (elements) either side has another in, and decided top-1 (exact agreement) there
    common_class: int | None = None
    common_share: float | None = None
    uncommon_rows: int = 0
    top1_uncommon: float | None = None
    # probabilities that are no distribution: the value the top-1 metrics read decisions at
    # (each element one decision); None where top-1 is an argmax over classes
    threshold: float | None = None
    agreement: float | None = None  # integer outputs: fraction of equal elements
    # index outputs with the reference's scores: fraction agreeing as decisions (docstring)
    agreement_decided: float | None = None
    agreement_uncommon: float | None = None  # ... of those where either side is uncommon
    row_cosine_mean: float | None = None
    row_cosine_min: float | None = None
    # channels of mixed scale (module docstring): the axis, how many, their RMS spread, the
    # RMS over channels of each one's relative L2 error, and the worst channel with its error
    channel_axis: int | None = None
    channels: int = 0
    channel_scale_ratio: float | None = None
    channel_rel_l2: float | None = None
    channel_worst: int | None = None
    channel_worst_rel_l2: float | None = None
    # a dense map's score channels (module docstring): the channels read as decisions at
    # `threshold`, whose top-1 metrics above are over their elements
    decision_channels: tuple[int, ...] = ()
    # a sampled output (module docstring): |mean - reference mean| / reference spread, and the
    # smaller standard deviation over the larger
    mean_shift: float | None = None
    spread_ratio: float | None = None
    # NaN or +-inf (module docstring): positions where the artifact holds the reference's own
    # value, left out of the value metrics, and positions where one side holds one and the
    # other another value (any fails)
    nonfinite_matched: int = 0
    nonfinite_differ: int = 0
    error: str = ""  # the output could not be compared at all (shape mismatch)
    tolerance: Tolerance | None = None
    checks: tuple[Check, ...] = ()
    passed: bool = False
    failures: tuple[str, ...] = ()


@dataclass(frozen=True)
class IndexScores:
    """The reference's scores behind an index output, for one sample (module docstring;
    compiler/pipeline/index_scores.py makes them): `probs` [positions, classes] as
    probabilities, the best the largest, and for each element of the output, flattened, the
    row of `probs` it was picked from (`rows`)."""

    probs: np.ndarray
    rows: np.ndarray


SCORES_FILE = "scores.npz"  # beside a reference's outputs.npz: IndexScores by output
_ROWS = "#rows"


def pack_scores(samples: Sequence[Mapping[str, IndexScores]]) -> list[dict[str, np.ndarray]]:
    """IndexScores per sample as arrays (for compiler.core.feeds.write_feeds_npz)."""
    return [
        {k: v for name, sc in per.items() for k, v in ((name, sc.probs), (name + _ROWS, sc.rows))}
        for per in samples
    ]


def unpack_scores(samples: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, IndexScores]]:
    """`pack_scores` undone (arrays read from SCORES_FILE)."""
    return [
        {
            name: IndexScores(probs=arrays[name], rows=arrays[name + _ROWS])
            for name in arrays
            if not name.endswith(_ROWS) and name + _ROWS in arrays
        }
        for arrays in samples
    ]


def read_scores(folder: Path) -> list[dict[str, IndexScores]] | None:
    """The IndexScores a reference folder holds (SCORES_FILE), or None where it holds none."""
    path = folder / SCORES_FILE
    return unpack_scores(read_feeds_npz(path)) if path.is_file() else None


def index_agreement(
    outs: Sequence[np.ndarray],
    refs: Sequence[np.ndarray],
    scores: Sequence[IndexScores],
    tie: float,
) -> np.ndarray | None:
    """Per element of every sample (flattened, in order), whether the artifact's pick agrees
    with the reference's as a decision: the same, or scored by the reference no more than
    `tie` below the reference's own pick. None where the scores do not fit the outputs."""
    parts = []
    for o, r, sc in zip(outs, refs, scores, strict=True):
        got, ref = o.reshape(-1).astype(np.int64), r.reshape(-1).astype(np.int64)
        classes = sc.probs.shape[1] if sc.probs.ndim == 2 else 0
        if sc.rows.shape != ref.shape or not classes or ((ref < 0) | (ref >= classes)).any():
            return None
        if sc.rows.size and (sc.rows.min() < 0 or sc.rows.max() >= sc.probs.shape[0]):
            return None
        inside = (got >= 0) & (got < classes)
        mine = sc.probs[sc.rows, ref].astype(np.float64)
        theirs = np.where(inside, sc.probs[sc.rows, np.clip(got, 0, classes - 1)], -np.inf)
        parts.append((got == ref) | (theirs >= mine - tie))
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def _rows(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([a.reshape(-1, a.shape[-1]) for a in arrays])


def _stackable(arrays: Sequence[np.ndarray]) -> bool:
    """Whether the samples' rows stack: one rank and one non-empty last axis in every sample.
    A data-sized output (the scores a non-maximum suppression keeps, `[n]`) differs from
    sample to sample, and has no rows of classes or embeddings to compare."""
    first = arrays[0]
    return (
        first.ndim >= 1
        and first.shape[-1] >= 1
        and all(a.ndim == first.ndim and a.shape[-1] == first.shape[-1] for a in arrays)
    )


def _is_distribution(rows: np.ndarray) -> bool:
    if rows.shape[1] < 2 or not bool((rows >= -_SUM_TOL).all()):
        return False
    off = float(np.abs(rows.sum(axis=1) - 1.0).max())
    # the grid test sorts every value: only for rows whose sums are off by rounding at most
    return off <= _SUM_TOL or (
        off <= _SUM_TOL + _MAX_SLACK and off <= _SUM_TOL + _rounding_slack(rows)
    )


def _rounding_slack(rows: np.ndarray) -> float:
    """How far rounding can move a row's sum when the values sit on a grid (an already
    quantized model's softmax goes out through a DequantizeLinear: steps of 1/255): half a
    step per class, at most 0.05; 0 for values that are not on a coarse grid."""
    values = np.unique(rows)
    if values.size < 2 or values.size > 256:
        return 0.0
    step = float(np.diff(values).min())
    if step < 1e-3 or not np.allclose(
        (values - values[0]) / step, np.round((values - values[0]) / step), atol=1e-3
    ):
        return 0.0
    return min(_MAX_SLACK, rows.shape[1] * step / 2)


def _softmax(rows: np.ndarray) -> np.ndarray:
    z = np.exp(rows - rows.max(axis=1, keepdims=True))
    return np.asarray(z / z.sum(axis=1, keepdims=True))


def _judged_kind(kind: str | None, refs: Sequence[np.ndarray]) -> str:
    """The kind an output is judged as: class kinds need a class axis of at least two."""
    classes = _stackable(refs) and refs[0].shape[-1] >= 2 and refs[0].size > 0
    if kind is None or kind == "other":
        return "probabilities" if classes and _is_distribution(_rows(refs)) else "other"
    if kind in ("class_scores", "logits_sequence", "linear_head") and not classes:
        return "other"
    return kind


def _class_metrics(
    outs: list[np.ndarray], refs: list[np.ndarray], tie: float, steps: bool
) -> dict[str, Any]:
    o2, r2 = _rows(outs), _rows(refs)
    pick, best = o2.argmax(axis=1), r2.argmax(axis=1)
    p = r2 if _is_distribution(r2) else _softmax(r2)
    decided = p[np.arange(len(p)), pick] >= p.max(axis=1) - tie
    k = min(5, o2.shape[1])
    top5 = (np.argpartition(-o2, k - 1, axis=1)[:, :k] == best[:, None]).any(axis=1)
    out = {
        "top1_agreement": float((pick == best).mean()),
        "top1_decided": float(decided.mean()),
        "top5_agreement": float(top5.mean()),
        "rows": len(p),
    }
    if steps and len(best):
        out |= _uncommon(best, pick, decided, "top1_uncommon")
    return out


def _decision_metrics(a: np.ndarray, r: np.ndarray, tie: float) -> dict[str, Any]:
    """Probabilities that are no distribution (`a`, `r`: every element of every sample) read
    as decisions at THRESHOLD (module docstring)."""
    got, ref = a > THRESHOLD, r > THRESHOLD
    agree = got == ref
    decided = agree | (np.abs(r - THRESHOLD) <= tie)
    return {
        "threshold": THRESHOLD,
        "top1_agreement": float(agree.mean()),
        "top1_decided": float(decided.mean()),
        "rows": int(r.size),
        **_uncommon(ref.astype(np.int64), got.astype(np.int64), decided, "top1_uncommon"),
    }


def _uncommon(ref: np.ndarray, got: np.ndarray, agree: np.ndarray, metric: str) -> dict[str, Any]:
    """Where one label (a class, an integer value) is at least COMMON_SHARE of the
    reference's `ref`: that label, its share, and the rate of `agree` over the entries where
    the reference or the artifact (`got`) holds another, as `metric`; {} where none is."""
    values, counts = np.unique(ref, return_counts=True)
    top = int(counts.argmax())
    share = float(counts[top] / ref.size)
    if share < COMMON_SHARE:
        return {}
    uncommon = (ref != values[top]) | (got != values[top])
    return {
        "common_class": int(values[top]),
        "common_share": share,
        "uncommon_rows": int(uncommon.sum()),
        metric: float(agree[uncommon].mean()) if uncommon.any() else 1.0,
    }


def _row_cosines(outs: list[np.ndarray], refs: list[np.ndarray], floor: float) -> dict[str, Any]:
    o2, r2 = _rows(outs), _rows(refs)
    no, nr = np.linalg.norm(o2, axis=1), np.linalg.norm(r2, axis=1)
    keep = nr > floor * math.sqrt(r2.shape[1])
    if not keep.any():
        return {"rows": 0}
    cos = (o2[keep] * r2[keep]).sum(axis=1) / np.maximum(no[keep] * nr[keep], 1e-300)
    return {
        "rows": int(keep.sum()),
        "row_cosine_mean": float(cos.mean()),
        "row_cosine_min": float(cos.min()),
    }


def _channel_axis(refs: Sequence[np.ndarray]) -> int | None:
    """The channel axis of an output (module docstring) when it has 2..CHANNELS_MAX entries
    in every sample, else None: for rank 2-3 the shorter axis after the first (the earlier
    on a tie), for rank 4+ axis 1."""
    shape = refs[0].shape
    if len(shape) < 2 or any(r.ndim != len(shape) for r in refs):
        return None
    candidates = range(1, len(shape)) if len(shape) <= 3 else (1,)
    axes = [
        ax
        for ax in candidates
        if 2 <= shape[ax] <= CHANNELS_MAX and all(r.shape[ax] == shape[ax] for r in refs)
    ]
    return min(axes, key=lambda ax: (shape[ax], ax)) if axes else None


def _by_channel(arrays: Sequence[np.ndarray], axis: int) -> np.ndarray:
    """Samples' values channel by channel: [channels, every other value of every sample]."""
    count = arrays[0].shape[axis]
    return np.concatenate([np.moveaxis(a, axis, 0).reshape(count, -1) for a in arrays], 1)


def _channel_metrics(
    outs: list[np.ndarray], r: np.ndarray, axis: int, floor: float
) -> dict[str, Any]:
    """The channel-by-channel error of an output whose channels (on `axis`; `r`: the
    reference by channel) differ widely in scale (module docstring); {} where they do not."""
    count = r.shape[0]
    if r.shape[1] < _CHANNEL_MIN_VALUES:
        return {}
    ref_rms = np.sqrt(np.mean(r * r, axis=1))
    err_rms = np.sqrt(np.mean((_by_channel(outs, axis) - r) ** 2, axis=1))
    live = ref_rms[ref_rms > floor]
    if live.size < 2 or not np.isfinite(ref_rms).all():
        return {}
    ratio = float(live.max() / np.median(live))
    if ratio < CHANNEL_SCALE_RATIO:
        return {}
    rel = err_rms / np.maximum(ref_rms, max(floor, np.finfo(np.float64).tiny))
    worst = int(np.argmax(rel))
    return {
        "channel_axis": axis,
        "channels": count,
        "channel_scale_ratio": ratio,
        "channel_rel_l2": float(np.sqrt(np.mean(rel * rel))),
        "channel_worst": worst,
        "channel_worst_rel_l2": float(rel[worst]),
    }


def _score_channels(outs: list[np.ndarray], r: np.ndarray, axis: int, tie: float) -> dict[str, Any]:
    """A dense map's score channels read as decisions at THRESHOLD (module docstring): the
    channels on `axis` (`r`: the reference by channel) whose reference lies in [0, 1]
    everywhere and is above the threshold in some elements, at most SCORE_SHARE of them; {}
    where it has none."""
    if not np.isfinite(r).all():
        return {}
    above = (r > THRESHOLD).mean(axis=1)
    inside = ((r >= 0) & (r <= 1)).all(axis=1)
    scores = np.flatnonzero(inside & (above > 0) & (above <= SCORE_SHARE))
    if not scores.size:
        return {}
    a = _by_channel(outs, axis)
    return _decision_metrics(a[scores].ravel(), r[scores].ravel(), tie) | {
        "decision_channels": tuple(int(c) for c in scores)
    }


def _l2(x: np.ndarray) -> float:
    """Euclidean norm by ufuncs, not BLAS: a build's verify node once spun forever inside
    OpenBLAS's thread pool (exec_blas) on a 150k-element norm after other libraries had run
    their own threads in the process; these sums are small and need no BLAS threads."""
    return math.sqrt(float(np.square(x).sum()))


def _cosine(a: np.ndarray, r: np.ndarray) -> float:
    na, nr = _l2(a), _l2(r)
    if na == 0.0 and nr == 0.0:
        return 1.0
    if na == 0.0 or nr == 0.0:
        return 0.0
    return float((a * r).sum() / (na * nr))


def output_metrics(
    outs: Sequence[np.ndarray],
    refs: Sequence[np.ndarray],
    kind: str | None = None,
    tolerance: Tolerance | None = None,
    scores: Sequence[IndexScores] | None = None,
) -> OutputParity:
    """Metrics over several samples of one output; not yet judged. `tolerance` sets the
    top-1 tie and the near-zero floor of embedding rows (defaults: 0.01, none); `scores`,
    per sample, the reference's scores behind an index output (IndexScores)."""
    o_list, r_list = [np.asarray(o) for o in outs], [np.asarray(x) for x in refs]
    if kind == "sampled":
        return _sampled_metrics(o_list, r_list)
    bad = [i for i, (o, x) in enumerate(zip(o_list, r_list, strict=True)) if o.shape != x.shape]
    if bad:
        i = bad[0]
        return OutputParity(
            kind=kind or "other",
            error=f"{SHAPE_MISMATCH} in sample {i}: {o_list[i].shape} vs reference {r_list[i].shape}",
            finite=False,
        )
    if not r_list or r_list[0].dtype.kind not in "fc":
        tie = tolerance.top1_tie if tolerance else 0.01
        return _integer_metrics(o_list, r_list, kind, scores, tie)
    o64 = [o.astype(np.float64) for o in o_list]
    r64 = [x.astype(np.float64) for x in r_list]
    a = np.concatenate([o.ravel() for o in o64])
    r = np.concatenate([x.ravel() for x in r64])
    a_bad, r_bad = ~np.isfinite(a), ~np.isfinite(r)
    matched = differ = 0
    if a_bad.any() or r_bad.any():
        same = a_bad & r_bad & ((a == r) | (np.isnan(a) & np.isnan(r)))
        matched, differ = int(same.sum()), int((a_bad | r_bad).sum() - same.sum())
        o64, r64 = _ordered_fill(o64, r64, a[~a_bad], r[~r_bad])
        keep = ~(a_bad | r_bad)
        a, r = a[keep], r[keep]
    judged = _judged_kind(kind, r64)
    diff = np.abs(a - r)
    n = max(r.size, 1)
    ref_rms, err_rms = (
        _l2(r) / math.sqrt(n),
        _l2(a - r) / math.sqrt(n),
    )
    extra: dict[str, Any] = {}
    tie = tolerance.top1_tie if tolerance else 0.01
    rows = _stackable(r64)  # the outputs' shapes equal the reference's (checked above)
    classes = rows and r64[0].shape[-1] >= 2
    if judged == "probabilities" and not (classes and _is_distribution(_rows(r64))):
        if r.size and bool(((r >= 0) & (r <= 1)).all()):
            extra = _decision_metrics(a, r, tie)
    elif judged in CLASS_KINDS and classes:
        extra = _class_metrics(o64, r64, tie, steps=r64[0].ndim >= 3)
    elif judged == "embedding" and rows:
        floor = (tolerance.atol or 0.0) if tolerance else 0.0
        extra = _row_cosines(o64, r64, floor)
    elif judged not in CLASS_KINDS and judged != "embedding":
        axis = _channel_axis(r64)
        if axis is not None:
            channels = _by_channel(r64, axis)  # the reference, reshaped once for both
            floor = near_zero_scale(tolerance) if tolerance else 0.0
            extra = _channel_metrics(o64, channels, axis, floor)
            if judged == "dense_map":
                extra |= _score_channels(o64, channels, axis, tie)
    return OutputParity(
        kind=judged,
        max_abs_err=float(diff.max()) if diff.size else 0.0,
        max_rel_err=float((diff / np.maximum(np.abs(r), REL_EPS)).max()) if diff.size else 0.0,
        mean_abs_err=float(diff.mean()) if diff.size else 0.0,
        ref_max_abs=float(np.abs(r).max()) if r.size else 0.0,
        ref_rms=ref_rms,
        err_rms=err_rms,
        rel_l2=err_rms / ref_rms if ref_rms > 0 else None,
        finite=differ == 0,
        cosine=_cosine(a, r),
        nonfinite_matched=matched,
        nonfinite_differ=differ,
        **extra,
    )


def _ordered_fill(
    outs: list[np.ndarray], refs: list[np.ndarray], a_fin: np.ndarray, r_fin: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Both sides with NaN and -inf put below every finite value of either and +inf above
    (`a_fin`, `r_fin`: their finite values), for the kind's own metrics: a masked class stays
    the least likely, and the argmax, softmax and row metrics stay finite."""
    fin = np.concatenate([a_fin, r_fin])
    lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 0.0)
    span = hi - lo + 1.0
    low, high = lo - span, hi + span

    def fill(x: np.ndarray) -> np.ndarray:
        return np.where(np.isposinf(x), high, np.where(np.isfinite(x), x, low))

    return [fill(o) for o in outs], [fill(x) for x in refs]


def _sampled_metrics(outs: list[np.ndarray], refs: list[np.ndarray]) -> OutputParity:
    """A sampled output's distribution against the reference's (module docstring)."""
    a = np.concatenate([o.astype(np.float64).ravel() for o in outs]) if outs else np.zeros(0)
    r = np.concatenate([x.astype(np.float64).ravel() for x in refs]) if refs else np.zeros(0)
    if not np.isfinite(a).all():
        return OutputParity(
            kind="sampled", finite=False, error="non-finite values (NaN/Inf) in the output"
        )
    if not a.size or not r.size:
        if a.size == r.size:
            return OutputParity(kind="sampled", mean_shift=0.0, spread_ratio=1.0)
        empty = "the artifact's" if not a.size else "the reference's"
        return OutputParity(kind="sampled", error=f"{empty} output is empty, the other's not")
    mean_a, mean_r = float(a.mean()), float(r.mean())
    std_a, std_r = float(a.std()), float(r.std())
    scale = std_r if std_r > 0 else max(abs(mean_r), REL_EPS)
    return OutputParity(
        kind="sampled",
        ref_max_abs=float(np.abs(r).max()),
        ref_rms=_l2(r) / math.sqrt(r.size),
        mean_shift=abs(mean_a - mean_r) / scale,
        spread_ratio=1.0 if std_a == std_r else min(std_a, std_r) / max(std_a, std_r),
    )


def _integer_metrics(
    outs: list[np.ndarray],
    refs: list[np.ndarray],
    kind: str | None,
    scores: Sequence[IndexScores] | None = None,
    tie: float = 0.01,
) -> OutputParity:
    a = np.concatenate([o.ravel() for o in outs]) if outs else np.zeros(0)
    r = np.concatenate([x.ravel() for x in refs]) if refs else np.zeros(0)
    diff = np.abs(a.astype(np.float64) - r.astype(np.float64))
    agree = a == r
    decided = None
    if scores is not None and len(scores) == len(refs):
        decided = index_agreement(outs, refs, scores, tie)
    if decided is not None:
        agree = decided
    return OutputParity(
        kind=kind or "other",
        max_abs_err=float(diff.max()) if diff.size else 0.0,
        mean_abs_err=float(diff.mean()) if diff.size else 0.0,
        ref_max_abs=float(np.abs(r.astype(np.float64)).max()) if r.size else 0.0,
        agreement=float((a == r).mean()) if r.size else 1.0,
        agreement_decided=None if decided is None else float(decided.mean()) if r.size else 1.0,
        cosine=_cosine(a.astype(np.float64), r.astype(np.float64)),
        rows=int(r.size),  # agreement is over every element
        **(
            _uncommon(r, a, agree, "agreement_uncommon")
            if refs and min(x.size for x in refs) >= 2
            else {}
        ),
    )


def _is_probability(m: OutputParity) -> bool:
    return m.kind == "probabilities"


def near_zero_scale(tol: Tolerance) -> float:
    """The reference RMS at or below which an output carries no scale of its own: where
    max_rel_l2 of it is no more than atol. L2 error is taken relative to this instead, so an
    error within atol always passes; cosine is not used below it."""
    atol = tol.atol or 0.0
    return atol / tol.max_rel_l2 if tol.max_rel_l2 else atol


def checks(m: OutputParity, tol: Tolerance) -> tuple[Check, ...]:
    """The metrics that judge `m`'s kind, each against its bound in `tol`."""
    if m.mean_shift is not None and m.spread_ratio is not None:
        note = "a sampled output: two runs of the reference differ, its distribution is judged"
        return (
            Check("mean_shift", m.mean_shift, SAMPLED_MEAN_SHIFT, False, note),
            Check("spread_ratio", m.spread_ratio, SAMPLED_SPREAD, True),
        )
    if m.agreement is not None:
        whole = Check("agreement", m.agreement, tol.min_top1, at_least=True)
        decided = ""
        if m.agreement_decided is not None:
            decided = (
                f"flips between picks the reference scores within {tol.top1_tie} of each "
                "other (in probability) not counted"
            )
            whole = Check("agreement_decided", m.agreement_decided, tol.min_top1, True, decided)
        if m.agreement_uncommon is None:
            return (whole,)
        note = (
            f"over the {m.uncommon_rows} elements where the reference or the artifact holds a "
            f"value other than {m.common_class}, {m.common_share or 0:.0%} of the reference's"
            + (f"; {decided}" if decided else "")
        )
        return whole, Check("agreement_uncommon", m.agreement_uncommon, tol.min_top1, True, note)
    floor = near_zero_scale(tol)
    near_zero = not _is_probability(m) and m.ref_rms <= floor
    out: list[Check] = []
    if tol.elementwise:
        assert tol.atol is not None and tol.rtol is not None
        peak = max(m.ref_max_abs, 1.0) if _is_probability(m) else m.ref_max_abs
        out.append(Check("max_abs_err", m.max_abs_err, tol.atol + tol.rtol * peak, at_least=False))
    if m.top1_decided is not None:
        note = f"flips between classes the reference separates by more than {tol.top1_tie}"
        if m.threshold is not None:
            note = f"decisions at {m.threshold}: flips where the reference is more than {tol.top1_tie} from it"
        if m.decision_channels:
            note = f"score channels {list(m.decision_channels)}, read as {note}"
        out.append(Check("top1_decided", m.top1_decided, tol.min_top1, True, note))
    if m.top1_uncommon is not None:
        note = (
            f"over the {m.uncommon_rows} rows where the reference or the artifact picks a "
            f"class other than {m.common_class}, the reference's top in "
            f"{m.common_share or 0:.0%} of its rows"
        )
        if m.threshold is not None:
            side = "above" if m.common_class == 0 else "at or below"
            where = f"score channels {list(m.decision_channels)}' " if m.decision_channels else ""
            note = (
                f"over the {m.uncommon_rows} {where}elements where the reference or the "
                f"artifact is {side} {m.threshold}; the reference is otherwise in "
                f"{m.common_share or 0:.0%} of its elements"
            )
        out.append(Check("top1_uncommon", m.top1_uncommon, tol.min_top1, True, note))
    if m.kind == "embedding" and m.row_cosine_mean is not None:
        out.append(Check("row_cosine", m.row_cosine_mean, tol.min_cosine, at_least=True))
    elif m.top1_decided is None or m.kind == "linear_head" or m.threshold is not None:
        # its values judged too
        if m.kind in ("other", "linear_head") and not near_zero:
            out.append(Check("cosine", m.cosine, tol.min_cosine, at_least=True))
        if tol.max_rel_l2 is not None:
            out.append(_l2_check(m, tol.max_rel_l2, floor, near_zero))
    if (
        m.channel_rel_l2 is not None
        and tol.max_rel_l2 is not None
        and not tol.elementwise
        and not near_zero
    ):
        note = (
            f"{m.channels} channels on axis {m.channel_axis} whose scales differ "
            f"{m.channel_scale_ratio:.3g}x; worst: channel {m.channel_worst}, "
            f"{m.channel_worst_rel_l2:.3g}"
        )
        out.append(Check("channel_rel_l2", m.channel_rel_l2, tol.max_rel_l2, False, note))
    return tuple(out)


def _l2_check(m: OutputParity, bound: float, floor: float, near_zero: bool) -> Check:
    if _is_probability(m):
        return Check("rel_l2", m.err_rms, bound, False, "RMS error in probability units")
    if not near_zero:
        return Check("rel_l2", m.err_rms / m.ref_rms, bound, at_least=False)
    if floor == 0.0:  # an all-zero reference and no floor: only zero error passes
        value = 0.0 if m.err_rms == 0 else math.inf
        return Check("rel_l2", value, bound, False, "reference is all zero")
    note = f"reference near zero (RMS {m.ref_rms:.3g}): error relative to {floor:.3g}"
    return Check("rel_l2", m.err_rms / floor, bound, False, note)


def _nonfinite_text(m: OutputParity) -> str:
    n = m.nonfinite_differ
    if not n:
        return "non-finite values (NaN/Inf) in the output"
    where = "1 position" if n == 1 else f"{n} positions"
    return (
        f"non-finite values (NaN/Inf) in the output or the reference at {where} where the "
        "other holds another value"
    )


def judge(m: OutputParity, tol: Tolerance) -> list[str]:
    """Reasons the output fails `tol`; empty when it passes."""
    if m.error:
        return [m.error]
    why = [] if m.finite else [_nonfinite_text(m)]
    return why + [c.describe() for c in checks(m, tol) if not c.passed]


def compare_outputs(
    outputs: Outputs,
    references: Outputs,
    tolerance: Callable[[str], Tolerance],
    kinds: Mapping[str, str | None] | None = None,
    scores: Sequence[Mapping[str, IndexScores]] | None = None,
) -> tuple[bool, dict[str, OutputParity]]:
    """Per-output metrics and verdicts over all samples: `tolerance(name)` gives the bounds,
    `kinds` (the contract's, by output name) what each output means, `scores` (per sample,
    as the references) the reference's scores behind index outputs."""
    per_output: dict[str, OutputParity] = {}
    for name in references[0]:
        tol = tolerance(name)
        kind = (kinds or {}).get(name)
        given = (
            [s[name] for s in scores]
            if scores and len(scores) == len(references) and all(name in s for s in scores)
            else None
        )
        m = output_metrics(
            [o[name] for o in outputs], [r[name] for r in references], kind, tol, given
        )
        why = judge(m, tol)
        per_output[name] = replace(
            m,
            tolerance=tol,
            checks=() if m.error else checks(m, tol),
            passed=not why,
            failures=tuple(why),
        )
    return all(m.passed for m in per_output.values()), per_output


def departure(m: OutputParity) -> str:
    """Why a judged output departs grossly from its reference ('' when it does not): it could
    not be compared, holds non-finite values, or keeps less than GROSS_FLOOR of the reference's
    direction (cosine; exact agreement for integer outputs). Closeness bounds finer than this
    are the precision's tolerance, which a task metric may overrule (task.py)."""
    if m.error:
        return m.error
    if not m.finite:
        return _nonfinite_text(m)
    if m.agreement is not None:
        value = m.agreement if m.agreement_decided is None else m.agreement_decided
        low = value < GROSS_FLOOR
        return f"only {value:.3f} of its elements agree (< {GROSS_FLOOR})" if low else ""
    scaled = m.tolerance is None or _is_probability(m) or m.ref_rms > near_zero_scale(m.tolerance)
    if scaled and m.cosine < GROSS_FLOOR:
        return f"cosine {m.cosine:.3f} to the reference (< {GROSS_FLOOR})"
    return ""


def margin(m: OutputParity) -> float:
    """How far a judged output lies inside its bounds (negative: outside), >= 0 exactly when
    it passed: the least of its checks' margins (-1 for an error or non-finite values)."""
    if m.error or not m.finite:
        return -1.0
    return min((c.margin() for c in m.checks), default=1.0)


def worst_output(outputs: Mapping[str, OutputParity]) -> tuple[str, OutputParity] | None:
    """The judged output with the least margin (ties: the first by name)."""
    if not outputs:
        return None
    return min(sorted(outputs.items()), key=lambda item: margin(item[1]))
