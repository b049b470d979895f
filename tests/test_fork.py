"""Fork safety: a child forked after the parent ran parallel kernels must not hang.

GNU libgomp's thread pool does not survive fork; fastconv notices the fork and runs
the child's kernels on one thread, which gives the same results.
"""

import multiprocessing
import os
import sys
import tempfile

import numpy as np
import pytest

import fastconv

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or "fork" not in multiprocessing.get_all_start_methods(),
    reason="no fork on this platform",
)


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8, 20, 20)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    return x, w


def _child_work(queue):
    x, w = _inputs()
    y = fastconv.conv2d(x, w, padding=1, algorithm="im2col")
    y_direct = fastconv.conv2d(x, w, padding=1, algorithm="direct")
    pooled, idx = fastconv.max_pool2d(y, 2, return_indices=True)
    gx = fastconv.max_pool2d_backward(np.ones_like(pooled), idx, y.shape)
    with pytest.warns(RuntimeWarning, match="forked"):
        fastconv.set_num_threads(2)
    queue.put((y, y_direct, pooled, gx, fastconv.get_num_threads(),
               fastconv._config.effective_n_threads(), fastconv._config.forked_after_openmp()))


def test_forked_child_runs_ops_after_parent_ran_parallel_ones(restore_threads):
    fastconv.set_num_threads(2)
    x, w = _inputs()
    y = fastconv.conv2d(x, w, padding=1, algorithm="im2col")  # parent starts OpenMP threads
    pooled, idx = fastconv.max_pool2d(y, 2, return_indices=True)
    gx = fastconv.max_pool2d_backward(np.ones_like(pooled), idx, y.shape)
    assert not fastconv._config.forked_after_openmp()

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_work, args=(queue,))
    child.start()
    try:
        # Read before joining: the child cannot exit until its results leave the pipe.
        c_y, c_direct, c_pooled, c_gx, c_threads, c_effective, c_flag = queue.get(timeout=60)
        child.join(30)
        assert child.exitcode == 0
    except Exception as exc:
        raise AssertionError(f"the forked child hung or failed: {exc!r}") from exc
    finally:
        if child.is_alive():
            child.kill()
    np.testing.assert_array_equal(c_y, y)  # one thread or two: the same bits
    np.testing.assert_allclose(c_direct, y, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(c_pooled, pooled)
    np.testing.assert_array_equal(c_gx, gx)
    assert c_flag and c_effective == 1
    assert c_threads == 2  # the setting is kept; the kernels use one thread
    # The parent is unaffected.
    assert not fastconv._config.forked_after_openmp()
    assert fastconv._config.effective_n_threads() == 2


def test_fork_before_any_parallel_kernel_keeps_threads():
    """A child forked before OpenMP started may use every thread."""
    code = (
        "import multiprocessing as mp, fastconv, numpy as np\n"
        "def work(q):\n"
        "    x = np.ones((2, 3, 9, 9), np.float32)\n"
        "    fastconv.set_num_threads(2)\n"
        "    q.put((fastconv._config.effective_n_threads(), float(fastconv.conv2d(x, x[:1]).sum())))\n"
        "ctx = mp.get_context('fork'); q = ctx.Queue()\n"
        "p = ctx.Process(target=work, args=(q,)); p.start(); p.join(60)\n"
        "assert not p.is_alive(); print(q.get(timeout=5))\n"
    )
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    # Run outside the source tree: `python -c` puts the working folder first on sys.path.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=tempfile.gettempdir(),
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("(2,")
