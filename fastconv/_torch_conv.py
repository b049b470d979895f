"""Convolution layers of fastconv.torch (see that module): torch.nn.Modules with
torch.nn's constructor arguments, parameter names and initialisation."""

from __future__ import annotations

import math
from typing import Any

import torch

from fastconv._conv_ops import conv2d_validated
from fastconv._geometry import ConvGeometry, conv_geometry, is_plain
from fastconv._plan import check_algorithm
from fastconv._torch_functional import (
    Options, Tensor, _check_dim, _check_tensors, _padding_1d, _single, _tensor, _weights,
    conv1d, conv2d, conv_transpose1d, conv_transpose2d,
)
from fastconv._validation import as_pair, conv_channels, normalize_padding

_PADDING_WORDS = ("valid", "same", "full")
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_LAYOUTS = {1: "(N, C, L)", 2: "(N, C, H, W)"}


def _conv_padding(padding: Options, kernel_size: tuple[int, ...], stride: tuple[int, ...],
                  dilation: tuple[int, ...]) -> Any:
    """2-D padding, checked now: a word (lower case), (h, w) or pairs of pairs."""
    if isinstance(padding, str):
        if padding.lower() not in _PADDING_WORDS:
            raise ValueError(f"padding must be an int, a pair, a pair of pairs or one of "
                             f"{_PADDING_WORDS}, got {padding!r}")
        return padding.lower()
    pads = normalize_padding(padding, (1, 1), kernel_size, stride, dilation)
    if pads[0][0] == pads[0][1] and pads[1][0] == pads[1][1]:
        return (pads[0][0], pads[1][0])
    return pads


def _conv_padding_1d(padding: Options, kernel_size: tuple[int, ...], stride: tuple[int, ...],
                     dilation: tuple[int, ...]) -> Any:
    """1-D padding, checked now: a word (lower case), (p,) or (left, right)."""
    if isinstance(padding, str):
        return _conv_padding(padding, (1, *kernel_size), (1, *stride), (1, *dilation))
    pads = normalize_padding(_padding_1d(padding), (1, 1), (1, *kernel_size), (1, *stride),
                             (1, *dilation))[1]
    return (pads[0],) if pads[0] == pads[1] else pads


def _no_word(padding: Options) -> None:
    if isinstance(padding, str):
        raise ValueError("padding of a transposed convolution must be an int or a tuple of "
                         f"ints, got {padding!r}")


# --- a Conv2d's calls outside autograd, checked once ------------------------------------


def _conv2d_call_key(x: Any, w: Tensor, b: Tensor | None,
                    options: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """What decides conv2d's checks for a layer's call outside autograd: the operands'
    shapes, dtypes, devices and layouts and the layer's options; None where autograd
    needs a graph or an operand is anything but a dense, contiguous, plain tensor (a
    batched x of 4 dims; no negative bit): such a call takes the full path."""
    if type(x) is not Tensor or not isinstance(w, Tensor):
        return None
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad
                                    or (b is not None and b.requires_grad)):
        return None
    if b is None:
        bias_key: tuple[Any, ...] | None = None
    elif isinstance(b, Tensor) and _plain(b):
        bias_key = (b.shape, b.dtype, b.is_cpu)
    else:
        return None
    if x.dim() != 4 or not (_plain(x) and _plain(w)):
        return None
    return (x.shape, x.dtype, x.is_cpu, w.shape, w.dtype, w.is_cpu, bias_key, options)


def _plain(tensor: Tensor) -> bool:
    """Dense and C-contiguous, without a negative bit: its NumPy view is the tensor."""
    return (tensor.layout is torch.strided and tensor.is_contiguous()
            and not tensor.is_neg())


def _conv2d_checked(geom: ConvGeometry, algorithm: str, x: Tensor, w: Tensor,
                   b: Tensor | None) -> Tensor:
    """conv2d(x, w, b) outside autograd for a call whose key (_conv2d_call_key) matched one
    that passed conv2d's checks with this geometry and algorithm: the checks skipped
    (they cost a third of a small layer's call at batch 1)."""
    w_array, known = _weights(w)
    with known:
        y = conv2d_validated(geom, x.detach().numpy(), w_array,
                             None if b is None else b.detach().numpy(), algorithm)
    return _tensor(y)


class _ConvLayer(torch.nn.Module):
    """Parameters, their PyTorch-default initialisation and padding modes, shared by the
    convolution layers."""

    in_channels: int
    out_channels: int
    groups: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: Any
    padding_mode: str

    def _set_sizes(self, in_channels: int, out_channels: int, groups: int, dims: int,
                   **sizes: Options) -> None:
        """Channels, and kernel_size, stride, dilation (and output_padding) as torch.nn
        stores them: (v,) or (h, w) for a 1-D or 2-D layer."""
        self.in_channels, self.out_channels, self.groups = conv_channels(in_channels, out_channels,
                                                                     groups)
        as_tuple: Any = _single if dims == 1 else as_pair
        for name, value in sizes.items():
            setattr(self, name, as_tuple(value, name, 0 if name == "output_padding" else 1))

    def _make_parameters(self, transposed: bool, bias: bool, device: Any, dtype: Any) -> None:
        """weight (K, C / groups, *kernel), or (C, K / groups, *kernel) transposed, and
        bias (K,) or None, initialised by reset_parameters."""
        channels = ((self.in_channels, self.out_channels // self.groups) if transposed
                    else (self.out_channels, self.in_channels // self.groups))
        weight_shape = (*channels, *self.kernel_size)
        factory = {"device": device, "dtype": dtype}
        self.weight = torch.nn.Parameter(torch.empty(weight_shape, **factory))
        if bias:
            self.bias = torch.nn.Parameter(torch.empty(self.out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the initial values as torch.nn's layer does (same generator calls).

        Weights: Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        with fan_in = weight.shape[1] times the kernel size; the bias from the same range.
        """
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = math.prod(self.weight.shape[1:])
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            torch.nn.init.uniform_(self.bias, -bound, bound)

    def _set_padding_mode(self, padding_mode: str, modes: tuple[str, ...]) -> None:
        if padding_mode not in modes:
            expected = repr(modes[0]) if len(modes) == 1 else f"one of {modes}"
            raise ValueError(f"padding_mode of {type(self).__name__} must be {expected}, "
                             f"got {padding_mode!r}")
        self.padding_mode = padding_mode

    def _padded(self, x: Tensor) -> tuple[Tensor, Any]:
        """(x, padding) for the convolution: with a padding_mode other than zeros, x
        padded by torch.nn.functional.pad (as torch.nn's layers do) and padding 0."""
        if self.padding_mode == "zeros":
            return x, self.padding
        _check_tensors(x=x)
        dims = len(self.kernel_size)
        _check_dim(x, "x", _LAYOUTS[dims])
        ones = (1,) * (2 - dims)  # a 1-D layer is a 2-D one with H = 1
        padding = self.padding if dims == 2 else _padding_1d(self.padding)
        (top, bottom), (left, right) = normalize_padding(
            padding, ones + tuple(x.shape[-dims:]), ones + self.kernel_size,
            ones + self.stride, ones + self.dilation,
        )
        widths = (left, right) if dims == 1 else (left, right, top, bottom)
        return torch.nn.functional.pad(x, widths, mode=self.padding_mode), 0

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        dims = len(self.kernel_size)
        # torch.nn's order and format, so both layers print alike
        defaults = {"padding": (0,) * dims, "dilation": (1,) * dims,
                    "output_padding": (0,) * dims, "groups": 1, "bias": None,
                    "padding_mode": "zeros"}
        for key, default in defaults.items():
            if key == "bias":
                text += ", bias=False" if self.bias is None else ""
                continue
            value = getattr(self, key, default)
            if value != default:
                text += f", {key}={value}"
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

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Options,
                 stride: Options = 1, padding: Options = 0, dilation: Options = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self._set_sizes(in_channels, out_channels, groups, 2, kernel_size=kernel_size,
                        stride=stride, dilation=dilation)
        self.padding = _conv_padding(padding, self.kernel_size, self.stride, self.dilation)
        self._set_padding_mode(padding_mode, _PADDING_MODES)
        self._make_parameters(False, bias, device, dtype)

    #: (what decided conv2d's checks: _conv2d_call_key, their geometry, the algorithm) of
    #: the last call outside autograd that passed them
    _checked: tuple[tuple[Any, ...], ConvGeometry, str] | None = None

    def forward(self, x: Tensor) -> Tensor:
        """Convolve x, shape (N, C, H, W) or (C, H, W), with the layer's parameters."""
        if self.padding_mode == "zeros":
            options = (self.stride, self.padding, self.dilation, self.groups)
            key = _conv2d_call_key(x, self.weight, self.bias, options)
            if key is not None:
                return self._forward_checked(key, x)
        x, padding = self._padded(x)
        return conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)

    def _forward_checked(self, key: tuple[Any, ...], x: Tensor) -> Tensor:
        """A call outside autograd: the checks run once per key (shapes, dtypes, layouts,
        options) and are skipped while it stays the same."""
        checked = self._checked
        if checked is not None and checked[0] == key:
            return _conv2d_checked(checked[1], checked[2], x, self.weight, self.bias)
        y = conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                   self.groups)
        options: tuple[Any, ...] = key[-1]  # stride, padding, dilation, groups
        if is_plain(options):  # no list among them, which could change in place
            geom = conv_geometry(tuple(x.shape), tuple(self.weight.shape), *options)
            object.__setattr__(self, "_checked", (key, geom, check_algorithm("auto", geom)))
        return y


class Conv1d(_ConvLayer):
    """1-D convolution layer computed by fastconv (as torch.nn.Conv1d).

    Parameters
    ----------
    in_channels, out_channels : int
        C and K; both multiples of ``groups``.
    kernel_size : int or (int,)
    stride, dilation : int or (int,)
    padding : int, (int,), (left, right), or str
        ``"valid"``, ``"same"`` or ``"full"``, as in :func:`fastconv.conv1d`.
    groups : int
    bias : bool
        Add a learnable bias.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        Values of the padding; other than zeros, the input is padded by
        torch.nn.functional.pad first, as torch.nn.Conv1d does.
    device, dtype
        Where and of which dtype the parameters are created (forward needs them on
        the CPU, in float32 or float64).

    Attributes
    ----------
    weight : torch.nn.Parameter, shape (out_channels, in_channels / groups, KL)
    bias : torch.nn.Parameter, shape (out_channels,), or None
        Both initialised as torch.nn.Conv1d does: with the same seed, the same values.

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> conv = fct.Conv1d(2, 4, 5, stride=2, padding=2)
    >>> conv
    Conv1d(2, 4, kernel_size=(5,), stride=(2,), padding=(2,))
    >>> conv(torch.randn(3, 2, 16)).shape
    torch.Size([3, 4, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Options,
                 stride: Options = 1, padding: Options = 0, dilation: Options = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self._set_sizes(in_channels, out_channels, groups, 1, kernel_size=kernel_size,
                        stride=stride, dilation=dilation)
        self.padding = _conv_padding_1d(padding, self.kernel_size, self.stride, self.dilation)
        self._set_padding_mode(padding_mode, _PADDING_MODES)
        self._make_parameters(False, bias, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Convolve x, shape (N, C, L) or (C, L), with the layer's parameters."""
        x, padding = self._padded(x)
        return conv1d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


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

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Options,
                 stride: Options = 1, padding: Options = 0, output_padding: Options = 0,
                 groups: int = 1, bias: bool = True, dilation: Options = 1,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self._set_sizes(in_channels, out_channels, groups, 2, kernel_size=kernel_size,
                        stride=stride, dilation=dilation, output_padding=output_padding)
        _no_word(padding)
        self.padding = _conv_padding(padding, self.kernel_size, self.stride, self.dilation)
        self._set_padding_mode(padding_mode, ("zeros",))
        self._make_parameters(True, bias, device, dtype)

    def forward(self, x: Tensor, output_size: Options = None) -> Tensor:
        """Transposed convolution of x, shape (N, C, H, W) or (C, H, W).

        ``output_size`` ((OH, OW), or a full shape) picks the output size among
        those the stride allows, as in PyTorch; it overrides ``output_padding``.
        """
        return conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                self.output_padding, self.groups, self.dilation,
                                output_size=output_size)


class ConvTranspose1d(_ConvLayer):
    """1-D transposed convolution layer computed by fastconv (as torch.nn.ConvTranspose1d).

    Parameters
    ----------
    in_channels, out_channels : int
        C and K; both multiples of ``groups``.
    kernel_size : int or (int,)
    stride, dilation : int or (int,)
    padding : int, (int,) or (left, right)
        Padding of the convolution this is the adjoint of (it shrinks the output).
    output_padding : int or (int,)
        Added to the right of the output; smaller than stride or dilation.
    groups : int
    bias : bool
    padding_mode : {"zeros"}
        The only mode, as in PyTorch.
    device, dtype
        Where and of which dtype the parameters are created.

    Attributes
    ----------
    weight : torch.nn.Parameter, shape (in_channels, out_channels / groups, KL)
    bias : torch.nn.Parameter, shape (out_channels,), or None
        Both initialised as torch.nn.ConvTranspose1d does.

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> up = fct.ConvTranspose1d(4, 2, 4, stride=2, padding=1)
    >>> up(torch.randn(3, 4, 10)).shape
    torch.Size([3, 2, 20])
    >>> up(torch.randn(3, 4, 10), output_size=[21]).shape
    torch.Size([3, 2, 21])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Options,
                 stride: Options = 1, padding: Options = 0, output_padding: Options = 0,
                 groups: int = 1, bias: bool = True, dilation: Options = 1,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self._set_sizes(in_channels, out_channels, groups, 1, kernel_size=kernel_size,
                        stride=stride, dilation=dilation, output_padding=output_padding)
        _no_word(padding)
        self.padding = _conv_padding_1d(padding, self.kernel_size, self.stride, self.dilation)
        self._set_padding_mode(padding_mode, ("zeros",))
        self._make_parameters(True, bias, device, dtype)

    def forward(self, x: Tensor, output_size: Options = None) -> Tensor:
        """Transposed convolution of x, shape (N, C, L) or (C, L).

        ``output_size`` (OL, (OL,) or a full shape) picks the output length among
        those the stride allows, as in PyTorch; it overrides ``output_padding``.
        """
        return conv_transpose1d(x, self.weight, self.bias, self.stride, self.padding,
                                self.output_padding, self.groups, self.dilation,
                                output_size=output_size)
