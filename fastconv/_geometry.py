"""Validated sizes of one convolution or pooling call, and per-thread scratch.

A geometry is made once per call from the arguments the public operation received
(after :mod:`fastconv._validation` normalised them) and holds only sizes: what the
output shape is, how the kernel sits over the input. Which kernel runs and how the
work is blocked is decided from it by :mod:`fastconv._plan`.

Dimension legend: N images, C input channels, H, W input size, K output channels,
G groups, CG = C / G, KG = K / G, KH, KW kernel size, OH, OW output size,
CKK = CG * KH * KW (the GEMM depth of im2col).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from numpy.typing import DTypeLike, NDArray

from fastconv._typing import IntPair, Padding
from fastconv._validation import (
    as_index,
    as_pair,
    check_size,
    normalize_padding,
    output_hw,
    spatial_size,
)

# BLAS takes 32-bit sizes.
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class ConvGeometry:
    """Sizes of one convolution: x (N, C, H, W), w (K, C/G, KH, KW) -> y (N, K, OH, OW).

    Immutable and hashable: plans are cached by geometry. Make one with
    :func:`conv_geometry` (which validates); transposed convolution makes the
    geometry of the convolution it is the adjoint of.
    """

    n: int
    c: int
    h: int
    w: int
    k: int
    cg: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    groups: int
    oh: int
    ow: int
    kg: int = field(init=False)
    ckk: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kg", self.k // self.groups)
        object.__setattr__(self, "ckk", self.cg * self.kh * self.kw)

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        return (self.k, self.cg, self.kh, self.kw)

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.k, self.oh, self.ow)

    @property
    def kernel_args(self) -> tuple[int, int, int, int, int, int, int]:
        """(sh, sw, pt, pl, dh, dw, groups) as the kernels take them."""
        (pt, _), (pl, _) = self.padding
        return (*self.stride, pt, pl, *self.dilation, self.groups)

    @property
    def empty(self) -> bool:
        """True when there is nothing to compute (an empty batch, channels or output)."""
        return 0 in (self.n, self.c, self.k, self.oh, self.ow)

    @property
    def taps(self) -> int:
        return self.kh * self.kw

    @property
    def stride_one(self) -> bool:
        return self.stride == (1, 1)

    @property
    def pointwise(self) -> bool:
        """True when each image is its own column matrix: a 1x1 kernel, stride 1, no
        padding, and an output of the input's size (a transposed convolution's output
        can be larger)."""
        (pt, pb), (pl, pr) = self.padding
        return ((self.kh, self.kw, *self.stride, pt, pb, pl, pr) == (1, 1, 1, 1, 0, 0, 0, 0)
                and (self.oh, self.ow) == (self.h, self.w))

    @property
    def winograd_shape(self) -> bool:
        """True for the shapes the Winograd kernels handle: 3x3, stride 1 (a dilated
        kernel runs as one undilated convolution per phase)."""
        return (self.kh, self.kw, *self.stride) == (3, 3, 1, 1) and self.gemm_fits

    @property
    def gemm_fits(self) -> bool:
        """True when every GEMM size and leading dimension fits BLAS's 32-bit ints."""
        return max(self.oh * self.ow, self.h * self.w, self.ckk, self.k) <= INT32_MAX

    def describe(self) -> str:
        """One line: shapes and parameters, as plans print them."""
        (pt, pb), (pl, pr) = self.padding
        return (f"x {self.x_shape} w {self.w_shape} -> y {self.y_shape}, stride {self.stride}, "
                f"padding ((top, bottom), (left, right)) {((pt, pb), (pl, pr))}, "
                f"dilation {self.dilation}, groups {self.groups}")


def conv_geometry(x_shape: Sequence[int], w_shape: Sequence[int], stride: IntPair,
                  padding: Padding, dilation: IntPair, groups: int,
                  out_hw: tuple[int, int] | None = None) -> ConvGeometry:
    """Validate a convolution's arguments against x's and w's shapes.

    ``out_hw`` fixes the output size instead of deriving it: transposed convolution
    runs these kernels with the roles of input and output exchanged, and its sizes
    are checked by its own validation first. Remembered for plain arguments, as
    :func:`pool_geometry` is: the checks cost a third of a small layer's call.
    """
    args = (tuple(x_shape), tuple(w_shape), stride, padding, dilation, groups, out_hw)
    if not all(is_plain(a) for a in args):
        return _conv_geometry(*args)
    return _remembered(_CONV_GEOMETRIES, args, _conv_geometry)


def _conv_geometry(x_shape: Sequence[int], w_shape: Sequence[int], stride: IntPair,
                   padding: Padding, dilation: IntPair, groups: int,
                   out_hw: tuple[int, int] | None = None) -> ConvGeometry:
    n, c, h, w = (int(v) for v in x_shape)
    k, cg, kh, kw = (int(v) for v in w_shape)
    groups = as_index(groups, "groups", 1)
    stride_hw = as_pair(stride, "stride")
    dilation_hw = as_pair(dilation, "dilation")
    if kh < 1 or kw < 1:
        raise ValueError(f"w must have a kernel of at least 1x1, got shape {tuple(w_shape)}")
    if c % groups:
        raise ValueError(f"groups={groups} must divide the input channels of x ({c})")
    if k % groups:
        raise ValueError(f"groups={groups} must divide the output channels of w ({k})")
    if cg * groups != c:
        raise ValueError(
            f"w has {cg} input channels per group; with groups={groups} x must have "
            f"{cg * groups} channels, got {c} (x shape {tuple(x_shape)})"
        )
    pads = normalize_padding(padding, (h, w), (kh, kw), stride_hw, dilation_hw)
    if out_hw is None:
        out_hw = output_hw((h, w), (kh, kw), stride_hw, pads, dilation_hw)
    geom = ConvGeometry(n, c, h, w, k, cg, kh, kw, stride_hw, pads, dilation_hw, groups,
                        *out_hw)
    check_size(geom.y_shape, "the output (check padding and stride)")
    return geom


@dataclass(frozen=True)
class TransposeGeometry:
    """Sizes of conv_transpose2d: x (N, C, H, W), w (C, K/G, KH, KW) -> y (N, K, OH, OW).

    ``conv`` is the geometry of the convolution whose adjoint this is: its input
    has y's shape and its output has x's shape.
    """

    y_shape: tuple[int, int, int, int]
    conv: ConvGeometry


def transpose_geometry(x_shape: Sequence[int], w_shape: Sequence[int], stride: IntPair,
                       padding: Padding, output_padding: IntPair, dilation: IntPair,
                       groups: int, output_size: Any) -> TransposeGeometry:
    """Validate a transposed convolution's arguments against x's and w's shapes."""
    n, c, h, w = (int(v) for v in x_shape)
    c_w, kg, kh, kw = (int(v) for v in w_shape)
    groups = as_index(groups, "groups", 1)
    stride_hw = as_pair(stride, "stride")
    dilation_hw = as_pair(dilation, "dilation")
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
    pads = normalize_padding(padding, (h, w), (kh, kw), stride_hw, dilation_hw)
    default = tuple(
        (size - 1) * s - p0 - p1 + d * (k - 1) + 1
        for size, s, (p0, p1), d, k in zip((h, w), stride_hw, pads, dilation_hw, (kh, kw))
    )
    if output_size is not None:
        out_pad = _output_padding_for(output_size, default, stride_hw, dilation_hw)
    else:
        out_pad = as_pair(output_padding, "output_padding", minimum=0)
        for op, s, d in zip(out_pad, stride_hw, dilation_hw):
            if op >= max(s, d):
                raise ValueError(
                    f"output_padding {out_pad} must be smaller than stride {stride_hw} or "
                    f"dilation {dilation_hw} per axis: with stride s, s input sizes map to "
                    "one output size of the forward convolution, and output_padding "
                    "picks one of them"
                )
    out_hw = (default[0] + out_pad[0], default[1] + out_pad[1])
    if min(out_hw) < 1:
        raise ValueError(
            f"conv_transpose2d output size {out_hw} is not positive; padding {pads} "
            f"is too large for input {(h, w)} and kernel {(kh, kw)}"
        )
    y_shape = (n, kg * groups, *out_hw)
    conv = conv_geometry(y_shape, w_shape, stride_hw, pads, dilation_hw, groups,
                         out_hw=(h, w))
    return TransposeGeometry(y_shape, conv)


def _output_padding_for(output_size: Any, default: Sequence[int], stride: Sequence[int],
                        dilation: Sequence[int]) -> tuple[int, int]:
    """output_padding that gives ``output_size`` (its last two entries), checked."""
    wanted = spatial_size(output_size, 2, "output_size", "(OH, OW) or (N, K, OH, OW)")
    pads = []
    for size, low, s, d in zip(wanted, default, stride, dilation):
        high = low + max(s, d) - 1
        if not low <= size <= high:
            raise ValueError(
                f"output_size {wanted} is out of range: with these stride, padding and "
                f"dilation each size must lie in [{low}, {high}] (got {size})"
            )
        pads.append(size - low)
    return (pads[0], pads[1])


# --- pooling ---------------------------------------------------------------------------


class PoolGeometry:
    """Window sizes of one pooling call, with PyTorch's rules for output size."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    out_hw: tuple[int, ...]

    def __init__(self, in_hw: Sequence[int], kernel_size: IntPair, stride: IntPair | None,
                 padding: IntPair, dilation: IntPair, ceil_mode: bool, channels: int = 1) -> None:
        self.kernel = as_pair(kernel_size, "kernel_size")
        # None or () (PyTorch's default spelled as a sequence): the kernel size
        default_stride = stride is None or (isinstance(stride, (tuple, list)) and not stride)
        self.stride = self.kernel if default_stride else as_pair(stride, "stride")
        self.padding = as_pair(padding, "padding", minimum=0)
        self.dilation = as_pair(dilation, "dilation")
        self.ceil_mode = bool(ceil_mode)
        if min(in_hw) < 1:
            raise ValueError(f"x must have non-empty planes, got height x width {tuple(in_hw)}")
        if channels == 0:
            raise ValueError("x must have at least one channel: only the batch may be empty "
                             "(as PyTorch)")
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


_POOL_GEOMETRIES: dict[tuple[Any, ...], PoolGeometry] = {}


_CONV_GEOMETRIES: dict[tuple[Any, ...], ConvGeometry] = {}
#: distinct argument tuples kept per cache: many distinct sizes just miss
GEOMETRIES_KEPT = 256


def is_plain(value: Any) -> bool:
    """An exact int or str, None, or a tuple of such (nested): safe as a cache key (a
    bool or a NumPy integer hashes like the int it equals but is validated differently)."""
    return (value is None or type(value) is int or type(value) is str
            or (type(value) is tuple and all(is_plain(v) for v in value)))


def _remembered(cache: dict[tuple[Any, ...], Any], args: tuple[Any, ...],
                make: Any) -> Any:
    """``make(*args)``, kept in ``cache``: it raises for bad arguments, so only valid
    ones are kept."""
    geom = cache.get(args)
    if geom is None:
        geom = make(*args)
        if len(cache) >= GEOMETRIES_KEPT:
            cache.clear()
        cache[args] = geom
    return geom


def pool_geometry(in_hw: Sequence[int], kernel_size: IntPair, stride: IntPair | None,
                  padding: IntPair, dilation: IntPair, ceil_mode: bool,
                  channels: int = 1) -> PoolGeometry:
    """PoolGeometry, remembered for plain arguments: a layer validates the same
    sizes every step, and the checks cost as much as pooling a small batch.
    ``channels``: C of x (pooling refuses an input with no channels, as PyTorch)."""
    if channels == 0:
        return PoolGeometry(in_hw, kernel_size, stride, padding, dilation, ceil_mode, channels)
    args = (tuple(in_hw), kernel_size, stride, padding, dilation, ceil_mode)
    if not (all(is_plain(a) for a in args[:5]) and type(ceil_mode) is bool):
        return PoolGeometry(*args)
    return _remembered(_POOL_GEOMETRIES, args, PoolGeometry)


# --- scratch -----------------------------------------------------------------------------


def per_thread(n_threads: int, elements: int, dtype: DTypeLike, what: str) -> NDArray[Any]:
    """Scratch rows of ``elements`` per thread, row i for thread i.

    Rows are padded apart by at least one cache line: two threads writing the ends of
    adjacent short rows (a pooling row of 28 sums) would otherwise share a line and
    stall each other on every write.
    """
    padded = per_thread_row(elements, dtype)
    check_size((n_threads, padded), what)
    return np.empty((n_threads, padded), dtype=dtype)


#: largest scratch, in bytes, a Python thread keeps from call to call (a larger request
#: gets an array of its own)
SCRATCH_KEPT_BYTES = 64 << 20

#: per Python thread: .buffers, dtype -> the flat scratch its kernel calls reuse
_scratch = threading.local()


def per_thread_scratch(n_threads: int, elements: int, dtype: DTypeLike,
                       what: str) -> NDArray[Any]:
    """:func:`per_thread`'s rows in a buffer this Python thread reuses from call to call,
    for scratch that lives within one kernel call (never one a runner keeps).

    A fresh array's pages fault in on first touch, and glibc gives a freed one back to
    the system once a call's temporaries outgrow its trim threshold: on the development
    machine (a VM, a fault costing microseconds) a conv_transpose2d over 8x128x16x16 in
    a fresh process took 9.5 ms a call, 1,500 faults each, against 3.6 ms once the
    process had freed one large array. Each Python thread has its own buffer, so
    threads never share one; it grows to the largest request up to SCRATCH_KEPT_BYTES.
    """
    padded = per_thread_row(elements, dtype)
    check_size((n_threads, padded), what)
    size, dtype = n_threads * padded, np.dtype(dtype)
    if size * dtype.itemsize > SCRATCH_KEPT_BYTES:
        return np.empty((n_threads, padded), dtype=dtype)
    buffers = _scratch.__dict__.setdefault("buffers", {})
    kept = buffers.get(dtype)
    if kept is None or kept.size < size:
        kept = buffers[dtype] = np.empty(size, dtype=dtype)
    return kept[:size].reshape(n_threads, padded)


def per_thread_row(elements: int, dtype: DTypeLike) -> int:
    """The length of :func:`per_thread`'s rows: ``elements`` and at least a cache line."""
    line = max(1, 64 // np.dtype(dtype).itemsize)
    return -(-elements // line) * line + line
