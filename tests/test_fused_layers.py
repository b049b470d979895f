"""A Conv2d followed by MaxPool2d(2) in a Sequential runs as one kernel pass, forward
and (for a first layer) backward.

Where the convolution's plan is the wide-row or the channel-vectorised kernel at
stride 1 and the pooling is 2x2 at stride 2 (no padding, dilation or ceil mode),
``Sequential`` asks the Conv2d to run both: the kernel pools each task's output rows
itself (the channel-vectorised one from bands of an even number of rows) and never
writes the convolution's output. Each layer keeps what its own backward needs, so
outputs and gradients must be bit-identical to the layers run one by one (checked
here with fusion switched off on a twin model), with inf and NaN inputs too. A Conv2d
that needs no input gradient (a network's first) also takes its pooling's backward:
the pooled gradient is scattered into the weight gradient's wide rows, never made
full size; its weight gradient is bit-identical, its bias gradient sums the same
values in another order. Any other pair runs the layers unchanged.
"""

import numpy as np
import pytest

import fastconv as fc
from fastconv import _execute, nn
from fastconv.models import LeNet5
from fastconv.optim import SGD
from fastconv.train import train_step


def _spy_fused(monkeypatch, name="conv2d_forward_max_pool",
               modules=("_conv_wide", "_conv_cvec")):
    """Count the calls of a fused kernel (of the wide-row or channel-vectorised module)."""
    calls = []
    for module in (getattr(_execute, m) for m in modules):
        if hasattr(module, name):
            kernel = getattr(module, name)
            monkeypatch.setattr(module, name,
                                lambda *args, kernel=kernel: calls.append(1) or kernel(*args))
    return calls


def _no_fusion(model):
    for layer in model:
        object.__setattr__(layer, "_fuses_with_next", False)
    return model


# (input shape, Conv2d arguments) of convolutions the wide-row kernel runs, then pooled
WIDE_CASES = [
    ((3, 1, 28, 28), dict(in_channels=1, out_channels=6, kernel_size=5, padding=2)),
    ((2, 2, 13, 11), dict(in_channels=2, out_channels=7, kernel_size=3)),  # odd: floor
    ((1, 4, 16, 20), dict(in_channels=4, out_channels=4, kernel_size=3, padding=1,
                          groups=4)),
    ((2, 2, 19, 18), dict(in_channels=2, out_channels=3, kernel_size=(3, 2),
                          dilation=2, padding=(2, 0), bias=False)),
]
# ... and the channel-vectorised kernel (LeNet's C3; bands of 3 rows taken as 2 where
# grouped and dilated; odd sizes drop a last row and column)
CHANNEL_VECTOR_CASES = [
    ((3, 6, 14, 14), dict(in_channels=6, out_channels=16, kernel_size=5)),
    ((2, 8, 13, 11), dict(in_channels=8, out_channels=24, kernel_size=3)),
    ((2, 8, 12, 12), dict(in_channels=8, out_channels=16, kernel_size=3, padding=1,
                          groups=2)),
    ((2, 6, 17, 16), dict(in_channels=6, out_channels=12, kernel_size=3, dilation=2,
                          padding=(2, 1), bias=False)),
]
CASES = WIDE_CASES + CHANNEL_VECTOR_CASES


def _ids(case):
    return "x{}-{}".format(case[0], "-".join(f"{k}{v}" for k, v in case[1].items()
                                              if k not in ("in_channels",))).replace(" ", "")


def _net(conv_args, dtype, pool=None):
    return nn.Sequential(nn.Conv2d(**conv_args, dtype=dtype, rng=1),
                         pool if pool is not None else nn.MaxPool2d(2), nn.ReLU(),
                         nn.Flatten())


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_forward_and_backward_bit_identical_to_the_layers(case, dtype, monkeypatch):
    x_shape, conv_args = case
    rng = np.random.default_rng(sum(x_shape))
    x = rng.standard_normal(x_shape).astype(dtype)
    x[0, 0, 1, :3] = [np.inf, -np.inf, np.nan]  # inf and NaN reach the pooled windows
    model, twin = _net(conv_args, dtype), _no_fusion(_net(conv_args, dtype))
    calls = _spy_fused(monkeypatch)
    for _ in range(2):  # the first call checks the input; the second fuses
        y, y_twin = model(x), twin(x)
        np.testing.assert_array_equal(y, y_twin)
        gy = rng.standard_normal(y.shape).astype(dtype)
        gx, gx_twin = model.backward(gy), twin.backward(gy)
        np.testing.assert_array_equal(gx, gx_twin)
        for p, q in zip(model.parameters(), twin.parameters()):
            np.testing.assert_array_equal(p.grad, q.grad)
    assert len(calls) == 1


def test_pooled_values_and_indices_match_max_pool2d(dtype, rng):
    x = rng.standard_normal((2, 3, 17, 30)).astype(dtype)
    w = rng.standard_normal((5, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    conv = nn.Conv2d(3, 5, 3, padding=1, dtype=dtype)
    conv.weight.data[...], conv.bias.data[...] = w, b
    pool = nn.MaxPool2d(2)
    conv(x)  # checks the input once
    pooled = conv._forward_with_next(pool, x)
    assert pooled is not None
    y, idx = fc.max_pool2d(fc.conv2d(x, w, b, padding=1), 2, return_indices=True)
    np.testing.assert_array_equal(pooled, y)
    np.testing.assert_array_equal(pool._saved[0], idx)
    assert pool._saved[1] == (2, 5, 17, 30)


@pytest.mark.parametrize("case", CHANNEL_VECTOR_CASES, ids=_ids)
def test_channel_vector_pooling_matches_max_pool2d_bit_for_bit(case, dtype, monkeypatch):
    x_shape, conv_args = case
    rng = np.random.default_rng(len(x_shape) + x_shape[-1])
    conv = nn.Conv2d(**conv_args, dtype=dtype, rng=2)
    x = rng.standard_normal(x_shape).astype(dtype)
    x[-1, 0, 2:4, 1:3] = [[np.nan, 0.0], [-np.inf, 1e30]]
    options = {k: v for k, v in conv_args.items() if k in ("padding", "dilation", "groups")}
    plans = fc.explain(x, conv.weight.data, **options).plans
    assert plans["forward"].kernel == "channel_vector"
    calls = _spy_fused(monkeypatch, modules=("_conv_cvec",))
    pool = nn.MaxPool2d(2)
    conv(x)  # checks the input once
    pooled = conv._forward_with_next(pool, x)
    assert pooled is not None and len(calls) == 1
    b = None if conv.bias is None else conv.bias.data
    y, idx = fc.max_pool2d(fc.conv2d(x, conv.weight.data, b, **options), 2,
                           return_indices=True)
    bits = np.int64 if dtype == np.float64 else np.int32
    np.testing.assert_array_equal(pooled.view(bits), y.view(bits))  # -0.0, NaN payloads
    np.testing.assert_array_equal(pool._saved[0], idx)


def test_lenet5_training_steps_match_the_layers(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, (4, 16))
    c1_calls = _spy_fused(monkeypatch, modules=("_conv_wide",))
    c3_calls = _spy_fused(monkeypatch, modules=("_conv_cvec",))
    backward_calls = _spy_fused(monkeypatch, "conv2d_weight_grad_max_pool")
    results = []
    for fuse in (True, False):
        model = LeNet5("modern", rng=0).train()
        if not fuse:
            _no_fusion(model)
        loss_fn, opt = nn.CrossEntropyLoss(), SGD(model.parameters(), lr=0.05, momentum=0.9)
        losses = [train_step(model, loss_fn, opt, x[i], y[i])[0] for i in range(4)]
        results.append((losses, [p.data.copy() for p in model.parameters()]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    for p, q in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-7)
    # both forwards (C1 on wide rows, C3 on channel vectors) fuse from the second step
    # (the first checks the input), C1's backward from the first
    assert len(c1_calls) == 3 and len(c3_calls) == 3 and len(backward_calls) == 4


def _first_layer_net(dtype, needs_input_grad=False, k=5):
    return nn.Sequential(nn.Conv2d(2, k, 3, padding=1, needs_input_grad=needs_input_grad,
                                   dtype=dtype, rng=4), nn.MaxPool2d(2), nn.Flatten())


@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "nan-in-x"])
def test_first_layer_backward_matches_the_layers(nonfinite, dtype, monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2, 14, 26)).astype(dtype)
    if nonfinite:
        # the fused pass runs, its gradient (NaN where the loops make none) is checked
        # after the fact and thrown away: the layers' backward (the loops) gives it
        x[1, 0, 3, 4] = np.nan
    model, twin = _first_layer_net(dtype), _no_fusion(_first_layer_net(dtype))
    calls = _spy_fused(monkeypatch, "conv2d_weight_grad_max_pool")
    for _ in range(2):
        y = model(x)
        np.testing.assert_array_equal(y, twin(x))
        gy = rng.standard_normal(y.shape).astype(dtype)
        assert model.backward(gy) is None and twin.backward(gy) is None
    (w, b), (w_twin, b_twin) = model[0].parameters(), twin[0].parameters()
    np.testing.assert_array_equal(w.grad, w_twin.grad)
    np.testing.assert_allclose(b.grad, b_twin.grad, rtol=1e-12 if dtype == np.float64 else 1e-6)
    assert len(calls) == 2
    if nonfinite:
        assert np.isnan(w.grad).any() and not np.isnan(w.grad).all()


# (x shape, output channels) whose weight gradient runs on wide rows: under 4 output
# channels at any width, 4 to 7 from rows of 24; pooled rows of 5 (under one vector),
# 8 (one), 13 and 20 (a last vector overlapping the one before)
FIRST_LAYER_CASES = [((2, 2, 13, 11), 3), ((1, 2, 30, 17), 2), ((3, 2, 14, 26), 5),
                     ((2, 2, 9, 40), 4)]


@pytest.mark.parametrize("case", FIRST_LAYER_CASES, ids=lambda c: f"x{c[0]}-k{c[1]}")
def test_first_layer_weight_gradient_bit_identical_with_signed_zeros_and_nan(
        case, dtype, monkeypatch):
    """The pooled gradients go into the wide rows as assignments, window by window (no
    zeroing pass): -0.0 must come out as the +0.0 the layers' zeros-plus-gradient give,
    NaN and inf where their windows chose; short rows (under one vector) too."""
    x_shape, k = case
    rng = np.random.default_rng(sum(x_shape))
    x = rng.standard_normal(x_shape).astype(dtype)
    model, twin = _first_layer_net(dtype, k=k), _no_fusion(_first_layer_net(dtype, k=k))
    calls = _spy_fused(monkeypatch, "conv2d_weight_grad_max_pool")
    y = model(x)
    twin(x)
    gy = rng.standard_normal(y.shape).astype(dtype)
    flat = gy.reshape(-1)
    flat[::7] = -0.0
    flat[3], flat[11] = np.nan, np.inf
    model.backward(gy), twin.backward(gy)
    assert len(calls) == 1
    bits = np.int64 if dtype == np.float64 else np.int32
    np.testing.assert_array_equal(model[0].weight.grad.view(bits), twin[0].weight.grad.view(bits))


@pytest.mark.parametrize("case", FIRST_LAYER_CASES, ids=lambda c: f"x{c[0]}-k{c[1]}")
def test_first_layer_backward_with_an_argmax_outside_its_window(case, dtype, monkeypatch):
    """An index in the plane but outside its own window (not what 2x2 pooling makes)
    still gives max_pool2d_backward's gradient: zeros, then every gradient added at its
    index (the fused pass makes that channel's rows again that way)."""
    x_shape, k = case
    rng = np.random.default_rng(6)
    x = rng.standard_normal(x_shape).astype(dtype)
    model = _first_layer_net(dtype, k=k)
    calls = _spy_fused(monkeypatch, "conv2d_weight_grad_max_pool")
    y = model(x)
    idx, y_shape = model[1]._saved
    idx[-1, -1, -1, -1] = idx[-1, -1, 0, 0]  # two gradients at one place, one far away
    gy = rng.standard_normal(y.shape).astype(dtype)
    model.backward(gy)
    assert len(calls) == 1
    full = fc.max_pool2d_backward(gy.reshape(idx.shape), idx, y_shape)
    _, gw, _ = fc.conv2d_backward(full, x, model[0].weight.data, padding=1,
                                  needs_input_grad=False)
    np.testing.assert_allclose(model[0].weight.grad, gw, rtol=1e-12 if dtype == np.float64
                               else 1e-5, atol=1e-6)


def test_backward_needing_the_input_gradient_runs_the_layers(monkeypatch):
    calls = _spy_fused(monkeypatch, "conv2d_weight_grad_max_pool")
    model = _first_layer_net(np.float32, needs_input_grad=True)
    x = np.ones((2, 2, 8, 8), np.float32)
    y = model(x)
    assert model.backward(np.ones_like(y)).shape == x.shape
    assert not calls


def test_backward_with_bad_pooling_indices_raises():
    model = _first_layer_net(np.float32)
    x = np.ones((2, 2, 8, 8), np.float32)
    y = model(x)
    idx, shape = model[1]._saved
    idx[0, 0, 0, 0] = 8 * 8  # past the plane: never written there
    with pytest.raises(ValueError, match="outside"):
        model.backward(np.ones_like(y))


@pytest.mark.parametrize("pool", [nn.MaxPool2d(3), nn.MaxPool2d(2, stride=1),
                                  nn.MaxPool2d(2, padding=1), nn.MaxPool2d(2, ceil_mode=True),
                                  nn.MaxPool2d(2, dilation=2), nn.AvgPool2d(2)],
                         ids=["3x3", "stride-1", "padded", "ceil", "dilated", "average"])
def test_other_poolings_run_the_layers(pool, monkeypatch):
    calls = _spy_fused(monkeypatch)
    model = _net(dict(in_channels=1, out_channels=4, kernel_size=3), np.float32, pool)
    x = np.random.default_rng(2).standard_normal((2, 1, 12, 12)).astype(np.float32)
    model(x), model(x)
    assert not calls


def test_other_convolutions_and_overrides_run_the_layers(monkeypatch):
    calls = _spy_fused(monkeypatch)
    x = np.random.default_rng(3).standard_normal((2, 32, 10, 10)).astype(np.float32)
    deep = _net(dict(in_channels=32, out_channels=64, kernel_size=3), np.float32)
    deep(x), deep(x)  # a GEMM
    single_rows = _net(dict(in_channels=32, out_channels=32, kernel_size=3), np.float32)
    single_rows(x), single_rows(x)  # channel vectors in bands of one row
    strided = _net(dict(in_channels=32, out_channels=4, kernel_size=3, stride=2), np.float32)
    strided(x), strided(x)
    wide = _net(dict(in_channels=32, out_channels=4, kernel_size=3), np.float32)
    seen = []
    conv_forward = wide[0].forward
    wide[0].forward = lambda x: seen.append(1) or conv_forward(x)  # a hook by hand
    wide(x), wide(x)
    assert not calls and len(seen) == 2
