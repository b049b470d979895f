"""Type stubs of the compiled module ``_pool.pyx`` (max, average, Lp, adaptive pooling).

Every float array is C-contiguous, of one float dtype per call (float32 or
float64); indices are C-contiguous int64 flat offsets h * W + w within a plane.
Sizes are validated by the caller (fastconv.functional); the scatter kernels
(max_pool2d_backward, max_unpool2d) check each index themselves, skip those outside
the plane and return how many they skipped. SCRATCH arrays have one row per thread.
"""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def max_pool2d_forward(
    x: NDArray[_F],  # IN (N, C, H, W)
    y: NDArray[_F],  # OUT (N, C, OH, OW)
    idx: NDArray[np.int64] | None,  # OUT (N, C, OH, OW) argmax as h * W + w, or None
    workspace: NDArray[np.intc] | None,  # SCRATCH (threads, OW), or None: int64 tracking
    kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
    dh: int, dw: int, n_threads: int,
) -> None: ...
def max_pool2d_backward(
    gy: NDArray[_F],  # IN (N, C, OH, OW)
    idx: NDArray[np.int64],  # IN (N, C, OH, OW), flat offsets in the plane
    gx: NDArray[_F],  # OUT (N, C, H, W), any contents (zeroed here)
    n_threads: int,
) -> int: ...  # indices outside [0, H * W), skipped
def max_unpool2d(
    y: NDArray[_F],  # IN (N, C, H, W) pooled values
    idx: NDArray[np.int64],  # IN (N, C, H, W), flat offsets in the output plane
    out: NDArray[_F],  # OUT (N, C, OH, OW), any contents (zeroed here)
    n_threads: int,
) -> int: ...  # indices outside [0, OH * OW), skipped
def avg_pool2d_forward(
    x: NDArray[_F],  # IN (N, C, H, W)
    y: NDArray[_F],  # OUT (N, C, OH, OW)
    workspace: NDArray[np.float64],  # SCRATCH (threads, OW)
    kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
    count_include_pad: bool, divisor_override: int, n_threads: int,
) -> None: ...
def avg_pool2d_backward(
    gy: NDArray[_F],  # IN (N, C, OH, OW)
    gx: NDArray[_F],  # OUT (N, C, H, W), any contents (zeroed here)
    workspace: NDArray[_F],  # SCRATCH (threads, OW)
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
