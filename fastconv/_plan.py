"""The planner: the one place that decides which convolution kernel runs, how its
work is blocked (the sizes: :mod:`fastconv._blocking`) and how much scratch it needs.

:func:`plan` takes a validated geometry, the pass (``"forward"``, ``"input_grad"``,
``"weight_grad"``), the dtype, the thread count and the algorithm asked for
(``"auto"``, ``"direct"``, ``"im2col"``, ``"winograd"``) and returns a :class:`Plan`:
the concrete kernel, its blocking and its workspace. Both ``"auto"`` and the explicit
names go through it; the opt-in autotuner (:mod:`fastconv._autotune`) times the plans
of the candidate algorithms here. Plans are cached per geometry. Nothing else in
fastconv chooses a kernel: the executor (:mod:`fastconv._execute`) runs what the plan
says, and ``fastconv.explain`` prints plans without running them.

The kernels (one ``fastconv/_kernels`` module each):

==========================  ===========================================================
``gemm``                    im2col of a band of output rows into the thread's buffer,
                            one BLAS GEMM (``_conv_gemm``); input gradient: GEMM then
                            col2im; 1x1 / stride 1 / no padding skips the packing
``winograd``                Winograd F(4x4, 3x3), F(2x2, 3x3) over few tiles: tile
                            transforms and one GEMM per transform position
                            (``_conv_winograd``); a dilated kernel runs as one
                            undilated convolution per phase
``channel_vector``          one SIMD vector holds consecutive output channels; each
                            input value is broadcast into a vector (``_conv_cvec``)
``channel_vector_scatter``  the input gradient of the same kernels: each gy pixel times
                            each tap added into a padded image of x's channels
``wide_rows``               stride 1 (or undilated, any stride: over phase planes): each
                            image padded once per task, every kernel tap one long
                            vectorised loop over whole rows (``_conv_wide``)
``row_loops``               typed loops over the output (``_conv_direct``): any stride,
                            the fallback of the direct family
==========================  ===========================================================

``algorithm="direct"`` means the best of the last four for the pass and shape;
``"im2col"`` is ``gemm``; ``"winograd"`` is ``winograd`` where it applies (3x3, stride
1) and ``gemm`` for the weight gradient. Every decision depends on the shape alone,
never on the thread count, so results are bit-identical across thread counts.

Examples
--------
>>> from fastconv import _plan
>>> from fastconv._geometry import conv_geometry
>>> geom = conv_geometry((64, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1)
>>> p = _plan.plan(geom, "forward", "float32", 2)
>>> p.algorithm, p.kernel
('direct', 'channel_vector')
>>> _plan.plan(geom, "forward", "float32", 2, "im2col").kernel
'gemm'
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from numpy.typing import DTypeLike

from fastconv import _autotune, _blocking, _config, _dispatch
from fastconv._dispatch import _conv_cvec, _conv_gemm, _conv_wide, _conv_winograd
from fastconv._geometry import ConvGeometry, conv_geometry

PASSES = ("forward", "input_grad", "weight_grad")
ALGORITHMS = ("auto", "direct", "im2col", "winograd")
KERNELS = ("gemm", "winograd", "channel_vector", "channel_vector_scatter", "wide_rows",
           "row_loops")
WINOGRAD_SUPPORT = "3x3 kernels with stride 1 (any padding, dilation and groups)"

# --- the table of measured thresholds ----------------------------------------------------
# Each was set by timing every pass of the benchmark suite (bench/compare.py, its
# --algorithm flag) and LeNet-5's layers with each algorithm, float32, at 1 and 2
# threads on the 2-core AVX2 development machine (AMD EPYC Zen 3).

# "auto" takes the direct family for depthwise-like and shallow convolutions: fewer
# output channels per group than this, or a GEMM depth (C/G * KH * KW) below
# AUTO_MIN_GEMM_DEPTH, leave a GEMM too thin to pay for packing (MobileNet-style
# depthwise layers, LeNet's C1). A pointwise (1x1) convolution packs nothing: its GEMM
# wins with any output channel count once the depth is there (64 -> 3 channels over
# 8x56x56, 2 threads: forward 0.32 -> 0.13 ms, input gradient 1.24 -> 0.13 ms, weight
# gradient 0.31 -> 0.13 ms; 256 -> 1 over 8x28x28 and 16 -> 2 over 1x128x128 likewise).
AUTO_MIN_GEMM_CHANNELS, AUTO_MIN_GEMM_DEPTH = 4, 16
# Winograd does a quarter of the multiplies of a 3x3 convolution; it beats im2col once
# both channel counts per group make its 36 GEMMs deep: input >= 32 and output > 32
# (3x3-64-56: 8.4 ms against im2col's 11; 3x3 with 16 channels: im2col wins). The input
# gradient swaps the roles.
WINOGRAD_MIN_IN, WINOGRAD_MIN_OUT = 32, 33
# ... and once the batch gives it at least this many 4x4 output tiles: fewer leave its
# GEMMs too short and its blocks too few to share (1x512x7x7, 4 tiles: 7.2 ms against
# im2col's 3.6; 1x256x14x14, 16 tiles: 2.8 against 1.6; 8x512x7x7, 32 tiles: 10.0
# against 14.6).
WINOGRAD_MIN_TILES = 32
# Under WINOGRAD_F4_MIN_TILES 4x4 tiles the tiles are 2x2 (_blocking.winograd_tile); "auto"
# takes them from this many channels in and out on, up to this product of the two (the
# transformed weights, 16 * CG * KG, are read once per call for few tiles' work): one
# process, alternating, 15 rounds: 1x256x14x14 0.88-0.91 of im2col's time, forward and
# backward 0.94, 1x128x14x14 0.96; but 1x512x14x14 1.15-1.35 (16 MB of transformed
# weights), and 1x64x14x14 1.12 (too shallow).
WINOGRAD_F2_MIN_CHANNELS, WINOGRAD_F2_MAX_CHANNEL_PRODUCT = 128, 1 << 17
# Channel-vectorised forward: it needs input channels to amortise each band copy and
# output channels to fill its vectors (below these the wide-row or loop kernels win,
# LeNet's C1 with 1 input and 6 output channels). Against im2col it wins up to 32
# output channels, or 64 with at most 32 input channels and a GEMM depth of 48 or more
# (LeNet C3 16@5x5 over 6 channels: 0.23 ms against 0.36 by im2col).
CV_MIN_IN, CV_MIN_OUT = 3, 8
CV_FORWARD_MAX_OUT, CV_FORWARD_WIDE_OUT, CV_FORWARD_WIDE_MAX_IN = 32, 64, 32
CV_FORWARD_WIDE_MIN_DEPTH = 48
# Channel-vectorised weight gradient: from 4 output channels per group (fewer: the
# wide-row kernel at stride 1, else the loops), and it beats im2col up to 64 input and
# 64 output channels per group. Wide rows against the loops, 2 threads: depthwise 3x3
# over 1x576x14x14 0.20 -> 0.10 ms, over 8x144x56x56 2.9 -> 2.0 ms.
CV_WGRAD_MIN_OUT, CV_WGRAD_MAX_CHANNELS = 4, 64
# ... but from 4 to 7 output channels per group, stride 1, on rows of at least 24 outputs,
# the wide-row kernel's 3 x 4 blocks beat channel vectors that are partly padding (float32,
# 2 threads): LeNet C1 6@5x5 over 64x1x28x28 0.24 -> 0.15 ms, 4@3x3 over 8x1x28x28 0.53x,
# 6@3x3 over 8x3x64x64 0.61x, 4@3x3 over 8x16x28x28 0.81x, 5@3x3 over 8x64x56x56 0.84x;
# on 14x14 or 16x16 maps it loses (1.3-1.9x), and at a stride with several input
# channels (1.0-1.4x). float64, whose vectors hold 4, gains less (0.78-0.93x) and loses
# 4@3x3 over 8x16x28x28 (1.23x).
WIDE_WGRAD_MAX_OUT, WIDE_WGRAD_MIN_WIDTH = 8, 24
# A strided wide-row input gradient (one convolution per phase of gx) pays from this many
# taps when a group has one channel of gy (see _wide_phases_pay)
WIDE_STRIDED_MIN_TAPS = 25
# Scatter input gradient: beats im2col for 4 to 32 input channels at stride 1 (16 at
# other strides) and up to 64 output channels, while its per-thread padded image fits
# SCATTER_MAX_ELEMENTS (beyond that, the wide-row kernel or the loops).
SCATTER_MIN_IN, SCATTER_MAX_IN, SCATTER_MAX_IN_STRIDED = 4, 32, 16
SCATTER_MAX_OUT = 64
SCATTER_MAX_ELEMENTS = 1 << 22
# Wide rows take the direct input gradient when x has few channels per group: under 4,
# or under 8 on images at least 24 wide (LeNet C3's input gradient, 6 channels on 14x14,
# stays with the scatter kernel).
WIDE_IGRAD_MAX_IN, WIDE_IGRAD_MAX_IN_WIDE, WIDE_IGRAD_MIN_WIDTH = 3, 7, 24
# Stride-1 kernels larger than 1x1 where no rule above applied: the wide-row forward
# beats packing + GEMM up to 32 output channels; the direct input gradient up to 2
# input channels, or 8 with at most 9 taps.
AUTO_WIDE_FORWARD_MAX_OUT = 32
# The wide-row forward's register blocks (6 channels x 2 vectors of outputs, 4 x 3) beat
# channel vectors at stride 1 on rows of at least 24 outputs with at most 8 output
# channels per group (3x3, 2 threads, against channel vectors: 3 -> 8 over 8x56x56 0.72x,
# 8 -> 8 0.80x, 16 -> 8 0.82x, 32 -> 8 0.51x; 16 -> 8 5x5 over 8x28x28 0.76x) or at most
# 4 input channels and 32 output channels (3 -> 16 over 8x64x64 0.77x, 3 -> 32 over
# 2x112x112 0.87x); with more of both they are even or lose (16 -> 32 over 8x28x28
# 1.11x), and on 14x14 maps the row gaps lose (LeNet C3 2.1x). A task is up to 8
# output channels of one image: under 4 tasks the channel vectors' bands share the
# threads better.
WIDE_FORWARD_MAX_OUT, WIDE_FORWARD_FEW_IN, WIDE_FORWARD_MIN_WIDTH = 8, 4, 24
WIDE_FORWARD_TASK_CHANNELS, WIDE_FORWARD_MIN_TASKS = 8, 4
AUTO_DIRECT_IGRAD_MAX_IN, AUTO_DIRECT_IGRAD_SMALL_IN, AUTO_DIRECT_IGRAD_SMALL_TAPS = 2, 8, 9

# Multiply-adds per thread below which a pass takes fewer threads. A team's second
# thread spins between parallel regions, and on the 2-core development machine that
# slows the calling thread's Python steps by about a third: LeNet-5 at batch 1, whose
# layers are 0.1-0.25 M multiply-adds, 136 us a forward on two threads, 104 us on one
# (each layer alone, repeated, gains under 7% from the second thread).
WORK_PER_THREAD = 1 << 17

@dataclass(frozen=True)
class Plan:
    """What one pass of one convolution runs.

    Attributes
    ----------
    pass_ : {"forward", "input_grad", "weight_grad"}
    algorithm : {"direct", "im2col", "winograd"}
        The family (what ``algorithm=`` names).
    kernel : str
        The concrete kernel (one of ``KERNELS``).
    reason : str
        The rule that chose it.
    rows : int
        Output rows per band (``gemm``, ``channel_vector``); 0 otherwise.
    channel_block : int
        Channels per task of a ``gemm`` pass (0: all of a group's): input channels of
        the weight gradient, output channels of the forward, gx's channels of the
        input gradient; 0 otherwise.
    chunks : int
        Partial sums of a weight gradient over the batch, reduced in order.
    winograd_tile : int
        A ``winograd`` pass's output tile M of F(MxM, 3x3), 4 or 2; 0 otherwise.
    tiles : int
        Winograd output tiles per block (of the undilated kernel); 0 otherwise.
    workspace : int
        Scratch elements per thread.
    n_threads : int
        Threads the kernel runs on.
    pointwise : bool
        ``gemm`` on a 1x1 / stride 1 / unpadded convolution: no packing.
    row_pixels : int
        A pointwise forward's row width as its kernel sees x and y (their pixels in
        rows of this many; ``rows`` counts those rows); 0: the output's own rows.
    packed_columns : bool
        ``gemm`` reading columns packed once for two passes.
    shifted_rows : bool
        ``gemm`` forward of a kernel one column wide at stride 1, unpadded left and
        right: each tap multiplies x's own rows, shifted, and nothing is packed.
    nonfinite_operand : str or None
        ``"x"``, ``"gy"`` or ``"w"``: when that operand holds inf or NaN, ``fallback``
        runs instead (only where the kernel's pattern of inf and NaN would differ).
    fallback : Plan or None
    """

    pass_: str
    algorithm: str
    kernel: str
    reason: str
    rows: int = 0
    channel_block: int = 0
    chunks: int = 1
    winograd_tile: int = 0
    tiles: int = 0
    workspace: int = 0
    n_threads: int = 1
    pointwise: bool = False
    row_pixels: int = 0
    packed_columns: bool = False
    shifted_rows: bool = False
    nonfinite_operand: str | None = None
    fallback: Plan | None = None

    def describe(self) -> str:
        """One line: kernel, blocking, workspace and the rule."""
        parts = [f"{self.kernel:<22} ({self.algorithm})"]
        rows = f"{self.rows} of {self.row_pixels} pixels" if self.row_pixels else self.rows
        blocking = [f"{name} {value}" for name, value in
                    (("rows", rows), ("channel block", self.channel_block),
                     ("tiles", self.tiles)) if value]
        if self.winograd_tile:
            blocking.insert(0, f"F({self.winograd_tile}x{self.winograd_tile}, 3x3)")
        if self.chunks > 1:
            blocking.append(f"{self.chunks} chunks")
        if self.pointwise:
            blocking.append("pointwise")
        if self.packed_columns:
            blocking.append("columns packed once")
        if self.shifted_rows:
            blocking.append("taps on shifted rows")
        if blocking:
            parts.append(", ".join(blocking))
        parts.append(f"workspace {self.n_threads} x {self.workspace}")
        line = " | ".join(parts) + f" -- {self.reason}"
        if self.fallback is not None:
            line += (f"; if {self.nonfinite_operand} holds inf or NaN: "
                     f"{self.fallback.kernel}")
        return line


# --- which algorithm "auto" takes ----------------------------------------------------------


def _winograd_output(geom: ConvGeometry, pass_: str) -> tuple[int, int]:
    """A Winograd pass's output plane: y's, or x's for the input gradient."""
    return (geom.oh, geom.ow) if pass_ == "forward" else (geom.h, geom.w)


def winograd_tile(geom: ConvGeometry, pass_: str) -> int:
    """The output tile M of F(MxM, 3x3) of a Winograd pass (_blocking.winograd_tile)."""
    return _blocking.winograd_tile(geom.n, *_winograd_output(geom, pass_))


def winograd_tiles(geom: ConvGeometry, pass_: str) -> int:
    """Output tiles of a Winograd pass over the whole batch, of its tile size."""
    h, w = _winograd_output(geom, pass_)
    tile = winograd_tile(geom, pass_)
    return geom.n * -(-h // tile) * -(-w // tile)


def auto_algorithm(geom: ConvGeometry, pass_: str) -> tuple[str, str]:
    """(algorithm, reason) of "auto" for one pass: the rules of the table above."""
    if not geom.gemm_fits:
        return "direct", "GEMM sizes would not fit BLAS's 32-bit ints"
    if geom.ckk < AUTO_MIN_GEMM_DEPTH or (geom.kg < AUTO_MIN_GEMM_CHANNELS
                                          and not geom.pointwise):
        return "direct", "depthwise-like or shallow: a GEMM too thin to pay for packing"
    if geom.winograd_shape and pass_ != "weight_grad":
        c_in, c_out = (geom.cg, geom.kg) if pass_ == "forward" else (geom.kg, geom.cg)
        if (c_in >= WINOGRAD_MIN_IN and c_out >= WINOGRAD_MIN_OUT
                and winograd_tiles(geom, pass_) >= WINOGRAD_MIN_TILES):
            if winograd_tile(geom, pass_) == 4:
                return "winograd", ("3x3 stride 1 with deep channels: Winograd's GEMMs "
                                    "are deep")
            if (min(c_in, c_out) >= WINOGRAD_F2_MIN_CHANNELS
                    and c_in * c_out <= WINOGRAD_F2_MAX_CHANNEL_PRODUCT):
                return "winograd", ("3x3 stride 1, deep channels over few 4x4 tiles: "
                                    "F(2x2, 3x3)")
    if _channel_vector_beats_gemm(geom, pass_):
        return "direct", "few channels per group: channel-vectorised beats a thin GEMM"
    if geom.stride_one and geom.taps > 1:
        if pass_ == "forward" and geom.kg <= AUTO_WIDE_FORWARD_MAX_OUT:
            return "direct", "stride 1, few output channels: direct beats packing"
        if pass_ == "input_grad" and (
                geom.cg <= AUTO_DIRECT_IGRAD_MAX_IN
                or (geom.cg <= AUTO_DIRECT_IGRAD_SMALL_IN
                    and geom.taps <= AUTO_DIRECT_IGRAD_SMALL_TAPS)):
            return "direct", "stride 1, few input channels: direct beats GEMM + col2im"
    return "im2col", "GEMM-bound"


def _channel_vector_beats_gemm(geom: ConvGeometry, pass_: str) -> bool:
    if geom.taps == 1:
        return False  # a 1x1 convolution is a GEMM as it stands
    if pass_ == "weight_grad":
        return geom.kg <= CV_WGRAD_MAX_CHANNELS and geom.cg <= CV_WGRAD_MAX_CHANNELS
    if pass_ == "input_grad":
        most_in = SCATTER_MAX_IN if geom.stride_one else SCATTER_MAX_IN_STRIDED
        return (_direct_input_grad_kernel(geom) == "channel_vector_scatter"
                and SCATTER_MIN_IN <= geom.cg <= most_in and geom.kg <= SCATTER_MAX_OUT)
    if not _channel_vector_suits(geom):
        return False  # the wide-row kernel or the loops would run
    return geom.kg <= CV_FORWARD_MAX_OUT or (
        geom.kg <= CV_FORWARD_WIDE_OUT and geom.cg <= CV_FORWARD_WIDE_MAX_IN
        and geom.ckk >= CV_FORWARD_WIDE_MIN_DEPTH)


# --- which kernel an algorithm means for a pass ---------------------------------------------


def _channel_vector_suits(geom: ConvGeometry) -> bool:
    return geom.cg >= CV_MIN_IN and geom.kg >= CV_MIN_OUT


def _direct_forward_kernel(geom: ConvGeometry) -> str:
    if _channel_vector_suits(geom) and not _wide_forward_fills_better(geom):
        return "channel_vector"
    # strided: wide rows over phase planes, for undilated kernels (depthwise 3x3 s2 over
    # 1x144x56x56: loops 0.21 ms, wide rows 0.18; 5x5 s2 over 8x960x14x14: 3.7 -> 2.0 ms)
    return "wide_rows" if geom.stride_one or geom.dilation == (1, 1) else "row_loops"


def _wide_forward_fills_better(geom: ConvGeometry) -> bool:
    """Whether a stride-1 undilated forward that the channel-vectorised kernel would take
    runs on wide rows: rows of at least WIDE_FORWARD_MIN_WIDTH outputs, at least
    WIDE_FORWARD_MIN_TASKS tasks of up to 8 output channels of an image, and either few
    output channels or few input channels (see WIDE_FORWARD_MAX_OUT)."""
    tasks = geom.n * geom.groups * -(-geom.kg // WIDE_FORWARD_TASK_CHANNELS)
    return (geom.stride_one and geom.dilation == (1, 1) and geom.ow >= WIDE_FORWARD_MIN_WIDTH
            and tasks >= WIDE_FORWARD_MIN_TASKS
            and (geom.kg <= WIDE_FORWARD_MAX_OUT
                 or (geom.cg <= WIDE_FORWARD_FEW_IN and geom.kg <= CV_FORWARD_MAX_OUT)))


def _direct_input_grad_kernel(geom: ConvGeometry) -> str:
    few_channels = geom.cg <= WIDE_IGRAD_MAX_IN or (
        geom.cg <= WIDE_IGRAD_MAX_IN_WIDE and geom.w >= WIDE_IGRAD_MIN_WIDTH)
    if geom.stride_one and few_channels:
        return "wide_rows"
    # under SCATTER_MIN_IN channels the scatter kernel's SIMD vectors of x's channels are
    # mostly padding (depthwise 3x3 s2 over 8x144x56x56: scatter 8.3 ms, loops 2.8 ms)
    if (geom.cg < SCATTER_MIN_IN
            or _blocking.scatter_workspace(geom, np.float32) > SCATTER_MAX_ELEMENTS):
        return "wide_rows" if geom.stride_one or _wide_phases_pay(geom) else "row_loops"
    return "channel_vector_scatter"


def _wide_phases_pay(geom: ConvGeometry) -> bool:
    """Whether a strided input gradient runs as wide-row convolutions, one per phase of
    gx: undilated, and with more than one channel of gy per group or at least 25 taps
    (a phase of a depthwise 3x3 s2 has 1-4 taps, too few to pay for its padded copy:
    over 8x144x56x56 the loops win; 5x5 s2 depthwise over 8x96x28x28 0.78x the loops,
    3 -> 3 channels 3x3 s2 over 8x64x64 0.29x)."""
    return geom.dilation == (1, 1) and (geom.kg > 1 or geom.taps >= WIDE_STRIDED_MIN_TAPS)


def _direct_weight_grad_kernel(geom: ConvGeometry) -> str:
    if geom.kg >= CV_WGRAD_MIN_OUT and not _wide_weight_grad_fills_better(geom):
        return "channel_vector"
    # wide rows: undilated kernels larger than 1x1 (1x1 and dilated ones waste the row
    # gaps: 64 -> 3 channels 1x1 over 8x56x56, 0.29 ms by the loops, 0.57 by wide rows),
    # at a stride over phase planes: depthwise 3x3 s2 over 1x144x56x56 0.63x the loops'
    # time, 2x144x56x56 0.62x, 1x576x14x14 0.83x, 1x192x28x28 0.93x, 8x576x14x14 0.97x
    # (one process, alternating; each task's padding zeroed once and depthwise channels
    # run over the whole batch: they lost on the smaller ones before); 5x5 s2 depthwise
    # over 8x96x28x28 0.62x, 3 -> 3 channels 3x3 s2 over 8x64x64 0.33x.
    if geom.dilation != (1, 1) or geom.taps == 1:
        return "row_loops"
    return "wide_rows"


def _wide_weight_grad_fills_better(geom: ConvGeometry) -> bool:
    """Whether a weight gradient that the channel-vectorised kernel would take runs on wide
    rows: under WIDE_WGRAD_MAX_OUT output channels per group the float32 channel vectors
    are partly padding, and wide rows of at least WIDE_WGRAD_MIN_WIDTH outputs are long
    enough for their blocks; stride 1, undilated."""
    return (geom.kg < WIDE_WGRAD_MAX_OUT and geom.ow >= WIDE_WGRAD_MIN_WIDTH
            and geom.stride_one and geom.dilation == (1, 1) and geom.taps > 1)


def winograd_input_grad_applies(geom: ConvGeometry) -> bool:
    """The input gradient of a 3x3 stride-1 convolution is itself one, of gy with the
    rotated kernel, padded by 2d less the forward padding: when no padding exceeds 2d."""
    (pt, pb), (pl, pr) = geom.padding
    dh, dw = geom.dilation
    return max(pt, pb) <= 2 * dh and max(pl, pr) <= 2 * dw


def input_grad_geometry(geom: ConvGeometry) -> ConvGeometry:
    """The stride-1 convolution of gy with the rotated kernel that is geom's input gradient."""
    (pt, pb), (pl, pr) = geom.padding
    dh, dw = geom.dilation
    pads = (((geom.kh - 1) * dh - pt, (geom.kh - 1) * dh - pb),
            ((geom.kw - 1) * dw - pl, (geom.kw - 1) * dw - pr))
    return conv_geometry(geom.y_shape, (geom.c, geom.kg, geom.kh, geom.kw), 1, pads,
                         geom.dilation, geom.groups)


def _kernel(geom: ConvGeometry, pass_: str, algorithm: str) -> tuple[str, str]:
    """(kernel, note) of an algorithm family for one pass."""
    if algorithm == "direct":
        kernel = {"forward": _direct_forward_kernel, "input_grad": _direct_input_grad_kernel,
                  "weight_grad": _direct_weight_grad_kernel}[pass_](geom)
        return kernel, ""
    if algorithm == "winograd":
        if pass_ == "weight_grad":
            return "gemm", "no Winograd weight gradient"
        if pass_ == "input_grad" and not winograd_input_grad_applies(geom):
            return "gemm", "padding beyond the kernel's reach"
        return "winograd", ""
    return "gemm", ""


# --- a kernel's plan: its blocking (fastconv._blocking) and workspace -----------------------


def _blocked(geom: ConvGeometry, pass_: str, algorithm: str, kernel: str, reason: str,
             dtype: DTypeLike, n_threads: int) -> Plan:
    """The plan of ``kernel`` for this pass, with its blocking and workspace."""
    make = functools.partial(Plan, pass_, algorithm, kernel, reason, n_threads=n_threads)
    if kernel == "gemm":
        pointwise = geom.pointwise
        if pass_ == "weight_grad":
            cblock, rows, chunks = _blocking.gemm_weight_grad_blocking(geom)
            columns = cblock * geom.taps * rows * geom.ow
            return make(rows=rows, channel_block=cblock, chunks=chunks, pointwise=pointwise,
                        workspace=1 if pointwise else columns)
        if pass_ == "forward" and shifted_rows_apply(geom):
            return make(rows=_blocking.forward_band_rows(geom), shifted_rows=True)
        if pass_ == "forward":
            (rows, block), depth = _blocking.forward_blocking(geom), _conv_gemm.forward_depth(
                geom.cg, geom.taps)
            few_out = geom.kg < _blocking.POINTWISE_FEW_OUT
            if pointwise and few_out and np.dtype(dtype) == np.float32:
                band = _blocking.POINTWISE_FEW_OUT_BAND
                rows = min(rows, max(1, band // (geom.ckk * geom.ow)))
            if pointwise:
                row_pixels, rows = _blocking.pointwise_pixel_rows(geom, rows)
                return make(rows=rows, channel_block=block, pointwise=True,
                            row_pixels=row_pixels, workspace=1)
        else:  # the input gradient: a task per (image, group[, block of gx's channels])
            block = _blocking.input_grad_channel_block(geom)
            depth = (block or geom.cg) * geom.taps  # rows of a task's columns
            rows = max(1, min(geom.oh, _blocking.BAND_ELEMENTS // max(1, depth * geom.ow)))
        return make(rows=rows, channel_block=block, pointwise=pointwise,
                    workspace=1 if pointwise else depth * rows * geom.ow)
    if kernel == "channel_vector":
        kp = _blocking.channel_vector_padded(geom.kg, dtype)
        outer = geom.n * geom.groups if pass_ == "forward" else geom.n
        rows, _, plane = _blocking.channel_vector_band(geom, geom.cg, kp, outer)
        chunks = 1
        if pass_ == "weight_grad":
            chunks = max(1, min(geom.n * -(-geom.oh // rows), _blocking.MAX_CHUNKS))
        return make(rows=rows, chunks=chunks, workspace=geom.cg * plane + rows * geom.ow * kp)
    if kernel == "channel_vector_scatter":
        return make(workspace=_blocking.scatter_workspace(geom, dtype))
    if kernel == "wide_rows":
        if pass_ == "weight_grad":
            size = _conv_wide.weight_grad_workspace_size(geom.cg, geom.kg, geom.oh, geom.ow,
                                                         geom.kh, geom.kw, *geom.dilation,
                                                         *geom.stride)
            fallback = _blocked(geom, pass_, algorithm, "row_loops",
                                "wide rows multiply x past each row's end", dtype, n_threads)
            return make(workspace=size, chunks=_blocking.wide_weight_grad_chunks(geom),
                        nonfinite_operand="x", fallback=fallback)
        if pass_ == "forward":
            size = _conv_wide.workspace_size(geom.cg, geom.oh, geom.ow, geom.kh, geom.kw,
                                             *geom.dilation, *geom.stride)
            return make(workspace=size)
        if geom.stride_one:
            size = _conv_wide.workspace_size(geom.kg, geom.h, geom.w, geom.kh, geom.kw,
                                             *geom.dilation)
        else:  # the largest phase of gx and of the kernel (see _execute.input_grad)
            (sh, sw) = geom.stride
            size = _conv_wide.workspace_size(geom.kg, -(-geom.h // sh), -(-geom.w // sw),
                                             -(-geom.kh // sh), -(-geom.kw // sw), 1, 1)
        fallback = _blocked(geom, pass_, algorithm, "row_loops",
                            "wide rows multiply gy's padding", dtype, n_threads)
        return make(workspace=size, nonfinite_operand="w", fallback=fallback)
    if kernel == "winograd":
        sub = geom if pass_ == "forward" else input_grad_geometry(geom)
        tile = winograd_tile(geom, pass_)
        tiles = _blocking.winograd_block(sub, tile)
        size = _conv_winograd.workspace_elements(sub.cg, sub.kg, tile, tiles)
        return make(winograd_tile=tile, tiles=tiles, workspace=size)
    return make()


# --- the entry point ------------------------------------------------------------------------


def plan(geom: ConvGeometry, pass_: str, dtype: DTypeLike, n_threads: int,
         algorithm: str = "auto", measure: Callable[[Plan], object] | None = None) -> Plan:
    """The plan of one pass of the convolution ``geom``.

    Parameters
    ----------
    geom : ConvGeometry
        Validated sizes.
    pass_ : {"forward", "input_grad", "weight_grad"}
    dtype : float32 or float64
    n_threads : int
        Threads available; the plan takes fewer for a small pass (:func:`threads_for`).
        Sizes the workspace only: results do not depend on it.
    algorithm : {"auto", "direct", "im2col", "winograd"}, default "auto"
        Checked against the shape by :func:`check_algorithm` first.
    measure : callable, optional
        With autotuning on (:func:`fastconv.set_autotune`) and ``"auto"``, the
        planner times ``measure(plan)`` for each candidate algorithm the first time
        it meets a key and keeps the fastest. Without it, an untuned key follows
        the rules.

    Returns
    -------
    Plan
    """
    dtype_name = _DTYPE_NAMES.get(dtype) or np.dtype(dtype).name
    n_threads = threads_for(geom, n_threads)
    if algorithm == "auto" and _autotune.get_autotune():
        key = (pass_, geom, dtype_name, n_threads, _dispatch.ISA)
        candidates = {name: _cached_plan(geom, pass_, dtype_name, n_threads, name)
                      for name in candidate_algorithms(geom, pass_)}
        if measure is not None:
            chosen = _autotune.choose(key, list(candidates),
                                      lambda name: measure(candidates[name]))
        else:
            chosen = _autotune.autotune_choices().get(key, "")
        if chosen:
            return dataclasses.replace(candidates[chosen], reason="autotuned: fastest measured")
    return _cached_plan(geom, pass_, dtype_name, n_threads, algorithm)


def threads_for(geom: ConvGeometry, n_threads: int) -> int:
    """Threads a pass of ``geom`` runs on: at most ``n_threads``, one per WORK_PER_THREAD
    multiply-adds (at least one). Results do not depend on it."""
    macs = geom.n * geom.k * geom.oh * geom.ow * geom.ckk
    return _config.threads_for(macs, WORK_PER_THREAD, n_threads)


#: dtype or scalar type -> name, without numpy's Python-level ``dtype.name`` (microseconds)
_DTYPE_NAMES: dict[Any, str] = {key: np.dtype(t).name for t in (np.float32, np.float64)
                                for key in (t, np.dtype(t))}


@functools.lru_cache(maxsize=1024)
def _cached_plan(geom: ConvGeometry, pass_: str, dtype: str, n_threads: int,
                 algorithm: str) -> Plan:
    if algorithm == "auto":
        family, reason = auto_algorithm(geom, pass_)
    else:
        family, reason = algorithm, f"algorithm={algorithm!r} asked for"
    kernel, note = _kernel(geom, pass_, family)
    if note:
        reason += f" ({note})"
    chosen = _blocked(geom, pass_, family, kernel, reason, dtype, n_threads)
    if algorithm == "auto" and kernel == "winograd":
        # "auto" keeps PyTorch's pattern of inf and NaN: Winograd's transforms spread
        # an infinity over its output tile, so non-finite data go to im2col.
        fallback = _blocked(geom, pass_, "im2col", "gemm", "non-finite data", dtype, n_threads)
        chosen = dataclasses.replace(chosen, nonfinite_operand="x" if pass_ == "forward"
                                     else "gy", fallback=fallback)
    return chosen


def candidate_algorithms(geom: ConvGeometry, pass_: str) -> list[str]:
    """Algorithms that can run this pass of this shape (autotuning times each)."""
    if not geom.gemm_fits:
        return ["direct"]
    if geom.winograd_shape and pass_ != "weight_grad":  # no Winograd weight gradient
        return ["direct", "im2col", "winograd"]
    return ["direct", "im2col"]


def check_algorithm(algorithm: str, geom: ConvGeometry | None = None,
                    transpose: bool = False) -> str:
    """The algorithm name, lower-cased, checked against the op and (if given) the shape."""
    if not isinstance(algorithm, str) or algorithm.lower() not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    algorithm = algorithm.lower()
    if transpose and algorithm == "winograd":
        raise ValueError(
            "algorithm='winograd' is offered by conv2d only, not by transposed "
            "convolution; use 'auto', 'direct' or 'im2col'"
        )
    if geom is None:
        return algorithm
    if algorithm == "winograd" and not geom.winograd_shape:
        raise ValueError(
            f"algorithm='winograd' supports {WINOGRAD_SUPPORT}; got kernel "
            f"{(geom.kh, geom.kw)}, stride {geom.stride}, dilation {geom.dilation} "
            "(use 'im2col', 'direct' or 'auto' for this shape)"
        )
    if algorithm == "im2col" and not geom.gemm_fits:
        raise ValueError(
            "algorithm='im2col' needs GEMM sizes under 2**31 (planes and C/groups*KH*KW); "
            "use algorithm='direct' for this shape"
        )
    return algorithm


def shifted_rows_apply(geom: ConvGeometry) -> bool:
    """Whether the im2col forward runs its taps on x's own rows (``Plan.shifted_rows``):
    a kernel one column wide and more than one row high, stride 1, no padding left or
    right, an output exactly as wide as x, and at least SHIFTED_ROWS_MIN_UNITS (image,
    group) pairs. Inception's 7x1 of 128 channels on 17x17, against the packed forward
    (one process, alternating): 8 images 0.84-0.90 of the time, 4 images 0.87; 2 images
    1.00, 1 image 0.98-1.22; 8x160 0.93, 8x192 0.89; a 3x1 over 8x64x28x28 0.88-0.89."""
    return (geom.kw == 1 and geom.kh > 1 and geom.stride == (1, 1)
            and geom.padding[1] == (0, 0) and geom.ow == geom.w
            and geom.n * geom.groups >= _blocking.SHIFTED_ROWS_MIN_UNITS)


def share_columns(geom: ConvGeometry, first: Plan, second: Plan) -> tuple[Plan, Plan]:
    """Two passes that both pack the same input's columns (conv_transpose2d's backward:
    the forward convolution of gy and the weight gradient) pack them once, while all
    of them fit PACKED_ELEMENTS."""
    size = geom.n * geom.groups * geom.ckk * geom.oh * geom.ow
    if (first.kernel == second.kernel == "gemm" and not geom.pointwise
            and not first.shifted_rows and first.fallback is None
            and size <= _blocking.PACKED_ELEMENTS):
        return (dataclasses.replace(first, packed_columns=True, workspace=0),
                dataclasses.replace(second, packed_columns=True, workspace=0))
    return first, second


def clear_cache() -> None:
    """Forget cached plans (tests that change the table's constants call this)."""
    _cached_plan.cache_clear()
