"""Winograd weight transform and the cache of transformed weights.

The kernels (``_kernels/_conv_winograd.pyx``) take the weights already transformed:
U = G w G^T for every (k, c) filter, laid out as (T, K, C/groups) with T = (M + 2)^2
transform positions for an M x M output tile. The transform is one GEMM with the
Kronecker product of G with itself, computed in float64 and rounded once to the
weights' dtype.

The cache keeps transforms so that a layer called again skips the transform; it is
bounded by bytes (``CACHE_BYTES``), least recently used dropped first, so a network
of any depth keeps every layer's transform while they fit. An entry is found in one
step by the array's address, shape, strides and dtype, and is used only while it is
known to be fresh, in one of two ways:

- by identity and version: a caller that knows who owns the memory and a counter
  that every in-place change advances (``fastconv.torch``: the parameter tensor and
  its ``_version``) says so with :func:`known_weights`; the entry keeps a weak
  reference to the owner and the version, and serves only that owner at that
  version. Nothing is compared, and a new owner at a reused address never matches.
- by value: NumPy arrays carry no version counter, so otherwise the entry keeps a
  copy of the weights and is used only while they still equal it.

Weights changed in place, or a new array at a reused address, never get a stale
transform. (Changes PyTorch itself does not count, through ``tensor.data`` or a
NumPy view, are not seen by the first way, as autograd does not see them either.)
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from fastconv import _config
from fastconv._dispatch import _conv_winograd

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

#: Bytes of transforms (and of the weights' copies that validate them) kept at most:
#: every 3x3 layer of ResNet-50, forward and input gradient, fits in float32.
CACHE_BYTES = 512 << 20


def transform_weights(w: NDArray[Any], tile: int) -> NDArray[Any]:
    """U (T, K, C/groups) = G w G^T per filter, in w's dtype (computed in float64 by
    the kernel, in parallel: a training step transforms every layer's new weights)."""
    g = G_MATRICES[tile]
    k, c = w.shape[:2]
    u = np.empty((g.shape[0] ** 2, k * c), dtype=w.dtype)
    taps = np.ascontiguousarray(w.reshape(k * c, 9).T)  # (9, K * C): filters innermost
    _conv_winograd.transform_filters(taps, g, u, _config.effective_n_threads())
    return u.reshape(g.shape[0] ** 2, k, c)


@dataclass
class _Entry:
    u: NDArray[Any]
    nbytes: int
    saved: NDArray[Any] | None = None  # by value: the weights when u was made
    owner: weakref.ref[Any] | None = None  # by identity: who held the weights,
    version: Any = None  # and their version then

    def fresh_for(self, w: NDArray[Any], known: tuple[Any, Any] | None) -> bool:
        """Whether u is the transform of ``w`` now; ``known``: (owner, version) of w
        when the caller knows them."""
        if self.owner is not None:
            return (known is not None and self.owner() is known[0]
                    and self.version == known[1])
        return self.saved is not None and np.array_equal(self.saved, w)


_known = threading.local()  # .weights: (address, owner, version) set by known_weights


class known_weights:
    """Context manager: within the block, this thread's lookups of the array ``w`` trust
    ``owner``'s identity and ``version`` (which must change whenever w's values do)
    instead of comparing values (see the module notes). ``owner`` must accept weak
    references. A class, not a generator: every fastconv.torch layer call enters one."""

    __slots__ = ("_weights", "_previous")

    def __init__(self, w: NDArray[Any], owner: Any, version: Any,
                 address: int | None = None) -> None:
        """``address``: w's data address where the caller knows it (a tensor's
        ``data_ptr()``: NumPy's takes a dict made for the call)."""
        if address is None:
            address = w.__array_interface__["data"][0]
        self._weights = (address, owner, version)

    def __enter__(self) -> None:
        self._previous = getattr(_known, "weights", None)
        _known.weights = self._weights

    def __exit__(self, *exc: object) -> Literal[False]:
        _known.weights = self._previous
        return False


class TransformCache:
    """Thread-safe LRU of transformed weights, bounded by bytes (see the module notes)."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._bytes = 0

    def get(self, w: NDArray[Any], tile: int, role: str = "forward",
            prepare: Callable[[], NDArray[Any]] | None = None) -> NDArray[Any]:
        """U for the weights ``w``: from the cache when they are known and unchanged.

        Parameters
        ----------
        w : ndarray (K, C/groups, 3, 3)
            The weights as the caller holds them.
        tile : int
            Output tile size M.
        role : str
            What ``prepare`` makes of ``w`` (the kernel of the input gradient is w
            rotated, its channel axes swapped): transforms of one ``w`` differ by role.
        prepare : callable, optional
            Returns the weights to transform (default: ``w`` itself); not called on
            a hit.
        """
        address = w.__array_interface__["data"][0]
        key = (address, role, tile, w.dtype.str, w.shape, w.strides)
        known = getattr(_known, "weights", None)
        known = known[1:] if known is not None and known[0] == address else None
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.fresh_for(w, known):
                self._entries.move_to_end(key)
                return entry.u
        u = transform_weights(prepare() if prepare is not None else w, tile)
        u.flags.writeable = False
        if known is not None:
            entry = _Entry(u, u.nbytes, owner=weakref.ref(known[0]), version=known[1])
        else:
            entry = _Entry(u, u.nbytes + w.nbytes, saved=w.copy())
        self._store(key, entry)
        return u

    def _store(self, key: Hashable, entry: _Entry) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[key] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes held: the transforms and the copies of the weights that validate some."""
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


#: The cache conv2d uses.
CACHE = TransformCache()
