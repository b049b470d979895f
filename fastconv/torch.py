"""PyTorch layers and functions computed by fastconv (needs PyTorch; CPU tensors).

``Conv2d``, ``ConvTranspose2d``, ``MaxPool2d`` and ``AvgPool2d`` are
``torch.nn.Module`` s that take the place of their ``torch.nn`` namesakes in a
PyTorch model: same constructor arguments (in the same order), same parameter
names, shapes and initialisation, so ``state_dict`` s load both ways. Their
forward and backward passes run fastconv's kernels through
``torch.autograd.Function`` s: each pass hands fastconv NumPy views of the
tensors (no copy) and wraps the NumPy results as tensors (no copy).

The functions ``conv2d``, ``conv_transpose2d``, ``max_pool2d`` and ``avg_pool2d``
are the same operations on tensors, with the argument order of
``torch.nn.functional``.

Tensors must be dense CPU tensors of ``torch.float32`` or ``torch.float64``, one
dtype per call; anything else raises TypeError naming the argument. Backward
passes are differentiable once (no double backward). ``import fastconv`` never
imports this module, nor PyTorch.

Examples
--------
>>> import torch
>>> import fastconv.torch as fct
>>> model = torch.nn.Sequential(
...     fct.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), fct.MaxPool2d(2),
...     torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 10))
>>> loss = model(torch.randn(2, 1, 8, 8)).square().mean()
>>> loss.backward()
>>> model[0].weight.grad.shape
torch.Size([4, 1, 3, 3])
"""

try:
    import torch
except ImportError as exc:
    raise ImportError(
        "fastconv.torch needs PyTorch, which could not be imported "
        f"({exc}); install it (pip install torch) to use fastconv's layers in PyTorch "
        "models. The rest of fastconv works without it."
    ) from exc

import math

from torch.autograd.function import once_differentiable

from fastconv import functional as F
from fastconv._validation import as_index, as_pair, conv_channels, normalize_padding

__all__ = [
    "AvgPool2d",
    "Conv2d",
    "ConvTranspose2d",
    "MaxPool2d",
    "avg_pool2d",
    "conv2d",
    "conv_transpose2d",
    "max_pool2d",
]

_DTYPES = (torch.float32, torch.float64)
_PADDING_WORDS = ("valid", "same", "full")
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


# --- tensors in and out --------------------------------------------------------------


def _check_tensors(**tensors):
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


def _numpy(tensor):
    """The NumPy view of a checked CPU tensor (no copy)."""
    return None if tensor is None else tensor.detach().resolve_neg().numpy()


def _tensor(array):
    """A tensor over a NumPy result (no copy)."""
    return torch.from_numpy(array)


def _batched(x):
    """(x as 4-D, whether a batch axis was added): unbatched (C, H, W) as torch allows."""
    if isinstance(x, torch.Tensor) and x.dim() == 3:
        return x.unsqueeze(0), True
    return x, False


def _unbatched(y, added):
    return y.squeeze(0) if added else y


# --- autograd functions ----------------------------------------------------------------


class _Conv2dFunction(torch.autograd.Function):
    """y = fastconv.conv2d(x, w, b); gradients from fastconv.conv2d_backward."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups):
        y = F.conv2d(_numpy(x), _numpy(w), _numpy(b), stride, padding, dilation, groups)
        ctx.save_for_backward(x, w)
        ctx.options = (stride, padding, dilation, groups)
        return _tensor(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        stride, padding, dilation, groups = ctx.options
        gy, x, w = _numpy(gy), _numpy(x), _numpy(w)
        gx = gw = gb = None
        if need_w:
            gx, gw, gb = F.conv2d_backward(gy, x, w, stride, padding, dilation, groups,
                                           needs_input_grad=need_x)
        else:
            if need_x:
                # Frozen weights: only the input gradient, which is the transposed
                # convolution of gy with the same weights (output_size gives x's size).
                stride, dilation = as_pair(stride, "stride"), as_pair(dilation, "dilation")
                pads = normalize_padding(padding, x.shape[2:], w.shape[2:], stride, dilation)
                gx = F.conv_transpose2d(gy, w, None, stride, pads, 0, dilation, groups,
                                        output_size=x.shape[2:])
            if need_b:
                gb = gy.sum(axis=(0, 2, 3))
        return (None if gx is None else _tensor(gx), None if gw is None else _tensor(gw),
                _tensor(gb) if need_b else None, None, None, None, None)


class _ConvTranspose2dFunction(torch.autograd.Function):
    """y = fastconv.conv_transpose2d(x, w, b); gradients from its backward."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, output_padding, dilation, groups, output_size):
        y = F.conv_transpose2d(_numpy(x), _numpy(w), _numpy(b), stride, padding, output_padding,
                               dilation, groups, output_size=output_size)
        ctx.save_for_backward(x, w)
        ctx.options = (stride, padding, output_padding, dilation, groups, output_size)
        return _tensor(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        stride, padding, output_padding, dilation, groups, output_size = ctx.options
        gy, x, w = _numpy(gy), _numpy(x), _numpy(w)
        gx = gw = gb = None
        if need_w:
            gx, gw, gb = F.conv_transpose2d_backward(
                gy, x, w, stride, padding, output_padding, dilation, groups,
                output_size=output_size, needs_input_grad=need_x,
            )
        else:
            if need_x:
                # Frozen weights: the input gradient is the convolution of gy with w;
                # rows and columns past x's size only saw output_padding.
                h, w_size = x.shape[2:]
                gx = F.conv2d(gy, w, None, stride, padding, dilation, groups)
                gx = gx[:, :, :h, :w_size].copy()
            if need_b:
                gb = gy.sum(axis=(0, 2, 3))
        return (None if gx is None else _tensor(gx), None if gw is None else _tensor(gw),
                _tensor(gb) if need_b else None, None, None, None, None, None, None)


class _MaxPool2dFunction(torch.autograd.Function):
    """(y, idx) = fastconv.max_pool2d(x, return_indices=True); gx from the indices."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        y, idx = F.max_pool2d(_numpy(x), kernel_size, stride, padding, dilation, ceil_mode,
                              return_indices=True)
        idx = _tensor(idx)
        ctx.mark_non_differentiable(idx)
        ctx.save_for_backward(idx)
        ctx.input_shape = tuple(x.shape)
        return _tensor(y), idx

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, _gidx):
        if not ctx.needs_input_grad[0]:
            return (None,) * 6
        (idx,) = ctx.saved_tensors
        gx = F.max_pool2d_backward(_numpy(gy), idx.numpy(), ctx.input_shape)
        return (_tensor(gx),) + (None,) * 5


class _AvgPool2dFunction(torch.autograd.Function):
    """y = fastconv.avg_pool2d(x); gx from fastconv.avg_pool2d_backward."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                divisor_override):
        options = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        y = F.avg_pool2d(_numpy(x), *options)
        ctx.options = options
        ctx.input_shape = tuple(x.shape)
        return _tensor(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        if not ctx.needs_input_grad[0]:
            return (None,) * 7
        gx = F.avg_pool2d_backward(_numpy(gy), ctx.input_shape, *ctx.options)
        return (_tensor(gx),) + (None,) * 6


# --- functions on tensors ----------------------------------------------------------------


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
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
    y = _Conv2dFunction.apply(x, w, b, stride, padding, dilation, groups)
    return _unbatched(y, added)


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     *, output_size=None):
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
    y = _ConvTranspose2dFunction.apply(x, w, b, stride, padding, output_padding, dilation,
                                       groups, output_size)
    return _unbatched(y, added)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
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
    y, idx = _MaxPool2dFunction.apply(x, kernel_size, stride, padding, dilation, ceil_mode)
    y, idx = _unbatched(y, added), _unbatched(idx, added)
    return (y, idx) if return_indices else y


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
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
    y = _AvgPool2dFunction.apply(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                 divisor_override)
    return _unbatched(y, added)


# --- layers -------------------------------------------------------------------------------


def _conv_padding(padding, kernel_size, stride, dilation):
    """Conv2d's padding, checked now: a word (lower case), (h, w) or pairs of pairs."""
    if isinstance(padding, str):
        if padding.lower() not in _PADDING_WORDS:
            raise ValueError(f"padding must be an int, a pair, a pair of pairs or one of "
                             f"{_PADDING_WORDS}, got {padding!r}")
        return padding.lower()
    pads = normalize_padding(padding, (1, 1), kernel_size, stride, dilation)
    if pads[0][0] == pads[0][1] and pads[1][0] == pads[1][1]:
        return (pads[0][0], pads[1][0])
    return pads


class _ConvLayer(torch.nn.Module):
    """Parameters and their PyTorch-default initialisation, shared by both conv layers."""

    def _make_parameters(self, weight_shape, out_channels, bias, device, dtype):
        factory = {"device": device, "dtype": dtype}
        self.weight = torch.nn.Parameter(torch.empty(weight_shape, **factory))
        if bias:
            self.bias = torch.nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """Draw the initial values as torch.nn's layer does (same generator calls).

        Weights: Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        with fan_in = weight.shape[1] * KH * KW; the bias from the same range.
        """
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            torch.nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        defaults = {"padding": (0, 0), "output_padding": (0, 0), "dilation": (1, 1),
                    "groups": 1, "padding_mode": "zeros"}
        for key, default in defaults.items():
            value = getattr(self, key, default)
            if value != default:
                text += f", {key}={value!r}" if isinstance(value, str) else f", {key}={value}"
        if self.bias is None:
            text += ", bias=False"
        return text


class Conv2d(_ConvLayer):
    """2-D convolution layer computed by fastconv (as torch.nn.Conv2d).

    Parameters
    ----------
    in_channels, out_channels : int
        C and K; both multiples of ``groups``.
    kernel_size : int or (int, int)
    stride, dilation : int or (int, int)
    padding : int, (int, int), ((top, bottom), (left, right)), or str
        ``"valid"``, ``"same"`` (also with a stride: output ceil(H / stride), as in
        :func:`fastconv.conv2d`) or ``"full"``.
    groups : int
    bias : bool
        Add a learnable bias.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        Values of the padding; other than zeros, the input is padded by
        torch.nn.functional.pad first, as torch.nn.Conv2d does.
    device, dtype
        Where and of which dtype the parameters are created (forward needs them on
        the CPU, in float32 or float64).

    Attributes
    ----------
    weight : torch.nn.Parameter, shape (out_channels, in_channels / groups, KH, KW)
    bias : torch.nn.Parameter, shape (out_channels,), or None
        Both initialised as torch.nn.Conv2d does: with the same seed, the same values.

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> conv = fct.Conv2d(3, 8, 3, padding="same")
    >>> conv(torch.randn(2, 3, 16, 16)).shape
    torch.Size([2, 8, 16, 16])
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = conv_channels(in_channels, out_channels,
                                                                     groups)
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = as_pair(stride, "stride")
        self.dilation = as_pair(dilation, "dilation")
        self.padding = _conv_padding(padding, self.kernel_size, self.stride, self.dilation)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        self.padding_mode = padding_mode
        self._make_parameters(
            (self.out_channels, self.in_channels // self.groups, *self.kernel_size),
            self.out_channels, bias, device, dtype,
        )

    def forward(self, x):
        """Convolve x, shape (N, C, H, W) or (C, H, W), with the layer's parameters."""
        padding = self.padding
        if self.padding_mode != "zeros" and padding != (0, 0):
            _check_tensors(x=x)
            if x.dim() not in (3, 4):
                raise ValueError(
                    f"x must be (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}"
                )
            (top, bottom), (left, right) = normalize_padding(
                padding, tuple(x.shape[-2:]), self.kernel_size, self.stride, self.dilation
            )
            x = torch.nn.functional.pad(x, (left, right, top, bottom), mode=self.padding_mode)
            padding = 0
        return conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


class ConvTranspose2d(_ConvLayer):
    """2-D transposed convolution layer computed by fastconv (as torch.nn.ConvTranspose2d).

    Parameters
    ----------
    in_channels, out_channels : int
        C and K; both multiples of ``groups``.
    kernel_size : int or (int, int)
    stride, dilation : int or (int, int)
    padding : int, (int, int) or ((top, bottom), (left, right))
        Padding of the convolution this is the adjoint of (it shrinks the output).
    output_padding : int or (int, int)
        Added to the bottom/right of the output; smaller than stride or dilation.
    groups : int
    bias : bool
    padding_mode : {"zeros"}
        The only mode, as in PyTorch.
    device, dtype
        Where and of which dtype the parameters are created.

    Attributes
    ----------
    weight : torch.nn.Parameter, shape (in_channels, out_channels / groups, KH, KW)
    bias : torch.nn.Parameter, shape (out_channels,), or None
        Both initialised as torch.nn.ConvTranspose2d does.

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> up = fct.ConvTranspose2d(8, 3, 4, stride=2, padding=1)
    >>> up(torch.randn(2, 8, 7, 7)).shape
    torch.Size([2, 3, 14, 14])
    >>> up(torch.randn(2, 8, 7, 7), output_size=(15, 15)).shape
    torch.Size([2, 3, 15, 15])
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = conv_channels(in_channels, out_channels,
                                                                     groups)
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = as_pair(stride, "stride")
        self.dilation = as_pair(dilation, "dilation")
        if isinstance(padding, str):
            raise ValueError("padding of a transposed convolution must be an int, (h, w) or "
                             f"((top, bottom), (left, right)), got {padding!r}")
        self.padding = _conv_padding(padding, self.kernel_size, self.stride, self.dilation)
        self.output_padding = as_pair(output_padding, "output_padding", minimum=0)
        if padding_mode != "zeros":
            raise ValueError(
                f"padding_mode of ConvTranspose2d must be 'zeros', got {padding_mode!r}"
            )
        self.padding_mode = padding_mode
        self._make_parameters(
            (self.in_channels, self.out_channels // self.groups, *self.kernel_size),
            self.out_channels, bias, device, dtype,
        )

    def forward(self, x, output_size=None):
        """Transposed convolution of x, shape (N, C, H, W) or (C, H, W).

        ``output_size`` ((OH, OW), or a full shape) picks the output size among
        those the stride allows, as in PyTorch; it overrides ``output_padding``.
        """
        return conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                self.output_padding, self.groups, self.dilation,
                                output_size=output_size)


class MaxPool2d(torch.nn.Module):
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

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        as_pair(kernel_size, "kernel_size")
        if stride is not None:
            as_pair(stride, "stride")
        as_pair(padding, "padding", minimum=0)
        as_pair(dilation, "dilation")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation
        self.return_indices = bool(return_indices)
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x):
        """Pool x, shape (N, C, H, W) or (C, H, W)."""
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                          self.ceil_mode, self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(torch.nn.Module):
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

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        as_pair(kernel_size, "kernel_size")
        if stride is not None:
            as_pair(stride, "stride")
        as_pair(padding, "padding", minimum=0)
        if divisor_override is not None:
            as_index(divisor_override, "divisor_override", 1)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, x):
        """Pool x, shape (N, C, H, W) or (C, H, W)."""
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
