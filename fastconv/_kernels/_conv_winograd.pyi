"""Type stubs of the compiled module ``_conv_winograd.pyx`` (Winograd 3x3 stride-1 conv).

Every array is C-contiguous, of one float dtype per call (float32 or float64);
sizes are validated by the caller (fastconv.functional). ``u`` holds the weights
transformed by ``fastconv._winograd.transform_weights``: (T, K, CG) with
T = (tile + 2) ** 2; ``workspace`` is (threads, T * (CG + KG) * block).
"""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def conv2d_forward(
    x: NDArray[_F],  # IN (N, C, H, W)
    u: NDArray[_F],  # IN (T, K, CG)
    b: NDArray[_F] | None,  # IN (K,) or None
    y: NDArray[_F],  # OUT (N, K, OH, OW)
    workspace: NDArray[_F],  # SCRATCH (threads, T * (CG + KG) * block)
    pt: int, pl: int, groups: int, tile: int, block: int, n_threads: int,
) -> None: ...
def transform_filters(
    wt: NDArray[_F],  # IN (9, F) tap-major taps of F 3x3 filters
    g: NDArray[np.float64],  # IN (A, 3) filter transform
    u: NDArray[_F],  # OUT (A * A, F)
    n_threads: int,
) -> None: ...
def workspace_elements(cg: int, kg: int, tile: int, block: int) -> int: ...
def split_phases(
    x: NDArray[_F],  # IN (N, C, H, W)
    out: NDArray[_F],  # OUT (P * N, C, HP, WP)
    offsets: NDArray[np.intp],  # IN (P, 2)
    dh: int, dw: int, n_threads: int,
) -> None: ...
def merge_phases(
    stacked: NDArray[_F],  # IN (P * N, K, HP, WP)
    y: NDArray[_F],  # OUT (N, K, OH, OW)
    offsets: NDArray[np.intp],  # IN (P, 2)
    dh: int, dw: int, n_threads: int,
) -> None: ...
