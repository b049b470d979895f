"""Test hook for the row-major GEMM wrapper declared in ``_gemm.pxd``."""

from fastconv._kernels._types cimport floating
from fastconv._kernels._gemm cimport gemm


def _gemm_py(bint trans_a, bint trans_b, double alpha, const floating[:, ::1] a,
             const floating[:, ::1] b, double beta, floating[:, ::1] c):
    """c = alpha * op(a) @ op(b) + beta * c in place (shapes checked by the caller)."""
    cdef int m = c.shape[0]
    cdef int n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return
    with nogil:
        gemm(trans_a, trans_b, m, n, k, <floating> alpha,
             &a[0, 0] if a.shape[0] * a.shape[1] > 0 else NULL, a.shape[1],
             &b[0, 0] if b.shape[0] * b.shape[1] > 0 else NULL, b.shape[1],
             <floating> beta, &c[0, 0], n)
