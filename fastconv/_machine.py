"""What this machine can do, measured: float32 FMA peak and copy bandwidth.

Benchmarks state each case's speed as a fraction of these two limits: compute-bound
convolutions against the FMA peak, memory-bound pooling against the copy bandwidth.
Both come from the probes of ``_kernels/_probe.pyx``, run with the kernels' own
instruction-set variant, and are measured once per thread count per process (about
half a second); the best of several repetitions is kept, as a limit should be.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from fastconv._validation import as_index

#: each timed repetition of the FMA probe lasts about this long (seconds)
FMA_SECONDS = 0.02
#: bytes copied by the bandwidth probe: far beyond any last-level cache
COPY_BYTES = 128 << 20
#: timed repetitions of each probe; the fastest counts (on a shared machine a
#: neighbour can hold a core for a while: many short repetitions ride it out)
REPEATS = 12


@dataclass(frozen=True)
class MachineLimits:
    """The measured limits at one thread count.

    Attributes
    ----------
    threads : int
        Threads the probes ran on.
    fma_gflops : float
        float32 multiply-add throughput, GFLOP/s (a fused multiply-add counts 2).
    copy_gbs : float
        Copy bandwidth, GB/s: bytes read plus bytes written per second, between
        buffers far larger than the caches.
    isa : str
        The kernels' instruction-set variant the probes ran ("avx2", "baseline").

    Examples
    --------
    >>> import fastconv
    >>> limits = fastconv.machine_limits(1)
    >>> sorted(vars(limits))
    ['copy_gbs', 'fma_gflops', 'isa', 'threads']
    """

    threads: int
    fma_gflops: float
    copy_gbs: float
    isa: str


_lock = threading.Lock()
_measured: dict[int, MachineLimits] = {}


def _fastest(run: Callable[[], object]) -> float:
    run()  # warm-up: clocks ramp up, pages get mapped
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _fma_gflops(probe: ModuleType, n_threads: int) -> float:
    per_round = probe.flops_per_round()
    start = time.perf_counter()
    probe.fma_rounds(10_000, 1)
    per_second = 10_000 / max(time.perf_counter() - start, 1e-6)
    rounds = max(1000, int(per_second * FMA_SECONDS))
    seconds = _fastest(lambda: probe.fma_rounds(rounds, n_threads))
    return rounds * per_round * n_threads / seconds / 1e9


def _copy_gbs(probe: ModuleType, n_threads: int) -> float:
    src = np.ones(COPY_BYTES, dtype=np.uint8)
    dst = np.empty_like(src)
    seconds = _fastest(lambda: probe.copy_slices(src, dst, n_threads))
    return 2 * COPY_BYTES / seconds / 1e9


def machine_limits(n_threads: int | None = None, refresh: bool = False) -> MachineLimits:
    """This machine's float32 FMA peak and copy bandwidth at ``n_threads`` threads.

    Measured by small probes the first time a thread count is asked for (about half a
    second), then remembered for the process.

    Parameters
    ----------
    n_threads : int, optional
        Threads to measure with (default: fastconv's thread setting).
    refresh : bool
        Measure again even when this count was measured before.

    Returns
    -------
    MachineLimits

    Examples
    --------
    >>> import fastconv
    >>> limits = fastconv.machine_limits(1)
    >>> limits.threads, limits.fma_gflops > 0, limits.copy_gbs > 0
    (1, True, True)
    """
    from fastconv import _config, _dispatch

    if n_threads is None:
        n_threads = _config.get_num_threads()
    n_threads = as_index(n_threads, "n_threads", 1)
    with _lock:
        if refresh or n_threads not in _measured:
            probe = _dispatch._probe
            _measured[n_threads] = MachineLimits(
                threads=n_threads,
                fma_gflops=_fma_gflops(probe, n_threads),
                copy_gbs=_copy_gbs(probe, n_threads),
                isa=_dispatch.ISA,
            )
        return _measured[n_threads]
