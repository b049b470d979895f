"""Type stubs of the compiled module ``_probe.pyx`` (FMA throughput and copy probes)."""

import numpy as np
from numpy.typing import NDArray

def flops_per_round() -> int: ...
def fma_rounds(rounds: int, n_threads: int) -> float: ...
def copy_slices(
    src: NDArray[np.uint8],  # IN (n,) C-contiguous bytes
    dst: NDArray[np.uint8],  # OUT (n,)
    n_threads: int,
) -> None: ...
