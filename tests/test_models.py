"""Tests for fastconv.models.LeNet5: against torch, the C3 table, finite differences."""

import numpy as np
import pytest

from fastconv import nn, optim
from fastconv.models import C3_CONNECTIONS, LeNet5

from nn_helpers import (
    central_difference,
    copy_params_to_torch,
    directional_difference,
    loss_and_backward,
    torch_dtype,
    torch_layers,
)

# Table I of LeCun, Bottou, Bengio and Haffner (1998), "Gradient-based learning applied
# to document recognition": rows are the S2 feature maps 0-5, columns the C3 feature maps
# 0-15; an X marks a connection.
LECUN_TABLE_I = [
    #         1111111
    # 234567890123456   (column index 0..15)
    "X   XXX  XXXX XX",
    "XX   XXX  XXXX X",
    "XXX   XXX  X XXX",
    " XXX  XXXX  X XX",
    "  XXX  XXXX XX X",
    "   XXX  XXXX XXX",
]

C3_INDEX = 4  # position of C3 in LeNet5("classic")


def _table_mask():
    return np.array([[ch == "X" for ch in row] for row in LECUN_TABLE_I], dtype=bool).T


def test_c3_connection_table_is_lecun_table_i():
    table = _table_mask()  # (16 C3 maps, 6 S2 maps)
    assert table.shape == (16, 6)
    assert table.sum() == 60
    assert len(C3_CONNECTIONS) == 16
    ours = np.zeros((16, 6), dtype=bool)
    for k, inputs in enumerate(C3_CONNECTIONS):
        assert len(set(inputs)) == len(inputs), f"C3 map {k} lists an S2 map twice"
        ours[k, list(inputs)] = True
    np.testing.assert_array_equal(ours, table)
    assert sum(len(inputs) for inputs in C3_CONNECTIONS) == 60


def test_classic_c3_weights_follow_the_table():
    net = LeNet5("classic", rng=0)
    c3 = net[C3_INDEX]
    assert c3.weight.shape == (16, 6, 5, 5)
    connected = np.abs(c3.weight.data).sum(axis=(2, 3)) != 0
    np.testing.assert_array_equal(connected, _table_mask())


# --------------------------------------------------------------------------- #
# architecture and initialisation
# --------------------------------------------------------------------------- #


def _torch_modern(torch):
    t = torch.nn
    return t.Sequential(
        t.Conv2d(1, 6, 5, padding=2), t.ReLU(), t.MaxPool2d(2),
        t.Conv2d(6, 16, 5), t.ReLU(), t.MaxPool2d(2),
        t.Flatten(),
        t.Linear(400, 120), t.ReLU(),
        t.Linear(120, 84), t.ReLU(),
        t.Linear(84, 10),
    )


def _torch_classic(torch):
    """LeNet-5 as LeCun et al. describe it, written with torch.

    The 28x28 image padded by 2 (the paper's 32x32), C1 6@5x5, S2 = 2x2 average times a
    coefficient plus a bias, C3 16@5x5 with weight * (Table I mask), S4 like S2, C5
    120@5x5, F6 84, each of them followed by 1.7159 tanh(2x/3), and a linear output.
    """
    t = torch.nn
    layers = torch_layers(torch)
    mask = _table_mask().astype(np.float64)[:, :, None, None] * np.ones((1, 1, 5, 5))
    return t.Sequential(
        t.Conv2d(1, 6, 5, padding=2),
        layers.ScaledTanh(1.7159, 2 / 3),
        layers.Subsampling(6, 2),
        layers.ScaledTanh(1.7159, 2 / 3),
        layers.MaskedConv2d(6, 16, 5, mask),
        layers.ScaledTanh(1.7159, 2 / 3),
        layers.Subsampling(16, 2),
        layers.ScaledTanh(1.7159, 2 / 3),
        t.Conv2d(16, 120, 5),
        layers.ScaledTanh(1.7159, 2 / 3),
        t.Flatten(),
        t.Linear(120, 84),
        layers.ScaledTanh(1.7159, 2 / 3),
        t.Linear(84, 10),
    )


def test_modern_parameter_names_and_shapes():
    net = LeNet5("modern", rng=0)
    shapes = {name: p.shape for name, p in net.named_parameters()}
    assert shapes == {
        "0.weight": (6, 1, 5, 5), "0.bias": (6,),
        "3.weight": (16, 6, 5, 5), "3.bias": (16,),
        "7.weight": (120, 400), "7.bias": (120,),
        "9.weight": (84, 120), "9.bias": (84,),
        "11.weight": (10, 84), "11.bias": (10,),
    }
    assert sum(p.data.size for p in net.parameters()) == 61706


def test_classic_parameter_names_and_shapes():
    net = LeNet5("classic", rng=0)
    shapes = {name: p.shape for name, p in net.named_parameters()}
    assert shapes == {
        "0.weight": (6, 1, 5, 5), "0.bias": (6,),
        "2.weight": (6,), "2.bias": (6,),
        "4.weight": (16, 6, 5, 5), "4.bias": (16,),
        "6.weight": (16,), "6.bias": (16,),
        "8.weight": (120, 16, 5, 5), "8.bias": (120,),
        "11.weight": (84, 120), "11.bias": (84,),
        "13.weight": (10, 84), "13.bias": (10,),
    }


@pytest.mark.parametrize("variant", ["modern", "classic"])
def test_names_match_the_torch_network(variant, torch):
    net = LeNet5(variant, rng=0)
    tnet = _torch_modern(torch) if variant == "modern" else _torch_classic(torch)
    assert [n for n, _ in net.named_parameters()] == [n for n, _ in tnet.named_parameters()]


@pytest.mark.parametrize("variant", ["modern", "classic"])
def test_initialisation_bounds_and_seed(variant):
    net = LeNet5(variant, rng=0)
    for name, p in net.named_parameters():
        assert p.data.dtype == np.float32, name
        layer = net[int(name.split(".")[0])]
        if isinstance(layer, nn.Subsampling):
            fan_in = np.full(p.shape, 4)  # four inputs summed per unit
        elif variant == "classic" and layer is net[C3_INDEX]:
            per_map = np.array([len(c) * 25 for c in C3_CONNECTIONS])  # the real fan-in
            fan_in = per_map.reshape((16,) + (1,) * (p.data.ndim - 1)) * np.ones(p.shape)
        else:
            fan_in = np.full(p.shape, np.prod(layer.weight.shape[1:]))
        assert np.all(np.abs(p.data) <= 1 / np.sqrt(fan_in) * (1 + 1e-6)), name
        assert np.abs(p.data).max() > 0.5 / np.sqrt(fan_in).max(), name
    same = LeNet5(variant, rng=0)
    for (name, p), (_, q) in zip(net.named_parameters(), same.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    other = LeNet5(variant, rng=1)
    assert not np.array_equal(net[0].weight.data, other[0].weight.data)


def test_dtype_argument_and_to():
    net = LeNet5("classic", dtype=np.float64, rng=0)
    assert all(p.data.dtype == np.float64 and p.grad.dtype == np.float64
               for p in net.parameters())
    x = np.zeros((2, 1, 28, 28))
    assert net(x).dtype == np.float64
    net32 = LeNet5("classic", rng=0)
    assert net32(x.astype(np.float32)).dtype == np.float32
    net32.to(np.float64)
    np.testing.assert_array_equal(net32[0].weight.data, net[0].weight.data.astype(np.float32))


def test_bad_variant():
    with pytest.raises(ValueError):
        LeNet5("lenet1")


def test_first_layer_returns_no_input_gradient(rng):
    for variant in ("modern", "classic"):
        net = LeNet5(variant, dtype=np.float64, rng=0)
        net(rng.standard_normal((2, 1, 28, 28)))
        assert net.backward(rng.standard_normal((2, 10))) is None


# --------------------------------------------------------------------------- #
# forward and backward against torch
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("variant", ["modern", "classic"])
def test_lenet5_matches_torch(variant, dtype, rng, torch, assert_close):
    net = LeNet5(variant, dtype=dtype, rng=rng)
    net[0].needs_input_grad = True  # compare the input gradient too
    tnet = _torch_modern(torch) if variant == "modern" else _torch_classic(torch)
    tnet.to(torch_dtype(torch, dtype))
    copy_params_to_torch(torch, net, tnet)

    x = rng.standard_normal((3, 1, 28, 28)).astype(dtype)
    target = np.array([3, 0, 9])
    loss_fn = nn.CrossEntropyLoss()
    net.zero_grad()
    logits = net(x)
    loss = loss_fn(logits, target)
    gx = net.backward(loss_fn.backward())

    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    logits_t = tnet(xt)
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(target))
    loss_t.backward()

    assert logits.dtype == dtype and gx.dtype == dtype
    assert_close(logits, logits_t.detach().numpy(), dtype=dtype, err_msg="logits:")
    assert_close(np.array(loss), loss_t.item(), dtype=dtype, err_msg="loss:")
    assert_close(gx, xt.grad.numpy(), dtype=dtype, err_msg="input gradient:")
    grads_t = dict(tnet.named_parameters())
    for name, p in net.named_parameters():
        assert p.grad.dtype == dtype, name
        assert_close(p.grad, grads_t[name].grad.numpy(), dtype=dtype, err_msg=f"{name}.grad:")


def test_training_steps_match_torch(rng, torch, assert_close):
    """Three canonical steps with SGD + momentum give torch's weights (float64)."""
    net = LeNet5("classic", dtype=np.float64, rng=rng)
    tnet = _torch_classic(torch).double()
    copy_params_to_torch(torch, net, tnet)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    topt = torch.optim.SGD(tnet.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    for _ in range(3):
        x = rng.standard_normal((4, 1, 28, 28))
        target = rng.integers(0, 10, 4)
        loss = loss_fn(net(x), target)
        opt.zero_grad()
        net.backward(loss_fn.backward())
        opt.step()
        loss_t = torch.nn.functional.cross_entropy(tnet(torch.from_numpy(x)),
                                                   torch.from_numpy(target))
        topt.zero_grad()
        loss_t.backward()
        topt.step()
        assert loss == pytest.approx(loss_t.item(), rel=1e-10)
    theirs = dict(tnet.named_parameters())
    for name, p in net.named_parameters():
        assert_close(p.data, theirs[name].detach().numpy(), err_msg=name)
    # the masked C3 weights are still exactly zero after the updates
    assert not np.any(net[C3_INDEX].weight.data[~_table_mask()])


# --------------------------------------------------------------------------- #
# finite differences of LeNet5("classic")
# --------------------------------------------------------------------------- #


def test_classic_gradients_by_finite_differences():
    rng = np.random.default_rng(11)
    net = LeNet5("classic", dtype=np.float64, rng=rng)
    loss_fn = nn.CrossEntropyLoss()
    x = rng.standard_normal((2, 1, 28, 28))
    target = np.array([7, 2])
    loss_and_backward(net, loss_fn, x, target)
    table = _table_mask()

    def f():
        return loss_fn(net(x), target)

    c3 = net[C3_INDEX].weight
    # masked weights are zero and get exactly zero gradient
    assert not np.any(c3.data[~table])
    assert not np.any(c3.grad[~table])
    assert np.all(np.any(c3.grad[table] != 0, axis=-1))

    eps = 1e-5
    for name, p in net.named_parameters():
        analytic = p.grad.copy()
        allowed = np.ones(p.shape, dtype=bool)
        if p is c3:
            allowed = np.broadcast_to(table[:, :, None, None], p.shape)
        # along a random direction inside the allowed entries
        direction = rng.standard_normal(p.shape) * allowed
        numeric = directional_difference(f, p.data, direction, eps)
        expected = float(np.sum(analytic * direction))
        assert numeric == pytest.approx(expected, rel=1e-6, abs=1e-9), name
        # and a few single entries
        candidates = np.argwhere(allowed)
        for row in rng.choice(len(candidates), size=min(3, len(candidates)), replace=False):
            index = tuple(candidates[row])
            numeric = central_difference(f, p.data, index, eps)
            assert numeric == pytest.approx(analytic[index], rel=1e-5, abs=1e-9), (name, index)
    assert not np.any(c3.data[~table])  # perturbations restored


def test_classic_masked_weights_stay_zero_under_training(rng):
    net = LeNet5("classic", rng=rng)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-2)
    table = _table_mask()
    for _ in range(3):
        x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
        loss_fn(net(x), rng.integers(0, 10, 4))
        opt.zero_grad()
        net.backward(loss_fn.backward())
        assert not np.any(net[C3_INDEX].weight.grad[~table])
        opt.step()
    assert not np.any(net[C3_INDEX].weight.data[~table])
    assert np.all(net[C3_INDEX].weight.data[table] != 0)


@pytest.mark.parametrize("variant", ["modern", "classic"])
def test_state_dict_round_trip(variant, rng):
    net, other = LeNet5(variant, rng=1), LeNet5(variant, rng=2)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    other.load_state_dict(net.state_dict())
    np.testing.assert_array_equal(other(x), net(x))


@pytest.mark.parametrize("variant", ["modern", "classic"])
def test_pickle_round_trip(variant, rng):
    # Dask ships models to worker processes by pickling them.
    import pickle

    net = LeNet5(variant, rng=1).eval()
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    y = net(x)  # a forward first: the layers then hold what backward needs
    copy = pickle.loads(pickle.dumps(net))
    assert type(copy) is LeNet5 and copy.variant == variant and not copy.training
    assert list(copy.state_dict()) == list(net.state_dict())
    for (name, p), (_, q) in zip(net.named_parameters(), copy.named_parameters()):
        assert q.data is not p.data, name
        np.testing.assert_array_equal(q.data, p.data, err_msg=name)
        assert q.data.dtype == p.data.dtype and q.grad.shape == p.grad.shape, name
    np.testing.assert_array_equal(copy(x), y)
    # The copy trains on its own: a step changes it and leaves the original alone.
    before = net.state_dict()
    loss_fn = nn.CrossEntropyLoss()
    copy.train()
    loss_fn(copy(x), np.array([0, 1, 2]))
    copy.backward(loss_fn.backward())
    optim.SGD(copy.parameters(), lr=0.1).step()
    assert any(not np.array_equal(copy.state_dict()[k], before[k]) for k in before)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
