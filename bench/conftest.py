"""pytest configuration for the benchmark suites (run: ``pytest bench --benchmark-only``).

Only ``pytest bench`` loads this file; a plain ``pytest`` collects ``tests/`` alone.
Thread count: fastconv's (``FASTCONV_NUM_THREADS`` / ``OMP_NUM_THREADS`` / cores); PyTorch is set
to the same count.
"""

import math
import os
import sys
import time

import pytest

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if _BENCH_DIR not in sys.path:  # needed with --import-mode=importlib
    sys.path.insert(0, _BENCH_DIR)

import workloads  # noqa: E402

#: seconds of timed rounds per benchmark (at least MIN_ROUNDS rounds, at most MAX_ROUNDS)
ROUND_BUDGET = 0.5
MIN_ROUNDS = 3
MAX_ROUNDS = 200
#: a round repeats very fast calls until it lasts about this long
MIN_ROUND_TIME = 1e-3


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["fastconv_bench"] = workloads.versions()


def pytest_report_header(config):
    v = workloads.versions()
    return (
        f"fastconv {v['fastconv']} ({v['fastconv_path']}), threads {v['fastconv_threads']}; "
        f"torch {v['torch']}"
    )


@pytest.fixture(scope="session", autouse=True)
def _same_threads():
    """Give PyTorch as many threads as fastconv."""
    workloads.set_threads()


def _time_once(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@pytest.fixture
def run_benchmark(benchmark):
    """Time ``fn()`` with pytest-benchmark and record its rate (``work`` per second, in ``unit``).

    The rounds are sized from a warm-up call (and a second call when it is fast), so a slow
    case (the direct algorithm on a large shape) costs a few calls while a fast one still
    gets many rounds.
    """

    def run(fn, work, unit, **info):
        once = _time_once(fn)  # warm-up: allocations, first touch, lazy initialisation
        if once < ROUND_BUDGET:  # the first call is often slow: calibrate on a second one
            once = _time_once(fn)
        once = max(once, 1e-7)
        iterations = max(1, math.ceil(MIN_ROUND_TIME / once))
        rounds = min(MAX_ROUNDS, max(MIN_ROUNDS, math.ceil(ROUND_BUDGET / (once * iterations))))
        result = benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=0)
        benchmark.extra_info.update(info)
        stats = getattr(benchmark, "stats", None)
        if stats is not None:
            median = stats.stats.median
            benchmark.extra_info[unit] = round(workloads.rate(work, median, unit), 3) if median > 0 else None
        return result

    return run
