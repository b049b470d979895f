"""Probes of what this machine can do: float32 FMA throughput and copy bandwidth.

Built once per instruction set like the kernels (fastconv._dispatch picks the variant),
so the peak it measures is the peak of the instructions the kernels run: the AVX2 + FMA
build issues 8-lane fused multiply-adds, the baseline build SSE2 multiplies and adds.

Notes
-----
The FMA loop keeps FMA_CHAINS independent accumulator vectors per thread: an FMA's
latency (4-5 cycles) times the two FMA ports of current x86 cores needs about ten
chains in flight to keep both ports busy. Each chain runs acc = acc * m + c with
m < 1, which converges to c / (1 - m) (no overflow, no denormals); the sum of the
chains is returned so the compiler cannot drop the loop.

The copy probe copies one buffer into another, each thread its own contiguous slice,
so every byte is read once and written once; the caller counts both (as STREAM's copy
does) and sizes the buffers well beyond the last-level cache.
"""

from cython.parallel cimport parallel, prange
from libc.string cimport memcpy

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    typedef float fc_probe_vf __attribute__((vector_size(32)));
    #define FC_PROBE_LANES 8
    #else
    typedef float fc_probe_vf;
    #define FC_PROBE_LANES 1
    #endif
    #define FC_PROBE_CHAINS 12

    /* iters rounds of FC_PROBE_CHAINS vector FMAs; returns a value that depends on all */
    static float fastconv_fma_chains(long long iters, float seed) {
        fc_probe_vf acc[FC_PROBE_CHAINS];
        fc_probe_vf m = (fc_probe_vf){0} + 0.999f;
        fc_probe_vf c = (fc_probe_vf){0} + 1e-4f;
        float total = 0.0f;
        int j;
        long long i;
        for (j = 0; j < FC_PROBE_CHAINS; j++) acc[j] = (fc_probe_vf){0} + seed + (float)j;
        for (i = 0; i < iters; i++) {
            #pragma GCC unroll 12
            for (j = 0; j < FC_PROBE_CHAINS; j++) acc[j] = acc[j] * m + c;
        }
        for (j = 0; j < FC_PROBE_CHAINS; j++) {
            #if defined(__GNUC__) || defined(__clang__)
            int k;
            for (k = 0; k < FC_PROBE_LANES; k++) total += acc[j][k];
            #else
            total += acc[j];
            #endif
        }
        return total;
    }
    """
    int FC_PROBE_LANES
    int FC_PROBE_CHAINS
    float fastconv_fma_chains(long long iters, float seed) noexcept nogil


def flops_per_round():
    """Floating-point operations one round of ``fma_rounds`` does per thread (2 per lane per
    chain: a multiply and an add, fused or not)."""
    return 2 * FC_PROBE_LANES * FC_PROBE_CHAINS


def fma_rounds(long long rounds, int n_threads):
    """Run ``rounds`` rounds of the FMA chains on each of ``n_threads`` threads at once;
    returns their sum (meaningless: it keeps the work alive)."""
    cdef int t
    cdef double total = 0.0
    if rounds < 0 or n_threads < 1:
        raise ValueError(f"rounds must be >= 0 and n_threads >= 1, got {rounds}, {n_threads}")
    with nogil, parallel(num_threads=n_threads):
        for t in prange(n_threads, schedule="static", chunksize=1):
            total += fastconv_fma_chains(rounds, <float>t)
    return total


def copy_slices(const unsigned char[::1] src, unsigned char[::1] dst, int n_threads):
    """dst[:] = src, cut into ``n_threads`` contiguous slices copied at once."""
    cdef Py_ssize_t n = src.shape[0]
    cdef Py_ssize_t part, lo, hi
    cdef int t
    if dst.shape[0] != n:
        raise ValueError(f"dst must have {n} bytes like src, got {dst.shape[0]}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    if n == 0:
        return
    part = (n + n_threads - 1) // n_threads
    with nogil, parallel(num_threads=n_threads):
        for t in prange(n_threads, schedule="static", chunksize=1):
            lo = t * part
            hi = min(n, lo + part)
            if hi > lo:
                memcpy(&dst[lo], &src[lo], hi - lo)
