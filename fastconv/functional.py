"""Public operations on NCHW arrays: validation, output shapes, algorithm choice.

The semantics are those of ``torch.nn.functional`` unless said otherwise. Every
function accepts any array-like (lists, views of any strides, read-only arrays),
never modifies its inputs and returns new NumPy arrays of float32 or float64:
float64 when any operand is float64 or an integer array, else float32.

Dimensions, as in the shapes of every docstring:

- N: images in the batch; C: input channels; K: output channels (filters);
- H, W: input height and width; OH, OW: output height and width;
- KH, KW: kernel height and width; L, OL: input and output length (1-D ops).

Examples
--------
>>> import numpy as np
>>> from fastconv import functional as F
>>> x = np.ones((2, 3, 8, 8), dtype=np.float32)
>>> w = np.ones((4, 3, 3, 3), dtype=np.float32)
>>> y = F.conv2d(x, w, padding=1)
>>> y.shape, y.dtype
((2, 4, 8, 8), dtype('float32'))
>>> F.max_pool2d(y, 2).shape
(2, 4, 4, 4)
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Literal, Sequence, TypeAlias, overload

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from fastconv import _autotune, _config
from fastconv._blas import single_threaded_blas
from fastconv import _dispatch, _winograd
from fastconv._dispatch import (  # the variant for this CPU
    _conv_cvec,
    _conv_direct,
    _conv_gemm,
    _conv_wide,
    _conv_winograd,
    _pool,
)
from fastconv._validation import (
    as_array,
    as_contiguous,
    as_index,
    as_pair,
    check_ndim,
    check_size,
    normalize_padding,
    output_hw,
    result_dtype,
)

__all__ = [
    "ALGORITHMS",
    "conv2d",
    "conv2d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "max_unpool2d",
    "avg_pool2d",
    "avg_pool2d_backward",
    "lp_pool2d",
    "lp_pool2d_backward",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "conv1d",
    "conv1d_backward",
    "conv_transpose1d",
    "conv_transpose1d_backward",
    "max_pool1d",
    "max_pool1d_backward",
    "avg_pool1d",
    "avg_pool1d_backward",
]

ALGORITHMS = ("auto", "direct", "im2col", "winograd")

# Types of the public signatures (not exported: spell them out or import them from here).
#: An array of float32 or float64: what every operation returns.
FloatArray: TypeAlias = NDArray[np.floating[Any]]
#: An int, or one int per spatial axis (h, w).
IntPair: TypeAlias = int | tuple[int, int]
#: Convolution padding: an int, (h, w), ((top, bottom), (left, right)) or a word.
Padding: TypeAlias = int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] | str
#: 1-D padding: an int, (left, right) or a word.
Padding1d: TypeAlias = int | tuple[int, int] | str
#: A 1-D int parameter: an int or a 1-tuple, as PyTorch takes.
Int1d: TypeAlias = int | tuple[int]

# Column-buffer budget per thread (elements): a band of output rows is packed at a time.
BAND_ELEMENTS = 1 << 18
# Channel-vectorised kernels: per-thread budget (elements) of a band's padded input
# and its pixel-major outputs.
CVEC_BAND_ELEMENTS = 1 << 16
# ... and the channels per group from which they beat the wide-row kernels (forward)
# and the other direct weight gradient; the input gradient's per-thread padded image
# (elements) beyond which the direct input gradient runs other kernels.
CVEC_MIN_IN_CHANNELS, CVEC_MIN_OUT_CHANNELS, CVEC_MIN_WGRAD_CHANNELS = 3, 8, 4
CVEC_SCATTER_ELEMENTS = 1 << 22
# With few images, bands are cut smaller so at least this many units exist to share out.
MIN_UNITS = 16
# Weight-gradient partial sums: at most this many chunks, and this many elements in all.
MAX_CHUNKS = 16
CHUNK_ELEMENTS = 1 << 22
# Weight gradient of deep layers: one task per block of input channels of about this
# many GEMM columns (CB * KH * KW), when that gives at least WG_MIN_TASKS tasks.
# A pointwise block packs nothing, so narrower blocks cost no extra copies.
WG_BLOCK_COLUMNS, WG_POINTWISE_COLUMNS = 128, 32
WG_MIN_TASKS = 8
# conv_transpose2d's backward packs gy's columns once for two passes up to this size.
PACKED_ELEMENTS = 1 << 22
# BLAS takes 32-bit sizes.
INT32_MAX = 2**31 - 1
# Winograd: output tile size M of F(MxM, 3x3), and the per-thread budget (elements)
# of one block's transformed input and GEMM output, T * (C/groups + K/groups) * B.
WINOGRAD_TILE = 4
WINOGRAD_BLOCK_ELEMENTS = 1 << 19
WINOGRAD_MIN_BLOCK, WINOGRAD_MAX_BLOCK = 16, 256
WINOGRAD_SUPPORT = "3x3 kernels with stride 1 (any padding, dilation and groups)"


def _per_thread(n_threads: int, elements: int, dtype: DTypeLike, what: str) -> NDArray[Any]:
    """Scratch rows of ``elements`` per thread, row i for thread i.

    Rows are padded apart by at least one cache line: two threads writing the ends of
    adjacent short rows (a pooling row of 28 sums) would otherwise share a line and
    stall each other on every write.
    """
    itemsize = np.dtype(dtype).itemsize
    line = max(1, 64 // itemsize)
    padded = -(-elements // line) * line + line
    check_size((n_threads, padded), what)
    return np.empty((n_threads, padded), dtype=dtype)


class _ConvGeometry:
    """Validated sizes of one convolution (x: N, C, H, W; w: K, C/G, KH, KW).

    ``out_hw`` fixes the output size instead of deriving it: transposed convolution
    runs these kernels with the roles of input and output exchanged, and its sizes
    are checked by its own validation first.
    """

    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    oh: int
    ow: int

    def __init__(self, x_shape: Sequence[int], w_shape: Sequence[int], stride: IntPair,
                 padding: Padding, dilation: IntPair, groups: int,
                 out_hw: tuple[int, int] | None = None) -> None:
        self.n, self.c, self.h, self.w = x_shape
        self.k, self.cg, self.kh, self.kw = w_shape
        self.groups = as_index(groups, "groups", 1)
        self.stride = as_pair(stride, "stride")
        self.dilation = as_pair(dilation, "dilation")
        if self.kh < 1 or self.kw < 1:
            raise ValueError(f"w must have a kernel of at least 1x1, got shape {tuple(w_shape)}")
        if self.c % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide the input channels of x ({self.c})"
            )
        if self.k % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide the output channels of w ({self.k})"
            )
        if self.cg * self.groups != self.c:
            raise ValueError(
                f"w has {self.cg} input channels per group; with groups={self.groups} x must "
                f"have {self.cg * self.groups} channels, got {self.c} (x shape {tuple(x_shape)})"
            )
        self.padding = normalize_padding(
            padding, (self.h, self.w), (self.kh, self.kw), self.stride, self.dilation
        )
        if out_hw is None:
            out_hw = output_hw(
                (self.h, self.w), (self.kh, self.kw), self.stride, self.padding, self.dilation
            )
        self.oh, self.ow = out_hw
        self.y_shape = (self.n, self.k, self.oh, self.ow)
        check_size(self.y_shape, "the output (check padding and stride)")
        self.kg = self.k // self.groups
        self.ckk = self.cg * self.kh * self.kw

    @property
    def kernel_args(self) -> tuple[int, int, int, int, int, int, int]:
        """(sh, sw, pt, pl, dh, dw, groups) as the kernels take them."""
        (pt, _), (pl, _) = self.padding
        return (*self.stride, pt, pl, *self.dilation, self.groups)

    @property
    def empty(self) -> bool:
        return 0 in (self.n, self.c, self.k, self.oh, self.ow)

    @property
    def pointwise(self) -> bool:
        """True when each image is its own column matrix: a 1x1 kernel, stride 1, no
        padding, and an output of the input's size (a transposed convolution's output
        can be larger). Decided here only; the GEMM kernels are told."""
        (pt, pb), (pl, pr) = self.padding
        return ((self.kh, self.kw, *self.stride, pt, pb, pl, pr) == (1, 1, 1, 1, 0, 0, 0, 0)
                and (self.oh, self.ow) == (self.h, self.w))

    @property
    def winograd_ok(self) -> bool:
        """True for the shapes the Winograd kernels handle: 3x3, stride 1 (a dilated
        kernel runs as one undilated convolution per phase)."""
        return (self.kh, self.kw, *self.stride) == (3, 3, 1, 1) and self.gemm_fits()

    def winograd_block(self, tile: int) -> int:
        """Tiles per Winograd block, from the shape alone (never the thread count).

        Large enough for an efficient GEMM (N = block), small enough that a block's
        scratch stays within WINOGRAD_BLOCK_ELEMENTS, and cut smaller when there are
        too few (block, group) units to share out.
        """
        n_tiles = self.n * -(-self.oh // tile) * -(-self.ow // tile)
        per_tile = (tile + 2) ** 2 * (self.cg + self.kg)
        block = WINOGRAD_BLOCK_ELEMENTS // max(1, per_tile)
        block = max(WINOGRAD_MIN_BLOCK, min(WINOGRAD_MAX_BLOCK, block))
        if self.groups * -(-n_tiles // block) < MIN_UNITS:
            wanted_blocks = -(-MIN_UNITS // self.groups)
            block = max(WINOGRAD_MIN_BLOCK, min(block, -(-n_tiles // wanted_blocks)))
        return max(1, min(block, n_tiles))

    def gemm_fits(self) -> bool:
        """True when every GEMM size and leading dimension fits BLAS's 32-bit ints."""
        return max(self.oh * self.ow, self.h * self.w, self.ckk, self.k) <= INT32_MAX

    def band_rows(self, outer_units: int | None = None) -> int:
        """Output rows per im2col band, from the shape alone (never the thread count).

        With ``outer_units`` (images x groups that run in parallel), bands are also
        cut small enough that at least MIN_UNITS units exist to share out.
        """
        rows = max(1, min(self.oh, BAND_ELEMENTS // max(1, self.ckk * self.ow)))
        if outer_units is not None and outer_units * -(-self.oh // rows) < MIN_UNITS:
            wanted_bands = -(-MIN_UNITS // max(1, outer_units))
            rows = max(1, min(rows, -(-self.oh // wanted_bands)))
        return rows

    def weight_grad_plan(self) -> tuple[int, int, int]:
        """(channels per block, band rows, chunks) of the im2col weight gradient, from
        the shape alone (never the thread count).

        Deep layers split the input channels into blocks, each task packing and
        accumulating its block over the whole batch (long GEMMs, no partial sums).
        Shallow ones keep all channels together and split the batch into chunks.
        """
        taps = self.kh * self.kw
        target = WG_POINTWISE_COLUMNS if self.pointwise else WG_BLOCK_COLUMNS
        n_blocks = max(1, min(self.cg, self.ckk // target))
        cblock = -(-self.cg // n_blocks)
        if self.groups * -(-self.cg // cblock) >= WG_MIN_TASKS:
            rows = max(1, min(self.oh, BAND_ELEMENTS // max(1, cblock * taps * self.ow)))
            return cblock, rows, 1
        # whole-image bands where the batch alone gives WG_MIN_TASKS chunks: longer GEMMs
        rows = max(1, min(self.oh, BAND_ELEMENTS // max(1, self.ckk * self.ow)))
        if self.n * -(-self.oh // rows) < WG_MIN_TASKS:
            rows = max(1, min(rows, -(-self.oh // -(-WG_MIN_TASKS // self.n))))
        units = self.n * -(-self.oh // rows)
        k_chunks = max(1, min(units, MAX_CHUNKS, CHUNK_ELEMENTS // max(1, self.k * self.ckk)))
        return self.cg, rows, k_chunks

    def workspace(self, rows: int, n_threads: int, dtype: DTypeLike) -> FloatArray:
        """Per-thread column buffers: (threads, CKK * rows * OW)."""
        per_thread = 1 if self.pointwise else self.ckk * rows * self.ow
        return _per_thread(n_threads, per_thread, dtype, "the im2col workspace")


# Kernel dispatch shared by conv2d and conv_transpose2d. Each fills a preallocated
# output whose shape the geometry describes (x: geom input, y: geom output).

def _conv_forward_into(x: FloatArray, w: FloatArray, b: FloatArray | None, y: FloatArray,
                       geom: _ConvGeometry, algorithm: str, n_threads: int,
                       columns: FloatArray | None = None) -> None:
    """y = conv(x, w) + b; ``columns``: x's columns from _packed_columns (im2col only)."""
    if algorithm == "direct":
        (pt, _), (pl, _) = geom.padding
        if _cvec_suits(geom.cg, geom.kg):
            _cvec_forward(x, w, b, y, geom, n_threads)
        elif geom.stride == (1, 1):
            workspace = _wide_workspace(geom.cg, (geom.oh, geom.ow), geom, n_threads, y.dtype)
            _conv_wide.conv2d_forward(x, w, b, y, workspace, pt, pl, *geom.dilation,
                                      geom.groups, n_threads)
        else:
            _conv_direct.conv2d_forward(x, w, b, y, *geom.kernel_args, n_threads)
        return
    if algorithm == "winograd":
        _winograd_forward_into(x, w, b, y, geom, n_threads)
        return
    rows = geom.band_rows(geom.n * geom.groups)
    workspace = geom.workspace(rows, n_threads, y.dtype) if columns is None else columns
    with single_threaded_blas():
        _conv_gemm.conv2d_forward(x, w, b, y, workspace, *geom.kernel_args, rows, n_threads,
                                  geom.pointwise, columns is not None)


def _wide_workspace(channels: int, out_hw: tuple[int, int], geom: _ConvGeometry,
                    n_threads: int, dtype: DTypeLike) -> FloatArray:
    """Per-thread scratch of the stride-1 direct kernels: a padded image and wide outputs."""
    per_thread = _conv_wide.workspace_size(channels, *out_hw, geom.kh, geom.kw, *geom.dilation)
    return _per_thread(n_threads, per_thread, dtype, "the direct-convolution workspace")


def _wide_input_grad(gy: FloatArray, w: FloatArray, gx: FloatArray, geom: _ConvGeometry,
                     n_threads: int) -> None:
    """gx = input gradient of a stride-1 conv, itself a stride-1 conv: gy, padded by the
    kernel's reach less the forward padding, correlated with the rotated kernel whose
    channel axes are swapped per group. Overwrites gx.

    Only for finite w: the wide kernel multiplies gy's padding too, and inf * 0 there
    would be NaN where the im2col path (and PyTorch) never form that product.
    """
    (pt, _), (pl, _) = geom.padding
    dh, dw = geom.dilation
    workspace = _wide_workspace(geom.kg, (geom.h, geom.w), geom, n_threads, gx.dtype)
    _conv_wide.conv2d_forward(gy, _input_grad_kernel(w, geom), None, gx, workspace,
                              (geom.kh - 1) * dh - pt, (geom.kw - 1) * dw - pl, dh, dw,
                              geom.groups, n_threads)


def _cvec_suits(c_in: int, c_out: int) -> bool:
    """Whether "direct" runs a forward pass with these channels per group on the
    channel-vectorised kernel rather than the wide-row (stride 1) or plain loops:
    enough output channels to fill its vectors, enough input channels to amortise
    each band copy (measured on LeNet-like shapes)."""
    return c_in >= CVEC_MIN_IN_CHANNELS and c_out >= CVEC_MIN_OUT_CHANNELS


def _cvec_packed(w: FloatArray, groups: int) -> FloatArray:
    """Weights (K, CG, KH, KW) packed for the channel-vectorised kernels: (G, CKK, KP),
    taps major, output channels contiguous and zero-padded to whole SIMD vectors."""
    k, cg, kh, kw = w.shape
    kg = k // groups
    lanes = _conv_cvec.lanes(w.dtype == np.float64)
    packed = np.zeros((groups, cg * kh * kw, -(-kg // lanes) * lanes), dtype=w.dtype)
    packed[:, :, :kg] = w.reshape(groups, kg, cg * kh * kw).transpose(0, 2, 1)
    return packed


def _cvec_plan(c_in: int, kp: int, out_hw: tuple[int, int], geom: _ConvGeometry,
               outer_units: int, n_threads: int, dtype: DTypeLike
               ) -> tuple[int, NDArray[np.intp], FloatArray]:
    """(rows per band, tap offsets, per-thread workspace) of a channel-vectorised pass
    with ``c_in`` input channels per group, KP padded output channels and output
    ``out_hw``; from the shape alone (never the thread count)."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, geom.stride, geom.dilation
    wp = _input_extent(ow, sw, geom.kw, dw)
    rows = max(1, min(oh, CVEC_BAND_ELEMENTS // (c_in * sh * wp + ow * kp)))
    if outer_units * -(-oh // rows) < MIN_UNITS:
        rows = max(1, min(rows, -(-oh // -(-MIN_UNITS // max(1, outer_units)))))
    plane = _input_extent(rows, sh, geom.kh, dh) * wp
    tap_off = _cvec_tap_offsets(c_in, geom.kh, geom.kw, dh * wp, dw, plane)
    workspace = _per_thread(n_threads, c_in * plane + rows * ow * kp, dtype,
                            "the direct-convolution workspace")
    return rows, tap_off, workspace


def _input_extent(outputs: int, stride: int, kernel: int, dilation: int) -> int:
    """Input rows (or columns) that ``outputs`` consecutive outputs read, padding included."""
    return (outputs - 1) * stride + (kernel - 1) * dilation + 1


@functools.lru_cache(maxsize=64)
def _cvec_tap_offsets(c_in: int, kh: int, kw: int, row_step: int, col_step: int,
                      plane: int) -> NDArray[np.intp]:
    """Offsets c * plane + i * row_step + j * col_step of the taps (c, i, j) in order,
    read-only (cached: a LeNet layer asks for the same ones on every call)."""
    offsets = (np.arange(c_in, dtype=np.intp)[:, None, None] * plane
               + np.arange(kh, dtype=np.intp)[:, None] * row_step
               + np.arange(kw, dtype=np.intp) * col_step).ravel()
    offsets.flags.writeable = False
    return offsets


def _cvec_forward(x: FloatArray, w: FloatArray, b: FloatArray | None, y: FloatArray,
                  geom: _ConvGeometry, n_threads: int) -> None:
    """y = conv(x, w) + b by the channel-vectorised kernel."""
    w_packed = _cvec_packed(w, geom.groups)
    rows, tap_off, workspace = _cvec_plan(geom.cg, w_packed.shape[2], (geom.oh, geom.ow),
                                          geom, geom.n * geom.groups, n_threads, y.dtype)
    (pt, _), (pl, _) = geom.padding
    _conv_cvec.conv2d_forward(x, w_packed, b, y, workspace, tap_off, geom.kh, geom.kw,
                              *geom.stride, pt, pl, *geom.dilation, rows, n_threads)


def _cvec_scatter_input_grad(gy: FloatArray, w: FloatArray, gx: FloatArray,
                             geom: _ConvGeometry, n_threads: int) -> None:
    """gx = input gradient by the channel-vectorised scatter kernel (any stride): each
    gy pixel times each tap is added into a padded image of x's channels. Overwrites
    gx; padding is never multiplied, so non-finite w needs no care."""
    g, kg, cg, taps = geom.groups, geom.kg, geom.cg, geom.kh * geom.kw
    lanes = _conv_cvec.lanes(w.dtype == np.float64)
    packed = np.zeros((g, kg * taps, -(-cg // lanes) * lanes), dtype=w.dtype)
    packed[:, :, :cg] = (w.reshape(g, kg, cg, taps).transpose(0, 1, 3, 2)
                         .reshape(g, kg * taps, cg))
    workspace = _per_thread(n_threads, _scatter_image_elements(geom), gx.dtype,
                            "the direct-convolution workspace")
    (pt, _), (pl, _) = geom.padding
    _conv_cvec.conv2d_input_grad(gy, packed, gx, workspace, geom.kh, geom.kw, *geom.stride,
                                 pt, pl, *geom.dilation, n_threads)


def _cvec_weight_grad(gy: FloatArray, x: FloatArray, gw: FloatArray, geom: _ConvGeometry,
                      n_threads: int) -> None:
    """gw = weight gradient by the channel-vectorised kernel, summed over fixed chunks
    of (image, band) units in order."""
    lanes = _conv_cvec.lanes(gw.dtype == np.float64)
    kp = -(-geom.kg // lanes) * lanes
    rows, tap_off, workspace = _cvec_plan(geom.cg, kp, (geom.oh, geom.ow), geom, geom.n,
                                          n_threads, gw.dtype)
    units = geom.n * -(-geom.oh // rows)
    n_chunks = max(1, min(units, MAX_CHUNKS))
    partials = np.empty((n_chunks, geom.groups, geom.ckk, kp), dtype=gw.dtype)
    (pt, _), (pl, _) = geom.padding
    _conv_cvec.conv2d_weight_grad(gy, x, partials, workspace, tap_off, geom.kh, geom.kw,
                                  *geom.stride, pt, pl, *geom.dilation, rows, n_threads)
    with np.errstate(invalid="ignore", over="ignore"):  # inf and NaN are results here
        total = np.add.reduce(partials, axis=0)  # one fixed order for any thread count
    gw[...] = (total[:, :, :geom.kg].transpose(0, 2, 1)
               .reshape(gw.shape))


def _input_grad_kernel(w: FloatArray, geom: _ConvGeometry) -> FloatArray:
    """The kernel of a stride-1 conv's input gradient, itself a stride-1 conv of gy:
    w rotated 180 degrees with its channel axes swapped per group, (C, K/G, KH, KW)."""
    g, kg, cg = geom.groups, geom.kg, geom.cg
    w_t = (w.reshape(g, kg, cg, geom.kh, geom.kw)[:, :, :, ::-1, ::-1]
           .transpose(0, 2, 1, 3, 4).reshape(g * cg, kg, geom.kh, geom.kw))
    return np.ascontiguousarray(w_t)


def _winograd_forward_into(x: FloatArray, w: FloatArray, b: FloatArray | None, y: FloatArray,
                           geom: _ConvGeometry, n_threads: int) -> None:
    """y = conv(x, w) + b by Winograd F(MxM, 3x3) (geom.winograd_ok holds)."""
    if geom.dilation != (1, 1):
        _winograd_phases_into(x, w, b, y, geom, n_threads)
        return
    (pt, _), (pl, _) = geom.padding
    _winograd_kernel(x, w, b, y, geom, pt, pl, n_threads)


def _winograd_kernel(x: FloatArray, w: FloatArray, b: FloatArray | None, y: FloatArray,
                     geom: _ConvGeometry, pt: int, pl: int, n_threads: int) -> None:
    """The undilated Winograd kernel, top/left padding pt, pl (y's shape implies the rest)."""
    tile = WINOGRAD_TILE
    u = _winograd.CACHE.get(w, tile)
    block = geom.winograd_block(tile)
    per_thread = _conv_winograd.workspace_elements(geom.cg, geom.kg, tile, block)
    workspace = _per_thread(n_threads, per_thread, y.dtype, "the winograd workspace")
    with single_threaded_blas():
        _conv_winograd.conv2d_forward(x, u, b, y, workspace, pt, pl, geom.groups, tile, block,
                                      n_threads)


def _winograd_phases_into(x: FloatArray, w: FloatArray, b: FloatArray | None, y: FloatArray,
                          geom: _ConvGeometry, n_threads: int) -> None:
    """A dilated 3x3 stride-1 convolution as dh * dw undilated ones.

    Output row oh = dh * a + r reads input rows oh + i * dh - pt = dh * (a + i + q) + s
    with r - pt = dh * q + s, 0 <= s < dh: only rows of residue s, at unit spacing. So
    the output rows r, r + dh, ... are an undilated convolution of the input rows s,
    s + dh, ... with top padding -q; columns likewise.
    """
    dh, dw = geom.dilation
    (pt, _), (pl, _) = geom.padding
    phases = []  # (output row/column offsets, input row/column offsets, top/left padding)
    for r in range(min(dh, geom.oh)):
        for c in range(min(dw, geom.ow)):
            phases.append(((r, c), ((r - pt) % dh, (c - pl) % dw),
                           (-((r - pt) // dh), -((c - pl) // dw))))
    x_views = [x[:, :, sr::dh, sc::dw] for _, (sr, sc), _ in phases]
    out_hws = [(len(range(r, geom.oh, dh)), len(range(c, geom.ow, dw)))
               for (r, c), _, _ in phases]
    if (len({v.shape for v in x_views}) == 1 and len(set(out_hws)) == 1
            and len({pads for _, _, pads in phases}) == 1 and x_views[0].size):
        # One call over all phases stacked along the batch: longer GEMMs, one setup.
        # The strided split and merge run on every thread (NumPy's copies use one).
        x_stack = np.empty((len(phases) * geom.n, *x_views[0].shape[1:]), dtype=x.dtype)
        _conv_winograd.split_phases(x, x_stack, np.array([s for _, s, _ in phases], np.intp),
                                    dh, dw, n_threads)
        y_stack = np.empty((x_stack.shape[0], geom.k, *out_hws[0]), dtype=y.dtype)
        sub = _ConvGeometry(x_stack.shape, w.shape, 1, 0, 1, geom.groups, out_hw=out_hws[0])
        _winograd_kernel(x_stack, w, b, y_stack, sub, *phases[0][2], n_threads)
        _conv_winograd.merge_phases(y_stack, y, np.array([o for o, _, _ in phases], np.intp),
                                    dh, dw, n_threads)
        return
    for ((r, c), _, pads), x_view, out_hw in zip(phases, x_views, out_hws):
        y_phase = np.empty((geom.n, geom.k, *out_hw), dtype=y.dtype)
        if x_view.size == 0:  # every tap of this phase falls in the padding
            y_phase[...] = 0 if b is None else b[None, :, None, None]
        else:
            x_phase = np.ascontiguousarray(x_view)
            sub = _ConvGeometry(x_phase.shape, w.shape, 1, 0, 1, geom.groups, out_hw=out_hw)
            _winograd_kernel(x_phase, w, b, y_phase, sub, *pads, n_threads)
        y[:, :, r::dh, c::dw] = y_phase


def _winograd_input_grad(gy: FloatArray, w: FloatArray, gx: FloatArray, geom: _ConvGeometry,
                         n_threads: int) -> bool:
    """gx = conv2d's input gradient as a Winograd convolution; False if it does not apply.

    For a 3x3 stride-1 kernel of dilation (dh, dw) the input gradient is a 3x3 stride-1
    convolution of gy, same dilation, with the kernel rotated 180 degrees and its
    channel axes swapped (per group), padded by (2 dh - top, 2 dh - bottom, 2 dw - left,
    2 dw - right): possible when no padding exceeds the kernel's reach.
    """
    (pt, pb), (pl, pr) = geom.padding
    dh, dw = geom.dilation
    if max(pt, pb) > 2 * dh or max(pl, pr) > 2 * dw:
        return False
    w_t = _input_grad_kernel(w, geom)
    pads = ((2 * dh - pt, 2 * dh - pb), (2 * dw - pl, 2 * dw - pr))
    geom_t = _ConvGeometry(gy.shape, w_t.shape, 1, pads, (dh, dw), geom.groups)
    _winograd_forward_into(gy, w_t, None, gx, geom_t, n_threads)
    return True


def _conv_input_grad_into(gy: FloatArray, w: FloatArray, gx: FloatArray, geom: _ConvGeometry,
                          algorithm: str, n_threads: int, bias: FloatArray | None = None,
                          zeroed: bool = True) -> None:
    """gx (zero-filled) += gradient of conv with respect to its input.

    With ``bias`` (per channel of gx), gx may hold anything and becomes bias + the
    gradient: the accumulating kernels start from the bias, which saves a pass over gx.
    With ``zeroed`` False, gx may hold anything and becomes the gradient: only the
    accumulating kernels need it zero-filled first.
    """
    if algorithm == "winograd":
        if _winograd_input_grad(gy, w, gx, geom, n_threads):
            if bias is not None:
                gx += bias[None, :, None, None]
            return
        algorithm = "im2col"
    kernel = _direct_input_grad_kernel(geom) if algorithm == "direct" else None
    scatter = kernel == "scatter"
    wide = kernel == "wide" and np.isfinite(w).all()
    # these kernels and the pointwise GEMM overwrite gx; the others accumulate into it
    overwrites = scatter or wide or (algorithm == "im2col" and geom.pointwise)
    if bias is not None and not overwrites:
        gx[...] = bias[None, :, None, None]
    elif not zeroed and not overwrites:
        gx.fill(0)
    if scatter:
        _cvec_scatter_input_grad(gy, w, gx, geom, n_threads)
    elif wide:
        _wide_input_grad(gy, w, gx, geom, n_threads)
    elif algorithm == "direct":
        _conv_direct.conv2d_input_grad(gy, w, gx, *geom.kernel_args, n_threads)
    else:
        rows = geom.band_rows()  # one task per (image, group): bands only bound memory
        workspace = geom.workspace(rows, n_threads, gx.dtype)
        with single_threaded_blas():
            _conv_gemm.conv2d_input_grad(gy, w, gx, workspace, *geom.kernel_args, rows,
                                         n_threads, geom.pointwise)
    if bias is not None and overwrites:
        gx += bias[None, :, None, None]


def _direct_input_grad_kernel(geom: _ConvGeometry) -> str:
    """The kernel "direct" runs for an input gradient: "wide" (wide rows, stride 1,
    finite kernels) for few input channels per group on wide images, "scatter"
    (channel-vectorised) while its per-thread image fits CVEC_SCATTER_ELEMENTS, else
    "wide" or, for other strides, "loops" (typed loops over the output)."""
    stride_one = geom.stride == (1, 1)
    if stride_one and (geom.cg < 4 or (geom.cg < 8 and geom.w >= 24)):
        return "wide"
    if _scatter_image_elements(geom) > CVEC_SCATTER_ELEMENTS:
        return "wide" if stride_one else "loops"
    return "scatter"


def _scatter_image_elements(geom: _ConvGeometry) -> int:
    """Elements of the scatter input gradient's padded image of one (image, group)."""
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    hp = _input_extent(geom.oh, sh, geom.kh, dh)
    wp = _input_extent(geom.ow, sw, geom.kw, dw)
    lanes = 8  # the widest vector of any build: an upper bound of the padded channels
    return hp * wp * -(-geom.cg // lanes) * lanes


def _conv_weight_grad_into(gy: FloatArray, x: FloatArray, gw: FloatArray, geom: _ConvGeometry,
                           algorithm: str, n_threads: int,
                           columns: FloatArray | None = None) -> None:
    """gw = gradient of conv with respect to its weights, summed over the batch;
    ``columns``: x's columns from _packed_columns (im2col only)."""
    if algorithm == "winograd":  # no Winograd weight gradient: im2col computes it
        algorithm = "im2col"
    if algorithm == "direct" and geom.kg >= CVEC_MIN_WGRAD_CHANNELS:
        _cvec_weight_grad(gy, x, gw, geom, n_threads)
        return
    if algorithm == "direct":
        gy_nonfinite = not np.isfinite(gy).all()  # then padding products matter
        _conv_direct.conv2d_weight_grad(gy, x, gw, *geom.kernel_args, n_threads, gy_nonfinite)
        return
    cblock, rows, k_chunks = geom.weight_grad_plan()
    partials = np.empty((k_chunks, gw.size) if k_chunks > 1 else (1, 1), dtype=gw.dtype)
    if columns is None:
        per_thread = 1 if geom.pointwise else cblock * geom.kh * geom.kw * rows * geom.ow
        workspace = _per_thread(n_threads, per_thread, gw.dtype, "the im2col workspace")
    else:
        workspace = columns
    with single_threaded_blas():
        _conv_gemm.conv2d_weight_grad(gy, x, gw, partials, workspace, *geom.kernel_args, rows,
                                      cblock, k_chunks, n_threads, geom.pointwise,
                                      columns is not None)


def _packed_columns(x: FloatArray, geom: _ConvGeometry, algorithm: str,
                    n_threads: int) -> FloatArray | None:
    """x's columns for every image, (N * G, CKK * OH * OW), when the forward and the
    weight gradient of this shape both run im2col on x and they fit PACKED_ELEMENTS:
    packed once, both passes read them. None otherwise."""
    if algorithm == "auto" and not _autotune.get_autotune():
        algorithm = ("im2col" if _auto_algorithm(geom, "forward") == "im2col"
                     and _auto_algorithm(geom, "weight_grad") == "im2col" else "direct")
    size = geom.n * geom.groups * geom.ckk * geom.oh * geom.ow
    if algorithm != "im2col" or geom.pointwise or size > PACKED_ELEMENTS:
        return None
    columns = np.empty((geom.n * geom.groups, geom.ckk * geom.oh * geom.ow), dtype=x.dtype)
    _conv_gemm.im2col_images(x, columns, geom.kh, geom.kw, *geom.kernel_args, geom.oh,
                             geom.ow, n_threads)
    return columns


def _check_algorithm(algorithm: str) -> str:
    if not isinstance(algorithm, str) or algorithm.lower() not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    return algorithm.lower()


def _check_transpose_algorithm(algorithm: str) -> str:
    algorithm = _check_algorithm(algorithm)
    if algorithm == "winograd":
        raise ValueError(
            "algorithm='winograd' is offered by conv2d only, not by transposed "
            "convolution; use 'auto', 'direct' or 'im2col'"
        )
    return algorithm


def _choose_algorithm(algorithm: str, geom: _ConvGeometry) -> str:
    """Check an algorithm name against the shape; "auto" stays "auto" (``_resolve``)."""
    algorithm = _check_algorithm(algorithm)
    if algorithm == "winograd" and not geom.winograd_ok:
        raise ValueError(
            f"algorithm='winograd' supports {WINOGRAD_SUPPORT}; got kernel "
            f"{(geom.kh, geom.kw)}, stride {geom.stride}, dilation {geom.dilation} "
            "(use 'im2col', 'direct' or 'auto' for this shape)"
        )
    if algorithm == "im2col" and not geom.gemm_fits():
        raise ValueError(
            "algorithm='im2col' needs GEMM sizes under 2**31 (planes and C/groups*KH*KW); "
            "use algorithm='direct' for this shape"
        )
    return algorithm


def _auto_algorithm(geom: _ConvGeometry, pass_: str) -> str:
    """The algorithm "auto" runs for one pass ("forward", "input_grad", "weight_grad").

    Rules from timing each pass of the benchmark suite and LeNet-5's layers with each
    algorithm (``bench/compare.py --algorithm``); they depend on the shape only, never
    on the thread count, so results stay bit-identical across thread counts.
    """
    if not geom.gemm_fits():
        return "direct"
    # Depthwise and very shallow convolutions do too little work per column for
    # packing to pay off; the direct loops win there.
    if geom.kg < 4 or geom.ckk < 16:
        return "direct"
    # Winograd F(4x4, 3x3) does a quarter of the multiplies: it wins once both channel
    # counts make its GEMMs deep (the input gradient swaps their roles).
    if geom.winograd_ok and pass_ != "weight_grad":
        c_in, c_out = (geom.cg, geom.kg) if pass_ == "forward" else (geom.kg, geom.cg)
        if c_in >= 32 and c_out > 32:
            return "winograd"
    # The channel-vectorised direct kernels beat a GEMM that small channel counts
    # leave thin: they load each input once for a whole vector of channels.
    if _cvec_beats_gemm(geom, pass_):
        return "direct"
    taps = geom.kh * geom.kw
    if geom.stride == (1, 1) and taps > 1:
        # The stride-1 direct kernels (wide rows) beat packing + GEMM for few channels
        # per group: few output channels (forward) or few input channels (input grad).
        if pass_ == "forward" and geom.kg <= 32:
            return "direct"
        if pass_ == "input_grad" and (geom.cg <= 2 or (geom.cg <= 8 and taps <= 9)):
            return "direct"
    return "im2col"


def _cvec_beats_gemm(geom: _ConvGeometry, pass_: str) -> bool:
    """Where "direct" runs the channel-vectorised kernels and they beat im2col
    (measured at 1 and 2 threads on the benchmark suite and LeNet-like layers), per
    group: forward, up to 32 output channels, or 64 with up to 32 input channels and
    at least 48 taps (C/groups * KH * KW); input gradient (scatter), 4 to 32 input
    channels and up to 64 output channels at stride 1, 4 to 16 input channels at other
    strides; weight gradient, up to 64 input and 64 output channels."""
    if geom.kh * geom.kw == 1:
        return False  # a 1x1 convolution is a GEMM as it stands
    if pass_ == "weight_grad":
        return geom.kg <= 64 and geom.cg <= 64
    if pass_ == "input_grad":
        most_in = 32 if geom.stride == (1, 1) else 16
        return (_direct_input_grad_kernel(geom) == "scatter" and 4 <= geom.cg <= most_in
                and geom.kg <= 64)
    if not _cvec_suits(geom.cg, geom.kg):
        return False  # the wide-row kernel or the plain loops would run
    return geom.kg <= 32 or (geom.kg <= 64 and geom.cg <= 32 and geom.ckk >= 48)


def _candidates(geom: _ConvGeometry, pass_: str) -> list[str]:
    """Algorithms that can run this pass of this shape (autotuning times each)."""
    if not geom.gemm_fits():
        return ["direct"]
    if geom.winograd_ok and pass_ != "weight_grad":  # no Winograd weight gradient
        return ["direct", "im2col", "winograd"]
    return ["direct", "im2col"]


def _resolve(algorithm: str, geom: _ConvGeometry, pass_: str, dtype: DTypeLike,
             n_threads: int, run: Callable[[str], object]) -> str:
    """The algorithm one pass runs: as asked, or for "auto" the rule's choice, or with
    autotuning on the fastest measured (``run(name)`` computes the pass into scratch)."""
    if algorithm != "auto":
        return algorithm
    if not _autotune.get_autotune():
        return _auto_algorithm(geom, pass_)
    key = (pass_, (geom.n, geom.c, geom.h, geom.w), (geom.k, geom.cg, geom.kh, geom.kw),
           geom.stride, geom.padding, geom.dilation, geom.groups, (geom.oh, geom.ow),
           np.dtype(dtype).str, n_threads, _dispatch.ISA)
    return _autotune.choose(key, _candidates(geom, pass_), run)


def _finite_for_auto(resolved: str, asked: str, data: FloatArray) -> str:
    """"auto" never trades PyTorch's inf/NaN pattern for speed: Winograd's transforms
    spread an infinity over its output tile, so non-finite data goes to im2col."""
    # max and min (NaN propagates through both) cost a third of a float64 sum
    if asked == "auto" and resolved == "winograd" and not (
            np.isfinite(data.max()) and np.isfinite(data.min())):
        return "im2col"
    return resolved


def _forward(x: FloatArray, w: FloatArray, b: FloatArray | None, y: FloatArray,
             geom: _ConvGeometry, algorithm: str, n_threads: int,
             columns: FloatArray | None = None) -> None:
    """y = conv(x, w) + b, "auto" resolved for the forward pass."""
    chosen = _resolve(algorithm, geom, "forward", y.dtype, n_threads,
                      lambda a: _conv_forward_into(x, w, b, np.empty_like(y), geom, a,
                                                   n_threads))
    chosen = _finite_for_auto(chosen, algorithm, x)
    _conv_forward_into(x, w, b, y, geom, chosen, n_threads,
                       columns if chosen == "im2col" else None)


def _input_grad(gy: FloatArray, w: FloatArray, gx: FloatArray, geom: _ConvGeometry,
                algorithm: str, n_threads: int, bias: FloatArray | None = None,
                zeroed: bool = True) -> None:
    """gx (zero-filled) += conv's input gradient, "auto" resolved for this pass; with
    ``bias``, gx (uninitialized) = bias + the gradient; with ``zeroed`` False, gx
    (uninitialized) = the gradient."""
    chosen = _resolve(algorithm, geom, "input_grad", gx.dtype, n_threads,
                      lambda a: _conv_input_grad_into(gy, w, np.zeros_like(gx), geom, a,
                                                      n_threads))
    chosen = _finite_for_auto(chosen, algorithm, gy)
    _conv_input_grad_into(gy, w, gx, geom, chosen, n_threads, bias, zeroed)


def _weight_grad(gy: FloatArray, x: FloatArray, gw: FloatArray, geom: _ConvGeometry,
                 algorithm: str, n_threads: int, columns: FloatArray | None = None) -> None:
    """gw = conv's weight gradient, "auto" resolved for this pass."""
    algorithm = _resolve(algorithm, geom, "weight_grad", gw.dtype, n_threads,
                         lambda a: _conv_weight_grad_into(gy, x, np.zeros_like(gw), geom, a,
                                                          n_threads))
    _conv_weight_grad_into(gy, x, gw, geom, algorithm, n_threads,
                           columns if algorithm == "im2col" else None)


def _prepare_weights(w: FloatArray, flip: bool) -> FloatArray:
    """Kernel as the kernels read it: rotated 180 degrees for true convolution."""
    return np.ascontiguousarray(w[:, :, ::-1, ::-1]) if flip else w


def _as_operands(x: ArrayLike, w: ArrayLike, extra: Sequence[tuple[str, ArrayLike]] = (),
                 w_layout: str = "(K, C/groups, KH, KW)",
                 ) -> tuple[type[np.floating[Any]], FloatArray, FloatArray, list[FloatArray]]:
    """Validate ndim and dtype of x, w (and gy...), returning contiguous arrays."""
    x = as_array(x, "x")
    w = as_array(w, "w")
    check_ndim(x, "x", 4, "(N, C, H, W)")
    check_ndim(w, "w", 4, w_layout)
    extra = [as_array(value, name) for name, value in extra]
    dtype = result_dtype(x, w, *extra)
    return dtype, as_contiguous(x, dtype), as_contiguous(w, dtype), [as_contiguous(e, dtype) for e in extra]


def _as_bias(b: ArrayLike, channels: int, dtype: type[np.floating[Any]]) -> FloatArray:
    b = as_contiguous(as_array(b, "b"), dtype)
    if b.shape != (channels,):
        raise ValueError(f"b must have shape ({channels},) (one per output channel), got {b.shape}")
    return b


def conv2d(x: ArrayLike, w: ArrayLike, b: ArrayLike | None = None, stride: IntPair = 1,
           padding: Padding = 0, dilation: IntPair = 1, groups: int = 1, *,
           algorithm: str = "auto", flip: bool = False) -> FloatArray:
    """2-D convolution (cross-correlation, as torch.nn.functional.conv2d).

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
        Input images.
    w : array_like, shape (K, C / groups, KH, KW)
        Filters.
    b : array_like, shape (K,), optional
        Bias added to every output pixel of channel k. Default: no bias.
    stride, dilation : int or (int, int), default 1
        Step between windows and between kernel taps, per axis (>= 1).
    padding : int, (int, int), ((top, bottom), (left, right)), or str, default 0
        Zero padding. Words (any case): ``"valid"`` (none), ``"same"`` (output
        ceil(H / stride) x ceil(W / stride); the odd pixel of padding goes to the
        bottom/right, for any stride), ``"full"`` (dilation * (k - 1) on each side).
    groups : int, default 1
        Channel groups: C and K must be multiples; ``groups == C`` is depthwise.
    algorithm : {"auto", "direct", "im2col", "winograd"}, default "auto"
        ``"direct"``: loops over the output. ``"im2col"``: per-thread im2col bands
        and a BLAS GEMM. ``"winograd"``: Winograd F(4x4, 3x3) (tile transforms and
        one BLAS GEMM per transform position), for 3x3 kernels with stride 1 only
        (any padding, dilation and groups; other shapes raise ValueError).
        ``"auto"`` chooses by shape (see the README's Algorithms section), or by
        timing with :func:`fastconv.set_autotune`. All agree within rounding
        (Winograd's float32 error is larger, about 1e-5 of max |y|).
    flip : bool, default False
        True computes true convolution (kernel rotated 180 degrees).

    Returns
    -------
    y : ndarray, shape (N, K, OH, OW)
        float64 if x or w is float64 or integer, else float32. OH is
        floor((H + pad_top + pad_bottom - dilation * (KH - 1) - 1) / stride) + 1.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> fastconv.conv2d(x, np.ones((1, 1, 2, 2)))[0, 0]
    array([[ 8., 12.],
           [20., 24.]])

    Padding by a word, a stride, and true convolution:

    >>> fastconv.conv2d(x, np.ones((1, 1, 2, 2)), padding="same", stride=2).shape
    (1, 1, 2, 2)
    >>> fastconv.conv2d(x, np.array([[[[1.0, 0.0]]]]), flip=True)[0, 0]
    array([[1., 2.],
           [4., 5.],
           [7., 8.]])

    Winograd, for 3x3 kernels with stride 1:

    >>> x = np.ones((1, 2, 5, 5), dtype=np.float32)
    >>> y = fastconv.conv2d(x, np.ones((1, 2, 3, 3), dtype=np.float32), padding=1,
    ...                     algorithm="winograd")
    >>> np.round(y[0, 0], 4)
    array([[ 8., 12., 12., 12.,  8.],
           [12., 18., 18., 18., 12.],
           [12., 18., 18., 18., 12.],
           [12., 18., 18., 18., 12.],
           [ 8., 12., 12., 12.,  8.]], dtype=float32)

    Notes
    -----
    With ``algorithm="winograd"`` the transformed weights are cached (a few
    entries, least recently used dropped) and reused while the weights are
    unchanged; every call compares the weights with the cached copy, so weights
    changed in place are never served stale. Non-finite inputs spread within a
    4 x 4 output tile: an infinity can give NaN where the other algorithms give
    an infinity.
    """
    dtype, x, w, _ = _as_operands(x, w)
    geom = _ConvGeometry(x.shape, w.shape, stride, padding, dilation, groups)
    if b is not None:
        b = _as_bias(b, geom.k, dtype)
    algorithm = _choose_algorithm(algorithm, geom)
    w = _prepare_weights(w, flip)
    if geom.empty:
        y = np.zeros(geom.y_shape, dtype=dtype)
        if b is not None:
            y += b[None, :, None, None]
        return y
    y = np.empty(geom.y_shape, dtype=dtype)
    _forward(x, w, b, y, geom, algorithm, _config.effective_n_threads())
    return y


def conv2d_backward(gy: ArrayLike, x: ArrayLike, w: ArrayLike, stride: IntPair = 1,
                    padding: Padding = 0, dilation: IntPair = 1, groups: int = 1, *,
                    flip: bool = False, needs_input_grad: bool = True,
                    algorithm: str = "auto") -> tuple[FloatArray | None, FloatArray, FloatArray]:
    """Gradients of conv2d with respect to x, w and b.

    Parameters
    ----------
    gy : array_like, shape (N, K, OH, OW)
        Gradient of the loss with respect to conv2d's output.
    x : array_like, shape (N, C, H, W)
    w : array_like, shape (K, C / groups, KH, KW)
    stride, padding, dilation, groups, flip
        As given to :func:`conv2d` (same defaults).
    needs_input_grad : bool, default True
        False skips the input gradient (a network's first layer needs none).
    algorithm : {"auto", "direct", "im2col", "winograd"}, default "auto"
        As in :func:`conv2d`; see Notes for ``"winograd"``.

    Returns
    -------
    gx : ndarray, shape (N, C, H, W), or None when ``needs_input_grad`` is False
        Full correlation of gy (dilated by stride) with the rotated kernel.
    gw : ndarray, shape (K, C / groups, KH, KW)
        Correlation of x with gy, summed over the batch.
    gb : ndarray, shape (K,)
        gy summed over N, OH, OW (returned even if the layer has no bias).

    Notes
    -----
    Results are bit-identical for any thread count: batch sums are split into
    chunks chosen from the shape alone and reduced in a fixed order.

    With ``algorithm="winograd"`` (3x3 kernels, stride 1, dilation d), the input
    gradient is itself a 3x3 stride-1 convolution, of gy with the kernel rotated
    180 degrees and its input and output channels swapped (per group), padded by
    (2d - top, 2d - bottom, 2d - left, 2d - right); it runs as a Winograd convolution
    when no padding exceeds 2d, else by im2col. The weight gradient always uses
    im2col. ``"auto"`` picks per pass: the input and weight gradients may use
    different algorithms.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.ones((1, 1, 3, 3)); w = np.ones((1, 1, 2, 2))
    >>> gx, gw, gb = fastconv.conv2d_backward(np.ones((1, 1, 2, 2)), x, w)
    >>> gx[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    >>> gb
    array([4.])
    """
    dtype, x, w, (gy,) = _as_operands(x, w, [("gy", gy)])
    geom = _ConvGeometry(x.shape, w.shape, stride, padding, dilation, groups)
    check_ndim(gy, "gy", 4, "(N, K, OH, OW)")
    if gy.shape != geom.y_shape:
        raise ValueError(
            f"gy must have the shape of conv2d's output {geom.y_shape}, got {gy.shape}"
        )
    algorithm = _choose_algorithm(algorithm, geom)
    w_eff = _prepare_weights(w, flip)
    n_threads = _config.effective_n_threads()
    gx = np.empty(x.shape, dtype=dtype) if needs_input_grad else None
    gw = np.zeros(w.shape, dtype=dtype)
    gb = np.zeros(geom.k, dtype=dtype)
    if gy.size:
        _conv_direct.conv2d_bias_grad(gy, gb, n_threads)
    if geom.empty:
        if gx is not None:
            gx.fill(0)
        return gx, gw, gb
    if gx is not None:
        _input_grad(gy, w_eff, gx, geom, algorithm, n_threads, zeroed=False)
    _weight_grad(gy, x, gw, geom, algorithm, n_threads)
    if flip:
        gw = np.ascontiguousarray(gw[:, :, ::-1, ::-1])
    return gx, gw, gb


# --- transposed convolution: the adjoint of conv2d, run on conv2d's kernels -------


class _TransposeGeometry:
    """Sizes of conv_transpose2d: x (N, C, H, W), w (C, K/G, KH, KW) -> y (N, K, OH, OW).

    ``conv`` is the geometry of the convolution whose adjoint this is: its input
    has y's shape and its output has x's shape.
    """

    def __init__(self, x_shape: Sequence[int], w_shape: Sequence[int], stride: IntPair,
                 padding: Padding, output_padding: IntPair, dilation: IntPair, groups: int,
                 output_size: Sequence[int] | None) -> None:
        n, c, h, w = x_shape
        c_w, kg, kh, kw = w_shape
        groups = as_index(groups, "groups", 1)
        stride = as_pair(stride, "stride")
        dilation = as_pair(dilation, "dilation")
        if kh < 1 or kw < 1:
            raise ValueError(f"w must have a kernel of at least 1x1, got shape {tuple(w_shape)}")
        if c_w != c:
            raise ValueError(
                f"w must have shape (C, K/groups, KH, KW) with C = {c} (x's channels), "
                f"got {tuple(w_shape)}"
            )
        if c % groups:
            raise ValueError(f"groups={groups} must divide the input channels of x ({c})")
        if isinstance(padding, str):
            raise ValueError(
                "padding of a transposed convolution must be an int, (h, w) or "
                f"((top, bottom), (left, right)), got {padding!r}"
            )
        pads = normalize_padding(padding, (h, w), (kh, kw), stride, dilation)
        default = tuple(
            (size - 1) * s - p0 - p1 + d * (k - 1) + 1
            for size, s, (p0, p1), d, k in zip((h, w), stride, pads, dilation, (kh, kw))
        )
        if output_size is not None:
            out_pad = _output_padding_for(output_size, default, stride, dilation)
        else:
            out_pad = as_pair(output_padding, "output_padding", minimum=0)
            for axis, (op, s, d) in enumerate(zip(out_pad, stride, dilation)):
                if op >= max(s, d):
                    raise ValueError(
                        f"output_padding {out_pad} must be smaller than stride {stride} or "
                        f"dilation {dilation} per axis: with stride s, s input sizes map to "
                        "one output size of the forward convolution, and output_padding "
                        "picks one of them"
                    )
        out_hw = tuple(size + op for size, op in zip(default, out_pad))
        if min(out_hw) < 1:
            raise ValueError(
                f"conv_transpose2d output size {out_hw} is not positive; padding {pads} "
                f"is too large for input {(h, w)} and kernel {(kh, kw)}"
            )
        self.y_shape = (n, kg * groups, *out_hw)
        self.conv = _ConvGeometry(self.y_shape, w_shape, stride, pads, dilation, groups,
                                  out_hw=(h, w))


def _output_padding_for(output_size: Sequence[int], default: Sequence[int],
                        stride: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """output_padding that gives ``output_size`` (its last two entries), checked."""
    if isinstance(output_size, (str, bytes)) or not hasattr(output_size, "__len__"):
        raise TypeError(f"output_size must be a sequence (OH, OW), got {output_size!r}")
    if len(output_size) not in (2, 4):
        raise ValueError(f"output_size must be (OH, OW) or (N, K, OH, OW), got {output_size!r}")
    wanted = tuple(as_index(v, "output_size", 1) for v in tuple(output_size)[-2:])
    pads = []
    for size, low, s, d in zip(wanted, default, stride, dilation):
        high = low + max(s, d) - 1
        if not low <= size <= high:
            raise ValueError(
                f"output_size {wanted} is out of range: with these stride, padding and "
                f"dilation each size must lie in [{low}, {high}] (got {size})"
            )
        pads.append(size - low)
    return tuple(pads)


def conv_transpose2d(x: ArrayLike, w: ArrayLike, b: ArrayLike | None = None,
                     stride: IntPair = 1, padding: Padding = 0, output_padding: IntPair = 0,
                     dilation: IntPair = 1, groups: int = 1, *,
                     output_size: Sequence[int] | None = None,
                     algorithm: str = "auto") -> FloatArray:
    """2-D transposed convolution (as torch.nn.functional.conv_transpose2d).

    The adjoint of :func:`conv2d`: it computes conv2d's input gradient (GEMM of
    the transposed weights, then col2im), never zero insertion.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    w : array_like, shape (C, K / groups, KH, KW)
        PyTorch's layout for transposed convolution.
    b : array_like, shape (K,), optional
        Bias added to every output pixel of channel k. Default: no bias.
    stride, dilation : int or (int, int), default 1
    padding : int, (int, int) or ((top, bottom), (left, right)), default 0
        Padding of the convolution this is the adjoint of (it shrinks the output).
        Words are refused.
    output_padding : int or (int, int), default 0
        Rows/columns added to the bottom/right of the output; each must be smaller
        than the stride or the dilation of its axis (several input sizes of a
        strided convolution give one output size: this picks one).
    groups : int, default 1
        C and K must be multiples of it.
    output_size : (OH, OW) or (N, K, OH, OW), optional
        Derives output_padding; must lie in the range the other arguments allow.
    algorithm : {"auto", "direct", "im2col"}, default "auto"
        As in :func:`conv2d`, without ``"winograd"`` (ValueError: transposed
        convolution runs conv2d's gradient kernels, which have no Winograd form).

    Returns
    -------
    y : ndarray, shape (N, K, OH, OW)
        OH = (H - 1) * stride - pad_top - pad_bottom + dilation * (KH - 1) + output_padding + 1.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.conv_transpose2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), stride=2)[0, 0]
    array([[1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.]])

    With a stride, several output sizes map back to the same input size; ``output_size``
    picks one:

    >>> fastconv.conv_transpose2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3)), stride=2,
    ...                           output_size=(6, 6)).shape
    (1, 1, 6, 6)
    """
    dtype, x, w, _ = _as_operands(x, w, w_layout="(C, K/groups, KH, KW)")
    geom = _TransposeGeometry(x.shape, w.shape, stride, padding, output_padding, dilation,
                              groups, output_size)
    if b is not None:
        b = _as_bias(b, geom.y_shape[1], dtype)
    _check_transpose_algorithm(algorithm)  # an error even when there is nothing to compute
    if geom.conv.empty:
        y = np.zeros(geom.y_shape, dtype=dtype)
        if b is not None:
            y += b[None, :, None, None]
        return y
    algorithm = _choose_algorithm(algorithm, geom.conv)
    # with a bias the kernels start from it: no zero fill, no second pass
    y = np.zeros(geom.y_shape, dtype=dtype) if b is None else np.empty(geom.y_shape, dtype=dtype)
    _input_grad(x, w, y, geom.conv, algorithm, _config.effective_n_threads(), b)
    return y


def conv_transpose2d_backward(gy: ArrayLike, x: ArrayLike, w: ArrayLike, stride: IntPair = 1,
                              padding: Padding = 0, output_padding: IntPair = 0,
                              dilation: IntPair = 1, groups: int = 1, *,
                              output_size: Sequence[int] | None = None,
                              needs_input_grad: bool = True, algorithm: str = "auto",
                              ) -> tuple[FloatArray | None, FloatArray, FloatArray]:
    """Gradients of conv_transpose2d with respect to x, w and b.

    Parameters
    ----------
    gy : array_like, shape (N, K, OH, OW)
        Gradient of the loss with respect to conv_transpose2d's output.
    x : array_like, shape (N, C, H, W)
    w : array_like, shape (C, K / groups, KH, KW)
    stride, padding, output_padding, dilation, groups, output_size
        As given to :func:`conv_transpose2d` (same defaults).
    needs_input_grad : bool, default True
        False skips the input gradient.
    algorithm : {"auto", "direct", "im2col"}, default "auto"
        As in :func:`conv2d`, without ``"winograd"`` (ValueError: transposed
        convolution runs conv2d's gradient kernels, which have no Winograd form).

    Returns
    -------
    gx : ndarray, shape (N, C, H, W) or None
        conv2d of gy with w (the forward convolution).
    gw : ndarray, shape (C, K / groups, KH, KW)
        conv2d's weight gradient with the roles of x and gy exchanged.
    gb : ndarray, shape (K,)
        gy summed over N, OH, OW.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.ones((1, 1, 2, 2)); w = np.ones((1, 1, 2, 2))
    >>> gy = np.ones((1, 1, 4, 4))  # conv_transpose2d(x, w, stride=2) is (1, 1, 4, 4)
    >>> gx, gw, gb = fastconv.conv_transpose2d_backward(gy, x, w, stride=2)
    >>> gx[0, 0]
    array([[4., 4.],
           [4., 4.]])
    >>> gw.shape, gb
    ((1, 1, 2, 2), array([16.]))
    """
    dtype, x, w, (gy,) = _as_operands(x, w, [("gy", gy)], w_layout="(C, K/groups, KH, KW)")
    geom = _TransposeGeometry(x.shape, w.shape, stride, padding, output_padding, dilation,
                              groups, output_size)
    check_ndim(gy, "gy", 4, "(N, K, OH, OW)")
    if gy.shape != geom.y_shape:
        raise ValueError(
            f"gy must have the shape of conv_transpose2d's output {geom.y_shape}, got {gy.shape}"
        )
    _check_transpose_algorithm(algorithm)
    algorithm = _choose_algorithm(algorithm, geom.conv)
    n_threads = _config.effective_n_threads()
    # the forward convolution writes every element of gx: no zero fill unless it is skipped
    alloc = np.zeros if geom.conv.empty else np.empty
    gx = alloc(x.shape, dtype=dtype) if needs_input_grad else None
    gw = np.zeros(w.shape, dtype=dtype)
    gb = np.zeros(geom.y_shape[1], dtype=dtype)
    if gy.size:
        _conv_direct.conv2d_bias_grad(gy, gb, n_threads)
    if geom.conv.empty:
        return gx, gw, gb
    # both passes read gy's columns: pack them once where both run im2col
    columns = None if gx is None else _packed_columns(gy, geom.conv, algorithm, n_threads)
    if gx is not None:
        _forward(gy, w, None, gx, geom.conv, algorithm, n_threads, columns)
    _weight_grad(x, gy, gw, geom.conv, algorithm, n_threads, columns)
    return gx, gw, gb


# --- pooling ---------------------------------------------------------------------


def _as_input(x: ArrayLike, name: str = "x", ndim: int = 4,
              layout: str = "(N, C, H, W)") -> FloatArray:
    """One float operand as a C-contiguous float32/float64 array of ``ndim`` dims."""
    x = as_array(x, name)
    check_ndim(x, name, ndim, layout)
    return as_contiguous(x, result_dtype(x))


class _PoolGeometry:
    """Window sizes of one pooling call, with PyTorch's rules for output size."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    out_hw: tuple[int, ...]

    def __init__(self, in_hw: Sequence[int], kernel_size: IntPair, stride: IntPair | None,
                 padding: IntPair, dilation: IntPair, ceil_mode: bool) -> None:
        self.kernel = as_pair(kernel_size, "kernel_size")
        self.stride = self.kernel if stride is None else as_pair(stride, "stride")
        self.padding = as_pair(padding, "padding", minimum=0)
        self.dilation = as_pair(dilation, "dilation")
        self.ceil_mode = bool(ceil_mode)
        if min(in_hw) < 1:
            raise ValueError(f"x must have non-empty planes, got height x width {in_hw}")
        for k, p in zip(self.kernel, self.padding):
            if p > k // 2:  # PyTorch's limit, which also keeps it within half the dilated kernel
                raise ValueError(
                    f"padding {self.padding} must be at most half of kernel_size "
                    f"{self.kernel} per axis, i.e. at most {tuple(k2 // 2 for k2 in self.kernel)}"
                )
        self.out_hw = tuple(
            self._out_size(size, k, s, p, d)
            for size, k, s, p, d in zip(in_hw, self.kernel, self.stride, self.padding,
                                        self.dilation)
        )

    def _out_size(self, size: int, k: int, s: int, p: int, d: int) -> int:
        span = d * (k - 1) + 1
        room = size + 2 * p - span
        out = (room + (s - 1 if self.ceil_mode else 0)) // s + 1  # floor division, as PyTorch
        if self.ceil_mode and out > 0 and (out - 1) * s >= size + p:
            out -= 1  # the last window would start in the right padding: dropped
        if out < 1:
            raise ValueError(
                f"kernel_size {self.kernel} (dilation {self.dilation}) spans {span}, larger than "
                f"the padded input {size + 2 * p}: the output would be empty"
            )
        # With dilation a window can skip over every real pixel; refuse those sizes.
        # Only windows starting in the left padding, and the last one, can: a window
        # starting at 0 or later covers a pixel unless it starts past the input.
        def only_padding(start: int) -> bool:
            first_tap = -(start // d) if start < 0 else 0  # ceil(-start / d)
            return first_tap >= k or start + first_tap * d >= size

        left = min(out, -(-p // s))  # windows with start = i * s - p < 0
        if only_padding((out - 1) * s - p) or any(only_padding(i * s - p) for i in range(left)):
            raise ValueError(
                f"kernel_size {self.kernel}, dilation {self.dilation}, padding {self.padding} "
                "give a window that covers only padding"
            )
        return out


_GEOMETRY_CACHE: dict[tuple[Any, ...], _PoolGeometry] = {}


def _is_plain(value: Any) -> bool:
    """An exact int, None, or a tuple of exact ints: safe as a cache key (a bool or a
    NumPy integer hashes like the int it equals but is validated differently)."""
    return (value is None or type(value) is int
            or (type(value) is tuple and all(type(v) is int for v in value)))


def _pool_geometry(in_hw: Sequence[int], kernel_size: IntPair, stride: IntPair | None,
                   padding: IntPair, dilation: IntPair, ceil_mode: bool) -> _PoolGeometry:
    """_PoolGeometry, remembered for plain arguments: a layer validates the same
    sizes every step, and the checks cost as much as pooling a small batch."""
    args = (tuple(in_hw), kernel_size, stride, padding, dilation, ceil_mode)
    if not (all(_is_plain(a) for a in args[:5]) and type(ceil_mode) is bool):
        return _PoolGeometry(*args)
    geom = _GEOMETRY_CACHE.get(args)
    if geom is None:
        geom = _PoolGeometry(*args)  # raises for bad arguments: only valid ones are kept
        if len(_GEOMETRY_CACHE) >= 256:  # bounded: many distinct sizes just miss
            _GEOMETRY_CACHE.clear()
        _GEOMETRY_CACHE[args] = geom
    return geom


def _pool_output(x: FloatArray, geom: _PoolGeometry) -> tuple[int, int, int, int]:
    n, c = x.shape[:2]
    shape = (n, c, *geom.out_hw)
    check_size(shape, "the output")
    return shape


@overload
def max_pool2d(x: ArrayLike, kernel_size: IntPair, stride: IntPair | None = ...,
               padding: IntPair = ..., dilation: IntPair = ..., ceil_mode: bool = ...,
               return_indices: Literal[False] = ...) -> FloatArray: ...
@overload
def max_pool2d(x: ArrayLike, kernel_size: IntPair, stride: IntPair | None, padding: IntPair,
               dilation: IntPair, ceil_mode: bool,
               return_indices: Literal[True]) -> tuple[FloatArray, NDArray[np.int64]]: ...
@overload
def max_pool2d(x: ArrayLike, kernel_size: IntPair, stride: IntPair | None = ...,
               padding: IntPair = ..., dilation: IntPair = ..., ceil_mode: bool = ..., *,
               return_indices: Literal[True]) -> tuple[FloatArray, NDArray[np.int64]]: ...
@overload
def max_pool2d(x: ArrayLike, kernel_size: IntPair, stride: IntPair | None = ...,
               padding: IntPair = ..., dilation: IntPair = ..., ceil_mode: bool = ...,
               return_indices: bool = ...,
               ) -> FloatArray | tuple[FloatArray, NDArray[np.int64]]: ...
def max_pool2d(x: ArrayLike, kernel_size: IntPair, stride: IntPair | None = None,
               padding: IntPair = 0, dilation: IntPair = 1, ceil_mode: bool = False,
               return_indices: bool = False,
               ) -> FloatArray | tuple[FloatArray, NDArray[np.int64]]:
    """2-D max pooling (as torch.nn.functional.max_pool2d).

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default: kernel_size.
    padding : int or (int, int), default 0
        Implicit -inf padding on both sides, at most kernel_size // 2.
    dilation : int or (int, int), default 1
    ceil_mode : bool, default False
        Ceil instead of floor for the output size; a last window that would start in
        the right padding is dropped.
    return_indices : bool, default False
        Also return the argmax of every window.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)
    idx : ndarray of int64, shape (N, C, OH, OW), only with ``return_indices``
        Flat offset h * W + w of each window's maximum within its input plane; ties
        keep the first in scan order, NaN wins.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> y, idx = fastconv.max_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2, return_indices=True)
    >>> y[0, 0], idx[0, 0]
    (array([[ 5.,  7.],
           [13., 15.]]), array([[ 5,  7],
           [13, 15]]))
    """
    x = _as_input(x)
    geom = _pool_geometry(x.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    shape = _pool_output(x, geom)
    y = np.empty(shape, dtype=x.dtype)
    idx = np.empty(shape, dtype=np.int64) if return_indices else None  # None: values only
    if y.size:
        n_threads = _config.effective_n_threads()
        # per-thread argmax offsets within the window (int32)
        workspace = (None if idx is None
                     else _per_thread(n_threads, shape[3], np.intc, "the pooling workspace"))
        _pool.max_pool2d_forward(x, y, idx, workspace, *geom.kernel, *geom.stride,
                                 *geom.padding, *geom.dilation, n_threads)
    return y if idx is None else (y, idx)


def _as_indices(idx: ArrayLike, name: str, shape: tuple[int, ...],
                what: str) -> tuple[NDArray[Any], NDArray[np.int64]]:
    """(idx as given, idx as C-contiguous int64); the range is checked by the kernel."""
    idx = as_array(idx, name)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array (int64 flat offsets), got {idx.dtype}")
    if idx.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (the shape of {what}), got {idx.shape}")
    return idx, as_contiguous(idx, np.int64)


def _check_scatter(n_bad: int, idx: NDArray[Any], name: str, plane_size: int) -> None:
    """Raise for the indices a scatter kernel found outside [0, plane_size) (and skipped)."""
    if n_bad:
        raise ValueError(
            f"{name} holds offsets outside the plane: each must lie in [0, {plane_size}), "
            f"got values in [{idx.min()}, {idx.max()}]"
        )


def _as_shape(input_shape: Sequence[int], name: str, ndim: int = 4) -> tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__len__"):
        raise TypeError(f"{name} must be a sequence of {ndim} ints, got {input_shape!r}")
    if len(input_shape) != ndim:
        raise ValueError(f"{name} must have {ndim} entries, got {tuple(input_shape)}")
    return tuple(as_index(v, name, 0) for v in input_shape)


def max_pool2d_backward(gy: ArrayLike, idx: ArrayLike, input_shape: Sequence[int]) -> FloatArray:
    """Gradient of max_pool2d: each gy goes to the input position its window chose.

    Parameters
    ----------
    gy : array_like, shape (N, C, OH, OW)
    idx : array_like of int, shape (N, C, OH, OW)
        The indices max_pool2d returned; each must lie in [0, H * W).
    input_shape : (N, C, H, W)

    Returns
    -------
    gx : ndarray, shape ``input_shape``
        Zero except at the chosen positions (overlapping windows add up).

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[[[1.0, 3.0], [4.0, 2.0]]]])
    >>> y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    >>> idx
    array([[[[2]]]])
    >>> fastconv.max_pool2d_backward(np.ones_like(y), idx, x.shape)[0, 0]
    array([[0., 0.],
           [1., 0.]])
    """
    gy = _as_input(gy, "gy", layout="(N, C, OH, OW)")
    n, c, h, w = _as_shape(input_shape, "input_shape")
    if (n, c) != gy.shape[:2]:
        raise ValueError(f"input_shape {input_shape} must start with gy's (N, C) {gy.shape[:2]}")
    given, idx = _as_indices(idx, "idx", gy.shape, "gy")
    gx = np.empty((n, c, h, w), dtype=gy.dtype)  # zeroed by the kernel, plane by plane
    n_bad = _pool.max_pool2d_backward(gy, idx, gx, _config.effective_n_threads())
    _check_scatter(n_bad, given, "idx", h * w)
    return gx


def max_unpool2d(y: ArrayLike, idx: ArrayLike, kernel_size: IntPair,
                 stride: IntPair | None = None, padding: IntPair = 0,
                 output_size: Sequence[int] | None = None) -> FloatArray:
    """Partial inverse of max_pool2d: y's values at their recorded positions, zeros elsewhere.

    Parameters
    ----------
    y : array_like, shape (N, C, H, W)
        Pooled values.
    idx : array_like of int, shape (N, C, H, W)
        Indices from max_pool2d; each must lie in [0, OH * OW).
    kernel_size, stride, padding
        As given to max_pool2d (stride defaults to kernel_size, padding to 0).
    output_size : (OH, OW) or (N, C, OH, OW), optional
        Default (H - 1) * stride - 2 * padding + kernel_size; must lie strictly
        within one stride of it.

    Returns
    -------
    x : ndarray, shape (N, C, OH, OW)

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[[[1.0, 3.0], [4.0, 2.0]]]])
    >>> y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    >>> fastconv.max_unpool2d(y, idx, 2)[0, 0]
    array([[0., 0.],
           [4., 0.]])
    """
    y = _as_input(y, "y")
    kernel = as_pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else as_pair(stride, "stride")
    pad = as_pair(padding, "padding", minimum=0)
    default = tuple((s_in - 1) * s - 2 * p + k
                    for s_in, s, p, k in zip(y.shape[2:], stride, pad, kernel))
    if output_size is None:
        out_hw = default
    else:
        if isinstance(output_size, (str, bytes)) or not hasattr(output_size, "__len__") or len(
            output_size
        ) not in (2, 4):
            raise ValueError(f"output_size must be (OH, OW) or (N, C, OH, OW), got {output_size!r}")
        out_hw = tuple(as_index(v, "output_size", 1) for v in tuple(output_size)[-2:])
        for size, d, s in zip(out_hw, default, stride):
            if not d - s < size < d + s:
                raise ValueError(
                    f"output_size {out_hw} must lie strictly between {tuple(a - b for a, b in zip(default, stride))} "
                    f"and {tuple(a + b for a, b in zip(default, stride))}"
                )
    if min(out_hw) < 1:
        raise ValueError(f"max_unpool2d output size {out_hw} must be positive")
    shape = (*y.shape[:2], *out_hw)
    check_size(shape, "the output")
    given, idx = _as_indices(idx, "idx", y.shape, "y")
    out = np.empty(shape, dtype=y.dtype)  # zeroed by the kernel, plane by plane
    n_bad = _pool.max_unpool2d(y, idx, out, _config.effective_n_threads())
    _check_scatter(n_bad, given, "idx", out_hw[0] * out_hw[1])
    return out


def _avg_args(geom: _PoolGeometry, count_include_pad: bool,
              divisor_override: int | None) -> tuple[int, int, int, int, int, int, bool, int]:
    if divisor_override is not None:
        divisor_override = as_index(divisor_override, "divisor_override", 1)
    return (*geom.kernel, *geom.stride, *geom.padding, bool(count_include_pad),
            divisor_override or 0)


def avg_pool2d(x: ArrayLike, kernel_size: IntPair, stride: IntPair | None = None,
               padding: IntPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> FloatArray:
    """2-D average pooling (as torch.nn.functional.avg_pool2d).

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    kernel_size, stride, padding, ceil_mode
        As in :func:`max_pool2d` (stride defaults to kernel_size; zero padding, at
        most half the kernel, default 0; ceil_mode default False).
    count_include_pad : bool, default True
        Divide by the window size including padding (but never the ceil-mode overhang
        past the padding) instead of the number of real pixels.
    divisor_override : int, optional
        Divide every window by this instead.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.avg_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])

    With padding, ``count_include_pad`` decides what a border window divides by:

    >>> ones = np.ones((1, 1, 2, 2))
    >>> fastconv.avg_pool2d(ones, 2, stride=1, padding=1)[0, 0]
    array([[0.25, 0.5 , 0.25],
           [0.5 , 1.  , 0.5 ],
           [0.25, 0.5 , 0.25]])
    >>> fastconv.avg_pool2d(ones, 2, stride=1, padding=1, count_include_pad=False)[0, 0]
    array([[1., 1., 1.],
           [1., 1., 1.],
           [1., 1., 1.]])
    """
    x = _as_input(x)
    geom = _pool_geometry(x.shape[2:], kernel_size, stride, padding, 1, ceil_mode)
    args = _avg_args(geom, count_include_pad, divisor_override)
    y = np.empty(_pool_output(x, geom), dtype=x.dtype)
    if y.size:
        n_threads = _config.effective_n_threads()
        # per-thread row of double sums
        workspace = _per_thread(n_threads, y.shape[3], np.float64, "the pooling workspace")
        _pool.avg_pool2d_forward(x, y, workspace, *args, n_threads)
    return y


def avg_pool2d_backward(gy: ArrayLike, input_shape: Sequence[int], kernel_size: IntPair,
                        stride: IntPair | None = None, padding: IntPair = 0,
                        ceil_mode: bool = False, count_include_pad: bool = True,
                        divisor_override: int | None = None) -> FloatArray:
    """Gradient of avg_pool2d: each gy divided by its window's divisor, spread over the window.

    Parameters
    ----------
    gy : array_like, shape (N, C, OH, OW)
    input_shape : (N, C, H, W)
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As given to :func:`avg_pool2d` (same defaults).

    Returns
    -------
    gx : ndarray, shape ``input_shape``

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.avg_pool2d_backward(np.array([[[[4.0, 8.0]]]]), (1, 1, 2, 4), 2)[0, 0]
    array([[1., 1., 2., 2.],
           [1., 1., 2., 2.]])
    """
    gy = _as_input(gy, "gy", layout="(N, C, OH, OW)")
    shape = _as_shape(input_shape, "input_shape")
    geom = _pool_geometry(shape[2:], kernel_size, stride, padding, 1, ceil_mode)
    _check_pool_grad(gy, shape, geom)
    args = _avg_args(geom, count_include_pad, divisor_override)
    gx = np.empty(shape, dtype=gy.dtype)  # zeroed by the kernel, plane by plane
    n_threads = _config.effective_n_threads()
    workspace = _per_thread(n_threads, max(gy.shape[3], 1), gy.dtype,  # per-thread shares
                            "the pooling workspace")
    _pool.avg_pool2d_backward(gy, gx, workspace, *args, n_threads)
    return gx


def _check_pool_grad(gy: FloatArray, input_shape: Sequence[int], geom: _PoolGeometry) -> None:
    expected = (*input_shape[:2], *geom.out_hw)
    if gy.shape != expected:
        raise ValueError(f"gy must have the shape of the pooling output {expected}, got {gy.shape}")


def _lp_norm(p: float) -> float:
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"p must be a real number, got {type(p).__name__} {p!r}")
    try:
        p = float(p)
    except OverflowError:  # an int beyond the float range
        raise ValueError(f"p must be a finite number > 0, got {p}") from None
    if not (p > 0 and np.isfinite(p)):
        raise ValueError(f"p must be a finite number > 0, got {p}")
    return p


def lp_pool2d(x: ArrayLike, p: float, kernel_size: IntPair, stride: IntPair | None = None,
              ceil_mode: bool = False) -> FloatArray:
    """2-D power-average (p-norm) pooling: (sum over the window of |x|^p)^(1/p).

    Matches torch.nn.functional.lp_pool2d wherever that is a p-norm (even p, or
    inputs >= 0), including its ceil-mode rule: a window that overhangs the input
    is scaled by window size / pixels inside. For odd p with negative inputs this
    uses |x|^p (the p-norm) where PyTorch uses x^p.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    p : float > 0
        The norm: 1 sums |x| over the window, 2 is the Euclidean norm.
    kernel_size, stride, ceil_mode
        As in :func:`avg_pool2d` (stride defaults to kernel_size, ceil_mode to
        False; no padding).

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[[[3.0, 4.0], [0.0, 0.0]]]])
    >>> fastconv.lp_pool2d(x, 2, 2)
    array([[[[5.]]]])
    >>> fastconv.lp_pool2d(x, 1, 2)
    array([[[[7.]]]])
    """
    x = _as_input(x)
    p = _lp_norm(p)
    geom = _pool_geometry(x.shape[2:], kernel_size, stride, 0, 1, ceil_mode)
    y = np.empty(_pool_output(x, geom), dtype=x.dtype)
    if y.size:
        _pool.lp_pool2d_forward(x, y, p, *geom.kernel, *geom.stride,
                                _config.effective_n_threads())
    return y


def lp_pool2d_backward(gy: ArrayLike, x: ArrayLike, y: ArrayLike, p: float, kernel_size: IntPair,
                       stride: IntPair | None = None, ceil_mode: bool = False) -> FloatArray:
    """Gradient of lp_pool2d: gy * y^(1-p) * |x|^(p-1) * sign(x) (times the overhang scale).

    Windows whose output is 0 get a zero gradient (a subgradient).

    Parameters
    ----------
    gy : array_like, shape (N, C, OH, OW)
    x : array_like, shape (N, C, H, W)
        lp_pool2d's input.
    y : array_like, shape (N, C, OH, OW)
        lp_pool2d's output.
    p, kernel_size, stride, ceil_mode
        As given to :func:`lp_pool2d` (same defaults).

    Returns
    -------
    gx : ndarray, shape (N, C, H, W)

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.array([[[[3.0, 4.0], [0.0, 0.0]]]])
    >>> y = fastconv.lp_pool2d(x, 2, 2)
    >>> fastconv.lp_pool2d_backward(np.ones_like(y), x, y, 2, 2)[0, 0]  # x / ||x||
    array([[0.6, 0.8],
           [0. , 0. ]])
    """
    gy = as_array(gy, "gy")
    x = as_array(x, "x")
    y = as_array(y, "y")
    dtype = result_dtype(gy, x, y)
    check_ndim(x, "x", 4, "(N, C, H, W)")
    p = _lp_norm(p)
    geom = _pool_geometry(x.shape[2:], kernel_size, stride, 0, 1, ceil_mode)
    check_ndim(gy, "gy", 4, "(N, C, OH, OW)")
    _check_pool_grad(gy, x.shape, geom)
    if y.shape != gy.shape:
        raise ValueError(f"y must have the shape of gy {gy.shape}, got {y.shape}")
    gy, x, y = (as_contiguous(a, dtype) for a in (gy, x, y))
    gx = np.zeros(x.shape, dtype=dtype)
    if gy.size:
        _pool.lp_pool2d_backward(gy, x, y, gx, p, *geom.kernel, *geom.stride,
                                 _config.effective_n_threads())
    return gx


def _adaptive_size(output_size: int | tuple[int | None, int | None],
                   in_hw: Sequence[int]) -> tuple[int, ...]:
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"output_size must be an int or (OH, OW), got {output_size!r}")
        sizes = [in_hw[i] if v is None else as_index(v, "output_size", 1)
                 for i, v in enumerate(output_size)]
        return tuple(sizes)
    size = as_index(output_size, "output_size", 1)
    return (size, size)


def adaptive_avg_pool2d(x: ArrayLike,
                        output_size: int | tuple[int | None, int | None]) -> FloatArray:
    """Average pooling to a fixed output size (as torch.nn.functional.adaptive_avg_pool2d).

    Window i along an axis of size H covers [floor(i * H / OH), ceil((i + 1) * H / OH)).

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    output_size : int or (int or None, int or None)
        (OH, OW); an int is used for both; None keeps that axis's input size.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(6.0).reshape(1, 1, 2, 3)
    >>> fastconv.adaptive_avg_pool2d(x, (1, 2))  # windows: columns [0, 2) and [1, 3)
    array([[[[2., 3.]]]])
    >>> fastconv.adaptive_avg_pool2d(x, (None, 1))[0, 0]
    array([[1.],
           [4.]])
    """
    x = _as_input(x)
    if min(x.shape[2:]) < 1:
        raise ValueError(f"x must have non-empty planes, got shape {x.shape}")
    out_hw = _adaptive_size(output_size, x.shape[2:])
    shape = (*x.shape[:2], *out_hw)
    check_size(shape, "the output")
    y = np.empty(shape, dtype=x.dtype)
    if y.size:
        _pool.adaptive_avg_pool2d_forward(x, y, _config.effective_n_threads())
    return y


def adaptive_avg_pool2d_backward(gy: ArrayLike, input_shape: Sequence[int]) -> FloatArray:
    """Gradient of adaptive_avg_pool2d (gy's spatial size is the output size).

    Parameters
    ----------
    gy : array_like, shape (N, C, OH, OW)
    input_shape : (N, C, H, W)

    Returns
    -------
    gx : ndarray, shape ``input_shape``
        Each gy divided by its window's size, added over the window (windows
        may overlap).

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.adaptive_avg_pool2d_backward(np.array([[[[2.0, 4.0]]]]), (1, 1, 1, 3))
    array([[[[1., 3., 2.]]]])
    """
    gy = _as_input(gy, "gy", layout="(N, C, OH, OW)")
    shape = _as_shape(input_shape, "input_shape")
    if shape[:2] != gy.shape[:2] or min(shape[2:]) < 1 or min(gy.shape[2:]) < 1:
        raise ValueError(
            f"input_shape {shape} must start with gy's (N, C) {gy.shape[:2]} and both must "
            "have non-empty planes"
        )
    gx = np.zeros(shape, dtype=gy.dtype)
    if gy.size:
        _pool.adaptive_avg_pool2d_backward(gy, gx, _config.effective_n_threads())
    return gx


def global_avg_pool2d(x: ArrayLike) -> FloatArray:
    """Mean over each plane: (N, C, H, W) -> (N, C, 1, 1).

    Same as ``adaptive_avg_pool2d(x, 1)``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
        Non-empty planes.

    Returns
    -------
    y : ndarray, shape (N, C, 1, 1)

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.global_avg_pool2d(np.arange(8.0).reshape(1, 2, 2, 2))
    array([[[[1.5]],
    <BLANKLINE>
            [[5.5]]]])
    """
    return adaptive_avg_pool2d(x, 1)


def global_avg_pool2d_backward(gy: ArrayLike, input_shape: Sequence[int]) -> FloatArray:
    """Gradient of global_avg_pool2d: gy / (H * W) over each plane.

    Parameters
    ----------
    gy : array_like, shape (N, C, 1, 1)
    input_shape : (N, C, H, W)

    Returns
    -------
    gx : ndarray, shape ``input_shape``

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.global_avg_pool2d_backward(np.full((1, 1, 1, 1), 4.0), (1, 1, 2, 2))[0, 0]
    array([[1., 1.],
           [1., 1.]])
    """
    return adaptive_avg_pool2d_backward(gy, input_shape)


# --- 1-D operations: the 2-D ones on (N, C, 1, L) ----------------------------------


def _to_2d(x: ArrayLike, name: str) -> NDArray[Any]:
    x = as_array(x, name)
    check_ndim(x, name, 3, "(N, C, L)")
    return x[:, :, None, :]


def _pad_1d(padding: Padding1d) -> Padding:
    """1-D padding (int, (left, right) or a word) as 2-D padding with none on H."""
    if isinstance(padding, str):
        return padding
    if isinstance(padding, (tuple, list)):
        if len(padding) != 2:
            raise ValueError(f"padding must be an int, (left, right) or a word, got {padding!r}")
        return ((0, 0), (as_index(padding[0], "padding", 0), as_index(padding[1], "padding", 0)))
    p = as_index(padding, "padding", 0)
    return ((0, 0), (p, p))


def _int_1d(value: Int1d, name: str, minimum: int = 1, fill: int = 1) -> tuple[int, int]:
    """A 1-D int parameter (an int or a 1-tuple, as PyTorch takes) as its 2-D pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"{name} must be an int or a 1-tuple for a 1-D operation, got {value!r}")
        value = value[0]
    return (fill, as_index(value, name, minimum))


def conv1d(x: ArrayLike, w: ArrayLike, b: ArrayLike | None = None, stride: Int1d = 1,
           padding: Padding1d = 0, dilation: Int1d = 1, groups: int = 1, *,
           algorithm: str = "auto", flip: bool = False) -> FloatArray:
    """1-D convolution: x (N, C, L), w (K, C/groups, KL) -> (N, K, OL). See :func:`conv2d`.

    Runs :func:`conv2d` on the arrays viewed as (N, C, 1, L).

    Parameters
    ----------
    x : array_like, shape (N, C, L)
    w : array_like, shape (K, C / groups, KL)
    b : array_like, shape (K,), optional
    stride, dilation : int or (int,), default 1
    padding : int, (left, right), or "valid" / "same" / "full", default 0
    groups, algorithm, flip
        As in :func:`conv2d` (defaults 1, "auto", False); ``"winograd"`` needs a
        3x3 kernel, so 1-D calls refuse it with ValueError.

    Returns
    -------
    y : ndarray, shape (N, K, OL)
        OL = floor((L + pad_left + pad_right - dilation * (KL - 1) - 1) / stride) + 1.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.conv1d(np.arange(5.0).reshape(1, 1, 5), np.ones((1, 1, 2)))
    array([[[1., 3., 5., 7.]]])
    >>> fastconv.conv1d(np.ones((2, 3, 10)), np.ones((4, 3, 3)), padding="same").shape
    (2, 4, 10)
    """
    y = conv2d(_to_2d(x, "x"), _to_2d(w, "w"), b, _int_1d(stride, "stride"), _pad_1d(padding),
               _int_1d(dilation, "dilation"), groups, algorithm=algorithm, flip=flip)
    return y[:, :, 0, :]


def conv1d_backward(gy: ArrayLike, x: ArrayLike, w: ArrayLike, stride: Int1d = 1,
                    padding: Padding1d = 0, dilation: Int1d = 1, groups: int = 1, *,
                    flip: bool = False, needs_input_grad: bool = True,
                    algorithm: str = "auto") -> tuple[FloatArray | None, FloatArray, FloatArray]:
    """Gradients (gx, gw, gb) of :func:`conv1d`; shapes as x, w and (K,).

    Parameters
    ----------
    gy : array_like, shape (N, K, OL)
        Gradient of the loss with respect to conv1d's output.
    x : array_like, shape (N, C, L)
    w : array_like, shape (K, C / groups, KL)
    stride, padding, dilation, groups, flip, needs_input_grad, algorithm
        As in :func:`conv1d` and :func:`conv2d_backward` (same defaults).

    Returns
    -------
    gx : ndarray, shape (N, C, L), or None when ``needs_input_grad`` is False
    gw : ndarray, shape (K, C / groups, KL)
    gb : ndarray, shape (K,)

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> gx, gw, gb = fastconv.conv1d_backward(np.ones((1, 1, 4)), np.arange(5.0).reshape(1, 1, 5),
    ...                                       np.ones((1, 1, 2)))
    >>> gx, gw, gb
    (array([[[1., 2., 2., 2., 1.]]]), array([[[ 6., 10.]]]), array([4.]))
    """
    gx, gw, gb = conv2d_backward(
        _to_2d(gy, "gy"), _to_2d(x, "x"), _to_2d(w, "w"), _int_1d(stride, "stride"),
        _pad_1d(padding), _int_1d(dilation, "dilation"), groups, flip=flip,
        needs_input_grad=needs_input_grad, algorithm=algorithm,
    )
    return (None if gx is None else gx[:, :, 0, :]), gw[:, :, 0, :], gb


def _out_size_1d(output_size: int | tuple[int, ...] | list[int] | None,
                 ) -> tuple[int, int] | None:
    """1-D output_size (L, (L,) or (N, K, L)) as the 2-D (1, L)."""
    if output_size is None:
        return None
    if isinstance(output_size, (tuple, list)):
        if not output_size:
            raise ValueError("output_size must be L, (L,) or (N, K, L), got ()")
        output_size = output_size[-1]
    return (1, output_size)


def conv_transpose1d(x: ArrayLike, w: ArrayLike, b: ArrayLike | None = None, stride: Int1d = 1,
                     padding: int | tuple[int, int] = 0, output_padding: Int1d = 0,
                     dilation: Int1d = 1, groups: int = 1, *,
                     output_size: int | tuple[int, ...] | list[int] | None = None,
                     algorithm: str = "auto") -> FloatArray:
    """1-D transposed convolution: x (N, C, L), w (C, K/groups, KL). See :func:`conv_transpose2d`.

    Parameters
    ----------
    x : array_like, shape (N, C, L)
    w : array_like, shape (C, K / groups, KL)
    b : array_like, shape (K,), optional
    stride, dilation : int or (int,), default 1
    padding : int or (left, right), default 0
    output_padding : int or (int,), default 0
    groups, algorithm
        As in :func:`conv_transpose2d` (defaults 1, "auto").
    output_size : int, (OL,) or (N, K, OL), optional
        Derives output_padding.

    Returns
    -------
    y : ndarray, shape (N, K, OL)
        OL = (L - 1) * stride - pad_left - pad_right + dilation * (KL - 1) + output_padding + 1.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.conv_transpose1d(np.array([[[1.0, 2.0]]]), np.ones((1, 1, 3)), stride=2)
    array([[[1., 1., 3., 2., 2.]]])
    """
    y = conv_transpose2d(
        _to_2d(x, "x"), _to_2d(w, "w"), b, _int_1d(stride, "stride"), _pad_1d(padding),
        _int_1d(output_padding, "output_padding", 0, fill=0), _int_1d(dilation, "dilation"), groups,
        output_size=_out_size_1d(output_size), algorithm=algorithm,
    )
    return y[:, :, 0, :]


def conv_transpose1d_backward(gy: ArrayLike, x: ArrayLike, w: ArrayLike, stride: Int1d = 1,
                              padding: int | tuple[int, int] = 0, output_padding: Int1d = 0,
                              dilation: Int1d = 1, groups: int = 1, *,
                              output_size: int | tuple[int, ...] | list[int] | None = None,
                              needs_input_grad: bool = True, algorithm: str = "auto",
                              ) -> tuple[FloatArray | None, FloatArray, FloatArray]:
    """Gradients (gx, gw, gb) of :func:`conv_transpose1d`.

    Parameters
    ----------
    gy : array_like, shape (N, K, OL)
        Gradient of the loss with respect to conv_transpose1d's output.
    x : array_like, shape (N, C, L)
    w : array_like, shape (C, K / groups, KL)
    stride, padding, output_padding, dilation, groups, output_size, needs_input_grad, algorithm
        As in :func:`conv_transpose1d` and :func:`conv_transpose2d_backward`
        (same defaults).

    Returns
    -------
    gx : ndarray, shape (N, C, L), or None when ``needs_input_grad`` is False
    gw : ndarray, shape (C, K / groups, KL)
    gb : ndarray, shape (K,)

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> gx, gw, gb = fastconv.conv_transpose1d_backward(
    ...     np.ones((1, 1, 5)), np.array([[[1.0, 2.0]]]), np.ones((1, 1, 3)), stride=2)
    >>> gx, gw, gb
    (array([[[3., 3.]]]), array([[[3., 3., 3.]]]), array([5.]))
    """
    gx, gw, gb = conv_transpose2d_backward(
        _to_2d(gy, "gy"), _to_2d(x, "x"), _to_2d(w, "w"), _int_1d(stride, "stride"),
        _pad_1d(padding), _int_1d(output_padding, "output_padding", 0, fill=0),
        _int_1d(dilation, "dilation"), groups, output_size=_out_size_1d(output_size),
        needs_input_grad=needs_input_grad, algorithm=algorithm,
    )
    return (None if gx is None else gx[:, :, 0, :]), gw[:, :, 0, :], gb


@overload
def max_pool1d(x: ArrayLike, kernel_size: Int1d, stride: Int1d | None = ..., padding: Int1d = ...,
               dilation: Int1d = ..., ceil_mode: bool = ...,
               return_indices: Literal[False] = ...) -> FloatArray: ...
@overload
def max_pool1d(x: ArrayLike, kernel_size: Int1d, stride: Int1d | None, padding: Int1d,
               dilation: Int1d, ceil_mode: bool,
               return_indices: Literal[True]) -> tuple[FloatArray, NDArray[np.int64]]: ...
@overload
def max_pool1d(x: ArrayLike, kernel_size: Int1d, stride: Int1d | None = ..., padding: Int1d = ...,
               dilation: Int1d = ..., ceil_mode: bool = ..., *,
               return_indices: Literal[True]) -> tuple[FloatArray, NDArray[np.int64]]: ...
@overload
def max_pool1d(x: ArrayLike, kernel_size: Int1d, stride: Int1d | None = ..., padding: Int1d = ...,
               dilation: Int1d = ..., ceil_mode: bool = ..., return_indices: bool = ...,
               ) -> FloatArray | tuple[FloatArray, NDArray[np.int64]]: ...
def max_pool1d(x: ArrayLike, kernel_size: Int1d, stride: Int1d | None = None, padding: Int1d = 0,
               dilation: Int1d = 1, ceil_mode: bool = False, return_indices: bool = False,
               ) -> FloatArray | tuple[FloatArray, NDArray[np.int64]]:
    """1-D max pooling on (N, C, L); indices are positions in L. See :func:`max_pool2d`.

    Parameters
    ----------
    x : array_like, shape (N, C, L)
    kernel_size : int or (int,)
    stride : int or (int,), optional
        Default: kernel_size.
    padding, dilation, ceil_mode, return_indices
        As in :func:`max_pool2d`, one value for L (defaults 0, 1, False, False).

    Returns
    -------
    y : ndarray, shape (N, C, OL)
    idx : ndarray of int64, shape (N, C, OL), only with ``return_indices``
        Position in L of each window's maximum.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.max_pool1d(np.array([[[1.0, 5.0, 2.0, 0.0, 3.0]]]), 2, return_indices=True)
    (array([[[5., 2.]]]), array([[[1, 2]]]))
    """
    out: Any = max_pool2d(
        _to_2d(x, "x"), _int_1d(kernel_size, "kernel_size"),
        None if stride is None else _int_1d(stride, "stride"), _int_1d(padding, "padding", 0, fill=0),
        _int_1d(dilation, "dilation"), ceil_mode, return_indices,
    )
    if return_indices:
        return out[0][:, :, 0, :], out[1][:, :, 0, :]
    return out[:, :, 0, :]


def max_pool1d_backward(gy: ArrayLike, idx: ArrayLike, input_shape: Sequence[int]) -> FloatArray:
    """Gradient of :func:`max_pool1d`; ``input_shape`` is (N, C, L).

    Parameters
    ----------
    gy : array_like, shape (N, C, OL)
    idx : array_like of int, shape (N, C, OL)
        The indices max_pool1d returned; each must lie in [0, L).
    input_shape : (N, C, L)

    Returns
    -------
    gx : ndarray, shape ``input_shape``

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.max_pool1d_backward(np.array([[[1.0, 1.0]]]), np.array([[[1, 2]]]), (1, 1, 5))
    array([[[0., 1., 1., 0., 0.]]])
    """
    n, c, length = _as_shape(input_shape, "input_shape", ndim=3)
    gx = max_pool2d_backward(_to_2d(gy, "gy"), _to_2d(idx, "idx"), (n, c, 1, length))
    return gx[:, :, 0, :]


def avg_pool1d(x: ArrayLike, kernel_size: Int1d, stride: Int1d | None = None,
               padding: Int1d = 0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> FloatArray:
    """1-D average pooling on (N, C, L). See :func:`avg_pool2d`.

    Parameters
    ----------
    x : array_like, shape (N, C, L)
    kernel_size : int or (int,)
    stride : int or (int,), optional
        Default: kernel_size.
    padding, ceil_mode, count_include_pad
        As in :func:`avg_pool2d`, one value for L (defaults 0, False, True).

    Returns
    -------
    y : ndarray, shape (N, C, OL)

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.avg_pool1d(np.arange(6.0).reshape(1, 1, 6), 2)
    array([[[0.5, 2.5, 4.5]]])
    """
    y = avg_pool2d(
        _to_2d(x, "x"), _int_1d(kernel_size, "kernel_size"),
        None if stride is None else _int_1d(stride, "stride"), _int_1d(padding, "padding", 0, fill=0),
        ceil_mode, count_include_pad,
    )
    return y[:, :, 0, :]


def avg_pool1d_backward(gy: ArrayLike, input_shape: Sequence[int], kernel_size: Int1d,
                        stride: Int1d | None = None, padding: Int1d = 0, ceil_mode: bool = False,
                        count_include_pad: bool = True) -> FloatArray:
    """Gradient of :func:`avg_pool1d`; ``input_shape`` is (N, C, L).

    Parameters
    ----------
    gy : array_like, shape (N, C, OL)
    input_shape : (N, C, L)
    kernel_size, stride, padding, ceil_mode, count_include_pad
        As given to :func:`avg_pool1d` (same defaults).

    Returns
    -------
    gx : ndarray, shape ``input_shape``

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.avg_pool1d_backward(np.array([[[2.0, 4.0]]]), (1, 1, 4), 2)
    array([[[1., 1., 2., 2.]]])
    """
    n, c, length = _as_shape(input_shape, "input_shape", ndim=3)
    gx = avg_pool2d_backward(
        _to_2d(gy, "gy"), (n, c, 1, length), _int_1d(kernel_size, "kernel_size"),
        None if stride is None else _int_1d(stride, "stride"), _int_1d(padding, "padding", 0, fill=0),
        ceil_mode, count_include_pad,
    )
    return gx[:, :, 0, :]
