"""Public operations on NCHW arrays: the API of fastconv.

The semantics are those of ``torch.nn.functional`` unless said otherwise. Every
function accepts any array-like (lists, views of any strides, read-only arrays),
never modifies its inputs and returns new NumPy arrays of float32 or float64:
float64 when any operand is float64 or an integer array, else float32.

Dimensions, as in the shapes of every docstring:

- N: images in the batch; C: input channels; K: output channels (filters);
- H, W: input height and width; OH, OW: output height and width;
- KH, KW: kernel height and width; L, OL: input and output length (1-D ops).

The operations live in one module per family and are re-exported here:
convolution and transposed convolution in ``fastconv._conv_ops`` (which asks
``fastconv._plan`` which kernel runs each pass), pooling in
``fastconv._pool_ops``, the 1-D forms in ``fastconv._ops1d``.

Examples
--------
>>> import numpy as np
>>> from fastconv import functional as F
>>> x = np.ones((2, 3, 8, 8), dtype=np.float32)
>>> w = np.ones((4, 3, 3, 3), dtype=np.float32)
>>> y = F.conv2d(x, w, padding=1)
>>> y.shape, y.dtype
((2, 4, 8, 8), dtype('float32'))
>>> F.max_pool2d(y, 2).shape
(2, 4, 4, 4)
"""

from __future__ import annotations

from fastconv import _conv_ops, _ops1d, _pool_ops
from fastconv._conv_ops import *  # noqa: F401,F403  conv2d, conv_transpose2d and backwards
from fastconv._ops1d import *  # noqa: F401,F403  the 1-D forms
from fastconv._plan import ALGORITHMS
from fastconv._pool_ops import *  # noqa: F401,F403  pooling and backwards
# Types of the public signatures (not exported: spell them out or import them from here).
from fastconv._typing import FloatArray, Int1d, IntPair, Padding, Padding1d  # noqa: F401

__all__ = ["ALGORITHMS"]
__all__ += _conv_ops.__all__
__all__ += _pool_ops.__all__
__all__ += _ops1d.__all__
