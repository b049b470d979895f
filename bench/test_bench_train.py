"""pytest-benchmark suite for one LeNet-5 training step, fastconv beside PyTorch CPU.

Run ``pytest bench --benchmark-only -k train``.  One group per case (``"lenet5-train-step
step"``) with a ``fastconv`` row (``fastconv.train.train_step``, the trainer's own step, BLAS
held single-threaded as the trainer holds it) and a ``torch`` row (``lenet_torch.py``'s network
from the same weights), skipped when PyTorch is not installed.  ``extra_info`` holds img/s.
"""

from contextlib import nullcontext

import numpy as np
import pytest

import workloads
from cases import TRAIN_STEP_CASES

DTYPE = "float32"
IMPLS = ("fastconv", "torch")


@pytest.mark.parametrize(("case", "impl"), [
    pytest.param(case, impl, id=f"{case.name}-{impl}",
                 marks=pytest.mark.benchmark(group=f"{case.name} step"))
    for case in TRAIN_STEP_CASES
    for impl in IMPLS
])
def test_train_step(run_benchmark, case, impl):
    if impl == "torch":
        pytest.importorskip("torch")
    wl = workloads.workload(case, dtype=DTYPE)
    (timed,) = wl.bind(np.random.default_rng(0), with_torch=(impl == "torch"))
    fn = timed.torch if impl == "torch" else timed.fastconv
    context = timed.fastconv_context() if impl == "fastconv" else None
    with context if context is not None else nullcontext():
        run_benchmark(fn, timed.work, timed.unit, impl=impl, case=case.describe(), dtype=DTYPE,
                      mode=timed.mode)
