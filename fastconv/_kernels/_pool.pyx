"""2-D pooling kernels: max (with argmax indices), average, Lp and adaptive average.

Dimension legend: N batch, C channels, H, W input size, KH, KW window size,
SH, SW stride, PH, PW padding (same on both sides), DH, DW dilation, OH, OW output size.

Notes
-----
Every parallel task owns one (n, c) plane, forward and backward: the backward
scatters (several windows overlap when the stride is smaller than the window)
then never race, and each element is summed in one fixed order, so results are
bit-identical for any thread count. Output sizes, ceil-mode window dropping,
padding limits and index ranges are validated by the caller (fastconv.functional).
Indices are flat offsets h * W + w within the input plane (int64).

Max and average pooling split each output row into its interior columns, whose
windows lie wholly inside the row (no clipping), and the few edge columns on
either side. The interior is computed tap by tap over the whole run of columns:
for one window tap, output k reads input column k * SW + offset, a counted loop
over contiguous memory that compilers vectorise (stride 1 and 2 get their own
specialisation). Each output still sees its taps in the same scan order (window
row, then column), so ties, NaN and -inf behave exactly as a per-window scan. In the
AVX2 build, max pooling's whole 2x2 windows at stride 2 and its interior runs of windows
3 columns wide at stride 2 go through SIMD vectors of windows (_pool_rows.h), in that
same order.
Every kernel overwrites its whole output: backward kernels zero their own plane
(np.empty in the caller), so the plane stays in cache for the scatter that follows
and its pages are first touched by their thread.
"""

from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY, fabs, pow
from libc.string cimport memset

from fastconv._kernels._types cimport floating, index_t
from fastconv._kernels._shape cimport ceil_div, first_valid, stop_valid
from fastconv._kernels._pool_rows cimport max_row_2x2, max_run_3s2


cdef inline void interior_columns(index_t width, index_t ow_count, index_t kw, index_t sw,
                                  index_t pw, index_t dw, index_t* lo, index_t* hi) noexcept nogil:
    """[lo, hi): the output columns whose every tap lies inside [0, width)."""
    cdef index_t span = (kw - 1) * dw + 1
    lo[0] = min(ceil_div(pw, sw), ow_count)
    # the last full window starts at width - span
    hi[0] = max(min((width - span + pw) // sw + 1 if width >= span - pw else 0, ow_count), lo[0])


# --- max pooling -------------------------------------------------------------------

cdef inline void max_run(const floating* src, floating* best, long long* at, index_t count,
                         index_t step, long long pos) noexcept nogil:
    """One tap over a run of outputs: src[k * step] (input offset pos + k * step) vs best[k]."""
    cdef index_t k
    cdef floating value
    cdef bint take
    for k in range(count):
        value = src[k * step]
        take = (value > best[k]) | (value != value)  # NaN wins; ties keep the earlier tap
        best[k] = value if take else best[k]
        at[k] = pos + k * step if take else at[k]


cdef inline void max_run_rel(const floating* src, floating* best, int* rel, index_t count,
                             index_t step, index_t rows, index_t row_step, index_t taps,
                             index_t dw, int tap) noexcept nogil:
    """``rows`` x ``taps`` taps of a window over a run of outputs, in scan order, recording
    the winner's offset within the window (int32, as wide as a float lane: this
    vectorises, int64 does not). src: the first tap's input, tap: its offset."""
    cdef index_t k, i, j
    cdef floating value, b
    cdef int r
    cdef bint take
    for k in range(count):
        b = best[k]
        r = rel[k]
        for i in range(rows):
            for j in range(taps):
                value = src[k * step + i * row_step + j * dw]
                take = (value > b) | (value != value)
                b = value if take else b
                r = <int> (tap + i * row_step + j * dw) if take else r
        best[k] = b
        rel[k] = r


cdef inline void max_run_values(const floating* src, floating* best, index_t count,
                                index_t step, index_t rows, index_t row_step, index_t taps,
                                index_t dw) noexcept nogil:
    """max_run_rel without indices."""
    cdef index_t k, i, j
    cdef floating value, b
    for k in range(count):
        b = best[k]
        for i in range(rows):
            for j in range(taps):
                value = src[k * step + i * row_step + j * dw]
                b = value if (value > b) | (value != value) else b
        best[k] = b


cdef inline void max_rows(const floating* src, floating* best, long long* at, int* rel,
                          index_t count, index_t step, index_t rows, index_t row_step,
                          index_t kw, index_t dw, long long pos, int tap) noexcept nogil:
    """``rows`` window rows over a run of outputs (at or rel NULL: see max_plane)."""
    cdef index_t i
    cdef bint square = dw == 1 and rows == kw
    # Constant sizes let the compiler unroll the taps and vectorise over outputs, the
    # maximum kept in registers: whole 2x2 and 3x3 windows, strides 1 and 2. Other
    # windows go row by row (KW 2 and 3) or tap by tap.
    if rel != NULL and square and kw == 2 and step == 2:
        max_run_rel(src, best, rel, count, 2, 2, row_step, 2, 1, tap)
    elif rel != NULL and square and kw == 2 and step == 1:
        max_run_rel(src, best, rel, count, 1, 2, row_step, 2, 1, tap)
    elif rel != NULL and square and kw == 3 and step == 2:
        max_run_rel(src, best, rel, count, 2, 3, row_step, 3, 1, tap)
    elif rel != NULL and square and kw == 3 and step == 1:
        max_run_rel(src, best, rel, count, 1, 3, row_step, 3, 1, tap)
    elif at == NULL and square and kw == 2 and step == 2:
        max_run_values(src, best, count, 2, 2, row_step, 2, 1)
    elif at == NULL and square and kw == 2 and step == 1:
        max_run_values(src, best, count, 1, 2, row_step, 2, 1)
    elif at == NULL and square and kw == 3 and step == 2:
        max_run_values(src, best, count, 2, 3, row_step, 3, 1)
    elif at == NULL and square and kw == 3 and step == 1:
        max_run_values(src, best, count, 1, 3, row_step, 3, 1)
    else:
        for i in range(rows):
            max_row(src + i * row_step, best, at, rel, count, step, kw, dw,
                    pos + i * row_step, <int> (tap + i * row_step))


cdef inline void max_row(const floating* src, floating* best, long long* at, int* rel,
                         index_t count, index_t step, index_t kw, index_t dw, long long pos,
                         int tap) noexcept nogil:
    """One window row (kw taps) over a run of outputs."""
    cdef index_t j
    if rel != NULL and dw == 1 and kw == 2 and step == 2:
        max_run_rel(src, best, rel, count, 2, 1, 0, 2, 1, tap)
    elif rel != NULL and dw == 1 and kw == 2 and step == 1:
        max_run_rel(src, best, rel, count, 1, 1, 0, 2, 1, tap)
    elif rel != NULL and dw == 1 and kw == 3 and step == 2:
        max_run_rel(src, best, rel, count, 2, 1, 0, 3, 1, tap)
    elif rel != NULL and dw == 1 and kw == 3 and step == 1:
        max_run_rel(src, best, rel, count, 1, 1, 0, 3, 1, tap)
    elif at == NULL and dw == 1 and kw == 2 and step == 2:
        max_run_values(src, best, count, 2, 1, 0, 2, 1)
    elif at == NULL and dw == 1 and kw == 2 and step == 1:
        max_run_values(src, best, count, 1, 1, 0, 2, 1)
    elif at == NULL and dw == 1 and kw == 3 and step == 2:
        max_run_values(src, best, count, 2, 1, 0, 3, 1)
    elif at == NULL and dw == 1 and kw == 3 and step == 1:
        max_run_values(src, best, count, 1, 1, 0, 3, 1)
    else:
        for j in range(kw):
            if rel != NULL:
                if step == 1:
                    max_run_rel(src + j * dw, best, rel, count, 1, 1, 0, 1, 1,
                                <int> (tap + j * dw))
                elif step == 2:
                    max_run_rel(src + j * dw, best, rel, count, 2, 1, 0, 1, 1,
                                <int> (tap + j * dw))
                else:
                    max_run_rel(src + j * dw, best, rel, count, step, 1, 0, 1, 1,
                                <int> (tap + j * dw))
            elif at == NULL:
                if step == 1:
                    max_run_values(src + j * dw, best, count, 1, 1, 0, 1, 1)
                elif step == 2:
                    max_run_values(src + j * dw, best, count, 2, 1, 0, 1, 1)
                else:
                    max_run_values(src + j * dw, best, count, step, 1, 0, 1, 1)
            else:
                max_run(src + j * dw, best, at, count, step, pos + j * dw)


cdef inline void max_window(const floating* xp, floating* yr, long long* ir, index_t ow,
                            index_t h0, index_t i_lo, index_t i_hi, index_t width,
                            index_t kw, index_t sw, index_t pw, index_t dh,
                            index_t dw) noexcept nogil:
    """One (edge) window, clipped tap by tap: yr[ow] and, unless ir is NULL, ir[ow]."""
    cdef index_t w0 = ow * sw - pw
    cdef index_t j_lo = first_valid(w0, dw, kw), j_hi = stop_valid(w0, dw, width, kw)
    cdef index_t i, j, at, best_at = (h0 + i_lo * dh) * width + w0 + j_lo * dw
    cdef floating best = -INFINITY, value
    for i in range(i_lo, i_hi):
        for j in range(j_lo, j_hi):
            at = (h0 + i * dh) * width + w0 + j * dw
            value = xp[at]
            if value > best or value != value:
                best = value
                best_at = at
    yr[ow] = best
    if ir != NULL:
        ir[ow] = best_at


cdef void max_plane(const floating* xp, floating* yp, long long* ip, int* rel,
                    index_t height, index_t width, index_t oh_count, index_t ow_count,
                    index_t kh, index_t kw, index_t sh, index_t sw, index_t ph, index_t pw,
                    index_t dh, index_t dw) noexcept nogil:
    """Max pooling of one plane. ip NULL: no indices; else rel NULL: the argmax is tracked
    as int64 plane offsets, else as int32 offsets within the window (OW scratch)."""
    cdef index_t lo, hi, count, oh, ow, h0, i_lo, i_hi, k, w_first, first
    cdef floating* best
    cdef long long* at = NULL
    # windows 3 wide at stride 2 in SIMD vectors (tap offsets within a window as int)
    cdef bint vector_3s2 = (kw == 3 and sw == 2 and dw == 1 and (ip == NULL or rel != NULL)
                            and (kh - 1) * dh * width + 2 <= 2147483647)
    interior_columns(width, ow_count, kw, sw, pw, dw, &lo, &hi)
    count = hi - lo
    w_first = lo * sw - pw
    for oh in range(oh_count):
        h0 = oh * sh - ph
        i_lo = first_valid(h0, dh, kh)
        i_hi = stop_valid(h0, dh, height, kh)
        for ow in range(lo):
            max_window(xp, yp + oh * ow_count, NULL if ip == NULL else ip + oh * ow_count,
                       ow, h0, i_lo, i_hi, width, kw, sw, pw, dh, dw)
        for ow in range(hi, ow_count):
            max_window(xp, yp + oh * ow_count, NULL if ip == NULL else ip + oh * ow_count,
                       ow, h0, i_lo, i_hi, width, kw, sw, pw, dh, dw)
        if count == 0:
            continue
        best = yp + oh * ow_count + lo
        # an all -inf window reports its first tap
        first = (h0 + i_lo * dh) * width + w_first
        if ip != NULL:
            at = ip + oh * ow_count + lo
        if vector_3s2 and max_run_3s2(xp + first, dh * width, i_hi - i_lo, best, at, count,
                                      first):
            continue
        for k in range(count):
            best[k] = -INFINITY
        if ip != NULL:
            if rel != NULL:
                for k in range(count):
                    rel[k] = 0
            else:
                for k in range(count):
                    at[k] = first + k * sw
        max_rows(xp + first, best, at, rel, count, sw, i_hi - i_lo, dh * width, kw, dw,
                 first, 0)
        if rel != NULL:
            for k in range(count):
                at[k] = first + k * sw + rel[k]


cdef void max_plane_2x2(const floating* xp, floating* yp, long long* ip, index_t oh_count,
                        index_t ow_count, index_t width) noexcept nogil:
    """max_plane for whole 2x2 windows at stride 2 (no padding or dilation).

    Small planes (LeNet's 28x28 and 10x10) have short rows, where max_plane's
    separate init, tap and index loops per row cost more than the taps: one loop
    per row here (3x faster on 64x6x28x28)."""
    cdef index_t oh
    for oh in range(oh_count):
        max_row_2x2(xp + 2 * oh * width, xp + (2 * oh + 1) * width, yp + oh * ow_count,
                    NULL if ip == NULL else ip + oh * ow_count, ow_count, 2 * oh * width,
                    <int> width)


def max_pool2d_forward(
    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
    floating[:, :, :, ::1] y,        # OUT (N, C, OH, OW)
    long long[:, :, :, ::1] idx,     # OUT (N, C, OH, OW) argmax as h * W + w, or None
    int[:, ::1] workspace,           # SCRATCH (threads, OW), or None: int64 argmax tracking
    index_t kh, index_t kw, index_t sh, index_t sw, index_t ph, index_t pw,
    index_t dh, index_t dw, int n_threads,
):
    """Window maximum; ties keep the first in scan order; NaN wins (the last NaN)."""
    cdef index_t planes = x.shape[0] * x.shape[1]
    cdef index_t height = x.shape[2], width = x.shape[3]
    cdef index_t oh_count = y.shape[2], ow_count = y.shape[3]
    cdef index_t in_plane = height * width, out_plane = oh_count * ow_count
    cdef index_t plane, slot
    cdef bint with_idx = idx is not None
    # int32 window offsets whenever the window's span in the plane fits (and scratch given)
    cdef bint narrow = (with_idx and workspace is not None
                        and (kh - 1) * dh * width + (kw - 1) * dw <= 2147483647)
    if planes == 0 or out_plane == 0:
        return
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef floating* yp = &y[0, 0, 0, 0]
    cdef long long* ip = &idx[0, 0, 0, 0] if with_idx else NULL
    # whole 2x2 windows at stride 2 (also needs a width that fits an int: rel)
    cdef bint pairs = (kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
                       and dh == 1 and dw == 1 and 2 * oh_count <= height
                       and 2 * ow_count <= width and width < 2147483647)
    if pairs:
        with nogil:
            if n_threads == 1:  # no parallel region: at batch 1 it costs as much as the work
                for plane in range(planes):
                    max_plane_2x2(xp + plane * in_plane, yp + plane * out_plane,
                                  ip + plane * out_plane if with_idx else NULL,
                                  oh_count, ow_count, width)
            else:
                for plane in prange(planes, num_threads=n_threads, schedule="static"):
                    max_plane_2x2(xp + plane * in_plane, yp + plane * out_plane,
                                  ip + plane * out_plane if with_idx else NULL,
                                  oh_count, ow_count, width)
        return
    slot = 0
    with nogil, parallel(num_threads=n_threads):
        slot = threadid()
        for plane in prange(planes, schedule="static"):
            max_plane(xp + plane * in_plane, yp + plane * out_plane,
                      ip + plane * out_plane if with_idx else NULL,
                      &workspace[slot, 0] if narrow else NULL,
                      height, width, oh_count, ow_count, kh, kw, sh, sw, ph, pw, dh, dw)


cdef index_t scatter_planes(const floating[:, :, :, ::1] src, const long long[:, :, :, ::1] idx,
                            floating[:, :, :, ::1] dst, bint add, int n_threads) noexcept:
    """dst = 0, then dst[idx] += src (add) or = src, plane by plane. Returns the number of
    indices outside dst's plane: those are skipped, never written."""
    cdef index_t planes = src.shape[0] * src.shape[1]
    cdef index_t src_plane = src.shape[2] * src.shape[3]
    cdef index_t dst_plane = dst.shape[2] * dst.shape[3]
    cdef index_t plane, k, at, bad = 0
    cdef const floating* sp
    cdef const long long* ip
    cdef floating* dp
    if planes == 0:
        return 0
    if dst_plane == 0 or src_plane == 0:  # every index is outside / nothing to scatter
        if dst_plane:
            memset(&dst[0, 0, 0, 0], 0, planes * dst_plane * sizeof(floating))
        return planes * src_plane
    sp = &src[0, 0, 0, 0]
    ip = &idx[0, 0, 0, 0]
    dp = &dst[0, 0, 0, 0]
    with nogil:
        for plane in prange(planes, num_threads=n_threads, schedule="static"):
            # zeroed by the thread that scatters: the plane stays in its cache
            memset(dp + plane * dst_plane, 0, dst_plane * sizeof(floating))
            for k in range(plane * src_plane, (plane + 1) * src_plane):
                at = ip[k]
                if <size_t> at >= <size_t> dst_plane:  # also catches at < 0
                    bad += 1
                elif add:
                    dp[plane * dst_plane + at] += sp[k]
                else:
                    dp[plane * dst_plane + at] = sp[k]
    return bad


def max_pool2d_backward(
    const floating[:, :, :, ::1] gy,     # IN (N, C, OH, OW)
    const long long[:, :, :, ::1] idx,   # IN (N, C, OH, OW), flat offsets in the plane
    floating[:, :, :, ::1] gx,           # OUT (N, C, H, W), any contents (zeroed here)
    int n_threads,
):
    """gx = 0, then gx[argmax] += gy, one plane per task.

    Returns the number of indices outside [0, H * W): those are skipped (never
    written); the caller raises when it is not 0.
    """
    return scatter_planes(gy, idx, gx, True, n_threads)


def max_unpool2d(
    const floating[:, :, :, ::1] y,      # IN (N, C, H, W) pooled values
    const long long[:, :, :, ::1] idx,   # IN (N, C, H, W), flat offsets in the output plane
    floating[:, :, :, ::1] out,          # OUT (N, C, OH, OW), any contents (zeroed here)
    int n_threads,
):
    """out = 0, then out[idx] = y within each plane (a later duplicate index overwrites).

    Returns the number of indices outside [0, OH * OW): those are skipped (never
    written); the caller raises when it is not 0.
    """
    return scatter_planes(y, idx, out, False, n_threads)

# --- average pooling ---------------------------------------------------------------

cdef inline index_t avg_divisor(index_t h0, index_t w0, index_t kh, index_t kw,
                                index_t height, index_t width, index_t ph, index_t pw,
                                bint count_include_pad, index_t divisor_override) noexcept nogil:
    """Average-pool divisor of the window at (h0, w0): padding counts, overhang does not."""
    cdef index_t h_end, w_end, h_lo, w_lo
    if divisor_override != 0:  # any non-zero value, negative too (as PyTorch)
        return divisor_override
    h_end = min(h0 + kh, height + ph)
    w_end = min(w0 + kw, width + pw)
    if count_include_pad:
        return (h_end - h0) * (w_end - w0)
    h_lo = max(h0, 0)
    w_lo = max(w0, 0)
    return (min(h_end, height) - h_lo) * (min(w_end, width) - w_lo)


# An average-pooling row with at most this many interior windows sums window by window
# (sum_block) rather than tap by tap across the windows (sum_rows): few, large windows,
# such as a 7x7 mean over a 7x7 map, would otherwise pay a call per tap.
cdef enum:
    FEW_WINDOWS = 4


cdef inline double sum_block(const floating* src, index_t rows, index_t cols,
                             index_t row_step) noexcept nogil:
    """Sum of a rows x cols block whose rows lie row_step apart, in double: eight
    interleaved partial sums (two SIMD vectors of independent chains: a 7x7 window's
    49 taps in 6 steps) and one for each row's last cols % 8, combined in a fixed order,
    so the result depends on the block alone, never on threads. Plain locals, not an
    array: the compiler keeps them in registers."""
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0, rest = 0
    cdef index_t i, j
    cdef const floating* row
    if cols == row_step:  # whole rows: one contiguous run
        cols = rows * cols
        rows = 1
    for i in range(rows):
        row = src + i * row_step
        j = 0
        while j + 8 <= cols:
            s0 = s0 + row[j]
            s1 = s1 + row[j + 1]
            s2 = s2 + row[j + 2]
            s3 = s3 + row[j + 3]
            s4 = s4 + row[j + 4]
            s5 = s5 + row[j + 5]
            s6 = s6 + row[j + 6]
            s7 = s7 + row[j + 7]
            j = j + 8
        while j < cols:
            rest = rest + row[j]
            j = j + 1
    return (((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7))) + rest


cdef inline void add_block(floating* dst, floating value, index_t rows, index_t cols,
                           index_t row_step) noexcept nogil:
    """dst += value over a rows x cols block whose rows lie row_step apart."""
    cdef index_t i, j
    for i in range(rows):
        for j in range(cols):
            dst[i * row_step + j] += value


cdef inline floating avg_window(const floating* xp, index_t h0, index_t w0, index_t kh,
                                index_t kw, index_t height, index_t width, index_t ph,
                                index_t pw, bint count_include_pad,
                                index_t divisor_override) noexcept nogil:
    """Mean of one (edge) window at (h0, w0), clipped to the plane."""
    cdef index_t ih = max(h0, 0), iw = max(w0, 0)
    cdef index_t rows = min(h0 + kh, height) - ih, cols = min(w0 + kw, width) - iw
    cdef double total = 0
    if rows > 0 and cols > 0:
        total = sum_block(xp + ih * width + iw, rows, cols, width)
    return <floating> (total / avg_divisor(h0, w0, kh, kw, height, width, ph, pw,
                                           count_include_pad, divisor_override))


cdef inline void avg_window_grad(floating grad, floating* gxp, index_t h0, index_t w0,
                                 index_t kh, index_t kw, index_t height, index_t width,
                                 index_t ph, index_t pw, bint count_include_pad,
                                 index_t divisor_override) noexcept nogil:
    """gx += grad / divisor over one (edge) window at (h0, w0), clipped to the plane."""
    cdef index_t ih, iw
    cdef floating part = grad / avg_divisor(h0, w0, kh, kw, height, width, ph, pw,
                                            count_include_pad, divisor_override)
    for ih in range(max(h0, 0), min(h0 + kh, height)):
        for iw in range(max(w0, 0), min(w0 + kw, width)):
            gxp[ih * width + iw] += part


cdef inline void sum_run(const floating* src, double* acc, index_t count, index_t step,
                         index_t rows, index_t row_step, index_t taps) noexcept nogil:
    """acc[k] += the rows x taps window taps of output k, in scan order."""
    cdef index_t k, i, j
    cdef double total
    for k in range(count):
        total = acc[k]
        for i in range(rows):
            for j in range(taps):
                total = total + src[k * step + i * row_step + j]
        acc[k] = total


cdef inline void sum_rows(const floating* src, double* acc, index_t count, index_t step,
                          index_t rows, index_t row_step, index_t kw) noexcept nogil:
    """``rows`` window rows over a run of outputs (see max_rows for the constant sizes)."""
    cdef index_t i, j
    if rows == kw == 2 and step == 2:
        sum_run(src, acc, count, 2, 2, row_step, 2)
    elif rows == kw == 2 and step == 1:
        sum_run(src, acc, count, 1, 2, row_step, 2)
    elif rows == kw == 3 and step == 2:
        sum_run(src, acc, count, 2, 3, row_step, 3)
    elif rows == kw == 3 and step == 1:
        sum_run(src, acc, count, 1, 3, row_step, 3)
    else:
        for i in range(rows):
            for j in range(kw):
                if step == 1:
                    sum_run(src + i * row_step + j, acc, count, 1, 1, 0, 1)
                elif step == 2:
                    sum_run(src + i * row_step + j, acc, count, 2, 1, 0, 1)
                else:
                    sum_run(src + i * row_step + j, acc, count, step, 1, 0, 1)


cdef inline void add_run(floating* dst, const floating* share, index_t count, index_t step,
                         index_t rows, index_t row_step, index_t taps) noexcept nogil:
    """dst += share[k] over the rows x taps window of output k; the windows of one call
    must not overlap (step >= taps), or the loop would carry a dependence."""
    cdef index_t k, i, j
    cdef floating part
    for k in range(count):
        part = share[k]
        for i in range(rows):
            for j in range(taps):
                dst[k * step + i * row_step + j] += part


cdef inline void add_rows(floating* dst, const floating* share, index_t count, index_t step,
                          index_t rows, index_t row_step, index_t kw) noexcept nogil:
    """``rows`` window rows over a run of outputs: whole windows where stride = kernel
    (2 and 3), else tap by tap (windows of one tap never overlap)."""
    cdef index_t i, j
    if rows == kw == 2 and step == 2:
        add_run(dst, share, count, 2, 2, row_step, 2)
    elif rows == kw == 3 and step == 3:
        add_run(dst, share, count, 3, 3, row_step, 3)
    else:
        for i in range(rows):
            for j in range(kw):
                if step == 1:
                    add_run(dst + i * row_step + j, share, count, 1, 1, 0, 1)
                elif step == 2:
                    add_run(dst + i * row_step + j, share, count, 2, 1, 0, 1)
                else:
                    add_run(dst + i * row_step + j, share, count, step, 1, 0, 1)


cdef void avg_plane(const floating* xp, floating* yp, double* acc,
                    index_t height, index_t width, index_t oh_count, index_t ow_count,
                    index_t kh, index_t kw, index_t sh, index_t sw, index_t ph, index_t pw,
                    bint count_include_pad, index_t divisor_override) noexcept nogil:
    """Average pooling of one plane (double accumulators, acc: OW scratch)."""
    cdef index_t lo, hi, count, oh, ow, h0, ih, k, w_first, divisor
    interior_columns(width, ow_count, kw, sw, pw, 1, &lo, &hi)
    count = hi - lo
    w_first = lo * sw - pw
    for oh in range(oh_count):
        h0 = oh * sh - ph
        for ow in range(lo):
            yp[oh * ow_count + ow] = avg_window(xp, h0, ow * sw - pw, kh, kw, height, width,
                                                ph, pw, count_include_pad, divisor_override)
        for ow in range(hi, ow_count):
            yp[oh * ow_count + ow] = avg_window(xp, h0, ow * sw - pw, kh, kw, height, width,
                                                ph, pw, count_include_pad, divisor_override)
        if count == 0:
            continue
        ih = max(h0, 0)
        # every interior window has the same divisor
        divisor = avg_divisor(h0, w_first, kh, kw, height, width, ph, pw,
                              count_include_pad, divisor_override)
        if count <= FEW_WINDOWS:
            for k in range(count):
                yp[oh * ow_count + lo + k] = <floating> (sum_block(
                    xp + ih * width + w_first + k * sw, min(h0 + kh, height) - ih, kw,
                    width) / divisor)
            continue
        for k in range(count):
            acc[k] = 0
        sum_rows(xp + ih * width + w_first, acc, count, sw, min(h0 + kh, height) - ih, width,
                 kw)
        for k in range(count):
            yp[oh * ow_count + lo + k] = <floating> (acc[k] / divisor)


def avg_pool2d_forward(
    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
    floating[:, :, :, ::1] y,        # OUT (N, C, OH, OW)
    double[:, ::1] workspace,        # SCRATCH (threads, OW)
    index_t kh, index_t kw, index_t sh, index_t sw, index_t ph, index_t pw,
    bint count_include_pad, index_t divisor_override, int n_threads,
):
    """Window mean (double accumulator); a non-zero divisor_override replaces the divisor."""
    cdef index_t planes = x.shape[0] * x.shape[1]
    cdef index_t height = x.shape[2], width = x.shape[3]
    cdef index_t oh_count = y.shape[2], ow_count = y.shape[3]
    cdef index_t in_plane = height * width, out_plane = oh_count * ow_count
    cdef index_t plane, slot
    if planes == 0 or out_plane == 0:
        return
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef floating* yp = &y[0, 0, 0, 0]
    cdef index_t divisor = divisor_override if divisor_override != 0 else in_plane
    if out_plane == 1 and kh == height and kw == width and ph == 0 and pw == 0:
        # a global mean (a network's head): one contiguous sum per plane, none of the
        # window bookkeeping a plane would otherwise pay for its single window
        with nogil:
            for plane in prange(planes, num_threads=n_threads, schedule="static"):
                yp[plane] = <floating> (sum_block(xp + plane * in_plane, 1, in_plane,
                                                  in_plane) / divisor)
        return
    slot = 0
    with nogil, parallel(num_threads=n_threads):
        slot = threadid()
        for plane in prange(planes, schedule="static"):
            avg_plane(xp + plane * in_plane, yp + plane * out_plane, &workspace[slot, 0],
                      height, width, oh_count, ow_count, kh, kw, sh, sw, ph, pw,
                      count_include_pad, divisor_override)


cdef void avg_grad_plane(const floating* gyp, floating* gxp, floating* share,
                         index_t height, index_t width, index_t oh_count, index_t ow_count,
                         index_t kh, index_t kw, index_t sh, index_t sw, index_t ph, index_t pw,
                         bint count_include_pad, index_t divisor_override) noexcept nogil:
    """gx plane = 0, then each gy / divisor added over its window (share: OW scratch)."""
    cdef index_t lo, hi, count, oh, ow, h0, ih, k, w_first, divisor
    interior_columns(width, ow_count, kw, sw, pw, 1, &lo, &hi)
    count = hi - lo
    w_first = lo * sw - pw
    memset(gxp, 0, height * width * sizeof(floating))
    for oh in range(oh_count):
        h0 = oh * sh - ph
        for ow in range(lo):
            avg_window_grad(gyp[oh * ow_count + ow], gxp, h0, ow * sw - pw, kh, kw, height,
                            width, ph, pw, count_include_pad, divisor_override)
        for ow in range(hi, ow_count):
            avg_window_grad(gyp[oh * ow_count + ow], gxp, h0, ow * sw - pw, kh, kw, height,
                            width, ph, pw, count_include_pad, divisor_override)
        if count == 0:
            continue
        divisor = avg_divisor(h0, w_first, kh, kw, height, width, ph, pw,
                              count_include_pad, divisor_override)
        ih = max(h0, 0)
        if count <= FEW_WINDOWS:
            for k in range(count):
                add_block(gxp + ih * width + w_first + k * sw,
                          gyp[oh * ow_count + lo + k] / divisor, min(h0 + kh, height) - ih,
                          kw, width)
            continue
        for k in range(count):
            share[k] = gyp[oh * ow_count + lo + k] / divisor
        add_rows(gxp + ih * width + w_first, share, count, sw, min(h0 + kh, height) - ih,
                 width, kw)


def avg_pool2d_backward(
    const floating[:, :, :, ::1] gy,  # IN (N, C, OH, OW)
    floating[:, :, :, ::1] gx,        # OUT (N, C, H, W), any contents (zeroed here)
    floating[:, ::1] workspace,       # SCRATCH (threads, OW)
    index_t kh, index_t kw, index_t sh, index_t sw, index_t ph, index_t pw,
    bint count_include_pad, index_t divisor_override, int n_threads,
):
    """gx = 0, then gx[window] += gy / divisor, one plane per task."""
    cdef index_t planes = gy.shape[0] * gy.shape[1]
    cdef index_t height = gx.shape[2], width = gx.shape[3]
    cdef index_t oh_count = gy.shape[2], ow_count = gy.shape[3]
    cdef index_t in_plane = height * width, out_plane = oh_count * ow_count
    cdef index_t plane, slot
    if planes == 0 or in_plane == 0:
        return
    cdef floating* gxp = &gx[0, 0, 0, 0]
    if out_plane == 0:
        memset(gxp, 0, planes * in_plane * sizeof(floating))
        return
    cdef const floating* gyp = &gy[0, 0, 0, 0]
    slot = 0
    with nogil, parallel(num_threads=n_threads):
        slot = threadid()
        for plane in prange(planes, schedule="static"):
            avg_grad_plane(gyp + plane * out_plane, gxp + plane * in_plane, &workspace[slot, 0],
                           height, width, oh_count, ow_count, kh, kw, sh, sw, ph, pw,
                           count_include_pad, divisor_override)


cdef inline double abs_pow(double value, double p) noexcept nogil:
    if p == 2:
        return value * value
    if p == 1:
        return fabs(value)
    return pow(fabs(value), p)


def lp_pool2d_forward(
    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
    floating[:, :, :, ::1] y,        # OUT (N, C, OH, OW)
    double p, index_t kh, index_t kw, index_t sh, index_t sw, int n_threads,
):
    """(sum |x|^p * KH*KW / n_inside)^(1/p); n_inside < KH*KW only for ceil-mode overhang."""
    cdef index_t planes = x.shape[0] * x.shape[1], n_ch = x.shape[1]
    cdef index_t height = x.shape[2], width = x.shape[3]
    cdef index_t oh_count = y.shape[2], ow_count = y.shape[3]
    cdef index_t plane, n, c, oh, ow, h0, w0, h1, w1, ih, iw
    cdef double acc
    with nogil:
        for plane in prange(planes, num_threads=n_threads, schedule="static"):
            n = plane // n_ch
            c = plane % n_ch
            for oh in range(oh_count):
                h0 = oh * sh
                h1 = min(h0 + kh, height)
                for ow in range(ow_count):
                    w0 = ow * sw
                    w1 = min(w0 + kw, width)
                    acc = 0
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            acc = acc + abs_pow(x[n, c, ih, iw], p)
                    acc = acc * <double> (kh * kw) / <double> ((h1 - h0) * (w1 - w0))
                    y[n, c, oh, ow] = <floating> pow(acc, 1.0 / p)


def lp_pool2d_backward(
    const floating[:, :, :, ::1] gy,  # IN (N, C, OH, OW)
    const floating[:, :, :, ::1] x,   # IN (N, C, H, W)
    const floating[:, :, :, ::1] y,   # IN (N, C, OH, OW): the forward's output
    floating[:, :, :, ::1] gx,        # OUT (N, C, H, W), any contents (zeroed here)
    double p, index_t kh, index_t kw, index_t sh, index_t sw, int n_threads,
):
    """gx = sum over windows of gy * scale * y^(1-p) * |x|^(p-1) * sign(x); a window
    whose y is 0 adds nothing (a subgradient)."""
    cdef index_t planes = gy.shape[0] * gy.shape[1], n_ch = gy.shape[1]
    cdef index_t height = x.shape[2], width = x.shape[3]
    cdef index_t oh_count = gy.shape[2], ow_count = gy.shape[3]
    cdef index_t plane, n, c, oh, ow, h0, w0, h1, w1, ih, iw
    cdef double factor, value, out
    with nogil:
        for plane in prange(planes, num_threads=n_threads, schedule="static"):
            n = plane // n_ch
            c = plane % n_ch
            memset(&gx[n, c, 0, 0], 0, height * width * sizeof(floating))
            for oh in range(oh_count):
                h0 = oh * sh
                h1 = min(h0 + kh, height)
                for ow in range(ow_count):
                    w0 = ow * sw
                    w1 = min(w0 + kw, width)
                    out = y[n, c, oh, ow]
                    if out == 0:
                        continue
                    factor = (gy[n, c, oh, ow] * <double> (kh * kw)
                              / <double> ((h1 - h0) * (w1 - w0)) * pow(out, 1.0 - p))
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            value = x[n, c, ih, iw]
                            if value > 0:
                                gx[n, c, ih, iw] += <floating> (factor * abs_pow(value, p - 1))
                            elif value < 0:
                                gx[n, c, ih, iw] -= <floating> (factor * abs_pow(value, p - 1))
                            elif value != value:  # a NaN input has a NaN gradient
                                gx[n, c, ih, iw] += <floating> value


cdef inline index_t adaptive_start(index_t i, index_t in_size, index_t out_size) noexcept nogil:
    return (i * in_size) // out_size


cdef inline index_t adaptive_stop(index_t i, index_t in_size, index_t out_size) noexcept nogil:
    return ((i + 1) * in_size + out_size - 1) // out_size


def adaptive_avg_pool2d_forward(
    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
    floating[:, :, :, ::1] y,        # OUT (N, C, OH, OW)
    int n_threads,
):
    """Mean over windows [floor(i*H/OH), ceil((i+1)*H/OH)) per axis."""
    cdef index_t planes = x.shape[0] * x.shape[1], n_ch = x.shape[1]
    cdef index_t height = x.shape[2], width = x.shape[3]
    cdef index_t oh_count = y.shape[2], ow_count = y.shape[3]
    cdef index_t plane, n, c, oh, ow, h0, h1, w0, w1
    cdef double acc
    with nogil:
        for plane in prange(planes, num_threads=n_threads, schedule="static"):
            n = plane // n_ch
            c = plane % n_ch
            for oh in range(oh_count):
                h0 = adaptive_start(oh, height, oh_count)
                h1 = adaptive_stop(oh, height, oh_count)
                for ow in range(ow_count):
                    w0 = adaptive_start(ow, width, ow_count)
                    w1 = adaptive_stop(ow, width, ow_count)
                    acc = sum_block(&x[n, c, h0, w0], h1 - h0, w1 - w0, width)
                    y[n, c, oh, ow] = <floating> (acc / ((h1 - h0) * (w1 - w0)))


def adaptive_avg_pool2d_backward(
    const floating[:, :, :, ::1] gy,  # IN (N, C, OH, OW)
    floating[:, :, :, ::1] gx,        # OUT (N, C, H, W), any contents (zeroed here)
    int n_threads,
):
    """gx = sum over the windows covering each pixel of gy / window size, one plane
    per task."""
    cdef index_t planes = gy.shape[0] * gy.shape[1], n_ch = gy.shape[1]
    cdef index_t height = gx.shape[2], width = gx.shape[3]
    cdef index_t oh_count = gy.shape[2], ow_count = gy.shape[3]
    cdef index_t plane, n, c, oh, ow, h0, h1, w0, w1
    cdef floating share
    with nogil:
        for plane in prange(planes, num_threads=n_threads, schedule="static"):
            n = plane // n_ch
            c = plane % n_ch
            memset(&gx[n, c, 0, 0], 0, height * width * sizeof(floating))
            for oh in range(oh_count):
                h0 = adaptive_start(oh, height, oh_count)
                h1 = adaptive_stop(oh, height, oh_count)
                for ow in range(ow_count):
                    w0 = adaptive_start(ow, width, ow_count)
                    w1 = adaptive_stop(ow, width, ow_count)
                    share = gy[n, c, oh, ow] / ((h1 - h0) * (w1 - w0))
                    add_block(&gx[n, c, h0, w0], share, h1 - h0, w1 - w0, width)
