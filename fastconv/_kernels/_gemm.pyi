"""Type stubs of the compiled module ``_gemm.pyx`` (test hook for the GEMM wrapper)."""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def _gemm_py(
    trans_a: bool,
    trans_b: bool,
    alpha: float,
    a: NDArray[_F],  # IN (M, K), or (K, M) with trans_a
    b: NDArray[_F],  # IN (K, N), or (N, K) with trans_b
    beta: float,
    c: NDArray[_F],  # IN/OUT (M, N): c = alpha * op(a) @ op(b) + beta * c
) -> None: ...
