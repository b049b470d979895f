"""PyTorch's default initialisation, drawn from a NumPy Generator."""

from __future__ import annotations

import math
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import DTypeLike, NDArray

#: What a layer's ``rng`` argument takes: None (fresh entropy), a seed, or a Generator.
RNGLike: TypeAlias = int | np.random.SeedSequence | np.random.Generator | None


def generator(rng: RNGLike) -> np.random.Generator:
    """A numpy Generator from None, a seed or a Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def uniform(rng: np.random.Generator, bound: float, shape: tuple[int, ...],
            dtype: DTypeLike) -> NDArray[Any]:
    """U(-bound, bound) samples of ``shape``, cast to ``dtype``."""
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def default_bound(fan_in: int) -> float:
    """PyTorch's default for conv and linear layers: kaiming_uniform(a=sqrt(5)) on the
    weight and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) on the bias both give this bound."""
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
