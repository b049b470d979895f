"""Tests for the thread knob and show_config()."""

import os
import subprocess
import sys

import pytest

import fastconv as fc


def test_get_num_threads_is_positive_int():
    n = fc.get_num_threads()
    assert isinstance(n, int)
    assert n >= 1


@pytest.mark.parametrize("n", [1, 2])
def test_set_num_threads(n, restore_threads):
    fc.set_num_threads(n)
    assert fc.get_num_threads() == n


def test_threads_context_manager(restore_threads):
    fc.set_num_threads(2)
    with fc.threads(1):
        assert fc.get_num_threads() == 1
        with fc.threads(2):
            assert fc.get_num_threads() == 2
        assert fc.get_num_threads() == 1
    assert fc.get_num_threads() == 2


def test_threads_restores_on_exception(restore_threads):
    fc.set_num_threads(2)
    with pytest.raises(RuntimeError, match="boom"):
        with fc.threads(1):
            assert fc.get_num_threads() == 1
            raise RuntimeError("boom")
    assert fc.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, -8])
def test_set_num_threads_rejects_non_positive(bad, restore_threads):
    before = fc.get_num_threads()
    with pytest.raises(ValueError):
        fc.set_num_threads(bad)
    assert fc.get_num_threads() == before


@pytest.mark.parametrize("bad", ["2", 2.5, 2.0])
def test_set_num_threads_rejects_non_integers(bad, restore_threads):
    before = fc.get_num_threads()
    with pytest.raises(TypeError):
        fc.set_num_threads(bad)
    assert fc.get_num_threads() == before


@pytest.mark.parametrize(
    "bad, exc", [(0, ValueError), (-1, ValueError), ("2", TypeError), (2.5, TypeError)]
)
def test_threads_rejects_bad_values(bad, exc, restore_threads):
    before = fc.get_num_threads()
    with pytest.raises(exc):
        with fc.threads(bad):
            pass  # pragma: no cover
    assert fc.get_num_threads() == before


def test_show_config(capsys):
    fc.show_config()
    out = capsys.readouterr().out.lower()
    for word in ("fastconv", "openmp", "threads", "blas", "own gemm:"):
        assert word in out, f"{word!r} missing from show_config() output:\n{out}"
    from fastconv._dispatch import _gemm

    assert ("32 columns" in out) == _gemm.HAS_OWN_GEMM  # which products it takes, or none


# --------------------------------------------------------------------------- #
# the default comes from the environment, read at import
# --------------------------------------------------------------------------- #


def _default_threads_in_subprocess(**env_vars):
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTCONV_NUM_THREADS", "OMP_NUM_THREADS")}
    env.update(env_vars)
    # import the same fastconv as this process
    root = os.path.dirname(os.path.dirname(os.path.abspath(fc.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", "import fastconv; print(fastconv.get_num_threads())"],
        env=env, cwd=root, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip().splitlines()[-1])


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def test_default_from_fastconv_num_threads():
    assert _default_threads_in_subprocess(FASTCONV_NUM_THREADS="1") == 1
    if _cores() >= 2:
        assert _default_threads_in_subprocess(FASTCONV_NUM_THREADS="2") == 2


def test_default_from_omp_num_threads():
    assert _default_threads_in_subprocess(OMP_NUM_THREADS="1") == 1
    if _cores() >= 2:
        assert _default_threads_in_subprocess(OMP_NUM_THREADS="2") == 2


def test_fastconv_num_threads_wins_over_omp():
    assert _default_threads_in_subprocess(FASTCONV_NUM_THREADS="1", OMP_NUM_THREADS="2") == 1
    if _cores() >= 2:
        assert _default_threads_in_subprocess(FASTCONV_NUM_THREADS="2", OMP_NUM_THREADS="1") == 2


def test_default_without_environment_is_core_count():
    n = _default_threads_in_subprocess()
    assert 1 <= n <= (os.cpu_count() or 1)
    assert n == _cores() or n == os.cpu_count()
