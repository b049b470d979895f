"""Type stubs of the compiled module ``_activation.pyx`` (ReLU forward and backward)."""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def relu_forward(
    x: NDArray[_F],  # IN (E,)
    y: NDArray[_F],  # OUT (E,): x where x > 0 or NaN, else 0
    mask: NDArray[np.uint8],  # OUT (E,): x > 0
    n_threads: int,
) -> None: ...
def relu_in_place(
    x: NDArray[_F],  # IN/OUT (E,): relu(x)
    n_threads: int,
) -> None: ...
def relu_backward(
    gy: NDArray[_F],  # IN (E,)
    mask: NDArray[np.uint8],  # IN (E,)
    gx: NDArray[_F],  # OUT (E,): gy * mask
    n_threads: int,
) -> None: ...
