"""Autograd functions and functional forms of fastconv.torch (see that module).

Each ``torch.autograd.Function`` hands fastconv NumPy views of its tensors (no
copy) and wraps the NumPy results as tensors (no copy). The 1-D operations run
the 2-D functions on (N, C, 1, L) views, as fastconv.functional does, so autograd
sees only the squeeze and unsqueeze around them.
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from fastconv import _ops1d, _winograd, functional as F
from fastconv._validation import as_index, as_pair, normalize_padding

Options = Any  # an int, a tuple or a word, as the fastconv operation takes it

_DTYPES = (torch.float32, torch.float64)


# --- tensors in and out --------------------------------------------------------------


def _check_tensors(**tensors: Tensor | None) -> None:
    """TypeError unless each tensor given (None skipped) is dense, on the CPU, float32
    or float64, and all share one dtype; the message names the argument."""
    first = None
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.device.type != "cpu":
            raise TypeError(
                f"{name} is on device {tensor.device}; fastconv.torch computes on CPU tensors "
                "only: move the model and its inputs with .cpu()"
            )
        if tensor.layout != torch.strided:
            raise TypeError(f"{name} has layout {tensor.layout}; expected a dense tensor")
        if tensor.dtype not in _DTYPES:
            raise TypeError(
                f"{name} has dtype {tensor.dtype}; fastconv.torch computes in torch.float32 "
                "or torch.float64"
            )
        if first is None:
            first = name, tensor.dtype
        elif tensor.dtype != first[1]:
            raise TypeError(
                f"{name} has dtype {tensor.dtype} but {first[0]} has {first[1]}; give them one "
                "dtype (e.g. model.to(x.dtype))"
            )


def _check_dim(tensor: Tensor, name: str, layout: str, unbatched: bool = True) -> None:
    """ValueError unless the tensor has the dims of ``layout`` (e.g. "(N, C, L)"), or
    with ``unbatched`` one fewer (no leading batch axis)."""
    ndim = layout.count(",") + 1
    if tensor.dim() == ndim or (unbatched and tensor.dim() == ndim - 1):
        return
    expected = f"{layout} or ({layout.split(', ', 1)[1]}" if unbatched else layout
    raise ValueError(f"{name} must be {expected}, got shape {tuple(tensor.shape)}")


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of {value.dtype} on {value.device}"
    return type(value).__name__


def _numpy(tensor: Tensor | None) -> Any:
    """The NumPy view of a checked CPU tensor (no copy)."""
    return None if tensor is None else tensor.detach().resolve_neg().numpy()


def _weights(w: Tensor) -> tuple[Any, ContextManager[None]]:
    """(the NumPy view of the weights, a context in which fastconv's caches of
    transformed weights know them by the tensor's identity and version; an inference
    tensor keeps no version counter, so its transforms are checked by value)."""
    array = _numpy(w)
    if w.is_inference():
        return array, contextlib.nullcontext()
    # the view's address is the tensor's, but where a negative bit made a copy
    return array, _winograd.known_weights(array, w, w._version,
                                          None if w.is_neg() else w.data_ptr())


def _tensor(array: Any) -> Tensor:
    """A tensor over a NumPy result (no copy)."""
    return torch.from_numpy(array)


def _batched(x: Tensor, ndim: int = 4) -> tuple[Tensor, bool]:
    """(x with ``ndim`` dims, whether a batch axis was added): unbatched input as torch
    allows it."""
    if isinstance(x, torch.Tensor) and x.dim() == ndim - 1:
        return x.unsqueeze(0), True
    return x, False


def _unbatched(y: Tensor, added: bool) -> Tensor:
    return y.squeeze(0) if added else y


# --- 1-D arguments as 2-D ones (H of size 1) --------------------------------------------


def _single(value: Options, name: str, minimum: int = 1) -> tuple[int]:
    """(v,) from v or (v,), as torch.nn's 1-D layers store their sizes."""
    return (_ops1d._int_1d(value, name, minimum)[1],)


def _pair_1d(value: Options, name: str, minimum: int = 1, fill: int = 1) -> tuple[int, int]:
    """The 2-D (fill, v) of a 1-D int or 1-tuple."""
    return _ops1d._int_1d(value, name, minimum, fill)


def _padding_1d(padding: Options) -> Options:
    """1-D padding (int, (p,), (left, right) or a word) as 2-D padding."""
    if isinstance(padding, (tuple, list)) and len(padding) == 1:
        padding = padding[0]
    return _ops1d._pad_1d(padding)


def _window_1d(kernel_size: Options, stride: Options,
               padding: Options) -> tuple[tuple[int, int], ...]:
    """A 1-D pooling window's kernel, stride (default: the kernel) and padding in 2-D."""
    kernel = _pair_1d(kernel_size, "kernel_size")
    return (kernel, kernel if stride is None else _pair_1d(stride, "stride"),
            _pair_1d(padding, "padding", 0, fill=0))


def _output_size_1d(output_size: Options) -> tuple[int, int] | None:
    """1-D output_size (L, (L,), (K, L) or (N, K, L)) as the 2-D (1, L)."""
    return _ops1d._out_size_1d(output_size)


# --- autograd functions ----------------------------------------------------------------


class _NoGraph:
    """The ``ctx`` of a forward run outside autograd: what it keeps for backward is
    dropped (no graph will ask for it)."""

    def save_for_backward(self, *tensors: Tensor) -> None:
        pass

    def mark_non_differentiable(self, *tensors: Tensor) -> None:
        pass

    def __setattr__(self, name: str, value: Any) -> None:
        pass


_NO_GRAPH = _NoGraph()


def _run(function: Any, *args: Any) -> Any:
    """``function.apply(*args)``, or its forward alone when no gradient can flow
    (autograd disabled, as under ``torch.no_grad()``, or no tensor argument requiring
    one): autograd's bookkeeping costs more than a small layer's kernel at batch 1."""
    if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad
                                       for a in args):
        return function.apply(*args)
    return function.forward(_NO_GRAPH, *args)


class _Conv2dFunction(torch.autograd.Function):
    """y = fastconv.conv2d(x, w, b); gradients from fastconv.conv2d_backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor | None, stride: Options,
                padding: Options, dilation: Options, groups: int) -> Tensor:
        w_array, known = _weights(w)
        with known:
            y = F.conv2d(_numpy(x), w_array, _numpy(b), stride, padding, dilation, groups)
        ctx.save_for_backward(x, w)
        ctx.options = (stride, padding, dilation, groups)
        return _tensor(y)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        stride, padding, dilation, groups = ctx.options
        (w, known), gy, x = _weights(w), _numpy(gy), _numpy(x)
        gx = gw = gb = None
        with known:
            if need_w:
                gx, gw, gb = F.conv2d_backward(gy, x, w, stride, padding, dilation, groups,
                                               needs_input_grad=need_x)
            elif need_x:
                # Frozen weights: only the input gradient, which is the transposed
                # convolution of gy with the same weights (output_size gives x's size).
                stride, dilation = as_pair(stride, "stride"), as_pair(dilation, "dilation")
                pads = normalize_padding(padding, x.shape[2:], w.shape[2:], stride, dilation)
                gx = F.conv_transpose2d(gy, w, None, stride, pads, 0, dilation, groups,
                                        output_size=x.shape[2:])
        if need_b and gb is None:
            gb = gy.sum(axis=(0, 2, 3))
        return (None if gx is None else _tensor(gx), None if gw is None else _tensor(gw),
                _tensor(gb) if need_b else None, None, None, None, None)


class _ConvTranspose2dFunction(torch.autograd.Function):
    """y = fastconv.conv_transpose2d(x, w, b); gradients from its backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor | None, stride: Options,
                padding: Options, output_padding: Options, dilation: Options, groups: int,
                output_size: Options) -> Tensor:
        w_array, known = _weights(w)
        with known:
            y = F.conv_transpose2d(_numpy(x), w_array, _numpy(b), stride, padding,
                                   output_padding, dilation, groups, output_size=output_size)
        ctx.save_for_backward(x, w)
        ctx.options = (stride, padding, output_padding, dilation, groups, output_size)
        return _tensor(y)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        stride, padding, output_padding, dilation, groups, output_size = ctx.options
        (w, known), gy, x = _weights(w), _numpy(gy), _numpy(x)
        gx = gw = gb = None
        with known:
            if need_w:
                gx, gw, gb = F.conv_transpose2d_backward(
                    gy, x, w, stride, padding, output_padding, dilation, groups,
                    output_size=output_size, needs_input_grad=need_x,
                )
            elif need_x:
                # Frozen weights: the input gradient is the convolution of gy with w;
                # rows and columns past x's size only saw output_padding.
                h, w_size = x.shape[2:]
                gx = F.conv2d(gy, w, None, stride, padding, dilation, groups)
                gx = gx[:, :, :h, :w_size].copy()
        if need_b and gb is None:
            gb = gy.sum(axis=(0, 2, 3))
        return (None if gx is None else _tensor(gx), None if gw is None else _tensor(gw),
                _tensor(gb) if need_b else None, None, None, None, None, None, None)


class _MaxPool2dFunction(torch.autograd.Function):
    """(y, idx) = fastconv.max_pool2d(x, return_indices=True); gx from the indices."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, kernel_size: Options, stride: Options, padding: Options,
                dilation: Options, ceil_mode: bool) -> tuple[Tensor, Tensor]:
        y, idx = F.max_pool2d(_numpy(x), kernel_size, stride, padding, dilation, ceil_mode,
                              return_indices=True)
        idx = _tensor(idx)
        ctx.mark_non_differentiable(idx)
        ctx.save_for_backward(idx)
        ctx.input_shape = tuple(x.shape)
        return _tensor(y), idx

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor, _gidx: Tensor) -> tuple[Tensor | None, ...]:
        if not ctx.needs_input_grad[0]:
            return (None,) * 6
        (idx,) = ctx.saved_tensors
        gx = F.max_pool2d_backward(_numpy(gy), idx.numpy(), ctx.input_shape)
        return (_tensor(gx),) + (None,) * 5


class _AvgPool2dFunction(torch.autograd.Function):
    """y = fastconv.avg_pool2d(x); gx from fastconv.avg_pool2d_backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, kernel_size: Options, stride: Options, padding: Options,
                ceil_mode: bool, count_include_pad: bool,
                divisor_override: int | None) -> Tensor:
        options = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        y = F.avg_pool2d(_numpy(x), *options)
        ctx.options = options
        ctx.input_shape = tuple(x.shape)
        return _tensor(y)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        if not ctx.needs_input_grad[0]:
            return (None,) * 7
        gx = F.avg_pool2d_backward(_numpy(gy), ctx.input_shape, *ctx.options)
        return (_tensor(gx),) + (None,) * 6


class _LPPool2dFunction(torch.autograd.Function):
    """y = fastconv.lp_pool2d(x); gx from fastconv.lp_pool2d_backward (needs x and y)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, norm_type: float, kernel_size: Options, stride: Options,
                ceil_mode: bool) -> Tensor:
        options = (norm_type, kernel_size, stride, ceil_mode)
        y = _tensor(F.lp_pool2d(_numpy(x), *options))
        ctx.save_for_backward(x, y)
        ctx.options = options
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        if not ctx.needs_input_grad[0]:
            return (None,) * 5
        x, y = ctx.saved_tensors
        gx = F.lp_pool2d_backward(_numpy(gy), _numpy(x), _numpy(y), *ctx.options)
        return (_tensor(gx),) + (None,) * 4


class _AdaptiveAvgPool2dFunction(torch.autograd.Function):
    """y = fastconv.adaptive_avg_pool2d(x); gx from its backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, output_size: Options) -> Tensor:
        y = F.adaptive_avg_pool2d(_numpy(x), output_size)
        ctx.input_shape = tuple(x.shape)
        return _tensor(y)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        if not ctx.needs_input_grad[0]:
            return (None, None)
        return (_tensor(F.adaptive_avg_pool2d_backward(_numpy(gy), ctx.input_shape)), None)


class _MaxUnpool2dFunction(torch.autograd.Function):
    """x = fastconv.max_unpool2d(y, idx); its gradient gathers gx at idx."""

    @staticmethod
    def forward(ctx: Any, y: Tensor, idx: Tensor, kernel_size: Options, stride: Options,
                padding: Options, output_size: Options) -> Tensor:
        x = F.max_unpool2d(_numpy(y), idx.numpy(), kernel_size, stride, padding, output_size)
        ctx.save_for_backward(idx)
        return _tensor(x)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gx: Tensor) -> tuple[Tensor | None, ...]:
        if not ctx.needs_input_grad[0]:
            return (None,) * 6
        (idx,) = ctx.saved_tensors
        # Each pooled value went to one place in its plane: its gradient is read there.
        gy = gx.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)
        return (gy,) + (None,) * 5


# --- functions on tensors ----------------------------------------------------------------


def conv2d(x: Tensor, w: Tensor, b: Tensor | None = None, stride: Options = 1,
           padding: Options = 0, dilation: Options = 1, groups: int = 1) -> Tensor:
    """Differentiable 2-D convolution by fastconv (as torch.nn.functional.conv2d).

    Parameters
    ----------
    x : torch.Tensor, shape (N, C, H, W) or (C, H, W)
        Input images: a CPU tensor of float32 or float64.
    w : torch.Tensor, shape (K, C / groups, KH, KW)
        Filters, of x's dtype.
    b : torch.Tensor, shape (K,), optional
        Bias, of x's dtype.
    stride, dilation : int or (int, int)
    padding : int, (int, int), ((top, bottom), (left, right)), or str
        Zero padding; the words ``"valid"``, ``"same"`` and ``"full"`` as in
        :func:`fastconv.conv2d` (``"same"`` is also allowed with a stride).
    groups : int

    Returns
    -------
    y : torch.Tensor, shape (N, K, OH, OW) (or (K, OH, OW) for unbatched x)
        Gradients flow to x, w and b; those that need none are not computed.

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> x = torch.arange(9.0).reshape(1, 1, 3, 3)
    >>> fct.conv2d(x, torch.ones(1, 1, 2, 2))[0, 0]
    tensor([[ 8., 12.],
            [20., 24.]])
    """
    _check_tensors(x=x, w=w, b=b)
    x, added = _batched(x)
    y = _run(_Conv2dFunction, x, w, b, stride, padding, dilation, groups)
    return _unbatched(y, added)


def conv1d(x: Tensor, w: Tensor, b: Tensor | None = None, stride: Options = 1,
           padding: Options = 0, dilation: Options = 1, groups: int = 1) -> Tensor:
    """Differentiable 1-D convolution by fastconv (as torch.nn.functional.conv1d).

    Runs :func:`conv2d` on (N, C, 1, L) views.

    Parameters
    ----------
    x : torch.Tensor, shape (N, C, L) or (C, L)
        A CPU tensor of float32 or float64.
    w : torch.Tensor, shape (K, C / groups, KL)
        Of x's dtype.
    b : torch.Tensor, shape (K,), optional
    stride, dilation : int or (int,)
    padding : int, (int,), (left, right), or str
        Zero padding; ``"valid"``, ``"same"`` or ``"full"`` as in :func:`fastconv.conv1d`.
    groups : int

    Returns
    -------
    y : torch.Tensor, shape (N, K, OL) (or (K, OL) for unbatched x)

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> fct.conv1d(torch.arange(5.0).reshape(1, 1, 5), torch.ones(1, 1, 2))
    tensor([[[1., 3., 5., 7.]]])
    """
    _check_tensors(x=x, w=w, b=b)
    _check_dim(x, "x", "(N, C, L)")
    _check_dim(w, "w", "(K, C / groups, KL)", unbatched=False)
    x, added = _batched(x, 3)
    y = _run(_Conv2dFunction, x.unsqueeze(2), w.unsqueeze(2), b, _pair_1d(stride, "stride"),
                              _padding_1d(padding), _pair_1d(dilation, "dilation"), groups)
    return _unbatched(y.squeeze(2), added)


def conv_transpose2d(x: Tensor, w: Tensor, b: Tensor | None = None, stride: Options = 1,
                     padding: Options = 0, output_padding: Options = 0, groups: int = 1,
                     dilation: Options = 1, *, output_size: Options = None) -> Tensor:
    """Differentiable 2-D transposed convolution by fastconv.

    As torch.nn.functional.conv_transpose2d, argument order included (``groups``
    comes before ``dilation``, unlike :func:`fastconv.conv_transpose2d`).

    Parameters
    ----------
    x : torch.Tensor, shape (N, C, H, W) or (C, H, W)
        A CPU tensor of float32 or float64.
    w : torch.Tensor, shape (C, K / groups, KH, KW)
        Of x's dtype.
    b : torch.Tensor, shape (K,), optional
    stride, dilation : int or (int, int)
    padding : int, (int, int) or ((top, bottom), (left, right))
    output_padding : int or (int, int)
    groups : int
    output_size : (OH, OW) or (N, K, OH, OW), optional
        Derives output_padding, as in :func:`fastconv.conv_transpose2d`.

    Returns
    -------
    y : torch.Tensor, shape (N, K, OH, OW) (or (K, OH, OW) for unbatched x)

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> fct.conv_transpose2d(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2), stride=2).shape
    torch.Size([1, 1, 4, 4])
    """
    _check_tensors(x=x, w=w, b=b)
    x, added = _batched(x)
    y = _run(_ConvTranspose2dFunction, x, w, b, stride, padding, output_padding, dilation,
                                       groups, output_size)
    return _unbatched(y, added)


def conv_transpose1d(x: Tensor, w: Tensor, b: Tensor | None = None, stride: Options = 1,
                     padding: Options = 0, output_padding: Options = 0, groups: int = 1,
                     dilation: Options = 1, *, output_size: Options = None) -> Tensor:
    """Differentiable 1-D transposed convolution by fastconv.

    As torch.nn.functional.conv_transpose1d (``groups`` before ``dilation``), on
    (N, C, 1, L) views through :func:`conv_transpose2d`.

    Parameters
    ----------
    x : torch.Tensor, shape (N, C, L) or (C, L)
        A CPU tensor of float32 or float64.
    w : torch.Tensor, shape (C, K / groups, KL)
        Of x's dtype.
    b : torch.Tensor, shape (K,), optional
    stride, dilation : int or (int,)
    padding : int, (int,) or (left, right)
    output_padding : int or (int,)
    groups : int
    output_size : int, (OL,) or a full shape ending in OL, optional
        Derives output_padding.

    Returns
    -------
    y : torch.Tensor, shape (N, K, OL) (or (K, OL) for unbatched x)

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> fct.conv_transpose1d(torch.tensor([[[1.0, 2.0]]]), torch.ones(1, 1, 3), stride=2)
    tensor([[[1., 1., 3., 2., 2.]]])
    """
    _check_tensors(x=x, w=w, b=b)
    _check_dim(x, "x", "(N, C, L)")
    _check_dim(w, "w", "(C, K / groups, KL)", unbatched=False)
    if isinstance(padding, str):
        raise ValueError(f"padding of a transposed convolution must be an int, (p,) or "
                         f"(left, right), got {padding!r}")
    x, added = _batched(x, 3)
    y = _run(_ConvTranspose2dFunction, 
        x.unsqueeze(2), w.unsqueeze(2), b, _pair_1d(stride, "stride"), _padding_1d(padding),
        _pair_1d(output_padding, "output_padding", 0, fill=0), _pair_1d(dilation, "dilation"),
        groups, _output_size_1d(output_size),
    )
    return _unbatched(y.squeeze(2), added)


def max_pool2d(x: Tensor, kernel_size: Options, stride: Options = None, padding: Options = 0,
               dilation: Options = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    """Differentiable 2-D max pooling by fastconv (as torch.nn.functional.max_pool2d).

    Parameters
    ----------
    x : torch.Tensor, shape (N, C, H, W) or (C, H, W)
        A CPU tensor of float32 or float64.
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default: kernel_size.
    padding : int or (int, int)
        Implicit -inf padding, at most kernel_size // 2.
    dilation : int or (int, int)
    ceil_mode : bool
    return_indices : bool
        Also return the int64 flat index h * W + w of each maximum in its plane
        (torch's convention).

    Returns
    -------
    y : torch.Tensor, shape (N, C, OH, OW)
    idx : torch.Tensor of int64, only with ``return_indices``

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> fct.max_pool2d(torch.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0]
    tensor([[ 5.,  7.],
            [13., 15.]])
    """
    _check_tensors(x=x)
    x, added = _batched(x)
    y, idx = _run(_MaxPool2dFunction, x, kernel_size, stride, padding, dilation, ceil_mode)
    y, idx = _unbatched(y, added), _unbatched(idx, added)
    return (y, idx) if return_indices else y


def max_pool1d(x: Tensor, kernel_size: Options, stride: Options = None, padding: Options = 0,
               dilation: Options = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    """Differentiable 1-D max pooling by fastconv (as torch.nn.functional.max_pool1d).

    Parameters
    ----------
    x : torch.Tensor, shape (N, C, L) or (C, L)
        A CPU tensor of float32 or float64.
    kernel_size : int or (int,)
    stride : int or (int,), optional
        Default: kernel_size.
    padding : int or (int,)
        Implicit -inf padding, at most kernel_size // 2.
    dilation : int or (int,)
    ceil_mode : bool
    return_indices : bool
        Also return the int64 position in L of each maximum.

    Returns
    -------
    y : torch.Tensor, shape (N, C, OL)
    idx : torch.Tensor of int64, only with ``return_indices``

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> fct.max_pool1d(torch.tensor([[[1.0, 5.0, 2.0, 0.0, 3.0]]]), 2, return_indices=True)
    (tensor([[[5., 2.]]]), tensor([[[1, 2]]]))
    """
    _check_tensors(x=x)
    _check_dim(x, "x", "(N, C, L)")
    x, added = _batched(x, 3)
    y, idx = _run(_MaxPool2dFunction, x.unsqueeze(2), *_window_1d(kernel_size, stride, padding),
                                      _pair_1d(dilation, "dilation"), ceil_mode)
    y, idx = _unbatched(y.squeeze(2), added), _unbatched(idx.squeeze(2), added)
    return (y, idx) if return_indices else y


def avg_pool2d(x: Tensor, kernel_size: Options, stride: Options = None, padding: Options = 0,
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    """Differentiable 2-D average pooling by fastconv (as torch.nn.functional.avg_pool2d).

    Parameters
    ----------
    x : torch.Tensor, shape (N, C, H, W) or (C, H, W)
        A CPU tensor of float32 or float64.
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

    Returns
    -------
    y : torch.Tensor, shape (N, C, OH, OW)

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> fct.avg_pool2d(torch.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0]
    tensor([[ 2.5000,  4.5000],
            [10.5000, 12.5000]])
    """
    _check_tensors(x=x)
    x, added = _batched(x)
    y = _run(_AvgPool2dFunction, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                 divisor_override)
    return _unbatched(y, added)


def avg_pool1d(x: Tensor, kernel_size: Options, stride: Options = None, padding: Options = 0,
               ceil_mode: bool = False, count_include_pad: bool = True) -> Tensor:
    """Differentiable 1-D average pooling by fastconv (as torch.nn.functional.avg_pool1d).

    Parameters
    ----------
    x : torch.Tensor, shape (N, C, L) or (C, L)
        A CPU tensor of float32 or float64.
    kernel_size : int or (int,)
    stride : int or (int,), optional
        Default: kernel_size.
    padding : int or (int,)
        Zero padding, at most kernel_size // 2.
    ceil_mode : bool
    count_include_pad : bool
        Divide by the window size including padding.

    Returns
    -------
    y : torch.Tensor, shape (N, C, OL)

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> fct.avg_pool1d(torch.arange(6.0).reshape(1, 1, 6), 2)
    tensor([[[0.5000, 2.5000, 4.5000]]])
    """
    _check_tensors(x=x)
    _check_dim(x, "x", "(N, C, L)")
    x, added = _batched(x, 3)
    y = _run(_AvgPool2dFunction, x.unsqueeze(2), *_window_1d(kernel_size, stride, padding),
                                 ceil_mode, count_include_pad, None)
    return _unbatched(y.squeeze(2), added)


def lp_pool2d(x: Tensor, norm_type: float, kernel_size: Options, stride: Options = None,
              ceil_mode: bool = False) -> Tensor:
    """Differentiable 2-D power-average pooling by fastconv (as torch.nn.functional.lp_pool2d).

    Each window gives (sum of |x|^p)^(1/p), the p-norm: the same as PyTorch for
    even ``norm_type`` or inputs >= 0 (PyTorch sums x^p, so for odd p and
    negative inputs the two differ; see :func:`fastconv.lp_pool2d`).

    Parameters
    ----------
    x : torch.Tensor, shape (N, C, H, W) or (C, H, W)
        A CPU tensor of float32 or float64.
    norm_type : float > 0
        p.
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default: kernel_size.
    ceil_mode : bool

    Returns
    -------
    y : torch.Tensor, shape (N, C, OH, OW)

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> fct.lp_pool2d(torch.tensor([[[[3.0, 4.0], [0.0, 0.0]]]]), 2, 2)
    tensor([[[[5.]]]])
    """
    _check_tensors(x=x)
    x, added = _batched(x)
    y = _run(_LPPool2dFunction, x, norm_type, kernel_size, stride, ceil_mode)
    return _unbatched(y, added)


def adaptive_avg_pool2d(x: Tensor, output_size: Options) -> Tensor:
    """Differentiable adaptive average pooling by fastconv.

    As torch.nn.functional.adaptive_avg_pool2d: window i along an axis of size H
    covers [floor(i * H / OH), ceil((i + 1) * H / OH)).

    Parameters
    ----------
    x : torch.Tensor, shape (N, C, H, W) or (C, H, W)
        A CPU tensor of float32 or float64, with non-empty planes.
    output_size : int or (int or None, int or None)
        (OH, OW); an int is used for both; None keeps that axis's input size.

    Returns
    -------
    y : torch.Tensor, shape (N, C, OH, OW)

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> fct.adaptive_avg_pool2d(torch.arange(6.0).reshape(1, 1, 2, 3), (1, 2))
    tensor([[[[2., 3.]]]])
    """
    _check_tensors(x=x)
    x, added = _batched(x)
    y = _run(_AdaptiveAvgPool2dFunction, x, output_size)
    return _unbatched(y, added)


def _unpool_size(output_size: Options, ndim: int) -> Options:
    """max_unpool2d's output_size as (OH, OW): torch also takes the full shape."""
    if output_size is None:
        return None
    if isinstance(output_size, (str, bytes)) or not hasattr(output_size, "__len__") or len(
        output_size
    ) not in (2, ndim):
        raise ValueError(f"output_size must be (OH, OW) or the full output shape ({ndim} "
                         f"entries), got {output_size!r}")
    return tuple(as_index(v, "output_size", 1) for v in tuple(output_size)[-2:])


def max_unpool2d(x: Tensor, indices: Tensor, kernel_size: Options, stride: Options = None,
                 padding: Options = 0, output_size: Options = None) -> Tensor:
    """Differentiable partial inverse of max pooling by fastconv.

    As torch.nn.functional.max_unpool2d: each value of x goes to the position its
    index names in its output plane; the rest is zero. The gradient reads the
    output gradient at those positions.

    Parameters
    ----------
    x : torch.Tensor, shape (N, C, H, W) or (C, H, W)
        Pooled values: a CPU tensor of float32 or float64.
    indices : torch.Tensor of int64, shape of x
        From :func:`max_pool2d` with ``return_indices``; each in [0, OH * OW).
    kernel_size, stride, padding
        As given to max_pool2d (stride defaults to kernel_size, padding to 0).
    output_size : (OH, OW) or the full output shape, optional
        Default (H - 1) * stride - 2 * padding + kernel_size; must lie strictly
        within one stride of it.

    Returns
    -------
    y : torch.Tensor, shape (N, C, OH, OW)

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> y, idx = fct.max_pool2d(torch.tensor([[[[1.0, 3.0], [4.0, 2.0]]]]), 2,
    ...                         return_indices=True)
    >>> fct.max_unpool2d(y, idx, 2)
    tensor([[[[0., 0.],
              [4., 0.]]]])
    """
    _check_tensors(x=x)
    if not isinstance(indices, torch.Tensor) or indices.dtype != torch.int64 or (
        indices.device.type != "cpu"
    ):
        raise TypeError("indices must be a CPU torch.Tensor of int64, got "
                        f"{_describe(indices)}")
    output_size = _unpool_size(output_size, x.dim())
    x, added = _batched(x)
    indices, _ = _batched(indices)
    y = _run(_MaxUnpool2dFunction, x, indices, kernel_size, stride, padding, output_size)
    return _unbatched(y, added)
