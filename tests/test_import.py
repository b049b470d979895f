"""Importing fastconv from a source tree whose kernels are not built explains itself."""

import os
import shutil
import subprocess
import sys

import fastconv


def test_source_tree_without_kernels_says_what_to_do(tmp_path):
    """A copy of the package's Python files without the compiled kernels, imported
    from its own folder (as `python -c "import fastconv"` in a fresh checkout does)."""
    package = os.path.dirname(os.path.abspath(fastconv.__file__))
    shutil.copytree(package, tmp_path / "fastconv",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", "import fastconv"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastconv's compiled kernels are missing"), proc.stderr
    assert "source tree" in last and "another directory" in last
    assert "build_ext --inplace" in last
