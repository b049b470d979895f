"""Helpers for the tests of fastconv.nn, fastconv.optim and fastconv.models.

Imported as a plain module (``from nn_helpers import ...``). Nothing here imports
torch at module level: the functions that need it take the module as an argument,
so the tests that use them are skipped where torch is missing.
"""

import numpy as np


# --------------------------------------------------------------------------- #
# running a fastconv layer and its torch counterpart
# --------------------------------------------------------------------------- #


def torch_dtype(torch, dtype):
    """The torch dtype of a NumPy float dtype."""
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[
        np.dtype(dtype)
    ]


def copy_params_to_torch(torch, layer, tmodule):
    """Copy every fastconv parameter into the torch parameter of the same name.

    The names (and so the order of registration) must be the same on both sides.
    """
    ours = dict(layer.named_parameters())
    theirs = dict(tmodule.named_parameters())
    assert list(ours) == list(theirs), f"parameter names {list(ours)} != torch's {list(theirs)}"
    with torch.no_grad():
        for name, param in ours.items():
            assert tuple(theirs[name].shape) == param.data.shape, name
            theirs[name].copy_(torch.from_numpy(param.data.copy()))


def run_fastconv(layer, x, gy_fn, forward_kwargs=None):
    """Forward ``x``, backward ``gy_fn(y.shape)``: (y, gy, gx, {name: grad copy})."""
    layer.zero_grad()
    y = layer(x, **(forward_kwargs or {}))
    gy = gy_fn(y.shape)
    gx = layer.backward(gy)
    grads = {name: p.grad.copy() for name, p in layer.named_parameters()}
    return y, gy, gx, grads


def run_torch(torch, tmodule, x, gy, forward_kwargs=None):
    """Forward and backward through torch: (y, gx, {name: grad}) as NumPy arrays."""
    xt = torch.from_numpy(np.array(x, copy=True)).requires_grad_(True)
    tmodule.zero_grad(set_to_none=True)
    yt = tmodule(xt, **(forward_kwargs or {}))
    yt.backward(torch.from_numpy(np.array(gy, copy=True)))
    grads = {
        name: (np.zeros(tuple(p.shape)) if p.grad is None else p.grad.detach().numpy().copy())
        for name, p in tmodule.named_parameters()
    }
    gx = None if xt.grad is None else xt.grad.detach().numpy().copy()
    return yt.detach().numpy().copy(), gx, grads


def check_against_torch(torch, layer, tmodule, x, rng, assert_close, *, forward_kwargs=None,
                        input_grad=True):
    """Compare output, input gradient and parameter gradients of ``layer`` with torch's.

    ``layer``'s parameters are copied into ``tmodule`` first; the comparison uses
    the tolerance of ``x``'s dtype (see conftest.assert_close). With
    ``input_grad=False`` the layer must return None as its input gradient.
    """
    dtype = np.dtype(x.dtype)
    tmodule.to(torch_dtype(torch, dtype))
    copy_params_to_torch(torch, layer, tmodule)

    def gy_fn(shape):
        return rng.standard_normal(shape).astype(dtype)

    y, gy, gx, grads = run_fastconv(layer, x, gy_fn, forward_kwargs)
    y_t, gx_t, grads_t = run_torch(torch, tmodule, x, gy, forward_kwargs)

    assert isinstance(y, np.ndarray) and y.dtype == dtype, f"y dtype {y.dtype} != {dtype}"
    assert_close(y, y_t, dtype=dtype, err_msg="output:")
    if input_grad:
        assert isinstance(gx, np.ndarray) and gx.dtype == dtype, f"gx {type(gx)} {dtype}"
        assert_close(gx, gx_t, dtype=dtype, err_msg="input gradient:")
    else:
        assert gx is None, "needs_input_grad=False must return None as the input gradient"
    for name, grad in grads.items():
        assert grad.dtype == dtype, f"{name}.grad dtype {grad.dtype} != {dtype}"
        assert_close(grad, grads_t[name], dtype=dtype, err_msg=f"{name}.grad:")
    return y, gx, grads


def torch_layers(torch):
    """torch modules for the fastconv layers that torch lacks, in a namespace.

    - ``Subsampling(channels, k)``: avg_pool2d(x, k) * weight[c] + bias[c];
    - ``ScaledTanh(a, s)``: a * tanh(s * x);
    - ``MaskedConv2d(c, k, kernel, mask)``: conv2d(x, weight * mask, bias);
    - ``Residual(block)``: x + block(x).
    """
    tnn = torch.nn
    tF = torch.nn.functional

    class Subsampling(tnn.Module):
        def __init__(self, channels, kernel_size=2):
            super().__init__()
            self.kernel_size = kernel_size
            self.weight = tnn.Parameter(torch.zeros(channels))
            self.bias = tnn.Parameter(torch.zeros(channels))

        def forward(self, x):
            pooled = tF.avg_pool2d(x, self.kernel_size)
            return pooled * self.weight[:, None, None] + self.bias[:, None, None]

    class ScaledTanh(tnn.Module):
        def __init__(self, amplitude=1.7159, slope=2.0 / 3.0):
            super().__init__()
            self.amplitude = amplitude
            self.slope = slope

        def forward(self, x):
            return self.amplitude * torch.tanh(self.slope * x)

    class MaskedConv2d(tnn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, mask):
            super().__init__()
            self.weight = tnn.Parameter(
                torch.zeros(out_channels, in_channels, kernel_size, kernel_size))
            self.bias = tnn.Parameter(torch.zeros(out_channels))
            self.register_buffer("mask", torch.from_numpy(np.asarray(mask, np.float64)))

        def forward(self, x):
            return tF.conv2d(x, self.weight * self.mask.to(x.dtype), self.bias)

    class Residual(tnn.Module):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x):
            return x + self.block(x)

    class Layers:
        pass

    layers = Layers()
    layers.Subsampling = Subsampling
    layers.ScaledTanh = ScaledTanh
    layers.MaskedConv2d = MaskedConv2d
    layers.Residual = Residual
    return layers


# --------------------------------------------------------------------------- #
# finite differences
# --------------------------------------------------------------------------- #


def loss_and_backward(net, loss_fn, x, target):
    """One forward and backward pass from zeroed gradients: (loss, input gradient)."""
    net.zero_grad()
    loss = loss_fn(net(x), target)
    gx = net.backward(loss_fn.backward())
    return loss, gx


def central_difference(f, array, index, eps):
    """(f() with array[index] + eps - f() with array[index] - eps) / (2 eps), in place."""
    old = array[index]
    array[index] = old + eps
    plus = f()
    array[index] = old - eps
    minus = f()
    array[index] = old
    return (plus - minus) / (2 * eps)


def directional_difference(f, array, direction, eps):
    """Central difference of f along ``direction`` (array is restored afterwards)."""
    old = array.copy()
    array += eps * direction
    plus = f()
    array[...] = old - eps * direction
    minus = f()
    array[...] = old
    return (plus - minus) / (2 * eps)
