"""Type stubs of the compiled module ``_linear.pyx`` (fully connected layer)."""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def linear_forward(
    x: NDArray[_F],  # IN (N, IN)
    w: NDArray[_F],  # IN (OUT, IN)
    b: NDArray[_F] | None,  # IN (OUT,)
    y: NDArray[_F],  # OUT (N, OUT)
    rows: int,
    n_threads: int,
) -> None: ...
def linear_backward(
    gy: NDArray[_F],  # IN (N, OUT)
    x: NDArray[_F],  # IN (N, IN)
    w: NDArray[_F],  # IN (OUT, IN)
    gx: NDArray[_F] | None,  # OUT (N, IN)
    gw: NDArray[_F],  # IN/OUT (OUT, IN)
    rows: int,
    features: int,
    n_threads: int,
) -> None: ...
