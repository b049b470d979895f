"""Direct convolution over "wide" rows: the forward and the weight gradient, at stride 1
or, for an undilated kernel, any stride.

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
for p < L. Those long runs vectorise, where rows of a small image (28 or 10
outputs) would leave the loop overhead to dominate. They run in register blocks:
up to 6 output channels x 2 to 8 vectors of consecutive outputs, summed over every
input channel and tap in registers, each x vector loaded once for all the block's
channels.

At stride (SH, SW) the padded input is first split into phase planes: plane (a, b)
holds xpad[r * SH + a, q * SW + b], so tap (i, j) reads plane (i % SH, j % SW) at
(oh + i // SH, ow + j // SW), a stride-1 access: the same long loops run over the
phase planes' wide rows (only the planes some tap reads are made). The weight gradient
reads the same planes.

The weight gradient turns the same layout around: gy's rows laid on the padded
width (zeros in the gaps past each row's OW), every tap's gradient is one dot
product, sum over p of gy_wide[k, p] * xpad[c, p + i * DH * WP + j * DW], summed
in SIMD vectors for a block of taps (any offsets) and output channels at once: 3
channels x 4 taps or 4 x 3, 2 x 6, 1 x 12 (twelve accumulators in registers).
The gaps multiply real x values by zero: inf or NaN there would spoil the sums,
so the planner sends such x to the loops.

Each task pads one image's channels of one group into its thread's workspace
(zero outside the image, so padding costs no tests in the loops; the zeros are written
once per thread, as every task's padded input has the same shape), then owns whole
outputs: forward, a block of output channels of one image; weight gradient, a
fixed chunk of images whose sums land in the chunk's own partial buffer, reduced
in chunk order. Each output is summed in one fixed order: results are
bit-identical for any thread count.
"""

from cython.parallel cimport prange, threadid
from libc.stdlib cimport free, malloc

from fastconv._kernels._pool_rows cimport max_row_2x2
from fastconv._kernels._types cimport floating, index_t

cdef enum:
    KBLOCK = 8  # output channels per forward task
    # zeros after the padded image that a forward block's last vector reads, and what
    # each channel's wide outputs are rounded up to (a whole vector of either dtype)
    FORWARD_MARGIN = 8


cdef inline index_t tap_offset(index_t t, index_t kw, index_t dh, index_t dw, index_t wp,
                              index_t sh, index_t sw, index_t plane) noexcept nogil:
    """Offset of kernel tap t = i * KW + j in a channel's padded input: at stride 1 the
    one plane of row length wp (dilation dh, dw); at stride (sh, sw) (undilated) its
    phase plane (i % sh, j % sw) (see phases), each ``plane`` long, at row i // sh,
    column j // sw."""
    cdef index_t i = t // kw, j = t % kw
    if sh == 1 and sw == 1:
        return i * dh * wp + j * dw
    return ((i % sh) * min(sw, kw) + j % sw) * plane + (i // sh) * wp + j // sw


cdef inline index_t phases(index_t s, index_t k) noexcept nogil:
    """Phase planes along one axis at stride s: those a kernel of k taps reads."""
    return min(s, k)


cdef extern from *:
    """
    #include <stddef.h>
    #include <string.h>
    /* dst[0:n] = src[0:n] for the short rows of a small plane (7 to 56 values), where a
       call to memcpy and a loop's scalar tail cost more than the copy: whole 32-byte
       vectors, the last one overlapping the one before, or two overlapping 16-byte
       halves under 32 bytes; never a byte outside either row. */
    static inline void fc_copy_row(void *dst, const void *src, size_t bytes) {
        char *d = (char *)dst;
        const char *s = (const char *)src;
        size_t p;
        if (bytes >= 32) {
            for (p = 0; p + 32 < bytes; p += 32)
                memcpy(d + p, s + p, 32);
            memcpy(d + bytes - 32, s + bytes - 32, 32);
        } else if (bytes >= 16) {
            memcpy(d, s, 16);
            memcpy(d + bytes - 16, s + bytes - 16, 16);
        } else {
            for (p = 0; p < bytes; p += 4)
                memcpy(d + p, s + p, 4);
        }
    }
    """
    void fc_copy_row(void* dst, const void* src, size_t bytes) noexcept nogil


cdef extern from *:
    """
    #include <stddef.h>
    /* Forward block of the wide-row kernel: NK output channels (1..6) x NV vectors of
       consecutive wide outputs, all in registers while every input channel and tap adds
       its products:
           y[k * ldy + p] = init_k + sum_{c < cg} sum_{t < taps} w[(c * taps + t) * ldw + k]
                                                                 * x[c * ch + off[t] + p]
       for p < NV * lanes (init_k = bias[k], or 0 without bias), summed in order of c
       and t. Each tap loads NV vectors of x (unaligned) once for all NK channels and
       broadcasts NK weights; NK * NV accumulators + NV x vectors + 1 broadcast fit the 16
       AVX registers (6 x 2, 4 x 3, 3 x 3, 2 x 4, 1 x 8). On the 2-core development
       machine (Zen 4) 6 x 2 and 4 x 3 blocks run at about 90% of the FMA peak in a
       loop alone, where a loop over the row per tap with the sums in memory ran at half.
       GCC/clang vector extensions: SSE2 or AVX2 + FMA per build. */
    #define FC_WF_MAX_CHANNELS 6
    #if defined(__GNUC__) || defined(__clang__)
    typedef float fc_wr_vf __attribute__((vector_size(32)));
    typedef float fc_wr_vf_u __attribute__((vector_size(32), aligned(4)));
    typedef double fc_wr_vd __attribute__((vector_size(32)));
    typedef double fc_wr_vd_u __attribute__((vector_size(32), aligned(8)));
    /* a vector of s in every lane (0 + s would cost an add: it is not s for s = -0.0) */
    #define FC_SPLAT8(s) {s, s, s, s, s, s, s, s}
    #define FC_SPLAT4(s) {s, s, s, s}
    #define FC_WF_DEFINE(NAME, T, V, U, LANES, SPLAT)                                       \\
    static inline __attribute__((always_inline)) void NAME(                                 \\
            const T *x, ptrdiff_t ch, ptrdiff_t cg, const ptrdiff_t *off, ptrdiff_t taps,   \\
            const T *w, ptrdiff_t ldw, const T *bias, T *y, ptrdiff_t ldy, const int NK,    \\
            const int NV) {                                                                 \\
        V a[FC_WF_MAX_CHANNELS][8];                                                         \\
        ptrdiff_t c, t;                                                                     \\
        int k, v;                                                                           \\
        for (k = 0; k < NK; k++) {                                                          \\
            T init = bias ? bias[k] : (T)0;                                                 \\
            for (v = 0; v < NV; v++)                                                        \\
                a[k][v] = (V)SPLAT(init);                                                   \\
        }                                                                                   \\
        for (c = 0; c < cg; c++) {                                                          \\
            for (t = 0; t < taps; t++) {                                                    \\
                const T *xp = x + c * ch + off[t];                                          \\
                const T *wt = w + (c * taps + t) * ldw;                                     \\
                V xv[8];                                                                    \\
                for (v = 0; v < NV; v++)                                                    \\
                    xv[v] = *(const U *)(xp + v * LANES);                                   \\
                for (k = 0; k < NK; k++) {                                                  \\
                    V wb = SPLAT(wt[k]);                                                    \\
                    for (v = 0; v < NV; v++)                                                \\
                        a[k][v] += wb * xv[v];                                              \\
                }                                                                           \\
            }                                                                               \\
        }                                                                                   \\
        for (k = 0; k < NK; k++)                                                            \\
            for (v = 0; v < NV; v++)                                                        \\
                *(U *)(y + k * ldy + v * LANES) = a[k][v];                                  \\
    }
    FC_WF_DEFINE(fc_wf_block_f, float, fc_wr_vf, fc_wr_vf_u, 8, FC_SPLAT8)
    FC_WF_DEFINE(fc_wf_block_d, double, fc_wr_vd, fc_wr_vd_u, 4, FC_SPLAT4)
    #else
    #define FC_WF_DEFINE(NAME, T, LANES)                                                    \\
    static inline void NAME(const T *x, ptrdiff_t ch, ptrdiff_t cg, const ptrdiff_t *off,  \\
                            ptrdiff_t taps, const T *w, ptrdiff_t ldw, const T *bias, T *y, \\
                            ptrdiff_t ldy, const int NK, const int NV) {                    \\
        ptrdiff_t c, t, p;                                                                  \\
        int k;                                                                              \\
        for (k = 0; k < NK; k++)                                                            \\
            for (p = 0; p < NV * LANES; p++) {                                              \\
                T acc = bias ? bias[k] : (T)0;                                              \\
                for (c = 0; c < cg; c++)                                                    \\
                    for (t = 0; t < taps; t++)                                              \\
                        acc += w[(c * taps + t) * ldw + k] * x[c * ch + off[t] + p];       \\
                y[k * ldy + p] = acc;                                                       \\
            }                                                                               \\
    }
    FC_WF_DEFINE(fc_wf_block_f, float, 8)
    FC_WF_DEFINE(fc_wf_block_d, double, 4)
    #endif
    #define FC_WF_CASE(FN, K, V) \\
        case K * 16 + V: FN(x, ch, cg, off, taps, w, ldw, bias, y, ldy, K, V); break;
    /* each channel count with its widest block and with one vector (a row's tail); one
       channel (a depthwise plane) also with 4 and 2, so its tail of up to 7 vectors
       takes at most three calls */
    #define FC_WF_SWITCH(FN)                                                                \\
        switch (nk * 16 + nv) {                                                             \\
        FC_WF_CASE(FN, 1, 8) FC_WF_CASE(FN, 2, 4) FC_WF_CASE(FN, 3, 3) FC_WF_CASE(FN, 4, 3) \\
        FC_WF_CASE(FN, 5, 2) FC_WF_CASE(FN, 6, 2) FC_WF_CASE(FN, 1, 4) FC_WF_CASE(FN, 1, 2) \\
        FC_WF_CASE(FN, 1, 1) FC_WF_CASE(FN, 2, 1) FC_WF_CASE(FN, 3, 1) FC_WF_CASE(FN, 4, 1) \\
        FC_WF_CASE(FN, 5, 1) FC_WF_CASE(FN, 6, 1)                                           \\
        default: break;                                                                     \\
        }
    static void fc_wf_float(const float *x, ptrdiff_t ch, ptrdiff_t cg, const ptrdiff_t *off,
                            ptrdiff_t taps, const float *w, ptrdiff_t ldw, const float *bias,
                            float *y, ptrdiff_t ldy, int nk, int nv) {
        FC_WF_SWITCH(fc_wf_block_f)
    }
    static void fc_wf_double(const double *x, ptrdiff_t ch, ptrdiff_t cg,
                             const ptrdiff_t *off, ptrdiff_t taps, const double *w,
                             ptrdiff_t ldw, const double *bias, double *y, ptrdiff_t ldy,
                             int nk, int nv) {
        FC_WF_SWITCH(fc_wf_block_d)
    }
    """
    enum: FC_WF_MAX_CHANNELS
    void fc_wf_float(const float* x, Py_ssize_t ch, Py_ssize_t cg, const Py_ssize_t* off,
                     Py_ssize_t taps, const float* w, Py_ssize_t ldw, const float* bias,
                     float* y, Py_ssize_t ldy, int nk, int nv) noexcept nogil
    void fc_wf_double(const double* x, Py_ssize_t ch, Py_ssize_t cg, const Py_ssize_t* off,
                      Py_ssize_t taps, const double* w, Py_ssize_t ldw, const double* bias,
                      double* y, Py_ssize_t ldy, int nk, int nv) noexcept nogil


cdef inline index_t forward_block_vectors(index_t nk) noexcept nogil:
    """Vectors of outputs per forward block of nk channels (those fc_wf_* instantiate)."""
    return 8 if nk == 1 else 4 if nk == 2 else 3 if nk <= 4 else 2


cdef inline index_t tail_vectors(index_t nk, index_t rest) noexcept nogil:
    """Vectors of the next block of nk channels where fewer than its widest are left:
    4, 2 or 1 for one channel (fc_wf_* instantiate them), else 1."""
    if nk > 1 or rest < 2:
        return 1
    return 4 if rest >= 4 else 2


cdef inline index_t forward_block_channels(index_t rest) noexcept nogil:
    """Output channels of the next forward block, of ``rest`` left: 6 or fewer at once,
    8 as 4 + 4 and 7 as 4 + 3 (blocks of 4 x 3 vectors run as fast as 6 x 2)."""
    return 4 if rest > FC_WF_MAX_CHANNELS else rest


cdef inline void forward_block(const floating* x, index_t ch, index_t cg, const index_t* off,
                               index_t taps, const floating* w, index_t ldw,
                               const floating* bias, floating* y, index_t ldy, index_t nk,
                               index_t nv) noexcept nogil:
    if floating is float:
        fc_wf_float(x, ch, cg, off, taps, w, ldw, bias, y, ldy, <int> nk, <int> nv)
    else:
        fc_wf_double(x, ch, cg, off, taps, w, ldw, bias, y, ldy, <int> nk, <int> nv)


cdef inline index_t padded_extent(index_t out, index_t k, index_t d, index_t s) noexcept nogil:
    """Rows (or columns) of a padded input plane the wide output reads: at stride 1,
    out + (k - 1) * d; at stride s, those of one phase plane, out + (k - 1) // s."""
    return out + (k - 1) * d if s == 1 else out + (k - 1) // s


def workspace_size(index_t cg, index_t oh, index_t ow, index_t kh, index_t kw,
                   index_t dh, index_t dw, index_t sh=1, index_t sw=1):
    """Elements of one thread's workspace: a padded image group (its phase planes per
    channel at a stride), a zero margin the last vectors read into, KBLOCK wide outputs,
    a block's packed weights and, at stride 2, one padded plane the phases are split
    from (split_plane)."""
    cdef index_t hp = padded_extent(oh, kh, dh, sh), wp = padded_extent(ow, kw, dw, sw)
    cdef index_t channel = phases(sh, kh) * phases(sw, kw) * hp * wp
    return (cg * channel + FORWARD_MARGIN + KBLOCK * forward_stride(oh, wp)
            + KBLOCK * cg * kh * kw + (4 * hp * wp if split_plane(sh, sw, kh, kw, wp) else 0))


cdef inline bint split_plane(index_t sh, index_t sw, index_t kh, index_t kw,
                             index_t wp) noexcept nogil:
    """Whether the forward makes its 2 x 2 phase planes from one padded plane of the
    channel (split_phases): at stride 2 with a kernel of at least 2 x 2 taps, on phase
    rows of at most 16 (outputs up to 15 wide): there they deinterleave in one or two
    vectors, where gathering each from x (copy_inside) cost more than the convolution
    of a 14x14 depthwise plane. Longer rows gather in the loop's own vectors, and the
    extra plane would cost more (3x3 s2 over 8x144x56x56 1.7x the time)."""
    return sh == 2 and sw == 2 and kh >= 2 and kw >= 2 and wp <= 16


cdef inline index_t forward_stride(index_t oh, index_t wp) noexcept nogil:
    """Elements between two channels' wide outputs: OH * WP up to whole vectors."""
    return (oh * wp + FORWARD_MARGIN - 1) // FORWARD_MARGIN * FORWARD_MARGIN


def conv2d_forward(
    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
    const floating[:, :, :, ::1] w,  # IN (K, CG, KH, KW)
    const floating[::1] b,           # IN (K,) or None
    floating[:, :, :, ::1] y,        # OUT (N, K, OH, OW)
    floating[:, ::1] workspace,      # SCRATCH (threads, workspace_size(...))
    index_t pt, index_t pl, index_t dh, index_t dw, index_t groups, int n_threads,
    index_t sh=1, index_t sw=1,
):
    """y = conv(x, w) + b (padding pt, pl; bottom/right implied by y), stride 1 or, for
    an undilated kernel, stride (sh, sw): then x is split into phase planes, (a, b)
    holding x[r * sh + a, q * sw + b] for a < min(sh, KH), b < min(sw, KW) (the ones
    taps read), and every tap reads one of them at stride 1, so its loop runs over
    whole wide rows as at stride 1."""
    run_forward(x, w, b, &y[0, 0, 0, 0] if y.size else NULL, NULL, NULL, y.shape[1],
                y.shape[2], y.shape[3], workspace, pt, pl, dh, dw, groups, n_threads, sh, sw)


def conv2d_forward_max_pool(
    const floating[:, :, :, ::1] x,      # IN (N, C, H, W)
    const floating[:, :, :, ::1] w,      # IN (K, CG, KH, KW)
    const floating[::1] b,               # IN (K,) or None
    floating[:, :, :, ::1] pooled,       # OUT (N, K, OH // 2, OW // 2)
    long long[:, :, :, ::1] pooled_idx,  # OUT (N, K, OH // 2, OW // 2): h * OW + w, or None
    floating[:, ::1] workspace,          # SCRATCH (threads, workspace_size(...))
    index_t oh, index_t ow, index_t pt, index_t pl, index_t dh, index_t dw, index_t groups,
    int n_threads,
):
    """max_pool2d(conv(x, w) + b, 2) (stride 1; the convolution's output OH x OW, as
    conv2d_forward's y would be) without writing the convolution's output: each task
    pools its own wide rows. Values and argmax are those of max_pool2d over y."""
    if (pooled.shape[0] != x.shape[0] or pooled.shape[1] != w.shape[0]
            or pooled.shape[2] != oh // 2 or pooled.shape[3] != ow // 2
            or (pooled_idx is not None and tuple(pooled_idx.shape) != tuple(pooled.shape))):
        raise ValueError("pooled outputs do not match the convolution's")
    run_forward(x, w, b, NULL, &pooled[0, 0, 0, 0] if pooled.size else NULL,
                &pooled_idx[0, 0, 0, 0] if pooled_idx is not None and pooled.size else NULL,
                w.shape[0], oh, ow, workspace, pt, pl, dh, dw, groups, n_threads, 1, 1)


cdef run_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                 const floating[::1] b, floating* y, floating* pooled, long long* pooled_idx,
                 index_t n_out, index_t oh, index_t ow, floating[:, ::1] workspace,
                 index_t pt, index_t pl, index_t dh, index_t dw, index_t groups_,
                 int n_threads, index_t sh, index_t sw):
    """Every forward task over the outputs given (see forward_task)."""
    cdef index_t blocks = (n_out // groups_ + KBLOCK - 1) // KBLOCK
    cdef index_t tasks = x.shape[0] * groups_ * blocks
    cdef index_t kh = w.shape[2], kw = w.shape[3], taps = kh * kw
    cdef index_t hp = padded_extent(oh, kh, dh, sh)
    cdef index_t wp = padded_extent(ow, kw, dw, sw)
    cdef index_t t
    cdef index_t* offsets
    if (sh > 1 or sw > 1) and (dh > 1 or dw > 1):
        raise ValueError("a strided wide-row convolution takes an undilated kernel")
    if tasks == 0 or taps == 0 or oh == 0 or ow == 0:
        return
    offsets = <index_t*> malloc(taps * sizeof(index_t))
    if offsets == NULL:
        raise MemoryError("no memory for the tap offsets")
    for t in range(taps):
        offsets[t] = tap_offset(t, kw, dh, dw, wp, sh, sw, hp * wp)
    try:
        if n_threads == 1:  # no parallel region: at batch 1 it costs a good part of the work
            with nogil:
                forward_tasks(x, w, b, y, pooled, pooled_idx, n_out, oh, ow, &workspace[0, 0],
                              0, tasks, pt, pl, dh, dw, sh, sw, groups_, offsets)
            return
        for t in prange(n_threads, nogil=True, schedule="static", num_threads=n_threads):
            # each thread a contiguous run of tasks, as a static schedule of the tasks
            forward_tasks(x, w, b, y, pooled, pooled_idx, n_out, oh, ow,
                          &workspace[threadid(), 0], tasks * t // n_threads,
                          tasks * (t + 1) // n_threads, pt, pl, dh, dw, sh, sw, groups_,
                          offsets)
    finally:
        free(offsets)


cdef void forward_tasks(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                        const floating[::1] b, floating* y, floating* pooled,
                        long long* pooled_idx, index_t n_out, index_t oh_count,
                        index_t ow_count, floating* xpad, index_t first, index_t end,
                        index_t pt, index_t pl, index_t dh, index_t dw, index_t sh,
                        index_t sw, index_t groups, const index_t* offsets) noexcept nogil:
    """Forward tasks first..end - 1 in one thread's workspace ``xpad``. Every task pads an
    image group of the same shape into it: its padding and margin are zeroed here once
    (zero_outside), and each task copies only the pixels inside x (copy_inside): a
    depthwise task's plane of 7x7 or 14x14 cost more to pad than to convolve."""
    cdef index_t cg = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef index_t kg = n_out // groups, blocks = (kg + KBLOCK - 1) // KBLOCK
    cdef index_t hp = padded_extent(oh_count, kh, dh, sh)
    cdef index_t wp = padded_extent(ow_count, kw, dw, sw)
    # task = (n * groups + g) * blocks + block, counted up rather than divided out: a
    # depthwise task is a few hundred cycles
    cdef index_t n = first // (groups * blocks), g = (first // blocks) % groups
    cdef index_t block = first % blocks, task
    cdef index_t padded = cg * phases(sh, kh) * phases(sw, kw) * hp * wp
    zero_outside(x, cg, pt, pl, sh, sw, kh, kw, hp, wp, xpad)
    zero(xpad + padded, FORWARD_MARGIN)
    if split_plane(sh, sw, kh, kw, wp):  # the plane split into phases, after the weights
        zero_outside(x, 1, pt, pl, 1, 1, 1, 1, 2 * hp, 2 * wp,
                     xpad + padded + FORWARD_MARGIN + KBLOCK * forward_stride(oh_count, wp)
                     + KBLOCK * cg * kh * kw)
    for task in range(first, end):
        forward_task(x, w, b, y, pooled, pooled_idx, n_out, kg, oh_count, ow_count, hp, wp,
                     xpad, n, g, block, pt, pl, dh, dw, sh, sw, offsets)
        block += 1
        if block == blocks:
            block = 0
            g += 1
            if g == groups:
                g = 0
                n += 1


cdef inline void zero(floating* out, index_t count) noexcept nogil:
    cdef index_t p
    for p in range(count):
        out[p] = 0


cdef void zero_outside(const floating[:, :, :, ::1] x, index_t channels, index_t pt,
                       index_t pl, index_t sh, index_t sw, index_t kh, index_t kw,
                       index_t hp, index_t wp, floating* out) noexcept nogil:
    """Zeros where copy_inside (the same arguments) writes nothing: the padding."""
    cdef index_t ph = phases(sh, kh), pw = phases(sw, kw)
    cdef index_t c, a, b_, r, r_lo, r_hi, q_lo, q_hi
    cdef floating* plane
    for c in range(channels):
        for a in range(ph):
            inside(pt, a, sh, x.shape[2], hp, &r_lo, &r_hi)
            for b_ in range(pw):
                inside(pl, b_, sw, x.shape[3], wp, &q_lo, &q_hi)
                plane = out + ((c * ph + a) * pw + b_) * hp * wp
                zero(plane, r_lo * wp)
                for r in range(r_lo, r_hi):
                    zero(plane + r * wp, q_lo)
                    zero(plane + r * wp + q_hi, wp - q_hi)
                zero(plane + r_hi * wp, (hp - r_hi) * wp)


cdef inline void inside(index_t pad, index_t phase, index_t s, index_t size, index_t extent,
                        index_t* lo, index_t* hi) noexcept nogil:
    """[lo, hi): the r < extent whose r * s + phase - pad lies in [0, size) (a padded
    plane's rows or columns that hold x; pad may be negative: a crop)."""
    cdef index_t start = pad - phase, stop = size + pad - phase
    lo[0] = min(ceil_div(start, s), extent) if start > 0 else 0
    hi[0] = max(min(ceil_div(stop, s), extent), lo[0]) if stop > 0 else lo[0]


cdef inline index_t ceil_div(index_t a, index_t s) noexcept nogil:
    """ceil(a / s) for a > 0, the common strides without a division."""
    if s == 1:
        return a
    if s == 2:
        return (a + 1) >> 1
    return (a + s - 1) // s


cdef void copy_inside(const floating[:, :, :, ::1] x, index_t n, index_t c0, index_t channels,
                      index_t pt, index_t pl, index_t sh, index_t sw, index_t kh, index_t kw,
                      index_t hp, index_t wp, floating* out) noexcept nogil:
    """A task's padded input where it holds x, into a workspace whose padding is zero
    already: out[((c * PH + a) * PW + b) * hp * wp + r * wp + q] = x[n, c0 + c,
    r * sh + a - pt, q * sw + b - pl] for the (r, q) inside x, one plane per channel at
    stride 1, its PH x PW phase planes (a, b) at a stride (those taps read: phases)."""
    cdef index_t ph = phases(sh, kh), pw = phases(sw, kw)
    cdef index_t height = x.shape[2], width = x.shape[3]
    cdef index_t c, a, b_, r, q, r_lo, r_hi, q_lo, q_hi
    cdef const floating* xrow
    cdef floating* row
    for c in range(channels):
        for a in range(ph):
            inside(pt, a, sh, height, hp, &r_lo, &r_hi)
            for b_ in range(pw):
                inside(pl, b_, sw, width, wp, &q_lo, &q_hi)
                for r in range(r_lo, r_hi):
                    row = out + (((c * ph + a) * pw + b_) * hp + r) * wp
                    xrow = &x[n, c0 + c, r * sh + a - pt, 0] + b_ - pl
                    if sw == 1:
                        fc_copy_row(row + q_lo, xrow + q_lo, (q_hi - q_lo) * sizeof(floating))
                    elif sw == 2:  # a constant stride: the compiler vectorises the gather
                        for q in range(q_lo, q_hi):
                            row[q] = xrow[2 * q]
                    else:
                        for q in range(q_lo, q_hi):
                            row[q] = xrow[q * sw]


cdef extern from *:
    """
    #include <stddef.h>
    /* One row of a padded plane split into its even and odd columns, n of each (the row
       holds 2n): whole vectors of 8 floats (4 doubles) from two loads and two shuffles
       each, the last vector overlapping the one before; under one vector, one column at
       a time. GCC 12+/clang vector shuffles; a plain loop elsewhere. */
    #if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
    typedef float fc_sp_vf __attribute__((vector_size(32)));
    typedef float fc_sp_vf_u __attribute__((vector_size(32), aligned(4)));
    typedef int fc_sp_vi __attribute__((vector_size(32)));
    typedef double fc_sp_vd __attribute__((vector_size(32)));
    typedef double fc_sp_vd_u __attribute__((vector_size(32), aligned(8)));
    typedef long long fc_sp_vl __attribute__((vector_size(32)));
    #if defined(__clang__)
    #define FC_SP_EVEN_F(lo, hi) __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14)
    #define FC_SP_ODD_F(lo, hi) __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15)
    #define FC_SP_EVEN_D(lo, hi) __builtin_shufflevector(lo, hi, 0, 2, 4, 6)
    #define FC_SP_ODD_D(lo, hi) __builtin_shufflevector(lo, hi, 1, 3, 5, 7)
    #else
    #define FC_SP_EVEN_F(lo, hi) __builtin_shuffle(lo, hi, (fc_sp_vi){0, 2, 4, 6, 8, 10, 12, 14})
    #define FC_SP_ODD_F(lo, hi) __builtin_shuffle(lo, hi, (fc_sp_vi){1, 3, 5, 7, 9, 11, 13, 15})
    #define FC_SP_EVEN_D(lo, hi) __builtin_shuffle(lo, hi, (fc_sp_vl){0, 2, 4, 6})
    #define FC_SP_ODD_D(lo, hi) __builtin_shuffle(lo, hi, (fc_sp_vl){1, 3, 5, 7})
    #endif
    #define FC_SP_DEFINE(NAME, T, V, U, LANES, EVEN, ODD)                                   \
    static inline void NAME(const T *row, T *even, T *odd, ptrdiff_t n) {                   \
        ptrdiff_t q;                                                                        \
        int last;                                                                           \
        if (n < LANES) {                                                                    \
            for (q = 0; q < n; q++) {                                                       \
                even[q] = row[2 * q];                                                       \
                odd[q] = row[2 * q + 1];                                                    \
            }                                                                               \
            return;                                                                         \
        }                                                                                   \
        for (q = 0;; q += LANES) {                                                          \
            last = q + LANES >= n;                                                          \
            if (last)                                                                       \
                q = n - LANES;                                                              \
            V lo = *(const U *)(row + 2 * q), hi = *(const U *)(row + 2 * q + LANES);      \
            *(U *)(even + q) = EVEN(lo, hi);                                                \
            *(U *)(odd + q) = ODD(lo, hi);                                                  \
            if (last)                                                                       \
                return;                                                                     \
        }                                                                                   \
    }
    FC_SP_DEFINE(fc_split_row_f, float, fc_sp_vf, fc_sp_vf_u, 8, FC_SP_EVEN_F, FC_SP_ODD_F)
    FC_SP_DEFINE(fc_split_row_d, double, fc_sp_vd, fc_sp_vd_u, 4, FC_SP_EVEN_D, FC_SP_ODD_D)
    #else
    #define FC_SP_DEFINE(NAME, T)                                                           \
    static inline void NAME(const T *row, T *even, T *odd, ptrdiff_t n) {                   \
        ptrdiff_t q;                                                                        \
        for (q = 0; q < n; q++) {                                                           \
            even[q] = row[2 * q];                                                           \
            odd[q] = row[2 * q + 1];                                                        \
        }                                                                                   \
    }
    FC_SP_DEFINE(fc_split_row_f, float)
    FC_SP_DEFINE(fc_split_row_d, double)
    #endif
    """
    void fc_split_row_f(const float* row, float* even, float* odd, Py_ssize_t n) noexcept nogil
    void fc_split_row_d(const double* row, double* even, double* odd,
                        Py_ssize_t n) noexcept nogil


cdef inline void split_phases(const floating* plane, index_t hp, index_t wp,
                              floating* out) noexcept nogil:
    """The 2 x 2 phase planes (a, b) of a padded plane of 2HP rows of 2WP:
    out[((a * 2 + b) * HP + r) * WP + q] = plane[(2r + a) * 2WP + 2q + b]."""
    cdef index_t a, r
    cdef floating* even
    for r in range(hp):
        for a in range(2):
            even = out + (2 * a * hp + r) * wp
            if floating is float:
                fc_split_row_f(plane + (2 * r + a) * 2 * wp, even, even + hp * wp, wp)
            else:
                fc_split_row_d(plane + (2 * r + a) * 2 * wp, even, even + hp * wp, wp)


cdef void forward_task(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                       const floating[::1] b, floating* y, floating* pooled,
                       long long* pooled_idx, index_t n_out, index_t kg, index_t oh_count,
                       index_t ow_count, index_t hp, index_t wp, floating* xpad, index_t n,
                       index_t g, index_t block, index_t pt, index_t pl, index_t dh,
                       index_t dw, index_t sh, index_t sw, const index_t* offsets
                       ) noexcept nogil:
    """The forward's task: block ``block`` of KBLOCK output channels of image n, group g
    (KG channels a group; its padded planes HP x WP: padded_extent), ``xpad`` the
    thread's workspace row (the padded image group, its padding and margin zero already:
    forward_tasks; the wide outputs, the packed weights); ``offsets``: each tap's in a
    channel's padded input (tap_offset). Outputs: y (N, K, OH, OW) and, where pooled is
    not NULL, its 2x2 max pooling (N, K, OH // 2, OW // 2) with the argmax (pooled_idx,
    or NULL: values only); y may be NULL then."""
    cdef index_t cg = w.shape[1], kh = w.shape[2], kw = w.shape[3], taps = kh * kw
    cdef index_t plane = hp * wp, channel = phases(sh, kh) * phases(sw, kw) * plane
    cdef index_t lanes = 8 if floating is float else 4
    cdef index_t length = ((oh_count - 1) * wp + ow_count + lanes - 1) // lanes * lanes
    cdef index_t stride = forward_stride(oh_count, wp)
    cdef index_t k0 = g * kg + block * KBLOCK
    cdef index_t kb = min(k0 + KBLOCK, (g + 1) * kg) - k0
    cdef floating* acc = xpad + cg * channel + FORWARD_MARGIN
    cdef floating* packed = acc + KBLOCK * stride
    cdef const floating* bias
    cdef index_t k, c, i, j, p, oh, nk, nv, span
    if split_plane(sh, sw, kh, kw, wp):
        for c in range(cg):  # plane[R * 2WP + Q] = x[R - pt, Q - pl], then its phases
            copy_inside(x, n, g * cg + c, 1, pt, pl, 1, 1, 1, 1, 2 * hp, 2 * wp,
                        packed + KBLOCK * cg * taps)
            split_phases(packed + KBLOCK * cg * taps, hp, wp, xpad + c * channel)
    else:
        copy_inside(x, n, g * cg, cg, pt, pl, sh, sw, kh, kw, hp, wp, xpad)
    for k in range(kb):  # w[k0 + k, c, i, j] at [(c * taps + i * kw + j) * kb + k]
        for c in range(cg):
            for i in range(kh):
                for j in range(kw):
                    packed[(c * taps + i * kw + j) * kb + k] = w[k0 + k, c, i, j]
    k = 0
    while k < kb:
        nk = forward_block_channels(kb - k)
        bias = &b[k0 + k] if b is not None else NULL
        span = forward_block_vectors(nk) * lanes
        p = 0
        while p < length:
            nv = forward_block_vectors(nk) if p + span <= length else tail_vectors(
                nk, (length - p) // lanes)
            forward_block(xpad + p, channel, cg, offsets, taps, packed + k, kb, bias,
                          acc + k * stride + p, stride, nk, nv)
            p += nv * lanes
        k += nk
    if y != NULL:
        for k in range(kb):  # the wide rows' first OW outputs each
            for oh in range(oh_count):
                fc_copy_row(y + ((n * n_out + k0 + k) * oh_count + oh) * ow_count,
                            acc + k * stride + oh * wp, ow_count * sizeof(floating))
    if pooled != NULL:
        pool_rows(acc, kb, stride, wp, oh_count, ow_count,
                  pooled + (n * n_out + k0) * (oh_count // 2) * (ow_count // 2),
                  NULL if pooled_idx == NULL
                  else pooled_idx + (n * n_out + k0) * (oh_count // 2) * (ow_count // 2))


cdef inline void pool_rows(const floating* acc, index_t channels, index_t stride, index_t wp,
                           index_t oh_count, index_t ow_count, floating* pooled,
                           long long* pooled_idx) noexcept nogil:
    """2x2 max pooling at stride 2 of a task's wide outputs (their first OW columns),
    into consecutive channel planes of OH // 2 x OW // 2 (argmax as h * OW + w, or
    none where pooled_idx is NULL), as max_pool2d's kernel pools the written output."""
    cdef index_t ph = oh_count // 2, pw = ow_count // 2, k, r, at
    for k in range(channels):
        for r in range(ph):
            at = (k * ph + r) * pw
            max_row_2x2(acc + k * stride + 2 * r * wp, acc + k * stride + (2 * r + 1) * wp,
                        pooled + at, NULL if pooled_idx == NULL else pooled_idx + at, pw,
                        2 * r * ow_count, <int> ow_count)


cdef extern from *:
    """
    #include <stddef.h>
    /* Weight-gradient block of the wide-row kernel: for NK (1..4) output channels and NJ
       taps (NK * NJ <= FC_WG_MAX_TAPS = 12) at any offsets off[j],
           out[k * ldo + j] += sum_{p < len} g[k * ldg + p] * x[p + off[j]]
       (len a multiple of 8) in 8-lane float vectors (4-lane doubles), one accumulator per
       (k, j) in registers, each x vector loaded once for all NK channels; the lanes are
       then added in double in lane order. Blocks of 3 x 4 or 4 x 3 run about 1.5x the
       multiply-adds per second of 2 x 5 (the x loads, unaligned, are what limits: one
       per NK multiply-adds). GCC/clang vector extensions: SSE2 or AVX2 + FMA per build. */
    #define FC_WG_MAX_TAPS 12
    #if defined(__GNUC__) || defined(__clang__)
    #define FC_WG_DEFINE(NAME, T, V, U, LANES)                                              \\
    static inline __attribute__((always_inline)) void NAME(                                 \\
            const T *g, ptrdiff_t ldg, const T *x, const ptrdiff_t *off, ptrdiff_t len,     \\
            double *out, ptrdiff_t ldo, const int NK, const int NJ) {                       \\
        V a[4][FC_WG_MAX_TAPS] = {{{0}}};                                                   \\
        const T *xs[FC_WG_MAX_TAPS];                                                        \\
        ptrdiff_t p;                                                                        \\
        int j, k, lane;                                                                     \\
        for (j = 0; j < NJ; j++)                                                            \\
            xs[j] = x + off[j];                                                             \\
        for (p = 0; p < len; p += LANES) {                                                  \\
            V u[4];                                                                         \\
            for (k = 0; k < NK; k++)                                                        \\
                u[k] = *(const U *)(g + k * ldg + p);                                       \\
            _Pragma("GCC unroll 12")                                                        \\
            for (j = 0; j < NJ; j++) {                                                      \\
                V xv = *(const U *)(xs[j] + p);                                             \\
                for (k = 0; k < NK; k++)                                                    \\
                    a[k][j] += u[k] * xv;                                                   \\
            }                                                                               \\
        }                                                                                   \\
        for (k = 0; k < NK; k++)                                                            \\
            for (j = 0; j < NJ; j++)                                                        \\
                for (lane = 0; lane < LANES; lane++)                                        \\
                    out[k * ldo + j] += (double)a[k][j][lane];                              \\
    }
    FC_WG_DEFINE(fc_wg_block_f, float, fc_wr_vf, fc_wr_vf_u, 8)
    FC_WG_DEFINE(fc_wg_block_d, double, fc_wr_vd, fc_wr_vd_u, 4)
    #else
    #define FC_WG_DEFINE(NAME, T)                                                           \\
    static inline void NAME(const T *g, ptrdiff_t ldg, const T *x, const ptrdiff_t *off,   \\
                            ptrdiff_t len, double *out, ptrdiff_t ldo, const int NK,        \\
                            const int NJ) {                                                 \\
        ptrdiff_t p;                                                                        \\
        int j, k;                                                                           \\
        for (k = 0; k < NK; k++)                                                            \\
            for (j = 0; j < NJ; j++)                                                        \\
                for (p = 0; p < len; p++)                                                   \\
                    out[k * ldo + j] += (double)g[k * ldg + p] * (double)x[p + off[j]];     \\
    }
    FC_WG_DEFINE(fc_wg_block_f, float)
    FC_WG_DEFINE(fc_wg_block_d, double)
    #endif
    /* NK and NJ as constants in each call, so the accumulators stay in registers */
    #define FC_WG_CASE(FN, K, J) \\
        case K * 16 + J: FN(g, ldg, x, off, len, out, ldo, K, J); break;
    #define FC_WG_SWITCH(FN)                                                                \\
        switch (nk * 16 + nj) {                                                             \\
        FC_WG_CASE(FN, 1, 1) FC_WG_CASE(FN, 1, 2) FC_WG_CASE(FN, 1, 3) FC_WG_CASE(FN, 1, 4) \\
        FC_WG_CASE(FN, 1, 5) FC_WG_CASE(FN, 1, 6) FC_WG_CASE(FN, 1, 7) FC_WG_CASE(FN, 1, 8) \\
        FC_WG_CASE(FN, 1, 9) FC_WG_CASE(FN, 1, 10) FC_WG_CASE(FN, 1, 11)                    \\
        FC_WG_CASE(FN, 1, 12)                                                               \\
        FC_WG_CASE(FN, 2, 1) FC_WG_CASE(FN, 2, 2) FC_WG_CASE(FN, 2, 3) FC_WG_CASE(FN, 2, 4) \\
        FC_WG_CASE(FN, 2, 5) FC_WG_CASE(FN, 2, 6)                                           \\
        FC_WG_CASE(FN, 3, 1) FC_WG_CASE(FN, 3, 2) FC_WG_CASE(FN, 3, 3) FC_WG_CASE(FN, 3, 4) \\
        FC_WG_CASE(FN, 4, 1) FC_WG_CASE(FN, 4, 2) FC_WG_CASE(FN, 4, 3)                      \\
        default: break;                                                                     \\
        }
    static void fc_wg_float(const float *g, ptrdiff_t ldg, const float *x,
                            const ptrdiff_t *off, ptrdiff_t len, double *out, ptrdiff_t ldo,
                            int nk, int nj) {
        FC_WG_SWITCH(fc_wg_block_f)
    }
    static void fc_wg_double(const double *g, ptrdiff_t ldg, const double *x,
                             const ptrdiff_t *off, ptrdiff_t len, double *out, ptrdiff_t ldo,
                             int nk, int nj) {
        FC_WG_SWITCH(fc_wg_block_d)
    }
    """
    enum: FC_WG_MAX_TAPS
    void fc_wg_float(const float* g, Py_ssize_t ldg, const float* x, const Py_ssize_t* off,
                     Py_ssize_t length, double* out, Py_ssize_t ldo, int nk,
                     int nj) noexcept nogil
    void fc_wg_double(const double* g, Py_ssize_t ldg, const double* x,
                      const Py_ssize_t* off, Py_ssize_t length, double* out, Py_ssize_t ldo,
                      int nk, int nj) noexcept nogil


cdef enum:
    WG_PAD = 8  # lanes the wide gradient rows are padded to (and zero margin after x)


cdef inline index_t wide_length(index_t oh, index_t wp) noexcept nogil:
    """Elements of a wide gradient row: OH * WP up to a whole number of vectors."""
    return (oh * wp + WG_PAD - 1) // WG_PAD * WG_PAD


cdef inline index_t weight_grad_margin(index_t channel, index_t hp, index_t wp,
                                      index_t length, index_t kh, index_t kw, index_t dh,
                                      index_t dw, index_t sh, index_t sw) noexcept nogil:
    """Zeros after the last channel's planes that the last vectors of its farthest tap
    read (an upper bound of the taps' offsets: every phase plane, the farthest row and
    column)."""
    cdef index_t reach
    if sh == 1 and sw == 1:
        reach = (kh - 1) * dh * wp + (kw - 1) * dw
    else:
        reach = ((phases(sh, kh) * phases(sw, kw) - 1) * hp * wp + (kh - 1) // sh * wp
                 + (kw - 1) // sw)
    return max(0, reach + length - channel)


def weight_grad_workspace_size(index_t cg, index_t kg, index_t oh, index_t ow, index_t kh,
                               index_t kw, index_t dh, index_t dw, index_t sh=1, index_t sw=1):
    """Elements of one thread's weight-gradient workspace: the padded image group (its
    phase planes at a stride, and a zero margin the last vectors read into) and the
    group's wide gradient rows."""
    cdef index_t hp = padded_extent(oh, kh, dh, sh), wp = padded_extent(ow, kw, dw, sw)
    cdef index_t channel = phases(sh, kh) * phases(sw, kw) * hp * wp
    cdef index_t length = wide_length(oh, wp)
    return (cg * channel + weight_grad_margin(channel, hp, wp, length, kh, kw, dh, dw, sh, sw)
            + kg * length)


def conv2d_weight_grad(
    const floating[:, :, :, ::1] gy,  # IN (N, K, OH, OW)
    const floating[:, :, :, ::1] x,   # IN (N, C, H, W)
    double[:, ::1] partials,          # OUT (chunks, G * KG * CG * KH * KW), every element
    floating[:, ::1] workspace,       # SCRATCH (threads, weight_grad_workspace_size(...))
    index_t kh, index_t kw, index_t pt, index_t pl, index_t dh, index_t dw,
    index_t groups, int n_threads, index_t sh=1, index_t sw=1,
):
    """partials[chunk] = the weight gradient summed over the chunk's images (chunks:
    partials.shape[0], fixed runs of images), as gw[k, c, i, j] = sum over the wide rows
    p of gy_wide[k, p] * xpad[c, p + tap_offset(i, j)] (at a stride, over x's phase
    planes, undilated); the caller adds the chunks in order."""
    if (sh > 1 or sw > 1) and (dh > 1 or dw > 1):
        raise ValueError("a strided wide-row convolution takes an undilated kernel")
    run_weight_grad(&gy[0, 0, 0, 0] if gy.size else NULL, NULL, NULL, 1, gy.shape[1],
                    gy.shape[2], gy.shape[3], x, partials, workspace, kh, kw, pt, pl, dh, dw,
                    groups, n_threads, sh, sw)


def conv2d_weight_grad_max_pool(
    const floating[:, :, :, ::1] pooled_gy,       # IN (N, K, OH // 2, OW // 2)
    const long long[:, :, :, ::1] pooled_idx,     # IN (N, K, OH // 2, OW // 2): h * OW + w
    const floating[:, :, :, ::1] x,               # IN (N, C, H, W)
    double[:, ::1] partials,                      # OUT as conv2d_weight_grad's
    floating[:, ::1] workspace,                   # SCRATCH as conv2d_weight_grad's
    index_t oh, index_t ow, index_t kh, index_t kw, index_t pt, index_t pl, index_t dh,
    index_t dw, index_t groups, int n_threads,
):
    """conv2d_weight_grad (stride 1) of gy = max_pool2d_backward(pooled_gy, pooled_idx,
    (N, K, OH, OW)), without making gy: each task scatters its images' pooled gradients
    into its own wide rows (zeros elsewhere, repeats added: the rows max_pool2d_backward
    would give). Returns the number of indices outside [0, OH * OW), which were skipped."""
    if (pooled_idx.shape[0] != pooled_gy.shape[0] or pooled_idx.shape[1] != pooled_gy.shape[1]
            or pooled_idx.shape[2] != pooled_gy.shape[2]
            or pooled_idx.shape[3] != pooled_gy.shape[3]):
        raise ValueError("pooled_idx must have pooled_gy's shape")
    if (pooled_gy.shape[0] != x.shape[0] or pooled_gy.shape[2] != oh // 2
            or pooled_gy.shape[3] != ow // 2 or groups < 1 or pooled_gy.shape[1] % groups
            or partials.shape[1] != pooled_gy.shape[1] * (x.shape[1] // groups) * kh * kw):
        raise ValueError("pooled_gy does not match x, the output size and the partial sums")
    return run_weight_grad(NULL, &pooled_gy[0, 0, 0, 0] if pooled_gy.size else NULL,
                           &pooled_idx[0, 0, 0, 0] if pooled_gy.size else NULL,
                           pooled_gy.shape[3], pooled_gy.shape[1], oh, ow,
                           x, partials, workspace, kh, kw, pt, pl, dh, dw, groups, n_threads,
                           1, 1)


cdef index_t run_weight_grad(const floating* gy, const floating* pooled_gy,
                             const long long* pooled_idx, index_t pooled_w, index_t n_out,
                             index_t oh, index_t ow, const floating[:, :, :, ::1] x,
                             double[:, ::1] partials, floating[:, ::1] workspace, index_t kh,
                             index_t kw, index_t pt, index_t pl, index_t dh, index_t dw,
                             index_t groups, int n_threads, index_t sh, index_t sw):
    """Every weight-gradient task; gy (N, K, OH, OW), or NULL and the pooled gradient
    with its argmax (N, K, OH // 2, pooled_w). Returns the pooled indices skipped as out
    of range."""
    cdef index_t chunks = partials.shape[0], tasks = chunks * groups, task, t
    cdef index_t bad = 0
    cdef index_t hp = padded_extent(oh, kh, dh, sh), wp = padded_extent(ow, kw, dw, sw)
    cdef index_t* offsets
    if gy == NULL and pooled_gy == NULL:  # no gradient: every partial sum is zero
        partials[...] = 0
        return 0
    offsets = <index_t*> malloc(kh * kw * sizeof(index_t))
    if offsets == NULL:
        raise MemoryError("no memory for the tap offsets")
    for t in range(kh * kw):  # each tap's in a channel's padded input, made once
        offsets[t] = tap_offset(t, kw, dh, dw, wp, sh, sw, hp * wp)
    try:
        if n_threads == 1:
            with nogil:
                for task in range(tasks):
                    bad += weight_grad_task(gy, pooled_gy, pooled_idx, pooled_w, n_out, oh,
                                            ow, x, partials, &workspace[0, 0], task, kh, kw,
                                            pt, pl, dh, dw, sh, sw, groups, offsets)
            return bad
        for task in prange(tasks, nogil=True, schedule="static", num_threads=n_threads):
            bad += weight_grad_task(gy, pooled_gy, pooled_idx, pooled_w, n_out, oh, ow, x,
                                    partials, &workspace[threadid(), 0], task, kh, kw, pt,
                                    pl, dh, dw, sh, sw, groups, offsets)
        return bad
    finally:
        free(offsets)


cdef index_t weight_grad_task(const floating* gy, const floating* pooled_gy,
                              const long long* pooled_idx, index_t pooled_w,
                              index_t n_out, index_t oh_count, index_t ow_count,
                              const floating[:, :, :, ::1] x, double[:, ::1] partials,
                              floating* xpad, index_t task, index_t kh, index_t kw,
                              index_t pt, index_t pl, index_t dh, index_t dw, index_t sh,
                              index_t sw, index_t groups, const index_t* offsets
                              ) noexcept nogil:
    """One chunk of images of one group: its (KG, CG, KH, KW) sums into its partials
    (``offsets``: each tap's in a channel's padded input, tap_offset). Returns the pooled
    indices it skipped (out of range)."""
    cdef index_t n_batch = x.shape[0], chunks = partials.shape[0]
    cdef index_t kg = n_out // groups, cg = x.shape[1] // groups
    cdef index_t hp = padded_extent(oh_count, kh, dh, sh)
    cdef index_t wp = padded_extent(ow_count, kw, dw, sw)
    cdef index_t plane = hp * wp, pw = phases(sw, kw)
    cdef index_t channel = phases(sh, kh) * pw * plane
    cdef index_t length = wide_length(oh_count, wp)
    cdef index_t margin = weight_grad_margin(channel, hp, wp, length, kh, kw, dh, dw, sh, sw)
    cdef index_t chunk = task // groups, g = task % groups
    cdef index_t n0 = chunk * n_batch // chunks, n1 = (chunk + 1) * n_batch // chunks
    cdef index_t taps = kh * kw, filters = kg * cg * taps
    cdef double* out = &partials[chunk, g * filters]
    cdef floating* wide = xpad + cg * channel + margin
    cdef index_t n, k, c, t, b_, p, nk, nj, blocks, oh, bad = 0
    cdef index_t pooled_plane = (oh_count // 2) * pooled_w
    for p in range(filters):
        out[p] = 0
    # the padding, and the margin the last vectors read (times zeros of the wide rows):
    # zero once, each image then copies only the pixels inside x; so gy's wide rows,
    # zero past each row's OW and after the last (their gaps are never written)
    zero_outside(x, cg, pt, pl, sh, sw, kh, kw, hp, wp, xpad)
    zero(xpad + cg * channel, margin)
    if gy != NULL:
        for k in range(kg):
            for oh in range(oh_count):
                zero(wide + k * length + oh * wp + ow_count, wp - ow_count)
            zero(wide + k * length + oh_count * wp, length - oh_count * wp)
    for n in range(n0, n1):
        copy_inside(x, n, g * cg, cg, pt, pl, sh, sw, kh, kw, hp, wp, xpad)
        for k in range(kg):  # gy's rows on the padded width
            if gy != NULL:
                for oh in range(oh_count):
                    fc_copy_row(wide + k * length + oh * wp,
                                gy + ((n * n_out + g * kg + k) * oh_count + oh) * ow_count,
                                ow_count * sizeof(floating))
            else:
                bad += scatter_wide_rows(
                    pooled_gy + (n * n_out + g * kg + k) * pooled_plane,
                    pooled_idx + (n * n_out + g * kg + k) * pooled_plane, pooled_w,
                    oh_count, ow_count, wp, length, wide + k * length)
        k = 0
        while k < kg:
            nk = block_channels(kg - k)
            blocks = (taps * nk + FC_WG_MAX_TAPS - 1) // FC_WG_MAX_TAPS
            for c in range(cg):
                t = 0
                for b_ in range(blocks):  # near-equal runs of taps, in order
                    nj = (taps - t) // (blocks - b_)
                    block(wide + k * length, length, xpad + c * channel, offsets + t, length,
                          out + (k * cg + c) * taps + t, cg * taps, nk, nj)
                    t += nj
            k += nk
    return bad


cdef extern from *:
    """
    #include <stddef.h>
    /* One pooled row of 2x2 windows (stride 2) unpooled into the wide gradient rows top
       and bottom, their first 2 * count columns assigned (not added: the windows do not
       overlap): each pooled gradient g[q] (plus 0.0, as the zeros it would be added to
       make -0.0 into +0.0) at its argmax at[q] = base + 2q + (0, 1, width or width + 1),
       zeros at the window's other three. Returns 0 where an argmax lies outside its own
       window (the rows are then not to be trusted), else 1. In vectors of 8 float (4
       double) windows, the last overlapping the one before (the same values written
       again); a row under one vector one window at a time, without branches on the data. */
    #if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
    typedef float fc_up_vf __attribute__((vector_size(32)));
    typedef float fc_up_vf_u __attribute__((vector_size(32), aligned(4)));
    typedef double fc_up_vd __attribute__((vector_size(32)));
    typedef double fc_up_vd_u __attribute__((vector_size(32), aligned(8)));
    typedef int fc_up_vi __attribute__((vector_size(32)));
    typedef long long fc_up_vl __attribute__((vector_size(32)));
    typedef long long fc_up_vl_u __attribute__((vector_size(32), aligned(8)));
    #define FC_UP_VECTORS 1
    /* (rel == 0, == 1, == width, == width + 1) of 4 windows, each lane -1 or 0 */
    #define FC_UP_MASKS(REL, M0, M1, M2, M3, WIDTH)                                         \\
        fc_up_vl M0 = (REL) == 0, M1 = (REL) == 1, M2 = (REL) == (WIDTH),                  \\
                 M3 = (REL) == (WIDTH) + 1
    static inline int fc_up_all(fc_up_vl ok) {
        return (ok[0] & ok[1] & ok[2] & ok[3]) != 0;
    }
    static inline int fc_unpool8_f(const float *g, const long long *at, long long base,
                                   long long width, float *top, float *bottom) {
        const fc_up_vl lo_steps = {0, 2, 4, 6}, hi_steps = {8, 10, 12, 14};
        fc_up_vl lo = *(const fc_up_vl_u *)at - (lo_steps + base);
        fc_up_vl hi = *(const fc_up_vl_u *)(at + 4) - (hi_steps + base);
        FC_UP_MASKS(lo, l0, l1, l2, l3, width);
        FC_UP_MASKS(hi, h0, h1, h2, h3, width);
        /* the int64 masks' low halves, as 8 int32 lanes beside the floats */
        #define FC_UP_LOW(L, H) \\
            __builtin_shufflevector((fc_up_vi)(L), (fc_up_vi)(H), 0, 2, 4, 6, 8, 10, 12, 14)
        fc_up_vi m0 = FC_UP_LOW(l0, h0), m1 = FC_UP_LOW(l1, h1);
        fc_up_vi m2 = FC_UP_LOW(l2, h2), m3 = FC_UP_LOW(l3, h3);
        fc_up_vi v = (fc_up_vi)(*(const fc_up_vf_u *)g + 0.0f);
        fc_up_vf tl = (fc_up_vf)(v & m0), tr = (fc_up_vf)(v & m1);
        fc_up_vf bl = (fc_up_vf)(v & m2), br = (fc_up_vf)(v & m3);
        *(fc_up_vf_u *)top = __builtin_shufflevector(tl, tr, 0, 8, 1, 9, 2, 10, 3, 11);
        *(fc_up_vf_u *)(top + 8) = __builtin_shufflevector(tl, tr, 4, 12, 5, 13, 6, 14, 7, 15);
        *(fc_up_vf_u *)bottom = __builtin_shufflevector(bl, br, 0, 8, 1, 9, 2, 10, 3, 11);
        *(fc_up_vf_u *)(bottom + 8) = __builtin_shufflevector(bl, br, 4, 12, 5, 13, 6, 14, 7, 15);
        return fc_up_all((l0 | l1 | l2 | l3) & (h0 | h1 | h2 | h3));
    }
    static inline int fc_unpool4_d(const double *g, const long long *at, long long base,
                                   long long width, double *top, double *bottom) {
        const fc_up_vl steps = {0, 2, 4, 6};
        fc_up_vl rel = *(const fc_up_vl_u *)at - (steps + base);
        FC_UP_MASKS(rel, m0, m1, m2, m3, width);
        fc_up_vl v = (fc_up_vl)(*(const fc_up_vd_u *)g + 0.0);
        fc_up_vd tl = (fc_up_vd)(v & m0), tr = (fc_up_vd)(v & m1);
        fc_up_vd bl = (fc_up_vd)(v & m2), br = (fc_up_vd)(v & m3);
        *(fc_up_vd_u *)top = __builtin_shufflevector(tl, tr, 0, 4, 1, 5);
        *(fc_up_vd_u *)(top + 4) = __builtin_shufflevector(tl, tr, 2, 6, 3, 7);
        *(fc_up_vd_u *)bottom = __builtin_shufflevector(bl, br, 0, 4, 1, 5);
        *(fc_up_vd_u *)(bottom + 4) = __builtin_shufflevector(bl, br, 2, 6, 3, 7);
        return fc_up_all(m0 | m1 | m2 | m3);
    }
    #else
    #define FC_UP_VECTORS 0
    static inline int fc_unpool8_f(const float *g, const long long *at, long long base,
                                   long long width, float *top, float *bottom) { return 0; }
    static inline int fc_unpool4_d(const double *g, const long long *at, long long base,
                                   long long width, double *top, double *bottom) { return 0; }
    #endif
    #define FC_UNPOOL_ROW(NAME, T, VECTOR, LANES)                                            \\
    static int NAME(const T *g, const long long *at, ptrdiff_t count, long long base,       \\
                    long long width, T *top, T *bottom) {                                   \\
        ptrdiff_t q;                                                                        \\
        int ok = 1;                                                                         \\
        if (FC_UP_VECTORS && count >= LANES) {                                              \\
            for (q = 0;; q += LANES) {                                                      \\
                if (q + LANES > count)                                                      \\
                    q = count - LANES;                                                      \\
                ok &= VECTOR(g + q, at + q, base + 2 * q, width, top + 2 * q,               \\
                             bottom + 2 * q);                                               \\
                if (q + LANES >= count)                                                     \\
                    return ok;                                                              \\
            }                                                                               \\
        }                                                                                   \\
        for (q = 0; q < count; q++) {                                                       \\
            long long rel = at[q] - base - 2 * q;                                           \\
            T value = g[q];                                                                 \\
            top[2 * q] = rel == 0 ? value : 0;                                              \\
            top[2 * q + 1] = rel == 1 ? value : 0;                                          \\
            bottom[2 * q] = rel == width ? value : 0;                                       \\
            bottom[2 * q + 1] = rel == width + 1 ? value : 0;                               \\
            ok &= rel == 0 || rel == 1 || rel == width || rel == width + 1;                 \\
        }                                                                                   \\
        return ok;                                                                          \\
    }
    FC_UNPOOL_ROW(fc_unpool_row_f, float, fc_unpool8_f, 8)
    FC_UNPOOL_ROW(fc_unpool_row_d, double, fc_unpool4_d, 4)
    """
    int fc_unpool_row_f(const float* g, const long long* at, Py_ssize_t count,
                        long long base, long long width, float* top,
                        float* bottom) noexcept nogil
    int fc_unpool_row_d(const double* g, const long long* at, Py_ssize_t count,
                        long long base, long long width, double* top,
                        double* bottom) noexcept nogil


cdef inline bint unpool_row(const floating* g, const long long* at, index_t count,
                            long long base, long long width, floating* top,
                            floating* bottom) noexcept nogil:
    if floating is float:
        return fc_unpool_row_f(g, at, count, base, width, top, bottom)
    else:
        return fc_unpool_row_d(g, at, count, base, width, top, bottom)


cdef inline index_t scatter_wide_rows(const floating* g, const long long* at, index_t pw,
                                      index_t oh_count, index_t ow_count, index_t wp,
                                      index_t length, floating* wide) noexcept nogil:
    """One channel of max_pool2d_backward's gy made on the padded width: each pooled
    gradient (OH // 2 rows of pw) at its argmax h * OW + w, zeros elsewhere. Where every
    argmax lies in its own window, as 2x2 pooling gives, the rows are assigned window by
    window (unpool_row: no zeroing pass, no scatter, no branch on the data); else made
    again by zeros and adds (repeats added; an argmax outside the plane skipped and
    counted, the count returned)."""
    cdef index_t p, r, q, bad = 0
    cdef long long a
    cdef bint in_windows = True
    for r in range(oh_count // 2):
        in_windows &= unpool_row(g + r * pw, at + r * pw, pw, 2 * r * ow_count, ow_count,
                                 wide + 2 * r * wp, wide + (2 * r + 1) * wp)
        for p in range(2 * pw, wp):  # an odd OW's last column, the padding
            wide[2 * r * wp + p] = 0
            wide[(2 * r + 1) * wp + p] = 0
    if in_windows:
        for p in range(2 * (oh_count // 2) * wp, length):  # an odd OH's last row, the tail
            wide[p] = 0
        return 0
    for p in range(length):
        wide[p] = 0
    for r in range(oh_count // 2):
        for q in range(pw):
            a = at[r * pw + q]
            if 0 <= a < oh_count * ow_count:
                wide[(a // ow_count) * wp + a % ow_count] += g[r * pw + q]
            else:
                bad += 1
    return bad


cdef inline index_t block_channels(index_t rest) noexcept nogil:
    """Output channels of the next weight-gradient block, of ``rest`` left: 4 (with 3
    taps) or 3 (with 4), never leaving one alone (5 -> 3 + 2, 6 -> 3 + 3)."""
    if rest == 5 or rest == 6:
        return 3
    return min(rest, 4)


cdef inline void block(const floating* g, index_t ldg, const floating* x,
                       const index_t* offsets, index_t length, double* out, index_t ldo,
                       index_t nk, index_t nj) noexcept nogil:
    if floating is float:
        fc_wg_float(g, ldg, x, offsets, length, out, ldo, <int> nk, <int> nj)
    else:
        fc_wg_double(g, ldg, x, offsets, length, out, ldo, <int> nk, <int> nj)
