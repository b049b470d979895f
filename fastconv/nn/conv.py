"""Convolution layers over fastconv.functional."""

import numpy as np

from fastconv import functional as F
from fastconv.nn._cache import NeedsForward
from fastconv.nn._init import default_bound, generator, uniform
from fastconv.nn.module import Module, Parameter
from fastconv._validation import as_index, as_pair

__all__ = ["Conv2d", "ConvTranspose2d"]


def _channels(in_channels, out_channels, groups):
    """Validated (in_channels, out_channels, groups) of a convolution layer."""
    in_channels = as_index(in_channels, "in_channels", 1)
    out_channels = as_index(out_channels, "out_channels", 1)
    groups = as_index(groups, "groups", 1)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide in_channels={in_channels} and "
                         f"out_channels={out_channels}")
    return in_channels, out_channels, groups


class Conv2d(NeedsForward, Module):
    """2-D convolution layer (as torch.nn.Conv2d), input (N, C, H, W).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or (int, int)
    padding : int, pair, pair of pairs or "valid" / "same" / "full"
    groups : int
    bias : bool
    needs_input_grad : bool
        False for a network's first layer: backward then returns None and skips
        the input gradient.
    algorithm : {"auto", "direct", "im2col"}
    dtype : float32 (default) or float64
    rng : None, int or numpy.random.Generator
        Source of the PyTorch-default initial values.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, *, needs_input_grad=True, algorithm="auto",
                 dtype=np.float32, rng=None):
        super().__init__()
        in_channels, out_channels, groups = _channels(in_channels, out_channels, groups)
        kh, kw = as_pair(kernel_size, "kernel_size")
        self.options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        self.needs_input_grad = needs_input_grad
        self.algorithm = algorithm
        rng = generator(rng)
        bound = default_bound(in_channels // groups * kh * kw)
        self.weight = Parameter(uniform(rng, bound, (out_channels, in_channels // groups, kh, kw),
                                        dtype))
        self.bias = Parameter(uniform(rng, bound, (out_channels,), dtype)) if bias else None

    def _effective_weight(self):
        return self.weight.data

    def forward(self, x):
        b = None if self.bias is None else self.bias.data
        y = F.conv2d(x, self._effective_weight(), b, **self.options, algorithm=self.algorithm)
        self._save(x)
        return y

    def backward(self, grad_out):
        (x,) = self._take()
        gx, gw, gb = F.conv2d_backward(grad_out, x, self._effective_weight(), **self.options,
                                       needs_input_grad=self.needs_input_grad,
                                       algorithm=self.algorithm)
        self.weight.grad += self._mask_grad(gw)
        if self.bias is not None:
            self.bias.grad += gb
        return gx

    def _mask_grad(self, gw):
        return gw

    def extra_repr(self):
        k, c = self.weight.shape[0], self.weight.shape[1] * self.options["groups"]
        return f"{c}, {k}, kernel_size={self.weight.shape[2:]}, " + ", ".join(
            f"{key}={value}" for key, value in self.options.items()
        )


class ConvTranspose2d(NeedsForward, Module):
    """2-D transposed convolution layer (as torch.nn.ConvTranspose2d).

    The weight is (in_channels, out_channels / groups, KH, KW). Other parameters
    as :class:`Conv2d`, plus ``output_padding``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, *, needs_input_grad=True,
                 algorithm="auto", dtype=np.float32, rng=None):
        super().__init__()
        in_channels, out_channels, groups = _channels(in_channels, out_channels, groups)
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

    def forward(self, x, output_size=None):
        b = None if self.bias is None else self.bias.data
        y = F.conv_transpose2d(x, self.weight.data, b, **self.options, output_size=output_size,
                               algorithm=self.algorithm)
        self._save(x, output_size)
        return y

    def backward(self, grad_out):
        x, output_size = self._take()
        gx, gw, gb = F.conv_transpose2d_backward(
            grad_out, x, self.weight.data, **self.options, output_size=output_size,
            needs_input_grad=self.needs_input_grad, algorithm=self.algorithm,
        )
        self.weight.grad += gw
        if self.bias is not None:
            self.bias.grad += gb
        return gx
