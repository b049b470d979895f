"""PyTorch's default initialisation, drawn from a NumPy Generator."""

import math

import numpy as np


def generator(rng):
    """A numpy Generator from None, a seed or a Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def uniform(rng, bound, shape, dtype):
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def default_bound(fan_in):
    """PyTorch's default for conv and linear layers: kaiming_uniform(a=sqrt(5)) on the
    weight and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) on the bias both give this bound."""
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
