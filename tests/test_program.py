"""A Sequential's compiled eval-mode forward (fastconv.nn._program): the same bits as
its layers run one by one, and never stale, shared or cached past an edit."""

import copy
import pickle
import threading

import numpy as np
import pytest

import fastconv
from fastconv import nn
from fastconv.models import LeNet5
from fastconv.nn import _program
from reference import conv2d_ref


def program_of(net):
    """The program this thread's last call of ``net`` built, or None."""
    state = net.__dict__.get("_inference")
    return None if state is None else getattr(state.local, "program", None)


def layered(net, x):
    """``net``'s output with its layers run one by one (what the program must match)."""
    return net._forward_layers(x)


def networks(dtype):
    """Networks whose every layer has a step, with an input shape each."""
    rng = np.random.default_rng(3)
    yield "lenet5", LeNet5(dtype=dtype, rng=rng), (1, 28, 28)
    yield "strided-grouped-dilated", nn.Sequential(
        nn.Conv2d(4, 8, 3, stride=2, padding=1, dtype=dtype, rng=rng),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4, dtype=dtype, rng=rng),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.Conv2d(8, 16, 1, bias=False, dtype=dtype, rng=rng),
        nn.AvgPool2d(2, padding=1, count_include_pad=False),
        nn.Sequential(nn.Flatten(), nn.Dropout(0.3, rng=0)),  # nested, opened
        nn.Linear(16 * 3 * 3, 7, dtype=dtype, rng=rng),
    ), (4, 11, 13)
    yield "winograd-im2col-global-mean", nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, algorithm="winograd", dtype=dtype, rng=rng),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding="same", algorithm="im2col", dtype=dtype, rng=rng),
        nn.AvgPool2d(9),
        nn.Flatten(),
        nn.ReLU(),
        nn.Linear(32, 5, bias=False, dtype=dtype, rng=rng),
    ), (3, 9, 9)


@pytest.mark.parametrize("batch", [1, 3, 33])
def test_compiled_forward_is_the_layers_forward(dtype, batch, rng):
    for name, net, image in networks(dtype):
        net.eval()
        x = rng.standard_normal((batch, *image)).astype(dtype)
        y = net(x)
        assert program_of(net) is not None, name
        expected = layered(net, x)
        assert y.dtype == expected.dtype and y.shape == expected.shape, name
        np.testing.assert_array_equal(y, expected, err_msg=name)
        np.testing.assert_array_equal(net(x), expected, err_msg=name)  # the program again


def test_compiled_lenet_against_the_float64_reference(rng):
    net = LeNet5(rng=1).eval()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    h = x.astype(np.float64)
    for layer in net:  # the modern LeNet-5 as plain NumPy in float64
        p = {k: v.astype(np.float64) for k, v in layer.state_dict().items()}
        if isinstance(layer, nn.Conv2d):
            h = conv2d_ref(h, p["weight"], p["bias"], padding=layer.options["padding"])
        elif isinstance(layer, nn.MaxPool2d):
            n, c, hh, ww = h.shape
            h = h.reshape(n, c, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))
        elif isinstance(layer, nn.ReLU):
            h = np.maximum(h, 0)
        elif isinstance(layer, nn.Flatten):
            h = h.reshape(len(h), -1)
        else:
            h = h @ p["weight"].T + p["bias"]
    y = net(x)
    assert program_of(net) is not None
    np.testing.assert_allclose(y, h, rtol=1e-4, atol=1e-5)


def test_outputs_are_new_arrays_and_the_input_is_not_written(rng):
    net = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(12, 3, rng=0), nn.ReLU()).eval()
    x1 = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    x2 = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    before = x1.copy()
    y1 = net(x1)
    kept = y1.copy()
    y2 = net(x2)
    assert program_of(net) is not None
    np.testing.assert_array_equal(x1, before)  # the first ReLU did not run in place on x
    np.testing.assert_array_equal(y1, kept)  # the second call wrote a new array
    assert not np.shares_memory(y1, y2)
    np.testing.assert_array_equal(y2, layered(net, x2))


def test_large_intermediates_are_allocated_per_call(monkeypatch, rng):
    monkeypatch.setattr(_program, "KEPT_BYTES", 0)
    net = LeNet5(rng=0).eval()
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    program = _program.build(net, x.shape, x.dtype)
    assert all(mode != _program._INTO_BUFFER for _, mode, _ in program._ops)
    np.testing.assert_array_equal(program(x), layered(net, x))


def test_weights_changed_in_place_are_read(rng):
    net = LeNet5(rng=0).eval()
    x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    net(x)
    for layer in (net[0], net[3], net[7]):  # the direct, channel-vectorised and dense steps
        layer.weight.data *= -0.5
        layer.bias.data += 1
        y = net(x)
        np.testing.assert_array_equal(y, layered(net, x))


def test_edits_rebuild_the_program(rng, restore_threads):
    net = LeNet5(rng=0).eval()
    x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    net(x)
    first = program_of(net)
    net(x)
    assert program_of(net) is first  # nothing changed: the same program
    nn.Linear(3, 3, rng=0).weight.data = np.zeros((3, 3), np.float32)  # other models
    nn.CrossEntropyLoss()
    net(x)
    assert program_of(net) is first
    # a new weight array (load_state_dict writes in place; this replaces)
    net[3].weight.data = net[3].weight.data * 2
    np.testing.assert_array_equal(net(x), layered(net, x))
    assert program_of(net) is not first
    net(x)  # built again
    # options edited in place: the step notices on its call
    second = program_of(net)
    net[0].options["padding"] = 1
    with pytest.raises(ValueError):  # 26x26 maps no longer reach Linear's 400 inputs
        net(x)
    assert program_of(net) is not second
    net[0].options["padding"] = 2
    np.testing.assert_array_equal(net(x), layered(net, x))
    # a layer replaced (a new layer is in training mode: the layers run)
    setattr(net, "11", nn.Linear(84, 3, rng=5))
    assert net(x).shape == (1, 3) and program_of(net) is None
    net.eval()
    assert net(x).shape == (1, 3) and program_of(net) is not None
    np.testing.assert_array_equal(net(x), layered(net, x))
    # another thread count
    third = program_of(net)
    fastconv.set_num_threads(1)
    np.testing.assert_array_equal(net(x), layered(net, x))
    assert program_of(net) is not third


def test_training_mode_runs_the_layers(rng):
    net = nn.Sequential(nn.Linear(6, 6, rng=0), nn.Dropout(0.5, rng=0))
    x = rng.standard_normal((4, 6)).astype(np.float32)
    net.eval()
    np.testing.assert_array_equal(net(x), layered(net, x))
    net.train()
    y = net(x)
    assert (y == 0).any()  # dropout is active again
    net[1].eval()  # one layer back in eval mode: still no program for a training net
    net.eval()
    net[1].train()
    assert (net(x) == 0).any()


def test_backward_after_a_compiled_forward(dtype, rng):
    def gradients(net, x, gy):
        net.zero_grad()
        gx = net.backward(gy)
        return gx, [p.grad.copy() for p in net.parameters()]

    net = nn.Sequential(nn.Conv2d(2, 4, 3, rng=0, dtype=dtype), nn.MaxPool2d(2), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 3 * 3, 5, rng=1, dtype=dtype)).eval()
    x = rng.standard_normal((3, 2, 8, 8)).astype(dtype)
    gy = rng.standard_normal((3, 5)).astype(dtype)
    layered(net, x)
    gx_layers, grads_layers = gradients(net, x, gy)
    other = rng.standard_normal(x.shape).astype(dtype)
    net(other)  # layers run on another input: their state is not this one's
    y = net(x)  # compiled: the layers keep nothing
    assert program_of(net) is not None
    gx, grads = gradients(net, x, gy)
    np.testing.assert_array_equal(gx, gx_layers)
    for got, want in zip(grads, grads_layers):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(y, layered(net, x))


def test_layers_keep_no_stale_state_after_a_compiled_forward(rng):
    net = nn.Sequential(nn.Linear(3, 3, rng=0), nn.ReLU())
    x = rng.standard_normal((2, 3)).astype(np.float32)
    net(x)  # training mode: the layers keep x
    net.eval()
    net(x + 1)  # compiled
    with pytest.raises(RuntimeError, match="backward called before forward"):
        net[1].backward(np.ones((2, 3), np.float32))


def test_threads_have_their_own_programs(rng):
    net = LeNet5(rng=0).eval()
    inputs = [rng.standard_normal((b, 1, 28, 28)).astype(np.float32) for b in (1, 2, 1, 3)]
    expected = [layered(net, x) for x in inputs]
    results = {}

    def work(i):
        for _ in range(50):
            y = net(inputs[i])
            if not np.array_equal(y, expected[i]):
                results[i] = "differs"
                return
        results[i] = "same"

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: "same" for i in range(len(inputs))}


def test_copies_and_pickles_leave_programs_behind(rng):
    net = LeNet5(rng=0).eval()
    x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    y = net(x)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert "_inference" not in clone.__dict__
        assert all("_saved" not in layer.__dict__ for layer in clone)
        np.testing.assert_array_equal(clone(x), y)
        assert program_of(clone) is not None and program_of(clone) is not program_of(net)


@pytest.mark.parametrize("x", [
    np.zeros((1, 1, 28, 28), np.float16),  # converted by the layers
    np.zeros((1, 1, 28, 56), np.float32)[:, :, :, ::2],  # not contiguous
    np.zeros((1, 1, 28, 28), np.float32).tolist(),  # not an array
    np.zeros((0, 1, 28, 28), np.float32),  # empty batch
])
def test_inputs_without_a_program_run_the_layers(x):
    net = LeNet5(rng=0).eval()
    y = net(x)
    assert program_of(net) is None
    assert y.shape == (np.shape(x)[0], 10)


def test_layers_without_a_step_run_the_layers(rng):
    net = nn.Sequential(nn.Linear(4, 4, rng=0), nn.LeakyReLU(0.1)).eval()
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_array_equal(net(x), layered(net, x))
    assert program_of(net) is None


def test_bad_inputs_get_the_layers_errors():
    net = LeNet5(rng=0).eval()
    with pytest.raises(ValueError, match="channels"):
        net(np.zeros((1, 3, 28, 28), np.float32))
    with pytest.raises(ValueError):
        net(np.zeros((1, 1, 20, 20), np.float32))  # too small for Linear's 400 inputs
