"""pytest-benchmark suites for conv_transpose2d and pooling, beside PyTorch CPU.

Run ``pytest bench --benchmark-only``. One group per case and mode (e.g.
``"maxpool-2x2s2-64-56 fwd+bwd"``); transposed convolution has one row per fastconv
algorithm, pooling one fastconv row, and both a ``torch`` row when PyTorch is installed.
Pooling rates in ``extra_info`` are GB/s of the minimum memory traffic (see ``cases.py``).
"""

import numpy as np
import pytest

import workloads
from cases import CONV_TRANSPOSE2D_CASES, POOL2D_CASES

DTYPE = "float32"


def _params(cases, impls, mode):
    return [
        pytest.param(case, impl, id=f"{case.name}-{impl}",
                     marks=pytest.mark.benchmark(group=f"{case.name} {mode}"))
        for case in cases
        for impl in impls
    ]


def _bench(run_benchmark, case, impl, mode):
    if impl == "torch":
        pytest.importorskip("torch")
    algorithm = "auto" if impl in ("torch", "fastconv") else impl
    wl = workloads.workload(case, dtype=DTYPE, algorithm=algorithm)
    timed = {t.mode: t for t in wl.bind(np.random.default_rng(0), with_torch=(impl == "torch"))}[mode]
    fn = timed.torch if impl == "torch" else timed.fastconv
    run_benchmark(fn, timed.work, timed.unit, impl=impl, case=case.describe(), dtype=DTYPE, mode=mode)


CONVT_IMPLS = (*workloads.ALGORITHMS, "torch")
POOL_IMPLS = ("fastconv", "torch")


@pytest.mark.parametrize(("case", "impl"), _params(CONV_TRANSPOSE2D_CASES, CONVT_IMPLS, "fwd"))
def test_conv_transpose2d_fwd(run_benchmark, case, impl):
    _bench(run_benchmark, case, impl, "fwd")


@pytest.mark.parametrize(("case", "impl"), _params(CONV_TRANSPOSE2D_CASES, CONVT_IMPLS, "fwd+bwd"))
def test_conv_transpose2d_fwdbwd(run_benchmark, case, impl):
    _bench(run_benchmark, case, impl, "fwd+bwd")


@pytest.mark.parametrize(("case", "impl"), _params(POOL2D_CASES, POOL_IMPLS, "fwd"))
def test_pool2d_fwd(run_benchmark, case, impl):
    _bench(run_benchmark, case, impl, "fwd")


@pytest.mark.parametrize(("case", "impl"), _params(POOL2D_CASES, POOL_IMPLS, "fwd+bwd"))
def test_pool2d_fwdbwd(run_benchmark, case, impl):
    _bench(run_benchmark, case, impl, "fwd+bwd")
