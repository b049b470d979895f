"""Fully connected layer, y = x @ w^T + b, as blocks of BLAS GEMMs, forward and backward.

Dimension legend: N batch rows, IN input features, OUT output features.

Notes
-----
The batch is cut into blocks of ``rows`` rows of x (and the weight gradient into
blocks of ``features`` rows of gw), one task each: a GEMM over its block alone, so a
thread's share is a whole product and results do not depend on the thread count
(block sizes come from the shape). BLAS is called from inside the parallel region:
the caller keeps it single-threaded meanwhile (fastconv._blas). Every operand is
non-empty (the caller handles empty shapes).
"""

from cython.parallel cimport prange

from fastconv._kernels._types cimport floating, index_t
from fastconv._kernels._gemm cimport gemm


def linear_forward(
    const floating[:, ::1] x,  # IN (N, IN)
    const floating[:, ::1] w,  # IN (OUT, IN)
    const floating[::1] b,     # IN (OUT,) or None
    floating[:, ::1] y,        # OUT (N, OUT)
    index_t rows, int n_threads,
):
    """y = x @ w^T + b, one task per block of ``rows`` rows of x."""
    cdef index_t n = x.shape[0], n_in = x.shape[1], n_out = w.shape[0]
    cdef index_t blocks = (n + rows - 1) // rows
    cdef bint has_bias = b is not None
    cdef index_t blk, r0, r1, i, j
    cdef floating beta
    with nogil:
        for blk in prange(blocks, num_threads=n_threads, schedule="static"):
            r0 = blk * rows
            r1 = min(r0 + rows, n)
            beta = 0
            if has_bias:
                beta = 1
                for i in range(r0, r1):
                    for j in range(n_out):
                        y[i, j] = b[j]
            gemm(False, True, <int> (r1 - r0), <int> n_out, <int> n_in, 1,
                 &x[r0, 0], <int> n_in, &w[0, 0], <int> n_in, beta, &y[r0, 0], <int> n_out)


def linear_backward(
    const floating[:, ::1] gy,  # IN (N, OUT)
    const floating[:, ::1] x,   # IN (N, IN)
    const floating[:, ::1] w,   # IN (OUT, IN)
    floating[:, ::1] gx,        # OUT (N, IN), or None: not computed
    floating[:, ::1] gw,        # IN/OUT (OUT, IN): gy^T @ x is added to it
    index_t rows, index_t features, int n_threads,
):
    """gx = gy @ w in blocks of ``rows`` rows; gw += gy^T @ x in blocks of ``features``
    rows of gw. Both kinds of task share one parallel loop."""
    cdef index_t n = gy.shape[0], n_out = gy.shape[1], n_in = x.shape[1]
    cdef index_t row_blocks = (n + rows - 1) // rows if gx is not None else 0
    cdef index_t feature_blocks = (n_out + features - 1) // features
    cdef index_t task, r0, r1, f0, f1
    with nogil:
        for task in prange(row_blocks + feature_blocks, num_threads=n_threads,
                           schedule="static"):
            if task < row_blocks:
                r0 = task * rows
                r1 = min(r0 + rows, n)
                gemm(False, False, <int> (r1 - r0), <int> n_in, <int> n_out, 1,
                     &gy[r0, 0], <int> n_out, &w[0, 0], <int> n_in, 0, &gx[r0, 0], <int> n_in)
            else:
                f0 = (task - row_blocks) * features
                f1 = min(f0 + features, n_out)
                gemm(True, False, <int> (f1 - f0), <int> n_in, <int> n, 1,
                     &gy[0, f0], <int> n_out, &x[0, 0], <int> n_in, 1, &gw[f0, 0], <int> n_in)
