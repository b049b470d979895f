"""Thread policy: how many OpenMP threads the kernels use.

One process-wide knob for the whole package: ``set_num_threads(n)``, and the
context manager ``threads(n)`` that sets it for a block and restores it on exit
(like torch.set_num_threads and threadpoolctl, it applies to every Python thread).
Default, read at import: ``FASTCONV_NUM_THREADS``, else ``OMP_NUM_THREADS``,
else the CPUs this process may use (affinity mask and cgroup CPU quota).

Also the floating-point mode of the kernels' threads: ``set_flush_denormal``.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import warnings
from collections.abc import Iterator

import numpy as np

from fastconv._kernels import _cpu
from fastconv._validation import as_index

__all__ = [
    "get_num_threads",
    "set_num_threads",
    "threads",
    "effective_n_threads",
    "available_cpus",
    "get_flush_denormal",
    "set_flush_denormal",
]

def _cgroup_cpu_limit() -> int | None:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max`` or v1 cfs files), or None."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        if quota > 0 and period > 0:
            return max(1, math.ceil(quota / period))
    except (OSError, ValueError):
        pass
    return None


def available_cpus() -> int:
    """CPUs this process may really use: affinity mask, capped by a cgroup CPU quota.

    Returns
    -------
    int
        At least 1.

    Examples
    --------
    >>> from fastconv._config import available_cpus
    >>> available_cpus() >= 1
    True
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        count = min(count, limit)
    return max(1, count)


def _default_from_environment() -> int:
    for variable in ("FASTCONV_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "").strip()
        if not value:
            continue
        # OMP_NUM_THREADS may be a nesting list like "4,2": the first level is ours.
        first = value.split(",")[0].strip()
        try:
            n = int(first)
        except ValueError:
            raise ValueError(
                f"environment variable {variable} must be a positive int, got {value!r}"
            ) from None
        if n < 1:
            raise ValueError(f"environment variable {variable} must be a positive int, got {value!r}")
        return n
    return available_cpus()


_global_threads = _default_from_environment()


def get_num_threads() -> int:
    """Number of OpenMP threads the kernels use.

    Returns
    -------
    int
        The value set by ``set_num_threads`` or an active ``threads(n)``, else the
        default read at import: ``FASTCONV_NUM_THREADS``, else ``OMP_NUM_THREADS``
        (its first level), else :func:`available_cpus`.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.get_num_threads() >= 1
    True
    """
    return _global_threads


def set_num_threads(n: int) -> None:
    """Set the number of threads the kernels use (process-wide).

    Results do not depend on it beyond float rounding.

    Parameters
    ----------
    n : int
        Positive thread count. It may exceed the CPU count (the threads then share CPUs).

    Raises
    ------
    TypeError
        ``n`` is not an int (bool and float are refused).
    ValueError
        ``n`` is below 1.

    Warns
    -----
    RuntimeWarning
        ``n > 1`` in a process forked after OpenMP threads had started: its
        kernels keep running on one thread (see :func:`forked_after_openmp`).

    Examples
    --------
    >>> import fastconv
    >>> before = fastconv.get_num_threads()
    >>> fastconv.set_num_threads(2)
    >>> fastconv.get_num_threads()
    2
    >>> fastconv.set_num_threads(before)
    """
    global _global_threads
    _global_threads = as_index(n, "n", 1)
    if _global_threads > 1 and _forked_after_openmp:
        warnings.warn(
            "fastconv: this process was forked after OpenMP threads had started, and "
            "OpenMP cannot start threads again here: the kernels keep running on one "
            "thread. Use multiprocessing's 'spawn' or 'forkserver' start method for "
            "parallel workers.",
            RuntimeWarning,
            stacklevel=2,
        )


@contextlib.contextmanager
def threads(n: int) -> Iterator[int]:
    """Context manager: use ``n`` threads inside the block, then restore the previous count.

    Process-wide, like ``set_num_threads``: Python threads started inside the block
    see it too. Nested blocks restore in order.

    Parameters
    ----------
    n : int
        Positive thread count, as for :func:`set_num_threads`.

    Yields
    ------
    int
        ``n``.

    Examples
    --------
    >>> import fastconv
    >>> with fastconv.threads(1):
    ...     fastconv.get_num_threads()
    1
    """
    global _global_threads
    n = as_index(n, "n", 1)
    previous = _global_threads
    _global_threads = n
    try:
        yield n
    finally:
        _global_threads = previous


def effective_n_threads() -> int:
    """The thread count to pass to a parallel kernel (always >= 1).

    1 in a process forked after OpenMP threads had started: GNU libgomp's thread pool
    does not survive ``fork``, and a parallel region there would wait forever.

    Examples
    --------
    >>> from fastconv._config import effective_n_threads, threads
    >>> with threads(1):
    ...     effective_n_threads()
    1
    """
    global _openmp_started, _largest_team
    n = 1 if _forked_after_openmp else get_num_threads()
    if n > 1:
        _openmp_started = True
        _largest_team = max(_largest_team, n)
    if _flush_state[0]:  # set_flush_denormal was called: bring this thread's team up to date
        _sync_flush_denormal(n)
    return n


def threads_for(work: int, per_thread: int, n_threads: int | None = None) -> int:
    """Threads for a kernel call of ``work`` units: at most ``n_threads`` (default
    :func:`effective_n_threads`), one per ``per_thread`` units, at least one. Calls too
    small to share run on fewer threads (waking a team costs more than it saves, and a
    team thread spinning between regions slows the caller); results do not depend on it.

    Examples
    --------
    >>> from fastconv._config import threads_for
    >>> threads_for(1000, 4096, 8), threads_for(3 * 4096, 4096, 8), threads_for(10**9, 4096, 8)
    (1, 3, 8)
    """
    n = effective_n_threads() if n_threads is None else n_threads
    return max(1, min(n, work // per_thread))


# Denormal flushing is a per-thread register. The setting is process-wide: each Python
# thread that runs kernels brings itself and its OpenMP team up to date before its next
# kernel (the team is a pool reused by the runtime, so once per setting and team size).
_flush_state = (0, False)  # (generation, enabled); generation 0: never set, nothing touched
_flush_synced = threading.local()  # per Python thread: .state and .team last applied
_largest_team = 1  # the most threads any parallel region has asked for: pools may be this big


def _sync_flush_denormal(n: int) -> None:
    global _openmp_started
    state = _flush_state
    if getattr(_flush_synced, "state", None) == state and getattr(_flush_synced, "team", 0) >= n:
        return
    team = 1 if _forked_after_openmp else max(n, _largest_team)
    if team > 1:
        _openmp_started = True
    _cpu.apply_flush_denormal(state[1], team)
    _flush_synced.state, _flush_synced.team = state, team


def get_flush_denormal() -> bool:
    """Whether the kernels flush denormal floats to zero (see :func:`set_flush_denormal`).

    Returns
    -------
    bool
        False unless ``set_flush_denormal(True)`` is in effect.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.get_flush_denormal()
    False
    """
    return _flush_state[1]


def set_flush_denormal(enabled: bool) -> bool:
    """Flush denormal floats to zero in the kernels (and the calling thread), or stop.

    Denormals (float32 below about 1.2e-38 in magnitude, float64 below 2.2e-308) make
    arithmetic many times slower on many CPUs. With flushing on, they are read as zero
    and results that would be denormal are written as zero (x86-64: the FTZ and DAZ
    bits of MXCSR; aarch64: FPCR.FZ), like ``torch.set_flush_denormal``.

    Process-wide, like :func:`set_num_threads`: the mode is a per-thread CPU register,
    set here in the calling thread and its OpenMP worker threads, and in any other
    Python thread (and its workers) before the next fastconv kernel it runs. These
    threads keep the mode for their other floating-point work too (NumPy included)
    until it is switched off. Threads of other libraries (PyTorch's, a multi-threaded
    BLAS called outside fastconv) are left alone.

    Parameters
    ----------
    enabled : bool
        True to flush denormals to zero, False for IEEE gradual underflow (the default).

    Returns
    -------
    bool
        The previous setting.

    Raises
    ------
    TypeError
        ``enabled`` is not a bool.

    Warns
    -----
    RuntimeWarning
        ``enabled`` is True on a platform without flushing control (neither x86-64
        nor aarch64): nothing changes.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> tiny = np.full((1, 1, 3, 3), 1e-39, dtype=np.float32)  # float32 denormals
    >>> w = np.ones((1, 1, 3, 3), dtype=np.float32)
    >>> float(fastconv.conv2d(tiny, w)[0, 0, 0, 0]) > 0
    True
    >>> fastconv.set_flush_denormal(True)  # returns the previous setting
    False
    >>> float(fastconv.conv2d(tiny, w)[0, 0, 0, 0])
    0.0
    >>> fastconv.set_flush_denormal(False)
    True
    """
    global _flush_state
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__} {enabled!r}")
    previous = _flush_state[1]
    if enabled and not _cpu.flush_denormal_supported():
        warnings.warn(
            "fastconv: flushing denormals is not supported on this platform "
            "(x86-64 and aarch64 only); the setting stays off",
            RuntimeWarning,
            stacklevel=2,
        )
        return previous
    _flush_state = (_flush_state[0] + 1, bool(enabled))
    _sync_flush_denormal(get_num_threads())
    return previous


# Fork safety. The parent's OpenMP worker threads do not exist in a forked child, and
# libgomp would wait for them; such a child runs the kernels on one thread instead.
_openmp_started = False
_forked_after_openmp = False


def _after_fork_in_child() -> None:
    global _forked_after_openmp
    if _openmp_started:
        _forked_after_openmp = True


def forked_after_openmp() -> bool:
    """True in a process forked after fastconv's OpenMP threads had started.

    Its kernels then run on one thread (results are identical, only slower). Start
    worker processes with multiprocessing's "spawn" or "forkserver" method to keep
    them parallel.

    Examples
    --------
    >>> from fastconv._config import forked_after_openmp
    >>> forked_after_openmp()  # this process was not forked
    False
    """
    return _forked_after_openmp


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
