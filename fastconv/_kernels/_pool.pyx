"""2-D pooling kernels: max (with argmax indices), average, Lp and adaptive average.

Dimension legend: N batch, C channels, H, W input size, KH, KW window size,
SH, SW stride, PH, PW padding (same on both sides), DH, DW dilation, OH, OW output size.

Notes
-----
Every parallel task owns one (n, c) plane, forward and backward: the backward
scatters (several windows overlap when the stride is smaller than the window)
then never race, and each element is summed in one fixed order, so results are
bit-identical for any thread count. Window bounds are clipped once per output
row/column, not tested per tap. Output sizes, ceil-mode window dropping, padding
limits and index ranges are validated by the caller (fastconv.functional).
Indices are flat offsets h * W + w within the input plane (int64).
"""

from cython.parallel cimport prange
from libc.math cimport INFINITY, fabs, pow

from fastconv._kernels._types cimport floating, index_t
from fastconv._kernels._shape cimport first_valid, stop_valid


def max_pool2d_forward(
    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
    floating[:, :, :, ::1] y,        # OUT (N, C, OH, OW)
    long long[:, :, :, ::1] idx,     # OUT (N, C, OH, OW) argmax as h * W + w
    index_t kh, index_t kw, index_t sh, index_t sw, index_t ph, index_t pw,
    index_t dh, index_t dw, int n_threads,
):
    """Window maximum; ties keep the first in scan order; NaN wins (the last NaN)."""
    cdef index_t planes = x.shape[0] * x.shape[1], n_ch = x.shape[1]
    cdef index_t height = x.shape[2], width = x.shape[3]
    cdef index_t oh_count = y.shape[2], ow_count = y.shape[3]
    cdef index_t plane, n, c, oh, ow, h0, w0, i, j, i_lo, i_hi, j_lo, j_hi, ih, iw, best_at
    cdef floating best, value
    with nogil:
        for plane in prange(planes, num_threads=n_threads, schedule="static"):
            n = plane // n_ch
            c = plane % n_ch
            for oh in range(oh_count):
                h0 = oh * sh - ph
                i_lo = first_valid(h0, dh, kh)
                i_hi = stop_valid(h0, dh, height, kh)
                for ow in range(ow_count):
                    w0 = ow * sw - pw
                    j_lo = first_valid(w0, dw, kw)
                    j_hi = stop_valid(w0, dw, width, kw)
                    best = -INFINITY
                    best_at = (h0 + i_lo * dh) * width + w0 + j_lo * dw
                    for i in range(i_lo, i_hi):
                        ih = h0 + i * dh
                        for j in range(j_lo, j_hi):
                            iw = w0 + j * dw
                            value = x[n, c, ih, iw]
                            if value > best or value != value:
                                best = value
                                best_at = ih * width + iw
                    y[n, c, oh, ow] = best
                    idx[n, c, oh, ow] = best_at


def max_pool2d_backward(
    const floating[:, :, :, ::1] gy,     # IN (N, C, OH, OW)
    const long long[:, :, :, ::1] idx,   # IN (N, C, OH, OW), each in [0, H * W)
    floating[:, :, :, ::1] gx,           # OUT (N, C, H, W), zero-filled by the caller
    int n_threads,
):
    """gx[argmax] += gy, one plane per task."""
    cdef index_t planes = gy.shape[0] * gy.shape[1], n_ch = gy.shape[1]
    cdef index_t oh_count = gy.shape[2], ow_count = gy.shape[3], width = gx.shape[3]
    cdef index_t plane, n, c, oh, ow, at
    with nogil:
        for plane in prange(planes, num_threads=n_threads, schedule="static"):
            n = plane // n_ch
            c = plane % n_ch
            for oh in range(oh_count):
                for ow in range(ow_count):
                    at = idx[n, c, oh, ow]
                    gx[n, c, at // width, at % width] += gy[n, c, oh, ow]


def max_unpool2d(
    const floating[:, :, :, ::1] y,      # IN (N, C, H, W) pooled values
    const long long[:, :, :, ::1] idx,   # IN (N, C, H, W), each in [0, OH * OW)
    floating[:, :, :, ::1] out,          # OUT (N, C, OH, OW), zero-filled by the caller
    int n_threads,
):
    """out[idx] = y within each plane (a later duplicate index overwrites)."""
    cdef index_t planes = y.shape[0] * y.shape[1], n_ch = y.shape[1]
    cdef index_t h_count = y.shape[2], w_count = y.shape[3], width = out.shape[3]
    cdef index_t plane, n, c, h, w, at
    with nogil:
        for plane in prange(planes, num_threads=n_threads, schedule="static"):
            n = plane // n_ch
            c = plane % n_ch
            for h in range(h_count):
                for w in range(w_count):
                    at = idx[n, c, h, w]
                    out[n, c, at // width, at % width] = y[n, c, h, w]


cdef inline index_t avg_divisor(index_t h0, index_t w0, index_t kh, index_t kw,
                                index_t height, index_t width, index_t ph, index_t pw,
                                bint count_include_pad, index_t divisor_override) noexcept nogil:
    """Average-pool divisor of the window at (h0, w0): padding counts, overhang does not."""
    cdef index_t h_end, w_end, h_lo, w_lo
    if divisor_override > 0:
        return divisor_override
    h_end = min(h0 + kh, height + ph)
    w_end = min(w0 + kw, width + pw)
    if count_include_pad:
        return (h_end - h0) * (w_end - w0)
    h_lo = max(h0, 0)
    w_lo = max(w0, 0)
    return (min(h_end, height) - h_lo) * (min(w_end, width) - w_lo)


def avg_pool2d_forward(
    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
    floating[:, :, :, ::1] y,        # OUT (N, C, OH, OW)
    index_t kh, index_t kw, index_t sh, index_t sw, index_t ph, index_t pw,
    bint count_include_pad, index_t divisor_override, int n_threads,
):
    """Window mean (double accumulator); divisor_override > 0 replaces the divisor."""
    cdef index_t planes = x.shape[0] * x.shape[1], n_ch = x.shape[1]
    cdef index_t height = x.shape[2], width = x.shape[3]
    cdef index_t oh_count = y.shape[2], ow_count = y.shape[3]
    cdef index_t plane, n, c, oh, ow, h0, w0, ih, iw, divisor
    cdef double acc
    with nogil:
        for plane in prange(planes, num_threads=n_threads, schedule="static"):
            n = plane // n_ch
            c = plane % n_ch
            for oh in range(oh_count):
                h0 = oh * sh - ph
                for ow in range(ow_count):
                    w0 = ow * sw - pw
                    divisor = avg_divisor(h0, w0, kh, kw, height, width, ph, pw,
                                          count_include_pad, divisor_override)
                    acc = 0
                    for ih in range(max(h0, 0), min(h0 + kh, height)):
                        for iw in range(max(w0, 0), min(w0 + kw, width)):
                            acc = acc + x[n, c, ih, iw]
                    y[n, c, oh, ow] = <floating> (acc / divisor)


def avg_pool2d_backward(
    const floating[:, :, :, ::1] gy,  # IN (N, C, OH, OW)
    floating[:, :, :, ::1] gx,        # OUT (N, C, H, W), zero-filled by the caller
    index_t kh, index_t kw, index_t sh, index_t sw, index_t ph, index_t pw,
    bint count_include_pad, index_t divisor_override, int n_threads,
):
    """gx[window] += gy / divisor, one plane per task."""
    cdef index_t planes = gy.shape[0] * gy.shape[1], n_ch = gy.shape[1]
    cdef index_t height = gx.shape[2], width = gx.shape[3]
    cdef index_t oh_count = gy.shape[2], ow_count = gy.shape[3]
    cdef index_t plane, n, c, oh, ow, h0, w0, ih, iw, divisor
    cdef floating share
    with nogil:
        for plane in prange(planes, num_threads=n_threads, schedule="static"):
            n = plane // n_ch
            c = plane % n_ch
            for oh in range(oh_count):
                h0 = oh * sh - ph
                for ow in range(ow_count):
                    w0 = ow * sw - pw
                    divisor = avg_divisor(h0, w0, kh, kw, height, width, ph, pw,
                                          count_include_pad, divisor_override)
                    share = gy[n, c, oh, ow] / divisor
                    for ih in range(max(h0, 0), min(h0 + kh, height)):
                        for iw in range(max(w0, 0), min(w0 + kw, width)):
                            gx[n, c, ih, iw] += share


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
    floating[:, :, :, ::1] gx,        # OUT (N, C, H, W), zero-filled by the caller
    double p, index_t kh, index_t kw, index_t sh, index_t sw, int n_threads,
):
    """gx += gy * scale * y^(1-p) * |x|^(p-1) * sign(x); 0 where y == 0 (subgradient)."""
    cdef index_t planes = gy.shape[0] * gy.shape[1], n_ch = gy.shape[1]
    cdef index_t height = x.shape[2], width = x.shape[3]
    cdef index_t oh_count = gy.shape[2], ow_count = gy.shape[3]
    cdef index_t plane, n, c, oh, ow, h0, w0, h1, w1, ih, iw
    cdef double factor, value, out
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
    cdef index_t plane, n, c, oh, ow, h0, h1, w0, w1, ih, iw
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
                    acc = 0
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            acc = acc + x[n, c, ih, iw]
                    y[n, c, oh, ow] = <floating> (acc / ((h1 - h0) * (w1 - w0)))


def adaptive_avg_pool2d_backward(
    const floating[:, :, :, ::1] gy,  # IN (N, C, OH, OW)
    floating[:, :, :, ::1] gx,        # OUT (N, C, H, W), zero-filled by the caller
    int n_threads,
):
    """gx[window] += gy / window size, one plane per task."""
    cdef index_t planes = gy.shape[0] * gy.shape[1], n_ch = gy.shape[1]
    cdef index_t height = gx.shape[2], width = gx.shape[3]
    cdef index_t oh_count = gy.shape[2], ow_count = gy.shape[3]
    cdef index_t plane, n, c, oh, ow, h0, h1, w0, w1, ih, iw
    cdef floating share
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
                    share = gy[n, c, oh, ow] / ((h1 - h0) * (w1 - w0))
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            gx[n, c, ih, iw] += share
