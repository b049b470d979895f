"""Pooling: max (with indices), max unpooling, average, Lp and adaptive average, and
their backwards.

Each public function validates its operands and window into a
:class:`fastconv._geometry.PoolGeometry`, allocates the output and calls the one
kernel of its op in ``_kernels/_pool.pyx``; every kernel overwrites its output.
``fastconv.functional`` re-exports them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, Sequence, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastconv import _config
from fastconv._dispatch import _pool, specialised
from fastconv._geometry import (PoolGeometry, is_plain, per_thread, per_thread_row,
                                pool_geometry)
from fastconv._typing import FloatArray, IntPair
from fastconv._validation import (
    MAX_INDEX,
    as_array,
    as_contiguous,
    as_index,
    as_pair,
    check_ndim,
    check_size,
    result_dtype,
    spatial_size,
)

__all__ = [
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
]


# Elements of the larger of input and output per thread below which a pooling call
# takes fewer threads: as for convolutions (fastconv._plan.WORK_PER_THREAD), a spinning
# second thread costs the caller more than it saves (LeNet-5's pools at batch 1, 4.7 K
# elements: the same time on one thread as on two; a 7x7 mean over 1x512x7x7, 25 K
# elements, 12.5 us on one thread, 7.3 on two).
WORK_PER_THREAD = 1 << 13


#: a pooling forward bound to one input shape: run(x, y)
Runner = Callable[[FloatArray, FloatArray], None]
#: a pooling call checked: (output shape, kernel, window arguments, threads, workspace row)
Checked = tuple[tuple[int, int, int, int], Any, tuple[Any, ...], int, int]

#: checked calls kept (all dropped when full: a program uses a few shapes)
CHECKED_KEPT = 256
_CHECKED: dict[tuple[Any, ...], Checked] = {}


def _threads(elements: int) -> int:
    return _config.threads_for(elements, WORK_PER_THREAD)


#: dtypes the kernels take as they are (native byte order)
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _as_input(x: ArrayLike, name: str = "x", ndim: int = 4,
              layout: str = "(N, C, H, W)") -> FloatArray:
    """One float operand as a C-contiguous float32/float64 array of ``ndim`` dims."""
    if (type(x) is np.ndarray and x.dtype in _KERNEL_DTYPES and x.ndim == ndim
            and x.flags.c_contiguous and x.flags.aligned):
        return x  # what the checks below would return, without their microsecond
    x = as_array(x, name)
    check_ndim(x, name, ndim, layout)
    return as_contiguous(x, result_dtype(x))


def _pool_output(x_shape: tuple[int, ...], geom: PoolGeometry) -> tuple[int, int, int, int]:
    oh, ow = geom.out_hw
    shape = (x_shape[0], x_shape[1], oh, ow)
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
    window = (kernel_size, stride, padding, dilation, ceil_mode)
    shape, maximum, args, n_threads, row = _checked("max", x.shape, x.dtype, window)
    y = np.empty(shape, dtype=x.dtype)
    idx = np.empty(shape, dtype=np.int64) if return_indices else None  # None: values only
    if y.size:
        # per-thread argmax offsets within the window (int32)
        workspace = None if idx is None else np.empty((n_threads, row), dtype=np.intc)
        maximum(x, y, idx, workspace, *args, n_threads)
    return y if idx is None else (y, idx)


def _checked(op: str, x_shape: tuple[int, ...], dtype: Any,
             window: tuple[Any, ...]) -> Checked:
    """The checks of pooling ``op`` ("max" or "avg") for this input shape, dtype and
    window (the op's arguments after x, ceil_mode included), remembered for plain
    arguments: they are most of a small call's time (a 7x7 mean over 1x512x7x7: 10 ->
    7 us per call)."""
    key = (op, x_shape, dtype, window, _config.effective_n_threads())
    check = _max_checked if op == "max" else _avg_checked
    if not _plain_window(op, window):  # True == 1 hashes alike: never looked up
        return check(*key[1:])
    checked = _CHECKED.get(key)
    if checked is None:
        checked = check(*key[1:])
        if len(_CHECKED) >= CHECKED_KEPT:
            _CHECKED.clear()
        _CHECKED[key] = checked
    return checked


def _plain_window(op: str, window: tuple[Any, ...]) -> bool:
    """Window arguments safe as a cache key: plain ints (not bools or NumPy integers,
    which hash alike but are checked differently) and real bools for the flags."""
    if op == "max":
        sizes, flags = window[:4], window[4:]
    else:  # kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        sizes, flags = window[:3] + window[5:], window[3:5]
    return is_plain(sizes) and type(flags[0]) is bool and type(flags[-1]) is bool


def _max_checked(x_shape: tuple[int, ...], dtype: Any, window: tuple[Any, ...],
                 n_threads: int) -> Checked:
    kernel_size, stride, padding, dilation, ceil_mode = window
    geom = pool_geometry(x_shape[2:], kernel_size, stride, padding, dilation, ceil_mode,
                         x_shape[1])
    args = (*geom.kernel, *geom.stride, *geom.padding, *geom.dilation)
    # scratch: per-thread argmax offsets within the window (int32)
    return _call(x_shape, geom, specialised(_pool.max_pool2d_forward, dtype), args,
                 n_threads, np.intc)


def _avg_checked(x_shape: tuple[int, ...], dtype: Any, window: tuple[Any, ...],
                 n_threads: int) -> Checked:
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override = window
    geom = pool_geometry(x_shape[2:], kernel_size, stride, padding, 1, ceil_mode, x_shape[1])
    args = _avg_args(geom, count_include_pad, divisor_override)
    # scratch: per-thread rows of double sums
    return _call(x_shape, geom, specialised(_pool.avg_pool2d_forward, dtype), args,
                 n_threads, np.float64)


def _call(x_shape: tuple[int, ...], geom: PoolGeometry, kernel: Any, args: tuple[Any, ...],
          n_threads: int, scratch: Any) -> Checked:
    """The checked call of ``kernel``: its output shape and threads (at most
    ``n_threads``), and its per-thread scratch rows of dtype ``scratch``."""
    shape = _pool_output(x_shape, geom)
    threads = _config.threads_for(math.prod(x_shape), WORK_PER_THREAD, n_threads)
    row = per_thread_row(shape[3], scratch)
    check_size((threads, row), "the pooling workspace")
    return shape, kernel, args, threads, row


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
    n_bad = _pool.max_pool2d_backward(gy, idx, gx, _threads(gx.size))
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
        out_hw = spatial_size(output_size, 2, "output_size", "(OH, OW) or (N, C, OH, OW)")
        for size, d, s in zip(out_hw, default, stride):
            if not d - s < size < d + s:
                low = tuple(a - b for a, b in zip(default, stride))
                high = tuple(a + b for a, b in zip(default, stride))
                raise ValueError(f"output_size {out_hw} must lie strictly between {low} and {high}")
    if min(out_hw) < 1:
        raise ValueError(f"max_unpool2d output size {out_hw} must be positive")
    shape = (*y.shape[:2], *out_hw)
    check_size(shape, "the output")
    given, idx = _as_indices(idx, "idx", y.shape, "y")
    out = np.empty(shape, dtype=y.dtype)  # zeroed by the kernel, plane by plane
    n_bad = _pool.max_unpool2d(y, idx, out, _threads(out.size))
    _check_scatter(n_bad, given, "idx", out_hw[0] * out_hw[1])
    return out


def _avg_args(geom: PoolGeometry, count_include_pad: bool,
              divisor_override: int | None) -> tuple[int, int, int, int, int, int, bool, int]:
    if divisor_override is not None:
        # any non-zero int, as PyTorch (a negative one flips the sign)
        divisor_override = as_index(divisor_override, "divisor_override", -MAX_INDEX)
        if divisor_override == 0:
            raise ValueError("divisor_override must be a non-zero int (or None), got 0")
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
        Divide every window by this instead (any non-zero int, as PyTorch).

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
    window = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    shape, average, args, n_threads, row = _checked("avg", x.shape, x.dtype, window)
    y = np.empty(shape, dtype=x.dtype)
    if y.size:
        # per-thread row of double sums (per call: concurrent callers never share one)
        average(x, y, np.empty((n_threads, row)), *args, n_threads)
    return y


def avg_pool2d_runner(x_shape: tuple[int, ...], dtype: Any, kernel_size: IntPair,
                      stride: IntPair | None = None, padding: IntPair = 0,
                      ceil_mode: bool = False, count_include_pad: bool = True,
                      divisor_override: int | None = None,
                      ) -> tuple[tuple[int, int, int, int], Runner]:
    """avg_pool2d for inputs of shape ``x_shape`` (N, C, H, W) and ``dtype`` as ``(output
    shape, run(x, y))``, the window checked and the workspace made once; run only for a
    non-empty output."""
    window = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    shape, average, args, n_threads, row = _checked("avg", tuple(x_shape), dtype, window)
    workspace = np.empty((n_threads, row))
    return shape, lambda x, y: average(x, y, workspace, *args, n_threads)


def max_pool2d_runner(x_shape: tuple[int, ...], dtype: Any, kernel_size: IntPair,
                      stride: IntPair | None = None, padding: IntPair = 0, dilation: IntPair = 1,
                      ceil_mode: bool = False,
                      ) -> tuple[tuple[int, int, int, int], Runner]:
    """max_pool2d's values for inputs of shape ``x_shape`` (N, C, H, W) and ``dtype`` as
    ``(output shape, run(x, y))``, the window checked once; run only for a non-empty
    output."""
    window = (kernel_size, stride, padding, dilation, ceil_mode)
    shape, maximum, args, n_threads, _ = _checked("max", tuple(x_shape), dtype, window)
    return shape, lambda x, y: maximum(x, y, None, None, *args, n_threads)


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
    geom = pool_geometry(shape[2:], kernel_size, stride, padding, 1, ceil_mode, shape[1])
    _check_pool_grad(gy, shape, geom)
    args = _avg_args(geom, count_include_pad, divisor_override)
    gx = np.empty(shape, dtype=gy.dtype)  # zeroed by the kernel, plane by plane
    n_threads = _threads(gx.size)
    workspace = per_thread(n_threads, max(gy.shape[3], 1), gy.dtype,  # per-thread shares
                            "the pooling workspace")
    _pool.avg_pool2d_backward(gy, gx, workspace, *args, n_threads)
    return gx


def _check_pool_grad(gy: FloatArray, input_shape: Sequence[int], geom: PoolGeometry) -> None:
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
    geom = pool_geometry(x.shape[2:], kernel_size, stride, 0, 1, ceil_mode, x.shape[1])
    y = np.empty(_pool_output(x.shape, geom), dtype=x.dtype)
    if y.size:
        _pool.lp_pool2d_forward(x, y, p, *geom.kernel, *geom.stride,
                                _threads(x.size))
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
    geom = pool_geometry(x.shape[2:], kernel_size, stride, 0, 1, ceil_mode, x.shape[1])
    check_ndim(gy, "gy", 4, "(N, C, OH, OW)")
    _check_pool_grad(gy, x.shape, geom)
    if y.shape != gy.shape:
        raise ValueError(f"y must have the shape of gy {gy.shape}, got {y.shape}")
    gy, x, y = (as_contiguous(a, dtype) for a in (gy, x, y))
    gx = np.empty(x.shape, dtype=dtype)  # zeroed by the kernel, plane by plane
    if gy.size:
        _pool.lp_pool2d_backward(gy, x, y, gx, p, *geom.kernel, *geom.stride,
                                 _threads(gx.size))
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
        _pool.adaptive_avg_pool2d_forward(x, y, _threads(x.size))
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
    gx = np.empty(shape, dtype=gy.dtype)  # zeroed by the kernel, plane by plane
    if gy.size:
        _pool.adaptive_avg_pool2d_backward(gy, gx, _threads(gx.size))
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
