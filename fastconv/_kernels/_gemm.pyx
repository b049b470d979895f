"""Test hooks for the row-major GEMM wrapper declared in ``_gemm.pxd`` and for
fastconv's own float32 GEMM under it (``_sgemm.h``)."""

from fastconv._kernels._types cimport floating
from fastconv._kernels._gemm cimport (
    FC_OWN_SGEMM, FC_SG_MAX_COLUMNS, FC_SG_MIN_AREA, FC_SG_MIN_ROWS, fc_sgemm, gemm, scale,
)

#: whether this build of the module has fastconv's own float32 GEMM (AVX2 + FMA code)
HAS_OWN_GEMM = bool(FC_OWN_SGEMM)
#: the products gemm() hands it: at most this many columns, at least this many elements of A
OWN_GEMM_MAX_COLUMNS, OWN_GEMM_MIN_AREA = FC_SG_MAX_COLUMNS, FC_SG_MIN_AREA
#: ... and the im2col forward's and 1x1 backward's products of at least this many rows
OWN_GEMM_MIN_ROWS = FC_SG_MIN_ROWS


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


def _own_gemm_py(bint trans_a, bint trans_b, float alpha, const float[:, ::1] a,
                 const float[:, ::1] b, float beta, float[:, ::1] c):
    """As _gemm_py, float32, always on fastconv's own GEMM whatever the shapes (the
    wrapper takes it for few columns only); RuntimeError where this build has none."""
    cdef Py_ssize_t m = c.shape[0], n = c.shape[1]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef int status
    if not FC_OWN_SGEMM:
        raise RuntimeError("this build has no own float32 GEMM (it needs AVX2 and FMA)")
    if m == 0 or n == 0:
        return
    if k == 0:  # an empty product, which fc_sgemm leaves to its caller
        scale(<int> m, <int> n, beta, &c[0, 0], <int> n)
        return
    with nogil:
        status = fc_sgemm(trans_a, trans_b, m, n, k, alpha, &a[0, 0], a.shape[1],
                          &b[0, 0], b.shape[1], beta, &c[0, 0], n, NULL)
    if status != 0:
        raise MemoryError("no scratch for the GEMM's packed columns")
