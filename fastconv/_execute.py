"""Run a convolution plan: lay out the operands the kernel wants, allocate its
scratch, call it.

Nothing here chooses a kernel: :mod:`fastconv._plan` did. Every kernel overwrites its
whole output (an accumulating kernel zeroes, or starts from the bias, in its own
slot first), so outputs are allocated with ``np.empty`` and no flags travel with the
call. Shared by conv2d and conv_transpose2d (whose forward is conv2d's input
gradient and whose backward is conv2d's forward and weight gradient).

Dimension legend as in :mod:`fastconv._geometry`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fastconv import _blocking, _plan, _winograd
from fastconv._blas import single_threaded_blas
from fastconv._dispatch import (
    _conv_cvec,
    _conv_direct,
    _conv_gemm,
    _conv_wide,
    _conv_winograd,
    specialised,
)
from fastconv._geometry import ConvGeometry, conv_geometry, per_thread, per_thread_scratch
from fastconv._plan import Plan
from fastconv._typing import FloatArray


def forward(plan: Plan, geom: ConvGeometry, x: FloatArray, w: FloatArray,
            b: FloatArray | None, y: FloatArray, columns: FloatArray | None = None) -> None:
    """y = conv(x, w) + b; ``columns``: x's columns from :func:`pack_columns`."""
    plan = _fallback_if_nonfinite(plan, x)
    if plan.kernel == "gemm":
        _gemm_forward(plan, geom, x, w, b, y, columns)
    elif plan.kernel == "winograd":
        _winograd_forward(geom, x, _transformed(w, "forward"), b, y, plan.n_threads,
                          plan.winograd_tile)
    elif plan.kernel == "channel_vector":
        _conv_cvec.conv2d_forward(x, _channel_vector_packed(w, geom.groups), b, y,
                                  *_channel_vector_forward_args(plan, geom, _scratch(plan, y)))
    elif plan.kernel == "wide_rows":
        _conv_wide.conv2d_forward(x, w, b, y, *_wide_forward_args(plan, geom, _scratch(plan, y)))
    else:
        _conv_direct.conv2d_forward(x, w, b, y, *geom.kernel_args, plan.n_threads)


def forward_max_pool(plan: Plan, geom: ConvGeometry, x: FloatArray, w: FloatArray,
                     b: FloatArray | None, pooled: FloatArray,
                     idx: NDArray[np.int64] | None) -> None:
    """pooled (and idx) = max_pool2d(conv(x, w) + b, 2) in one pass of the wide-row or
    channel-vectorised kernel at stride 1 (the plan's, bands of an even number of rows;
    no fallback): each task pools its own output rows, and the convolution's output is
    never written."""
    (pt, _), (pl, _) = geom.padding
    if plan.kernel == "channel_vector":
        _conv_cvec.conv2d_forward_max_pool(
            x, _channel_vector_packed(w, geom.groups), b, pooled, idx,
            _scratch(plan, pooled), _tap_offsets(plan, geom), geom.oh, geom.ow, geom.kh,
            geom.kw, pt, pl, *geom.dilation, plan.rows, plan.n_threads)
        return
    _conv_wide.conv2d_forward_max_pool(x, w, b, pooled, idx, _scratch(plan, pooled),
                                       geom.oh, geom.ow, pt, pl, *geom.dilation,
                                       geom.groups, plan.n_threads)


def forward_runner(plan: Plan, geom: ConvGeometry, w: FloatArray,
                   b: FloatArray | None) -> Callable[[FloatArray, FloatArray], None]:
    """``forward(plan, geom, x, w, b, y)`` as ``run(x, y)`` for x of this geometry, what
    the kernel needs besides x made once: its workspace and, for the channel-vectorised
    kernel, the packed weights' array (refilled from w on every call, as w may have
    changed in place). A compiled layer stack runs this (fastconv.nn._program)."""
    if plan.fallback is None and plan.kernel == "wide_rows":
        args = _wide_forward_args(plan, geom, _workspace(plan, w))
        wide = specialised(_conv_wide.conv2d_forward, w.dtype)
        return lambda x, y: wide(x, w, b, y, *args)
    if plan.fallback is None and plan.kernel == "channel_vector":
        packed = _channel_vector_packed(w, geom.groups)
        w_taps = w.reshape(geom.k, geom.cg, geom.taps)  # a view
        args = _channel_vector_forward_args(plan, geom, _workspace(plan, w))
        pack = specialised(_conv_cvec.pack_weights, w.dtype)
        channel_vector = specialised(_conv_cvec.conv2d_forward, w.dtype)

        def run(x: FloatArray, y: FloatArray) -> None:
            pack(w_taps, packed, False)
            channel_vector(x, packed, b, y, *args)
        return run
    return lambda x, y: forward(plan, geom, x, w, b, y)


def input_grad_output(plan: Plan, shape: tuple[int, ...], dtype: Any,
                      bias: FloatArray | None = None) -> tuple[FloatArray, bool]:
    """(gx, zeroed): the array an input-gradient pass writes. Zeros where the plan's
    GEMM kernel sums into it (the OS hands out zeroed pages: no pass over gx), else
    uninitialised; ``zeroed`` goes to :func:`input_grad`."""
    if plan.kernel == "gemm" and not plan.pointwise and bias is None:
        return np.zeros(shape, dtype=dtype), True
    return np.empty(shape, dtype=dtype), False


def input_grad(plan: Plan, geom: ConvGeometry, gy: FloatArray, w: FloatArray,
               gx: FloatArray, bias: FloatArray | None = None, zeroed: bool = False) -> None:
    """gx = the gradient of conv with respect to its input, plus ``bias`` per channel
    of gx when given (transposed convolution's bias); ``zeroed``: gx is all zeros."""
    plan = _fallback_if_nonfinite(plan, gy, w)
    if plan.kernel == "gemm":
        with single_threaded_blas():
            _conv_gemm.conv2d_input_grad(gy, w, bias, gx, _scratch(plan, gx),
                                         *geom.kernel_args, plan.rows, plan.channel_block,
                                         plan.n_threads, plan.pointwise, zeroed)
    elif plan.kernel == "winograd":
        # the rotated kernel depends on the groups too: one w may serve several
        rotated = _transformed(w, f"input_grad/{geom.groups}",
                               lambda: _input_grad_kernel(w, geom))
        _winograd_forward(_plan.input_grad_geometry(geom), gy, rotated, bias, gx,
                          plan.n_threads, plan.winograd_tile)
    elif plan.kernel == "channel_vector_scatter":
        (pt, _), (pl, _) = geom.padding
        _conv_cvec.conv2d_input_grad(gy, _scatter_packed(w, geom), bias, gx,
                                     _scratch(plan, gx), geom.kh, geom.kw, *geom.stride,
                                     pt, pl, *geom.dilation, plan.n_threads)
    elif plan.kernel == "wide_rows" and not geom.stride_one:
        _wide_phases_input_grad(plan, geom, gy, w, gx, bias)
    elif plan.kernel == "wide_rows":
        # a stride-1 conv's input gradient is a stride-1 conv of gy, padded by the
        # kernel's reach less the forward padding, with the rotated kernel
        (pt, _), (pl, _) = geom.padding
        dh, dw = geom.dilation
        _conv_wide.conv2d_forward(gy, _input_grad_kernel(w, geom), bias, gx,
                                  _scratch(plan, gx), (geom.kh - 1) * dh - pt,
                                  (geom.kw - 1) * dw - pl, dh, dw, geom.groups, plan.n_threads)
    else:
        _conv_direct.conv2d_input_grad(gy, w, bias, gx, *geom.kernel_args, plan.n_threads)


def weight_grad(plan: Plan, geom: ConvGeometry, gy: FloatArray, x: FloatArray,
                gw: FloatArray, columns: FloatArray | None = None) -> None:
    """gw = the gradient of conv with respect to its weights, summed over the batch;
    ``columns``: x's columns from :func:`pack_columns`."""
    if plan.kernel == "wide_rows" and plan.fallback is not None:
        _wide_weight_grad(plan, geom, gy, x, gw)
        if _wide_sums_hold(plan, gw, x):
            return
        plan = plan.fallback
    plan = _fallback_if_nonfinite(plan, x)
    if plan.kernel == "gemm":
        partials = np.empty((plan.chunks, gw.size) if plan.chunks > 1 else (1, 1), gw.dtype)
        workspace = _scratch(plan, gw) if columns is None else columns
        with single_threaded_blas():
            _conv_gemm.conv2d_weight_grad(gy, x, gw, partials, workspace, *geom.kernel_args,
                                          plan.rows, plan.channel_block, plan.chunks,
                                          plan.n_threads, plan.pointwise, columns is not None)
    elif plan.kernel == "channel_vector":
        _channel_vector_weight_grad(plan, geom, gy, x, gw)
    elif plan.kernel == "wide_rows":
        _wide_weight_grad(plan, geom, gy, x, gw)
    else:
        gy_nonfinite = not _finite(gy)  # then the products with the padding count too
        _conv_direct.conv2d_weight_grad(gy, x, gw, *geom.kernel_args, plan.n_threads,
                                        gy_nonfinite)


def _wide_weight_grad(plan: Plan, geom: ConvGeometry, gy: FloatArray, x: FloatArray,
                      gw: FloatArray) -> None:
    """gw from double partial sums over fixed chunks of images, added in chunk order."""
    partials = np.empty((plan.chunks, gw.size), dtype=np.float64)
    (pt, _), (pl, _) = geom.padding
    _conv_wide.conv2d_weight_grad(gy, x, partials, _scratch(plan, gw), geom.kh, geom.kw,
                                  pt, pl, *geom.dilation, geom.groups, plan.n_threads,
                                  *geom.stride)
    _add_chunks(partials, gw)


def weight_grad_max_pool(plan: Plan, geom: ConvGeometry, pooled_gy: FloatArray,
                         idx: NDArray[np.int64], x: FloatArray, gw: FloatArray) -> bool:
    """gw = weight_grad of gy = max_pool2d_backward(pooled_gy, idx, geom.y_shape), by the
    wide-row kernel at stride 1 (the plan's) without making gy: each task scatters the
    pooled gradients into its own wide rows. False where x holds inf or NaN that made
    NaN in gw the loops would not make (gw then not to be used: the caller runs the
    layers, whose plan falls back to the loops)."""
    partials = np.empty((plan.chunks, gw.size), dtype=np.float64)
    (pt, _), (pl, _) = geom.padding
    bad = _conv_wide.conv2d_weight_grad_max_pool(
        pooled_gy, idx, x, partials, _scratch(plan, gw), geom.oh, geom.ow, geom.kh,
        geom.kw, pt, pl, *geom.dilation, geom.groups, plan.n_threads)
    if bad:
        raise ValueError(f"{bad} max-pooling indices lie outside [0, {geom.oh * geom.ow})")
    _add_chunks(partials, gw)
    return _wide_sums_hold(plan, gw, x)


def _wide_sums_hold(plan: Plan, gw: FloatArray, x: FloatArray) -> bool:
    """Whether a wide-row weight gradient gw stands, checked after the fact: the wide rows
    multiply x past each row's end by zeros, so an inf or NaN of x makes NaN there where
    the loops (the plan's fallback) make none. A finite gw holds (no inf or NaN of x was
    multiplied: the loops' products are a subset of the wide rows'), and so does one made
    from a finite x (an overflow); only then is x read, not on every call (a pass over x
    cost a fifth of LeNet-5's first weight gradient)."""
    return plan.fallback is None or _finite(gw) or _finite(x)


def _add_chunks(partials: NDArray[np.float64], gw: FloatArray) -> None:
    """gw = the wide-row weight gradient's per-chunk double sums added in chunk order."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf and NaN are results here
        gw.reshape(-1)[...] = np.add.reduce(partials, axis=0)


def pack_columns(geom: ConvGeometry, x: FloatArray, n_threads: int) -> FloatArray:
    """x's columns for every image, (N * G, CKK * OH * OW), packed once for two passes
    whose plans say ``packed_columns``."""
    columns = np.empty((geom.n * geom.groups, geom.ckk * geom.oh * geom.ow), dtype=x.dtype)
    _conv_gemm.im2col_images(x, columns, geom.kh, geom.kw, *geom.kernel_args, geom.oh,
                             geom.ow, n_threads)
    return columns


# --- helpers -------------------------------------------------------------------------------


def _finite(a: FloatArray) -> bool:
    # max and min (NaN propagates through both) cost a third of a float64 sum
    return bool(np.isfinite(a.max()) and np.isfinite(a.min())) if a.size else True


def _fallback_if_nonfinite(plan: Plan, *operands: FloatArray) -> Plan:
    """The plan's fallback where its named operand holds inf or NaN (``operands`` are
    the pass's data operand, then w)."""
    if plan.fallback is None:
        return plan
    operand = operands[-1] if plan.nonfinite_operand == "w" else operands[0]
    return plan if _finite(operand) else plan.fallback


def _workspace(plan: Plan, out: FloatArray) -> FloatArray:
    """The plan's per-thread workspace of ``out``'s dtype, its own (a runner keeps it)."""
    return per_thread(plan.n_threads, plan.workspace, out.dtype, f"the {plan.kernel} workspace")


def _scratch(plan: Plan, out: FloatArray) -> FloatArray:
    """The plan's per-thread workspace for one call, from this thread's reused scratch."""
    return per_thread_scratch(plan.n_threads, plan.workspace, out.dtype,
                              f"the {plan.kernel} workspace")


def _gemm_forward(plan: Plan, geom: ConvGeometry, x: FloatArray, w: FloatArray,
                  b: FloatArray | None, y: FloatArray, columns: FloatArray | None) -> None:
    if plan.shifted_rows:
        (pt, _), (dh, _) = geom.padding[0], geom.dilation
        taps = np.empty((geom.kh, geom.k, geom.cg), dtype=y.dtype)
        with single_threaded_blas():
            _conv_gemm.conv2d_forward_column_kernel(x, w, b, y, taps, pt, dh, geom.groups,
                                                    plan.rows, plan.n_threads)
        return
    workspace = _scratch(plan, y) if columns is None else columns
    if plan.row_pixels:  # views of x and y as rows of that many pixels
        x = x.reshape(x.shape[0], x.shape[1], -1, plan.row_pixels)
        y = y.reshape(y.shape[0], y.shape[1], -1, plan.row_pixels)
    with single_threaded_blas():
        _conv_gemm.conv2d_forward(x, w, b, y, workspace, *geom.kernel_args, plan.rows,
                                  plan.channel_block, plan.n_threads, plan.pointwise,
                                  columns is not None)


def _wide_forward_args(plan: Plan, geom: ConvGeometry,
                       workspace: FloatArray) -> tuple[Any, ...]:
    """The wide-row forward's arguments after (x, w, b, y)."""
    (pt, _), (pl, _) = geom.padding
    return (workspace, pt, pl, *geom.dilation, geom.groups, plan.n_threads, *geom.stride)


def _input_grad_kernel(w: FloatArray, geom: ConvGeometry) -> FloatArray:
    """The kernel of a stride-1 conv's input gradient, itself a stride-1 conv of gy:
    w rotated 180 degrees with its channel axes swapped per group, (C, K/G, KH, KW)."""
    k, cg, kh, kw = w.shape
    g = geom.groups
    w_t = (w.reshape(g, k // g, cg, kh, kw)[:, :, :, ::-1, ::-1]
           .transpose(0, 2, 1, 3, 4).reshape(g * cg, k // g, kh, kw))
    return np.ascontiguousarray(w_t)


def _phase_taps(phase: int, pad: int, stride: int, taps: int) -> tuple[int, int]:
    """(first tap, padding) along one axis for the input rows phase, phase + stride, ...
    of an undilated strided conv: the taps first, first + stride, ... reach them, and
    their stride-1 conv of gy (taps reversed) needs this padding (negative: a crop)."""
    first = (phase + pad) % stride
    reach = -(-(taps - first) // stride)  # how many taps: first, first + stride, ...
    return first, reach - 1 - (phase + pad - first) // stride


def _wide_phases_input_grad(plan: Plan, geom: ConvGeometry, gy: FloatArray, w: FloatArray,
                            gx: FloatArray, bias: FloatArray | None) -> None:
    """An undilated strided conv's input gradient, one stride-1 wide-row conv of gy per
    phase (a, b) of gx (its rows a, a + SH, ... and columns b, b + SW, ...): with the
    taps that reach them, rotated, their channel axes swapped (see _input_grad_kernel)."""
    (sh, sw), ((pt, _), (pl, _)) = geom.stride, geom.padding
    workspace = _scratch(plan, gx)
    for a in range(min(sh, geom.h)):
        i0, pad_top = _phase_taps(a, pt, sh, geom.kh)
        for b in range(min(sw, geom.w)):
            j0, pad_left = _phase_taps(b, pl, sw, geom.kw)
            target = gx[:, :, a::sh, b::sw]
            if i0 >= geom.kh or j0 >= geom.kw:  # no tap reaches these pixels
                target[...] = 0 if bias is None else bias[:, None, None]
                continue
            phase = np.empty(target.shape, dtype=gx.dtype)
            kernel = _input_grad_kernel(w[:, :, i0::sh, j0::sw], geom)
            _conv_wide.conv2d_forward(gy, kernel, bias, phase, workspace, pad_top, pad_left,
                                      1, 1, geom.groups, plan.n_threads)
            target[...] = phase


# --- channel-vectorised kernels ------------------------------------------------------------


def _channel_vector_packed(w: FloatArray, groups: int) -> FloatArray:
    """Weights (K, CG, KH, KW) packed for the channel-vectorised kernels: (G, CKK, KP),
    taps major, output channels contiguous and zero-padded to whole SIMD vectors."""
    k, cg, kh, kw = w.shape
    packed = np.empty((groups, cg * kh * kw,
                       _blocking.channel_vector_padded(k // groups, w.dtype)), dtype=w.dtype)
    _conv_cvec.pack_weights(w.reshape(k, cg, kh * kw), packed, False)
    return packed


def _scatter_packed(w: FloatArray, geom: ConvGeometry) -> FloatArray:
    """Weights packed for the scatter input gradient: (G, KG * KH * KW, CP), x's
    channels contiguous and zero-padded to whole SIMD vectors."""
    packed = np.empty((geom.groups, geom.kg * geom.taps,
                       _blocking.channel_vector_padded(geom.cg, w.dtype)), dtype=w.dtype)
    _conv_cvec.pack_weights(w.reshape(geom.k, geom.cg, geom.taps), packed, True)
    return packed


def _tap_offsets(plan: Plan, geom: ConvGeometry) -> NDArray[np.intp]:
    """Offsets of the taps (c, i, j) in a band of ``plan.rows`` output rows."""
    hp, wp = _conv_cvec.band_extent(plan.rows, geom.ow, geom.kh, geom.kw, *geom.stride,
                                    *geom.dilation)
    return _band_tap_offsets(geom.cg, geom.kh, geom.kw, geom.dilation[0] * wp,
                             geom.dilation[1], hp * wp)


@functools.lru_cache(maxsize=64)
def _band_tap_offsets(c_in: int, kh: int, kw: int, row_step: int, col_step: int,
                      plane: int) -> NDArray[np.intp]:
    """Offsets c * plane + i * row_step + j * col_step of the taps (c, i, j) in order,
    read-only (cached: a LeNet layer asks for the same ones on every call)."""
    offsets = (np.arange(c_in, dtype=np.intp)[:, None, None] * plane
               + np.arange(kh, dtype=np.intp)[:, None] * row_step
               + np.arange(kw, dtype=np.intp) * col_step).ravel()
    offsets.flags.writeable = False
    return offsets


def _channel_vector_forward_args(plan: Plan, geom: ConvGeometry,
                                 workspace: FloatArray) -> tuple[Any, ...]:
    """The channel-vectorised forward's arguments after (x, packed w, b, y)."""
    (pt, _), (pl, _) = geom.padding
    return (workspace, _tap_offsets(plan, geom), geom.kh, geom.kw, *geom.stride,
            pt, pl, *geom.dilation, plan.rows, plan.n_threads)


def _channel_vector_weight_grad(plan: Plan, geom: ConvGeometry, gy: FloatArray, x: FloatArray,
                                gw: FloatArray) -> None:
    """gw from partial sums over fixed chunks of (image, band) units, reduced in order."""
    kp = _blocking.channel_vector_padded(geom.kg, gw.dtype)
    partials = np.empty((plan.chunks, geom.groups, geom.ckk, kp), dtype=gw.dtype)
    (pt, _), (pl, _) = geom.padding
    _conv_cvec.conv2d_weight_grad(gy, x, partials, _scratch(plan, gw), _tap_offsets(plan, geom),
                                  geom.kh, geom.kw, *geom.stride, pt, pl, *geom.dilation,
                                  plan.rows, plan.n_threads)
    with np.errstate(invalid="ignore", over="ignore"):  # inf and NaN are results here
        total = np.add.reduce(partials, axis=0)  # one fixed order for any thread count
    gw[...] = total[:, :, :geom.kg].transpose(0, 2, 1).reshape(gw.shape)


# --- Winograd -------------------------------------------------------------------------------

#: The transformed weights of one Winograd pass for an output tile size, computed or
#: found on first use.
Transformed = Callable[[int], FloatArray]


def _transformed(w: FloatArray, role: str,
                 prepare: Callable[[], FloatArray] | None = None) -> Transformed:
    """Called only by the kernel that needs it, so a pass that finds no work (an empty
    phase) transforms nothing."""
    return lambda tile: _winograd.CACHE.get(w, tile, role, prepare)


def _winograd_forward(geom: ConvGeometry, x: FloatArray, u: Transformed, b: FloatArray | None,
                      y: FloatArray, n_threads: int, tile: int) -> None:
    """y = conv(x, w) + b by Winograd F(tile x tile, 3x3), u giving w's transform; a
    dilated kernel by phases (all on the one tile size the plan chose)."""
    if geom.dilation != (1, 1):
        _winograd_phases(geom, x, u, b, y, n_threads, tile)
        return
    (pt, _), (pl, _) = geom.padding
    _winograd_kernel(geom, x, u, b, y, pt, pl, n_threads, tile)


def _winograd_kernel(geom: ConvGeometry, x: FloatArray, u: Transformed, b: FloatArray | None,
                     y: FloatArray, pt: int, pl: int, n_threads: int, tile: int) -> None:
    """The undilated kernel, top/left padding pt, pl (y's shape implies the rest)."""
    block = _blocking.winograd_block(geom, tile)
    size = _conv_winograd.workspace_elements(geom.cg, geom.kg, tile, block)
    workspace = per_thread_scratch(n_threads, size, y.dtype, "the winograd workspace")
    with single_threaded_blas():
        _conv_winograd.conv2d_forward(x, u(tile), b, y, workspace, pt, pl, geom.groups, tile,
                                      block, n_threads)


def _winograd_phases(geom: ConvGeometry, x: FloatArray, u: Transformed, b: FloatArray | None,
                     y: FloatArray, n_threads: int, tile: int) -> None:
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

    def undilated(x_shape: tuple[int, ...], out_hw: tuple[int, int]) -> ConvGeometry:
        return conv_geometry(x_shape, geom.w_shape, 1, 0, 1, geom.groups, out_hw=out_hw)

    if (len({v.shape for v in x_views}) == 1 and len(set(out_hws)) == 1
            and len({pads for _, _, pads in phases}) == 1 and x_views[0].size):
        # One call over all phases stacked along the batch: longer GEMMs, one setup.
        # The strided split and merge run on every thread (NumPy's copies use one).
        x_stack = np.empty((len(phases) * geom.n, *x_views[0].shape[1:]), dtype=x.dtype)
        _conv_winograd.split_phases(x, x_stack, np.array([s for _, s, _ in phases], np.intp),
                                    dh, dw, n_threads)
        y_stack = np.empty((x_stack.shape[0], geom.k, *out_hws[0]), dtype=y.dtype)
        _winograd_kernel(undilated(x_stack.shape, out_hws[0]), x_stack, u, b, y_stack,
                         *phases[0][2], n_threads, tile)
        _conv_winograd.merge_phases(y_stack, y, np.array([o for o, _, _ in phases], np.intp),
                                    dh, dw, n_threads)
        return
    for ((r, c), _, pads), x_view, out_hw in zip(phases, x_views, out_hws):
        y_phase = np.empty((geom.n, geom.k, *out_hw), dtype=y.dtype)
        if x_view.size == 0:  # every tap of this phase falls in the padding
            y_phase[...] = 0 if b is None else b[None, :, None, None]
        else:
            x_phase = np.ascontiguousarray(x_view)
            _winograd_kernel(undilated(x_phase.shape, out_hw), x_phase, u, b, y_phase, *pads,
                             n_threads, tile)
        y[:, :, r::dh, c::dw] = y_phase


def run_into_scratch(plan: Plan, geom: ConvGeometry, operands: tuple[Any, ...]) -> None:
    """Run one pass of ``plan`` into a scratch output (the autotuner times this).
    ``operands``: (x, w, b, y), (gy, w, gx) or (gy, x, gw) as the pass takes them; only
    the output's shape and dtype are read."""
    scratch = np.empty(operands[-1].shape, dtype=operands[-1].dtype)
    if plan.pass_ == "forward":
        x, w, b, _ = operands
        forward(plan, geom, x, w, b, scratch)
    elif plan.pass_ == "input_grad":
        gy, w, _ = operands
        input_grad(plan, geom, gy, w, scratch)
    else:
        gy, x, _ = operands
        weight_grad(plan, geom, gy, x, scratch)
