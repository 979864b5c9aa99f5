"""The CI contract (issue 14, item 3): --strict fails on any artifact not built and passed;
--json documents on stdout with nothing else there; -q/-v; third-party output kept off
stdout; no hard wrapping when piped; `| head -1` is not an error; a mistyped command is
refused with a suggestion; one loud warning for lossy artifacts made on generated data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from compiler.cli.capture import third_party_output
from compiler.cli.schema import schema_of
from compiler.core.host import probe_host

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny_cnn.onnx"
ORT_ONLY = str(Path(__file__).with_name("ort_only.yaml"))
INT8 = "{passes: [{name: quantize, mode: static}], compile: {backend: onnxruntime}}"


def cli(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    if cache:
        env["COMPILE_PKG_CACHE"] = str(cache)
    return subprocess.run(
        [sys.executable, "-m", "compiler.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def ort(out: Path, *more: str) -> list[str]:
    return [str(EXAMPLE), "--config", ORT_ONLY, "--set", "latency.runs=3", "-o", str(out), *more]


@pytest.fixture(scope="module")
def failing_int8(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Build arguments whose int8 artifact builds and then fails parity on the user's data
    (a tolerance no int8 artifact meets: any error fails)."""
    root = tmp_path_factory.mktemp("cfg")
    (root / "int8.yaml").write_text(
        "targets:\n  cpu:\n    pipeline: none\n    variants:\n"
        "      ort-fp32: {passes: [{name: fuse, level: basic}], compile: {backend: onnxruntime}}\n"
        f"      ort-int8: {INT8}\n"
        "parity:\n  tolerances:\n    int8: {atol: 0, rtol: 0, min_cosine: 1.0, min_top1: 1.0}\n"
    )
    rng = np.random.default_rng(0)
    for split, count in (("calib", 8), ("samples", 4)):
        (root / split).mkdir()
        for i in range(count):
            np.savez(root / split / f"{i}.npz", input=rng.random((1, 3, 32, 32), np.float32))
    return [
        str(EXAMPLE),
        "--config",
        str(root / "int8.yaml"),
        "--calibration-data",
        str(root / "calib"),
        "--sample-data",
        str(root / "samples"),
        "--set",
        "latency.runs=3",
    ]


def test_strict_fails_on_failed_parity(tmp_path: Path, failing_int8: list[str]) -> None:
    lenient = cli(*failing_int8, "-o", str(tmp_path / "a"), cache=tmp_path / "c")
    assert lenient.returncode == 0, lenient.stderr
    strict = cli(
        *failing_int8, "-o", str(tmp_path / "b"), "--strict", "--json", cache=tmp_path / "c"
    )
    assert strict.returncode == 1, strict.stderr
    assert "strict: cpu/ort-int8 failed: parity failed (native): probs:" in strict.stderr
    doc = json.loads(strict.stdout)
    assert doc["ok"] is False and doc["exit_code"] == 1
    assert [v["artifact"] for v in doc["strict_failures"]] == ["cpu/ort-int8"]
    gate = {v["artifact"]: v["outcome"] for v in doc["gate"]}
    assert gate == {"cpu/ort-fp32": "passed", "cpu/ort-int8": "failed"}


def test_strict_and_hardware_this_host_lacks(tmp_path: Path) -> None:
    config = tmp_path / "gpu.yaml"
    config.write_text(
        "targets:\n  gpu:\n    pipeline: none\n    variants:\n"
        "      trt-fp32: {compile: {backend: tensorrt}}\n"
    )
    args = [str(EXAMPLE), "--config", str(config), "--no-cache", "--strict"]
    r = cli(*args, "-o", str(tmp_path / "a"))
    host = probe_host()
    if host.gpus and host.runtimes.get("tensorrt"):  # a GPU host builds and checks it
        assert r.returncode == 0, r.stderr
        return
    assert r.returncode == 1 and "gpu/trt-fp32 unavailable" in r.stderr
    assert "--allow-unavailable" in r.stderr
    accepted = cli(*args, "--allow-unavailable", "-o", str(tmp_path / "b"))
    assert accepted.returncode == 0, accepted.stderr


def test_json_documents_match_their_published_schemas(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    r = cli(*ort(pkg, "--json"), cache=tmp_path / "c")
    assert r.returncode == 0, r.stderr
    docs = {"build": json.loads(r.stdout)}  # stdout is exactly one JSON document
    assert "ran normalize" in r.stderr  # progress on stderr
    for command in ("inspect", "run"):
        r = cli(command, str(pkg), "--json")
        assert r.returncode == 0, r.stderr
        docs[command] = json.loads(r.stdout)
    r = cli("compare", str(pkg), str(pkg), "--json")
    docs["compare"] = json.loads(r.stdout)
    for command, doc in docs.items():
        assert doc["command"] == command and doc["schema_version"] == 1
        jsonschema.validate(doc, schema_of(command))
    assert docs["build"]["ok"] is True and docs["build"]["artifacts"][0]["size"].endswith("KiB")
    assert docs["run"]["artifact"] in ("cpu/ort-fp32", "reference")  # as measured
    assert {a["id"] for a in docs["inspect"]["artifacts"]} == {"cpu/ort-fp32", "arm/ort-fp32"}


def test_a_failing_command_with_json_prints_an_error_document(tmp_path: Path) -> None:
    r = cli("inspect", str(tmp_path), "--json")
    assert r.returncode == 3
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["error"]["type"] == "PackageError"
    assert doc["error"]["exit_code"] == 3 and "not a package" in doc["error"]["message"]


@pytest.fixture()
def noisy_loader(tmp_path: Path) -> str:
    """A data loader that prints, as user code and the tools it runs do."""
    loader = tmp_path / "noisy.py"
    loader.write_text(
        "import subprocess\n"
        "import numpy as np\n\n"
        "def load():\n"
        "    print('Loading 4 images: 100%|##########|')\n"
        "    subprocess.run(['echo', 'a tool the loader runs'], check=True)\n"
        "    return [{'input': np.full((1, 3, 32, 32), i / 4, np.float32)} for i in range(4)]\n"
    )
    return f"{loader}:load"


def test_quiet_and_verbose(tmp_path: Path, noisy_loader: str) -> None:
    loader = ["--targets", "cpu", "--data-loader", noisy_loader, "--no-cache"]
    default = cli(*ort(tmp_path / "d", *loader))
    assert default.returncode == 0, default.stderr
    assert "ran normalize" in default.stderr and "Loading 4 images" not in default.stdout
    assert "2 lines of third-party output hidden" in default.stderr
    quiet = cli(*ort(tmp_path / "q", *loader, "-q"))
    assert quiet.returncode == 0 and quiet.stderr == "" and "cpu/ort-fp32" in quiet.stdout
    verbose = cli(*ort(tmp_path / "v", *loader, "-v"))
    assert verbose.returncode == 0, verbose.stderr
    assert "Loading 4 images" in verbose.stderr and "a tool the loader runs" in verbose.stderr
    assert "Loading" not in verbose.stdout
    both = cli(*ort(tmp_path / "x", "-q", "-v"))
    assert both.returncode == 2 and "-q and -v exclude each other" in both.stderr


def test_verbose_says_why_a_node_waited_for_memory(tmp_path: Path) -> None:
    """A margin no host has: every node that could start beside another waits for it instead
    (memory admission, pipeline/scheduler.py), the build still finishes, and -v says why."""
    huge = ["--set", "executor.memory_margin_mb=100000000", "--no-cache"]
    r = cli(*ort(tmp_path / "m", "--targets", "cpu,arm", *huge, "-v"))
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stderr.splitlines() if "waits for memory" in x)
    assert line.startswith("compiler.pipeline.scheduler: ") and "100000000 MiB margin" in line
    quiet = cli(*ort(tmp_path / "d", "--targets", "cpu,arm", *huge))
    assert quiet.returncode == 0 and "waits for memory" not in quiet.stderr


def test_messages_are_not_wrapped_when_piped(tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "samples"
    r = cli(*ort(tmp_path / "p", "--sample-data", str(deep)))
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(lines) == 1
    assert str(deep) in lines[0] and len(lines[0]) > 120


def test_third_party_output_stays_off_stdout(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Python prints, a library writing to file descriptor 1 and a child process: none of it
    reaches stdout while the block runs; all of it lands in the log."""
    log = tmp_path / "third-party.log"
    with third_party_output(log, to_stderr=False) as captured:
        print("a python-level progress line")
        os.write(1, b"a C-level line on fd 1\n")
        subprocess.run(["echo", "a child process line"], check=True)
    print("the result")
    out, _ = capfd.readouterr()
    assert out == "the result\n"
    text = log.read_text()
    assert all(line in text for line in ("python-level", "C-level line", "child process line"))
    assert captured.lines == 3
    with third_party_output(None, to_stderr=True):
        subprocess.run(["echo", "shown on stderr"], check=True)
    out, err = capfd.readouterr()
    assert out == "" and "shown on stderr" in err


def test_a_data_loader_printing_to_stdout_does_not_spoil_the_json(
    tmp_path: Path, noisy_loader: str
) -> None:
    log = tmp_path / "build.log"
    args = ["--targets", "cpu", "--no-cache", "--json", "--log", str(log)]
    r = cli(*ort(tmp_path / "pkg", *args), "--data-loader", noisy_loader)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["command"] == "build"
    text = log.read_text()
    assert "Loading 4 images" in text and "a tool the loader runs" in text
    assert "cpu/ort-fp32:compile" in text  # the node lines are in the log too


def test_print_dag_into_a_closed_pipe_exits_0() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "compiler.cli", str(EXAMPLE), "--print-dag"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader stops at once, as `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == ""


def test_shell_pipe_into_head() -> None:
    cmd = f"{sys.executable} -m compiler.cli {EXAMPLE} --print-dag | head -1"
    r = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stdout == "normalize [normalize]\n"


@pytest.mark.parametrize(
    ("word", "hint"),
    [("inspct", "did you mean 'inspect'?"), ("verfy", "did you mean 'verify'?"), ("zzz", "")],
)
def test_a_mistyped_command_is_refused_with_a_suggestion(word: str, hint: str) -> None:
    r = cli(word, "some/package")
    assert r.returncode == 2 and f"no such command '{word}'" in r.stderr and hint in r.stderr
    assert "build" not in r.stderr.split("commands:")[0]  # not read as a model to build


def test_a_model_path_is_still_a_build(tmp_path: Path) -> None:
    r = cli(str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o"))
    assert r.returncode == 2 and "missing.onnx: no such file" in r.stderr


def test_one_loud_warning_for_lossy_artifacts_on_generated_data(tmp_path: Path) -> None:
    config = tmp_path / "int8.yaml"
    config.write_text(
        f"targets:\n  cpu:\n    pipeline: none\n    variants:\n      ort-int8: {INT8}\n"
    )
    args = [str(EXAMPLE), "--config", str(config), "--set", "latency.runs=3", "--no-cache"]
    r = cli(*args, "-o", str(tmp_path / "pkg"), "-q")
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert r.returncode == 0 and len(warnings) == 1, r.stderr
    assert "generated" in warnings[0] and "--sample-data" in warnings[0]
    assert "(lossy artifacts: cpu/ort-int8)" in warnings[0]
    fp32 = cli(*ort(tmp_path / "fp32", "--targets", "cpu", "--no-cache", "-q"))
    assert fp32.returncode == 0 and fp32.stderr == ""  # nothing lossy: nothing to warn about


def test_a_model_that_draws_random_numbers_passes_strict(tmp_path: Path) -> None:
    """A VAE's sample differs between two runs of the reference itself: judged value by
    value, every artifact, the reference's own model included, failed parity, so --strict
    failed every build of such a model. Its sampled output is judged by its distribution
    and the mean beside it value by value."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mu"]),
        helper.make_node("RandomNormalLike", ["mu"], ["eps"], name="noise"),
        helper.make_node("Add", ["mu", "eps"], ["z"]),
        helper.make_node("MatMul", ["z", "w2"], ["recon"]),
    ]
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)
        for name, shape in (("w", (16, 8)), ("w2", (8, 16)))
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "vae",
        [helper.make_tensor_value_info("x", f, ["N", 16])],
        [
            helper.make_tensor_value_info("recon", f, ["N", 16]),
            helper.make_tensor_value_info("mu", f, ["N", 8]),
        ],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "vae.onnx")
    args = [str(tmp_path / "vae.onnx"), "--config", ORT_ONLY, "--set", "latency.runs=3"]
    r = cli(*args, "-o", str(tmp_path / "out"), "--strict", cache=tmp_path / "c")
    assert r.returncode == 0, r.stdout + r.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [o["kind"] for o in manifest["contract"]["outputs"]] == ["sampled", "linear_head"]
    parity = json.loads((tmp_path / "out" / "reports" / "parity.json").read_text())
    judged = parity["cpu/ort-fp32"][0]["outputs"]
    assert [c["metric"] for c in judged["recon"]["checks"]] == ["mean_shift", "spread_ratio"]
    assert "max_abs_err" in [c["metric"] for c in judged["mu"]["checks"]]
    # what each output is judged as is shown where the contract is
    report = (tmp_path / "out" / "reports" / "report.md").read_text()
    assert "| out | recon | float32 | ['N', 16] | sampled |" in report
    shown = cli("inspect", str(tmp_path / "out"))
    assert shown.returncode == 0 and "sampled" in shown.stdout and "linear_head" in shown.stdout
