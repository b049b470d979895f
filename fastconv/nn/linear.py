"""Fully connected layer and Flatten."""

from __future__ import annotations

import math

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from fastconv._blas import single_threaded_blas
from fastconv.nn._cache import NeedsForward
from fastconv.nn._init import RNGLike, default_bound, generator, uniform
from fastconv.nn.module import Module, Parameter
from fastconv._validation import as_index

__all__ = ["Linear", "Flatten"]


class Linear(NeedsForward, Module):
    """y = x @ W.T + b, x of shape (N, in_features) (as torch.nn.Linear).

    The products run on a single-threaded BLAS, so they never compete for the CPUs
    with fastconv's OpenMP threads. ``forward(x)`` maps (N, in_features) to
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
        with single_threaded_blas():  # no BLAS threads spinning against fastconv's
            y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        self._save(x)
        return y

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        (x,) = self._take()
        with single_threaded_blas():
            self.weight.grad += grad_out.T @ x
            grad_in = grad_out @ self.weight.data
        if self.bias is not None:
            self.bias.grad += grad_out.sum(axis=0)
        return grad_in

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
