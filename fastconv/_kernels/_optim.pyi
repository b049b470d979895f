"""Type stubs of the compiled module ``_optim.pyx`` (SGD's update)."""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def sgd_update(
    p: NDArray[_F],  # IN/OUT (E,)
    g: NDArray[_F],  # IN (E,)
    buf: NDArray[_F] | None,  # IN/OUT (E,), or None without momentum
    momentum: float,
    lr: float,
    n_threads: int,
) -> None: ...
