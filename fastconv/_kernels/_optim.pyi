"""Type stubs of the compiled module ``_optim.pyx`` (SGD's update)."""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def sgd_update_many(
    params: list[NDArray[_F]],  # IN/OUT (E_i,) each, one dtype
    grads: list[NDArray[_F]],  # IN (E_i,) each
    buffers: list[NDArray[_F] | None],  # IN/OUT (E_i,) each, or None (no momentum)
    momentum: float,
    lr: float,
    n_threads: int,
) -> None: ...
