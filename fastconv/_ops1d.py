"""1-D operations: the 2-D ones on arrays viewed as (N, C, 1, L).

``fastconv.functional`` re-exports them.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastconv._conv_ops import conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward
from fastconv._pool_ops import (
    _as_shape,
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
)
from fastconv._typing import FloatArray, Int1d, Padding, Padding1d
from fastconv._validation import as_array, as_index, check_ndim, spatial_size

__all__ = [
    "conv1d",
    "conv1d_backward",
    "conv_transpose1d",
    "conv_transpose1d_backward",
    "max_pool1d",
    "max_pool1d_backward",
    "avg_pool1d",
    "avg_pool1d_backward",
]


def _to_2d(x: ArrayLike, name: str) -> NDArray[Any]:
    x = as_array(x, name)
    check_ndim(x, name, 3, "(N, C, L)")
    return x[:, :, None, :]


def _pad_1d(padding: Padding1d) -> Padding:
    """1-D padding (int, (p,), (left, right) or a word) as 2-D padding with none on H."""
    if isinstance(padding, str):
        return padding
    if isinstance(padding, (tuple, list)) and len(padding) == 1:  # PyTorch's (p,)
        padding = padding[0]
    if isinstance(padding, (tuple, list)):
        if len(padding) != 2:
            raise ValueError(f"padding must be an int, (p,), (left, right) or a word, "
                             f"got {padding!r}")
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


def _pool_stride_1d(stride: Int1d | None) -> tuple[int, int] | None:
    """A 1-D pooling stride as its 2-D pair; None or () (PyTorch's default) stays None:
    the kernel size."""
    if stride is None or (isinstance(stride, (tuple, list)) and not stride):
        return None
    return _int_1d(stride, "stride")


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
    (length,) = spatial_size(output_size, 1, "output_size", "L, (L,) or (N, K, L)")
    return (1, length)


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
        _pool_stride_1d(stride), _int_1d(padding, "padding", 0, fill=0),
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
        _pool_stride_1d(stride), _int_1d(padding, "padding", 0, fill=0),
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
        _pool_stride_1d(stride), _int_1d(padding, "padding", 0, fill=0),
        ceil_mode, count_include_pad,
    )
    return gx[:, :, 0, :]
