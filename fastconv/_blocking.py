"""How the planner's kernels block their work: bands of output rows, blocks of channels,
chunks of the batch, Winograd's tiles per block and the scratch each needs, all from the
shape alone (never from the thread count, so results are bit-identical across thread
counts). :mod:`fastconv._plan` decides which kernel runs and builds its plan from these.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import DTypeLike

from fastconv._dispatch import _conv_cvec
from fastconv._geometry import ConvGeometry

# --- the sizes -------------------------------------------------------------------------------
# im2col column buffer per thread (elements): a band of output rows is packed at a time.
BAND_ELEMENTS = 1 << 18
# Channel-vectorised kernels: per-thread budget of a band's padded input and its
# pixel-major outputs (2^16 fits L2 with room; 7x7s2-3-224 forward 15 -> 14 ms from 2^17).
CV_BAND_ELEMENTS = 1 << 16
# With few images, bands are cut smaller so at least this many units exist to share out,
# but into no more bands than leave this many GEMM columns (rows x OW) each: every band's
# GEMM packs the whole weight matrix again (1x512x7x7 at 3x3 x 512: seven one-row bands
# 5.8 ms, one band 3.6 ms).
MIN_UNITS = 16
MIN_BAND_COLUMNS = 64
# The im2col forward's bands, but for a 1x1's, stop at fewer units: where the images and
# groups give FORWARD_MIN_UNITS, each image is one band, a GEMM over twice the columns of
# two half bands. One process, alternating with MIN_UNITS, four sessions: 3x3 s2 128 ->
# 256 over 8x28x28 0.90-0.96 of the time, 7x1 and 1x7 over 8x128x17x17 0.88-0.94 and
# 0.94-0.95, 1x7 over 4 images 0.88, a 1x1 s2 over 8x256x28x28 0.93, forward and backward
# 0.97; unchanged plans 0.99-1.03. 8 units still share out evenly over 2, 4 or 8 threads,
# as the weight gradient's WG_MIN_UNITS chunks do. 1x1 forwards keep MIN_UNITS: whole
# images made 1024 -> 256 over 8x14x14 1.09x, MobileNet-v2's 24 -> 144 over 56x56
# 1.05-1.07x the time.
FORWARD_MIN_UNITS = 8
# Where the bands give fewer than FORWARD_SPLIT_UNITS units, the forward cuts each band's
# GEMM into as many blocks of at least FORWARD_CHANNEL_BLOCK output channels as make that
# many units, each block packing the band itself (its GEMM packs the columns again:
# thinner blocks, or blocks where units already abound, lose 5-10%). 1x512x7x7 3x3 x 512,
# one band on one thread: 4.0 ms; two blocks of 256: 2.0 ms (of 128: 2.4, of 64: 2.7).
FORWARD_SPLIT_UNITS = 4
FORWARD_CHANNEL_BLOCK = 256
# Float32 pointwise forwards with fewer than POINTWISE_FEW_OUT output channels per group
# multiply by BLAS (fastconv's own GEMM takes products of 32 rows and up), whose product
# over a band of more than POINTWISE_FEW_OUT_BAND elements of x runs at half the speed:
# MobileNet-v2's 144 -> 24 projection over 8x56x56 2.85 -> 1.43 ms with bands of 4 rows
# instead of 32, 96 -> 24 over 8x112x112 0.55 of the time, 32 -> 16 0.56; 32 output
# channels or more, and float64, gain nothing (0.92-1.08; one process, alternating).
POINTWISE_FEW_OUT = 32
POINTWISE_FEW_OUT_BAND = 1 << 15
# fastconv's own GEMM multiplies a band's pixels POINTWISE_BAND_MULTIPLE columns at a
# time, and a last tile of a few columns costs about half a full one: a pointwise band
# of 98 pixels (7 rows of 14) is six full tiles and one of 2 columns. Where the output's
# pixels split into rows of 16 (or 8, or 4), the pointwise forward sees them so and cuts
# as many bands as before at multiples of 16 pixels (8x256x14x14 x 256: 112 + 84
# pixels, not 98 + 98; float64's BLAS gained too, 0.92-0.98 of the time).
POINTWISE_BAND_MULTIPLE = 16
# A single (image, group) (batch-1 inference) has few units, and an odd count shares out
# unevenly over an even number of threads: 1x256x14x14 3x3 x 256 in three bands 2.04 ms.
# With at least 2 * PAIR_CHANNEL_BLOCK output channels and a whole-image band of at most
# WHOLE_IMAGE_ELEMENTS, it runs as one band in two blocks of output channels (1.42 ms;
# 1x1024x14x14 1x1 x 256: 0.89 -> 0.58 ms; 1x512x28x28 1x1 s2 x 1024: 1.40 -> 1.12 ms);
# else its bands come in pairs of near-equal rows, each pair within BAND_PAIR_SLACK of
# an even split (1x128x17x17 1x7: 5+5+5+2 rows 0.60 ms, 9+8 rows 0.49 ms). Measured
# again with the float32 forward on fastconv's own GEMM, which copies no weights: two
# bands of rows instead of the two blocks of channels took 1.16x the time on
# 1x256x14x14 3x3 x 256 and 1.25x on 1x512x14x14 3x3 x 512 (in one process, alternating).
PAIR_CHANNEL_BLOCK = 128
WHOLE_IMAGE_ELEMENTS = 1 << 20
BAND_PAIR_SLACK = 1.1
# The input gradient's tasks (image, group) are cut the same way into blocks of gx's
# channels, at least this many each (1x1024x16x16 transposed 4x4 s2 to 256 channels:
# one task 35.5 ms, four blocks of 64 with bands sized by the block 14.6 ms; 1x64x56x56
# 3x3 s2 to 128 channels: one task 1.48 ms, two blocks of 32 0.83, four of 16 0.86).
IGRAD_CHANNEL_BLOCK = 32
# Weight-gradient partial sums: at most this many chunks, and this many elements in all.
MAX_CHUNKS = 16
CHUNK_ELEMENTS = 1 << 22
# The wide-row weight gradient's tasks are (chunk of images, group): chunks of the batch
# only until they and the groups make this many tasks (a depthwise layer's groups alone
# do: each task then runs its channel over the whole batch).
WIDE_WG_MIN_TASKS = 16
# The forward's taps on shifted rows (shifted_rows_apply) from this many (image, group)
# pairs on: with fewer it was no faster than packing columns.
SHIFTED_ROWS_MIN_UNITS = 4
# im2col weight gradient of deep layers: one task per block of input channels of about
# this many GEMM columns (CB * KH * KW), when that gives at least WG_MIN_TASKS tasks; a
# power of two of blocks, each a multiple of WG_CHANNEL_MULTIPLE channels (blocks of 15
# channels, 135 columns, and odd counts of them ran 10-20% slower: 8x128x28x28 3x3 s2
# x 256 6.9 -> 5.7 ms in 8 blocks of 16). A pointwise block packs nothing, so narrower
# blocks cost no extra copies: it tries WG_POINTWISE_COLUMNS next. Fewer tasks split the
# batch into chunks instead, whose thin GEMMs (a band of rows deep) lose to 4 blocks
# (1x512x28x28 1x1 s2 x 1024: 7 chunks 5.3 ms, 4 blocks 1.5 ms). The narrow pointwise
# blocks need twice the tasks (MobileNet-v2's 144 -> 24 projection: 4 blocks of 40
# 1.8 ms, 16 chunks 1.5).
WG_BLOCK_COLUMNS, WG_POINTWISE_COLUMNS = 128, 32
WG_MIN_TASKS, WG_CHANNEL_MULTIPLE = 4, 8
# ... and the batch's (image, band) units cut into at least this many chunks' worth.
WG_MIN_UNITS = 8
# conv_transpose2d's backward packs gy's columns once for both passes up to this size.
PACKED_ELEMENTS = 1 << 22
# Winograd's output tile M of F(MxM, 3x3): 4 (36 transform positions, a quarter of the
# multiplies) where the pass's batch makes at least this many 4x4 output tiles, else 2
# (16 positions, 4/9 of them): over few tiles F(4x4)'s transformed weights, 4x the size
# of w, are read for too little work (1x256x14x14, 16 tiles: F(4x4) 2.5 ms, F(2x2) over
# 49 tiles 1.09 ms, im2col 1.31 ms).
WINOGRAD_F4_MIN_TILES = 32
# ... and the per-thread budget (elements) of one block's transformed input and GEMM
# output, T * (CG + KG) * B.
WINOGRAD_BLOCK_ELEMENTS = 1 << 19
WINOGRAD_MIN_BLOCK, WINOGRAD_MAX_BLOCK = 16, 256


# --- blocking --------------------------------------------------------------------------------


def band_rows(geom: ConvGeometry, outer_units: int, min_units: int) -> int:
    """Output rows per im2col band. Bands are cut small enough that the ``outer_units``
    (images x groups that run in parallel) give ``min_units`` units, but not narrower
    than MIN_BAND_COLUMNS; a single unit's bands come in near-equal pairs."""
    rows = max(1, min(geom.oh, BAND_ELEMENTS // max(1, geom.ckk * geom.ow)))
    if outer_units * -(-geom.oh // rows) < min_units:
        wanted_bands = -(-min_units // max(1, outer_units))
        bands = max(1, min(wanted_bands, geom.oh * geom.ow // MIN_BAND_COLUMNS))
        if outer_units == 1:
            return min(rows, _paired_band_rows(geom.oh, bands))
        rows = max(1, min(rows, -(-geom.oh // bands)))
    return rows


def _paired_band_rows(height: int, most_bands: int) -> int:
    """Rows per band of one image cut into at most ``most_bands`` bands, a power of two
    of them, as many as keep a pair's rows within BAND_PAIR_SLACK of half the image."""
    bands = 1 << (max(1, most_bands).bit_length() - 1)
    while bands >= 2:
        rows = -(-height // bands)
        pairs = -(-(-(-height // rows)) // 2)  # ceil(bands made / 2)
        if 2 * pairs * rows <= BAND_PAIR_SLACK * height:  # the busier of two threads
            return rows
        bands //= 2
    return height


def forward_blocking(geom: ConvGeometry) -> tuple[int, int]:
    """(band rows, output channels per task: 0 for a group's all) of the im2col forward."""
    if (geom.n * geom.groups == 1 and geom.kg >= 2 * PAIR_CHANNEL_BLOCK
            and geom.ckk * geom.oh * geom.ow <= WHOLE_IMAGE_ELEMENTS):
        half = -(-geom.kg // 2)
        return geom.oh, -(-half // 16) * 16  # one band, two blocks of whole 16s
    rows = forward_band_rows(geom)
    return rows, forward_channel_block(geom, rows)


def forward_band_rows(geom: ConvGeometry) -> int:
    """Output rows per band of an im2col forward (packed or on shifted rows): bands until
    FORWARD_MIN_UNITS units, a 1x1's until MIN_UNITS."""
    units = MIN_UNITS if geom.pointwise else FORWARD_MIN_UNITS
    return band_rows(geom, geom.n * geom.groups, units)


def forward_channel_block(geom: ConvGeometry, rows: int) -> int:
    """Output channels per task of the im2col forward: 0 (a group's all) unless the
    (image, group, band) units are fewer than FORWARD_SPLIT_UNITS; then as many blocks
    of at least FORWARD_CHANNEL_BLOCK channels as make that many units, each a multiple
    of 16 channels (from the shape alone, as every blocking)."""
    units = geom.n * geom.groups * -(-geom.oh // rows)
    most = geom.kg // FORWARD_CHANNEL_BLOCK
    if units >= FORWARD_SPLIT_UNITS or most < 2:
        return 0
    blocks = min(most, -(-FORWARD_SPLIT_UNITS // units))
    return -(-geom.kg // (blocks * 16)) * 16


def pointwise_pixel_rows(geom: ConvGeometry, rows: int) -> tuple[int, int]:
    """(row_pixels, rows) of a pointwise forward whose bands are ``rows`` output rows:
    bands of a multiple of POINTWISE_BAND_MULTIPLE pixels, as many as before, where the
    output's pixels split into rows of a power of two of at least 4 (up to that
    multiple) and the last band keeps at least half a band; else (0, rows)."""
    multiple = POINTWISE_BAND_MULTIPLE
    pixels, span = geom.oh * geom.ow, rows * geom.ow
    row_pixels = math.gcd(pixels, multiple)
    if span % multiple == 0 or span >= pixels or row_pixels < 4:
        return 0, rows
    bands = -(-pixels // span)
    aligned = -(-pixels // (multiple * bands)) * multiple
    if 2 * (pixels - (bands - 1) * aligned) < aligned:
        return 0, rows
    return row_pixels, aligned // row_pixels


def input_grad_channel_block(geom: ConvGeometry) -> int:
    """Channels of gx per task of the im2col input gradient (one task per image and
    group otherwise: 0): with fewer than FORWARD_SPLIT_UNITS such tasks, blocks of at
    least IGRAD_CHANNEL_BLOCK channels, as many as make that many tasks. Each task owns
    its channels of gx, its GEMM computes their rows of the columns."""
    units = geom.n * geom.groups
    most = geom.cg // IGRAD_CHANNEL_BLOCK
    if units >= FORWARD_SPLIT_UNITS or most < 2:
        return 0
    return -(-geom.cg // min(most, -(-FORWARD_SPLIT_UNITS // units)))


def gemm_weight_grad_blocking(geom: ConvGeometry) -> tuple[int, int, int]:
    """(channels per block, band rows, chunks) of the im2col weight gradient.

    Deep layers split the input channels into blocks, each task packing and
    accumulating its block over the whole batch (long GEMMs, no partial sums).
    Shallow ones keep all channels together and split the batch into chunks.
    """
    targets = [(WG_BLOCK_COLUMNS, WG_MIN_TASKS)]
    if geom.pointwise:
        targets.append((WG_POINTWISE_COLUMNS, 2 * WG_MIN_TASKS))
    for target, min_tasks in targets:
        n_blocks = 1 << (max(1, min(geom.cg, geom.ckk // target)).bit_length() - 1)
        cblock = -(-geom.cg // n_blocks)
        if cblock > WG_CHANNEL_MULTIPLE:
            cblock = -(-cblock // WG_CHANNEL_MULTIPLE) * WG_CHANNEL_MULTIPLE
        if geom.groups * -(-geom.cg // cblock) >= min_tasks:
            rows = max(1, min(geom.oh, BAND_ELEMENTS // max(1, cblock * geom.taps * geom.ow)))
            return cblock, rows, 1
    # whole-image bands where the batch alone gives WG_MIN_UNITS chunks: longer GEMMs
    rows = max(1, min(geom.oh, BAND_ELEMENTS // max(1, geom.ckk * geom.ow)))
    if geom.n * -(-geom.oh // rows) < WG_MIN_UNITS:
        rows = max(1, min(rows, -(-geom.oh // -(-WG_MIN_UNITS // geom.n))))
    units = geom.n * -(-geom.oh // rows)
    chunks = max(1, min(units, MAX_CHUNKS, CHUNK_ELEMENTS // max(1, geom.k * geom.ckk)))
    return geom.cg, rows, chunks


def channel_vector_padded(channels: int, dtype: DTypeLike) -> int:
    """Channels rounded up to whole SIMD vectors of this build."""
    lanes = _conv_cvec.lanes(np.dtype(dtype) == np.float64)
    return -(-channels // lanes) * lanes


def channel_vector_band(geom: ConvGeometry, c_in: int, kp: int,
                        outer_units: int) -> tuple[int, int, int]:
    """(rows per band, padded row length, padded band elements) of a channel-vectorised
    pass with ``c_in`` input channels and KP padded output channels per group."""
    _, wp = _conv_cvec.band_extent(1, geom.ow, geom.kh, geom.kw, *geom.stride, *geom.dilation)
    rows = max(1, min(geom.oh, CV_BAND_ELEMENTS // (c_in * geom.stride[0] * wp + geom.ow * kp)))
    if outer_units * -(-geom.oh // rows) < MIN_UNITS:
        rows = max(1, min(rows, -(-geom.oh // -(-MIN_UNITS // max(1, outer_units)))))
    hp, _ = _conv_cvec.band_extent(rows, geom.ow, geom.kh, geom.kw, *geom.stride,
                                   *geom.dilation)
    return rows, wp, hp * wp


def scatter_workspace(geom: ConvGeometry, dtype: DTypeLike) -> int:
    """Elements of the scatter input gradient's padded image of one (image, group)."""
    hp, wp = _conv_cvec.band_extent(geom.oh, geom.ow, geom.kh, geom.kw, *geom.stride,
                                    *geom.dilation)
    return hp * wp * channel_vector_padded(geom.cg, dtype)


def winograd_tile(n: int, oh: int, ow: int) -> int:
    """The output tile M of F(MxM, 3x3) for a Winograd pass whose output (the
    undilated kernel's, all phases together) is n images of oh x ow: 4 from
    WINOGRAD_F4_MIN_TILES 4x4 tiles on, else 2."""
    return 4 if n * -(-oh // 4) * -(-ow // 4) >= WINOGRAD_F4_MIN_TILES else 2


def winograd_block(geom: ConvGeometry, tile: int) -> int:
    """Tiles per Winograd block: large enough for an efficient GEMM (N = block), small
    enough that a block's scratch stays within WINOGRAD_BLOCK_ELEMENTS, and cut smaller
    when there are too few (block, group) units to share out."""
    n_tiles = geom.n * -(-geom.oh // tile) * -(-geom.ow // tile)
    per_tile = (tile + 2) ** 2 * (geom.cg + geom.kg)
    block = WINOGRAD_BLOCK_ELEMENTS // max(1, per_tile)
    block = max(WINOGRAD_MIN_BLOCK, min(WINOGRAD_MAX_BLOCK, block))
    if geom.groups * -(-n_tiles // block) < MIN_UNITS:
        wanted_blocks = -(-MIN_UNITS // geom.groups)
        block = max(WINOGRAD_MIN_BLOCK, min(block, -(-n_tiles // wanted_blocks)))
    return max(1, min(block, n_tiles))


def wide_weight_grad_chunks(geom: ConvGeometry) -> int:
    """Chunks of the batch for the wide-row weight gradient: enough for WIDE_WG_MIN_TASKS
    tasks with the groups, at most one per image and MAX_CHUNKS. The bits do not depend
    on it: each image's sums are added in order, in double, chunk after chunk."""
    wanted = -(-WIDE_WG_MIN_TASKS // geom.groups)
    return max(1, min(geom.n, MAX_CHUNKS, wanted))
