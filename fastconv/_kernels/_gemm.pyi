"""Type stubs of the compiled module ``_gemm.pyx`` (test hooks for the GEMM wrapper and
fastconv's own float32 GEMM)."""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

HAS_OWN_GEMM: bool
OWN_GEMM_MAX_COLUMNS: int
OWN_GEMM_MIN_AREA: int
OWN_GEMM_MIN_ROWS: int

def _gemm_py(
    trans_a: bool,
    trans_b: bool,
    alpha: float,
    a: NDArray[_F],  # IN (M, K), or (K, M) with trans_a
    b: NDArray[_F],  # IN (K, N), or (N, K) with trans_b
    beta: float,
    c: NDArray[_F],  # IN/OUT (M, N): c = alpha * op(a) @ op(b) + beta * c
) -> None: ...
def _own_gemm_py(
    trans_a: bool,
    trans_b: bool,
    alpha: float,
    a: NDArray[np.float32],  # IN (M, K), or (K, M) with trans_a
    b: NDArray[np.float32],  # IN (K, N), or (N, K) with trans_b
    beta: float,
    c: NDArray[np.float32],  # IN/OUT (M, N), as _gemm_py; RuntimeError without AVX2
) -> None: ...
