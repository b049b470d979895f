"""conv2d, conv_transpose2d and their backwards: validate, plan, run.

Each public function turns its operands into C-contiguous arrays of one float
dtype, validates every argument into a geometry (:mod:`fastconv._geometry`), asks
the planner (:mod:`fastconv._plan`) which kernel each pass runs, allocates the
outputs and hands both to the executor (:mod:`fastconv._execute`).
``fastconv.functional`` re-exports them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastconv import _config, _execute, _plan
from fastconv._dispatch import _conv_direct
from fastconv._geometry import ConvGeometry, conv_geometry, transpose_geometry
from fastconv._plan import Plan
from fastconv._typing import FloatArray, IntPair, Padding
from fastconv._validation import as_array, as_contiguous, check_ndim, result_dtype

# (explain and ConvPlans are fastconv's, not functional's: they compute nothing)
__all__ = ["conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward"]

PASSES = _plan.PASSES


def _as_operands(x: ArrayLike, w: ArrayLike, extra: Sequence[tuple[str, ArrayLike]] = (),
                 w_layout: str = "(K, C/groups, KH, KW)",
                 ) -> tuple[type[np.floating[Any]], FloatArray, FloatArray, list[FloatArray]]:
    """Validate ndim and dtype of x, w (and gy...), returning contiguous arrays."""
    x = as_array(x, "x")
    w = as_array(w, "w")
    check_ndim(x, "x", 4, "(N, C, H, W)")
    check_ndim(w, "w", 4, w_layout)
    extra_arrays = [as_array(value, name) for name, value in extra]
    dtype = result_dtype(x, w, *extra_arrays)
    return (dtype, as_contiguous(x, dtype), as_contiguous(w, dtype),
            [as_contiguous(e, dtype) for e in extra_arrays])


def _as_bias(b: ArrayLike, channels: int, dtype: type[np.floating[Any]]) -> FloatArray:
    b = as_contiguous(as_array(b, "b"), dtype)
    if b.shape != (channels,):
        raise ValueError(f"b must have shape ({channels},) (one per output channel), got {b.shape}")
    return b


def _check_gy(gy: FloatArray, shape: tuple[int, ...], op: str) -> None:
    check_ndim(gy, "gy", 4, "(N, K, OH, OW)")
    if gy.shape != shape:
        raise ValueError(f"gy must have the shape of {op}'s output {shape}, got {gy.shape}")


def _prepare_weights(w: FloatArray, flip: bool) -> FloatArray:
    """Kernel as the kernels read it: rotated 180 degrees for true convolution."""
    return np.ascontiguousarray(w[:, :, ::-1, ::-1]) if flip else w


def _bias_only(shape: tuple[int, ...], b: FloatArray | None, dtype: Any) -> FloatArray:
    """The output of a convolution with nothing to sum: zeros, plus the bias."""
    y = np.zeros(shape, dtype=dtype)
    if b is not None:
        y += b[None, :, None, None]
    return y


def _shaped(shape: tuple[int, ...], dtype: Any) -> FloatArray:
    """A stand-in for an output not yet allocated: its shape and dtype, no memory."""
    return np.broadcast_to(np.empty((), dtype=dtype), shape)


def _plan_pass(geom: ConvGeometry, pass_: str, algorithm: str, dtype: Any, n_threads: int,
               operands: tuple[Any, ...]) -> Plan:
    """The plan of one pass; with autotuning on, the planner times each candidate on
    these operands."""
    return _plan.plan(geom, pass_, dtype, n_threads, algorithm,
                      measure=lambda p: _execute.run_into_scratch(p, geom, operands))


def _bias_grad(gy: FloatArray, k: int, n_threads: int) -> FloatArray:
    """gy summed over N, OH, OW (zeros for an empty gy)."""
    gb = np.empty(k, dtype=gy.dtype) if gy.size else np.zeros(k, dtype=gy.dtype)
    if gy.size:
        _conv_direct.conv2d_bias_grad(gy, gb, n_threads)
    return gb


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
        ``"direct"``: the direct kernels (channel-vectorised, wide rows or loops
        over the output, whichever suits the shape). ``"im2col"``: per-thread im2col
        bands and a BLAS GEMM. ``"winograd"``: Winograd F(4x4, 3x3), or F(2x2, 3x3)
        where the batch makes fewer than 32 tiles of 4x4 (tile transforms and one
        BLAS GEMM per transform position), for 3x3 kernels with stride 1 only
        (any padding, dilation and groups; other shapes raise ValueError).
        ``"auto"`` chooses per pass by shape (:func:`fastconv.explain` prints the
        choice and why), or by timing with :func:`fastconv.set_autotune`. All agree within rounding
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
    With ``algorithm="winograd"`` the transformed weights are cached (up to
    512 MiB, least recently used dropped) and reused while the weights are
    unchanged: a NumPy call compares the weights with the cached copy, and
    ``fastconv.torch`` layers go by the parameter's identity and version, so
    weights changed in place are never served stale. Non-finite inputs spread within an
    output tile (4 x 4 or 2 x 2): an infinity can give NaN where the other algorithms
    give an infinity.
    """
    dtype, x, w, _ = _as_operands(x, w)
    geom = conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    if b is not None:
        b = _as_bias(b, geom.k, dtype)
    algorithm = _plan.check_algorithm(algorithm, geom)
    return conv2d_validated(geom, x, _prepare_weights(w, flip), b, algorithm)


def conv2d_validated(geom: ConvGeometry, x: FloatArray, w: FloatArray, b: FloatArray | None,
                     algorithm: str) -> FloatArray:
    """conv2d's work once its arguments are checked: ``x``, ``w`` (and ``b``) C-contiguous
    arrays of one float dtype whose shapes ``geom`` was made from, ``algorithm`` checked
    for it. A layer that has validated the same shapes and dtypes before calls this
    directly: the checks cost a third of a small layer's call."""
    if geom.empty:
        return _bias_only(geom.y_shape, b, x.dtype.type)
    y = np.empty(geom.y_shape, dtype=x.dtype)
    n_threads = _config.effective_n_threads()
    plan = _plan_pass(geom, "forward", algorithm, x.dtype.type, n_threads, (x, w, b, y))
    _execute.forward(plan, geom, x, w, b, y)
    return y


def pools_own_rows(geom: ConvGeometry, dtype: Any, algorithm: str) -> bool:
    """Whether conv2d's forward of ``geom`` can pool its own output rows
    (:func:`conv2d_max_pool_validated`)."""
    return _own_rows_plan(geom, dtype, algorithm) is not None


def _own_rows_plan(geom: ConvGeometry, dtype: Any, algorithm: str) -> Plan | None:
    """conv2d's forward plan of ``geom`` where it can pool its own output rows, an output
    of at least 2x2 at stride 1 and no fallback: the wide-row kernel, or the
    channel-vectorised one with bands of an even number of rows (an odd count above one
    is taken one lower: the workspace only shrinks)."""
    if geom.empty or geom.oh < 2 or geom.ow < 2 or not geom.stride_one:
        return None
    plan = _plan.plan(geom, "forward", dtype, _config.effective_n_threads(), algorithm)
    if plan.fallback is not None:
        return None
    if plan.kernel == "channel_vector" and plan.rows >= 2:
        return dataclasses.replace(plan, rows=plan.rows - plan.rows % 2)
    return plan if plan.kernel == "wide_rows" else None


def conv2d_max_pool_validated(geom: ConvGeometry, x: FloatArray, w: FloatArray,
                              b: FloatArray | None, algorithm: str
                              ) -> tuple[FloatArray, NDArray[np.int64]] | None:
    """``max_pool2d(conv2d_validated(geom, x, w, b, algorithm), 2, return_indices=True)``
    in one pass (the same values and indices), where conv2d's plan for ``geom`` is the
    wide-row or the channel-vectorised kernel at stride 1: it pools each task's output
    rows as it makes them, and the convolution's output is never written. None for any
    other plan (or an output under 2x2)."""
    plan = _own_rows_plan(geom, x.dtype.type, algorithm)
    if plan is None:
        return None
    pooled_shape = (geom.n, geom.k, geom.oh // 2, geom.ow // 2)
    pooled = np.empty(pooled_shape, dtype=x.dtype)
    idx = np.empty(pooled_shape, dtype=np.int64)
    _execute.forward_max_pool(plan, geom, x, w, b, pooled, idx)
    return pooled, idx


def conv2d_weight_grad_max_pool_validated(
        geom: ConvGeometry, pooled_gy: FloatArray, idx: NDArray[np.int64], x: FloatArray,
        algorithm: str) -> tuple[FloatArray, FloatArray] | None:
    """(gw, gb) of conv2d for the gradient ``max_pool2d_backward(pooled_gy, idx,
    geom.y_shape)`` of its output, without making that gradient, where the weight
    gradient's plan is the wide-row kernel at stride 1 and its result holds (an x with
    inf or NaN may need the loops: _execute.weight_grad_max_pool): None otherwise.
    ``pooled_gy`` and ``idx`` of shape (N, K, OH // 2, OW // 2), C-contiguous, the dtype
    of x; gb is pooled_gy summed (its order of sums is not that of the full gy)."""
    if geom.empty or not geom.stride_one:
        return None
    n_threads = _config.effective_n_threads()
    plan = _plan.plan(geom, "weight_grad", x.dtype.type, n_threads, algorithm)
    if plan.kernel != "wide_rows":
        return None
    gw = np.empty(geom.w_shape, dtype=x.dtype)
    if not _execute.weight_grad_max_pool(plan, geom, pooled_gy, idx, x, gw):
        return None
    return gw, _bias_grad(pooled_gy, geom.k, _plan.threads_for(geom, n_threads))


def conv2d_runner(geom: ConvGeometry, w: FloatArray, b: FloatArray | None,
                  algorithm: str) -> tuple[Callable[[FloatArray, FloatArray], None], bool]:
    """conv2d's forward for inputs of ``geom`` as ``(run(x, y), uses_blas)``: planned
    once (as :func:`conv2d_validated` plans each call), with what its kernel needs made
    once (:func:`fastconv._execute.forward_runner`). ``w`` and ``b`` as for
    conv2d_validated, ``geom`` not empty; ``uses_blas``: the kernel calls BLAS."""
    n_threads = _config.effective_n_threads()
    stand_ins = (np.zeros(geom.x_shape, w.dtype), w, b, np.empty(geom.y_shape, w.dtype))
    plan = _plan_pass(geom, "forward", algorithm, w.dtype.type, n_threads, stand_ins)
    uses_blas = plan.kernel in ("gemm", "winograd") or plan.fallback is not None
    return _execute.forward_runner(plan, geom, w, b), uses_blas


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
    geom = conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    _check_gy(gy, geom.y_shape, "conv2d")
    algorithm = _plan.check_algorithm(algorithm, geom)
    gx, gw, gb = conv2d_backward_validated(geom, gy, x, _prepare_weights(w, flip), algorithm,
                                           needs_input_grad)
    if flip:
        gw = np.ascontiguousarray(gw[:, :, ::-1, ::-1])
    return gx, gw, gb


def conv2d_backward_validated(geom: ConvGeometry, gy: FloatArray, x: FloatArray,
                              w_eff: FloatArray, algorithm: str, needs_input_grad: bool,
                              ) -> tuple[FloatArray | None, FloatArray, FloatArray]:
    """conv2d_backward's work (unflipped) once its arguments are checked: ``gy``, ``x``
    and ``w_eff`` C-contiguous arrays of one float dtype whose shapes ``geom`` was made
    from, ``algorithm`` checked for it. A layer whose forward checked the same input
    calls this directly, as its forward calls :func:`conv2d_validated`."""
    dtype = x.dtype.type
    # a small call's bias gradient wakes no more threads than its passes' plans take
    n_threads = _plan.threads_for(geom, _config.effective_n_threads())
    gb = _bias_grad(gy, geom.k, n_threads)
    if geom.empty:
        gx_empty = np.zeros(x.shape, dtype=dtype) if needs_input_grad else None
        return gx_empty, np.zeros(geom.w_shape, dtype=dtype), gb
    gx = None
    if needs_input_grad:
        plan = _plan_pass(geom, "input_grad", algorithm, dtype, n_threads,
                          (gy, w_eff, _shaped(x.shape, dtype)))
        gx, zeroed = _execute.input_grad_output(plan, x.shape, dtype)
        _execute.input_grad(plan, geom, gy, w_eff, gx, zeroed=zeroed)
    gw = np.empty(geom.w_shape, dtype=dtype)
    plan = _plan_pass(geom, "weight_grad", algorithm, dtype, n_threads, (gy, x, gw))
    _execute.weight_grad(plan, geom, gy, x, gw)
    return gx, gw, gb


# --- transposed convolution: the adjoint of conv2d, run on conv2d's kernels -------


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
    geom = transpose_geometry(x.shape, w.shape, stride, padding, output_padding, dilation,
                              groups, output_size)
    if b is not None:
        b = _as_bias(b, geom.y_shape[1], dtype)
    algorithm = _plan.check_algorithm(algorithm, transpose=True)
    if geom.conv.empty:
        return _bias_only(geom.y_shape, b, dtype)
    algorithm = _plan.check_algorithm(algorithm, geom.conv)
    n_threads = _config.effective_n_threads()
    plan = _plan_pass(geom.conv, "input_grad", algorithm, dtype, n_threads,
                      (x, w, _shaped(geom.y_shape, dtype)))
    y, zeroed = _execute.input_grad_output(plan, geom.y_shape, dtype, b)
    _execute.input_grad(plan, geom.conv, x, w, y, bias=b, zeroed=zeroed)
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
    geom = transpose_geometry(x.shape, w.shape, stride, padding, output_padding, dilation,
                              groups, output_size)
    _check_gy(gy, geom.y_shape, "conv_transpose2d")
    algorithm = _plan.check_algorithm(algorithm, transpose=True)
    algorithm = _plan.check_algorithm(algorithm, geom.conv)
    conv = geom.conv
    # the bias gradient and the packed columns take the threads the plans take
    n_threads = _plan.threads_for(conv, _config.effective_n_threads())
    gb = _bias_grad(gy, geom.y_shape[1], n_threads)
    if conv.empty:
        gx_empty = np.zeros(x.shape, dtype=dtype) if needs_input_grad else None
        return gx_empty, np.zeros(w.shape, dtype=dtype), gb
    gw = np.empty(w.shape, dtype=dtype)
    wgrad_plan = _plan_pass(conv, "weight_grad", algorithm, dtype, n_threads, (x, gy, gw))
    if not needs_input_grad:
        _execute.weight_grad(wgrad_plan, conv, x, gy, gw)
        return None, gw, gb
    gx = np.empty(x.shape, dtype=dtype)
    fwd_plan = _plan_pass(conv, "forward", algorithm, dtype, n_threads, (gy, w, None, gx))
    # both passes read gy's columns: packed once where both run im2col
    fwd_plan, wgrad_plan = _plan.share_columns(conv, fwd_plan, wgrad_plan)
    columns = _execute.pack_columns(conv, gy, n_threads) if fwd_plan.packed_columns else None
    _execute.forward(fwd_plan, conv, gy, w, None, gx, columns)
    _execute.weight_grad(wgrad_plan, conv, x, gy, gw, columns)
    return gx, gw, gb


# --- plans without running them ---------------------------------------------------------


class ConvPlans:
    """The plans of every pass of one convolution, as :func:`explain` returns them.

    Attributes
    ----------
    op : str
        ``"conv2d"`` or ``"conv_transpose2d"``.
    geometry : ConvGeometry
        The convolution the kernels run (for a transposed convolution: the one it is
        the adjoint of, whose input gradient is its forward).
    plans : dict
        ``{"forward": Plan, "input_grad": Plan, "weight_grad": Plan}``, keyed by the
        pass of ``op`` (for ``conv_transpose2d``, its forward runs conv2d's input
        gradient kernel, and its input gradient conv2d's forward).

    Examples
    --------
    >>> import fastconv
    >>> plans = fastconv.explain((8, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    >>> [plans[p].kernel for p in ("forward", "input_grad", "weight_grad")]
    ['channel_vector', 'gemm', 'channel_vector']
    >>> print(plans)  # doctest: +ELLIPSIS
    conv2d: x (8, 3, 224, 224) w (64, 3, 7, 7) -> y (8, 64, 112, 112), ...
      forward     channel_vector         (direct) | rows ...
    """

    def __init__(self, op: str, geometry: ConvGeometry, plans: dict[str, Plan]) -> None:
        self.op, self.geometry, self.plans = op, geometry, plans

    def __getitem__(self, pass_: str) -> Plan:
        return self.plans[pass_]

    def __str__(self) -> str:
        lines = [f"{self.op}: {self.geometry.describe()}"]
        for op_pass, plan in self.plans.items():
            runs = "" if plan.pass_ == op_pass else f" [conv2d's {plan.pass_}]"
            lines.append(f"  {op_pass:<11} {plan.describe()}{runs}")
        return "\n".join(lines)

    __repr__ = __str__


def _shape_and_dtype(value: Any, name: str) -> tuple[tuple[int, ...], Any]:
    if isinstance(value, (tuple, list)) and all(isinstance(v, (int, np.integer)) for v in value):
        return tuple(int(v) for v in value), None
    array = as_array(value, name)
    return array.shape, result_dtype(array)


def explain(x: Any, w: Any, stride: IntPair = 1, padding: Padding = 0, dilation: IntPair = 1,
            groups: int = 1, *, algorithm: str = "auto", transpose: bool = False,
            output_padding: IntPair = 0, dtype: Any = None,
            n_threads: int | None = None) -> ConvPlans:
    """The kernel each pass of a convolution would run, and why, without running it.

    Parameters
    ----------
    x, w : array_like or shape tuple
        The operands of :func:`conv2d` (or, with ``transpose``, of
        :func:`conv_transpose2d`), or just their shapes.
    stride, padding, dilation, groups, algorithm
        As :func:`conv2d` takes them.
    transpose : bool, default False
        Explain :func:`conv_transpose2d` (``output_padding`` as it takes it).
    output_padding : int or (int, int), default 0
    dtype : float32 or float64, optional
        Default: what the arrays would give, float32 for shapes.
    n_threads : int, optional
        Default: :func:`fastconv.get_num_threads`'s count.

    Returns
    -------
    ConvPlans
        Printing it shows one line per pass: kernel, blocking, workspace and the
        rule that chose it. With autotuning on, passes already tuned show the
        measured choice.

    Examples
    --------
    >>> import fastconv
    >>> plans = fastconv.explain((64, 6, 14, 14), (16, 6, 5, 5))
    >>> plans["forward"].kernel, plans["weight_grad"].kernel
    ('channel_vector', 'channel_vector')
    >>> plans["input_grad"].algorithm
    'direct'
    >>> print(fastconv.explain((8, 64, 56, 56), (64, 64, 3, 3), padding=1)["forward"].kernel)
    winograd
    """
    x_shape, x_dtype = _shape_and_dtype(x, "x")
    w_shape, w_dtype = _shape_and_dtype(w, "w")
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"x and w must be 4-D (shapes or arrays), got {x_shape} and {w_shape}")
    if dtype is None:
        known = [d for d in (x_dtype, w_dtype) if d is not None]
        dtype = np.float64 if np.float64 in known else np.float32
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    threads = _config.effective_n_threads() if n_threads is None else int(n_threads)
    algorithm = _plan.check_algorithm(algorithm, transpose=transpose)
    if transpose:
        conv = transpose_geometry(x_shape, w_shape, stride, padding, output_padding, dilation,
                                  groups, None).conv
        conv_passes = {"forward": "input_grad", "input_grad": "forward",
                       "weight_grad": "weight_grad"}
    else:
        conv = conv_geometry(x_shape, w_shape, stride, padding, dilation, groups)
        conv_passes = {p: p for p in PASSES}
    algorithm = _plan.check_algorithm(algorithm, conv)
    plans = {op_pass: _plan.plan(conv, conv_pass, dtype, threads, algorithm)
             for op_pass, conv_pass in conv_passes.items()}
    if transpose:
        first, second = _plan.share_columns(conv, plans["input_grad"], plans["weight_grad"])
        plans.update(input_grad=first, weight_grad=second)
    return ConvPlans("conv_transpose2d" if transpose else "conv2d", conv, plans)
