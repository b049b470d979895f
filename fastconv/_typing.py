"""Types of the public signatures (re-exported by :mod:`fastconv.functional`)."""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
from numpy.typing import NDArray

#: An array of float32 or float64: what every operation returns.
FloatArray: TypeAlias = NDArray[np.floating[Any]]
#: An int, or one int per spatial axis (h, w).
IntPair: TypeAlias = int | tuple[int, int]
#: Convolution padding: an int, (h, w), ((top, bottom), (left, right)) or a word.
Padding: TypeAlias = int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] | str
#: 1-D padding: an int, (left, right) or a word.
Padding1d: TypeAlias = int | tuple[int, int] | str
#: A 1-D int parameter: an int or a 1-tuple, as PyTorch takes.
Int1d: TypeAlias = int | tuple[int]
