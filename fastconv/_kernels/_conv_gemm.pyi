"""Type stubs of the compiled module ``_conv_gemm.pyx`` (im2col + GEMM over bands).

Every array is C-contiguous, of one float dtype per call (float32 or float64);
sizes are validated by the caller (fastconv.functional). ``workspace`` holds one
column buffer per thread, (threads, depth * ROWS * OW), the depth CKK except in the
forward (``forward_depth``); ``rows`` is the band height.
"""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def forward_depth(cg: int, taps: int) -> int: ...
def conv2d_forward(
    x: NDArray[_F],  # IN (N, C, H, W)
    w: NDArray[_F],  # IN (K, CG, KH, KW)
    b: NDArray[_F] | None,  # IN (K,) or None
    y: NDArray[_F],  # OUT (N, K, OH, OW)
    workspace: NDArray[_F],  # SCRATCH (threads, forward_depth * P), or IN packed columns (N * G, CKK * OH * OW)
    sh: int, sw: int, pt: int, pl: int, dh: int, dw: int,
    groups: int, rows: int, kblock: int, n_threads: int, pointwise: bool, packed: bool,
) -> None: ...
def conv2d_forward_column_kernel(
    x: NDArray[_F],  # IN (N, C, H, W)
    w: NDArray[_F],  # IN (K, CG, KH, 1)
    b: NDArray[_F] | None,  # IN (K,) or None
    y: NDArray[_F],  # OUT (N, K, OH, W)
    w_taps: NDArray[_F],  # SCRATCH (KH, K, CG)
    pt: int, dh: int, groups: int, rows: int, n_threads: int,
) -> None: ...
def conv2d_input_grad(
    gy: NDArray[_F],  # IN (N, K, OH, OW)
    w: NDArray[_F],  # IN (K, CG, KH, KW)
    b: NDArray[_F] | None,  # IN (C,): added per channel of gx
    gx: NDArray[_F],  # OUT (N, C, H, W), overwritten unless zeroed
    workspace: NDArray[_F],  # SCRATCH (threads, CKK * P)
    sh: int, sw: int, pt: int, pl: int, dh: int, dw: int,
    groups: int, rows: int, cblock: int, n_threads: int, pointwise: bool, zeroed: bool,
) -> None: ...
def conv2d_weight_grad(
    gy: NDArray[_F],  # IN (N, K, OH, OW)
    x: NDArray[_F],  # IN (N, C, H, W)
    gw: NDArray[_F],  # OUT (K, CG, KH, KW)
    partials: NDArray[_F],  # SCRATCH (k_chunks, K * CKK); unused when k_chunks == 1
    workspace: NDArray[_F],  # SCRATCH (threads, CB * KH * KW * P), or IN packed columns
    sh: int, sw: int, pt: int, pl: int, dh: int, dw: int,
    groups: int, rows: int, cblock: int, k_chunks: int, n_threads: int, pointwise: bool,
    packed: bool,
) -> None: ...
def im2col_images(
    x: NDArray[_F],  # IN (N, C, H, W)
    cols: NDArray[_F],  # OUT (N * G, CKK * OH * OW)
    kh: int, kw: int, sh: int, sw: int, pt: int, pl: int, dh: int, dw: int,
    groups: int, oh_count: int, ow_count: int, n_threads: int,
) -> None: ...
