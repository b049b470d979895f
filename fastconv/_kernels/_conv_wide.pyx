"""Direct stride-1 convolution over "wide" rows, forward and weight gradient.

Dimension legend: N batch, C input channels, H, W input size, K output channels,
G groups, CG = C / G, KG = K / G, KH, KW kernel size, DH, DW dilation, OH, OW
output size, HP = OH + (KH - 1) * DH and WP = OW + (KW - 1) * DW the padded input
size a stride-1 output needs, L = (OH - 1) * WP + OW.

Notes
-----
With stride 1, output pixel (oh, ow) reads the padded input at (oh + i * DH,
ow + j * DW). Computing the output on the padded width WP instead of OW (the
"wide" output; the extra columns are discarded) makes every kernel tap one
contiguous run of L elements: acc[p] += w[i, j] * xpad[p + i * DH * WP + j * DW]
for p < L. Those long loops vectorise, where rows of a small image (28 or 10
outputs) would leave the loop overhead to dominate. Taps go four at a time, so
the accumulator is loaded and stored once per four taps, for two output
channels at once, which share the input loads.

Each task pads one image's channels of one group into its thread's workspace
(zero outside the image, so padding costs no tests in the loops), then owns whole
outputs: forward, a block of output channels of one image; weight gradient, a
fixed chunk of images whose sums land in the chunk's own partial buffer, reduced
in chunk order. Each output is summed in one fixed order: results are
bit-identical for any thread count.
"""

from cython.parallel cimport prange, threadid

from fastconv._kernels._band cimport copy_band
from fastconv._kernels._types cimport floating, index_t

cdef enum:
    KBLOCK = 8  # output channels per forward task


cdef inline index_t tap_offset(index_t t, index_t kw, index_t dh, index_t dw,
                              index_t wp) noexcept nogil:
    """Offset of kernel tap t = i * KW + j in a padded plane of row length wp."""
    return (t // kw) * dh * wp + (t % kw) * dw


cdef inline void taps_two(floating* a0, floating* a1, const floating* xc,
                          const floating* wa, const floating* wb, index_t kh, index_t kw,
                          index_t dh, index_t dw, index_t wp, index_t length) noexcept nogil:
    """a0[p] += sum_t wa[t] * xc[p + off_t] and a1 likewise with wb, taps t in order."""
    cdef index_t taps = kh * kw, t = 0, p
    cdef floating a_0, a_1, a_2, a_3, b_0, b_1, b_2, b_3, v0, v1, v2, v3
    cdef const floating* x0
    cdef const floating* x1
    cdef const floating* x2
    cdef const floating* x3
    while t + 4 <= taps:
        x0 = xc + tap_offset(t, kw, dh, dw, wp)
        x1 = xc + tap_offset(t + 1, kw, dh, dw, wp)
        x2 = xc + tap_offset(t + 2, kw, dh, dw, wp)
        x3 = xc + tap_offset(t + 3, kw, dh, dw, wp)
        a_0 = wa[t]; a_1 = wa[t + 1]; a_2 = wa[t + 2]; a_3 = wa[t + 3]
        b_0 = wb[t]; b_1 = wb[t + 1]; b_2 = wb[t + 2]; b_3 = wb[t + 3]
        for p in range(length):
            v0 = x0[p]; v1 = x1[p]; v2 = x2[p]; v3 = x3[p]
            a0[p] = a0[p] + a_0 * v0 + a_1 * v1 + a_2 * v2 + a_3 * v3
            a1[p] = a1[p] + b_0 * v0 + b_1 * v1 + b_2 * v2 + b_3 * v3
        t += 4
    while t < taps:
        x0 = xc + tap_offset(t, kw, dh, dw, wp)
        a_0 = wa[t]
        b_0 = wb[t]
        for p in range(length):
            v0 = x0[p]
            a0[p] = a0[p] + a_0 * v0
            a1[p] = a1[p] + b_0 * v0
        t += 1


cdef inline void taps_one(floating* a0, const floating* xc, const floating* wa,
                          index_t kh, index_t kw, index_t dh, index_t dw, index_t wp,
                          index_t length) noexcept nogil:
    """a0[p] += sum_t wa[t] * xc[p + off_t], taps t in order."""
    cdef index_t taps = kh * kw, t = 0, p
    cdef floating a_0, a_1, a_2, a_3
    cdef const floating* x0
    cdef const floating* x1
    cdef const floating* x2
    cdef const floating* x3
    while t + 4 <= taps:
        x0 = xc + tap_offset(t, kw, dh, dw, wp)
        x1 = xc + tap_offset(t + 1, kw, dh, dw, wp)
        x2 = xc + tap_offset(t + 2, kw, dh, dw, wp)
        x3 = xc + tap_offset(t + 3, kw, dh, dw, wp)
        a_0 = wa[t]; a_1 = wa[t + 1]; a_2 = wa[t + 2]; a_3 = wa[t + 3]
        for p in range(length):
            a0[p] = a0[p] + a_0 * x0[p] + a_1 * x1[p] + a_2 * x2[p] + a_3 * x3[p]
        t += 4
    while t < taps:
        x0 = xc + tap_offset(t, kw, dh, dw, wp)
        a_0 = wa[t]
        for p in range(length):
            a0[p] = a0[p] + a_0 * x0[p]
        t += 1


def workspace_size(index_t cg, index_t oh, index_t ow, index_t kh, index_t kw,
                   index_t dh, index_t dw):
    """Elements of one thread's workspace: a padded image group and KBLOCK wide outputs."""
    cdef index_t hp = oh + (kh - 1) * dh, wp = ow + (kw - 1) * dw
    return cg * hp * wp + KBLOCK * oh * wp


def conv2d_forward(
    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
    const floating[:, :, :, ::1] w,  # IN (K, CG, KH, KW)
    const floating[::1] b,           # IN (K,) or None
    floating[:, :, :, ::1] y,        # OUT (N, K, OH, OW)
    floating[:, ::1] workspace,      # SCRATCH (threads, workspace_size(...))
    index_t pt, index_t pl, index_t dh, index_t dw, index_t groups, int n_threads,
):
    """y = conv(x, w) + b with stride 1 (padding pt, pl; bottom/right implied by y)."""
    cdef index_t groups_ = groups
    cdef index_t blocks = (y.shape[1] // groups_ + KBLOCK - 1) // KBLOCK
    cdef index_t tasks = y.shape[0] * groups_ * blocks
    cdef index_t task
    if n_threads == 1:  # no parallel region: at batch 1 it costs a good part of the work
        with nogil:
            for task in range(tasks):
                forward_task(x, w, b, y, &workspace[0, 0], task, pt, pl, dh, dw, groups_)
        return
    for task in prange(tasks, nogil=True, schedule="static", num_threads=n_threads):
        forward_task(x, w, b, y, &workspace[threadid(), 0], task, pt, pl, dh, dw, groups_)


cdef void forward_task(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                       const floating[::1] b, floating[:, :, :, ::1] y, floating* xpad,
                       index_t task, index_t pt, index_t pl, index_t dh, index_t dw,
                       index_t groups) noexcept nogil:
    """The forward's task: KBLOCK output channels of one (image, group), ``xpad`` the
    thread's workspace row (the padded image group, then the wide outputs)."""
    cdef index_t n_out = y.shape[1], oh_count = y.shape[2], ow_count = y.shape[3]
    cdef index_t cg = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef index_t kg = n_out // groups
    cdef index_t hp = oh_count + (kh - 1) * dh, wp = ow_count + (kw - 1) * dw
    cdef index_t length = (oh_count - 1) * wp + ow_count
    cdef index_t blocks = (kg + KBLOCK - 1) // KBLOCK
    cdef index_t n = task // (groups * blocks), g = (task // blocks) % groups
    cdef index_t k0 = g * kg + (task % blocks) * KBLOCK
    cdef index_t k1 = min(k0 + KBLOCK, (g + 1) * kg)
    cdef floating* acc = xpad + cg * hp * wp
    cdef index_t k, c, p, oh, ow
    cdef floating init
    copy_band(x, n, g * cg, cg, -pt, hp, -pl, wp, hp * wp, xpad)
    for k in range(k0, k1):
        init = b[k] if b is not None else 0
        for p in range(oh_count * wp):
            acc[(k - k0) * oh_count * wp + p] = init
    k = k0
    while k + 2 <= k1:
        for c in range(cg):
            taps_two(acc + (k - k0) * oh_count * wp, acc + (k + 1 - k0) * oh_count * wp,
                     xpad + c * hp * wp, &w[k, c, 0, 0], &w[k + 1, c, 0, 0],
                     kh, kw, dh, dw, wp, length)
        k = k + 2
    if k < k1:
        for c in range(cg):
            taps_one(acc + (k - k0) * oh_count * wp, xpad + c * hp * wp,
                     &w[k, c, 0, 0], kh, kw, dh, dw, wp, length)
    for k in range(k0, k1):
        for oh in range(oh_count):
            for ow in range(ow_count):
                y[n, k, oh, ow] = acc[((k - k0) * oh_count + oh) * wp + ow]