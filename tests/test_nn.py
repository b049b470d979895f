"""Tests for fastconv.nn: every layer against torch, finite differences, the Module protocol."""

import math

import numpy as np
import pytest

from fastconv import nn

from nn_helpers import (
    central_difference,
    check_against_torch,
    loss_and_backward,
    torch_layers,
)


# --------------------------------------------------------------------------- #
# every layer, forward and backward, against torch
# --------------------------------------------------------------------------- #


def _normal(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _positive(rng, shape, dtype):
    return (np.abs(rng.standard_normal(shape)) + 0.1).astype(dtype)


def _conv_case(c, k, kernel, size=(9, 8), n=2, **options):
    def build(torch, dtype, rng):
        layer = nn.Conv2d(c, k, kernel, **options, dtype=dtype, rng=rng)
        torch_options = {key: v for key, v in options.items()
                         if key not in ("needs_input_grad", "algorithm")}
        tmodule = torch.nn.Conv2d(c, k, kernel, **torch_options)
        return layer, tmodule, _normal(rng, (n, c, *size), dtype)

    return build


def _conv_t_case(c, k, kernel, size=(5, 4), n=2, **options):
    def build(torch, dtype, rng):
        layer = nn.ConvTranspose2d(c, k, kernel, **options, dtype=dtype, rng=rng)
        torch_options = {key: v for key, v in options.items()
                         if key not in ("needs_input_grad", "algorithm")}
        tmodule = torch.nn.ConvTranspose2d(c, k, kernel, **torch_options)
        return layer, tmodule, _normal(rng, (n, c, *size), dtype)

    return build


def _plain_case(make_layer, make_torch, shape, sample=_normal):
    """A layer without constructor dtype; make_torch(torch) builds its torch twin."""
    def build(torch, dtype, rng):
        return make_layer(), make_torch(torch), sample(rng, shape, dtype)

    return build


def _subsampling_case(torch, dtype, rng):
    layer = nn.Subsampling(3, 2, dtype=dtype, rng=rng)
    return layer, torch_layers(torch).Subsampling(3, 2), _normal(rng, (2, 3, 8, 6), dtype)


def _linear_case(bias):
    def build(torch, dtype, rng):
        layer = nn.Linear(7, 5, bias=bias, dtype=dtype, rng=rng)
        return layer, torch.nn.Linear(7, 5, bias=bias), _normal(rng, (4, 7), dtype)

    return build


def _residual_case(torch, dtype, rng):
    layer = nn.Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, dtype=dtype, rng=rng),
                                      nn.Tanh()))
    tmodule = torch_layers(torch).Residual(
        torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Tanh()))
    return layer, tmodule, _normal(rng, (2, 3, 6, 5), dtype)


def _sequential_case(torch, dtype, rng):
    layer = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, dtype=dtype, rng=rng),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 3, 3, dtype=dtype, rng=rng),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(27, 5, dtype=dtype, rng=rng),
        nn.Sigmoid(),
    )
    t = torch.nn
    tmodule = t.Sequential(t.Conv2d(2, 4, 3, padding=1), t.ReLU(), t.MaxPool2d(2),
                           t.Conv2d(4, 3, 3), t.Tanh(), t.Flatten(), t.Linear(27, 5),
                           t.Sigmoid())
    return layer, tmodule, _normal(rng, (3, 2, 10, 10), dtype)


def _sigmoid_input(rng, shape, dtype):
    x = 10 * rng.standard_normal(shape)
    x.flat[:4] = [-80.0, 80.0, -700.0, 700.0]  # no overflow warning, saturated values
    return x.astype(dtype)


def _dropout_eval_case(torch, dtype, rng):
    layer = nn.Dropout(0.4, rng=rng).eval()
    return layer, torch.nn.Dropout(0.4).eval(), _normal(rng, (3, 4, 5), dtype)


SHAPE4 = (2, 3, 9, 8)

LAYER_CASES = {
    # Conv2d
    "conv-basic": _conv_case(3, 5, 3),
    "conv-stride-padding": _conv_case(4, 6, (3, 2), stride=(2, 1), padding=(1, 2)),
    "conv-groups": _conv_case(4, 6, 3, groups=2, padding=1),
    "conv-depthwise-stride": _conv_case(4, 8, 3, groups=4, stride=2),
    "conv-dilation": _conv_case(3, 4, 3, dilation=2, padding=2),
    "conv-same-even-kernel": _conv_case(3, 4, (2, 3), padding="same"),
    "conv-no-bias": _conv_case(3, 4, 3, bias=False),
    "conv-direct": _conv_case(3, 4, 3, stride=2, padding=1, algorithm="direct"),
    "conv-im2col": _conv_case(3, 4, 3, stride=2, padding=1, algorithm="im2col"),
    "conv-1x1": _conv_case(5, 3, 1),
    # ConvTranspose2d
    "convt-basic": _conv_t_case(3, 5, 3),
    "convt-stride-outpad": _conv_t_case(4, 6, 3, stride=2, padding=1, output_padding=1),
    "convt-groups-dilation": _conv_t_case(4, 6, (3, 2), stride=(1, 2), groups=2,
                                          dilation=(2, 1)),
    "convt-no-bias": _conv_t_case(3, 2, 2, stride=2, bias=False),
    # pooling
    "maxpool-2": _plain_case(lambda: nn.MaxPool2d(2), lambda t: t.nn.MaxPool2d(2), SHAPE4),
    "maxpool-3-s2-p1": _plain_case(lambda: nn.MaxPool2d(3, stride=2, padding=1),
                                   lambda t: t.nn.MaxPool2d(3, stride=2, padding=1), SHAPE4),
    "maxpool-dilation": _plain_case(
        lambda: nn.MaxPool2d((2, 3), stride=(2, 1), dilation=(1, 2)),
        lambda t: t.nn.MaxPool2d((2, 3), stride=(2, 1), dilation=(1, 2)), SHAPE4),
    "maxpool-ceil": _plain_case(lambda: nn.MaxPool2d(3, stride=2, ceil_mode=True),
                                lambda t: t.nn.MaxPool2d(3, stride=2, ceil_mode=True), SHAPE4),
    "avgpool-2": _plain_case(lambda: nn.AvgPool2d(2), lambda t: t.nn.AvgPool2d(2), SHAPE4),
    "avgpool-3-s2-p1": _plain_case(lambda: nn.AvgPool2d(3, stride=2, padding=1),
                                   lambda t: t.nn.AvgPool2d(3, stride=2, padding=1), SHAPE4),
    "avgpool-exclude-pad": _plain_case(
        lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        lambda t: t.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), SHAPE4),
    "avgpool-ceil": _plain_case(
        lambda: nn.AvgPool2d((3, 2), stride=(2, 3), padding=(1, 0), ceil_mode=True,
                             count_include_pad=False),
        lambda t: t.nn.AvgPool2d((3, 2), stride=(2, 3), padding=(1, 0), ceil_mode=True,
                                 count_include_pad=False), SHAPE4),
    "avgpool-divisor": _plain_case(lambda: nn.AvgPool2d(2, divisor_override=3),
                                   lambda t: t.nn.AvgPool2d(2, divisor_override=3), SHAPE4),
    "lppool-p2": _plain_case(lambda: nn.LPPool2d(2, 2), lambda t: t.nn.LPPool2d(2, 2), SHAPE4),
    "lppool-p2-ceil": _plain_case(lambda: nn.LPPool2d(2, 3, stride=2, ceil_mode=True),
                                  lambda t: t.nn.LPPool2d(2, 3, stride=2, ceil_mode=True),
                                  SHAPE4),
    "lppool-p3-positive": _plain_case(lambda: nn.LPPool2d(3, (2, 3), stride=(2, 1)),
                                      lambda t: t.nn.LPPool2d(3, (2, 3), stride=(2, 1)),
                                      SHAPE4, _positive),
    "lppool-p1.5-positive": _plain_case(lambda: nn.LPPool2d(1.5, 2),
                                        lambda t: t.nn.LPPool2d(1.5, 2), SHAPE4, _positive),
    "subsampling": _subsampling_case,
    # dense
    "linear": _linear_case(True),
    "linear-no-bias": _linear_case(False),
    "flatten": _plain_case(lambda: nn.Flatten(), lambda t: t.nn.Flatten(), SHAPE4),
    "flatten-start2": _plain_case(lambda: nn.Flatten(2), lambda t: t.nn.Flatten(2), SHAPE4),
    # activations
    "relu": _plain_case(lambda: nn.ReLU(), lambda t: t.nn.ReLU(), SHAPE4),
    "leaky-relu-default": _plain_case(lambda: nn.LeakyReLU(), lambda t: t.nn.LeakyReLU(),
                                      SHAPE4),
    "leaky-relu-0.2": _plain_case(lambda: nn.LeakyReLU(0.2), lambda t: t.nn.LeakyReLU(0.2),
                                  SHAPE4),
    "tanh": _plain_case(lambda: nn.Tanh(), lambda t: t.nn.Tanh(), SHAPE4),
    "scaled-tanh": _plain_case(lambda: nn.ScaledTanh(), lambda t: torch_layers(t).ScaledTanh(),
                               SHAPE4),
    "scaled-tanh-custom": _plain_case(lambda: nn.ScaledTanh(2.5, 0.3),
                                      lambda t: torch_layers(t).ScaledTanh(2.5, 0.3), SHAPE4),
    "sigmoid": _plain_case(lambda: nn.Sigmoid(), lambda t: t.nn.Sigmoid(), SHAPE4,
                           _sigmoid_input),
    "dropout-eval": _dropout_eval_case,
    # containers
    "residual": _residual_case,
    "sequential": _sequential_case,
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("case", list(LAYER_CASES), ids=list(LAYER_CASES))
def test_layer_matches_torch(case, dtype, rng, torch, assert_close):
    layer, tmodule, x = LAYER_CASES[case](torch, dtype, rng)
    check_against_torch(torch, layer, tmodule, x, rng, assert_close)


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "convt"])
def test_conv_needs_input_grad_false(transposed, dtype, rng, torch, assert_close):
    """No input gradient (None), the same parameter gradients as torch."""
    build = (_conv_t_case(4, 6, 3, stride=2, padding=1, needs_input_grad=False) if transposed
             else _conv_case(4, 6, 3, stride=2, padding=1, groups=2, needs_input_grad=False))
    layer, tmodule, x = build(torch, dtype, rng)
    check_against_torch(torch, layer, tmodule, x, rng, assert_close, input_grad=False)


def test_conv_transpose_output_size_matches_torch(dtype, rng, torch, assert_close):
    layer, tmodule, x = _conv_t_case(3, 4, 3, size=(4, 5), stride=2, padding=1)(torch, dtype, rng)
    # the default output is (7, 9); (8, 10) needs output_padding 1 on both axes
    y, _, _ = check_against_torch(torch, layer, tmodule, x, rng, assert_close,
                                  forward_kwargs={"output_size": (8, 10)})
    assert y.shape == (2, 4, 8, 10)


def test_conv2d_matches_torch_after_to_float64(rng, torch, assert_close):
    """A float32 layer converted with .to(np.float64) computes in float64."""
    layer = nn.Conv2d(3, 4, 3, padding=1, rng=1).to(np.float64)
    assert layer.weight.data.dtype == np.float64 and layer.weight.grad.dtype == np.float64
    check_against_torch(torch, layer, torch.nn.Conv2d(3, 4, 3, padding=1),
                        rng.standard_normal((2, 3, 6, 6)), rng, assert_close)


# --------------------------------------------------------------------------- #
# dropout
# --------------------------------------------------------------------------- #


def test_dropout_training_mask(rng):
    p = 0.3
    layer = nn.Dropout(p, rng=np.random.default_rng(5))
    assert layer.training
    x = rng.standard_normal((400, 250)) + 3.0  # no zeros in x
    y = layer(x)
    scale = y / x
    kept = scale != 0
    np.testing.assert_allclose(scale[kept], 1 / (1 - p), rtol=1e-12)
    assert abs(scale.mean() - 1) < 0.02, scale.mean()
    assert abs((~kept).mean() - p) < 0.01, (~kept).mean()
    gy = rng.standard_normal(x.shape)
    np.testing.assert_allclose(layer.backward(gy), gy * scale, rtol=1e-12, atol=0)


def test_dropout_float32_and_reproducible(rng):
    x = rng.standard_normal((50, 40)).astype(np.float32)
    y1 = nn.Dropout(0.5, rng=7)(x)
    y2 = nn.Dropout(0.5, rng=7)(x)
    assert y1.dtype == np.float32
    np.testing.assert_array_equal(y1, y2)
    kept = y1 != 0
    np.testing.assert_allclose(y1[kept], 2 * x[kept], rtol=1e-6)


def test_dropout_eval_is_identity(rng):
    layer = nn.Dropout(0.9, rng=0)
    assert layer.eval() is layer and not layer.training
    x = rng.standard_normal((6, 7))
    np.testing.assert_array_equal(layer(x), x)
    gy = rng.standard_normal((6, 7))
    np.testing.assert_array_equal(layer.backward(gy), gy)
    layer.train()
    assert layer.training
    assert np.any(layer(x) == 0)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_bad_p(p):
    with pytest.raises(ValueError):
        nn.Dropout(p)


def test_train_eval_propagate_through_containers():
    net = nn.Sequential(nn.Linear(4, 4, rng=0), nn.Dropout(0.5),
                        nn.Residual(nn.Sequential(nn.Dropout(0.2), nn.ReLU())))
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    mods = list(net.modules())
    assert len(mods) == 7
    assert not any(m.training for m in mods)
    x = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_array_equal(net(x), net(x))  # deterministic in eval
    assert net.train() is net
    assert all(m.training for m in net.modules())
    net.train(False)
    assert not any(m.training for m in net.modules())


# --------------------------------------------------------------------------- #
# CrossEntropyLoss
# --------------------------------------------------------------------------- #


def _torch_cross_entropy(torch, logits, target, grad_out=1.0):
    lt = torch.from_numpy(logits.copy()).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(lt, torch.from_numpy(target.astype(np.int64)))
    (loss * grad_out).backward()
    return float(loss.detach()), lt.grad.numpy()


def test_cross_entropy_matches_torch(dtype, rng, torch, assert_close):
    logits = (3 * rng.standard_normal((7, 5))).astype(dtype)
    target = rng.integers(0, 5, 7)
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(logits, target)
    assert isinstance(loss, float)
    grad = loss_fn.backward()
    assert grad.dtype == dtype and grad.shape == logits.shape
    loss_t, grad_t = _torch_cross_entropy(torch, logits, target)
    assert_close(np.array(loss), loss_t, dtype=dtype, err_msg="loss:")
    assert_close(grad, grad_t, dtype=dtype, err_msg="grad:")
    # backward(grad_out) scales the gradient
    assert_close(loss_fn.backward(2.5), 2.5 * grad_t, dtype=dtype, err_msg="scaled grad:")


@pytest.mark.parametrize("target_dtype", [np.int32, np.int64, np.uint8])
def test_cross_entropy_integer_target_dtypes(target_dtype, rng, torch, assert_close):
    logits = rng.standard_normal((4, 3))
    target = np.array([0, 2, 1, 2], dtype=target_dtype)
    loss_fn = nn.CrossEntropyLoss()
    loss_t, grad_t = _torch_cross_entropy(torch, logits, target)
    assert_close(np.array(loss_fn(logits, target)), loss_t)
    assert_close(loss_fn.backward(), grad_t)


def test_cross_entropy_huge_logits_stable(dtype, torch, assert_close):
    logits = np.array([[1e4, 0.0, -1e4],
                       [1e4, 1e4 - 2.0, 0.0],
                       [-1e4, -1e4, -1e4],
                       [0.0, 0.0, 1e4]], dtype=dtype)
    target = np.array([1, 1, 2, 2])
    loss_fn = nn.CrossEntropyLoss()
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        loss = loss_fn(logits, target)
        grad = loss_fn.backward()
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    # by hand: 1e4, log(1 + e^-2) + 2, log 3, 0 -> mean
    expected = (1e4 + 2 + math.log1p(math.exp(-2)) + math.log(3)) / 4
    assert loss == pytest.approx(expected, rel=1e-12 if dtype == np.float64 else 1e-6)
    loss_t, grad_t = _torch_cross_entropy(torch, logits, target)
    assert_close(np.array(loss), loss_t, dtype=dtype)
    assert_close(grad, grad_t, dtype=dtype)


def test_cross_entropy_matches_float64_reference(dtype, rng, assert_close):
    """The kernel's loss and gradient against plain NumPy in float64, with a row of
    equal logits, non-contiguous logits and a uint64 target."""
    logits = (4 * rng.standard_normal((9, 12))).astype(dtype)[:, ::2]
    logits[3] = 1.5
    target = rng.integers(0, 6, 9).astype(np.uint64)
    loss_fn = nn.CrossEntropyLoss()
    loss, grad = loss_fn(logits, target), loss_fn.backward(0.5)
    z = logits.astype(np.float64)
    log_probs = z - z.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    rows = np.arange(9)
    assert loss == pytest.approx(-log_probs[rows, target.astype(int)].mean(),
                                 rel=1e-12 if dtype == np.float64 else 1e-6)
    expected = np.exp(log_probs)
    expected[rows, target.astype(int)] -= 1
    assert grad.dtype == dtype
    assert_close(grad, expected * 0.5 / 9, dtype=dtype)


def test_cross_entropy_nan_row_stays_in_its_row():
    logits = np.array([[0.0, np.nan, 1.0], [1.0, 2.0, 3.0]], dtype=np.float32)
    loss_fn = nn.CrossEntropyLoss()
    assert math.isnan(loss_fn(logits, np.array([0, 2])))
    grad = loss_fn.backward()
    assert np.isnan(grad[0]).all() and np.isfinite(grad[1]).all()


def test_cross_entropy_float16_logits_take_numpy(rng):
    logits = rng.standard_normal((3, 4)).astype(np.float16)
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(logits, np.array([0, 1, 3]))
    grad = loss_fn.backward()
    z = logits.astype(np.float64)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-log_probs[[0, 1, 2], [0, 1, 3]].mean(), rel=1e-2)
    assert grad.dtype == np.float16 and grad.shape == (3, 4)


@pytest.mark.parametrize(
    "logits_shape, target",
    [
        ((4, 3), np.array([[0], [1], [2], [0]])),       # (N, 1)
        ((4, 3), np.array([0, 1, 2])),                  # N - 1
        ((4, 3), np.array([0, 1, 2, 0, 1])),            # N + 1
        ((4, 3), np.array([0.0, 1.0, 2.0, 0.0])),       # float targets
        ((4, 3), np.array([True, False, True, False])),  # bool targets
        ((4, 3), np.array([0, 1, 3, 0])),               # == classes
        ((4, 3), np.array([0, -1, 2, 0])),              # negative
        ((4, 3), np.array(1)),                          # scalar
        ((12,), np.array([0, 1, 2, 0])),                # 1-D logits
        ((4, 3, 1), np.array([0, 1, 2, 0])),            # 3-D logits
    ],
    ids=["n-by-1", "short", "long", "float", "bool", "too-large", "negative", "scalar",
         "logits-1d", "logits-3d"],
)
def test_cross_entropy_bad_target(logits_shape, target):
    logits = np.zeros(logits_shape)
    with pytest.raises(ValueError):
        nn.CrossEntropyLoss()(logits, target)


# --------------------------------------------------------------------------- #
# finite differences of a small network
# --------------------------------------------------------------------------- #


def test_small_network_gradients_by_finite_differences():
    rng = np.random.default_rng(3)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, needs_input_grad=True, rng=rng),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, stride=1, padding=1, groups=1, rng=rng),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 5, rng=rng),
    ).to(np.float64)
    loss_fn = nn.CrossEntropyLoss()
    x = rng.standard_normal((3, 2, 8, 8))
    target = np.array([0, 3, 4])

    loss, gx = loss_and_backward(net, loss_fn, x, target)
    assert gx.shape == x.shape and gx.dtype == np.float64

    def f():
        return loss_fn(net(x), target)

    eps = 1e-6
    arrays = [(name, p.data, p.grad.copy()) for name, p in net.named_parameters()]
    arrays.append(("input", x, gx.copy()))
    for name, array, analytic in arrays:
        numeric = np.array([central_difference(f, array, i, eps) for i in np.ndindex(array.shape)])
        numeric = numeric.reshape(array.shape)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8, err_msg=name)
    assert f() == loss  # everything restored


# --------------------------------------------------------------------------- #
# the Module protocol
# --------------------------------------------------------------------------- #


def _small_net(rng=0, dtype=np.float64):
    rng = np.random.default_rng(rng)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, dtype=dtype, rng=rng),
        nn.ReLU(),
        nn.Conv2d(3, 3, 1, bias=False, dtype=dtype, rng=rng),
        nn.Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, dtype=dtype, rng=rng),
                                  nn.Tanh())),
        nn.Subsampling(3, 2, dtype=dtype, rng=rng),
        nn.Flatten(),
        nn.Linear(12, 4, dtype=dtype, rng=rng),
    )


SMALL_NET_NAMES = ["0.weight", "0.bias", "2.weight", "3.block.0.weight", "3.block.0.bias",
                   "4.weight", "4.bias", "6.weight", "6.bias"]


def test_named_parameters_order_and_names():
    net = _small_net()
    names = [name for name, _ in net.named_parameters()]
    assert names == SMALL_NET_NAMES
    params = list(net.parameters())
    assert [id(p) for p in params] == [id(p) for _, p in net.named_parameters()]
    assert params[0] is net[0].weight and params[3] is net[3].block[0].weight
    assert all(isinstance(p, nn.Parameter) for p in params)
    assert list(net.state_dict()) == names
    # a layer without bias registers none
    assert [n for n, _ in nn.Conv2d(2, 3, 3, bias=False).named_parameters()] == ["weight"]
    assert list(nn.ReLU().parameters()) == []


def test_parameter_names_match_torch(torch):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3),
                        nn.Residual(nn.Sequential(nn.Linear(3, 3), nn.Tanh())))
    t = torch.nn
    tnet = t.Sequential(t.Conv2d(1, 2, 3), t.ReLU(), t.Flatten(), t.Linear(8, 3),
                        torch_layers(torch).Residual(t.Sequential(t.Linear(3, 3), t.Tanh())))
    assert list(net.state_dict()) == list(tnet.state_dict())
    assert [n for n, _ in net.named_parameters()] == [n for n, _ in tnet.named_parameters()]


def test_parameters_yields_a_shared_parameter_once():
    shared = nn.Linear(3, 3, rng=0)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(net.parameters())) == 2


def test_zero_grad_and_backward_accumulates(rng):
    net = _small_net()
    x = rng.standard_normal((2, 2, 6, 6))
    gy = rng.standard_normal((2, 4))
    net.zero_grad()
    net(x)
    gx1 = net.backward(gy)
    first = {name: p.grad.copy() for name, p in net.named_parameters()}
    assert all(np.any(g != 0) for g in first.values())
    net(x)
    gx2 = net.backward(gy)
    np.testing.assert_allclose(gx2, gx1, rtol=1e-13)  # the input gradient does not accumulate
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * first[name], rtol=1e-13, atol=1e-15,
                                   err_msg=name)
    net.zero_grad()
    for name, p in net.named_parameters():
        assert p.grad.shape == p.data.shape and p.grad.dtype == p.data.dtype
        assert not np.any(p.grad), name


def _snapshot(net):
    return {name: p.data.copy() for name, p in net.named_parameters()}


def _assert_unchanged(net, snapshot):
    for name, p in net.named_parameters():
        np.testing.assert_array_equal(p.data, snapshot[name], err_msg=name)


def test_state_dict_round_trip(rng):
    net = _small_net(rng=1)
    other = _small_net(rng=2)
    x = rng.standard_normal((2, 2, 6, 6))
    assert not np.allclose(net(x), other(x))
    state = net.state_dict()
    for name, p in net.named_parameters():
        assert not np.shares_memory(state[name], p.data), name
    other.load_state_dict(state)
    np.testing.assert_array_equal(other(x), net(x))
    # later changes of either side do not leak into the other
    state["0.weight"][...] = 0
    assert np.any(net[0].weight.data) and np.any(other[0].weight.data)
    net[0].weight.data += 1
    assert not np.array_equal(net[0].weight.data, other[0].weight.data)


@pytest.mark.parametrize("defect", ["missing-first", "missing-last", "extra", "wrong-shape-last",
                                    "wrong-shape-first"])
def test_load_state_dict_rejects_mismatch_atomically(defect):
    net = _small_net(rng=1)
    before = _snapshot(net)
    state = _small_net(rng=2).state_dict()
    if defect == "missing-first":
        del state["0.weight"]
    elif defect == "missing-last":
        del state["6.bias"]
    elif defect == "extra":
        state["7.weight"] = np.zeros(3)
    elif defect == "wrong-shape-last":
        state["6.bias"] = np.zeros(5)
    else:
        state["0.weight"] = state["0.weight"].reshape(3, 2, 9)
    with pytest.raises(ValueError):
        net.load_state_dict(state)
    _assert_unchanged(net, before)


LAYERS_NEEDING_FORWARD = {
    "conv2d": (lambda: nn.Conv2d(2, 3, 3), (1, 3, 2, 2)),
    "conv-transpose2d": (lambda: nn.ConvTranspose2d(2, 3, 3), (1, 3, 4, 4)),
    "maxpool": (lambda: nn.MaxPool2d(2), (1, 2, 2, 2)),
    "avgpool": (lambda: nn.AvgPool2d(2), (1, 2, 2, 2)),
    "lppool": (lambda: nn.LPPool2d(2, 2), (1, 2, 2, 2)),
    "subsampling": (lambda: nn.Subsampling(2), (1, 2, 2, 2)),
    "linear": (lambda: nn.Linear(3, 2), (1, 2)),
    "flatten": (lambda: nn.Flatten(), (1, 4)),
    "relu": (lambda: nn.ReLU(), (1, 4)),
    "leaky-relu": (lambda: nn.LeakyReLU(), (1, 4)),
    "tanh": (lambda: nn.Tanh(), (1, 4)),
    "scaled-tanh": (lambda: nn.ScaledTanh(), (1, 4)),
    "sigmoid": (lambda: nn.Sigmoid(), (1, 4)),
    "dropout": (lambda: nn.Dropout(0.5), (1, 4)),
    "residual": (lambda: nn.Residual(nn.Tanh()), (1, 4)),
    "sequential": (lambda: nn.Sequential(nn.Linear(3, 2), nn.ReLU()), (1, 2)),
}


@pytest.mark.parametrize("name", list(LAYERS_NEEDING_FORWARD))
def test_backward_before_forward_raises(name):
    make, gy_shape = LAYERS_NEEDING_FORWARD[name]
    with pytest.raises(RuntimeError):
        make().backward(np.zeros(gy_shape, dtype=np.float32))


def test_loss_backward_before_forward_raises():
    with pytest.raises(RuntimeError):
        nn.CrossEntropyLoss().backward()


@pytest.mark.parametrize(
    "make, fan_in",
    [
        (lambda rng: nn.Conv2d(6, 10, (3, 5), rng=rng), 6 * 15),
        (lambda rng: nn.Conv2d(8, 12, 3, groups=4, rng=rng), 2 * 9),
        (lambda rng: nn.ConvTranspose2d(4, 10, 3, groups=2, rng=rng), 5 * 9),
        (lambda rng: nn.Linear(50, 30, rng=rng), 50),
        (lambda rng: nn.Subsampling(40, 2, rng=rng), 4),
    ],
    ids=["conv", "conv-groups", "conv-transpose", "linear", "subsampling"],
)
def test_initialisation_bounds_and_seed(make, fan_in):
    layer = make(0)
    bound = 1 / math.sqrt(fan_in)
    for name, p in layer.named_parameters():
        assert p.data.dtype == np.float32 and p.grad.dtype == np.float32
        assert not np.any(p.grad)
        assert np.all(np.abs(p.data) <= bound * (1 + 1e-6)), name
        # uniform over the whole range, as PyTorch's default
        assert np.abs(p.data).max() > 0.7 * bound, name
        assert abs(float(p.data.mean())) < 0.5 * bound, name
    same = make(0)
    for (name, p), (_, q) in zip(layer.named_parameters(), same.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    same = make(np.random.default_rng(0))
    for (name, p), (_, q) in zip(layer.named_parameters(), same.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    other = make(1)
    assert not np.array_equal(layer.weight.data, other.weight.data)


def test_initialisation_statistics_match_torch(torch):
    """The default weights have PyTorch's spread: U(-b, b) has standard deviation b / sqrt(3)."""
    ours = nn.Conv2d(16, 64, 5, rng=0).weight.data
    torch.manual_seed(0)
    theirs = torch.nn.Conv2d(16, 64, 5).weight.detach().numpy()
    assert abs(ours.max()) <= 1 / math.sqrt(400) and abs(theirs).max() <= 1 / math.sqrt(400)
    assert ours.std() == pytest.approx(theirs.std(), rel=0.02)


@pytest.mark.parametrize("dtype_", [np.float32, np.float64])
def test_layer_dtype_argument(dtype_):
    for layer in (nn.Conv2d(2, 3, 3, dtype=dtype_), nn.ConvTranspose2d(2, 3, 3, dtype=dtype_),
                  nn.Linear(3, 2, dtype=dtype_), nn.Subsampling(2, dtype=dtype_)):
        for name, p in layer.named_parameters():
            assert p.data.dtype == dtype_ and p.grad.dtype == dtype_, (layer, name)


def test_residual_rejects_shape_change():
    with pytest.raises(ValueError):
        nn.Residual(nn.Linear(3, 2))(np.zeros((1, 3), np.float32))


def test_sequential_rejects_non_module():
    with pytest.raises(TypeError):
        nn.Sequential(nn.ReLU(), lambda x: x)


# --------------------------------------------------------------------------- #
# Sequential runs ReLU after an adjacent MaxPool2d
# --------------------------------------------------------------------------- #


def _relu_pool_ref(x, gy, pool):
    """Float64 reference of ReLU then max pool, in layer order: (y, dL/dx)."""
    from reference_ops import max_pool2d_backward_ref, max_pool2d_ref

    r = np.maximum(x.astype(np.float64), 0)
    y, idx = max_pool2d_ref(r, **pool)
    return y, max_pool2d_backward_ref(gy.astype(np.float64), idx, x.shape) * (x > 0)


RELU_POOLS = [dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1),
              dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1), ceil_mode=True),
              dict(kernel_size=3, stride=2, ceil_mode=True)]


@pytest.mark.parametrize("pool", RELU_POOLS, ids=str)
@pytest.mark.parametrize("values", ["normal", "ties"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_then_relu_equals_relu_then_max_pool(pool, values, dtype):
    """LeNet5 runs max pooling before the ReLU: outputs and gradients equal the usual
    order and a float64 reference, including windows whose maximum is a tie, a zero
    or negative (integer inputs), and overlapping windows."""
    rng = np.random.default_rng(7)
    shape = (2, 3, 9, 8)
    if values == "normal":
        x = rng.standard_normal(shape).astype(dtype)
    else:  # ties, exact zeros of both signs, all-negative windows
        x = rng.choice(np.array([-2.0, -1.0, -0.0, 0.0, 1.0, 2.0]), shape).astype(dtype)
    net = nn.Sequential(nn.MaxPool2d(**pool), nn.ReLU())
    y = net(x)
    gy = rng.choice(np.array([-1.5, -1.0, 0.5, 1.0]), y.shape).astype(dtype)
    gx = net.backward(gy)
    usual = nn.Sequential(nn.ReLU(), nn.MaxPool2d(**pool))
    y_usual = usual(x)
    gx_usual = usual.backward(gy)
    assert y.dtype == gx.dtype == dtype
    np.testing.assert_array_equal(y, y_usual)  # == : a zero's sign may differ
    np.testing.assert_array_equal(gx, gx_usual)
    y_ref, gx_ref = _relu_pool_ref(x, gy, pool)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(gx, gx_ref)  # sums of at most a few exact values


def test_max_pool_relu_nan():
    """NaN passes both layers in either order; its gradient is zero (NaN > 0 is False)."""
    x = np.array([[[[np.nan, 1.0], [-1.0, 2.0]]]], np.float32)
    for net in (nn.Sequential(nn.ReLU(), nn.MaxPool2d(2)), nn.Sequential(nn.MaxPool2d(2), nn.ReLU())):
        y = net(x)
        assert np.isnan(y).all()
        np.testing.assert_array_equal(net.backward(np.ones_like(y)), np.zeros_like(x))


def test_sequential_runs_layers_in_the_order_given():
    """Sequential never reorders: forward in layer order, backward in reverse, whatever
    the layer types (a ReLU before a MaxPool2d stays there)."""
    relu, pool1, pool2 = nn.ReLU(), nn.MaxPool2d(2, stride=1), nn.MaxPool2d(2, stride=1)
    calls = []
    net = nn.Sequential(relu, pool1, pool2)
    for layer in net:
        forward, backward = layer.forward, layer.backward
        layer.forward = lambda v, f=forward, l=layer: calls.append(("f", l)) or f(v)
        layer.backward = lambda g, b=backward, l=layer: calls.append(("b", l)) or b(g)
    y = net(np.ones((1, 1, 4, 4)))
    net.backward(np.ones_like(y))
    assert calls == [("f", relu), ("f", pool1), ("f", pool2),
                     ("b", pool2), ("b", pool1), ("b", relu)]
    from fastconv.models import LeNet5
    types = [type(layer).__name__ for layer in LeNet5(rng=0)]
    assert types[:6] == ["Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU"]


def test_sequential_return_activations():
    """Every layer's output, in order, nested Sequentials under dotted names; the
    returned output is the normal forward's."""
    rng = np.random.default_rng(3)
    inner = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=rng), nn.ReLU())
    net = nn.Sequential(inner, nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 2, rng=rng))
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    y, acts = net(x, return_activations=True)
    np.testing.assert_array_equal(y, net(x))
    assert list(acts) == ["0.0", "0.1", "0", "1", "2", "3"]
    assert acts["0.0"].shape == (2, 3, 4, 4) and acts["1"].shape == (2, 3, 2, 2)
    np.testing.assert_array_equal(acts["0.1"], np.maximum(acts["0.0"], 0))
    np.testing.assert_array_equal(acts["0"], acts["0.1"])
    assert acts["3"] is y
    # backward after a forward that collected activations works as usual
    assert net.backward(np.ones_like(y)).shape == x.shape


def test_relu_max_pool_network_gradients_by_finite_differences():
    rng = np.random.default_rng(5)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 2, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(3, stride=1, padding=1),
        nn.Flatten(), nn.Linear(32, 4, rng=rng),
    ).to(np.float64)
    loss_fn = nn.CrossEntropyLoss()
    x = rng.standard_normal((2, 2, 8, 8))
    target = np.array([1, 3])
    loss, gx = loss_and_backward(net, loss_fn, x, target)

    def f():
        return loss_fn(net(x), target)

    arrays = [(name, p.data, p.grad.copy()) for name, p in net.named_parameters()]
    arrays.append(("input", x, gx.copy()))
    for name, array, analytic in arrays:
        numeric = np.array([central_difference(f, array, i, 1e-6)
                            for i in np.ndindex(array.shape)]).reshape(array.shape)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8, err_msg=name)


def test_flatten_and_lenet_take_an_empty_batch():
    from fastconv.models import LeNet5
    flat = nn.Flatten()
    assert flat(np.zeros((0, 2, 3, 4))).shape == (0, 24)
    assert flat.backward(np.zeros((0, 24))).shape == (0, 2, 3, 4)
    assert LeNet5(rng=0)(np.zeros((0, 1, 28, 28), np.float32)).shape == (0, 10)



def test_conv2d_layer_checks_again_whatever_changed_since_the_last_call(rng):
    """A Conv2d layer skips conv2d's checks for a call like the last one that passed
    them; any change of shape, dtype, layout or options runs them again, so results
    stay conv2d's and bad input still fails."""
    from fastconv.functional import conv2d

    layer = nn.Conv2d(3, 4, 3, rng=rng)
    w, b = layer.weight.data, layer.bias.data
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    for _ in range(2):  # the second call takes the remembered checks
        np.testing.assert_array_equal(layer(x), conv2d(x, w, b))
    x64 = x.astype(np.float64)  # another dtype: promoted as conv2d promotes
    np.testing.assert_array_equal(layer(x64), conv2d(x64, w, b))
    strided = np.asfortranarray(x)  # another layout
    np.testing.assert_array_equal(layer(strided), conv2d(strided, w, b))
    bigger = rng.standard_normal((1, 3, 11, 9)).astype(np.float32)
    assert layer(bigger).shape == (1, 4, 9, 7)
    layer.options["padding"] = 1  # options changed after a call
    assert layer(x).shape == (2, 4, 8, 8)
    np.testing.assert_array_equal(layer(x), conv2d(x, w, b, padding=1))
    with pytest.raises(ValueError, match="channels"):
        layer(rng.standard_normal((2, 5, 8, 8)).astype(np.float32))
    layer(x)
    with pytest.raises(ValueError, match="padding"):  # too small for the kernel and padding 0
        layer.options["padding"] = 0
        layer(rng.standard_normal((1, 3, 2, 2)).astype(np.float32))
