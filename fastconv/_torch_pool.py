"""Pooling layers of fastconv.torch (see that module): torch.nn.Modules with
torch.nn's constructor arguments, stored as torch.nn's layers store them."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from fastconv._torch_functional import (
    Options, Tensor, _pair_1d, _single, adaptive_avg_pool2d, avg_pool1d, avg_pool2d, lp_pool2d,
    max_pool1d, max_pool2d, max_unpool2d,
)
from fastconv._validation import as_index, as_pair


class _Pool(torch.nn.Module):
    """A parameterless layer whose repr lists the attributes named in ``_REPR``."""

    _REPR: tuple[str, ...] = ()

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)}" for name in self._REPR)


def _check_window(kernel_size: Options, stride: Options, padding: Options,
                  dilation: Options = 1, dims: int = 2) -> None:
    """Raise now for sizes fastconv would refuse at the first forward."""
    check: Any = as_pair if dims == 2 else _pair_1d
    check(kernel_size, "kernel_size")
    if stride is not None:
        check(stride, "stride")
    check(padding, "padding", 0)
    check(dilation, "dilation")


class _MaxPool(_Pool):
    """The settings of MaxPool1d and MaxPool2d, stored as given (as torch.nn does)."""

    _DIMS = 2
    _REPR = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")

    def __init__(self, kernel_size: Options, stride: Options = None, padding: Options = 0,
                 dilation: Options = 1, return_indices: bool = False,
                 ceil_mode: bool = False) -> None:
        super().__init__()
        _check_window(kernel_size, stride, padding, dilation, self._DIMS)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation
        self.return_indices = bool(return_indices)
        self.ceil_mode = bool(ceil_mode)


class MaxPool2d(_MaxPool):
    """2-D max pooling layer computed by fastconv (as torch.nn.MaxPool2d).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default: kernel_size.
    padding : int or (int, int)
        Implicit -inf padding, at most kernel_size // 2.
    dilation : int or (int, int)
    return_indices : bool
        forward also returns the int64 indices of the maxima (h * W + w per plane).
    ceil_mode : bool
        Ceil instead of floor for the output size.

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> fct.MaxPool2d(3, stride=2, padding=1)(torch.randn(2, 4, 9, 9)).shape
    torch.Size([2, 4, 5, 5])
    """

    def forward(self, x: Tensor) -> Any:
        """Pool x, shape (N, C, H, W) or (C, H, W)."""
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                          self.ceil_mode, self.return_indices)


class MaxPool1d(_MaxPool):
    """1-D max pooling layer computed by fastconv (as torch.nn.MaxPool1d).

    Parameters
    ----------
    kernel_size : int or (int,)
    stride : int or (int,), optional
        Default: kernel_size.
    padding : int or (int,)
        Implicit -inf padding, at most kernel_size // 2.
    dilation : int or (int,)
    return_indices : bool
        forward also returns the int64 positions in L of the maxima.
    ceil_mode : bool
        Ceil instead of floor for the output size.

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> fct.MaxPool1d(3, stride=2, padding=1)(torch.randn(2, 4, 9)).shape
    torch.Size([2, 4, 5])
    """

    _DIMS = 1

    def forward(self, x: Tensor) -> Any:
        """Pool x, shape (N, C, L) or (C, L)."""
        return max_pool1d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                          self.ceil_mode, self.return_indices)


class AvgPool2d(_Pool):
    """2-D average pooling layer computed by fastconv (as torch.nn.AvgPool2d).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default: kernel_size.
    padding : int or (int, int)
        Zero padding, at most kernel_size // 2.
    ceil_mode : bool
    count_include_pad : bool
        Divide by the window size including padding.
    divisor_override : int, optional
        Divide every window by this instead.

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> fct.AvgPool2d(2)(torch.ones(1, 1, 4, 4))
    tensor([[[[1., 1.],
              [1., 1.]]]])
    """

    _REPR = ("kernel_size", "stride", "padding")

    def __init__(self, kernel_size: Options, stride: Options = None, padding: Options = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None) -> None:
        super().__init__()
        _check_window(kernel_size, stride, padding)
        if divisor_override is not None:
            as_index(divisor_override, "divisor_override", 1)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, x: Tensor) -> Tensor:
        """Pool x, shape (N, C, H, W) or (C, H, W)."""
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)


class AvgPool1d(_Pool):
    """1-D average pooling layer computed by fastconv (as torch.nn.AvgPool1d).

    Parameters
    ----------
    kernel_size : int or (int,)
    stride : int or (int,), optional
        Default: kernel_size.
    padding : int or (int,)
        Zero padding, at most kernel_size // 2.
    ceil_mode : bool
    count_include_pad : bool
        Divide by the window size including padding.

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> pool = fct.AvgPool1d(2)
    >>> pool
    AvgPool1d(kernel_size=(2,), stride=(2,), padding=(0,))
    >>> pool(torch.arange(6.0).reshape(1, 1, 6))
    tensor([[[0.5000, 2.5000, 4.5000]]])
    """

    _REPR = ("kernel_size", "stride", "padding")

    def __init__(self, kernel_size: Options, stride: Options = None, padding: Options = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True) -> None:
        super().__init__()
        self.kernel_size = _single(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _single(stride, "stride")
        self.padding = _single(padding, "padding", 0)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x: Tensor) -> Tensor:
        """Pool x, shape (N, C, L) or (C, L)."""
        return avg_pool1d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad)


def _check_norm_type(norm_type: float) -> None:
    if isinstance(norm_type, bool) or not isinstance(norm_type, numbers.Real):
        raise TypeError(f"norm_type must be a real number, got {type(norm_type).__name__} "
                        f"{norm_type!r}")
    if not (math.isfinite(norm_type) and norm_type > 0):
        raise ValueError(f"norm_type must be a finite number > 0, got {norm_type}")


class LPPool2d(_Pool):
    """2-D power-average pooling layer computed by fastconv (as torch.nn.LPPool2d).

    Each window gives (sum of |x|^p)^(1/p) with p = ``norm_type``: PyTorch's
    result for even p or inputs >= 0 (PyTorch sums x^p, which differs for odd p
    and negative inputs; see :func:`fastconv.lp_pool2d`).

    Parameters
    ----------
    norm_type : float > 0
        p.
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default: kernel_size.
    ceil_mode : bool
        Ceil instead of floor for the output size; a window that overhangs the
        input is scaled by window size / pixels inside, as in PyTorch.

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> fct.LPPool2d(2, 2)(torch.tensor([[[[3.0, 4.0], [0.0, 0.0]]]]))
    tensor([[[[5.]]]])
    """

    _REPR = ("norm_type", "kernel_size", "stride", "ceil_mode")

    def __init__(self, norm_type: float, kernel_size: Options, stride: Options = None,
                 ceil_mode: bool = False) -> None:
        super().__init__()
        _check_norm_type(norm_type)
        _check_window(kernel_size, stride, 0)
        self.norm_type = norm_type
        self.kernel_size = kernel_size
        self.stride = stride
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x: Tensor) -> Tensor:
        """Pool x, shape (N, C, H, W) or (C, H, W)."""
        return lp_pool2d(x, float(self.norm_type), self.kernel_size, self.stride,
                         self.ceil_mode)


def _check_output_size(output_size: Options) -> None:
    """An int >= 1, or a pair of those or None (None keeps that axis's size)."""
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"output_size must be an int or (OH, OW), got {output_size!r}")
        for size in output_size:
            if size is not None:
                as_index(size, "output_size", 1)
        return
    if output_size is None:
        raise ValueError("output_size must be an int or (OH, OW) (an entry may be None to keep "
                         "that axis's size), got None")
    as_index(output_size, "output_size", 1)


class AdaptiveAvgPool2d(_Pool):
    """Adaptive average pooling layer computed by fastconv (as torch.nn.AdaptiveAvgPool2d).

    Parameters
    ----------
    output_size : int or (int or None, int or None)
        (OH, OW); an int is used for both; None keeps that axis's input size.
        Window i along an axis of size H covers [floor(i * H / OH),
        ceil((i + 1) * H / OH)).

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> fct.AdaptiveAvgPool2d((1, None))(torch.arange(6.0).reshape(1, 1, 2, 3))
    tensor([[[[1.5000, 2.5000, 3.5000]]]])
    """

    _REPR = ("output_size",)

    def __init__(self, output_size: Options) -> None:
        super().__init__()
        _check_output_size(output_size)
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        """Pool x, shape (N, C, H, W) or (C, H, W), to ``output_size``."""
        return adaptive_avg_pool2d(x, self.output_size)


class MaxUnpool2d(_Pool):
    """Partial inverse of max pooling computed by fastconv (as torch.nn.MaxUnpool2d).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default: kernel_size.
    padding : int or (int, int)
        As given to the max pooling.

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> pool, unpool = fct.MaxPool2d(2, return_indices=True), fct.MaxUnpool2d(2)
    >>> y, idx = pool(torch.tensor([[[[1.0, 3.0], [4.0, 2.0]]]]))
    >>> unpool(y, idx)
    tensor([[[[0., 0.],
              [4., 0.]]]])
    """

    _REPR = ("kernel_size", "stride", "padding")

    def __init__(self, kernel_size: Options, stride: Options = None,
                 padding: Options = 0) -> None:
        super().__init__()
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else as_pair(stride, "stride")
        self.padding = as_pair(padding, "padding", 0)

    def forward(self, x: Tensor, indices: Tensor, output_size: Options = None) -> Tensor:
        """Unpool x, shape (N, C, H, W) or (C, H, W), with the indices of its maxima.

        ``output_size`` ((OH, OW), or a full shape) picks the size among those the
        stride allows, as in PyTorch.
        """
        return max_unpool2d(x, indices, self.kernel_size, self.stride, self.padding,
                            output_size)
