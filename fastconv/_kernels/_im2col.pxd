# im2col / col2im over a band of output rows, for one image and a run of channels.
#
# Column layout as in Caffe's im2col: row r = (c * KH + i) * KW + j of the column
# matrix holds, for every output pixel q = (oh - oh0) * OW + ow of the band, the input
# value under kernel tap (i, j) of channel c (zero where the tap falls in padding).
# The band [oh0, oh1) keeps the buffer bounded: rows x OW x C x KH x KW elements.
# Rows at stride 2 are gathered in SIMD vectors in the AVX2 build (_im2col_rows.h): a
# 3x3 s2 forward spends much of its packing on rows of 14 to 28 outputs, whose scalar
# loop's tail cost more than the copy (the forward of ResNet's 3x3 s2 over 1x64x56x56
# 0.82 of the time, over 8x128x28x28 0.91-0.94, a 1x1 s2 over 1x512x28x28 0.95; one
# process, alternating the two builds' kernel modules). At stride 1 with an output as
# wide as x (a "same" padding), a tap's band is x's plane shifted: one memcpy of the
# taps inside the image, then the few columns it wrapped into zeroed (packing alone:
# 1x256x14x14 3x3 0.60 of the time, 1x512x7x7 0.55, 1x128x17x17 1x7 0.60, float64
# 1x128x28x28 0.72; the forward of ResNet-18's 3x3 256@14 at batch 1 0.94, 512@7 0.91,
# VGG's 512@14 0.90; one process, alternating modules). col2im adds its rows at stride 2
# in SIMD vectors too, two neighbouring taps' rows at once (undilated) or one.

from libc.string cimport memcpy, memset

from fastconv._kernels._types cimport floating, index_t
from fastconv._kernels._shape cimport first_valid, stop_valid

cdef extern from "_im2col_rows.h" nogil:
    int FC_IR_VECTORS
    Py_ssize_t fc_gather2_f(const float* src, float* out, Py_ssize_t count,
                            int past_end_readable)
    Py_ssize_t fc_gather2_d(const double* src, double* out, Py_ssize_t count,
                            int past_end_readable)
    Py_ssize_t fc_scatter2_f(float* dst, const float* a, const float* b, Py_ssize_t count)
    Py_ssize_t fc_scatter2_d(double* dst, const double* a, const double* b,
                             Py_ssize_t count)


cdef inline index_t gather_stride_2(const floating* src, floating* out, index_t count,
                                    const floating* end) noexcept nogil:
    """out[q] = src[2q] for q < count in SIMD vectors (_im2col_rows.h) where src's
    element 2 * count - 1 lies before ``end``; returns count, or 0 (nothing done)."""
    cdef int readable = src + 2 * count - 1 < end
    if floating is float:
        return fc_gather2_f(src, out, count, readable)
    else:
        return fc_gather2_d(src, out, count, readable)


cdef inline index_t add_stride_2(floating* dst, const floating* a, const floating* b,
                                 index_t count) noexcept nogil:
    """dst[2q] += a[q] and, unless b is NULL, dst[2q + 1] += b[q], for q < count in SIMD
    vectors (_im2col_rows.h), reading and writing nothing past the last element a tap
    reaches; returns count, or 0 (nothing done: the caller adds them)."""
    if floating is float:
        return fc_scatter2_f(dst, a, b, count)
    else:
        return fc_scatter2_d(dst, a, b, count)


cdef inline void im2col_tap_same_width(
    const floating* plane, index_t width, index_t ih_off, index_t iw_off,
    index_t oh0, index_t oh1, index_t oh_lo, index_t oh_hi, index_t ow_lo, index_t ow_hi,
    floating* out,
) noexcept nogil:
    """One tap's rows of im2col_band at stride 1 where the output is as wide as the
    input: band pixel p reads plane[(oh0 + ih_off) * width + iw_off + p], so the taps
    inside the image are one contiguous copy; then the columns that copy wrapped into
    (past a row's end: padding) and the rows in padding are zeroed."""
    cdef index_t lo = max(oh_lo, oh0), hi = min(oh_hi, oh1)
    cdef index_t first, stop, oh, q
    cdef floating* row
    cdef size_t item = sizeof(floating)
    if hi <= lo or ow_hi <= ow_lo:
        memset(out, 0, (oh1 - oh0) * width * item)
        return
    first = (lo - oh0) * width + ow_lo
    stop = (hi - 1 - oh0) * width + ow_hi
    memset(out, 0, (lo - oh0) * width * item)
    memcpy(out + first, plane + ((oh0 + ih_off) * width + iw_off + first),
           (stop - first) * item)
    for oh in range(lo - oh0, hi - oh0):  # a few columns each: no calls
        row = out + oh * width
        for q in range(ow_lo):
            row[q] = 0
        for q in range(ow_hi, width):
            row[q] = 0
    memset(out + (hi - oh0) * width, 0, (oh1 - hi) * width * item)


cdef inline void im2col_band(
    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
    index_t n, index_t c0, index_t channels,
    index_t kh, index_t kw, index_t sh, index_t sw,
    index_t pt, index_t pl, index_t dh, index_t dw,
    index_t oh0, index_t oh1, index_t ow_count,
    floating[:, ::1] col,  # OUT row `slot`: (channels * kh * kw) x ((oh1 - oh0) * ow_count)
    index_t slot,
) noexcept nogil:
    cdef index_t height = x.shape[2], width = x.shape[3]
    cdef index_t band = (oh1 - oh0) * ow_count
    cdef index_t c, i, j, oh, ow, ih_off, iw_off, dst
    cdef index_t oh_lo, oh_hi, ow_lo, ow_hi
    # plain row pointers: extensions build with -fno-strict-aliasing, so a store through
    # a memoryview makes the compiler reload the views' strides on every element
    cdef const floating* xrow
    cdef floating* out
    cdef const floating* x_end = &x[0, 0, 0, 0] + x.shape[0] * x.shape[1] * height * width
    cdef bint same_width = sh == 1 and sw == 1 and ow_count == width
    for c in range(channels):
        for i in range(kh):
            ih_off = i * dh - pt
            oh_lo = first_valid(ih_off, sh, oh1)
            oh_hi = stop_valid(ih_off, sh, height, oh1)
            for j in range(kw):
                iw_off = j * dw - pl
                ow_lo = first_valid(iw_off, sw, ow_count)
                ow_hi = stop_valid(iw_off, sw, width, ow_count)
                dst = ((c * kh + i) * kw + j) * band
                if same_width:
                    im2col_tap_same_width(&x[n, c0 + c, 0, 0], width, ih_off, iw_off, oh0,
                                          oh1, oh_lo, oh_hi, ow_lo, ow_hi, &col[slot, dst])
                    continue
                for oh in range(oh0, oh1):
                    out = &col[slot, dst]
                    if oh < oh_lo or oh >= oh_hi:
                        for ow in range(ow_count):
                            out[ow] = 0
                    else:
                        xrow = &x[n, c0 + c, oh * sh + ih_off, 0]
                        for ow in range(ow_lo):
                            out[ow] = 0
                        if sw == 1:
                            for ow in range(ow_lo, ow_hi):
                                out[ow] = xrow[ow + iw_off]
                        elif sw != 2 or not gather_stride_2(xrow + 2 * ow_lo + iw_off,
                                                            out + ow_lo, ow_hi - ow_lo, x_end):
                            for ow in range(ow_lo, ow_hi):
                                out[ow] = xrow[ow * sw + iw_off]
                        for ow in range(ow_hi, ow_count):
                            out[ow] = 0
                    dst += ow_count


cdef inline void add_row_stride_2(const floating* a, const floating* b, floating* grow,
                                  index_t iw_off, index_t lo, index_t hi, index_t lo_b,
                                  index_t hi_b) noexcept nogil:
    """grow[ow * 2 + iw_off] += a[ow] for ow in [lo, hi); where b is not NULL (the next
    tap's row), also grow[ow * 2 + iw_off + 1] += b[ow] for ow in [lo_b, hi_b). In SIMD
    vectors where the build has them (add_stride_2), the scalar loops where not."""
    cdef index_t ow, done, both_lo, both_hi
    if b == NULL:
        done = lo + add_stride_2(grow + 2 * lo + iw_off, a + lo, NULL, hi - lo)
        for ow in range(done, hi):
            grow[2 * ow + iw_off] += a[ow]
        return
    # vectors over the outputs both taps reach, the scalar loop for the rest of each
    both_lo = max(lo, lo_b)
    both_hi = max(both_lo, min(hi, hi_b))
    done = both_lo + add_stride_2(grow + 2 * both_lo + iw_off, a + both_lo, b + both_lo,
                                  both_hi - both_lo)
    for ow in range(lo, min(both_lo, hi)):
        grow[2 * ow + iw_off] += a[ow]
    for ow in range(done, hi):
        grow[2 * ow + iw_off] += a[ow]
    for ow in range(lo_b, min(both_lo, hi_b)):
        grow[2 * ow + iw_off + 1] += b[ow]
    for ow in range(done, hi_b):
        grow[2 * ow + iw_off + 1] += b[ow]


cdef inline void col2im_band(
    const floating[:, ::1] col,  # IN row `slot`, layout as im2col_band
    index_t slot,
    index_t n, index_t c0, index_t channels,
    index_t kh, index_t kw, index_t sh, index_t sw,
    index_t pt, index_t pl, index_t dh, index_t dw,
    index_t oh0, index_t oh1, index_t ow_count,
    floating[:, :, :, ::1] gx,  # IN/OUT (N, C, H, W): accumulates (the adjoint of im2col)
) noexcept nogil:
    cdef index_t height = gx.shape[2], width = gx.shape[3]
    cdef index_t band = (oh1 - oh0) * ow_count
    cdef index_t c, i, j, oh, ow, ih_off, iw_off, src, taps
    cdef index_t oh_lo, oh_hi, ow_lo, ow_hi, lo_b, hi_b
    # stride-2 rows longer than one SIMD vector of 32 bytes run in vectors where the build
    # has them; shorter ones keep the plain loop (over DCGAN's rows of 8 columns the vector
    # path's per-row steps cost 5-10% where its vectors could not run)
    cdef bint vectors = FC_IR_VECTORS and sw == 2 and ow_count * sizeof(floating) > 32
    cdef const floating* inp
    cdef floating* grow  # row pointers, as in im2col_band
    for c in range(channels):
        for i in range(kh):
            ih_off = i * dh - pt
            oh_lo = first_valid(ih_off, sh, oh1)
            oh_hi = stop_valid(ih_off, sh, height, oh1)
            if oh_lo < oh0:
                oh_lo = oh0
            j = 0
            while j < kw:
                # in vectors, two neighbouring undilated taps fill the even and the odd
                # columns of the same rows: one pass adds both
                taps = 2 if vectors and dw == 1 and j + 1 < kw else 1
                iw_off = j * dw - pl
                ow_lo = first_valid(iw_off, sw, ow_count)
                ow_hi = stop_valid(iw_off, sw, width, ow_count)
                lo_b = first_valid(iw_off + 1, sw, ow_count)
                hi_b = stop_valid(iw_off + 1, sw, width, ow_count)
                src = ((c * kh + i) * kw + j) * band + (oh_lo - oh0) * ow_count
                if vectors:
                    for oh in range(oh_lo, oh_hi):
                        inp = &col[slot, src]
                        add_row_stride_2(inp, inp + band if taps == 2 else NULL,
                                         &gx[n, c0 + c, oh * sh + ih_off, 0], iw_off, ow_lo,
                                         ow_hi, lo_b, hi_b)
                        src += ow_count
                    j += taps
                    continue
                for oh in range(oh_lo, oh_hi):
                    grow = &gx[n, c0 + c, oh * sh + ih_off, 0]
                    inp = &col[slot, src]
                    if sw == 1:
                        for ow in range(ow_lo, ow_hi):
                            grow[ow + iw_off] += inp[ow]
                    else:
                        for ow in range(ow_lo, ow_hi):
                            grow[ow * sw + iw_off] += inp[ow]
                    src += ow_count
                j += 1
