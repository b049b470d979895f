# Row-major GEMM over a real BLAS (scipy.linalg.cython_blas), callable without the GIL.
#
# All row-major/column-major translation lives here so the backend can be swapped.
# Callers inside a prange region must keep BLAS single-threaded (fastconv._blas).

from scipy.linalg.cython_blas cimport dgemm, sgemm

from fastconv._kernels._types cimport floating


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
    cdef Py_ssize_t i, j
    if m <= 0 or n <= 0:
        return
    if k <= 0:  # empty product: BLAS would reject the leading dimensions
        for i in range(m):
            for j in range(n):
                c[i * ldc + j] = 0 if beta == 0 else beta * c[i * ldc + j]
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> b, &ldb, <float*> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> b, &ldb, <double*> a, &lda,
              &beta, c, &ldc)
