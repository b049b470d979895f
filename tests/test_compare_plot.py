"""bench/compare.py --plot writes a PNG bar chart of fastconv / torch ratios."""

import os
import struct
import subprocess
import sys

import pytest

import fastconv

COMPARE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench", "compare.py")


@pytest.mark.skipif(not os.path.exists(COMPARE), reason="bench/compare.py is not beside tests/")
def test_compare_plot_writes_a_png(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    png = tmp_path / "ratios.png"
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(
        [sys.executable, COMPARE, "--quick", "--cases", "convT-3x3,avgpool", "--threads", "1",
         "--plot", str(png)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "geometric mean" in out.stdout
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    # one compact figure: about 10 inches wide, a short row per case (2 here) at 120 dpi
    width, height = struct.unpack(">II", data[16:24])
    assert 1100 <= width <= 1300
    assert height <= 120 * (0.28 * 2 + 1.0)
