"""Channel-vectorised direct convolution: forward, input gradient and weight gradient.

Dimension legend: N batch, C input channels, H, W input size, K output channels,
G groups, CG = C / G, KG = K / G, KH, KW kernel size, SH, SW stride, DH, DW
dilation, OH, OW output size, CKK = CG * KH * KW taps, KP = KG rounded up to whole
SIMD vectors (``lanes()``), R output rows per band.

Notes
-----
For few channels on small images (LeNet's layers) a GEMM is too small to pay for its
packing, and vectorising along an output row of 10 pixels wastes most of a vector.
Here one SIMD vector holds consecutive output channels instead: each input value is
loaded once, broadcast, and multiplied into a vector of channels, with a block of up to
12 accumulator vectors held in registers (``_cvec.h``): output pixels x channel vectors
for the forward pass, kernel taps x channel vectors for the weight gradient.

The packed weights are (G, CKK, KP): tap-major, channels contiguous, zero beyond KG.

Each task copies one band of input rows of one image and group into its thread's
workspace, zero-padded (so the loops test nothing), and (forward) computes the band's
outputs pixel-major into the workspace, then writes them to y channel-major, or
(weight gradient) transposes the band's output gradient pixel-major and adds the
band's products into its chunk's partial sums; chunks are fixed by the shape and
summed in order by the caller. The input gradient scatters instead: for one image and
group, each gy pixel times each tap (a vector of x's channels) is added into a padded
input-gradient image, pixel-major, that is then copied to gx. Every output is summed
in one fixed order: results are bit-identical for any thread count.
"""

from cython.parallel cimport prange, threadid

from fastconv._kernels._band cimport copy_band
from fastconv._kernels._shape cimport input_extent
from fastconv._kernels._types cimport floating, index_t

cdef extern from "_cvec.h" nogil:
    int FC_LANES_F
    int FC_LANES_D
    int FC_TRANSPOSE8
    void fc_transpose8_f(const float* src, Py_ssize_t ld_src, float* dst, Py_ssize_t ld_dst,
                         const float* add, int rows)
    int fc_max_block(int nv)
    void fc_fwd_f(const float* x, Py_ssize_t step, const Py_ssize_t* tap_off,
                  Py_ssize_t n_taps, const float* w, Py_ssize_t ldw, float* out,
                  Py_ssize_t ldo, int nv, int r)
    void fc_fwd_d(const double* x, Py_ssize_t step, const Py_ssize_t* tap_off,
                  Py_ssize_t n_taps, const double* w, Py_ssize_t ldw, double* out,
                  Py_ssize_t ldo, int nv, int r)
    void fc_wgrad_f(const float* x, Py_ssize_t row_step, Py_ssize_t step, Py_ssize_t rows,
                    Py_ssize_t cols, const float* g, Py_ssize_t ldg,
                    const Py_ssize_t* tap_off, float* out, Py_ssize_t ldo, int nv, int tb)
    void fc_wgrad_d(const double* x, Py_ssize_t row_step, Py_ssize_t step, Py_ssize_t rows,
                    Py_ssize_t cols, const double* g, Py_ssize_t ldg,
                    const Py_ssize_t* tap_off, double* out, Py_ssize_t ldo, int nv, int tb)
    void fc_igrad_f(const float* g, Py_ssize_t g_r, Py_ssize_t g_k, Py_ssize_t n_k,
                    const float* w, Py_ssize_t ldk, Py_ssize_t t_w, float* out,
                    Py_ssize_t r_step, Py_ssize_t t_step, int nv, int r, int tb)
    void fc_igrad_d(const double* g, Py_ssize_t g_r, Py_ssize_t g_k, Py_ssize_t n_k,
                    const double* w, Py_ssize_t ldk, Py_ssize_t t_w, double* out,
                    Py_ssize_t r_step, Py_ssize_t t_step, int nv, int r, int tb)
    void fc_igrad_rows_f(const float* g, Py_ssize_t g_r, Py_ssize_t g_k, Py_ssize_t n_k,
                         const float* w, Py_ssize_t ldk, Py_ssize_t t_w, float* out,
                         Py_ssize_t r_step, Py_ssize_t t_step, Py_ssize_t kh, Py_ssize_t kw,
                         Py_ssize_t w_row, Py_ssize_t out_row, int r)
    void fc_igrad_rows_d(const double* g, Py_ssize_t g_r, Py_ssize_t g_k, Py_ssize_t n_k,
                         const double* w, Py_ssize_t ldk, Py_ssize_t t_w, double* out,
                         Py_ssize_t r_step, Py_ssize_t t_step, Py_ssize_t kh, Py_ssize_t kw,
                         Py_ssize_t w_row, Py_ssize_t out_row, int r)


def lanes(bint double_precision):
    """Channels per SIMD vector of this build: for float64 when ``double_precision``."""
    return FC_LANES_D if double_precision else FC_LANES_F


def band_extent(index_t rows, index_t ow, index_t kh, index_t kw, index_t sh, index_t sw,
                index_t dh, index_t dw):
    """(HP, WP): the input rows and columns, padding included, that a band of ``rows``
    output rows of width ``ow`` reads (the planner sizes bands and workspaces by it)."""
    return input_extent(rows, sh, kh, dh), input_extent(ow, sw, kw, dw)


def pack_weights(const floating[:, :, ::1] w, floating[:, :, ::1] packed, bint scatter):
    """Weights w (K, CG, KH * KW) into ``packed``, zero beyond the channels: for the
    forward and weight gradient (scatter False) packed (G, CKK, KP) holds
    w[g * KG + k, c, t] at [g, c * KH * KW + t, k]; for the scatter input gradient
    packed (G, KG * KH * KW, CP) holds it at [g, k * KH * KW + t, c]."""
    cdef index_t k_all = w.shape[0], cg = w.shape[1], taps = w.shape[2]
    cdef index_t groups = packed.shape[0], lanes_ = packed.shape[2]
    cdef index_t kg = k_all // max(groups, 1), g, k, c, t
    if (groups < 1 or k_all != groups * kg
            or packed.shape[1] != (kg * taps if scatter else cg * taps)
            or lanes_ < (cg if scatter else kg)):
        raise ValueError("packed weights do not match w")
    with nogil:
        packed[...] = 0
        for g in range(groups):
            for k in range(kg):
                for c in range(cg):
                    for t in range(taps):
                        if scatter:
                            packed[g, k * taps + t, c] = w[g * kg + k, c, t]
                        else:
                            packed[g, c * taps + t, k] = w[g * kg + k, c, t]


cdef enum:
    PIXEL_BLOCK = 16  # pixels per block when a band changes between pixel- and channel-major
    POOL_CHANNELS = 64  # channels per step of a pooled band's windows


cdef inline index_t balanced_block(index_t length, index_t most) noexcept nogil:
    """Block size <= most that covers length in the fewest, most even blocks."""
    cdef index_t blocks = (length + most - 1) // most
    return (length + blocks - 1) // blocks


cdef inline void fwd_block(const floating* x, index_t step, const index_t* tap_off,
                           index_t n_taps, const floating* w, index_t ldw, floating* out,
                           index_t ldo, int nv, int r) noexcept nogil:
    if floating is float:
        fc_fwd_f(x, step, tap_off, n_taps, w, ldw, out, ldo, nv, r)
    else:
        fc_fwd_d(x, step, tap_off, n_taps, w, ldw, out, ldo, nv, r)


cdef inline void wgrad_block(const floating* x, index_t row_step, index_t step, index_t rows,
                             index_t cols, const floating* g, index_t ldg,
                             const index_t* tap_off, floating* out, index_t ldo, int nv,
                             int tb) noexcept nogil:
    if floating is float:
        fc_wgrad_f(x, row_step, step, rows, cols, g, ldg, tap_off, out, ldo, nv, tb)
    else:
        fc_wgrad_d(x, row_step, step, rows, cols, g, ldg, tap_off, out, ldo, nv, tb)


cdef inline void igrad_block(const floating* g, index_t g_r, index_t g_k, index_t n_k,
                             const floating* w, index_t ldk, index_t t_w, floating* out,
                             index_t r_step, index_t t_step, int nv, int r,
                             int tb) noexcept nogil:
    if floating is float:
        fc_igrad_f(g, g_r, g_k, n_k, w, ldk, t_w, out, r_step, t_step, nv, r, tb)
    else:
        fc_igrad_d(g, g_r, g_k, n_k, w, ldk, t_w, out, r_step, t_step, nv, r, tb)


cdef inline void igrad_rows(const floating* g, index_t g_r, index_t g_k, index_t n_k,
                            const floating* w, index_t ldk, index_t t_w, floating* out,
                            index_t r_step, index_t t_step, index_t kh, index_t kw,
                            index_t w_row, index_t out_row, int r) noexcept nogil:
    if floating is float:
        fc_igrad_rows_f(g, g_r, g_k, n_k, w, ldk, t_w, out, r_step, t_step, kh, kw, w_row,
                        out_row, r)
    else:
        fc_igrad_rows_d(g, g_r, g_k, n_k, w, ldk, t_w, out, r_step, t_step, kh, kw, w_row,
                        out_row, r)


cdef void forward_band(const floating* band, const floating* wg, const index_t* tap_off,
                       index_t ckk, index_t kp, index_t lanes_, index_t rows, index_t ow,
                       index_t row_step, index_t sw, floating* out) noexcept nogil:
    """out[(r * OW + j) * KP + k] = sum_t wg[t, k] * band[tap_off[t] + r * row_step + j * sw]:
    channel blocks of two vectors (one for an odd last vector), pixel blocks of R."""
    cdef index_t kb = 0, r, j, j0, block
    cdef int nv, most
    while kb < kp:
        nv = 2 if kp - kb >= 2 * lanes_ else 1
        most = fc_max_block(nv)
        block = balanced_block(ow, most)
        for r in range(rows):
            j = 0
            while j < ow:
                j0 = min(j, ow - block)  # the last block may overlap: same sums again
                fwd_block(band + r * row_step + j0 * sw, sw, tap_off, ckk, wg + kb, kp,
                          out + (r * ow + j0) * kp + kb, kp, nv, <int>block)
                j += block
        kb += nv * lanes_


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] w_packed,
                   const floating[::1] b, floating[:, :, :, ::1] y,
                   floating[:, ::1] workspace, const index_t[::1] tap_off,
                   index_t kh, index_t kw, index_t sh, index_t sw, index_t pt, index_t pl,
                   index_t dh, index_t dw, index_t rows, int n_threads):
    """y = conv(x, w) + b (b may be None) with packed weights (G, CKK, KP).

    ``tap_off`` holds the offset of each tap in a band of the workspace,
    c * band_plane(rows) + i * DH * WP + j * DW. ``rows`` output rows per band;
    workspace rows hold band_plane(rows) * CG + rows * OW * KP elements.
    """
    if y.shape[0] != x.shape[0]:
        raise ValueError("packed weights or bias do not match x and y")
    run_forward(x, w_packed, b, &y[0, 0, 0, 0] if y.size else NULL, NULL, NULL, y.shape[1],
                y.shape[2], y.shape[3], workspace, tap_off, kh, kw, sh, sw, pt, pl, dh, dw,
                rows, n_threads)


def conv2d_forward_max_pool(
    const floating[:, :, :, ::1] x,      # IN (N, C, H, W)
    const floating[:, :, ::1] w_packed,  # IN (G, CKK, KP)
    const floating[::1] b,               # IN (K,) or None
    floating[:, :, :, ::1] pooled,       # OUT (N, K, OH // 2, OW // 2)
    long long[:, :, :, ::1] pooled_idx,  # OUT (N, K, OH // 2, OW // 2): h * OW + w, or None
    floating[:, ::1] workspace,          # SCRATCH as conv2d_forward's
    const index_t[::1] tap_off,          # IN (CKK,) as conv2d_forward's
    index_t oh, index_t ow, index_t kh, index_t kw, index_t pt, index_t pl, index_t dh,
    index_t dw, index_t rows, int n_threads,
):
    """max_pool2d(conv(x, w) + b, 2) at stride 1 (the convolution's output OH x OW, as
    conv2d_forward's y would be) without writing the convolution's output: each band
    of an even number of rows is pooled from its pixel-major outputs. Values and argmax
    are those of max_pool2d over y."""
    if rows < 2 or rows % 2:
        raise ValueError("bands of pooled rows take an even number of rows")
    if (pooled.shape[0] != x.shape[0] or pooled.shape[2] != oh // 2
            or pooled.shape[3] != ow // 2
            or (pooled_idx is not None and tuple(pooled_idx.shape) != tuple(pooled.shape))):
        raise ValueError("pooled outputs do not match the convolution's")
    run_forward(x, w_packed, b, NULL, &pooled[0, 0, 0, 0] if pooled.size else NULL,
                &pooled_idx[0, 0, 0, 0] if pooled_idx is not None and pooled.size else NULL,
                pooled.shape[1], oh, ow, workspace, tap_off, kh, kw, 1, 1, pt, pl, dh, dw,
                rows, n_threads)


cdef run_forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] w_packed,
                 const floating[::1] b, floating* y, floating* pooled, long long* pooled_idx,
                 index_t n_out, index_t oh, index_t ow, floating[:, ::1] workspace,
                 const index_t[::1] tap_off, index_t kh, index_t kw, index_t sh, index_t sw,
                 index_t pt, index_t pl, index_t dh, index_t dw, index_t rows, int n_threads):
    """Every forward unit into y (N, K, OH, OW), or pooled into ``pooled`` (and
    ``pooled_idx`` unless NULL) where y is NULL."""
    cdef index_t n_batch = x.shape[0], groups = w_packed.shape[0]
    # max(groups, 1): no division by zero before the checks below refuse groups == 0
    cdef index_t cg = x.shape[1] // max(groups, 1), ckk = w_packed.shape[1]
    cdef index_t kp = w_packed.shape[2], kg = n_out // max(groups, 1)
    cdef index_t lanes_ = FC_LANES_D if floating is double else FC_LANES_F
    cdef index_t wp = input_extent(ow, sw, kw, dw)
    cdef index_t band_h = input_extent(rows, sh, kh, dh)
    cdef index_t plane = band_h * wp
    cdef index_t bands, units, u
    if (groups < 1 or n_threads < 1 or workspace.shape[0] < n_threads
            or x.shape[1] != groups * cg or ckk != cg * kh * kw or kp < kg
            or kp % lanes_ or n_out != groups * kg or (b is not None and b.shape[0] != n_out)):
        raise ValueError("packed weights or bias do not match x and y")
    if rows < 1 or tap_off.shape[0] != ckk or workspace.shape[1] < cg * plane + rows * ow * kp:
        raise ValueError("tap offsets or workspace too small")
    if y == NULL and pooled == NULL:
        return  # nothing to write
    bands = (oh + rows - 1) // rows
    units = n_batch * groups * bands
    if n_threads == 1:  # no parallel region: at batch 1 it costs a good part of the work
        with nogil:
            for u in range(units):
                forward_unit(x, w_packed, b, y, pooled, pooled_idx, kg, oh, ow,
                             &workspace[0, 0], tap_off, u, bands, rows, kh, sh, sw, pt, pl,
                             dh, lanes_, wp, plane)
        return
    for u in prange(units, nogil=True, schedule="static", num_threads=n_threads):
        forward_unit(x, w_packed, b, y, pooled, pooled_idx, kg, oh, ow,
                     &workspace[threadid(), 0], tap_off, u, bands, rows, kh, sh, sw, pt, pl,
                     dh, lanes_, wp, plane)


cdef void forward_unit(const floating[:, :, :, ::1] x, const floating[:, :, ::1] w_packed,
                       const floating[::1] b, floating* y, floating* pooled,
                       long long* pooled_idx, index_t kg, index_t oh, index_t ow,
                       floating* band, const index_t[::1] tap_off, index_t u, index_t bands,
                       index_t rows, index_t kh, index_t sh, index_t sw, index_t pt,
                       index_t pl, index_t dh, index_t lanes_, index_t wp,
                       index_t plane) noexcept nogil:
    """The forward's unit ``u``: one band of ``rows`` output rows of one (image, group),
    ``band`` the thread's workspace row; into y, or pooled where y is NULL (rows even:
    a band's last odd row, the image's last, is never pooled nor computed)."""
    cdef index_t groups = w_packed.shape[0], ckk = w_packed.shape[1], kp = w_packed.shape[2]
    cdef index_t cg = x.shape[1] // groups, k_all = groups * kg
    cdef index_t n = u // (groups * bands), g = (u % (groups * bands)) // bands
    cdef index_t oh0 = (u % bands) * rows
    cdef index_t n_rows = min(rows, oh - oh0)
    cdef index_t pw = ow // 2, pplane = (oh // 2) * (ow // 2)
    cdef const floating* bias = &b[g * kg] if b is not None else NULL
    cdef floating* out = band + cg * plane
    if y == NULL:
        n_rows -= n_rows % 2
        if n_rows == 0:
            return
    copy_band(x, n, g * cg, cg, oh0 * sh - pt, input_extent(n_rows, sh, kh, dh),
              -pl, wp, plane, band)
    forward_band(band, &w_packed[g, 0, 0], &tap_off[0], ckk, kp, lanes_, n_rows, ow,
                 sh * wp, sw, out)
    if y != NULL:
        store_band(out, kp, kg, n_rows * ow, bias, y + ((n * k_all + g * kg) * oh + oh0) * ow,
                   oh * ow)
    else:
        pool_band(out, kp, kg, n_rows, ow, bias, oh0,
                  pooled + (n * k_all + g * kg) * pplane + (oh0 // 2) * pw,
                  pooled_idx + (n * k_all + g * kg) * pplane + (oh0 // 2) * pw
                  if pooled_idx != NULL else NULL, pplane)


cdef void store_band(const floating* out, index_t kp, index_t kg, index_t n_px,
                     const floating* bias, floating* y, index_t plane) noexcept nogil:
    """y[k * plane + p] = out[p * KP + k] + bias[k] (no bias: NULL) for k < KG, p < n_px:
    a band's pixel-major outputs to channel planes, in blocks of PIXEL_BLOCK pixels
    whose rows of ``out`` stay in L1 while every channel is written; float32 in 8 x 8
    blocks transposed in registers where the build has them (KP is a multiple of 8)."""
    cdef index_t p0 = 0, p, k, k0, stop
    cdef floating bias_k
    if floating is float:
        if FC_TRANSPOSE8:
            while p0 + 8 <= n_px:
                for k0 in range(0, kg, 8):
                    fc_transpose8_f(out + p0 * kp + k0, kp, y + k0 * plane + p0, plane,
                                    bias + k0 if bias != NULL else NULL,
                                    <int> min(8, kg - k0))
                p0 += 8
    while p0 < n_px:
        stop = min(p0 + PIXEL_BLOCK, n_px)
        for k in range(kg):
            bias_k = bias[k] if bias != NULL else 0
            for p in range(p0, stop):
                y[k * plane + p] = out[p * kp + k] + bias_k
        p0 = stop


cdef void pool_band(const floating* out, index_t kp, index_t kg, index_t rows, index_t ow,
                    const floating* bias, index_t oh0, floating* pooled,
                    long long* pooled_idx, index_t pplane) noexcept nogil:
    """pooled[k * pplane + q] = the maximum of the 2x2 window q of the band's pixel-major
    outputs plus bias[k] (each value as store_band writes it), pooled_idx (unless NULL)
    its offset in the output plane (OW wide, the band's first row oh0), for k < KG and
    the band's rows // 2 rows of OW // 2 windows. Taps in scan order as max_pool2d's:
    NaN wins, ties keep the earlier. Each window's channels go through branch-free
    selects along the contiguous channels (vectorised), then out to the channel planes."""
    cdef index_t pw = ow // 2, r2, j2, k, k0, nk, q
    cdef floating best[POOL_CHANNELS]
    cdef int rel[POOL_CHANNELS]
    cdef const floating* p
    cdef long long base
    for r2 in range(rows // 2):
        for j2 in range(pw):
            q = r2 * pw + j2
            base = (oh0 + 2 * r2) * ow + 2 * j2
            k0 = 0
            while k0 < kg:
                nk = min(<index_t>POOL_CHANNELS, kg - k0)
                p = out + (2 * r2 * ow + 2 * j2) * kp + k0
                window_max(p, p + kp, p + ow * kp, p + (ow + 1) * kp,
                           bias + k0 if bias != NULL else NULL, nk, <int>ow, best, rel)
                for k in range(nk):
                    pooled[(k0 + k) * pplane + q] = best[k]
                if pooled_idx != NULL:
                    for k in range(nk):
                        pooled_idx[(k0 + k) * pplane + q] = base + rel[k]
                k0 += nk


cdef inline void window_max(const floating* v0, const floating* v1, const floating* v2,
                            const floating* v3, const floating* bias, index_t nk, int ow,
                            floating* best, int* rel) noexcept nogil:
    """best[k], rel[k] = the maximum of v0[k] .. v3[k] (each plus bias[k]; NULL: plus 0)
    and its tap's offset 0, 1, ow or ow + 1, for k < nk."""
    cdef index_t k
    cdef floating bias_k, b, value
    cdef int r
    cdef bint take
    for k in range(nk):
        bias_k = bias[k] if bias != NULL else 0
        b = v0[k] + bias_k
        r = 0
        value = v1[k] + bias_k
        take = (value > b) | (value != value)
        b = value if take else b
        r = 1 if take else r
        value = v2[k] + bias_k
        take = (value > b) | (value != value)
        b = value if take else b
        r = ow if take else r
        value = v3[k] + bias_k
        take = (value > b) | (value != value)
        b = value if take else b
        r = ow + 1 if take else r
        best[k] = b
        rel[k] = r


cdef void transpose_band(const floating[:, :, :, ::1] gy, index_t n, index_t k0, index_t kg,
                         index_t kp, index_t oh0, index_t rows, floating* out) noexcept nogil:
    """out[(r * OW + j) * KP + k] = gy[n, k0 + k, oh0 + r, j], zero for KG <= k < KP,
    in blocks of PIXEL_BLOCK pixels (see store_band); float32 in 8 x 8 blocks transposed
    in registers where the build has them, for whole blocks of 8 channels."""
    cdef index_t ow = gy.shape[3], plane = gy.shape[2] * ow, n_px = rows * ow
    cdef const floating* g = &gy[n, k0, oh0, 0]
    cdef index_t p0 = 0, p, k, c0, stop, whole = kg - kg % 8
    if floating is float:
        if FC_TRANSPOSE8:
            while p0 + 8 <= n_px:
                for c0 in range(0, whole, 8):
                    fc_transpose8_f(g + c0 * plane + p0, plane, out + p0 * kp + c0, kp, NULL,
                                    8)
                for p in range(p0, p0 + 8):
                    for k in range(whole, kg):
                        out[p * kp + k] = g[k * plane + p]
                    for k in range(kg, kp):
                        out[p * kp + k] = 0
                p0 += 8
    while p0 < n_px:
        stop = min(p0 + PIXEL_BLOCK, n_px)
        for k in range(kg):
            for p in range(p0, stop):
                out[p * kp + k] = g[k * plane + p]
        for p in range(p0, stop):
            for k in range(kg, kp):
                out[p * kp + k] = 0
        p0 = stop


cdef void weight_grad_band(const floating* band, const floating* g_t, const index_t* tap_off,
                           index_t ckk, index_t kp, index_t lanes_, index_t rows, index_t ow,
                           index_t row_step, index_t sw, floating* partial) noexcept nogil:
    """partial[t, k] += sum over the band's pixels of g_t[p, k] * band[pixel + tap_off[t]]."""
    cdef index_t kb = 0, t, tb
    cdef int nv
    while kb < kp:
        nv = 2 if kp - kb >= 2 * lanes_ else 1
        tb = balanced_block(ckk, fc_max_block(nv))
        t = 0
        while t < ckk:
            tb = min(tb, ckk - t)
            wgrad_block(band, row_step, sw, rows, ow, g_t + kb, kp, tap_off + t,
                        partial + t * kp + kb, kp, nv, <int>tb)
            t += tb
        kb += nv * lanes_


def conv2d_weight_grad(const floating[:, :, :, ::1] gy, const floating[:, :, :, ::1] x,
                       floating[:, :, :, ::1] partials, floating[:, ::1] workspace,
                       const index_t[::1] tap_off, index_t kh, index_t kw, index_t sh,
                       index_t sw, index_t pt, index_t pl, index_t dh, index_t dw,
                       index_t rows, int n_threads):
    """partials[chunk, g, t, k] = the chunk's share of the weight gradient (G, CKK, KP).

    Units (image, band of ``rows`` output rows) are split into ``partials.shape[0]``
    fixed chunks in order; the caller sums the chunks in order. Workspace rows hold
    band_plane(rows) * CG + rows * OW * KP elements.
    """
    cdef index_t n_batch = x.shape[0], n_chunks = partials.shape[0]
    cdef index_t groups = partials.shape[1], ckk = partials.shape[2], kp = partials.shape[3]
    cdef index_t cg = x.shape[1] // max(groups, 1), kg = gy.shape[1] // max(groups, 1)
    cdef index_t oh = gy.shape[2], ow = gy.shape[3]
    cdef index_t lanes_ = FC_LANES_D if floating is double else FC_LANES_F
    cdef index_t wp = input_extent(ow, sw, kw, dw)
    cdef index_t band_h = input_extent(rows, sh, kh, dh)
    cdef index_t plane = band_h * wp
    cdef index_t bands, units
    cdef index_t chunk, u, n, g, oh0, n_rows, tid
    cdef floating* band
    cdef floating* g_t
    if (groups < 1 or n_threads < 1 or workspace.shape[0] < n_threads
            or x.shape[1] != groups * cg or ckk != cg * kh * kw or kp < kg or kp % lanes_
            or gy.shape[0] != n_batch or gy.shape[1] != groups * kg):
        raise ValueError("partials do not match x and gy")
    if rows < 1 or tap_off.shape[0] != ckk or workspace.shape[1] < cg * plane + rows * ow * kp:
        raise ValueError("tap offsets or workspace too small")
    bands = (oh + rows - 1) // rows
    units = n_batch * bands
    if n_chunks < 1 or n_chunks > max(units, 1):
        raise ValueError("need 1 <= chunks <= units")
    partials[...] = 0
    for chunk in prange(n_chunks, nogil=True, schedule="static", num_threads=n_threads):
        tid = threadid()
        band = &workspace[tid, 0]
        g_t = band + cg * plane
        for u in range(chunk * units // n_chunks, (chunk + 1) * units // n_chunks):
            n = u // bands
            oh0 = (u % bands) * rows
            n_rows = min(rows, oh - oh0)
            for g in range(groups):
                copy_band(x, n, g * cg, cg, oh0 * sh - pt,
                          input_extent(n_rows, sh, kh, dh), -pl, wp, plane, band)
                transpose_band(gy, n, g * kg, kg, kp, oh0, n_rows, g_t)
                weight_grad_band(band, g_t, &tap_off[0], ckk, kp, lanes_, n_rows, ow,
                                 sh * wp, sw, &partials[chunk, g, 0, 0])


cdef void input_grad_image(const floating* gy_g, index_t kg, index_t oh, index_t ow,
                           const floating* wg, index_t cp, index_t lanes_, index_t kh,
                           index_t kw, index_t sh, index_t sw, index_t dh, index_t dw,
                           index_t wp, floating* out) noexcept nogil:
    """out (padded input gradient, pixel-major, CP channels) += every gy pixel of one
    image and group times every tap: out[(oh*SH + i*DH, ow*SW + j*DW)] += sum_k
    gy[k, oh, ow] * w[k, (i, j)]; gy_g points at the group's first channel. Taps go in
    pairs along a kernel row (two taps per broadcast of gy), an odd last one alone; with
    one vector of channels each block of pixels takes every tap in one call (igrad_rows)."""
    cdef index_t taps = kh * kw, kb = 0, r, i, j, q, block, n_px, pair_block, one_block
    cdef int nv, tb
    while kb < cp:
        nv = 2 if cp - kb >= 2 * lanes_ else 1
        pair_block = balanced_block(ow, fc_max_block(nv) // 2)  # pixels per block, 2 taps
        one_block = balanced_block(ow, fc_max_block(nv))
        for r in range(oh):
            if nv == 1:
                q = 0
                while q < ow:
                    n_px = min(pair_block, ow - q)  # no overlap: a scatter would add twice
                    igrad_rows(gy_g + r * ow + q, 1, oh * ow, kg, wg + kb, taps * cp, cp,
                               out + (r * sh * wp + q * sw) * cp + kb, sw * cp, dw * cp, kh,
                               kw, kw * cp, dh * wp * cp, <int>n_px)
                    q += n_px
                continue
            for i in range(kh):
                j = 0
                while j < kw:
                    tb = 2 if j + 1 < kw else 1
                    block = pair_block if tb == 2 else one_block
                    q = 0
                    while q < ow:
                        n_px = min(block, ow - q)
                        igrad_block(gy_g + r * ow + q, 1, oh * ow, kg,
                                    wg + (i * kw + j) * cp + kb, taps * cp, cp,
                                    out + ((r * sh + i * dh) * wp + q * sw + j * dw) * cp + kb,
                                    sw * cp, dw * cp, nv, <int>n_px, tb)
                        q += n_px
                    j += tb
        kb += nv * lanes_


def conv2d_input_grad(const floating[:, :, :, ::1] gy, const floating[:, :, ::1] w_packed,
                      const floating[::1] b, floating[:, :, :, ::1] gx,
                      floating[:, ::1] workspace,
                      index_t kh, index_t kw, index_t sh, index_t sw, index_t pt, index_t pl,
                      index_t dh, index_t dw, int n_threads):
    """gx = b + input gradient (b: None or one value per channel of gx), overwritten,
    in scatter form: w_packed (G, KG * KH * KW, CP) holds w[g * KG + k, c, i, j] at
    [g, k * KH * KW + i * KW + j, c], zero for c >= CG.

    One task per (image, group) sums into a padded input-gradient image of
    HP * WP * CP elements in its workspace row (HP, WP: the input extent the output
    reads, (OH - 1) * SH + (KH - 1) * DH + 1 and likewise), then copies it to gx.
    """
    cdef index_t n_batch = gy.shape[0], oh = gy.shape[2], ow = gy.shape[3]
    cdef index_t groups = w_packed.shape[0], cp = w_packed.shape[2]
    cdef index_t kg = gy.shape[1] // max(groups, 1), cg = gx.shape[1] // max(groups, 1)
    cdef index_t height = gx.shape[2], width = gx.shape[3]
    cdef index_t lanes_ = FC_LANES_D if floating is double else FC_LANES_F
    cdef index_t hp = input_extent(oh, sh, kh, dh)
    cdef index_t wp = input_extent(ow, sw, kw, dw)
    cdef index_t u, n, g, p, tid
    cdef bint has_bias = b is not None
    cdef floating* buf
    if (groups < 1 or n_threads < 1 or workspace.shape[0] < n_threads
            or gy.shape[1] != groups * kg or w_packed.shape[1] != kg * kh * kw or cp < cg
            or cp % lanes_ or gx.shape[0] != n_batch or gx.shape[1] != groups * cg
            or (has_bias and b.shape[0] != groups * cg)):
        raise ValueError("packed weights or bias do not match gy and gx")
    if workspace.shape[1] < hp * wp * cp:
        raise ValueError("workspace too small")
    for u in prange(n_batch * groups, nogil=True, schedule="static", num_threads=n_threads):
        tid = threadid()
        buf = &workspace[tid, 0]
        n = u // groups
        g = u % groups
        for p in range(hp * wp * cp):
            buf[p] = 0
        input_grad_image(&gy[n, g * kg, 0, 0], kg, oh, ow, &w_packed[g, 0, 0], cp, lanes_,
                         kh, kw, sh, sw, dh, dw, wp, buf)
        store_input_grad(buf, cp, cg, hp, wp, pt, pl, &b[g * cg] if has_bias else NULL,
                         &gx[n, g * cg, 0, 0], height, width)


cdef void store_input_grad(const floating* buf, index_t cp, index_t cg, index_t hp,
                           index_t wp, index_t pt, index_t pl, const floating* bias,
                           floating* gx, index_t height, index_t width) noexcept nogil:
    """gx[c, h, q] = buf[((h + pt) * WP + q + pl) * CP + c] (+ bias[c]; NULL: nothing
    added) where that pixel lies in the padded image (HP x WP), else bias[c] or 0, for
    c < cg: one image and group's input gradient out of its pixel-major sums."""
    cdef index_t c, h, q, row
    cdef index_t q_lo = min(max(-pl, 0), width), q_hi = max(min(wp - pl, width), q_lo)
    cdef floating init
    cdef floating* out
    cdef const floating* src
    for c in range(cg):
        init = bias[c] if bias != NULL else 0
        for h in range(height):
            out = gx + (c * height + h) * width
            row = h + pt
            if row < 0 or row >= hp:
                for q in range(width):
                    out[q] = init
                continue
            src = buf + (row * wp + pl) * cp + c
            for q in range(q_lo):
                out[q] = init
            if bias != NULL:
                for q in range(q_lo, q_hi):
                    out[q] = src[q * cp] + init
            else:
                for q in range(q_lo, q_hi):
                    out[q] = src[q * cp]
            for q in range(q_hi, width):
                out[q] = init
