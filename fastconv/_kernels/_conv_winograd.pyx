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
0, +-1, +-2 for F(4x4, 3x3)). B is chosen by the caller from the shape alone,
never from the thread count, so results do not depend on it. Non-finite inputs
spread within a tile: an infinity can give NaN where direct convolution gives an
infinity.

BLAS is called from inside the parallel region: the caller keeps it
single-threaded meanwhile (fastconv._blas).
"""

from cython.parallel cimport parallel, prange, threadid

from fastconv._kernels._types cimport floating, index_t
from fastconv._kernels._gemm cimport gemm

# Elements between consecutive per-position matrices of a block's scratch beyond their
# size: without it the T matrices lie a multiple of 4 KiB apart and the transforms'
# T interleaved streams fight over the same cache sets.
cdef enum:
    SLAB_PAD = 16


def workspace_elements(index_t cg, index_t kg, index_t tile, index_t block):
    """Scratch elements one thread needs: T * ((CG + KG) * B + 2 * SLAB_PAD)."""
    return (tile + 2) * (tile + 2) * ((cg + kg) * block + 2 * SLAB_PAD)


# --- transforms of one tile: d is read with row stride ds, v and m with stride vs --


cdef inline void input_f2(const floating* d, index_t ds, floating* v,
                          index_t vs) noexcept nogil:
    """v[t * vs] = (B^T d B)[t] for a 4 x 4 patch d."""
    cdef floating r[16]
    cdef index_t i, j
    for j in range(4):
        r[j] = d[j] - d[2 * ds + j]
        r[4 + j] = d[ds + j] + d[2 * ds + j]
        r[8 + j] = d[2 * ds + j] - d[ds + j]
        r[12 + j] = d[ds + j] - d[3 * ds + j]
    for i in range(4):
        v[(4 * i) * vs] = r[4 * i] - r[4 * i + 2]
        v[(4 * i + 1) * vs] = r[4 * i + 1] + r[4 * i + 2]
        v[(4 * i + 2) * vs] = r[4 * i + 2] - r[4 * i + 1]
        v[(4 * i + 3) * vs] = r[4 * i + 1] - r[4 * i + 3]


cdef inline void output_f2(const floating* m, index_t vs, floating* o) noexcept nogil:
    """o (2 x 2, row-major) = A^T m A for the 16 values m[t * vs]."""
    cdef floating r[8]
    cdef index_t i, j
    for j in range(4):
        r[j] = m[j * vs] + m[(4 + j) * vs] + m[(8 + j) * vs]
        r[4 + j] = m[(4 + j) * vs] - m[(8 + j) * vs] - m[(12 + j) * vs]
    for i in range(2):
        o[2 * i] = r[4 * i] + r[4 * i + 1] + r[4 * i + 2]
        o[2 * i + 1] = r[4 * i + 1] - r[4 * i + 2] - r[4 * i + 3]


cdef inline void input_f4(const floating* d, index_t ds, floating* v,
                          index_t vs) noexcept nogil:
    """v[t * vs] = (B^T d B)[t] for a 6 x 6 patch d."""
    cdef floating r[36]
    cdef floating d0, d1, d2, d3, d4, d5
    cdef index_t i, j
    for j in range(6):
        d0 = d[j]
        d1 = d[ds + j]
        d2 = d[2 * ds + j]
        d3 = d[3 * ds + j]
        d4 = d[4 * ds + j]
        d5 = d[5 * ds + j]
        r[j] = 4 * d0 - 5 * d2 + d4
        r[6 + j] = (d3 + d4) - 4 * (d1 + d2)
        r[12 + j] = (d4 - d3) + 4 * (d1 - d2)
        r[18 + j] = (d4 - d2) + 2 * (d3 - d1)
        r[24 + j] = (d4 - d2) - 2 * (d3 - d1)
        r[30 + j] = 4 * d1 - 5 * d3 + d5
    for i in range(6):
        d0 = r[6 * i]
        d1 = r[6 * i + 1]
        d2 = r[6 * i + 2]
        d3 = r[6 * i + 3]
        d4 = r[6 * i + 4]
        d5 = r[6 * i + 5]
        v[(6 * i) * vs] = 4 * d0 - 5 * d2 + d4
        v[(6 * i + 1) * vs] = (d3 + d4) - 4 * (d1 + d2)
        v[(6 * i + 2) * vs] = (d4 - d3) + 4 * (d1 - d2)
        v[(6 * i + 3) * vs] = (d4 - d2) + 2 * (d3 - d1)
        v[(6 * i + 4) * vs] = (d4 - d2) - 2 * (d3 - d1)
        v[(6 * i + 5) * vs] = 4 * d1 - 5 * d3 + d5


cdef inline void output_f4(const floating* m, index_t vs, floating* o) noexcept nogil:
    """o (4 x 4, row-major) = A^T m A for the 36 values m[t * vs]."""
    cdef floating r[24]
    cdef floating s12, d12, s34, d34
    cdef index_t i, j
    for j in range(6):
        s12 = m[(6 + j) * vs] + m[(12 + j) * vs]
        d12 = m[(6 + j) * vs] - m[(12 + j) * vs]
        s34 = m[(18 + j) * vs] + m[(24 + j) * vs]
        d34 = m[(18 + j) * vs] - m[(24 + j) * vs]
        r[j] = m[j * vs] + s12 + s34
        r[6 + j] = d12 + 2 * d34
        r[12 + j] = s12 + 4 * s34
        r[18 + j] = d12 + 8 * d34 + m[(30 + j) * vs]
    for i in range(4):
        s12 = r[6 * i + 1] + r[6 * i + 2]
        d12 = r[6 * i + 1] - r[6 * i + 2]
        s34 = r[6 * i + 3] + r[6 * i + 4]
        d34 = r[6 * i + 3] - r[6 * i + 4]
        o[4 * i] = r[6 * i] + s12 + s34
        o[4 * i + 1] = d12 + 2 * d34
        o[4 * i + 2] = s12 + 4 * s34
        o[4 * i + 3] = d12 + 8 * d34 + r[6 * i + 5]


# --- one (block, group) unit ---------------------------------------------------


cdef void input_block(const floating* x, index_t height, index_t width,
                      index_t c0, index_t cg, index_t n_channels,
                      index_t t0, index_t nb, index_t th_count, index_t tw_count,
                      index_t tile, index_t pt, index_t pl,
                      floating* v) noexcept nogil:
    """V[t][c][j] for the tiles t0 .. t0 + nb - 1 and channels c0 .. c0 + cg - 1."""
    cdef index_t alpha = tile + 2
    cdef index_t vs = cg * nb + SLAB_PAD
    cdef index_t plane = height * width
    cdef floating patch[36]
    cdef const floating* src
    cdef const floating* d
    cdef index_t c, j, n, th, tw, ih0, iw0, r, s, ih, iw, ds
    for c in range(cg):
        n = t0 // (th_count * tw_count)
        th = (t0 // tw_count) % th_count
        tw = t0 % tw_count
        for j in range(nb):
            src = x + (n * n_channels + c0 + c) * plane
            ih0 = th * tile - pt
            iw0 = tw * tile - pl
            if ih0 >= 0 and iw0 >= 0 and ih0 + alpha <= height and iw0 + alpha <= width:
                d = src + ih0 * width + iw0
                ds = width
            else:  # a border tile: copy the patch with zeros outside the image
                for r in range(alpha):
                    ih = ih0 + r
                    for s in range(alpha):
                        iw = iw0 + s
                        if 0 <= ih < height and 0 <= iw < width:
                            patch[r * alpha + s] = src[ih * width + iw]
                        else:
                            patch[r * alpha + s] = 0
                d = patch
                ds = alpha
            if tile == 4:
                input_f4(d, ds, v + c * nb + j, vs)
            else:
                input_f2(d, ds, v + c * nb + j, vs)
            tw = tw + 1
            if tw == tw_count:
                tw = 0
                th = th + 1
                if th == th_count:
                    th = 0
                    n = n + 1


cdef void output_block(const floating* mt, const floating* b, floating* y,
                       index_t oh_count, index_t ow_count, index_t k0, index_t kg,
                       index_t n_out, index_t t0, index_t nb, index_t th_count,
                       index_t tw_count, index_t tile) noexcept nogil:
    """y tiles t0 .. t0 + nb - 1 of channels k0 .. k0 + kg - 1 from Mt[t][k][j] (+ b)."""
    cdef index_t vs = kg * nb + SLAB_PAD
    cdef index_t plane = oh_count * ow_count
    cdef floating o[16]
    cdef floating bias
    cdef floating* dst
    cdef index_t k, j, n, th, tw, oh0, ow0, r, s, rows, cols
    for k in range(kg):
        bias = b[k0 + k] if b != NULL else 0
        n = t0 // (th_count * tw_count)
        th = (t0 // tw_count) % th_count
        tw = t0 % tw_count
        for j in range(nb):
            if tile == 4:
                output_f4(mt + k * nb + j, vs, o)
            else:
                output_f2(mt + k * nb + j, vs, o)
            oh0 = th * tile
            ow0 = tw * tile
            rows = min(tile, oh_count - oh0)
            cols = min(tile, ow_count - ow0)
            dst = y + (n * n_out + k0 + k) * plane + oh0 * ow_count + ow0
            for r in range(rows):
                for s in range(cols):
                    dst[r * ow_count + s] = o[r * tile + s] + bias
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
