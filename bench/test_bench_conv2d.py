"""pytest-benchmark suites for conv2d: fastconv's algorithms side by side with PyTorch CPU.

Run ``pytest bench --benchmark-only`` (add ``-k "lenet"`` for one family of shapes,
``--benchmark-group-by=group`` is the default grouping).  One group per case and mode, e.g.
``"3x3-64-56 fwd"`` and ``"3x3-64-56 fwd+bwd"``; inside a group one row per implementation:
fastconv ``direct``, ``im2col``, ``auto`` and ``torch`` (skipped when PyTorch is not installed).

The cases live in ``cases.py``; the timed code in ``workloads.py`` (shared with ``compare.py``).
``extra_info`` of each benchmark holds its GFLOP/s (see ``cases.py`` for the flop convention).
"""

import numpy as np
import pytest

import workloads
from cases import CONV2D_CASES

DTYPE = "float32"
IMPLS = (*workloads.ALGORITHMS, "torch")


def _params(mode):
    return [
        pytest.param(case, impl, id=f"{case.name}-{impl}", marks=pytest.mark.benchmark(group=f"{case.name} {mode}"))
        for case in CONV2D_CASES
        for impl in IMPLS
    ]


def _bench(run_benchmark, case, impl, mode):
    if impl == "torch":
        pytest.importorskip("torch")
    algorithm = "auto" if impl == "torch" else impl
    wl = workloads.workload(case, dtype=DTYPE, algorithm=algorithm)
    timed = {t.mode: t for t in wl.bind(np.random.default_rng(0), with_torch=(impl == "torch"))}[mode]
    fn = timed.torch if impl == "torch" else timed.fastconv
    run_benchmark(fn, timed.work, timed.unit, impl=impl, case=case.describe(), dtype=DTYPE, mode=mode)


@pytest.mark.parametrize(("case", "impl"), _params("fwd"))
def test_conv2d_fwd(run_benchmark, case, impl):
    _bench(run_benchmark, case, impl, "fwd")


@pytest.mark.parametrize(("case", "impl"), _params("fwd+bwd"))
def test_conv2d_fwdbwd(run_benchmark, case, impl):
    _bench(run_benchmark, case, impl, "fwd+bwd")
