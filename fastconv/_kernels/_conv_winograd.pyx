"""3x3 stride-1 convolution by Winograd's minimal filtering, F(2x2, 3x3) and F(4x4, 3x3).

Dimension legend: N batch, C input channels, H, W input size, K output channels,
G groups, CG = C / G, KG = K / G, OH, OW output size, M tile output size (2 or 4),
A = M + 2 tile input size, T = A * A transform positions, TH = ceil(OH / M) and
TW = ceil(OW / M) tiles per image column and row, B tiles per block.

Notes
-----
The output is cut into M x M tiles, numbered over (image, tile row, tile column),
and the tiles into blocks of B. One parallel unit is a (block, group) pair, run
start to end by one thread in its own slot of ``workspace``:

1. input transform: each A x A input patch d (zero outside the image) becomes
   B^T d B, stored as V[t][c][j] (T matrices of CG x B);
2. T GEMMs: Mt[t] (KG x B) = U[t] (KG x CG) @ V[t] (CG x B), U the transformed
   weights G w G^T prepared by the caller as (T, K, CG);
3. output transform: each tile's T values m become A^T m A (M x M), plus bias,
   written to y with the bottom and right tiles clipped to OH x OW.

The transform matrices are those of Lavin and Gray's "Fast Algorithms for
Convolutional Neural Networks" (interpolation points 0, +-1 for F(2x2, 3x3) and
0, +-1, +-2 for F(4x4, 3x3)). B is chosen by the planner (fastconv/_plan.py) from the shape alone,
never from the thread count, so results do not depend on it. Non-finite inputs
spread within a tile: an infinity can give NaN where direct convolution gives an
infinity.

BLAS is called from inside the parallel region: the caller keeps it
single-threaded meanwhile (fastconv._blas).
"""

from cython.parallel cimport parallel, prange, threadid

from fastconv._kernels._types cimport floating, index_t
from fastconv._kernels._gemm cimport gemm

cdef enum:
    # Elements between consecutive per-position matrices of a block's scratch beyond
    # their size: without it the T matrices lie a multiple of 4 KiB apart and the
    # transforms' T interleaved streams fight over the same cache sets.
    SLAB_PAD = 16
    # Tiles transformed together: the transforms run across a chunk's tiles (one tile
    # per SIMD lane) from and to small local buffers.
    CHUNK = 16
    MAX_T = 36


def workspace_elements(index_t cg, index_t kg, index_t tile, index_t block):
    """Scratch elements one thread needs: T * ((CG + KG) * B + 2 * SLAB_PAD)."""
    return (tile + 2) * (tile + 2) * ((cg + kg) * block + 2 * SLAB_PAD)


# --- transforms of a chunk of tiles --------------------------------------------
# Patch element e of tile jj is d[e * CHUNK + jj]; transform position t of tile jj is
# v[t * vs + jj] (m likewise); output element q of tile jj is o[q * CHUNK + jj]. The
# loops over jj run across tiles, so the compiler can put one tile in each SIMD lane.


cdef inline void bt4(floating d0, floating d1, floating d2, floating d3,
                     floating* out, index_t stride) noexcept nogil:
    """out[i * stride] = (B^T d)[i] of F(2x2, 3x3) for one column d."""
    out[0] = d0 - d2
    out[stride] = d1 + d2
    out[2 * stride] = d2 - d1
    out[3 * stride] = d1 - d3


cdef inline void bt6(floating d0, floating d1, floating d2, floating d3, floating d4,
                     floating d5, floating* out, index_t stride) noexcept nogil:
    """out[i * stride] = (B^T d)[i] of F(4x4, 3x3) for one column d."""
    out[0] = 4 * d0 - 5 * d2 + d4
    out[stride] = (d3 + d4) - 4 * (d1 + d2)
    out[2 * stride] = (d4 - d3) + 4 * (d1 - d2)
    out[3 * stride] = (d4 - d2) + 2 * (d3 - d1)
    out[4 * stride] = (d4 - d2) - 2 * (d3 - d1)
    out[5 * stride] = 4 * d1 - 5 * d3 + d5


cdef inline void store_positions(const floating* u, floating* v, index_t vs, index_t count,
                                 index_t n_pos) noexcept nogil:
    """v[p * vs + jj] = u[p * CHUNK + jj]: a chunk's transforms to the position matrices."""
    cdef index_t p, jj
    for p in range(n_pos):
        if count == CHUNK:  # a constant trip count: inline vector moves, no memcpy call
            for jj in range(CHUNK):
                v[p * vs + jj] = u[p * CHUNK + jj]
        else:
            for jj in range(count):
                v[p * vs + jj] = u[p * CHUNK + jj]


# The column and row passes are spelled out call by call, each pass one loop over
# the chunk's tiles between local buffers (constant strides): written so, the
# compiler vectorises both across tiles.

cdef inline void input_f2(const floating* d, floating* v, index_t vs,
                          index_t count) noexcept nogil:
    """v = B^T d B for ``count`` 4 x 4 patches."""
    cdef floating t[16 * CHUNK]  # B^T d of each tile
    cdef floating u[16 * CHUNK]  # B^T d B of each tile
    cdef index_t jj
    for jj in range(count):
        bt4(d[jj], d[4 * CHUNK + jj], d[8 * CHUNK + jj], d[12 * CHUNK + jj],
            &t[jj], 4 * CHUNK)
        bt4(d[CHUNK + jj], d[5 * CHUNK + jj], d[9 * CHUNK + jj], d[13 * CHUNK + jj],
            &t[CHUNK + jj], 4 * CHUNK)
        bt4(d[2 * CHUNK + jj], d[6 * CHUNK + jj], d[10 * CHUNK + jj], d[14 * CHUNK + jj],
            &t[2 * CHUNK + jj], 4 * CHUNK)
        bt4(d[3 * CHUNK + jj], d[7 * CHUNK + jj], d[11 * CHUNK + jj], d[15 * CHUNK + jj],
            &t[3 * CHUNK + jj], 4 * CHUNK)
    for jj in range(count):
        bt4(t[jj], t[CHUNK + jj], t[2 * CHUNK + jj], t[3 * CHUNK + jj],
            &u[jj], CHUNK)
        bt4(t[4 * CHUNK + jj], t[5 * CHUNK + jj], t[6 * CHUNK + jj], t[7 * CHUNK + jj],
            &u[4 * CHUNK + jj], CHUNK)
        bt4(t[8 * CHUNK + jj], t[9 * CHUNK + jj], t[10 * CHUNK + jj], t[11 * CHUNK + jj],
            &u[8 * CHUNK + jj], CHUNK)
        bt4(t[12 * CHUNK + jj], t[13 * CHUNK + jj], t[14 * CHUNK + jj], t[15 * CHUNK + jj],
            &u[12 * CHUNK + jj], CHUNK)
    store_positions(u, v, vs, count, 16)


cdef inline void output_f2(const floating* m, index_t vs, floating* o,
                           index_t count) noexcept nogil:
    """o (2 x 2) = A^T m A for ``count`` tiles."""
    cdef floating r[8]
    cdef index_t i, j, jj
    for jj in range(count):
        for j in range(4):
            r[j] = m[j * vs + jj] + m[(4 + j) * vs + jj] + m[(8 + j) * vs + jj]
            r[4 + j] = m[(4 + j) * vs + jj] - m[(8 + j) * vs + jj] - m[(12 + j) * vs + jj]
        for i in range(2):
            o[(2 * i) * CHUNK + jj] = r[4 * i] + r[4 * i + 1] + r[4 * i + 2]
            o[(2 * i + 1) * CHUNK + jj] = r[4 * i + 1] - r[4 * i + 2] - r[4 * i + 3]


cdef inline void input_f4(const floating* d, floating* v, index_t vs,
                          index_t count) noexcept nogil:
    """v = B^T d B for ``count`` 6 x 6 patches."""
    cdef floating t[36 * CHUNK]  # B^T d of each tile
    cdef floating u[36 * CHUNK]  # B^T d B of each tile
    cdef index_t jj
    for jj in range(count):
        bt6(d[jj], d[6 * CHUNK + jj], d[12 * CHUNK + jj],
            d[18 * CHUNK + jj], d[24 * CHUNK + jj], d[30 * CHUNK + jj], &t[jj], 6 * CHUNK)
        bt6(d[CHUNK + jj], d[7 * CHUNK + jj], d[13 * CHUNK + jj],
            d[19 * CHUNK + jj], d[25 * CHUNK + jj], d[31 * CHUNK + jj], &t[CHUNK + jj], 6 * CHUNK)
        bt6(d[2 * CHUNK + jj], d[8 * CHUNK + jj], d[14 * CHUNK + jj],
            d[20 * CHUNK + jj], d[26 * CHUNK + jj], d[32 * CHUNK + jj],
            &t[2 * CHUNK + jj], 6 * CHUNK)
        bt6(d[3 * CHUNK + jj], d[9 * CHUNK + jj], d[15 * CHUNK + jj],
            d[21 * CHUNK + jj], d[27 * CHUNK + jj], d[33 * CHUNK + jj],
            &t[3 * CHUNK + jj], 6 * CHUNK)
        bt6(d[4 * CHUNK + jj], d[10 * CHUNK + jj], d[16 * CHUNK + jj],
            d[22 * CHUNK + jj], d[28 * CHUNK + jj], d[34 * CHUNK + jj],
            &t[4 * CHUNK + jj], 6 * CHUNK)
        bt6(d[5 * CHUNK + jj], d[11 * CHUNK + jj], d[17 * CHUNK + jj],
            d[23 * CHUNK + jj], d[29 * CHUNK + jj], d[35 * CHUNK + jj],
            &t[5 * CHUNK + jj], 6 * CHUNK)
    for jj in range(count):
        bt6(t[jj], t[CHUNK + jj], t[2 * CHUNK + jj],
            t[3 * CHUNK + jj], t[4 * CHUNK + jj], t[5 * CHUNK + jj], &u[jj], CHUNK)
        bt6(t[6 * CHUNK + jj], t[7 * CHUNK + jj], t[8 * CHUNK + jj],
            t[9 * CHUNK + jj], t[10 * CHUNK + jj], t[11 * CHUNK + jj], &u[6 * CHUNK + jj], CHUNK)
        bt6(t[12 * CHUNK + jj], t[13 * CHUNK + jj], t[14 * CHUNK + jj],
            t[15 * CHUNK + jj], t[16 * CHUNK + jj], t[17 * CHUNK + jj], &u[12 * CHUNK + jj], CHUNK)
        bt6(t[18 * CHUNK + jj], t[19 * CHUNK + jj], t[20 * CHUNK + jj],
            t[21 * CHUNK + jj], t[22 * CHUNK + jj], t[23 * CHUNK + jj], &u[18 * CHUNK + jj], CHUNK)
        bt6(t[24 * CHUNK + jj], t[25 * CHUNK + jj], t[26 * CHUNK + jj],
            t[27 * CHUNK + jj], t[28 * CHUNK + jj], t[29 * CHUNK + jj], &u[24 * CHUNK + jj], CHUNK)
        bt6(t[30 * CHUNK + jj], t[31 * CHUNK + jj], t[32 * CHUNK + jj],
            t[33 * CHUNK + jj], t[34 * CHUNK + jj], t[35 * CHUNK + jj], &u[30 * CHUNK + jj], CHUNK)
    store_positions(u, v, vs, count, 36)


cdef inline void output_f4(const floating* m, index_t vs, floating* o,
                           index_t count) noexcept nogil:
    """o (4 x 4) = A^T m A for ``count`` tiles."""
    cdef floating r[24]
    cdef floating s12, d12, s34, d34
    cdef index_t i, j, jj
    for jj in range(count):
        for j in range(6):
            s12 = m[(6 + j) * vs + jj] + m[(12 + j) * vs + jj]
            d12 = m[(6 + j) * vs + jj] - m[(12 + j) * vs + jj]
            s34 = m[(18 + j) * vs + jj] + m[(24 + j) * vs + jj]
            d34 = m[(18 + j) * vs + jj] - m[(24 + j) * vs + jj]
            r[j] = m[j * vs + jj] + s12 + s34
            r[6 + j] = d12 + 2 * d34
            r[12 + j] = s12 + 4 * s34
            r[18 + j] = d12 + 8 * d34 + m[(30 + j) * vs + jj]
        for i in range(4):
            s12 = r[6 * i + 1] + r[6 * i + 2]
            d12 = r[6 * i + 1] - r[6 * i + 2]
            s34 = r[6 * i + 3] + r[6 * i + 4]
            d34 = r[6 * i + 3] - r[6 * i + 4]
            o[(4 * i) * CHUNK + jj] = r[6 * i] + s12 + s34
            o[(4 * i + 1) * CHUNK + jj] = d12 + 2 * d34
            o[(4 * i + 2) * CHUNK + jj] = s12 + 4 * s34
            o[(4 * i + 3) * CHUNK + jj] = d12 + 8 * d34 + r[6 * i + 5]


# --- one (block, group) unit ---------------------------------------------------


cdef inline void copy_patch(const floating* src, index_t width, floating* dst,
                            index_t alpha) noexcept nogil:
    """dst[(r * alpha + s) * CHUNK] = src[r * width + s], an alpha x alpha patch."""
    cdef index_t r, s
    for r in range(alpha):
        for s in range(alpha):
            dst[(r * alpha + s) * CHUNK] = src[r * width + s]


cdef void input_block(const floating* x, index_t height, index_t width,
                      index_t c0, index_t cg, index_t n_channels,
                      index_t t0, index_t nb, index_t th_count, index_t tw_count,
                      index_t tile, index_t pt, index_t pl,
                      floating* v) noexcept nogil:
    """V[t][c][j] for the tiles t0 .. t0 + nb - 1 and channels c0 .. c0 + cg - 1."""
    cdef index_t alpha = tile + 2
    cdef index_t vs = cg * nb + SLAB_PAD
    cdef index_t plane = height * width
    cdef floating patches[MAX_T * CHUNK]
    cdef const floating* src
    cdef index_t c, chunk, j0, jj, count, n, th, tw, ih0, iw0, r, s, ih, s0, s1
    for c in range(cg):
        n = t0 // (th_count * tw_count)
        th = (t0 // tw_count) % th_count
        tw = t0 % tw_count
        for chunk in range((nb + CHUNK - 1) // CHUNK):
            j0 = chunk * CHUNK
            count = min(<index_t> CHUNK, nb - j0)
            for jj in range(count):  # gather the chunk's patches, zeros outside the image
                src = x + (n * n_channels + c0 + c) * plane
                ih0 = th * tile - pt
                iw0 = tw * tile - pl
                if ih0 >= 0 and iw0 >= 0 and ih0 + alpha <= height and iw0 + alpha <= width:
                    if tile == 4:  # a constant size: the copy unrolls
                        copy_patch(src + ih0 * width + iw0, width, &patches[jj], 6)
                    else:
                        copy_patch(src + ih0 * width + iw0, width, &patches[jj], 4)
                else:
                    s0 = max(0, -iw0)
                    s1 = min(alpha, width - iw0)
                    for r in range(alpha):
                        for s in range(alpha):
                            patches[(r * alpha + s) * CHUNK + jj] = 0
                        ih = ih0 + r
                        if 0 <= ih < height:
                            for s in range(s0, s1):
                                patches[(r * alpha + s) * CHUNK + jj] = src[ih * width + iw0 + s]
                tw = tw + 1
                if tw == tw_count:
                    tw = 0
                    th = th + 1
                    if th == th_count:
                        th = 0
                        n = n + 1
            if tile == 4:
                input_f4(patches, v + c * nb + j0, vs, count)
            else:
                input_f2(patches, v + c * nb + j0, vs, count)


cdef void output_block(const floating* mt, const floating* b, floating* y,
                       index_t oh_count, index_t ow_count, index_t k0, index_t kg,
                       index_t n_out, index_t t0, index_t nb, index_t th_count,
                       index_t tw_count, index_t tile) noexcept nogil:
    """y tiles t0 .. t0 + nb - 1 of channels k0 .. k0 + kg - 1 from Mt[t][k][j] (+ b)."""
    cdef index_t vs = kg * nb + SLAB_PAD
    cdef index_t plane = oh_count * ow_count
    cdef floating out[16 * CHUNK]
    cdef floating bias
    cdef floating* dst
    cdef index_t k, chunk, j0, jj, count, n, th, tw, oh0, ow0, r, s, rows, cols
    for k in range(kg):
        bias = b[k0 + k] if b != NULL else 0
        n = t0 // (th_count * tw_count)
        th = (t0 // tw_count) % th_count
        tw = t0 % tw_count
        for chunk in range((nb + CHUNK - 1) // CHUNK):
            j0 = chunk * CHUNK
            count = min(<index_t> CHUNK, nb - j0)
            if tile == 4:
                output_f4(mt + k * nb + j0, vs, out, count)
            else:
                output_f2(mt + k * nb + j0, vs, out, count)
            for jj in range(count):  # scatter, the bottom and right tiles clipped
                oh0 = th * tile
                ow0 = tw * tile
                rows = min(tile, oh_count - oh0)
                cols = min(tile, ow_count - ow0)
                dst = y + (n * n_out + k0 + k) * plane + oh0 * ow_count + ow0
                for r in range(rows):
                    for s in range(cols):
                        dst[r * ow_count + s] = out[(r * tile + s) * CHUNK + jj] + bias
                tw = tw + 1
                if tw == tw_count:
                    tw = 0
                    th = th + 1
                    if th == th_count:
                        th = 0
                        n = n + 1


def conv2d_forward(
    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
    const floating[:, :, ::1] u,     # IN (T, K, CG): transformed weights G w G^T
    const floating[::1] b,           # IN (K,) or None
    floating[:, :, :, ::1] y,        # OUT (N, K, OH, OW)
    floating[:, ::1] workspace,      # SCRATCH (threads, T * (CG + KG) * B)
    index_t pt, index_t pl, index_t groups, index_t tile, index_t block, int n_threads,
):
    """y = conv(x, w) + b for a 3x3 kernel, stride 1, over blocks of ``block`` tiles.

    ``tile`` is M (2 or 4); sizes are validated by the caller, y is (N, K, OH, OW)
    with OH = H + pad_top + pad_bottom - 2.
    """
    cdef index_t n_images = y.shape[0], n_out = y.shape[1]
    cdef index_t oh_count = y.shape[2], ow_count = y.shape[3]
    cdef index_t n_channels = x.shape[1], height = x.shape[2], width = x.shape[3]
    cdef index_t n_pos = u.shape[0], cg = u.shape[2]
    cdef index_t kg = n_out // groups
    cdef index_t th_count = (oh_count + tile - 1) // tile
    cdef index_t tw_count = (ow_count + tile - 1) // tile
    cdef index_t n_tiles = n_images * th_count * tw_count
    cdef index_t n_blocks = (n_tiles + block - 1) // block
    cdef index_t units = n_blocks * groups
    cdef const floating* b_ptr = &b[0] if b is not None else NULL
    cdef index_t unit, g, t0, nb, p, slot
    cdef floating* v
    cdef floating* mt
    if units == 0:
        return
    slot = 0
    with nogil, parallel(num_threads=n_threads):
        slot = threadid()
        for unit in prange(units, schedule="static"):
            g = unit % groups
            t0 = (unit // groups) * block
            nb = min(block, n_tiles - t0)
            v = &workspace[slot, 0]
            mt = v + n_pos * (cg * nb + SLAB_PAD)
            input_block(&x[0, 0, 0, 0], height, width, g * cg, cg, n_channels,
                        t0, nb, th_count, tw_count, tile, pt, pl, v)
            for p in range(n_pos):
                gemm(False, False, <int> kg, <int> nb, <int> cg, 1,
                     &u[p, g * kg, 0], <int> cg, v + p * (cg * nb + SLAB_PAD), <int> nb,
                     0, mt + p * (kg * nb + SLAB_PAD), <int> nb)
            output_block(mt, b_ptr, &y[0, 0, 0, 0], oh_count, ow_count, g * kg, kg,
                         n_out, t0, nb, th_count, tw_count, tile)


cdef enum:
    FILTER_BLOCK = 128  # filters transformed together: the inner loops run over them


cdef inline void transform_block(const floating* wt, index_t n_filters, index_t count,
                                 const double* g, index_t a_count,
                                 floating* u) noexcept nogil:
    """u[(a * A + b) * n_filters + f] = (G w_f G^T)[a, b] for ``count`` filters f, whose
    taps are wt[tap * n_filters + f] (row-major 3x3 taps); G is A x 3 (row-major).
    G w first, then times G^T, in float64, rounded once; the loops over f are
    contiguous in wt and u and vectorise."""
    cdef double gw[3 * FILTER_BLOCK]  # row a of G w, for each filter
    cdef index_t a, b, j, f
    for a in range(a_count):
        for j in range(3):
            for f in range(count):
                gw[j * FILTER_BLOCK + f] = (g[a * 3] * wt[j * n_filters + f]
                                            + g[a * 3 + 1] * wt[(3 + j) * n_filters + f]
                                            + g[a * 3 + 2] * wt[(6 + j) * n_filters + f])
        for b in range(a_count):
            for f in range(count):
                u[(a * a_count + b) * n_filters + f] = <floating> (
                    gw[f] * g[b * 3] + gw[FILTER_BLOCK + f] * g[b * 3 + 1]
                    + gw[2 * FILTER_BLOCK + f] * g[b * 3 + 2])


def transform_filters(
    const floating[:, ::1] wt,  # IN (9, F): tap-major taps of F 3x3 filters
    const double[:, ::1] g,     # IN (A, 3): the filter transform G, A = M + 2 <= 6
    floating[:, ::1] u,         # OUT (A * A, F)
    int n_threads,
):
    """u[:, f] = G w_f G^T (A x A, row-major) for every filter f: the transformed
    weights the forward takes, laid out (T, K * CG)."""
    cdef index_t n_filters = wt.shape[1], a_count = g.shape[0]
    cdef index_t n_blocks = (n_filters + FILTER_BLOCK - 1) // FILTER_BLOCK
    cdef index_t blk, f0
    if g.shape[1] != 3 or not 1 <= a_count <= 6:
        raise ValueError(f"g must be (A, 3) with A <= 6, got {(g.shape[0], g.shape[1])}")
    if wt.shape[0] != 9 or u.shape[0] != a_count * a_count or u.shape[1] != n_filters:
        raise ValueError(f"wt must be (9, F) and u (A * A, F), got {(wt.shape[0], wt.shape[1])} "
                         f"and {(u.shape[0], u.shape[1])}")
    if n_filters == 0:
        return
    with nogil:
        for blk in prange(n_blocks, schedule="static", num_threads=n_threads):
            f0 = blk * FILTER_BLOCK
            transform_block(&wt[0, f0], n_filters, min(FILTER_BLOCK, n_filters - f0),
                            &g[0, 0], a_count, &u[0, f0])


def split_phases(
    const floating[:, :, :, ::1] x,  # IN (N, C, H, W)
    floating[:, :, :, ::1] out,      # OUT (P * N, C, HP, WP)
    const index_t[:, ::1] offsets,   # IN (P, 2): first row and column of each phase
    index_t dh, index_t dw, int n_threads,
):
    """out[p * N + n, c, a, b] = x[n, c, a * dh + r_p, b * dw + c_p]: the dilated
    convolution's phases stacked along the batch, on every thread at once (NumPy
    copies a strided view on one). The caller checks every phase fits in x."""
    cdef index_t n_images = x.shape[0], channels = x.shape[1]
    cdef index_t hp = out.shape[2], wp = out.shape[3]
    cdef index_t plane, p, n, c, a, b, r0, c0
    cdef const floating* src
    cdef floating* dst
    with nogil:
        for plane in prange(offsets.shape[0] * n_images * channels, num_threads=n_threads,
                            schedule="static"):
            p = plane // (n_images * channels)
            n = (plane // channels) % n_images
            c = plane % channels
            r0 = offsets[p, 0]
            c0 = offsets[p, 1]
            for a in range(hp):
                src = &x[n, c, a * dh + r0, c0]
                dst = &out[p * n_images + n, c, a, 0]
                for b in range(wp):
                    dst[b] = src[b * dw]


def merge_phases(
    const floating[:, :, :, ::1] stacked,  # IN (P * N, K, HP, WP)
    floating[:, :, :, ::1] y,              # OUT (N, K, OH, OW)
    const index_t[:, ::1] offsets,         # IN (P, 2): first row and column of each phase
    index_t dh, index_t dw, int n_threads,
):
    """y[n, k, a * dh + r_p, b * dw + c_p] = stacked[p * N + n, k, a, b]: the inverse of
    split_phases, for the phase outputs."""
    cdef index_t n_images = y.shape[0], channels = y.shape[1]
    cdef index_t hp = stacked.shape[2], wp = stacked.shape[3]
    cdef index_t plane, p, n, c, a, b, r0, c0
    cdef const floating* src
    cdef floating* dst
    with nogil:
        # one unit per plane of y, all its phases: threads writing the interleaved rows
        # of one plane at once would share the cache lines where the rows meet
        for plane in prange(n_images * channels, num_threads=n_threads, schedule="static"):
            n = plane // channels
            c = plane % channels
            for p in range(offsets.shape[0]):
                r0 = offsets[p, 0]
                c0 = offsets[p, 1]
                for a in range(hp):
                    src = &stacked[p * n_images + n, c, a, 0]
                    dst = &y[n, c, a * dh + r0, c0]
                    for b in range(wp):
                        dst[b * dw] = src[b]
