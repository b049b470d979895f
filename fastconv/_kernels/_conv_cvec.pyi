"""Type stubs of the compiled module ``_conv_cvec.pyx`` (channel-vectorised direct
convolution: forward, input gradient and weight gradient).

Every array is C-contiguous, of one float dtype per call (the fused ``floating``:
float32 or float64); sizes are validated by the caller (fastconv.functional).
Outputs are written in place.
"""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def lanes(double_precision: bool) -> int: ...
def pack_weights(
    w: NDArray[_F],  # IN (K, CG, KH * KW)
    packed: NDArray[_F],  # OUT (G, CKK, KP), or (G, KG * KH * KW, CP) with scatter
    scatter: bool,
) -> None: ...
def conv2d_forward(
    x: NDArray[_F],  # IN (N, C, H, W)
    w_packed: NDArray[_F],  # IN (G, CKK, KP)
    b: NDArray[_F] | None,  # IN (K,) or None
    y: NDArray[_F],  # OUT (N, K, OH, OW), every element written
    workspace: NDArray[_F],  # SCRATCH (threads, band elements)
    tap_off: NDArray[np.intp],  # IN (CKK,) offsets of the taps in a band
    kh: int, kw: int, sh: int, sw: int, pt: int, pl: int, dh: int, dw: int,
    rows: int, n_threads: int,
) -> None: ...
def conv2d_forward_max_pool(
    x: NDArray[_F],  # IN (N, C, H, W)
    w_packed: NDArray[_F],  # IN (G, CKK, KP)
    b: NDArray[_F] | None,  # IN (K,) or None
    pooled: NDArray[_F],  # OUT (N, K, OH // 2, OW // 2), every element written
    pooled_idx: NDArray[np.int64] | None,  # OUT same shape: h * OW + w of each maximum
    workspace: NDArray[_F],  # SCRATCH as conv2d_forward's
    tap_off: NDArray[np.intp],  # IN (CKK,) as conv2d_forward's
    oh: int, ow: int, kh: int, kw: int, pt: int, pl: int, dh: int, dw: int,
    rows: int, n_threads: int,  # rows even; stride 1
) -> None: ...
def conv2d_weight_grad(
    gy: NDArray[_F],  # IN (N, K, OH, OW)
    x: NDArray[_F],  # IN (N, C, H, W)
    partials: NDArray[_F],  # OUT (chunks, G, CKK, KP), every element written
    workspace: NDArray[_F],  # SCRATCH (threads, band elements)
    tap_off: NDArray[np.intp],  # IN (CKK,)
    kh: int, kw: int, sh: int, sw: int, pt: int, pl: int, dh: int, dw: int,
    rows: int, n_threads: int,
) -> None: ...
def conv2d_input_grad(
    gy: NDArray[_F],  # IN (N, K, OH, OW)
    w_packed: NDArray[_F],  # IN (G, KG * KH * KW, CP)
    gx: NDArray[_F],  # OUT (N, C, H, W), every element written
    workspace: NDArray[_F],  # SCRATCH (threads, HP * WP * CP)
    kh: int, kw: int, sh: int, sw: int, pt: int, pl: int, dh: int, dw: int,
    n_threads: int,
) -> None: ...
