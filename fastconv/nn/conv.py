"""Convolution layers over fastconv.functional."""

from __future__ import annotations

from typing import Any, Sequence, cast

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from fastconv import _plan
from fastconv import functional as F
from fastconv._conv_ops import (conv2d_backward_validated, conv2d_max_pool_validated,
                                conv2d_runner, conv2d_validated,
                                conv2d_weight_grad_max_pool_validated, pools_own_rows)
from fastconv._geometry import ConvGeometry, is_plain, conv_geometry
from fastconv.functional import FloatArray, IntPair, Padding
from fastconv.nn._cache import NeedsForward
from fastconv.nn._program import Stale, Step, parameter_check
from fastconv.nn._init import RNGLike, default_bound, generator, uniform
from fastconv.nn.module import Module, Parameter
from fastconv.nn.pool import MaxPool2d
from fastconv._validation import as_pair, conv_channels

__all__ = ["Conv2d", "ConvTranspose2d"]


class Conv2d(NeedsForward, Module):
    """2-D convolution layer (as torch.nn.Conv2d), input (N, C, H, W).

    ``forward(x)`` maps x (N, C, H, W) to :func:`fastconv.conv2d`'s output
    (N, K, OH, OW), K = out_channels; ``backward(grad_out)`` takes the gradient
    of that shape, adds into ``weight.grad`` and ``bias.grad`` and returns the
    gradient with respect to x, (N, C, H, W), or None when ``needs_input_grad``
    is False.

    Parameters
    ----------
    in_channels, out_channels : int
        C and K.
    kernel_size : int or (int, int)
        (KH, KW).
    stride, dilation : int or (int, int), default 1
    padding : int, pair, pair of pairs or "valid" / "same" / "full", default 0
        As in :func:`fastconv.conv2d`.
    groups : int, default 1
        Must divide both channel counts.
    bias : bool, default True
    needs_input_grad : bool, default True
        False for a network's first layer: backward then returns None and skips
        the input gradient.
    algorithm : {"auto", "direct", "im2col", "winograd"}, default "auto"
        As in :func:`fastconv.conv2d` (``"winograd"``: 3x3 kernels, stride 1 only).
    dtype : float32 (default) or float64
        Of the parameters (and so of the output for float32 input).
    rng : None, int or numpy.random.Generator, optional
        Source of the PyTorch-default initial values: U(-b, b) with
        b = 1 / sqrt(C / groups * KH * KW) for weight and bias.

    Attributes
    ----------
    weight : Parameter, shape (K, C / groups, KH, KW)
    bias : Parameter, shape (K,), or None

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> conv = nn.Conv2d(3, 8, 3, padding=1, rng=0)
    >>> conv.weight.shape, conv.bias.shape
    ((8, 3, 3, 3), (8,))
    >>> y = conv(np.ones((2, 3, 5, 5), np.float32))
    >>> y.shape, y.dtype
    ((2, 8, 5, 5), dtype('float32'))
    >>> conv.backward(np.ones_like(y)).shape
    (2, 3, 5, 5)
    >>> conv.bias.grad[:3]  # 2 images x 5 x 5 pixels
    array([50., 50., 50.], dtype=float32)
    """

    options: dict[str, Any]  # keyword arguments of the functional op

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair,
                 stride: IntPair = 1, padding: Padding = 0, dilation: IntPair = 1,
                 groups: int = 1, bias: bool = True, *, needs_input_grad: bool = True,
                 algorithm: str = "auto", dtype: DTypeLike = np.float32,
                 rng: RNGLike = None) -> None:
        super().__init__()
        in_channels, out_channels, groups = conv_channels(in_channels, out_channels, groups)
        kh, kw = as_pair(kernel_size, "kernel_size")
        self.options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        self.needs_input_grad = needs_input_grad
        self.algorithm = algorithm
        rng = generator(rng)
        bound = default_bound(in_channels // groups * kh * kw)
        self.weight = Parameter(uniform(rng, bound, (out_channels, in_channels // groups, kh, kw),
                                        dtype))
        self.bias = Parameter(uniform(rng, bound, (out_channels,), dtype)) if bias else None

    def _effective_weight(self) -> NDArray[Any]:
        return self.weight.data

    #: (what decided the checks, their geometry, the algorithm checked, whether the
    #: forward may pool its own rows: see _forward_with_next) of the last checked input
    _checked: tuple[tuple[Any, ...], ConvGeometry, str, bool] | None = None

    def forward(self, x: ArrayLike) -> FloatArray:
        w = self._effective_weight()
        b = None if self.bias is None else self.bias.data
        key = _checked_key(x, w, b, self.options, self.algorithm)
        checked = self._checked
        if key is not None and checked is not None and checked[0] == key:
            # the same shapes, dtypes and options as a call that passed conv2d's checks:
            # skip them (they cost a third of a small layer's call)
            y = conv2d_validated(checked[1], cast(FloatArray, x), w, b, checked[2])
        else:
            y = F.conv2d(x, w, b, **self.options, algorithm=self.algorithm)
            if key is not None:  # it passed: remember what the checks found
                geom = conv_geometry(np.shape(x), w.shape, **self.options)
                algorithm = _plan.check_algorithm(self.algorithm, geom)
                checked = (key, geom, algorithm, pools_own_rows(geom, w.dtype, algorithm))
                object.__setattr__(self, "_checked", checked)  # not a parameter
        self._save(x)
        return y

    _fuses_with_next = True

    def _forward_with_next(self, layer: Module, x: Any) -> FloatArray | None:
        """``layer(self(x))`` in one kernel pass, keeping what both backwards need, where
        ``layer`` is a plain MaxPool2d(2) and this forward, on an input it has checked
        before, runs the wide-row or the channel-vectorised kernel at stride 1 (which
        then pools its own output rows: the full-size output is never written, nor read
        back); else None, nothing run. LeNet-5 at batch 64, 2 threads: C1 and its
        pooling 175 -> 150 us, C3 and its pooling 263 -> 218 us; a training step
        1.86 -> 1.79 ms with C1's, about 3% less again with C3's."""
        if (type(layer) is not MaxPool2d or not _halves(layer.options)
                or type(self).forward is not Conv2d.forward or "forward" in self.__dict__
                or "forward" in layer.__dict__):
            return None
        w = self._effective_weight()
        checked = self._checked_for(x, w)
        if checked is None or not checked[3]:
            return None  # the plain forward checks an input first; or another kernel
        b = None if self.bias is None else self.bias.data
        fused = conv2d_max_pool_validated(checked[1], cast(FloatArray, x), w, b, checked[2])
        if fused is None:
            return None
        pooled, idx = fused
        self._save(x)
        layer._save(idx, checked[1].y_shape)
        return pooled

    def _backward_with_next(self, layer: Module, grad_out: Any) -> tuple[bool, Any]:
        """(True, ``self.backward(layer.backward(grad_out))``) run as one pass, or (False,
        None) with nothing run: where ``layer`` is a plain MaxPool2d(2), this layer needs
        no input gradient (a network's first convolution) and its weight gradient runs
        on wide rows at stride 1. The pooled gradient goes straight into the kernel's
        wide rows (max_pool2d_backward's full-size gradient is never made) and the bias
        gradient sums the pooled one. LeNet-5's C1 and its pooling at batch 64, 2
        threads: 272 -> 225 us."""
        if (self.needs_input_grad or type(layer) is not MaxPool2d or not _halves(layer.options)
                or type(self).backward is not Conv2d.backward or "backward" in self.__dict__
                or "backward" in layer.__dict__ or self._saved is None or layer._saved is None):
            return False, None
        (x,), (idx, y_shape) = self._saved, layer._saved
        gy = np.asarray(grad_out)
        checked = self._checked_for(x, self._effective_weight())
        # the geometry checked for this very input and these options, the operands plain
        if (checked is None or checked[1].y_shape != y_shape or gy.dtype != x.dtype
                or gy.shape != idx.shape or not gy.flags.c_contiguous):
            return False, None
        grads = conv2d_weight_grad_max_pool_validated(checked[1], gy, idx, x, checked[2])
        if grads is None:
            return False, None
        gw, gb = grads
        self.weight.grad += self._mask_grad(gw)
        if self.bias is not None:
            self.bias.grad += gb
        return True, None

    def _compiled(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Step | None:
        w = self._effective_weight()
        b = None if self.bias is None else self.bias.data
        if not _plain_call(dtype, w, b, self.options):
            return None
        geom = conv_geometry(shape, w.shape, **self.options)
        if geom.empty:
            return None
        run, uses_blas = conv2d_runner(geom, w, b, _plan.check_algorithm(self.algorithm, geom))
        options, as_built = self.options, dict(self.options)
        same_arrays = parameter_check(self.weight, self.bias)

        def step(x: FloatArray, y: FloatArray) -> None:
            if options != as_built or not same_arrays():  # changed without an edit
                raise Stale
            run(x, y)
        return Step(geom.y_shape, step, uses_blas=uses_blas)

    def backward(self, grad_out: ArrayLike) -> FloatArray | None:
        (x,) = self._take()
        w = self._effective_weight()
        checked = self._checked_for(x, w)
        if (checked is not None and type(grad_out) is np.ndarray
                and grad_out.flags.c_contiguous and grad_out.dtype == x.dtype
                and grad_out.shape == checked[1].y_shape):
            # the input the forward checked, a plain gy of its output's shape: skip the checks
            gx, gw, gb = conv2d_backward_validated(checked[1], grad_out, x, w, checked[2],
                                                   self.needs_input_grad)
        else:
            gx, gw, gb = F.conv2d_backward(grad_out, x, w, **self.options,
                                           needs_input_grad=self.needs_input_grad,
                                           algorithm=self.algorithm)
        self.weight.grad += self._mask_grad(gw)
        if self.bias is not None:
            self.bias.grad += gb
        return gx

    def _checked_for(self, x: Any, w: Any) -> tuple[tuple[Any, ...], ConvGeometry, str,
                                                    bool] | None:
        """What the forward's checks found (``_checked``) where they hold for input ``x``,
        weights ``w`` and the layer's bias and options as they are now, else None."""
        checked = self._checked
        b = None if self.bias is None else self.bias.data
        if checked is None or checked[0] != _checked_key(x, w, b, self.options,
                                                         self.algorithm):
            return None
        return checked

    def _mask_grad(self, gw: FloatArray) -> FloatArray:
        return gw

    def extra_repr(self) -> str:
        k, c = self.weight.shape[0], self.weight.shape[1] * self.options["groups"]
        return f"{c}, {k}, kernel_size={self.weight.shape[2:]}, " + ", ".join(
            f"{key}={value}" for key, value in self.options.items()
        )


def _halves(options: dict[str, Any]) -> bool:
    """Whether max-pooling options are 2x2 windows at stride 2, no padding or dilation,
    floor mode (anything else, invalid options too, runs the layer itself)."""
    stride = options["stride"] if options["stride"] is not None else options["kernel_size"]
    try:
        return (as_pair(options["kernel_size"], "kernel_size") == (2, 2)
                and as_pair(stride, "stride") == (2, 2)
                and as_pair(options["padding"], "padding", 0) == (0, 0)
                and as_pair(options["dilation"], "dilation") == (1, 1)
                and options["ceil_mode"] is False)
    except (TypeError, ValueError):
        return False


def _checked_key(x: Any, w: Any, b: Any, options: dict[str, Any],
                 algorithm: str) -> tuple[Any, ...] | None:
    """What decides a Conv2d call's checks, or None for operands conv2d would convert
    (anything but C-contiguous NumPy arrays of one float dtype) or options that could
    change in place (a list): such a call is always checked in full."""
    if not (type(x) is np.ndarray and x.flags.c_contiguous
            and _plain_call(x.dtype, w, b, options)):
        return None
    return (x.shape, w.shape, x.dtype, None if b is None else b.shape,
            tuple(options.values()), algorithm)


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _plain_call(dtype: Any, w: Any, b: Any, options: dict[str, Any]) -> bool:
    """Whether conv2d takes inputs of ``dtype`` with ``w`` and ``b`` as they are
    (C-contiguous NumPy arrays of that float dtype) and no option can change in place."""
    if not (type(w) is np.ndarray and w.dtype == dtype and dtype in _FLOAT_DTYPES
            and w.flags.c_contiguous):
        return False
    if b is not None and not (type(b) is np.ndarray and b.dtype == dtype
                              and b.flags.c_contiguous):
        return False
    return is_plain(tuple(options.values()))


class ConvTranspose2d(NeedsForward, Module):
    """2-D transposed convolution layer (as torch.nn.ConvTranspose2d).

    ``forward(x, output_size=None)`` maps x (N, C, H, W) to
    :func:`fastconv.conv_transpose2d`'s output (N, K, OH, OW), C = in_channels,
    K = out_channels; ``backward(grad_out)`` takes the gradient of that shape,
    adds into ``weight.grad`` and ``bias.grad`` and returns the gradient with
    respect to x (or None when ``needs_input_grad`` is False).

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, groups, bias, dilation
        As in :class:`Conv2d` (note PyTorch's order: ``output_padding``,
        ``groups``, ``bias``, then ``dilation``).
    padding : int, (int, int) or ((top, bottom), (left, right)), default 0
        Padding of the convolution this is the adjoint of; words are refused.
    output_padding : int or (int, int), default 0
        As in :func:`fastconv.conv_transpose2d`.
    needs_input_grad, algorithm, dtype, rng
        As in :class:`Conv2d`. The initial bound uses PyTorch's fan-in,
        K / groups * KH * KW.

    Attributes
    ----------
    weight : Parameter, shape (C, K / groups, KH, KW)
    bias : Parameter, shape (K,), or None

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> up = nn.ConvTranspose2d(4, 2, 2, stride=2, rng=0)
    >>> up.weight.shape
    (4, 2, 2, 2)
    >>> y = up(np.ones((1, 4, 3, 3), np.float32))
    >>> y.shape
    (1, 2, 6, 6)
    >>> up.backward(np.ones_like(y)).shape
    (1, 4, 3, 3)
    >>> up(np.ones((1, 4, 3, 3), np.float32), output_size=(7, 7)).shape
    (1, 2, 7, 7)
    """

    options: dict[str, Any]  # keyword arguments of the functional op

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair,
                 stride: IntPair = 1, padding: Padding = 0, output_padding: IntPair = 0,
                 groups: int = 1, bias: bool = True, dilation: IntPair = 1, *,
                 needs_input_grad: bool = True, algorithm: str = "auto",
                 dtype: DTypeLike = np.float32, rng: RNGLike = None) -> None:
        super().__init__()
        in_channels, out_channels, groups = conv_channels(in_channels, out_channels, groups)
        kh, kw = as_pair(kernel_size, "kernel_size")
        self.options = dict(stride=stride, padding=padding, output_padding=output_padding,
                            dilation=dilation, groups=groups)
        self.needs_input_grad = needs_input_grad
        self.algorithm = algorithm
        rng = generator(rng)
        # PyTorch computes fan_in from the weight's dimension 1 (out_channels / groups).
        bound = default_bound(out_channels // groups * kh * kw)
        self.weight = Parameter(uniform(rng, bound, (in_channels, out_channels // groups, kh, kw),
                                        dtype))
        self.bias = Parameter(uniform(rng, bound, (out_channels,), dtype)) if bias else None

    def forward(self, x: ArrayLike, output_size: Sequence[int] | None = None) -> FloatArray:
        b = None if self.bias is None else self.bias.data
        y = F.conv_transpose2d(x, self.weight.data, b, **self.options, output_size=output_size,
                               algorithm=self.algorithm)
        self._save(x, output_size)
        return y

    def backward(self, grad_out: ArrayLike) -> FloatArray | None:
        x, output_size = self._take()
        gx, gw, gb = F.conv_transpose2d_backward(
            grad_out, x, self.weight.data, **self.options, output_size=output_size,
            needs_input_grad=self.needs_input_grad, algorithm=self.algorithm,
        )
        self.weight.grad += gw
        if self.bias is not None:
            self.bias.grad += gb
        return gx
