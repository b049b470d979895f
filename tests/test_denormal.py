"""fastconv.set_flush_denormal: denormals flushed to zero in the calling thread and in
the kernels' OpenMP worker threads, in every algorithm, and switched back off."""

import multiprocessing
import sys
import threading

import numpy as np
import pytest

import fastconv
from fastconv import _config
from fastconv._kernels import _cpu

pytestmark = pytest.mark.skipif(not _cpu.flush_denormal_supported(),
                                reason="no denormal flushing control on this platform")

#: a denormal of each dtype, and the magnitude below which a value is denormal
TINY = {np.dtype(np.float32): 1e-39, np.dtype(np.float64): 1e-310}


@pytest.fixture(autouse=True)
def flush_off(restore_threads):
    yield
    fastconv.set_flush_denormal(False)


def denormal_conv(dtype, algorithm, n=4, c=6, size=24):
    """conv2d of an all-denormal x with a ones kernel: denormal without flushing, else 0."""
    x = np.full((n, c, size, size), TINY[np.dtype(dtype)], dtype=dtype)
    w = np.ones((8, c, 3, 3), dtype=dtype)
    return fastconv.conv2d(x, w, padding=1, algorithm=algorithm)


def test_off_by_default_and_returns_the_previous_setting():
    assert fastconv.get_flush_denormal() is False
    assert fastconv.set_flush_denormal(True) is False
    assert fastconv.get_flush_denormal() is True
    assert _cpu.thread_flushes_denormal()
    assert fastconv.set_flush_denormal(True) is True
    assert fastconv.set_flush_denormal(False) is True
    assert fastconv.get_flush_denormal() is False
    assert not _cpu.thread_flushes_denormal()


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
def test_flushes_in_the_kernels_and_switches_back(algorithm, dtype):
    with fastconv.threads(1):
        assert np.all(denormal_conv(dtype, algorithm) > 0)
        fastconv.set_flush_denormal(True)
        assert np.all(denormal_conv(dtype, algorithm) == 0)
        fastconv.set_flush_denormal(False)
        assert np.all(denormal_conv(dtype, algorithm) > 0)


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
def test_flushes_in_worker_threads(algorithm):
    # Each thread computes some of the images: a worker that kept the old mode leaves
    # nonzero outputs. The workers exist before the switch, and more join after it.
    with fastconv.threads(2):
        assert np.all(denormal_conv(np.float32, algorithm) > 0)
        fastconv.set_flush_denormal(True)
        assert np.all(denormal_conv(np.float32, algorithm) == 0)
    with fastconv.threads(3):
        assert np.all(denormal_conv(np.float32, algorithm) == 0)
        fastconv.set_flush_denormal(False)
        assert np.all(denormal_conv(np.float32, algorithm) > 0)
    with fastconv.threads(2):
        assert np.all(denormal_conv(np.float32, algorithm) > 0)


def test_pooling_flushes_too():
    x = np.full((3, 4, 8, 8), TINY[np.dtype(np.float32)], dtype=np.float32)
    with fastconv.threads(2):
        assert np.all(fastconv.avg_pool2d(x, 2) > 0)
        fastconv.set_flush_denormal(True)
        assert np.all(fastconv.avg_pool2d(x, 2) == 0)


def test_applies_to_other_python_threads():
    results = {}

    def run():
        with fastconv.threads(2):
            results["y"] = denormal_conv(np.float32, "direct")
        results["thread flushes"] = _cpu.thread_flushes_denormal()

    for enabled in (True, False, True):
        fastconv.set_flush_denormal(enabled)
        worker = threading.Thread(target=run)
        worker.start()
        worker.join(120)
        assert results["thread flushes"] is enabled
        assert np.all((results["y"] == 0) == enabled)


def test_normal_values_are_unchanged(rng):
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    expected = fastconv.conv2d(x, w, padding=1)
    fastconv.set_flush_denormal(True)
    assert np.array_equal(fastconv.conv2d(x, w, padding=1), expected)


@pytest.mark.parametrize("bad", [1, 0, None, "yes", 1.0])
def test_rejects_non_bool(bad):
    with pytest.raises(TypeError, match="enabled"):
        fastconv.set_flush_denormal(bad)
    assert fastconv.get_flush_denormal() is False


def test_accepts_numpy_bool():
    assert fastconv.set_flush_denormal(np.bool_(True)) is False
    assert fastconv.get_flush_denormal() is True


def test_unsupported_platform_warns_and_stays_off(monkeypatch):
    monkeypatch.setattr(_config._cpu, "flush_denormal_supported", lambda: False)
    with pytest.warns(RuntimeWarning, match="not supported"):
        assert fastconv.set_flush_denormal(True) is False
    assert fastconv.get_flush_denormal() is False
    assert fastconv.set_flush_denormal(False) is False


def _child_switches_off(queue):
    flushed = bool(np.all(denormal_conv(np.float32, "direct") == 0))
    previous = fastconv.set_flush_denormal(False)
    unflushed = bool(np.all(denormal_conv(np.float32, "direct") > 0))
    queue.put((flushed, previous, fastconv.get_flush_denormal(), unflushed))


@pytest.mark.skipif(sys.platform == "win32" or "fork" not in multiprocessing.get_all_start_methods(),
                    reason="no fork on this platform")
def test_forked_child_keeps_and_switches_the_mode_without_hanging():
    # The child cannot start the parent's OpenMP threads again: it switches on one thread.
    with fastconv.threads(2):
        denormal_conv(np.float32, "direct")  # the parent's OpenMP threads start
        fastconv.set_flush_denormal(True)
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_child_switches_off, args=(queue,))
        child.start()
        try:
            result = queue.get(timeout=120)
        finally:
            child.join(120)
    assert result == (True, True, False, True)
