"""Fully connected layer and Flatten."""

from __future__ import annotations

import math

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from fastconv import _config
from fastconv._blas import single_threaded_blas
from fastconv._dispatch import _linear, specialised
from fastconv.nn._cache import NeedsForward
from fastconv.nn._program import Stale, Step, parameter_check
from fastconv.nn._init import RNGLike, default_bound, generator, uniform
from fastconv.nn.module import Module, Parameter
from fastconv._validation import as_index

__all__ = ["Linear", "Flatten"]

# The products run as blocks of rows of the batch (and of output features, for the
# weight gradient), at most MAX_BLOCKS of them, each a single-threaded GEMM on one of
# fastconv's threads, a thread per WORK_PER_THREAD multiply-adds. The forward's blocks
# hold at least FORWARD_ROWS rows (each block packs the whole weight matrix again), the
# backward's at least BACKWARD_ROWS. LeNet-5's 400 -> 120 layer at batch 64 on 2
# threads: forward 86 -> 48 us, backward 140 -> 57 us against one BLAS call (blocks of
# 16 rows forward: 61 us; 32-row blocks backward: 95 us).
FORWARD_ROWS, BACKWARD_ROWS, MAX_BLOCKS = 32, 16, 16
WORK_PER_THREAD = 1 << 17


def _block(count: int, least: int) -> int:
    """Rows per block of ``count`` rows (from the shape alone: results do not depend on
    the thread count)."""
    return max(least, -(-count // MAX_BLOCKS))


def _threads(macs: int) -> int:
    return _config.threads_for(macs, WORK_PER_THREAD)


class Linear(NeedsForward, Module):
    """y = x @ W.T + b, x of shape (N, in_features) (as torch.nn.Linear).

    The products run as blocks of rows, each a single-threaded BLAS GEMM on one of
    fastconv's threads, so they never compete for the CPUs with BLAS's own threads;
    results do not depend on the thread count. ``forward(x)`` maps (N, in_features) to
    (N, out_features); ``backward(grad_out)`` takes (N, out_features), adds into
    ``weight.grad`` and ``bias.grad`` and returns (N, in_features).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    dtype : float32 (default) or float64
        Of the parameters.
    rng : None, int or numpy.random.Generator, optional
        Source of PyTorch's default initial values, U(-b, b) with
        b = 1 / sqrt(in_features).

    Attributes
    ----------
    weight : Parameter, shape (out_features, in_features)
    bias : Parameter, shape (out_features,), or None

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> fc = nn.Linear(4, 3, rng=0)
    >>> y = fc(np.ones((2, 4), np.float32))
    >>> y.shape, y.dtype
    ((2, 3), dtype('float32'))
    >>> fc.backward(np.ones_like(y)).shape
    (2, 4)
    >>> fc.weight.grad.shape, fc.bias.grad
    ((3, 4), array([2., 2., 2.], dtype=float32))
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype: DTypeLike = np.float32, rng: RNGLike = None) -> None:
        super().__init__()
        in_features = as_index(in_features, "in_features", 1)
        out_features = as_index(out_features, "out_features", 1)
        rng = generator(rng)
        bound = default_bound(in_features)
        self.weight = Parameter(uniform(rng, bound, (out_features, in_features), dtype))
        self.bias = Parameter(uniform(rng, bound, (out_features,), dtype)) if bias else None

    def forward(self, x: ArrayLike) -> NDArray[Any]:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.weight.shape[1]:
            raise ValueError(
                f"Linear expects x of shape (N, {self.weight.shape[1]}), got {x.shape}"
            )
        w = self.weight.data
        b = None if self.bias is None else self.bias.data
        if self._kernel_takes(x, w, b):
            x = np.ascontiguousarray(x)
            y = np.empty((x.shape[0], w.shape[0]), dtype=w.dtype)
            with single_threaded_blas():
                _linear.linear_forward(x, w, b, y, _block(x.shape[0], FORWARD_ROWS),
                                       _threads(x.size * w.shape[0]))
        else:  # mixed dtypes, empty shapes, arrays replaced by non-contiguous ones
            with single_threaded_blas():
                y = x @ w.T
            if b is not None:
                y += b
        self._save(x)
        return y

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        (x,) = self._take()
        w, gw = self.weight.data, self.weight.grad
        gy = np.asarray(grad_out)
        if (self._kernel_takes(x, w, None) and gy.dtype == w.dtype
                and gw.dtype == w.dtype and gw.flags.c_contiguous and gy.size):
            gy, x = np.ascontiguousarray(gy), np.ascontiguousarray(x)
            grad_in = np.empty(x.shape, dtype=w.dtype)
            with single_threaded_blas():
                _linear.linear_backward(gy, x, w, grad_in, gw, _block(gy.shape[0], BACKWARD_ROWS),
                                        _block(gy.shape[1], BACKWARD_ROWS),
                                        _threads(x.size * w.shape[0]))
        else:
            with single_threaded_blas():
                self.weight.grad += gy.T @ x
                grad_in = gy @ w
        if self.bias is not None:
            self.bias.grad += gy.sum(axis=0)
        return grad_in

    def _compiled(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Step | None:
        w = self.weight.data
        b = None if self.bias is None else self.bias.data
        if (len(shape) != 2 or shape[1] != w.shape[1] or w.dtype != dtype
                or not self._kernel_takes(np.empty((1, 1), dtype), w, b)):
            return None
        n = shape[0]
        args = (_block(n, FORWARD_ROWS), _threads(n * w.shape[1] * w.shape[0]))
        linear = specialised(_linear.linear_forward, dtype)
        same_arrays = parameter_check(self.weight, self.bias)

        def step(x: NDArray[Any], y: NDArray[Any]) -> None:
            if not same_arrays():
                raise Stale
            linear(x, w, b, y, *args)
        # a batch of one is a dot product per output: no BLAS (see _linear.pyx)
        return Step((n, w.shape[0]), step, uses_blas=n > 1)

    @staticmethod
    def _kernel_takes(x: NDArray[Any], w: NDArray[Any], b: NDArray[Any] | None) -> bool:
        """Whether the blocked kernel applies: one float dtype throughout, C-contiguous
        parameters, non-empty operands."""
        return (x.dtype == w.dtype and w.dtype in (np.float32, np.float64) and x.size > 0
                and w.size > 0 and w.flags.c_contiguous
                and (b is None or (b.dtype == w.dtype and b.flags.c_contiguous)))

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}"


class Flatten(NeedsForward, Module):
    """Flatten dimensions start_dim.. into one: (N, C, H, W) -> (N, C*H*W).

    ``backward(grad_out)`` reshapes the gradient back to the input's shape.

    Parameters
    ----------
    start_dim : int, default 1
        First dimension flattened (the batch axis 0 is kept by default).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> flat = nn.Flatten()
    >>> y = flat(np.zeros((2, 3, 4, 5)))
    >>> y.shape, flat.backward(np.ones_like(y)).shape
    ((2, 60), (2, 3, 4, 5))
    """

    def __init__(self, start_dim: int = 1) -> None:
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x: ArrayLike) -> NDArray[Any]:
        x = np.asarray(x)
        self._save(x.shape)
        # the product, not -1: an empty batch has no size to infer it from
        return x.reshape(*x.shape[: self.start_dim], math.prod(x.shape[self.start_dim:]))

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        (shape,) = self._take()
        return grad_out.reshape(shape)

    def _compiled(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Step | None:
        out = (*shape[: self.start_dim], math.prod(shape[self.start_dim:]))
        return Step(out, lambda x: x.reshape(out), view=True)
