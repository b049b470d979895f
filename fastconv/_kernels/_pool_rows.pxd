# One output row of 2x2 max pooling at stride 2, shared by the pooling kernels and the
# wide-row convolution that pools its own output rows (a convolution followed by
# MaxPool2d(2) in training: the full-size output is never written); and runs of windows
# three columns wide at stride 2 (the pooling kernels' interior columns).

from fastconv._kernels._types cimport floating, index_t

cdef extern from "_pool_rows.h" nogil:
    Py_ssize_t fc_max_row_2x2_f(const float* r0, const float* r1, float* yr, long long* ir,
                                Py_ssize_t count, long long base, int width)
    Py_ssize_t fc_max_row_2x2_d(const double* r0, const double* r1, double* yr,
                                long long* ir, Py_ssize_t count, long long base, int width)
    Py_ssize_t fc_max_run_3s2_f(const float* src, Py_ssize_t row_step, int rows, float* yr,
                                long long* ir, Py_ssize_t count, long long first)
    Py_ssize_t fc_max_run_3s2_d(const double* src, Py_ssize_t row_step, int rows,
                                double* yr, long long* ir, Py_ssize_t count, long long first)


cdef inline void max_row_2x2(const floating* r0, const floating* r1, floating* yr,
                             long long* ir, index_t ow_count, long long base,
                             int width) noexcept nogil:
    """One output row of 2x2 windows at stride 2 over input rows r0 and r1; ir NULL:
    values only, else the argmax as plane offsets (base: the offset of r0).

    Each window starts from its first tap, which equals starting from -inf with the
    first tap's offset (a -inf or NaN first tap is kept either way); the other taps
    follow in scan order as in max_plane: NaN wins, ties keep the earlier tap. Whole
    vectors of windows go through _pool_rows.h, the rest here."""
    cdef index_t k, done
    cdef floating best, value
    cdef int rel
    cdef bint take
    if floating is float:
        done = fc_max_row_2x2_f(r0, r1, yr, ir, ow_count, base, width)
    else:
        done = fc_max_row_2x2_d(r0, r1, yr, ir, ow_count, base, width)
    if ir == NULL:
        for k in range(done, ow_count):
            best = r0[2 * k]
            value = r0[2 * k + 1]
            take = (value > best) | (value != value)
            best = value if take else best
            value = r1[2 * k]
            take = (value > best) | (value != value)
            best = value if take else best
            value = r1[2 * k + 1]
            take = (value > best) | (value != value)
            best = value if take else best
            yr[k] = best
        return
    for k in range(done, ow_count):
        best = r0[2 * k]
        rel = 0
        value = r0[2 * k + 1]
        take = (value > best) | (value != value)
        best = value if take else best
        rel = 1 if take else rel
        value = r1[2 * k]
        take = (value > best) | (value != value)
        best = value if take else best
        rel = width if take else rel
        value = r1[2 * k + 1]
        take = (value > best) | (value != value)
        best = value if take else best
        rel = width + 1 if take else rel
        yr[k] = best
        ir[k] = base + 2 * k + rel


cdef inline index_t max_run_3s2(const floating* src, index_t row_step, index_t rows,
                                floating* best, long long* at, index_t count,
                                long long first) noexcept nogil:
    """A run of ``count`` windows 3 columns wide at stride 2 (window 0's first tap at src,
    ``rows`` rows row_step apart) in SIMD vectors: best and, unless at is NULL, the
    argmax as plane offsets (first: src's). Returns count, or 0 (nothing done) for a
    run under one vector or a compiler without vector extensions."""
    if floating is float:
        return fc_max_run_3s2_f(src, row_step, <int> rows, best, at, count, first)
    else:
        return fc_max_run_3s2_d(src, row_step, <int> rows, best, at, count, first)
