"""2-D convolution as im2col + GEMM, forward and backward, over bounded bands.

Dimension legend: N batch, C input channels, H, W input size, K output channels,
G groups, CG = C / G, KG = K / G, KH, KW kernel size, OH, OW output size,
CKK = CG * KH * KW (GEMM depth), ROWS output rows per band, P = ROWS * OW.

Notes
-----
No full-batch column buffer: the work is cut into (image, group, band of output
rows) units and every thread packs the band it works on into its own slot of
``workspace``, then multiplies: y[n, g] band = w[g] (KG x CKK) @ col (CKK x P). Band
sizes are chosen by the caller from the shape alone, never from the thread count, so
results do not depend on it.

The forward packs and multiplies a band in blocks of whole input channels, at most
GEMM_DEPTH_BLOCK deep (``forward_depth`` rows of columns, what its workspace holds),
each block's product added to y in order: the columns a GEMM reads were written just
before and still lie in L2 (a whole band's, thousands deep, would not). The blocks
depend on the shape alone.

A 1x1 kernel with stride 1, no padding and an output of the input's size needs no
im2col: the image rows are already the column matrix. The caller decides that
(``pointwise``, the same decision that sized ``workspace``).

The input gradient runs one task per (image, group): col = w[g]^T @ gy band, then
col2im scatters it into the image the task owns. The weight gradient runs
one task per (chunk, group, block of input channels): a block's columns are packed
for it alone and its GEMMs accumulate into its own slice of gw, so deep layers need
no partial sums. Shallow ones split the (image, band) units into ``k_chunks`` fixed
chunks, each summing into its own partial buffer, reduced in chunk order. Either
way the sum's association is the same for any thread count.

BLAS is called from inside the parallel region: the caller keeps it
single-threaded meanwhile (fastconv._blas). Float32 products of the forward, of the
1x1 backward and of input gradients over bands of at most INPUT_GRAD_OWN_GEMM_COLUMNS
pixels, with at least 32 rows, run fastconv's own GEMM instead (``gemm_many_rows``,
_sgemm.h).
"""

from cython.parallel cimport parallel, prange, threadid

from fastconv._kernels._types cimport floating, index_t
from fastconv._kernels._gemm cimport (
    GEMM_DEPTH_BLOCK, gemm, gemm_many_rows, gemm_many_rows_plus_bias,
)
from fastconv._kernels._im2col cimport col2im_band, im2col_band


cdef inline index_t depth_block_channels(index_t cg, index_t taps) noexcept nogil:
    """Input channels per product of the forward: whole channels, at most
    GEMM_DEPTH_BLOCK deep (one where a kernel alone is deeper)."""
    return max(1, min(cg, GEMM_DEPTH_BLOCK // taps))


def forward_depth(index_t cg, index_t taps):
    """Rows of the columns the forward packs at a time (of a group of ``cg`` input
    channels and a kernel of ``taps`` taps): its workspace per thread is this times
    the band's pixels."""
    return depth_block_channels(cg, taps) * taps


def conv2d_forward(
    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
    const floating[:, :, :, ::1] w,  # IN (K, CG, KH, KW)
    const floating[::1] b,           # IN (K,) or None
    floating[:, :, :, ::1] y,        # OUT (N, K, OH, OW)
    floating[:, ::1] workspace,      # SCRATCH (threads, forward_depth * P), or IN packed columns
    index_t sh, index_t sw, index_t pt, index_t pl, index_t dh, index_t dw,
    index_t groups, index_t rows, index_t kblock, int n_threads, bint pointwise, bint packed,
):
    """y = conv(x, w) + b by im2col + GEMM over bands of ``rows`` output rows.

    ``kblock``: output channels per task (0: a group's all): a band's GEMM is cut
    into blocks of output channels, each a task that packs the band itself, so that
    one image of few bands still gives every thread work.
    ``packed``: workspace already holds every image's columns, as im2col_images
    writes them, (N * G, CKK * OH * OW); nothing is packed here.
    """
    cdef index_t n_images = y.shape[0], n_out = y.shape[1]
    cdef index_t oh_count = y.shape[2], ow_count = y.shape[3]
    cdef index_t height = x.shape[2], width = x.shape[3]
    cdef index_t cg = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef index_t kg = n_out // groups, ckk = cg * kh * kw
    cdef index_t bands = (oh_count + rows - 1) // rows
    cdef index_t kb = kblock if 0 < kblock < kg else kg
    cdef index_t kblocks = (kg + kb - 1) // kb if kg > 0 else 1
    cdef index_t units = n_images * groups * bands * kblocks
    cdef bint has_bias = b is not None
    cdef index_t unit, n, g, band, oh0, oh1, span, slot, k0, k1, c0, cn
    cdef index_t channel_block = depth_block_channels(cg, kh * kw)
    cdef const floating* col
    cdef const floating* bias
    cdef int ldcol
    slot = 0
    with nogil, parallel(num_threads=n_threads):
        slot = threadid()
        for unit in prange(units, schedule="static"):
            n = unit // (groups * bands * kblocks)
            g = (unit // (bands * kblocks)) % groups
            band = (unit // kblocks) % bands
            k0 = g * kg + (unit % kblocks) * kb
            k1 = min(k0 + kb, (g + 1) * kg)
            oh0 = band * rows
            oh1 = min(oh0 + rows, oh_count)
            span = (oh1 - oh0) * ow_count
            bias = &b[k0] if has_bias else NULL
            if pointwise or packed:
                if pointwise:
                    col = &x[n, g * cg, oh0, 0]
                    ldcol = <int> (height * width)
                else:
                    col = &workspace[n * groups + g, oh0 * ow_count]
                    ldcol = <int> (oh_count * ow_count)
                gemm_many_rows_plus_bias(<int> (k1 - k0), <int> span, <int> ckk,
                                         &w[k0, 0, 0, 0], <int> ckk, col, ldcol, bias,
                                         &y[n, k0, oh0, 0], <int> (oh_count * ow_count))
                continue
            c0 = 0
            while c0 < cg:  # blocks of whole channels, each product added to y
                cn = min(channel_block, cg - c0)
                im2col_band(x, n, g * cg + c0, cn, kh, kw, sh, sw, pt, pl, dh, dw,
                            oh0, oh1, ow_count, workspace, slot)
                if c0 == 0:  # the first block's product writes y, the bias with it
                    gemm_many_rows_plus_bias(<int> (k1 - k0), <int> span,
                                             <int> (cn * kh * kw), &w[k0, c0, 0, 0],
                                             <int> ckk, &workspace[slot, 0], <int> span,
                                             bias, &y[n, k0, oh0, 0],
                                             <int> (oh_count * ow_count))
                else:
                    gemm_many_rows(False, False, <int> (k1 - k0), <int> span,
                                   <int> (cn * kh * kw), 1, &w[k0, c0, 0, 0], <int> ckk,
                                   &workspace[slot, 0], <int> span,
                                   1, &y[n, k0, oh0, 0], <int> (oh_count * ow_count))
                c0 = c0 + cn


def conv2d_forward_column_kernel(
    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
    const floating[:, :, :, ::1] w,  # IN (K, CG, KH, 1)
    const floating[::1] b,           # IN (K,) or None
    floating[:, :, :, ::1] y,        # OUT (N, K, OH, W)
    floating[:, :, ::1] w_taps,      # SCRATCH (KH, K, CG): each tap's weights, made here
    index_t pt, index_t dh, index_t groups, index_t rows, int n_threads,
):
    """y = conv(x, w) + b for a kernel one column wide at stride 1 with no padding left
    or right, without im2col: tap i is one product w[:, :, i] (K x CG) @ x's rows
    shifted by i * dh - pt (their own rows: no columns are packed), over the output rows
    of the band where those input rows exist. y's band starts as b (or zero) and each
    tap adds to it in tap order. One task per (image, group, band)."""
    cdef index_t n_images = y.shape[0], n_out = y.shape[1]
    cdef index_t oh_count = y.shape[2], width = y.shape[3]
    cdef index_t height = x.shape[2], cg = w.shape[1], kh = w.shape[2]
    cdef index_t kg = n_out // groups
    cdef index_t bands = (oh_count + rows - 1) // rows
    cdef index_t units = n_images * groups * bands
    cdef bint has_bias = b is not None
    cdef index_t unit, n, g, band, oh0, oh1, k0, k1, k, e, i, off, lo, hi, c
    cdef const floating* wk
    cdef floating* out
    cdef floating init
    if (x.shape[3] != width or w.shape[3] != 1 or x.shape[1] != groups * cg
            or w_taps.shape[0] != kh or w_taps.shape[1] != n_out or w_taps.shape[2] != cg):
        raise ValueError("conv2d_forward_column_kernel: x and y of one width, w one column "
                         "wide, w_taps (KH, K, CG)")
    with nogil:
        for k in prange(n_out, num_threads=n_threads, schedule="static"):
            wk = &w[k, 0, 0, 0]  # read in order; kh streams written
            for c in range(cg):
                for i in range(kh):
                    w_taps[i, k, c] = wk[c * kh + i]
        for unit in prange(units, num_threads=n_threads, schedule="static"):
            n = unit // (groups * bands)
            g = (unit // bands) % groups
            band = unit % bands
            k0 = g * kg
            k1 = k0 + kg
            oh0 = band * rows
            oh1 = min(oh0 + rows, oh_count)
            for k in range(k0, k1):
                out = &y[n, k, oh0, 0]
                init = b[k] if has_bias else 0
                for e in range((oh1 - oh0) * width):
                    out[e] = init
            for i in range(kh):
                off = i * dh - pt  # output row oh reads input row oh + off
                lo = max(oh0, -off)
                hi = min(oh1, height - off)
                if lo < hi:
                    gemm_many_rows(False, False, <int> (k1 - k0), <int> ((hi - lo) * width),
                                   <int> cg, 1, &w_taps[i, k0, 0], <int> cg,
                                   &x[n, g * cg, lo + off, 0], <int> (height * width),
                                   1, &y[n, k0, lo, 0], <int> (oh_count * width))


#: the most pixels of gy per band whose input-gradient product runs fastconv's own GEMM
#: (float32, AVX2): it reads w in place where BLAS copies all of w^T on every call, which
#: over maps of 7x7 or 8x8 costs as much as the arithmetic (one process, alternating:
#: ResNet-18's 3x3 512@7 input gradient at batch 1 0.86-0.89 of the time, 3x3 s2 256 ->
#: 512 over 8x14x14 0.83-0.97, DCGAN's 4x4 s2 256 -> 128 from 8x8 0.90-1.0; over 12x12
#: to 17x17 maps BLAS stays ahead, 1.07-1.17x)
cdef enum:
    INPUT_GRAD_OWN_GEMM_COLUMNS = 64


cdef inline void columns_product(bint own_gemm, int m, int n, int k, const floating* w,
                                 int ldw, const floating* g, int ldg,
                                 floating* col) noexcept nogil:
    """col (m x n) = w^T @ g, w (k x m) and g (k x n) row-major: fastconv's own GEMM where
    ``own_gemm`` (it reads w in place), gemm's choice where not."""
    if own_gemm:
        gemm_many_rows(True, False, m, n, k, 1, w, ldw, g, ldg, 0, col, n)
    else:
        gemm(True, False, m, n, k, 1, w, ldw, g, ldg, 0, col, n)


def conv2d_input_grad(
    const floating[:, :, :, ::1] gy,  # IN (N, K, OH, OW)
    const floating[:, :, :, ::1] w,   # IN (K, CG, KH, KW)
    const floating[::1] b,            # IN (C,) or None: added per channel of gx
    floating[:, :, :, ::1] gx,        # OUT (N, C, H, W), overwritten unless zeroed
    floating[:, ::1] workspace,       # SCRATCH (threads, CKK * P)
    index_t sh, index_t sw, index_t pt, index_t pl, index_t dh, index_t dw,
    index_t groups, index_t rows, index_t cblock, int n_threads, bint pointwise,
    bint zeroed,
):
    """gx = b + col2im(w^T @ gy), one task per (image, group, block of ``cblock`` of
    gx's channels; 0: a group's all): the task fills its channels of gx with b (or
    zero) first, then col2im accumulates into them. Tasks own disjoint channels.

    ``zeroed``: gx is already all zeros (a fresh np.zeros, whose pages the OS hands out
    zeroed): without a bias no fill is needed, which saves a pass over gx."""
    cdef index_t n_images = gy.shape[0], n_out = gy.shape[1]
    cdef index_t oh_count = gy.shape[2], ow_count = gy.shape[3]
    cdef index_t height = gx.shape[2], width = gx.shape[3]
    cdef index_t cg = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef index_t kg = n_out // groups, ckk = cg * kh * kw, taps = kh * kw
    cdef index_t bands = (oh_count + rows - 1) // rows
    cdef index_t cb = cblock if 0 < cblock < cg else cg
    cdef index_t cblocks = (cg + cb - 1) // cb if cg > 0 else 1
    cdef index_t unit, n, g, band, oh0, oh1, span, slot, c, e, c0, cn
    cdef bint has_bias = b is not None
    cdef floating init, beta
    cdef floating* plane
    slot = 0
    with nogil, parallel(num_threads=n_threads):
        slot = threadid()
        for unit in prange(n_images * groups * cblocks, schedule="static"):
            n = unit // (groups * cblocks)
            g = (unit // cblocks) % groups
            c0 = (unit % cblocks) * cb  # within the group
            cn = min(cb, cg - c0)
            # gx starts as the bias, or as zeros for col2im to add to (unless zero already);
            # a pointwise GEMM without a bias overwrites its slot instead (beta 0)
            beta = 1
            if has_bias or not (pointwise or zeroed):
                for c in range(g * cg + c0, g * cg + c0 + cn):
                    init = b[c] if has_bias else 0
                    plane = &gx[n, c, 0, 0]
                    for e in range(height * width):
                        plane[e] = init
            else:
                beta = 0
            for band in range(bands):
                oh0 = band * rows
                oh1 = min(oh0 + rows, oh_count)
                span = (oh1 - oh0) * ow_count
                if pointwise:
                    gemm_many_rows(True, False, <int> cn, <int> span, <int> kg, 1,
                                   &w[g * kg, c0, 0, 0], <int> ckk,
                                   &gy[n, g * kg, oh0, 0], <int> (oh_count * ow_count),
                                   beta, &gx[n, g * cg + c0, oh0, 0], <int> (height * width))
                else:
                    columns_product(span <= INPUT_GRAD_OWN_GEMM_COLUMNS, <int> (cn * taps),
                                    <int> span, <int> kg, &w[g * kg, c0, 0, 0], <int> ckk,
                                    &gy[n, g * kg, oh0, 0], <int> (oh_count * ow_count),
                                    &workspace[slot, 0])
                    col2im_band(workspace, slot, n, g * cg + c0, cn, kh, kw, sh, sw,
                                pt, pl, dh, dw, oh0, oh1, ow_count, gx)


def conv2d_weight_grad(
    const floating[:, :, :, ::1] gy,  # IN (N, K, OH, OW)
    const floating[:, :, :, ::1] x,   # IN (N, C, H, W)
    floating[:, :, :, ::1] gw,        # OUT (K, CG, KH, KW)
    floating[:, ::1] partials,        # SCRATCH (k_chunks, K * CKK); unused when k_chunks == 1
    floating[:, ::1] workspace,       # SCRATCH (threads, CB * KH * KW * P), or IN packed columns
    index_t sh, index_t sw, index_t pt, index_t pl, index_t dh, index_t dw,
    index_t groups, index_t rows, index_t cblock, index_t k_chunks, int n_threads,
    bint pointwise, bint packed,
):
    """gw = sum over images and bands of gy band @ col^T, one task per (chunk, group,
    block of ``cblock`` input channels); chunks are reduced in a fixed order.
    ``packed`` as in conv2d_forward."""
    cdef index_t n_images = gy.shape[0], n_out = gy.shape[1]
    cdef index_t oh_count = gy.shape[2], ow_count = gy.shape[3]
    cdef index_t height = x.shape[2], width = x.shape[3]
    cdef index_t cg = gw.shape[1], kh = gw.shape[2], kw = gw.shape[3]
    cdef index_t kg = n_out // groups, ckk = cg * kh * kw
    cdef index_t bands = (oh_count + rows - 1) // rows
    cdef index_t units = n_images * bands
    cdef index_t n_blocks = (cg + cblock - 1) // cblock
    cdef index_t tasks = k_chunks * groups * n_blocks
    cdef index_t n_weights = n_out * ckk
    cdef index_t task, chunk, blk, c0, cn, unit, n, g, band, oh0, oh1, span, slot, e
    cdef const floating* col
    cdef floating* out
    cdef int ldcol
    cdef floating acc, beta
    slot = 0
    with nogil:
        with parallel(num_threads=n_threads):
            slot = threadid()
            for task in prange(tasks, schedule="static"):
                chunk = task // (groups * n_blocks)
                g = (task // n_blocks) % groups
                blk = task % n_blocks
                c0 = blk * cblock
                cn = min(cblock, cg - c0)
                # one chunk writes gw itself; several write partial sums
                if k_chunks == 1:
                    out = &gw[g * kg, c0, 0, 0]
                else:
                    out = &partials[chunk, g * kg * ckk + c0 * kh * kw]
                beta = 0  # the chunk's first product overwrites: no zero fill needed
                for unit in range(chunk * units // k_chunks, (chunk + 1) * units // k_chunks):
                    n = unit // bands
                    band = unit % bands
                    oh0 = band * rows
                    oh1 = min(oh0 + rows, oh_count)
                    span = (oh1 - oh0) * ow_count
                    if pointwise:
                        col = &x[n, g * cg + c0, oh0, 0]
                        ldcol = <int> (height * width)
                    elif packed:
                        col = &workspace[n * groups + g,
                                         (c0 * kh * kw) * (oh_count * ow_count) + oh0 * ow_count]
                        ldcol = <int> (oh_count * ow_count)
                    else:
                        im2col_band(x, n, g * cg + c0, cn, kh, kw, sh, sw, pt, pl, dh, dw,
                                    oh0, oh1, ow_count, workspace, slot)
                        col = &workspace[slot, 0]
                        ldcol = <int> span
                    if pointwise:  # x's rows themselves: on fastconv's own GEMM
                        gemm_many_rows(False, True, <int> kg, <int> cn, <int> span, 1,
                                       &gy[n, g * kg, oh0, 0], <int> (oh_count * ow_count),
                                       col, ldcol, beta, out, <int> ckk)
                    else:  # (the own GEMM's transposed packing of columns loses here)
                        gemm(False, True, <int> kg, <int> (cn * kh * kw), <int> span, 1,
                             &gy[n, g * kg, oh0, 0], <int> (oh_count * ow_count),
                             col, ldcol, beta, out, <int> ckk)
                    beta = 1
        if k_chunks > 1:
            for e in prange(n_weights, num_threads=n_threads, schedule="static"):
                acc = 0
                for chunk in range(k_chunks):
                    acc = acc + partials[chunk, e]
                gw[e // ckk, (e % ckk) // (kh * kw), (e % (kh * kw)) // kw, e % kw] = acc


def im2col_images(
    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
    floating[:, ::1] cols,           # OUT (N * G, CKK * OH * OW)
    index_t kh, index_t kw,
    index_t sh, index_t sw, index_t pt, index_t pl, index_t dh, index_t dw,
    index_t groups, index_t oh_count, index_t ow_count, int n_threads,
):
    """Every image's columns at once, one (image, group) per row of ``cols``: for two
    passes over the same columns (conv_transpose2d's backward), packed once."""
    cdef index_t n_images = x.shape[0], cg = x.shape[1] // groups
    cdef index_t unit
    with nogil:
        for unit in prange(n_images * groups, num_threads=n_threads, schedule="static"):
            im2col_band(x, unit // groups, (unit % groups) * cg, cg, kh, kw, sh, sw, pt, pl,
                        dh, dw, 0, oh_count, ow_count, cols, unit)
