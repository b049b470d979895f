"""bench/compare.py: the train-step table, the memory columns and --scaling run and report.

Each test runs compare.py in a child process with single calls (``--quick``) on one or two
small cases; nothing here asserts on timings.
"""

import math
import os
import re
import subprocess
import sys

import pytest

import fastconv

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench")
COMPARE = os.path.join(BENCH, "compare.py")

pytestmark = pytest.mark.skipif(not os.path.exists(COMPARE),
                                reason="bench/compare.py is not beside tests/")


def run_compare(*flags):
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, COMPARE, "--quick", "--threads", "1", *flags],
                          capture_output=True, text=True, env=env, timeout=300)


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
