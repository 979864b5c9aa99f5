"""Find sizes for the input dims nothing else ranges, by running the reference model on them;
and check that generated data runs on it, before any compile.

Probing (every input dim without a config range or the batch default): generated feeds at
candidate sizes run on the reference (the normalized model on ONNX Runtime CPU, as the
reference node runs it). The candidates, in order of preference, are CANDIDATES; for several
dims at once, combinations are tried by the sum of their ranks, so the preferred sizes come
first and dims that must agree (an LSTM state's batch) are still found. The first accepted
combination gives each dim its `opt`; then each dim's `min` walks down the candidates below
`opt` and its `max` up those above (to MAX_FACTOR x opt) while the model accepts them, the
other dims at their opt. Dims that cannot move alone (a decoder's past, new and total
lengths, where total = past + new) are then walked together, scaled by the same power of two
(`_coupled`: 128/128/256 down to 1/1/2), which keeps sums and equalities, or else moved by
one amount (128/129 down to 1/2: one new token a step), which keeps differences.

Outputs check the sizes too: a decoder that slices its attention mask to its keys runs
with a mask longer than past + new, and its present keys, declared [.., total, ..], come
back with past + new. Where the first sizes accepted contradict the dims the outputs declare
(an axis named after an input dim, of another size), the sizes the outputs give are taken
(`_consistent`); once the outputs agree, sizes whose outputs contradict their declared dims
are rejections. Where the contradiction is on a dim the probe does not move (a batch of 1
coming back as 32: an export that reshapes by a traced length runs at its multiples and
folds the rest into the batch), the first sizes whose outputs agree are searched for, then
the sizes the graph states (`_first_consistent`). A model whose outputs never agree (an
axis named after its input's but downsampled) is probed as before. A configured range
is checked the same way: an end the reference rejects is pulled in toward opt. The batch
default (1..64 for an input's axis 0) is checked at 2, every batch dim at once and, where
that is rejected, with the other dims at 1 at 2 too (a state's batch): an export that
reshapes to a fixed batch of 1 inside, rejected there or returning another size on a
declared batch axis, gets 1..1 and says why.

A probed dim that does not take opt + 1 gets the least step of STEPS it takes (opt + step
accepted: a feature pyramid's 32, a frame stack's 4), and its range is walked on that step;
serving refuses a size off it, naming the sizes near. Dims that move only together from one
opt (named apart in the model, equal in it), and a dim at 1 the batch check had to move with
the batch (an LSTM state's batch, which then takes the batch's range), are `equal_dims`.

Probing stops after MAX_RUNS runs (BUDGET_S seconds is a safety net for very slow models; a
range it cuts short says so). What was accepted and rejected is recorded in the contract's
`dim_origins`.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from compiler.core.contract import Contract, DimOrigin, DimRange, ValueDomain, set_flag
from compiler.core.errors import ConfigError, InputModelError, short_message
from compiler.core.feeds import Feeds
from compiler.core.graphs import constant_tensors, nodes
from compiler.pipeline.data import domain_fixes, random_feed
from compiler.pipeline.userdata import most_common
from targets.onnxruntime.backend import reference_session

__all__ = [
    "BUDGET_S",
    "CANDIDATES",
    "MAX_FACTOR",
    "MAX_RUNS",
    "check_generated",
    "range_dims",
    "reference_for",
    "returned_shapes",
    "stated_sizes",
]

CANDIDATES = (224, 128, 256, 320, 64, 512, 48, 32, 96, 160, 192, 384, 640, 16, 8, 1024, 4, 2, 1)
MAX_FACTOR = 8
# the steps a dim that does not take opt + 1 is tried at (`_step`): strides of feature
# pyramids, frame stacks, patch and window sizes
STEPS = (2, 3, 4, 8, 14, 16, 28, 32, 64)
BUDGET_S = 120.0
MAX_RUNS = 600
_AGREE_ROUNDS = 4  # runs `_consistent` takes at most to make outputs agree with their dims
_AGREE_SEARCH = 64  # runs `_first_consistent` takes at most to find sizes whose outputs agree
_LOAD_FAILED = re.compile(r"Load model from \S+ failed:\s*")  # the internal copy's path


class _Spent(Exception):
    """The probe budget ran out."""


def _run_options() -> Any:
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4  # a rejected size is an answer, not an error to log
    return options


def reference_for(model_path: Path, where: str) -> Any:
    """The reference session of the normalized model. Where ONNX Runtime cannot load it (a
    type mismatch, an op it lacks), InputModelError naming the source `where` and the node,
    not the build's internal copy of the model: nothing can be measured without it."""
    try:
        return reference_session(model_path)
    except Exception as exc:  # onnxruntime's own Fail/InvalidGraph/NotImplemented types
        why = _LOAD_FAILED.sub("", " ".join(str(exc).split()))[:600].rstrip(". ")
        raise InputModelError(
            f"{where}: ONNX Runtime, which runs the reference every artifact is judged against, "
            f"cannot load the model: {why}. Fix the model where it is made (for a type error, "
            "onnx.checker.check_model(model, full_check=True) names the same node)"
        ) from exc


class _Prober:
    """Runs the reference on one generated feed per size assignment; remembers answers."""

    def __init__(
        self,
        model_path: Path,
        contract: Contract,
        domains: Mapping[str, ValueDomain],
        where: str,
        session: Any = None,
    ):
        self.session = session or reference_for(model_path, where)
        self.options = _run_options()
        self.contract = contract
        self.domains = domains
        self.outputs = [o.name for o in contract.outputs]
        self.fixed = {d: r.opt for d, r in contract.dims.items()}
        self.runs = 0
        self.deadline = time.monotonic() + BUDGET_S
        self.last_error = ""
        # consistent: a run whose outputs contradict their declared dims is a rejection
        self.consistent = False
        self._inputs_dims = set(contract.input_dims())
        self._seen: dict[tuple[tuple[str, int], ...], bool] = {}

    def accepts(self, sizes: Mapping[str, int]) -> bool:
        key = tuple(sorted(sizes.items()))
        if key not in self._seen:
            self._seen[key] = self.returns(sizes) is not None
        return self._seen[key]

    def returns(self, sizes: Mapping[str, int]) -> list[np.ndarray] | None:
        """The reference's outputs on a generated feed of these sizes; None where it
        rejects them (`last_error` says why)."""
        if self.runs >= MAX_RUNS or time.monotonic() > self.deadline:
            raise _Spent
        dims = {**self.fixed, **sizes}
        shapes = {
            t.name: tuple(d if isinstance(d, int) else dims[d] for d in t.shape)
            for t in self.contract.inputs
        }
        feed = random_feed(self.contract.inputs, shapes, self.domains, np.random.default_rng(0))
        self.runs += 1
        try:
            values = list(self.session.run(self.outputs, feed, self.options))
        except Exception as exc:  # ONNX Runtime says no in many ways; the message is kept
            self.last_error = short_message(exc, 200)
            return None
        if self.consistent and (wrong := self.contradictions(dims, values)):
            self.last_error = wrong[0][2]
            return None
        return values

    def contradictions(
        self, dims: Mapping[str, int], values: Sequence[Any]
    ) -> list[tuple[str, int, str]]:
        """Where outputs come back with another size on an axis their declared shape names
        after an input dim than that dim has in the run: (the dim, the size returned, what
        says so), [] where none does. A decoder's attention mask longer than its past + new
        keys runs (the model slices it), and its present keys then give the total length."""
        found = []
        for spec, value in zip(self.contract.outputs, values, strict=True):
            got = np.shape(value)
            if len(got) != len(spec.shape):
                continue  # a converter's declared shape the graph does not compute
            for axis, (d, size) in enumerate(zip(spec.shape, got, strict=True)):
                if isinstance(d, str) and d in self._inputs_dims and size != dims[d]:
                    why = (
                        f"output '{spec.name}' came back with {size} on axis {axis}, which "
                        f"it declares as input dim '{d}', given {dims[d]}"
                    )
                    found.append((d, int(size), why))
        return found

    def judge_consistency(self) -> None:
        """From now on, a run whose outputs contradict their declared dims is a refusal (the
        answers so far, judged leniently, are forgotten)."""
        self.consistent = True
        self._seen.clear()

    def judge_leniently(self) -> None:
        """From now on, outputs that contradict their declared dims are no refusal."""
        self.consistent = False
        self._seen.clear()


def _by_rank_sum(k: int, n: int) -> Iterator[tuple[int, ...]]:
    """All k-tuples of ranks 0..n-1, lowest rank sum first."""

    def compositions(total: int, parts: int) -> Iterator[tuple[int, ...]]:
        if parts == 1:
            if total < n:
                yield (total,)
            return
        for first in range(min(total, n - 1) + 1):
            for rest in compositions(total - first, parts - 1):
                yield (first, *rest)

    for total in range(k * (n - 1) + 1):
        yield from compositions(total, k)


def _first_accepted(
    prober: _Prober,
    dims: Sequence[str],
    seed: Mapping[str, int] | None = None,
    candidates: Sequence[int] = CANDIDATES,
    until: int = MAX_RUNS,
) -> dict[str, int] | None:
    """The first combination of `candidates` the reference accepts, by rank sum; first with
    the dims of `seed` at its sizes (a recurrent state's batch at the batch's), then without.
    None once the prober has made `until` runs."""
    for fixed in ({**(seed or {})}, {}) if seed else ({},):
        free = [d for d in dims if d not in fixed]
        for ranks in _by_rank_sum(len(free), len(candidates)):
            sizes = {**fixed, **{d: candidates[r] for d, r in zip(free, ranks, strict=True)}}
            if prober.accepts(sizes):
                return sizes
            if prober.runs >= until:
                return None
            if fixed and prober.runs >= MAX_RUNS // 2:
                break  # the seed is a guess: half the runs at most
    return None


def _consistent(prober: _Prober, found: dict[str, int]) -> tuple[dict[str, int], str, str]:
    """`found`, or where the reference's outputs at those sizes contradict their declared
    dims (`_Prober.contradictions`), the sizes the outputs give those dims instead, once they
    run and agree, with what the first contradiction was ('' where none was). Once the
    outputs agree, the prober rejects sizes whose outputs contradict their dims (a decoder's
    past alone made shorter under a mask it slices). Up to _AGREE_ROUNDS runs: a model whose
    outputs never agree with their declared names (an export that named a downsampled axis
    after its input's) keeps `found` and lenient probing. The third value: the contradiction
    where it is on a dim the probe does not move (a batch or configured dim), else ''."""
    sizes, first = dict(found), ""
    try:
        for _ in range(_AGREE_ROUNDS):
            values = prober.returns(sizes)
            if values is None:
                break
            wrong = prober.contradictions({**prober.fixed, **sizes}, values)
            if not wrong:
                prober.judge_consistency()
                return sizes, first, ""
            first = first or wrong[0][2]
            fixed = [why for d, _, why in wrong if d not in sizes]
            if fixed:  # a configured or batch dim: not the probe's to move
                return found, "", fixed[0]
            sizes.update({d: size for d, size, _ in reversed(wrong)})  # the first one wins
    except _Spent:
        pass
    return found, "", ""


def _sizes(sizes: Mapping[str, int]) -> str:
    return ", ".join(f"{d}={n}" for d, n in sizes.items())


def _first_consistent(
    prober: _Prober, dims: Sequence[str], seed: Mapping[str, int], stated: Sequence[int]
) -> tuple[dict[str, int], bool] | None:
    """Where the first sizes accepted make an output contradict a dim the probe does not
    move (a batch of 1 coming back as 16: an export that reshapes by a length it traced,
    whose multiples run and fold the rest into the batch), the first sizes whose outputs
    agree with their dims, from the candidates, then the sizes the graph states (True when
    from those); None where none do within _AGREE_SEARCH runs (a model whose outputs never
    agree costs no more), the prober lenient again."""
    until = prober.runs + min(_AGREE_SEARCH, (MAX_RUNS - prober.runs) // 2)
    prober.judge_consistency()
    try:
        found = _first_accepted(prober, dims, seed, until=until)
        if found is not None:
            return found, False
        if stated and (found := _first_accepted(prober, dims, None, stated, until=until)):
            return found, True
    except _Spent:
        pass
    prober.judge_leniently()
    return None


_STATED_MAX = 8  # elements: a shape or a few sizes, not a table


def stated_sizes(model: onnx.ModelProto) -> list[int]:
    """Sizes the graph itself states: the integers, 2..MAX_FACTOR x the largest candidate,
    of its small integer constants (shapes given to Reshape or Expand, slice ends), most
    often stated first, less those in CANDIDATES. TorchScript's exporter bakes the traced
    length into such a shape where a module computes one from it (nn.MultiheadAttention's
    view to [length, batch x heads, head size]): the model then runs at that length only,
    which is none of the candidates."""
    counts: dict[int, int] = {}
    for t in constant_tensors(model):
        if (
            t.data_type in _INTEGERS
            and 0 < math.prod(t.dims) <= _STATED_MAX
            and not t.data_location
        ):
            for v in onnx.numpy_helper.to_array(t).ravel().tolist():
                if 2 <= v <= MAX_FACTOR * max(CANDIDATES) and v not in CANDIDATES:
                    counts[int(v)] = counts.get(int(v), 0) + 1
    return sorted(counts, key=lambda v: (-counts[v], v))


_INTEGERS = frozenset({onnx.TensorProto.INT64, onnx.TensorProto.INT32})


# the inputs of a recurrent op that hold its initial state, [directions, batch, hidden]
_STATE_INPUTS = {"LSTM": (5, 6), "GRU": (5,), "RNN": (5,)}
_KEEPS_AXIS_1 = frozenset({"Identity", "Cast", "Slice"})  # a layer's slice of a state


def _state_batches(model: onnx.ModelProto, contract: Contract) -> list[str]:
    """The input dims on axis 1 of an input that reaches a recurrent op's initial state (in
    the main graph, directly or through an Identity, Cast or Slice): that op's batch, which
    the model takes only at its input's batch. A streaming LSTM whose states come in as
    inputs named their batch apart ([1, hb, 16]): the rank-sum search had to reach 1 (the
    last candidate) for every state at once and spent its 600 runs first."""
    graph = model.graph
    made_by = {o: n for n in graph.node for o in n.output}
    shapes = {t.name: t.shape for t in contract.inputs}
    found: list[str] = []
    for node in graph.node:
        for i in _STATE_INPUTS.get(node.op_type, ()):
            name = node.input[i] if len(node.input) > i else ""
            while name in made_by and made_by[name].op_type in _KEEPS_AXIS_1:
                name = made_by[name].input[0]
            shape = shapes.get(name, [])
            if len(shape) == 3 and isinstance(shape[1], str) and shape[1] not in found:
                found.append(shape[1])
    return found


_KEEPS_AXES = frozenset({"Identity", "Cast"})


def concatenated_dims(model: onnx.ModelProto, contract: Contract) -> list[str]:
    """The input dims a Concat extends: a symbolic dim of an input that reaches a Concat
    (directly or through an Identity or Cast, in the main graph or a subgraph) as the axis
    it concatenates on. A decoder's cache, [batch, heads, past, head size], concatenated
    with the new keys: its first step has none (past 0), which the probe's sizes, 1 and up,
    never try."""
    made_by = {o: n for n in nodes(model.graph) for o in n.output}
    shapes = {t.name: t.shape for t in contract.inputs}
    found: list[str] = []
    for node in nodes(model.graph):
        if node.op_type != "Concat":
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        for name in node.input:
            while name in made_by and made_by[name].op_type in _KEEPS_AXES:
                name = made_by[name].input[0]
            shape = shapes.get(name, [])
            dim = shape[axis] if -len(shape) <= axis < len(shape) else None
            if isinstance(dim, str) and dim not in found:
                found.append(dim)
    return found


def _empty(
    prober: _Prober, ranges: Mapping[str, DimRange], dims: Sequence[str], dim: str
) -> dict[str, int]:
    """Sizes with `dim` at 0 the reference accepts (outputs agreeing with their dims), the
    other dims at their mins with one of them less `dim`'s min (a decoder's total = past +
    new: past 1 -> 0 makes the total one less), or else all at their mins (a total kept
    can broadcast against keys of one less); {} where none is."""
    base = {d: ranges[d].min for d in dims}
    less = base[dim]
    tries = [{**base, dim: 0, o: base[o] - less} for o in dims if o != dim and base[o] > less]
    tries.append({**base, dim: 0})
    for sizes in tries:
        try:
            if prober.accepts(sizes):
                return sizes
        except _Spent:
            return {}
    return {}


def _range_empty(
    prober: _Prober,
    concatenated: Sequence[str],
    dims: Sequence[str],
    ranges: dict[str, DimRange],
    origins: dict[str, DimOrigin],
) -> None:
    """Widens, in place, the ranges of the probed `concatenated` dims (concatenated_dims)
    down to 0 where the reference takes them empty (`_empty`), and the other dims' mins to
    what they took with it."""
    for d in (d for d in concatenated if d in dims):
        before = prober.runs
        if ranges[d].min != 1 or not (empty := _empty(prober, ranges, dims, d)):
            continue
        with_others = ", ".join(f"{o}={v}" for o, v in empty.items() if o != d)
        for o, v in empty.items():
            if o != d and v < ranges[o].min:
                ranges[o] = ranges[o].model_copy(update={"min": v})
                why = f"; min {v} with {d}=0, as an empty {d} takes it"
                origins[o] = origins[o].model_copy(update={"note": origins[o].note + why})
        ranges[d] = ranges[d].model_copy(update={"min": 0})
        origins[d] = origins[d].model_copy(
            update={
                "probes": origins[d].probes + prober.runs - before,
                "note": f"{origins[d].note}; min 0 (with {with_others}): a Concat extends "
                f"the input along '{d}', and the reference takes it empty (a decoder's first "
                "step, on an empty cache)",
            }
        )


def _walk(
    prober: _Prober, found: Mapping[str, int], dim: str, steps: Sequence[int]
) -> tuple[int, str]:
    """The last of `steps` the model accepts for `dim` before the first it rejects."""
    last = found[dim]
    for v in steps:
        try:
            if not prober.accepts({**found, dim: v}):
                return last, f"{v} rejected"
        except _Spent:
            return last, "probe budget spent"
        last = v
    return last, "the last size tried"


def _step(prober: _Prober, found: Mapping[str, int], dim: str) -> tuple[int, str]:
    """The step of the sizes `dim` takes around its opt (DimRange.step) and how it was found:
    1 where opt + 1 and opt - 1 are accepted; else the least of STEPS whose opt + step and
    opt - step are (a detector's feature pyramid takes multiples of 32 only: 481 failed in
    an Add deep inside, once served); 1 where none is (the dim may not move alone:
    `_coupled`). Both sides, since a strided stem floors: a model that windows its 4x
    downsampled features by 7 takes 224 to 227, then 252, and one side alone read as step 1
    (or 2), its range stuck at 224 and its dims 'moving together'."""
    opt = found[dim]

    def takes(k: int) -> bool:
        return prober.accepts({**found, dim: opt + k}) and (
            opt - k < 1 or prober.accepts({**found, dim: opt - k})
        )

    try:
        if takes(1):
            return 1, ""
        # a multiple's step divides opt: those first, the least first
        for k in sorted(STEPS, key=lambda k: (opt % k != 0, k)):
            if takes(k):
                return (
                    k,
                    f"step {k}: {opt + 1} or {opt - 1} rejected, {opt - k} and {opt + k} accepted",
                )
        if prober.accepts({**found, dim: opt + 1}):
            return 1, ""  # no step both ways: opt + 1 alone, as before
    except _Spent:
        return 1, ""
    return 1, ""


def _range(
    prober: _Prober, found: Mapping[str, int], dim: str, step: int = 1
) -> tuple[DimRange, str]:
    opt = found[dim]
    cap = opt * MAX_FACTOR
    on_step = {c for c in CANDIDATES if (c - opt) % step == 0}
    if step > 1:  # opt halved, where on the step (224 on a step of 28: 112, 56, 28)
        on_step |= {v for v in (opt >> k for k in (1, 2, 3)) if v and (v - opt) % step == 0}
    down = sorted((c for c in on_step if c < opt), reverse=True)
    up = sorted(
        {c for c in on_step if opt < c <= cap}
        | {v for v in (opt * 2**k for k in (1, 2, 3)) if (v - opt) % step == 0}
    )
    low, why_low = _walk(prober, found, dim, down)
    high, why_high = _walk(prober, found, dim, [v for v in up if v <= cap])
    others = ", ".join(f"{d}={v}" for d, v in found.items() if d != dim)
    note = (
        f"opt {opt}: the first size tried that the reference accepts"
        + (f" (with {others})" if others else "")
        + f"; min {low} ({why_low}); max {high} ({why_high}"
        + (f", {MAX_FACTOR}x opt is the cap" if high == cap else "")
        + ")"
    )
    return DimRange(min=low, opt=opt, max=high, step=step), note


def _data_opts(seen: Mapping[str, Sequence[int]]) -> tuple[dict[str, int], str]:
    """The dims' sizes in the data to take as opts, and how they were chosen: the sizes the
    most feeds have together (one feed's, so they ran together: a decoder's past, new and
    total lengths are no three most common sizes), the smallest where counts tie; each dim's
    most common size where the lists do not line up by feed. Never a size of 0 (a decoder's
    first step, on an empty cache: nothing to time or compile for); {} where every feed has
    one."""
    if len({len(v) for v in seen.values()}) == 1:
        together = Counter(s for s in zip(*seen.values(), strict=True) if 0 not in s)
        if not together:
            return {}, ""
        best = min(together, key=lambda sizes: (-together[sizes], sizes))
        many = len(next(iter(seen.values())))
        kind = "size" if len(seen) == 1 else "sizes"
        how = f"the {kind} {together[best]} of the user's {many} feeds have"
        how += " together" if len(seen) > 1 else ""
        return dict(zip(seen, best, strict=True)), how
    nonzero = {d: [s for s in v if s] for d, v in seen.items()}
    if not all(nonzero.values()):
        return {}, ""
    return {
        d: most_common(v)[0] for d, v in nonzero.items()
    }, "its most common size in the user's feeds"


def _takes_data_sizes(prober: _Prober, opts: Mapping[str, int]) -> bool:
    """Whether the reference takes every dim at its size in `opts` at once (each feed ran,
    but dims of different inputs may never have met at each one's most common size)."""
    try:
        return prober.accepts(opts)
    except _Spent:
        return False


def _reaching(
    r: DimRange, sizes: Sequence[int], note: str, opt: int | None = None, how: str = ""
) -> tuple[DimRange, str]:
    """The probed range widened to every size the data has (the user's feeds run: they are
    the sizes served), and the note saying so; around the data's `opt` where the data gave
    the opts (`how` says how), else around the probed one. A step every size of the data is
    not on is narrowed to one it is."""
    size = r.opt if opt is None else opt
    low, high = min(r.min, *sizes), max(r.max, *sizes)
    step = math.gcd(r.step, *(abs(s - size) for s in sizes))
    if step != r.step:
        note += f"; step {step}, as the data's sizes are"
    if step > 1:  # the probed ends, off the narrowed step, give way to the data's
        low = min(s for s in (r.min, *sizes) if (s - size) % step == 0)
        high = max(s for s in (r.max, *sizes) if (s - size) % step == 0)
    if opt is not None:
        note = f"opt {size}: {how}" + (";" + note.split(";", 1)[1] if ";" in note else "")
    widened = (
        f"; widened to {low}..{high}, the sizes the data has"
        if (low, high) != (r.min, r.max)
        else ""
    )
    return DimRange(min=low, opt=size, max=high, step=step), note + widened


def _furthest(
    prober: _Prober, found: Mapping[str, int], steps: Iterable[dict[str, int]]
) -> dict[str, int]:
    """The last of `steps` (sizes of some dims, each further from `found`) the reference
    accepts before the first it rejects; {} where it rejects the first."""
    best: dict[str, int] = {}
    for sizes in steps:
        try:
            if not prober.accepts({**found, **sizes}):
                break
        except _Spent:
            break
        best = sizes
    return best


def _together(
    prober: _Prober, found: Mapping[str, int], group: Sequence[str], down: bool
) -> dict[str, int]:
    """The furthest sizes, every dim of `group` scaled by one power of two (exactly, so sums
    and equalities between them hold), that the reference accepts; {} where none is."""

    def steps() -> Iterator[dict[str, int]]:
        for k in range(1, 11) if down else range(1, MAX_FACTOR.bit_length()):
            if down and any(found[d] % 2**k for d in group):
                return
            yield {d: found[d] // 2**k if down else found[d] * 2**k for d in group}

    return _furthest(prober, found, steps())


def _shifted(
    prober: _Prober, found: Mapping[str, int], group: Sequence[str], down: bool
) -> dict[str, int]:
    """The furthest sizes, every dim of `group` moved by one amount (so differences between
    them hold: a decoder's total = past + 1 for one new token a step), that the reference
    accepts; {} where none is. Down: the least of them to each smaller candidate, then 1;
    up: to 2, 4 and 8 times itself."""
    least = min(found[d] for d in group)
    if down:
        targets = [*sorted((c for c in CANDIDATES if 1 < c < least), reverse=True), 1]
        targets = targets if least > 1 else []
    else:
        targets = [least * 2**k for k in range(1, MAX_FACTOR.bit_length())]
    return _furthest(prober, found, ({d: found[d] + t - least for d in group} for t in targets))


def _coupled(
    prober: _Prober, found: Mapping[str, int], stuck: Sequence[str], down: bool
) -> dict[str, int]:
    """Of the dims that could not move alone in one direction, the largest group (two or
    more) that moves together, scaled by one power of two or else moved by one amount, and
    how far; {} where none does. Up to 6 dims are tried in every grouping, more only all
    together (the probe's runs are bounded)."""
    sizes = range(len(stuck), 1, -1) if len(stuck) <= 6 else [len(stuck)]
    for size in sizes:
        for group in itertools.combinations(stuck, size):
            moved = _together(prober, found, group, down) or _shifted(prober, found, group, down)
            if moved:
                return moved
    return {}


def _range_coupled(
    prober: _Prober,
    found: Mapping[str, int],
    ranges: dict[str, DimRange],
    origins: dict[str, DimOrigin],
) -> list[list[str]]:
    """Widens, in place, the ranges of probed dims that moved only together (`_coupled`);
    returns the groups of them at one opt, which must be equal (dims named apart)."""
    equal: list[list[str]] = []
    for down in (True, False):
        stuck = [
            d
            for d, v in found.items()
            if ((ranges[d].min == v and v > 1) if down else ranges[d].max == v)
        ]
        if len(stuck) < 2:
            continue
        before = prober.runs
        moved = _coupled(prober, found, stuck, down)
        for d, v in moved.items():
            others = ", ".join(f"{o}={w}" for o, w in moved.items() if o != d)
            end = "min" if down else "max"
            r = ranges[d]
            ranges[d] = r.model_copy(update={end: v})
            origins[d] = origins[d].model_copy(
                update={
                    "probes": origins[d].probes + prober.runs - before,
                    "note": f"{origins[d].note}; {end} {v} together with {others} (the "
                    "reference accepts these dims only when they move together, as a "
                    "decoder's past + new = total lengths)",
                }
            )
        group = sorted(moved)
        if len({found[d] for d in group}) == 1 and group not in equal:
            equal.append(group)
    return equal


def _no_size_error(
    prober: _Prober,
    contract: Contract,
    dims: Sequence[str],
    domains: Mapping[str, ValueDomain],
    where: str,
    stated: Sequence[int] = (),
) -> ConfigError:
    ints = [
        t.name
        for t in contract.inputs
        if t.dtype != "bfloat16"
        and np.dtype(t.dtype).kind in "iu"
        and domains[t.name].source != "config"
    ]
    return ConfigError(
        f"{where}: no size the model accepts was found for the dims "
        + ", ".join(f"'{d}' ({'; '.join(contract.dim_axes(d))})" for d in dims)
        + f" in {prober.runs} reference runs over the sizes {min(CANDIDATES)}.."
        f"{max(CANDIDATES)}"
        + (f" and those the graph states ({', '.join(map(str, stated[:8]))})" if stated else "")
        + f" (last error: {prober.last_error or 'none'}); give each a size: "
        + " ".join(set_flag("dims", d, "opt") for d in dims)
        + (
            f" (or, if an input's values are the cause, {domain_fixes(contract, ints)})"
            if ints
            else ""
        )
    )


def _pull_in(prober: _Prober, opts: Mapping[str, int], dim: str, end: int) -> tuple[int, str]:
    """`end` if the reference accepts it, else the accepted size nearest it toward opt."""
    opt = opts[dim]
    if end == opt or prober.accepts({**opts, dim: end}):
        return end, ""
    between = sorted(
        {c for c in CANDIDATES if min(end, opt) < c < max(end, opt)}, reverse=end > opt
    )
    for v in between:
        if prober.accepts({**opts, dim: v}):
            return v, f"{end} rejected, {v} accepted"
    return opt, f"{end} rejected"


def _check_configured(
    prober: _Prober, opts: Mapping[str, int], dim: str, r: DimRange
) -> tuple[DimRange, str]:
    """A configured range with each end the reference rejects pulled in toward opt."""
    try:
        low, why_low = _pull_in(prober, opts, dim, r.min)
        high, why_high = _pull_in(prober, opts, dim, r.max)
    except _Spent:
        return r, "ends not checked: probe budget spent"
    notes = [
        f"config min {why_low}" if why_low else "",
        f"config max {why_high}" if why_high else "",
    ]
    note = "; ".join(n for n in notes if n) or "min and max accepted by the reference"
    return DimRange(min=low, opt=r.opt, max=high), note


def _check_batch(
    prober: _Prober, opts: Mapping[str, int], dims: Sequence[str]
) -> tuple[str, list[str]]:
    """Why the model does not run with each batch dim of `dims` at 2, all at once (inputs
    that each name their own batch may have to agree), nor with the other dims at 1 at 2 too
    (a state's batch): '' where it does; else the reference rejects it, or an output that
    declares one of them comes back with another size there.
    An export that declares a dynamic batch but reshapes to a fixed 1 inside claimed 1..64
    by the batch default, and a batch of 8 failed only when served.
    Also the dims that must be one size with the batch: the other dims at 1 where only they
    at 2 too let the model run (silero_vad's state, [2, batch, 128], named apart from its
    input's batch), and the batch dims the model rejects at 2 alone (each at 2, the others
    at their opt) where it runs them at 2 together."""
    # the dims at 1 may have to follow the batch (an LSTM state's batch, probed at 1)
    ones = [d for d, v in opts.items() if v == 1 and d not in dims]
    followers: list[str] = []
    try:
        outs = prober.returns({**opts, **dict.fromkeys(dims, 2)})
        if outs is None and ones:
            outs = prober.returns({**opts, **dict.fromkeys([*dims, *ones], 2)})
            followers = ones if outs is not None else []
    except _Spent:
        return "", []
    at = ", ".join(f"{d}=2" for d in dims)
    if outs is None:
        also = f" (and with {', '.join(ones)} at 2 too)" if ones else ""
        return f"the reference rejects {at}{also} ({prober.last_error})", []
    for spec, out in zip(prober.contract.outputs, outs, strict=True):
        for axis, d in enumerate(spec.shape):
            if d in dims and (np.ndim(out) <= axis or np.shape(out)[axis] != 2):
                return (
                    f"at {at} output '{spec.name}' comes back {list(np.shape(out))}, not 2 on "
                    f"axis {axis}"
                ), []
    if followers:
        return "", [*dims, *followers]
    try:
        alone = [d for d in dims if len(dims) > 1 and not prober.accepts({**opts, d: 2})]
    except _Spent:
        alone = []
    return "", alone if len(alone) > 1 else []


def range_dims(
    model_path: Path,
    contract: Contract,
    domains: Mapping[str, ValueDomain],
    where: str,
    session: Any = None,
    observed: Mapping[str, Sequence[int]] | None = None,
) -> Contract:
    """`contract` with every unranged input dim ranged by probing, and each configured range's
    ends checked on the reference (an end it rejects is pulled in toward opt, and noted);
    ConfigError naming every dim it could not range, with the `--set` for each. `session`:
    the reference's, where the caller holds one (else it is loaded when needed). `observed`:
    each dim's sizes in the user's data (userdata.observed_sizes); where every unranged dim
    has some and the reference takes their most common sizes together, those are the opts
    (the shapes a static build is made for), and each range reaches every size observed."""
    dims = contract.unranged_dims()
    configured = [
        d
        for d in contract.input_dims()
        if d in contract.dims and contract.dim_origins[d].source == "config"
    ]
    batch = [
        d
        for d in contract.input_dims()
        if d in contract.dims
        and contract.dim_origins[d].source == "batch"
        and contract.dims[d].min <= 1 < contract.dims[d].max
    ]
    if not dims and not configured and not batch:
        return contract
    prober = _Prober(model_path, contract, domains, where, session)
    model = onnx.load(str(model_path), load_external_data=False)  # the graph, read once
    found: dict[str, int] | None = {}
    stated_opt, stated, inconsistent, refound = False, [], "", ""
    ran: Mapping[str, int] = {}
    seen = {d: observed[d] for d in dims if observed and observed.get(d)}
    data_opts, how = _data_opts(seen) if seen else ({}, "")
    from_data = bool(dims) and len(data_opts) == len(dims) and _takes_data_sizes(prober, data_opts)
    if from_data:
        found = data_opts
    elif dims:
        batch_opt = min((contract.dims[d].opt for d in batch), default=1)
        seed = {d: batch_opt for d in _state_batches(model, contract) if d in dims}
        try:
            found = _first_accepted(prober, dims, seed)
            if found is None and (stated := stated_sizes(model)):
                found = _first_accepted(prober, dims, None, stated)
                stated_opt = found is not None
            if found is not None and not stated_opt:
                ran = found
                found, inconsistent, blocked = _consistent(prober, found)
                if blocked and not stated:
                    stated = stated_sizes(model)
                if blocked and (again := _first_consistent(prober, dims, seed, stated)):
                    found, stated_opt = again
                    refound = (
                        f"sizes whose outputs contradict the dims they declare are rejected: "
                        f"at {_sizes(ran)}, the first sizes accepted, {blocked}"
                    )
        except _Spent:
            found = None
    if found is None:
        raise _no_size_error(prober, contract, dims, domains, where, stated)
    ranges, origins = dict(contract.dims), dict(contract.dim_origins)
    searched = prober.runs
    for d in dims:
        before = prober.runs
        step, why_step = _step(prober, found, d)
        ranges[d], note = _range(prober, found, d, step)
        note += f"; {why_step}" if why_step else ""
        if refound:
            note = note.replace("the first size tried that the reference accepts", refound, 1)
            note = note if refound in note else f"{note}; {refound}"
        if stated_opt:
            ran_how = " with outputs that agree with their dims" if refound else ""
            note += (
                f"; none of the usual sizes ran{ran_how}, and {found[d]} is one the graph "
                "states (a shape constant): an export that traced a fixed size (TorchScript's, "
                "of a module that computes a shape from it) runs at that size only; export "
                "again with the dynamo exporter (dynamo=True), or with that shape computed "
                "from the input's size, to take others"
            )
        if inconsistent:
            if ran[d] != found[d]:
                note = note.replace(
                    "the first size tried that the reference accepts",
                    f"the size the outputs give it where {ran[d]} ran first",
                    1,
                )
            note += (
                f"; sizes whose outputs contradict the dims they declare are rejected: at "
                f"the first sizes accepted, {inconsistent}"
            )
        probes = searched + prober.runs - before
        origins[d] = DimOrigin(source="probed", probes=probes, note=note)
    equal = _range_coupled(prober, found, ranges, origins)
    _range_empty(prober, concatenated_dims(model, contract), dims, ranges, origins)
    for d in seen:  # the data's sizes widen the ends (after the coupled dims moved)
        opt = found[d] if from_data else None
        ranges[d], note = _reaching(ranges[d], seen[d], origins[d].note, opt, how)
        origins[d] = origins[d].model_copy(update={"note": note})
    opts = {**prober.fixed, **found}
    for d in configured:
        before = prober.runs
        ranges[d], note = _check_configured(prober, opts, d, contract.dims[d])
        origins[d] = DimOrigin(source="config", probes=prober.runs - before, note=note)
    before = prober.runs
    why, tied = _check_batch(prober, opts, batch) if batch else ("", [])
    for d in batch:
        note = origins[d].note
        if why:
            ranges[d] = DimRange(min=1, opt=1, max=1)
            note = (
                f"axis 0 of an input, but the model runs at batch 1 only: {why}; fix the "
                "export (a Reshape or Expand to a fixed batch of 1) to serve batches"
            )
        origins[d] = DimOrigin(source="batch", probes=prober.runs - before, note=note)
    if tied:
        lead = next(d for d in tied if d in batch)
        for d in tied:
            if d not in batch:  # a dim at 1 that follows the batch takes the batch's range
                ranges[d] = ranges[lead]
                origins[d] = origins[d].model_copy(
                    update={"note": f"{origins[d].note}; follows batch dim '{lead}' (the "
                            f"model runs {lead}=2 only with it at 2 too): {ranges[lead].describe()}"}
                )  # fmt: skip
        equal.append(sorted(tied))
    update: dict[str, Any] = {"dims": ranges, "dim_origins": origins}
    if equal:
        update["equal_dims"] = [
            *contract.equal_dims,
            *(g for g in equal if g not in contract.equal_dims),
        ]
    return contract.model_copy(update=update)


def returned_shapes(
    model_path: Path,
    contract: Contract,
    domains: Mapping[str, ValueDomain],
    where: str,
    session: Any = None,
) -> dict[str, tuple[int, ...]]:
    """The shapes the reference returns for one generated feed at the dims' opt sizes, of
    the outputs whose declared shape disagrees (another rank, or a fixed dim of another
    size): a converter may declare what the graph does not compute (ddddocr's recognizer
    declares [1, seqlen] and returns [steps, 1, 8210]). {} where they agree, or where the
    feed does not run (the data node says why, with what to do)."""
    shapes = contract.input_shapes("opt")
    feed = random_feed(contract.inputs, shapes, domains, np.random.default_rng(0))
    names = [o.name for o in contract.outputs]
    try:
        values = (session or reference_for(model_path, where)).run(names, feed, _run_options())
    except Exception:  # noqa: BLE001 - check_generated reports it with its fix
        return {}
    wrong = {}
    for spec, value in zip(contract.outputs, values, strict=True):
        got = tuple(np.shape(value))
        if len(got) != len(spec.shape) or any(
            isinstance(d, int) and d != g for d, g in zip(spec.shape, got, strict=True)
        ):
            wrong[spec.name] = got
    return wrong


def _fails(session: Any, options: Any, outputs: list[str], feed: Feeds) -> str:
    """Why the reference cannot use this feed ('' when it can): an error, or NaN outputs."""
    try:
        values = session.run(outputs, feed, options)
    except Exception as exc:
        return f"fails ({short_message(exc, 200)})"
    nan = [
        n
        for n, v in zip(outputs, values, strict=True)
        if np.issubdtype(np.asarray(v).dtype, np.floating) and np.isnan(v).any()
    ]
    return f"gives NaN in outputs {nan}" if nan else ""


def check_generated(
    model_path: Path,
    contract: Contract,
    feeds: Sequence[Feeds],
    domains: Mapping[str, ValueDomain],
    where: str,
) -> None:
    """ConfigError (one line) unless the reference runs on every generated feed with finite
    outputs; names the inputs whose values are at fault where setting one to zeros helps."""
    session = reference_for(model_path, where)
    options = _run_options()
    outputs = [o.name for o in contract.outputs]
    for i, feed in enumerate(feeds):
        problem = _fails(session, options, outputs, feed)
        if not problem:
            continue
        suspects = [n for n, d in domains.items() if d.source != "config"]
        culprits = [
            n
            for n in suspects
            if not _fails(session, options, outputs, {**feed, n: np.zeros_like(feed[n])})
        ] or suspects
        shown = ", ".join(f"'{n}' ({domains[n].describe()}, {domains[n].source})" for n in culprits)
        sized = [d for d, o in contract.dim_origins.items() if o.source != "probed"]
        sizes = ", ".join(f"{d}={contract.dims[d].opt}" for d in sized)
        raise ConfigError(
            f"{where}: generated sample {i} {problem} on the reference model; it drew "
            f"{shown or 'values the config gives'}; set the values an input takes with "
            f"{domain_fixes(contract, culprits) or '--set inputs.NAME.values=[...]'}"
            + (
                f" (or, if a size is the cause ({sizes}), "
                + " ".join(set_flag("dims", d, "opt") for d in sized)
                + ")"
                if sized
                else ""
            )
            + ", or give real inputs with --sample-data DIR"
        )
