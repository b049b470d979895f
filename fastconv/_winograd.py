"""Winograd weight transform and the cache of transformed weights.

The kernels (``_kernels/_conv_winograd.pyx``) take the weights already
transformed: U = G w G^T for every (k, c) filter, laid out as (T, K, C/groups)
with T = (M + 2)^2 transform positions for an M x M output tile. The transform is
computed in float64 and rounded once to the weights' dtype.

Transformed weights are cached so that a layer called again with the same
weights skips the transform. Entries are found by shape, dtype and tile size and
validated by content: each keeps a copy of the weights it was made from and is
used only when ``np.array_equal`` says the weights are unchanged, so weights
changed in place (an optimiser step) or a new array never get stale U.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Filter transforms G ((M + 2) x 3) per output tile size M.
G_MATRICES = {
    2: np.array([[1.0, 0.0, 0.0],
                 [0.5, 0.5, 0.5],
                 [0.5, -0.5, 0.5],
                 [0.0, 0.0, 1.0]]),
    4: np.array([[1 / 4, 0.0, 0.0],
                 [-1 / 6, -1 / 6, -1 / 6],
                 [-1 / 6, 1 / 6, -1 / 6],
                 [1 / 24, 1 / 12, 1 / 6],
                 [1 / 24, -1 / 12, 1 / 6],
                 [0.0, 0.0, 1.0]]),
}

#: Cached transforms at most (least recently used dropped first).
CACHE_SIZE = 8


def transform_weights(w: NDArray[Any], tile: int) -> NDArray[Any]:
    """U (T, K, C/groups) = G w G^T per filter, in w's dtype (computed in float64)."""
    g = G_MATRICES[tile]
    u = np.einsum("ai,kcij,bj->abkc", g, w.astype(np.float64, copy=False), g, optimize=True)
    alpha = tile + 2
    return np.ascontiguousarray(u.reshape(alpha * alpha, w.shape[0], w.shape[1]), dtype=w.dtype)


class TransformCache:
    """Thread-safe LRU of transformed weights, validated by the weights' content."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._lock = threading.Lock()
        # (shape, dtype, tile, serial) -> (copy of w, U); serial tells same-shape entries apart
        self._entries: OrderedDict[tuple[Any, ...], tuple[NDArray[Any], NDArray[Any]]] = (
            OrderedDict())
        self._serial = 0

    def get(self, w: NDArray[Any], tile: int) -> NDArray[Any]:
        """U for ``w``: the cached one if ``w`` equals the weights it was made from."""
        key = (w.shape, w.dtype.str, tile)
        with self._lock:
            for full_key, (saved, u) in reversed(self._entries.items()):
                if full_key[:3] == key and np.array_equal(saved, w):
                    self._entries.move_to_end(full_key)
                    return u
        u = transform_weights(w, tile)
        u.flags.writeable = False
        saved = w.copy()
        with self._lock:
            self._serial += 1
            self._entries[key + (self._serial,)] = (saved, u)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return u

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


#: The cache conv2d uses.
CACHE = TransformCache()
