"""bench/compare.py: the train-step table, the memory columns, --scaling and the suites run
and report; the networks suite's cases build.

Each compare.py test runs it in a child process with single calls (``--quick``) on one or two
small cases; nothing here asserts on timings.
"""

import importlib
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastconv

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench")
COMPARE = os.path.join(BENCH, "compare.py")

pytestmark = pytest.mark.skipif(not os.path.exists(COMPARE),
                                reason="bench/compare.py is not beside tests/")


def bench_env():
    """The environment of a bench script: the fastconv under test first on the path."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    return {**os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def run_compare(*flags):
    return subprocess.run([sys.executable, COMPARE, "--quick", "--threads", "1", *flags],
                          capture_output=True, text=True, env=bench_env(), timeout=300)


def row(stdout, name):
    lines = [line for line in stdout.splitlines() if line.startswith(name + " ")]
    assert lines, stdout
    return lines[0]


def test_train_step_table():
    pytest.importorskip("torch")
    out = run_compare("--cases", "lenet5-train", "--repeat", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "train step (ms per call" in out.stdout
    assert "img/s" in out.stdout
    cells = row(out.stdout, "lenet5-train-step").split("|")
    fc_ms, torch_ms, ratio, images = (float(v) for v in cells[0].split()[-4:])
    assert fc_ms > 0 and torch_ms > 0 and ratio > 0 and images > 0
    peak, kept, rss = (float(v) for v in cells[1].split())
    assert peak >= kept > 0  # a step keeps its activations for the next backward
    assert re.search(r"fastconv \d+ img/s, torch \d+ img/s", out.stdout), out.stdout


def test_memory_columns_count_outputs_and_workspaces():
    # average pooling fwd+bwd allocates exactly y and gx: its peak is their size
    out = run_compare("--no-torch", "--cases", "avgpool-2x2s2-64-56", "--repeat", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "peak MB" in out.stdout and "kept MB" in out.stdout and "RSS MB" in out.stdout
    cells = row(out.stdout, "avgpool-2x2s2-64-56").split("|")[-1].split()
    peak, kept, rss = (float(v) for v in cells)
    y, gx = (32 * 64 * 28 * 28 * 4), (32 * 64 * 56 * 56 * 4)
    assert math.isclose(kept, (y + gx) / 2**20, abs_tol=0.02)
    assert math.isclose(peak, kept, abs_tol=0.02)
    # the resident set cannot grow by more than the process allocates and touches
    assert 0 <= rss <= peak + 1


def test_rss_growth_sees_fresh_pages():
    """A call that fills a new 64 MB array grows the resident set by about that much."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import numpy as np, compare\n"
        "class Filler:\n"
        "    def fastconv(self):\n"
        "        return np.ones(16 * 2**20, np.float32)\n"
        "print(compare.rss_growth(Filler()))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    # cwd: the bench folder, as for compare.py runs (a source tree there would shadow the
    # installed fastconv, since "python -c" puts the working directory first on sys.path)
    out = subprocess.run([sys.executable, "-c", script, BENCH], capture_output=True, text=True,
                         env=env, timeout=300, cwd=BENCH)
    assert out.returncode == 0, out.stdout + out.stderr
    growth = out.stdout.split()[-1]
    if growth == "None":
        pytest.skip("no /proc/self/clear_refs: not Linux")
    assert 60 * 2**20 <= float(growth) <= 80 * 2**20


def test_no_memory_leaves_the_columns_out():
    out = run_compare("--no-torch", "--no-memory", "--cases", "convT-3x3", "--repeat", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "peak MB" not in out.stdout
    assert "convT-3x3s2-32-15" in out.stdout


def test_scaling_reports_speedups_and_geomeans():
    out = run_compare("--cases", "convT-3x3,lenet-C3,lenet5-train", "--scaling", "1,2",
                      "--repeat", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "thread scaling of fastconv" in out.stdout
    assert "1T ms" in out.stdout and "2T x" in out.stdout
    for name, mode in (("convT-3x3s2-32-15", "fwd+bwd"), ("lenet-C3", "fwd"),
                       ("lenet5-train-step", "step")):
        assert re.search(rf"^{name}\s+{re.escape(mode)}\s+[\d.]+\s+[\d.]+ \|\s+[\d.]+$",
                         out.stdout, re.MULTILINE), out.stdout
    large = [line for line in out.stdout.splitlines() if "large cases" in line]
    assert large and "(1 cases)" in large[0], out.stdout  # convT only: LeNet is not large
    assert "all cases" in out.stdout


@pytest.mark.parametrize("counts", ["0", "1,x"])
def test_scaling_refuses_bad_counts(counts):
    out = run_compare("--cases", "lenet-C3", "--scaling", counts)
    assert out.returncode == 2
    assert "--scaling" in out.stderr


def test_plot_includes_the_train_step(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    png = tmp_path / "ratios.png"
    out = run_compare("--cases", "convT-3x3,lenet5-train", "--repeat", "1", "--no-memory",
                      "--plot", str(png))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "step" in out.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------
# suites
# ---------------------------------------------------------------------------------------

#: the default suite, whose results are compared across versions: names must not change
DEFAULT_CASE_NAMES = [
    "lenet-C1", "lenet-C3", "3x3-64-56", "3x3s2-128-28", "1x1-256-14", "3x3d2-64-56",
    "7x7s2-3-224", "convT-4x4s2-128-16", "convT-2x2s2-64-28", "convT-3x3s2-32-15",
    "maxpool-2x2s2-64-56", "maxpool-3x3s2p1-64-112", "avgpool-2x2s2-64-56",
    "lenet5-train-step", "lenet5-infer-b1", "lenet5-infer-b64", "denormal-C3",
    "denormal-3x3-64-28",
]


@pytest.fixture
def bench_modules(monkeypatch):
    """bench/'s ``cases`` and ``workloads`` modules, imported as compare.py imports them and
    forgotten afterwards (their plain names could shadow other modules)."""
    monkeypatch.syspath_prepend(BENCH)
    for name in ("cases", "workloads", "compare"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield importlib.import_module("cases"), importlib.import_module("workloads")
    for name in ("cases", "workloads", "compare"):
        sys.modules.pop(name, None)


def test_default_suite_keeps_its_case_names(bench_modules):
    cases, _ = bench_modules
    assert [c.name for c in cases.SUITES["default"]] == DEFAULT_CASE_NAMES
    assert [c.name for c in cases.ALL_CASES] == DEFAULT_CASE_NAMES
    assert cases.SUITES["all"] == [*cases.ALL_CASES, *cases.NETWORK_CASES]


def test_network_family_is_large_named_and_apart(bench_modules):
    cases, _ = bench_modules
    family = cases.select(cases.SUITES["networks"], "net-")
    assert len(family) >= 25 and family == cases.NETWORK_CASES
    names = [c.name for c in family]
    assert len(set(names)) == len(names)
    # kept out of the default suite (whose "lenet-C1" also contains "net-")
    assert not [c for c in cases.ALL_CASES if c.name.startswith("net-")]
    kinds = {c.kind for c in family}
    assert kinds == {"conv2d", "conv_transpose2d", "pool2d"}
    assert any(c.dtype == "float64" for c in family)
    assert any(getattr(c, "groups", 1) == c.x_shape[1] > 1 for c in family)  # depthwise
    assert {c.x_shape[0] for c in family} == {1, 8}


def test_network_cases_build_their_inputs(bench_modules):
    """Every net- case makes inputs of its shapes and dtype, and its output shape (from the
    benchmarks' own shape arithmetic) is positive and is what fastconv returns."""
    cases, workloads = bench_modules
    rng = np.random.default_rng(0)
    for case in cases.NETWORK_CASES:
        assert min(case.y_shape) > 0, case
        dtype = case.dtype or "float32"
        wl = workloads.workload(case, dtype=dtype)
        inputs = wl.make_inputs(rng)
        assert inputs["x"].shape == case.x_shape and inputs["x"].dtype == np.dtype(dtype)
        assert inputs["gy"].shape == case.y_shape
        if case.kind != "pool2d":
            assert inputs["w"].shape == case.w_shape
        if case.x_shape[0] == 1:  # batch 1 is quick enough to run
            assert wl.fastconv_fwd(inputs).shape == case.y_shape, case


def test_networks_suite_prints_the_conv_only_line():
    pytest.importorskip("torch")
    out = run_compare("--suite", "networks", "--cases", "net-lenet5-C1-b1,net-dcgan-convT-4x4s2-64-32-b1",
                      "--repeat", "1", "--no-memory")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "suite networks" in out.stdout
    row(out.stdout, "net-lenet5-C1-b1")
    row(out.stdout, "net-dcgan-convT-4x4s2-64-32-b1")
    assert re.search(r"^conv and transposed conv only: fwd [\d.]+, fwd\+bwd [\d.]+ \(2 cases\)$",
                     out.stdout, re.MULTILINE), out.stdout


def test_default_suite_has_no_network_cases():
    out = run_compare("--cases", "net-resnet")
    assert out.returncode == 2
    assert "suite 'default'" in out.stderr


def test_limit_columns_are_rates_over_the_measured_limits():
    out = run_compare("--no-torch", "--no-memory", "--cases", "maxpool-2x2s2-64-56,3x3-64-56",
                      "--repeat", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    head = re.search(r"FMA peak (\d+) GFLOP/s, copy bandwidth ([\d.]+) GB/s", out.stdout)
    assert head, out.stdout
    peak, copy = float(head.group(1)), float(head.group(2))
    for name, limit in (("3x3-64-56", peak), ("maxpool-2x2s2-64-56", copy)):
        fwd = row(out.stdout, name).split("|")[0].split()
        rate, share = float(fwd[-2]), float(fwd[-1])
        # the header rounds the limit: allow for that and the cell's rounding
        assert math.isclose(share, 100 * rate / limit, rel_tol=0.02, abs_tol=1), (name, fwd)
    assert re.search(r"GEMM-bound forwards of large layers: [01] of 1 at >= 70% of the FMA peak",
                     out.stdout), out.stdout
    assert re.search(r"pooling forwards: [01] of 1 at >= 60% of the copy bandwidth", out.stdout)


def test_onnx_anchor_computes_what_fastconv_computes(bench_modules):
    """Each ONNX Runtime forward that compare.py times gives fastconv's result: the anchor
    times the same operation (padding, output padding, groups, the LeNet-5 graph)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    cases, workloads = bench_modules
    picked = ["lenet-C1", "3x3s2-128-28", "3x3d2-64-56", "convT-3x3s2-32-15",
              "maxpool-3x3s2p1-64-112", "avgpool-2x2s2-64-56", "lenet5-infer-b1"]
    networks = [c for c in cases.NETWORK_CASES
                if c.kind != "conv2d" or c.groups > 1 or c.pads[0] != c.pads[1]][:6]
    chosen = [c for c in cases.ALL_CASES if c.name in picked] + networks
    assert len(chosen) >= len(picked)
    rng = np.random.default_rng(0)
    for case in chosen:
        wl = workloads.workload(case, dtype=getattr(case, "dtype", None) or "float32")
        (fwd, *_) = wl.bind(rng, with_torch=False, with_onnx=True)
        assert fwd.onnx is not None, case.name
        expected = fwd.fastconv()
        expected = expected[0] if isinstance(expected, tuple) else expected
        got = fwd.onnx()[0]
        tol = 1e-4 if got.dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * np.abs(expected).max(),
                                   err_msg=case.name)


def test_onnx_columns_and_small_call_line():
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = run_compare("--no-memory", "--cases", "lenet5-infer-b1,lenet-C1", "--repeat", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ort ms" in out.stdout and "fc/ort" in out.stdout
    fwd = row(out.stdout, "lenet5-infer-b1").split("|")[0].split()
    fc_ms, torch_ms, ratio, ort_ms, fc_ort = (float(v) for v in fwd[-6:-1])
    assert math.isclose(ratio, fc_ms / torch_ms, rel_tol=0.05, abs_tol=0.01)
    assert math.isclose(fc_ort, fc_ms / ort_ms, rel_tol=0.05, abs_tol=0.01)
    assert re.search(r"lenet5-infer-b1: fastconv [\d.]+ us, fastconv / torch [\d.]+ "
                     r"\(target <= 0.50\), fastconv / onnxruntime [\d.]+", out.stdout), out.stdout
    assert re.search(r"fastconv / onnxruntime, forward: conv2d [\d.]+, inference [\d.]+", out.stdout)


def test_networks_script_checks_agreement_and_reports_ratios():
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, os.path.join(BENCH, "networks.py"), "--quick",
                          "--size", "32", "--batch", "2", "--threads", "1",
                          "--networks", "resnet18,googlenet"],
                         capture_output=True, text=True, env=bench_env(), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    for net in ("resnet18", "googlenet"):
        for mode in ("infer b1", "infer b2", "train b2"):
            assert re.search(rf"{net}\s+{mode}\s+[\d.]+\s+[\d.]+\s+[\d.]+", out.stdout), out.stdout
    assert re.search(r"\(\d+ layers on fastconv; logits agree within", out.stdout)
    assert "geometric mean of ratios fastconv / torch" in out.stdout


def test_networks_script_rejects_unknown_networks():
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, os.path.join(BENCH, "networks.py"), "--networks",
                          "alexnet"], capture_output=True, text=True, timeout=120,
                         env=bench_env())
    assert out.returncode == 2 and "unknown ['alexnet']" in out.stderr


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="needs Debian's Fashion-MNIST: apt-get install dataset-fashion-mnist")
def test_epoch_script_times_both_trainers():
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, os.path.join(BENCH, "epoch.py"), "--limit", "6400",
                          "--repeat", "2", "--threads", "1"],
                         capture_output=True, text=True, env=bench_env(), timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    runs = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out.stdout, re.MULTILINE)
    assert [r[0] for r in runs] == ["1", "2"], out.stdout
    for _, fc, th, ratio in runs:
        assert float(fc) > 0 and float(th) > 0
        assert math.isclose(float(ratio), float(fc) / float(th), rel_tol=0.05, abs_tol=0.01)
    assert re.search(r"medians: fastconv [\d.]+ s, torch [\d.]+ s, ratio [\d.]+", out.stdout)
