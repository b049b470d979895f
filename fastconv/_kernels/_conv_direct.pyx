"""Direct 2-D convolution (cross-correlation): typed loops over the output.

Dimension legend: N batch, C input channels, H, W input size, K output channels,
G groups, CG = C / G, KG = K / G, KH, KW kernel size, OH, OW output size.

Notes
-----
Each parallel task owns whole output planes (forward: one (n, k) plane; input
gradient: one (n, c) plane; weight gradient: one (k, c) filter slice; bias
gradient: one k), so there are no races and every element is summed in one
fixed order: results are bit-identical for any thread count. Bounds tests are
hoisted out of the inner loops: for each kernel tap the valid output range is
computed once (``first_valid``, ``stop_valid``). Weight and bias gradients accumulate in double
(float32 weight gradients at stride 1 sum each image's products in float vectors first).
"""

from cython.parallel cimport prange

from fastconv._kernels._types cimport floating, index_t
from fastconv._kernels._shape cimport first_valid, stop_valid

cdef extern from *:
    """
    #include <stddef.h>
    /* sum over `rows` rows r of the dot product of g + r * g_step and x + r * x_step,
       n elements each (float32, contiguous): products summed in two 8-lane float
       vectors across all the rows (GCC/clang vector extensions: SSE2, or AVX2 + FMA per
       build), their lanes then added in double in a fixed order; row tails in double */
    static inline double fastconv_rows_dot_f(const float *g, ptrdiff_t g_step,
                                             const float *x, ptrdiff_t x_step,
                                             ptrdiff_t rows, ptrdiff_t n) {
        double s = 0.0;
        ptrdiff_t r, i;
    #if defined(__GNUC__) || defined(__clang__)
        typedef float v8 __attribute__((vector_size(32), aligned(4)));
        v8 a = {0}, b = {0};
        int lane;
        for (r = 0; r < rows; r++) {
            const float *gr = g + r * g_step, *xr = x + r * x_step;
            for (i = 0; i + 16 <= n; i += 16) {
                a += *(const v8 *)(gr + i) * *(const v8 *)(xr + i);
                b += *(const v8 *)(gr + i + 8) * *(const v8 *)(xr + i + 8);
            }
            for (; i + 8 <= n; i += 8) a += *(const v8 *)(gr + i) * *(const v8 *)(xr + i);
            for (; i < n; i++) s += (double)gr[i] * (double)xr[i];
        }
        for (lane = 0; lane < 8; lane++) s += (double)a[lane] + (double)b[lane];
    #else
        for (r = 0; r < rows; r++)
            for (i = 0; i < n; i++) s += (double)g[r * g_step + i] * (double)x[r * x_step + i];
    #endif
        return s;
    }
    """
    double fastconv_rows_dot_f(const float* g, Py_ssize_t g_step, const float* x,
                               Py_ssize_t x_step, Py_ssize_t rows, Py_ssize_t n) noexcept nogil


cdef inline void axpy_run(floating* yrow, const floating* xrow, index_t offset,
                          floating tap, index_t lo, index_t hi, index_t step) noexcept nogil:
    """yrow[ow] += tap * xrow[ow * step + offset] for ow in [lo, hi); strides 1 and 2
    as constants, so the compiler vectorises them."""
    cdef index_t ow
    if step == 1:
        for ow in range(lo, hi):
            yrow[ow] += tap * xrow[ow + offset]
    elif step == 2:
        for ow in range(lo, hi):
            yrow[ow] += tap * xrow[2 * ow + offset]
    else:
        for ow in range(lo, hi):
            yrow[ow] += tap * xrow[ow * step + offset]


cdef enum:
    MAX_HOISTED_KW = 64  # kernel widths whose column ranges forward_plane computes once


cdef void forward_plane(const floating* xp, const floating* wk, floating* yp, floating init,
                        index_t cg, index_t height, index_t width, index_t oh_count,
                        index_t ow_count, index_t kh, index_t kw, index_t sh, index_t sw,
                        index_t pt, index_t pl, index_t dh, index_t dw) noexcept nogil:
    """One output plane, one row at a time: every tap of a row's window added while the
    row stays in cache, each output summing its taps in the order (c, i, j). xp: the
    group's first input plane, wk: the filter (CG, KH, KW)."""
    cdef index_t col_lo[MAX_HOISTED_KW]
    cdef index_t col_hi[MAX_HOISTED_KW]
    cdef index_t c, i, j, oh, ow, row0, i_lo, i_hi, lo, hi
    cdef floating* yrow
    cdef const floating* xrow
    cdef bint hoisted = kw <= MAX_HOISTED_KW
    if hoisted:  # the valid columns of each tap: integer divisions, once per plane
        for j in range(kw):
            col_lo[j] = first_valid(j * dw - pl, sw, ow_count)
            col_hi[j] = stop_valid(j * dw - pl, sw, width, ow_count)
    for oh in range(oh_count):
        yrow = yp + oh * ow_count
        for ow in range(ow_count):
            yrow[ow] = init
        row0 = oh * sh - pt
        i_lo = first_valid(row0, dh, kh)
        i_hi = stop_valid(row0, dh, height, kh)
        for c in range(cg):
            for i in range(i_lo, i_hi):
                xrow = xp + (c * height + row0 + i * dh) * width
                for j in range(kw):
                    if hoisted:
                        lo = col_lo[j]
                        hi = col_hi[j]
                    else:
                        lo = first_valid(j * dw - pl, sw, ow_count)
                        hi = stop_valid(j * dw - pl, sw, width, ow_count)
                    axpy_run(yrow, xrow, j * dw - pl, wk[(c * kh + i) * kw + j], lo, hi, sw)


def conv2d_forward(
    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
    const floating[:, :, :, ::1] w,  # IN (K, CG, KH, KW)
    const floating[::1] b,           # IN (K,) or None
    floating[:, :, :, ::1] y,        # OUT (N, K, OH, OW)
    index_t sh, index_t sw, index_t pt, index_t pl, index_t dh, index_t dw,
    index_t groups, int n_threads,
):
    """y = conv(x, w) + b, computed directly, one (n, k) plane per task (forward_plane).
    Sizes are validated by the caller."""
    cdef index_t n_images = y.shape[0], n_out = y.shape[1]
    cdef index_t oh_count = y.shape[2], ow_count = y.shape[3]
    cdef index_t height = x.shape[2], width = x.shape[3]
    cdef index_t cg = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef index_t kg = n_out // groups
    cdef bint has_bias = b is not None
    cdef index_t task, n, k, c, i, j, oh, ow, ih_off, iw_off
    cdef index_t oh_lo, oh_hi, ow_lo, ow_hi
    cdef floating tap
    if y.size == 0:
        return
    with nogil:
        for task in prange(n_images * n_out, num_threads=n_threads, schedule="static"):
            n = task // n_out
            k = task % n_out
            forward_plane(&x[n, (k // kg) * cg, 0, 0], &w[k, 0, 0, 0], &y[n, k, 0, 0],
                          b[k] if has_bias else 0, cg, height, width, oh_count, ow_count,
                          kh, kw, sh, sw, pt, pl, dh, dw)
            for c in range(cg):
                for i in range(kh):
                    ih_off = i * dh - pt
                    oh_lo = first_valid(ih_off, sh, oh_count)
                    oh_hi = stop_valid(ih_off, sh, height, oh_count)
                    for j in range(kw):
                        tap = w[k, c, i, j]
                        if tap - tap != 0:
                            # An inf or NaN tap over zero padding: inf * 0 is NaN, as when
                            # the padded zeros are multiplied (the im2col path, PyTorch).
                            iw_off = j * dw - pl
                            ow_lo = first_valid(iw_off, sw, ow_count)
                            ow_hi = stop_valid(iw_off, sw, width, ow_count)
                            for oh in range(oh_count):
                                for ow in range(ow_count):
                                    if oh < oh_lo or oh >= oh_hi or ow < ow_lo or ow >= ow_hi:
                                        y[n, k, oh, ow] += tap * 0


def conv2d_input_grad(
    const floating[:, :, :, ::1] gy,  # IN (N, K, OH, OW)
    const floating[:, :, :, ::1] w,   # IN (K, CG, KH, KW)
    const floating[::1] b,            # IN (C,) or None: added per channel of gx
    floating[:, :, :, ::1] gx,        # OUT (N, C, H, W), any contents (overwritten)
    index_t sh, index_t sw, index_t pt, index_t pl, index_t dh, index_t dw,
    index_t groups, int n_threads,
):
    """gx = b + full correlation of stride-dilated gy with the rotated kernel, as a
    scatter into each task's own plane, which it first fills with b (or zero)."""
    cdef index_t n_images = gx.shape[0], n_in = gx.shape[1]
    cdef index_t height = gx.shape[2], width = gx.shape[3]
    cdef index_t oh_count = gy.shape[2], ow_count = gy.shape[3]
    cdef index_t cg = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef index_t kg = w.shape[0] // groups
    cdef index_t task, n, cin, c, kk, k, i, j, oh, ow, ih, ih_off, iw_off
    cdef index_t oh_lo, oh_hi, ow_lo, ow_hi, h, q
    cdef bint has_bias = b is not None
    cdef floating tap, init
    with nogil:
        for task in prange(n_images * n_in, num_threads=n_threads, schedule="static"):
            n = task // n_in
            cin = task % n_in
            c = cin % cg
            init = b[cin] if has_bias else 0
            for h in range(height):
                for q in range(width):
                    gx[n, cin, h, q] = init
            for kk in range(kg):
                k = (cin // cg) * kg + kk
                for i in range(kh):
                    ih_off = i * dh - pt
                    oh_lo = first_valid(ih_off, sh, oh_count)
                    oh_hi = stop_valid(ih_off, sh, height, oh_count)
                    for j in range(kw):
                        iw_off = j * dw - pl
                        ow_lo = first_valid(iw_off, sw, ow_count)
                        ow_hi = stop_valid(iw_off, sw, width, ow_count)
                        tap = w[k, c, i, j]
                        for oh in range(oh_lo, oh_hi):
                            ih = oh * sh + ih_off
                            for ow in range(ow_lo, ow_hi):
                                gx[n, cin, ih, ow * sw + iw_off] += tap * gy[n, k, oh, ow]


cdef inline double row_dot(const floating* g, const floating* xr, index_t lo, index_t hi,
                           index_t sw, index_t off) noexcept nogil:
    """Sum over ow in [lo, hi) of g[ow] * xr[ow * sw + off], in double, as four
    interleaved partial sums (one chain of dependent adds waits on each add's latency)
    added in a fixed order."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0
    cdef index_t ow = lo
    while ow + 4 <= hi:
        a0 = a0 + <double> g[ow] * xr[ow * sw + off]
        a1 = a1 + <double> g[ow + 1] * xr[(ow + 1) * sw + off]
        a2 = a2 + <double> g[ow + 2] * xr[(ow + 2) * sw + off]
        a3 = a3 + <double> g[ow + 3] * xr[(ow + 3) * sw + off]
        ow = ow + 4
    while ow < hi:
        a0 = a0 + <double> g[ow] * xr[ow * sw + off]
        ow = ow + 1
    return (a0 + a1) + (a2 + a3)


def conv2d_weight_grad(
    const floating[:, :, :, ::1] gy,  # IN (N, K, OH, OW)
    const floating[:, :, :, ::1] x,   # IN (N, C, H, W)
    floating[:, :, :, ::1] gw,        # OUT (K, CG, KH, KW)
    index_t sh, index_t sw, index_t pt, index_t pl, index_t dh, index_t dw,
    index_t groups, int n_threads, bint gy_nonfinite=False,
):
    """gw = correlation of x with gy, summed over the batch (double accumulator).

    ``gy_nonfinite``: gy holds inf or NaN, so the products of gy with the zero padding
    (NaN for inf * 0) are added too, as the im2col path and PyTorch do.
    """
    cdef index_t n_images = gy.shape[0], n_out = gy.shape[1]
    cdef index_t oh_count = gy.shape[2], ow_count = gy.shape[3]
    cdef index_t height = x.shape[2], width = x.shape[3]
    cdef index_t cg = gw.shape[1], kh = gw.shape[2], kw = gw.shape[3]
    cdef index_t kg = n_out // groups
    cdef index_t task, n, k, c, cin, i, j, oh, ow, ih, ih_off, iw_off
    cdef index_t oh_lo, oh_hi, ow_lo, ow_hi
    cdef double acc
    with nogil:
        for task in prange(n_out * cg, num_threads=n_threads, schedule="static"):
            k = task // cg
            c = task % cg
            cin = (k // kg) * cg + c
            for i in range(kh):
                ih_off = i * dh - pt
                oh_lo = first_valid(ih_off, sh, oh_count)
                oh_hi = stop_valid(ih_off, sh, height, oh_count)
                for j in range(kw):
                    iw_off = j * dw - pl
                    ow_lo = first_valid(iw_off, sw, ow_count)
                    ow_hi = stop_valid(iw_off, sw, width, ow_count)
                    acc = 0
                    for n in range(n_images):
                        if floating is float and sw == 1 and oh_hi > oh_lo and ow_hi > ow_lo:
                            # contiguous rows: SIMD partial sums over the whole plane
                            acc = acc + fastconv_rows_dot_f(
                                &gy[n, k, oh_lo, ow_lo], ow_count,
                                &x[n, cin, oh_lo * sh + ih_off, ow_lo + iw_off],
                                sh * width, oh_hi - oh_lo, ow_hi - ow_lo)
                        else:
                            for oh in range(oh_lo, oh_hi):
                                ih = oh * sh + ih_off
                                if sw == 1:  # a constant stride: contiguous loads
                                    acc = acc + row_dot(&gy[n, k, oh, 0], &x[n, cin, ih, 0],
                                                        ow_lo, ow_hi, 1, iw_off)
                                else:
                                    acc = acc + row_dot(&gy[n, k, oh, 0], &x[n, cin, ih, 0],
                                                        ow_lo, ow_hi, sw, iw_off)
                        if gy_nonfinite:
                            for oh in range(oh_count):
                                for ow in range(ow_count):
                                    if oh < oh_lo or oh >= oh_hi or ow < ow_lo or ow >= ow_hi:
                                        acc = acc + gy[n, k, oh, ow] * 0.0
                    gw[k, c, i, j] = <floating> acc


def conv2d_bias_grad(
    const floating[:, :, :, ::1] gy,  # IN (N, K, OH, OW)
    floating[::1] gb,                 # OUT (K,)
    int n_threads,
):
    """gb = gy summed over N, OH, OW (double accumulators, fixed order)."""
    cdef index_t n_images = gy.shape[0], n_out = gy.shape[1]
    cdef index_t plane = gy.shape[2] * gy.shape[3]
    cdef index_t tail = plane - plane % 8
    cdef index_t n, k, i
    cdef const floating* p
    # eight interleaved sums: one chain of dependent adds would wait on each add's latency
    cdef double a0, a1, a2, a3, a4, a5, a6, a7
    with nogil:
        for k in prange(n_out, num_threads=n_threads, schedule="static"):
            a0 = 0
            a1 = 0
            a2 = 0
            a3 = 0
            a4 = 0
            a5 = 0
            a6 = 0
            a7 = 0
            for n in range(n_images):
                p = &gy[n, k, 0, 0]
                for i in range(0, tail, 8):
                    a0 = a0 + p[i]
                    a1 = a1 + p[i + 1]
                    a2 = a2 + p[i + 2]
                    a3 = a3 + p[i + 3]
                    a4 = a4 + p[i + 4]
                    a5 = a5 + p[i + 5]
                    a6 = a6 + p[i + 6]
                    a7 = a7 + p[i + 7]
                for i in range(tail, plane):
                    a0 = a0 + p[i]
            gb[k] = <floating> (((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)))
