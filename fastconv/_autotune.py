"""Opt-in autotuning of ``algorithm="auto"``: time the candidates once per shape.

By default ``"auto"`` follows fixed rules measured on the benchmark suite
(``fastconv.functional._auto_algorithm``). With autotuning on, the first call of each
pass (forward, input gradient, weight gradient) for a new shape, dtype and thread
count times every algorithm that can run it on scratch outputs, remembers the fastest,
and every later call of that key uses it without timing, as ``torch.backends.cudnn.benchmark``
does. The algorithms agree within rounding, not bit for bit, so with autotuning on the
choice (and the last bits of results) may differ between runs and machines; it stays
fixed within a process once made.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Callable, Hashable, Sequence

_lock = threading.Lock()
_enabled = False
_choices: dict[Hashable, str] = {}
# A candidate slower than this (seconds) on its first run is not run a second time.
_REPEAT_BELOW_S = 0.05


def set_autotune(enabled: bool) -> bool:
    """Turn autotuning of ``algorithm="auto"`` on or off; return the previous setting.

    Parameters
    ----------
    enabled : bool
        True: the first call of each convolution pass for a new shape, dtype and
        thread count times every applicable algorithm and keeps the fastest for
        later calls. False (the default): ``"auto"`` follows fixed shape rules.

    Returns
    -------
    bool
        The setting before this call.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> previous = fastconv.set_autotune(True)
    >>> fastconv.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))).shape
    (1, 1, 2, 2)
    >>> len(fastconv.autotune_choices()) >= 1
    True
    >>> fastconv.set_autotune(previous)
    True
    """
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    with _lock:
        previous, _enabled = _enabled, enabled
    return previous


def get_autotune() -> bool:
    """Whether autotuning of ``algorithm="auto"`` is on (see :func:`set_autotune`).

    Examples
    --------
    >>> import fastconv
    >>> fastconv.get_autotune()
    False
    """
    return _enabled


def autotune_choices() -> dict[Hashable, str]:
    """A copy of the algorithms autotuning chose so far, by (pass, shape, ...) key.

    Examples
    --------
    >>> import fastconv
    >>> isinstance(fastconv.autotune_choices(), dict)
    True
    """
    with _lock:
        return dict(_choices)


def clear_autotune_cache() -> None:
    """Forget every autotuned choice: the next call of each shape times again.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.clear_autotune_cache()
    >>> fastconv.autotune_choices()
    {}
    """
    with _lock:
        _choices.clear()


def _seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    best = time.perf_counter() - start
    if best < _REPEAT_BELOW_S:  # a second, warm run for all but the slow candidates
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def choose(key: Hashable, candidates: Sequence[str], run: Callable[[str], object]) -> str:
    """The fastest of ``candidates`` for ``key``: cached, or timed now with ``run(name)``.

    Two threads tuning the same new key at once may both time it; the first to
    finish decides, so every later call agrees.
    """
    with _lock:
        chosen = _choices.get(key)
    if chosen is not None:
        return chosen
    if len(candidates) == 1:
        timings = {candidates[0]: 0.0}
    else:
        timings = {name: _seconds(functools.partial(run, name)) for name in candidates}
    fastest = min(candidates, key=timings.__getitem__)
    with _lock:
        return _choices.setdefault(key, fastest)
