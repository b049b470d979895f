"""Type stubs of the compiled module ``_pool.pyx`` (max, average, Lp, adaptive pooling).

Every float array is C-contiguous, of one float dtype per call (float32 or
float64); indices are C-contiguous int64 flat offsets h * W + w within a plane.
Sizes and index ranges are validated by the caller (fastconv.functional).
"""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def max_pool2d_forward(
    x: NDArray[_F],  # IN (N, C, H, W)
    y: NDArray[_F],  # OUT (N, C, OH, OW)
    idx: NDArray[np.int64],  # OUT (N, C, OH, OW) argmax as h * W + w
    kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
    dh: int, dw: int, n_threads: int,
) -> None: ...
def max_pool2d_backward(
    gy: NDArray[_F],  # IN (N, C, OH, OW)
    idx: NDArray[np.int64],  # IN (N, C, OH, OW), each in [0, H * W)
    gx: NDArray[_F],  # OUT (N, C, H, W), zero-filled by the caller
    n_threads: int,
) -> None: ...
def max_unpool2d(
    y: NDArray[_F],  # IN (N, C, H, W) pooled values
    idx: NDArray[np.int64],  # IN (N, C, H, W), each in [0, OH * OW)
    out: NDArray[_F],  # OUT (N, C, OH, OW), zero-filled by the caller
    n_threads: int,
) -> None: ...
def avg_pool2d_forward(
    x: NDArray[_F],  # IN (N, C, H, W)
    y: NDArray[_F],  # OUT (N, C, OH, OW)
    kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
    count_include_pad: bool, divisor_override: int, n_threads: int,
) -> None: ...
def avg_pool2d_backward(
    gy: NDArray[_F],  # IN (N, C, OH, OW)
    gx: NDArray[_F],  # OUT (N, C, H, W), zero-filled by the caller
    kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
    count_include_pad: bool, divisor_override: int, n_threads: int,
) -> None: ...
def lp_pool2d_forward(
    x: NDArray[_F],  # IN (N, C, H, W)
    y: NDArray[_F],  # OUT (N, C, OH, OW)
    p: float, kh: int, kw: int, sh: int, sw: int, n_threads: int,
) -> None: ...
def lp_pool2d_backward(
    gy: NDArray[_F],  # IN (N, C, OH, OW)
    x: NDArray[_F],  # IN (N, C, H, W)
    y: NDArray[_F],  # IN (N, C, OH, OW): the forward's output
    gx: NDArray[_F],  # OUT (N, C, H, W), zero-filled by the caller
    p: float, kh: int, kw: int, sh: int, sw: int, n_threads: int,
) -> None: ...
def adaptive_avg_pool2d_forward(
    x: NDArray[_F],  # IN (N, C, H, W)
    y: NDArray[_F],  # OUT (N, C, OH, OW)
    n_threads: int,
) -> None: ...
def adaptive_avg_pool2d_backward(
    gy: NDArray[_F],  # IN (N, C, OH, OW)
    gx: NDArray[_F],  # OUT (N, C, H, W), zero-filled by the caller
    n_threads: int,
) -> None: ...
