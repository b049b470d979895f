"""Fully connected layer, y = x @ w^T + b, as blocks of BLAS GEMMs, forward and backward.

Dimension legend: N batch rows, IN input features, OUT output features.

Notes
-----
The batch is cut into blocks of ``rows`` rows of x (and the weight gradient into
blocks of ``features`` rows of gw), one task each: a GEMM over its block alone, so a
thread's share is a whole product and results do not depend on the thread count
(block sizes come from the shape). BLAS is called from inside the parallel region:
the caller keeps it single-threaded meanwhile (fastconv._blas). A block of one row
(a batch of one) is a dot product per output instead (:func:`row_forward`): BLAS is
not called, and a forward at batch 1 need not hold it single-threaded. Every operand
is non-empty (the caller handles empty shapes).
"""

from cython.parallel cimport prange

from fastconv._kernels._types cimport floating, index_t
from fastconv._kernels._gemm cimport gemm


cdef inline floating lanes_total(const floating* s) noexcept nogil:
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]))


cdef inline void row_forward(const floating* x, const floating* w, const floating* b,
                             floating* y, index_t n_in, index_t n_out) noexcept nogil:
    """y[j] = sum_i w[j, i] x[i] + b[j] for one row x (b may be NULL): a dot product per
    output, each in eight running sums (one SIMD register); four outputs at a time, so
    that four chains of FMAs overlap. An output's sums do not depend on its group."""
    cdef floating s0[8]
    cdef floating s1[8]
    cdef floating s2[8]
    cdef floating s3[8]
    cdef floating xi, total
    cdef index_t i, j, lane, body = n_in - n_in % 8, quads = n_out - n_out % 4
    cdef const floating* w0
    for j in range(0, quads, 4):  # outputs j .. j + 3
        w0 = w + j * n_in
        for lane in range(8):
            s0[lane] = 0
            s1[lane] = 0
            s2[lane] = 0
            s3[lane] = 0
        for i in range(0, body, 8):
            for lane in range(8):
                xi = x[i + lane]
                s0[lane] += w0[i + lane] * xi
                s1[lane] += w0[n_in + i + lane] * xi
                s2[lane] += w0[2 * n_in + i + lane] * xi
                s3[lane] += w0[3 * n_in + i + lane] * xi
        y[j] = lanes_total(s0)
        y[j + 1] = lanes_total(s1)
        y[j + 2] = lanes_total(s2)
        y[j + 3] = lanes_total(s3)
        for i in range(body, n_in):
            for lane in range(4):
                y[j + lane] += w0[lane * n_in + i] * x[i]
        if b != NULL:
            for lane in range(4):
                y[j + lane] += b[j + lane]
    for j in range(quads, n_out):  # the last n_out % 4, summed in the same order
        w0 = w + j * n_in
        for lane in range(8):
            s0[lane] = 0
        for i in range(0, body, 8):
            for lane in range(8):
                s0[lane] += w0[i + lane] * x[i + lane]
        total = lanes_total(s0)
        for i in range(body, n_in):
            total += w0[i] * x[i]
        y[j] = total + b[j] if b != NULL else total


def linear_forward(
    const floating[:, ::1] x,  # IN (N, IN)
    const floating[:, ::1] w,  # IN (OUT, IN)
    const floating[::1] b,     # IN (OUT,) or None
    floating[:, ::1] y,        # OUT (N, OUT)
    index_t rows, int n_threads,
):
    """y = x @ w^T + b, one task per block of ``rows`` rows of x."""
    cdef index_t blocks = (x.shape[0] + rows - 1) // rows
    cdef index_t blk
    with nogil:
        if n_threads == 1:  # no parallel region: at batch 1 it costs as much as the work
            for blk in range(blocks):
                forward_block(x, w, b, y, blk * rows, min((blk + 1) * rows, x.shape[0]))
        else:
            for blk in prange(blocks, num_threads=n_threads, schedule="static"):
                forward_block(x, w, b, y, blk * rows, min((blk + 1) * rows, x.shape[0]))


cdef void forward_block(const floating[:, ::1] x, const floating[:, ::1] w,
                        const floating[::1] b, floating[:, ::1] y,
                        index_t r0, index_t r1) noexcept nogil:
    """Rows r0 .. r1 - 1 of y = x @ w^T + b: one GEMM, or one row's dot products."""
    cdef index_t n_in = x.shape[1], n_out = w.shape[0], i, j
    cdef bint has_bias = b is not None
    cdef floating beta = 0
    if r1 - r0 == 1:
        row_forward(&x[r0, 0], &w[0, 0], &b[0] if has_bias else NULL, &y[r0, 0], n_in, n_out)
        return
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
