"""Thread policy: how many OpenMP threads the kernels use.

One process-wide knob for the whole package: ``set_num_threads(n)``, and the
context manager ``threads(n)`` that sets it for a block and restores it on exit
(like torch.set_num_threads and threadpoolctl, it applies to every Python thread).
Default, read at import: ``FASTCONV_NUM_THREADS``, else ``OMP_NUM_THREADS``,
else the CPUs this process may use (affinity mask and cgroup CPU quota).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator

from fastconv._validation import as_index

__all__ = ["get_num_threads", "set_num_threads", "threads", "effective_n_threads", "available_cpus"]

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
    global _openmp_started
    if _forked_after_openmp:
        return 1
    n = get_num_threads()
    if n > 1:
        _openmp_started = True
    return n


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
