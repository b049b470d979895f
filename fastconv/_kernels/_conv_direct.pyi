"""Type stubs of the compiled module ``_conv_direct.pyx`` (direct convolution loops).

Every array is C-contiguous, of one float dtype per call (the fused ``floating``:
float32 or float64); sizes are validated by the caller (fastconv.functional).
Outputs are written in place.
"""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def conv2d_forward(
    x: NDArray[_F],  # IN (N, C, H, W)
    w: NDArray[_F],  # IN (K, CG, KH, KW)
    b: NDArray[_F] | None,  # IN (K,) or None
    y: NDArray[_F],  # OUT (N, K, OH, OW)
    sh: int, sw: int, pt: int, pl: int, dh: int, dw: int,
    groups: int, n_threads: int,
) -> None: ...
def conv2d_input_grad(
    gy: NDArray[_F],  # IN (N, K, OH, OW)
    w: NDArray[_F],  # IN (K, CG, KH, KW)
    gx: NDArray[_F],  # OUT (N, C, H, W), zero-filled by the caller
    sh: int, sw: int, pt: int, pl: int, dh: int, dw: int,
    groups: int, n_threads: int,
) -> None: ...
def conv2d_weight_grad(
    gy: NDArray[_F],  # IN (N, K, OH, OW)
    x: NDArray[_F],  # IN (N, C, H, W)
    gw: NDArray[_F],  # OUT (K, CG, KH, KW)
    sh: int, sw: int, pt: int, pl: int, dh: int, dw: int,
    groups: int, n_threads: int, gy_nonfinite: bool = ...,
) -> None: ...
def conv2d_bias_grad(
    gy: NDArray[_F],  # IN (N, K, OH, OW)
    gb: NDArray[_F],  # OUT (K,)
    n_threads: int,
) -> None: ...
