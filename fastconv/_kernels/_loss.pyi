"""Type stubs of the compiled module ``_loss.pyx`` (softmax cross-entropy)."""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def cross_entropy_forward(
    logits: NDArray[_F],  # IN (N, C)
    target: NDArray[np.intp],  # IN (N,): class indices
    log_probs: NDArray[_F],  # OUT (N, C)
) -> tuple[float, int]: ...
def cross_entropy_backward(
    log_probs: NDArray[_F],  # IN (N, C)
    target: NDArray[np.intp],  # IN (N,): class indices in [0, C)
    scale: float,
    grad: NDArray[_F],  # OUT (N, C)
) -> None: ...
