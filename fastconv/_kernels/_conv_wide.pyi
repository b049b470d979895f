"""Type stubs of the compiled module ``_conv_wide.pyx`` (stride-1 direct convolution
over wide rows).

Every array is C-contiguous, of one float dtype per call (the fused ``floating``:
float32 or float64); sizes are validated by the caller (fastconv.functional).
Outputs are written in place.
"""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def workspace_size(cg: int, oh: int, ow: int, kh: int, kw: int, dh: int, dw: int,
                   sh: int = 1, sw: int = 1) -> int: ...
def conv2d_forward(
    x: NDArray[_F],  # IN (N, C, H, W)
    w: NDArray[_F],  # IN (K, CG, KH, KW)
    b: NDArray[_F] | None,  # IN (K,) or None
    y: NDArray[_F],  # OUT (N, K, OH, OW), every element written
    workspace: NDArray[_F],  # SCRATCH (threads, workspace_size(...))
    pt: int, pl: int, dh: int, dw: int, groups: int, n_threads: int,
    sh: int = 1, sw: int = 1,  # a stride other than 1 only with dh = dw = 1
) -> None: ...
def weight_grad_workspace_size(cg: int, kg: int, oh: int, ow: int, kh: int, kw: int,
                               dh: int, dw: int, sh: int = 1, sw: int = 1) -> int: ...
def conv2d_weight_grad(
    gy: NDArray[_F],  # IN (N, K, OH, OW)
    x: NDArray[_F],  # IN (N, C, H, W)
    partials: NDArray[np.float64],  # OUT (chunks, G * KG * CG * KH * KW), every element
    workspace: NDArray[_F],  # SCRATCH (threads, weight_grad_workspace_size(...))
    kh: int, kw: int, pt: int, pl: int, dh: int, dw: int, groups: int, n_threads: int,
    sh: int = 1, sw: int = 1,  # a stride other than 1 only with dh = dw = 1
) -> None: ...
def conv2d_forward_max_pool(
    x: NDArray[_F],  # IN (N, C, H, W)
    w: NDArray[_F],  # IN (K, CG, KH, KW)
    b: NDArray[_F] | None,  # IN (K,) or None
    pooled: NDArray[_F],  # OUT (N, K, OH // 2, OW // 2), every element written
    pooled_idx: NDArray[np.int64] | None,  # OUT same shape: h * OW + w of each maximum
    workspace: NDArray[_F],  # SCRATCH (threads, workspace_size(...))
    oh: int, ow: int, pt: int, pl: int, dh: int, dw: int, groups: int, n_threads: int,
) -> None: ...
def conv2d_weight_grad_max_pool(
    pooled_gy: NDArray[_F],  # IN (N, K, OH // 2, OW // 2)
    pooled_idx: NDArray[np.int64],  # IN same shape: h * OW + w
    x: NDArray[_F],  # IN (N, C, H, W)
    partials: NDArray[np.float64],  # OUT as conv2d_weight_grad's
    workspace: NDArray[_F],  # SCRATCH as conv2d_weight_grad's
    oh: int, ow: int, kh: int, kw: int, pt: int, pl: int, dh: int, dw: int, groups: int,
    n_threads: int,
) -> int: ...  # indices outside [0, OH * OW), skipped
