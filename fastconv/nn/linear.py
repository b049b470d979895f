"""Fully connected layer and Flatten."""

import numpy as np

from fastconv._blas import single_threaded_blas
from fastconv.nn._cache import NeedsForward
from fastconv.nn._init import default_bound, generator, uniform
from fastconv.nn.module import Module, Parameter
from fastconv._validation import as_index

__all__ = ["Linear", "Flatten"]


class Linear(NeedsForward, Module):
    """y = x @ W.T + b, x of shape (N, in_features) (as torch.nn.Linear).

    The products run on a single-threaded BLAS, so they never compete for the CPUs
    with fastconv's OpenMP threads.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    dtype : float32 (default) or float64
    rng : None, int or numpy.random.Generator
    """

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, rng=None):
        super().__init__()
        in_features = as_index(in_features, "in_features", 1)
        out_features = as_index(out_features, "out_features", 1)
        rng = generator(rng)
        bound = default_bound(in_features)
        self.weight = Parameter(uniform(rng, bound, (out_features, in_features), dtype))
        self.bias = Parameter(uniform(rng, bound, (out_features,), dtype)) if bias else None

    def forward(self, x):
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

    def backward(self, grad_out):
        (x,) = self._take()
        with single_threaded_blas():
            self.weight.grad += grad_out.T @ x
            grad_in = grad_out @ self.weight.data
        if self.bias is not None:
            self.bias.grad += grad_out.sum(axis=0)
        return grad_in

    def extra_repr(self):
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}"


class Flatten(NeedsForward, Module):
    """Flatten dimensions start_dim.. into one: (N, C, H, W) -> (N, C*H*W)."""

    def __init__(self, start_dim=1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        x = np.asarray(x)
        self._save(x.shape)
        return x.reshape(*x.shape[: self.start_dim], -1)

    def backward(self, grad_out):
        (shape,) = self._take()
        return grad_out.reshape(shape)
