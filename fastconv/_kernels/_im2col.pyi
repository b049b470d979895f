"""Type stubs of the compiled module ``_im2col.pyx`` (test hooks for im2col / col2im)."""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def _im2col_py(
    x: NDArray[_F],  # IN (N, C, H, W)
    n: int, c0: int, channels: int, kh: int, kw: int, sh: int, sw: int,
    pt: int, pl: int, dh: int, dw: int, oh0: int, oh1: int, ow_count: int,
    col: NDArray[_F],  # OUT (S, channels * KH * KW * (oh1 - oh0) * ow_count): row 0 is filled
) -> None: ...
def _col2im_py(
    col: NDArray[_F],  # IN (S, channels * KH * KW * (oh1 - oh0) * ow_count): row 0 is read
    n: int, c0: int, channels: int, kh: int, kw: int, sh: int, sw: int,
    pt: int, pl: int, dh: int, dw: int, oh0: int, oh1: int, ow_count: int,
    gx: NDArray[_F],  # OUT (N, C, H, W), accumulated into
) -> None: ...
