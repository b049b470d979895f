"""Pooling layers over fastconv.functional."""

import numpy as np

from fastconv import functional as F
from fastconv.nn._cache import NeedsForward
from fastconv.nn._init import generator
from fastconv.nn.module import Module, Parameter

__all__ = ["MaxPool2d", "AvgPool2d", "LPPool2d", "Subsampling"]


class MaxPool2d(NeedsForward, Module):
    """Max pooling layer (as torch.nn.MaxPool2d); backward routes through the argmax."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.options = dict(kernel_size=kernel_size, stride=stride, padding=padding,
                            dilation=dilation, ceil_mode=ceil_mode)

    def forward(self, x):
        y, idx = F.max_pool2d(x, **self.options, return_indices=True)
        self._save(idx, np.shape(x))
        return y

    def backward(self, grad_out):
        idx, input_shape = self._take()
        return F.max_pool2d_backward(grad_out, idx, input_shape)


class AvgPool2d(NeedsForward, Module):
    """Average pooling layer (as torch.nn.AvgPool2d)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self.options = dict(kernel_size=kernel_size, stride=stride, padding=padding,
                            ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                            divisor_override=divisor_override)

    def forward(self, x):
        self._save(np.shape(x))
        return F.avg_pool2d(x, **self.options)

    def backward(self, grad_out):
        (input_shape,) = self._take()
        return F.avg_pool2d_backward(grad_out, input_shape, **self.options)


class LPPool2d(NeedsForward, Module):
    """Power-average pooling (p-norm over each window), as torch.nn.LPPool2d."""

    def __init__(self, norm_type, kernel_size, stride=None, ceil_mode=False):
        super().__init__()
        self.norm_type = norm_type
        self.options = dict(kernel_size=kernel_size, stride=stride, ceil_mode=ceil_mode)

    def forward(self, x):
        y = F.lp_pool2d(x, self.norm_type, **self.options)
        self._save(x, y)
        return y

    def backward(self, grad_out):
        x, y = self._take()
        return F.lp_pool2d_backward(grad_out, x, y, self.norm_type, **self.options)


class Subsampling(NeedsForward, Module):
    """LeNet-5's trainable subsampling: average over 2x2 windows, times a per-map
    coefficient, plus a per-map bias (LeCun et al. 1998, layers S2 and S4).

    Parameters
    ----------
    channels : int
    kernel_size : int
        Window and stride (2 in LeNet-5).
    """

    def __init__(self, channels, kernel_size=2, *, dtype=np.float32, rng=None):
        super().__init__()
        self.kernel_size = kernel_size
        rng = generator(rng)
        bound = 1.0 / kernel_size  # fan-in of one unit is kernel_size**2 inputs summed as one
        self.weight = Parameter(rng.uniform(-bound, bound, channels).astype(dtype))
        self.bias = Parameter(rng.uniform(-bound, bound, channels).astype(dtype))

    def forward(self, x):
        pooled = F.avg_pool2d(x, self.kernel_size)
        self._save(pooled, np.shape(x))
        return pooled * self.weight.data[:, None, None] + self.bias.data[:, None, None]

    def backward(self, grad_out):
        pooled, input_shape = self._take()
        self.weight.grad += np.einsum("nchw,nchw->c", grad_out, pooled)
        self.bias.grad += grad_out.sum(axis=(0, 2, 3))
        return F.avg_pool2d_backward(grad_out * self.weight.data[:, None, None], input_shape,
                                     self.kernel_size)
