# Row-major GEMM, callable without the GIL: a real BLAS (scipy.linalg.cython_blas), except
# float32 products with few columns and a large A in an AVX2 + FMA build, which run
# fastconv's own GEMM (_sgemm.h: BLAS copies all of A on every call, and with few
# columns that copy costs as much as the arithmetic); gemm_many_rows also hands it
# products with many rows, whatever their width (the im2col forward's, the 1x1
# backward's).
#
# All row-major/column-major translation lives here so the backend can be swapped.
# Callers inside a prange region must keep BLAS single-threaded (fastconv._blas).

from scipy.linalg.cython_blas cimport dgemm, sgemm

from fastconv._kernels._types cimport floating

cdef extern from "_sgemm.h" nogil:
    int FC_OWN_SGEMM
    int FC_SG_MAX_COLUMNS
    int FC_SG_MIN_AREA
    int FC_SG_MIN_ROWS
    int fc_sgemm(int trans_a, int trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                 float alpha, const float* a, Py_ssize_t lda, const float* b, Py_ssize_t ldb,
                 float beta, float* c, Py_ssize_t ldc, const float* bias)


cdef inline void scale(int m, int n, floating beta, floating* c, int ldc) noexcept nogil:
    """C (m x n) = beta * C, C not read when beta is 0: an empty product's result (BLAS
    would reject its leading dimensions; fastconv's own GEMM leaves it to its caller)."""
    cdef Py_ssize_t i, j
    for i in range(m):
        for j in range(n):
            c[i * ldc + j] = 0 if beta == 0 else beta * c[i * ldc + j]


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    """C (m x n) = alpha * op(A) @ op(B) + beta * C, all row-major.

    op(A) is m x k (A is k x m when trans_a), op(B) is k x n (B is n x k when
    trans_b); lda, ldb, ldc are row strides in elements. Column-major BLAS
    computes C^T = op(B)^T op(A)^T, so the operands swap places.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m <= 0 or n <= 0:
        return
    if k <= 0:
        scale(m, n, beta, c, ldc)
        return
    if floating is float:
        if (FC_OWN_SGEMM and n <= FC_SG_MAX_COLUMNS
                and <Py_ssize_t> m * k >= FC_SG_MIN_AREA
                and fc_sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                             ldc, NULL) == 0):
            return
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> b, &ldb, <float*> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> b, &ldb, <double*> a, &lda,
              &beta, c, &ldc)


#: the depth of one product of the im2col forward: one depth block of fastconv's own GEMM
#: (FC_SG_KC), whose columns were just written and still lie in L2
cdef enum:
    GEMM_DEPTH_BLOCK = 256


cdef inline void gemm_many_rows(bint trans_a, bint trans_b, int m, int n, int k,
                                floating alpha, const floating* a, int lda,
                                const floating* b, int ldb,
                                floating beta, floating* c, int ldc) noexcept nogil:
    """As gemm, but float32 products of at least FC_SG_MIN_ROWS rows run fastconv's own
    GEMM whatever their width, where the build has it (BLAS where not, or where its
    scratch could not be had)."""
    if m <= 0 or n <= 0:
        return
    if floating is float:
        if (FC_OWN_SGEMM and m >= FC_SG_MIN_ROWS and k > 0
                and fc_sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                             ldc, NULL) == 0):
            return
    gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


cdef inline void gemm_many_rows_plus_bias(int m, int n, int k, const floating* a, int lda,
                                          const floating* b, int ldb, const floating* bias,
                                          floating* c, int ldc) noexcept nogil:
    """C = A @ B + bias[i] on row i (C not read; no bias where NULL), as gemm_many_rows:
    fastconv's own GEMM adds the bias as it stores the first depth block (no pass of its
    own over C); elsewhere C's rows are filled with the bias and the product added to
    them, the same bits."""
    cdef Py_ssize_t i, j
    if bias == NULL:
        gemm_many_rows(False, False, m, n, k, 1, a, lda, b, ldb, 0, c, ldc)
        return
    if m <= 0 or n <= 0:
        return
    if floating is float:
        if (FC_OWN_SGEMM and m >= FC_SG_MIN_ROWS and k > 0
                and fc_sgemm(False, False, m, n, k, 1, a, lda, b, ldb, 0, c, ldc,
                             bias) == 0):
            return
    for i in range(m):
        for j in range(n):
            c[i * ldc + j] = bias[i]
    gemm(False, False, m, n, k, 1, a, lda, b, ldb, 1, c, ldc)
