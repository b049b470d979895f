"""Pooling layers over fastconv.functional.

Each maps x (N, C, H, W) to (N, C, OH, OW) in ``forward`` and takes a gradient
(N, C, OH, OW) back to (N, C, H, W) in ``backward``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from fastconv import functional as F
from fastconv.functional import FloatArray, IntPair
from fastconv._pool_ops import avg_pool2d_runner, max_pool2d_runner
from fastconv.nn._cache import NeedsForward
from fastconv.nn._program import Stale, Step, immutable
from fastconv.nn._init import RNGLike, generator
from fastconv.nn.module import Module, Parameter

__all__ = ["MaxPool2d", "AvgPool2d", "LPPool2d", "Subsampling"]


def _pool_step(options: dict[str, Any], shape: tuple[int, ...], dtype: np.dtype[Any],
               runner: Callable[..., tuple[tuple[int, ...], Callable[..., None]]]) -> Step | None:
    """A pooling layer's step: ``runner(shape, dtype, **options)`` bound, options checked
    on each call (a dict can change in place)."""
    if len(shape) != 4 or not immutable(tuple(options.values())):
        return None
    out_shape, run = runner(shape, dtype, **options)
    as_built = dict(options)

    def step(x: FloatArray, y: FloatArray) -> None:
        if options != as_built:
            raise Stale
        run(x, y)
    return Step(out_shape, step)


class MaxPool2d(NeedsForward, Module):
    """Max pooling layer (as torch.nn.MaxPool2d); backward routes through the argmax.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default: kernel_size.
    padding : int or (int, int), default 0
    dilation : int or (int, int), default 1
    ceil_mode : bool, default False
        As in :func:`fastconv.max_pool2d`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> pool = nn.MaxPool2d(2)
    >>> y = pool(np.arange(16.0).reshape(1, 1, 4, 4))
    >>> y
    array([[[[ 5.,  7.],
             [13., 15.]]]])
    >>> pool.backward(np.ones_like(y))[0, 0]  # to each window's maximum
    array([[0., 0., 0., 0.],
           [0., 1., 0., 1.],
           [0., 0., 0., 0.],
           [0., 1., 0., 1.]])
    """

    options: dict[str, Any]  # keyword arguments of the functional op

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None,
                 padding: IntPair = 0, dilation: IntPair = 1, ceil_mode: bool = False) -> None:
        super().__init__()
        self.options = dict(kernel_size=kernel_size, stride=stride, padding=padding,
                            dilation=dilation, ceil_mode=ceil_mode)

    def forward(self, x: ArrayLike) -> FloatArray:
        y, idx = F.max_pool2d(x, **self.options, return_indices=True)
        self._save(idx, np.shape(x))
        return y

    def _compiled(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Step | None:
        return _pool_step(self.options, shape, dtype, max_pool2d_runner)

    def backward(self, grad_out: ArrayLike) -> FloatArray:
        idx, input_shape = self._take()
        return F.max_pool2d_backward(grad_out, idx, input_shape)


class AvgPool2d(NeedsForward, Module):
    """Average pooling layer (as torch.nn.AvgPool2d).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default: kernel_size.
    padding : int or (int, int), default 0
    ceil_mode : bool, default False
    count_include_pad : bool, default True
    divisor_override : int, optional
        As in :func:`fastconv.avg_pool2d`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> pool = nn.AvgPool2d(2, stride=1)
    >>> y = pool(np.ones((1, 1, 4, 4)))
    >>> y.shape
    (1, 1, 3, 3)
    >>> pool.backward(np.ones_like(y))[0, 0]  # overlapping windows add up
    array([[0.25, 0.5 , 0.5 , 0.25],
           [0.5 , 1.  , 1.  , 0.5 ],
           [0.5 , 1.  , 1.  , 0.5 ],
           [0.25, 0.5 , 0.5 , 0.25]])
    """

    options: dict[str, Any]  # keyword arguments of the functional op

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None,
                 padding: IntPair = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> None:
        super().__init__()
        self.options = dict(kernel_size=kernel_size, stride=stride, padding=padding,
                            ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                            divisor_override=divisor_override)

    def forward(self, x: ArrayLike) -> FloatArray:
        self._save(np.shape(x))
        return F.avg_pool2d(x, **self.options)

    def _compiled(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Step | None:
        return _pool_step(self.options, shape, dtype, avg_pool2d_runner)

    def backward(self, grad_out: ArrayLike) -> FloatArray:
        (input_shape,) = self._take()
        return F.avg_pool2d_backward(grad_out, input_shape, **self.options)


class LPPool2d(NeedsForward, Module):
    """Power-average pooling (p-norm over each window), as torch.nn.LPPool2d.

    Parameters
    ----------
    norm_type : float > 0
        p.
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default: kernel_size.
    ceil_mode : bool, default False
        As in :func:`fastconv.lp_pool2d` (no padding).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> pool = nn.LPPool2d(2, 2)
    >>> y = pool(np.array([[[[3.0, 4.0], [0.0, 0.0]]]]))
    >>> y
    array([[[[5.]]]])
    >>> pool.backward(np.ones_like(y))[0, 0]
    array([[0.6, 0.8],
           [0. , 0. ]])
    """

    options: dict[str, Any]  # keyword arguments of the functional op

    def __init__(self, norm_type: float, kernel_size: IntPair, stride: IntPair | None = None,
                 ceil_mode: bool = False) -> None:
        super().__init__()
        self.norm_type = norm_type
        self.options = dict(kernel_size=kernel_size, stride=stride, ceil_mode=ceil_mode)

    def forward(self, x: ArrayLike) -> FloatArray:
        y = F.lp_pool2d(x, self.norm_type, **self.options)
        self._save(x, y)
        return y

    def backward(self, grad_out: ArrayLike) -> FloatArray:
        x, y = self._take()
        return F.lp_pool2d_backward(grad_out, x, y, self.norm_type, **self.options)


class Subsampling(NeedsForward, Module):
    """LeNet-5's trainable subsampling: average over 2x2 windows, times a per-map
    coefficient, plus a per-map bias (LeCun et al. 1998, layers S2 and S4).

    Parameters
    ----------
    channels : int
        C; one coefficient and one bias per map.
    kernel_size : int, default 2
        Window and stride (2 in LeNet-5).
    dtype : float32 (default) or float64
        Of the parameters.
    rng : None, int or numpy.random.Generator, optional
        Source of the initial values, U(-1/kernel_size, 1/kernel_size).

    Attributes
    ----------
    weight, bias : Parameter, shape (C,)

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> sub = nn.Subsampling(6, rng=0)
    >>> y = sub(np.ones((2, 6, 28, 28), np.float32))
    >>> y.shape, sub.backward(np.ones_like(y)).shape
    ((2, 6, 14, 14), (2, 6, 28, 28))
    >>> sub.bias.grad[:2]  # 2 images x 14 x 14 outputs per map
    array([392., 392.], dtype=float32)
    """

    def __init__(self, channels: int, kernel_size: int = 2, *, dtype: DTypeLike = np.float32,
                 rng: RNGLike = None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        rng = generator(rng)
        bound = 1.0 / kernel_size  # fan-in of one unit is kernel_size**2 inputs summed as one
        self.weight = Parameter(rng.uniform(-bound, bound, channels).astype(dtype))
        self.bias = Parameter(rng.uniform(-bound, bound, channels).astype(dtype))

    def forward(self, x: ArrayLike) -> FloatArray:
        pooled = F.avg_pool2d(x, self.kernel_size)
        self._save(pooled, np.shape(x))
        return pooled * self.weight.data[:, None, None] + self.bias.data[:, None, None]

    def backward(self, grad_out: Any) -> FloatArray:
        pooled, input_shape = self._take()
        self.weight.grad += np.einsum("nchw,nchw->c", grad_out, pooled)
        self.bias.grad += grad_out.sum(axis=(0, 2, 3))
        return F.avg_pool2d_backward(grad_out * self.weight.data[:, None, None], input_shape,
                                     self.kernel_size)
