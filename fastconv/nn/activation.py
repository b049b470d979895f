"""Element-wise activations and dropout."""

import numpy as np

from fastconv.nn._cache import NeedsForward
from fastconv.nn._init import generator
from fastconv.nn.module import Module

__all__ = ["ReLU", "LeakyReLU", "Tanh", "ScaledTanh", "Sigmoid", "Dropout"]


class ReLU(NeedsForward, Module):
    """max(x, 0)."""

    def forward(self, x):
        x = np.asarray(x)
        positive = x > 0
        self._save(positive)
        return x * positive

    def backward(self, grad_out):
        (positive,) = self._take()
        return grad_out * positive


class LeakyReLU(NeedsForward, Module):
    """x for x > 0, negative_slope * x otherwise."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        x = np.asarray(x)
        slope = np.where(x > 0, 1.0, self.negative_slope).astype(x.dtype)
        self._save(slope)
        return x * slope

    def backward(self, grad_out):
        (slope,) = self._take()
        return grad_out * slope


class Tanh(NeedsForward, Module):
    """tanh(x)."""

    def forward(self, x):
        y = np.tanh(x)
        self._save(y)
        return y

    def backward(self, grad_out):
        (y,) = self._take()
        return grad_out * (1 - y * y)


class ScaledTanh(NeedsForward, Module):
    """A * tanh(S * x); LeNet-5's squashing function uses A = 1.7159, S = 2/3."""

    def __init__(self, amplitude=1.7159, slope=2.0 / 3.0):
        super().__init__()
        self.amplitude = float(amplitude)
        self.slope = float(slope)

    def forward(self, x):
        t = np.tanh(self.slope * np.asarray(x))
        self._save(t)
        return (self.amplitude * t).astype(t.dtype, copy=False)

    def backward(self, grad_out):
        (t,) = self._take()
        return grad_out * (self.amplitude * self.slope * (1 - t * t)).astype(t.dtype, copy=False)


class Sigmoid(NeedsForward, Module):
    """1 / (1 + exp(-x)), computed without overflow."""

    def forward(self, x):
        x = np.asarray(x)
        e = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        self._save(y)
        return y

    def backward(self, grad_out):
        (y,) = self._take()
        return grad_out * y * (1 - y)


class Dropout(NeedsForward, Module):
    """Inverted dropout: in training, zero each element with probability p and scale
    the rest by 1 / (1 - p); the identity in eval mode.

    Parameters
    ----------
    p : float in [0, 1)
    rng : None, int or numpy.random.Generator
        Source of the masks (keep one Generator for reproducible runs).
    """

    def __init__(self, p=0.5, *, rng=None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"p must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = generator(rng)

    def forward(self, x):
        x = np.asarray(x)
        if not self.training or self.p == 0:
            self._save(None)
            return x
        scale = np.where(self.rng.random(x.shape) >= self.p, 1.0 / (1.0 - self.p), 0.0)
        scale = scale.astype(x.dtype)
        self._save(scale)
        return x * scale

    def backward(self, grad_out):
        (scale,) = self._take()
        return grad_out if scale is None else grad_out * scale
