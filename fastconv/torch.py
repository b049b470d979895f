"""PyTorch layers and functions computed by fastconv (needs PyTorch; CPU tensors).

The layers ``Conv1d``, ``Conv2d``, ``ConvTranspose1d``, ``ConvTranspose2d``,
``MaxPool1d``, ``MaxPool2d``, ``AvgPool1d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``,
``LPPool2d`` and ``MaxUnpool2d`` are ``torch.nn.Module`` s that take the place of
their ``torch.nn`` namesakes in a PyTorch model: same constructor arguments (in
the same order, stored under the same attribute names), same parameter names,
shapes and initialisation, so ``state_dict`` s load both ways. Their forward and
backward passes run fastconv's kernels through ``torch.autograd.Function`` s:
each pass hands fastconv NumPy views of the tensors (no copy) and wraps the
NumPy results as tensors (no copy). The 1-D layers run the 2-D kernels on
(N, C, 1, L) views. Every layer also takes unbatched input (no N axis), as
PyTorch's do.

:func:`convert` swaps these layers into an existing model in one call, keeping
its parameters, and reports what it left on PyTorch and why.

The functions ``conv1d``, ``conv2d``, ``conv_transpose1d``, ``conv_transpose2d``,
``max_pool1d``, ``max_pool2d``, ``avg_pool1d``, ``avg_pool2d``,
``adaptive_avg_pool2d``, ``lp_pool2d`` and ``max_unpool2d`` are the same
operations on tensors, with the argument order of ``torch.nn.functional``.

Tensors must be dense CPU tensors of ``torch.float32`` or ``torch.float64``, one
dtype per call; anything else raises TypeError naming the argument. Backward
passes are differentiable once (no double backward). Where fastconv's semantics
differ from PyTorch's (``lp_pool2d`` with an odd ``norm_type`` on negative
inputs; max pooling windows that see only padding) the README's "Pooling
semantics" says how. ``import fastconv`` never imports this module, nor PyTorch.

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

An existing model, converted in place:

>>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 9, padding=4), torch.nn.ReLU(),
...                           torch.nn.MaxPool1d(4))
>>> print(fct.convert(net))
fastconv.torch.convert: 2 swapped, 0 left on torch
module  torch.nn type  now
-----------------------------------------------
0       Conv1d         fastconv.torch.Conv1d
2       MaxPool1d      fastconv.torch.MaxPool1d
>>> net(torch.randn(2, 1, 64)).shape
torch.Size([2, 4, 16])
"""

try:
    import torch  # noqa: F401  (the clear message below when PyTorch is missing)
except ImportError as exc:
    raise ImportError(
        "fastconv.torch needs PyTorch, which could not be imported "
        f"({exc}); install it (pip install torch) to use fastconv's layers in PyTorch "
        "models. The rest of fastconv works without it."
    ) from exc

from fastconv._torch_conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d
from fastconv._torch_convert import ConvertReport, convert
from fastconv._torch_functional import (
    adaptive_avg_pool2d, avg_pool1d, avg_pool2d, conv1d, conv2d, conv_transpose1d,
    conv_transpose2d, lp_pool2d, max_pool1d, max_pool2d, max_unpool2d,
)
from fastconv._torch_pool import (
    AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, LPPool2d, MaxPool1d, MaxPool2d, MaxUnpool2d,
)

__all__ = [
    "AdaptiveAvgPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "Conv1d",
    "Conv2d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvertReport",
    "LPPool2d",
    "MaxPool1d",
    "MaxPool2d",
    "MaxUnpool2d",
    "adaptive_avg_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "conv1d",
    "conv2d",
    "conv_transpose1d",
    "conv_transpose2d",
    "convert",
    "lp_pool2d",
    "max_pool1d",
    "max_pool2d",
    "max_unpool2d",
]

# Defined in private modules, shown (and pickled, e.g. by torch.save of a whole
# model) under the name users import them by.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
