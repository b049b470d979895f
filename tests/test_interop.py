"""fastconv with PyTorch: tensors taken through DLPack without a copy, and the
torch.nn layers of fastconv.torch against torch's own (forward, backward,
gradcheck, a few training steps). Skipped where torch is not installed."""

import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastconv  # noqa: E402
import fastconv.torch as fct  # noqa: E402
from fastconv import _validation, functional  # noqa: E402

TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def _tensor(rng, shape, dtype, requires_grad=False):
    array = rng.standard_normal(shape).astype(dtype)
    return torch.from_numpy(array).requires_grad_(requires_grad)


# --------------------------------------------------------------------------- #
# tensors as inputs of fastconv's NumPy operations (DLPack, no copy)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("requires_grad", [False, True], ids=["plain", "requires_grad"])
def test_as_array_shares_tensor_memory(dtype, requires_grad, rng):
    t = _tensor(rng, (2, 3, 5, 4), dtype, requires_grad)
    array = _validation.as_array(t, "x")
    assert isinstance(array, np.ndarray)
    assert array.dtype == dtype
    assert np.shares_memory(array, t.detach().numpy())
    np.testing.assert_array_equal(array, t.detach().numpy())


def test_as_array_non_contiguous_tensor_is_a_view(rng):
    base = _tensor(rng, (2, 3, 10, 12), np.float32)
    t = base.transpose(2, 3)[:, 1:, ::2, 1::3]
    assert not t.is_contiguous()
    array = _validation.as_array(t, "x")
    assert np.shares_memory(array, base.numpy())
    assert array.shape == tuple(t.shape)
    assert array.strides == tuple(s * t.element_size() for s in t.stride())
    np.testing.assert_array_equal(array, t.numpy())


def test_as_array_stride_zero_and_empty_tensors(rng):
    t = _tensor(rng, (1, 2, 3, 1), np.float64).expand(4, 2, 3, 5)
    array = _validation.as_array(t, "x")
    assert array.strides[0] == 0 and array.strides[3] == 0
    np.testing.assert_array_equal(array, t.numpy())
    assert _validation.as_array(torch.zeros(0, 3, 4, 4), "x").shape == (0, 3, 4, 4)


class _DLPackOnly:
    """An exporter that offers DLPack and nothing else NumPy knows (no __array__)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_as_array_takes_any_dlpack_exporter(rng):
    data = rng.standard_normal((1, 2, 6, 6))
    array = _validation.as_array(_DLPackOnly(data), "x")
    assert np.shares_memory(array, data)
    w = rng.standard_normal((3, 2, 3, 3))
    np.testing.assert_array_equal(fastconv.conv2d(_DLPackOnly(data), _DLPackOnly(w)),
                                  fastconv.conv2d(data, w))


def _spy_as_array(monkeypatch):
    """Record every array conv2d converts its arguments to."""
    from fastconv import _conv_ops

    seen = []
    original = _conv_ops.as_array

    def spy(value, name):
        array = original(value, name)
        seen.append((name, value, array))
        return array

    monkeypatch.setattr(_conv_ops, "as_array", spy)
    return seen


def test_conv2d_reads_tensors_in_place(monkeypatch, dtype, rng):
    x = _tensor(rng, (2, 3, 7, 6), dtype, requires_grad=True)
    w = _tensor(rng, (6, 3, 3, 4), dtype).permute(3, 0, 1, 2)[:, ::2]  # not contiguous
    seen = _spy_as_array(monkeypatch)
    fastconv.conv2d(x, w, padding=1)
    converted = {name: (value, array) for name, value, array in seen}
    assert set(converted) == {"x", "w"}
    for value, array in converted.values():
        assert np.shares_memory(array, value.detach().numpy())


def _np_copy(value):
    return value.detach().numpy().copy() if isinstance(value, torch.Tensor) else value


# Each case: a fastconv operation and a builder of its arguments (tensors, some
# non-contiguous or requiring grad); the same call on NumPy copies must agree exactly.
def _op_cases():
    def conv_args(rng, dtype):
        x = _tensor(rng, (2, 4, 9, 8), dtype, True)
        w = _tensor(rng, (6, 2, 3, 3), dtype)
        b = _tensor(rng, (6,), dtype)
        return [x, w, b, 2, 1, 1, 2], {}

    def conv_backward_args(rng, dtype):
        x = _tensor(rng, (2, 4, 9, 8), dtype).transpose(2, 3)
        w = _tensor(rng, (6, 2, 3, 3), dtype, True)
        gy = _tensor(rng, (2, 6, 4, 5), dtype)
        return [gy, x, w, 2, 1, 1, 2], {}

    def convt_args(rng, dtype):
        x = _tensor(rng, (2, 4, 5, 6), dtype)[:, :, :, ::2]
        w = _tensor(rng, (4, 3, 3, 3), dtype)
        return [x, w, _tensor(rng, (6,), dtype), 2, 1, 1, 1, 2], {}

    def convt_backward_args(rng, dtype):
        x = _tensor(rng, (2, 4, 5, 3), dtype)
        w = _tensor(rng, (4, 3, 3, 3), dtype)
        gy = _tensor(rng, (2, 6, 10, 6), dtype)
        return [gy, x, w, 2, 1, 1, 1, 2], {}

    def pool_args(rng, dtype):
        return [_tensor(rng, (2, 3, 9, 11), dtype, True).transpose(2, 3), 3, 2, 1], {}

    def max_backward_args(rng, dtype):
        x = _tensor(rng, (2, 3, 8, 8), dtype)
        _, idx = fastconv.max_pool2d(x, 2, return_indices=True)
        return [_tensor(rng, (2, 3, 4, 4), dtype), torch.from_numpy(idx), (2, 3, 8, 8)], {}

    def avg_backward_args(rng, dtype):
        return [_tensor(rng, (2, 3, 4, 4), dtype), (2, 3, 8, 8), 3, 2, 1], {
            "count_include_pad": False}

    return [
        ("conv2d", fastconv.conv2d, conv_args),
        ("conv2d_backward", fastconv.conv2d_backward, conv_backward_args),
        ("conv_transpose2d", fastconv.conv_transpose2d, convt_args),
        ("conv_transpose2d_backward", fastconv.conv_transpose2d_backward, convt_backward_args),
        ("max_pool2d", lambda *a: fastconv.max_pool2d(*a, return_indices=True), pool_args),
        ("max_pool2d_backward", fastconv.max_pool2d_backward, max_backward_args),
        ("avg_pool2d", fastconv.avg_pool2d, pool_args),
        ("avg_pool2d_backward", fastconv.avg_pool2d_backward, avg_backward_args),
    ]


@pytest.mark.parametrize("op, make_args", [case[1:] for case in _op_cases()],
                         ids=[case[0] for case in _op_cases()])
def test_tensor_inputs_match_numpy_inputs(op, make_args, dtype, rng):
    args, kwargs = make_args(rng, dtype)
    from_tensors = op(*args, **kwargs)
    from_arrays = op(*[_np_copy(a) for a in args], **kwargs)
    if not isinstance(from_tensors, tuple):
        from_tensors, from_arrays = (from_tensors,), (from_arrays,)
    for ours, expected in zip(from_tensors, from_arrays):
        assert isinstance(ours, np.ndarray)
        assert ours.dtype == expected.dtype
        np.testing.assert_array_equal(ours, expected)


def test_tensor_dtypes_follow_numpy_rules(rng):
    w = np.ones((1, 1, 2, 2), dtype=np.float32)
    x = torch.arange(16).reshape(1, 1, 4, 4)
    assert fastconv.conv2d(x, w).dtype == np.float64  # integers compute in float64
    y16 = fastconv.avg_pool2d(x.to(torch.float16), 2)
    assert y16.dtype == np.float32
    # torch's lazily negated views hold their values only once resolved
    neg = torch.tensor([[1 + 2j, 3 + 4j]]).conj().imag
    assert neg.is_neg()
    np.testing.assert_array_equal(_validation.as_array(neg, "x"), [[-2.0, -4.0]])


class _DeviceTensor:
    """An exporter whose memory lives on a GPU (DLPack device type 2, kDLCUDA)."""

    device = "cuda:0"

    def __dlpack__(self, **kwargs):
        raise AssertionError("must not be exported")

    def __dlpack_device__(self):
        return (2, 0)


@pytest.mark.parametrize("value", [_DeviceTensor(), torch.zeros(1, 1, 4, 4, device="meta")],
                         ids=["cuda", "meta"])
def test_tensor_on_another_device_is_refused(value):
    with pytest.raises(TypeError, match=r"^x is on device .*(cuda:0|meta).*CPU"):
        fastconv.conv2d(value, np.ones((1, 1, 2, 2)))
    with pytest.raises(TypeError, match=r"^gy is on device"):
        fastconv.max_pool2d_backward(value, np.zeros((1, 1, 4, 4), dtype=np.int64), (1, 1, 4, 4))


def test_as_array_errors_are_kept():
    with pytest.raises(TypeError, match="^x must be an array, got None"):
        _validation.as_array(None, "x")
    with pytest.raises(ValueError, match="^w could not be turned into a numeric array"):
        _validation.as_array([[1.0, 2.0], [3.0]], "w")
    with pytest.raises(TypeError, match="^x has dtype complex64"):
        _validation.as_array(torch.zeros(2, dtype=torch.complex64), "x")
    with pytest.raises(TypeError, match="^x has dtype object"):
        _validation.as_array(np.array([None, 1.0]), "x")
    with pytest.raises(TypeError, match=r"^b \(Tensor of dtype torch.bfloat16\)"):
        fastconv.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)),
                        torch.zeros(1, dtype=torch.bfloat16))


# --------------------------------------------------------------------------- #
# fastconv.torch layers against torch.nn
# --------------------------------------------------------------------------- #


# (id, class name in both fastconv.torch and torch.nn, constructor args and kwargs,
#  input shape, forward kwargs)
LAYER_CASES = [
    ("conv", "Conv2d", (3, 4, 3), {}, (2, 3, 9, 8), {}),
    ("conv-strided-grouped", "Conv2d", (4, 6, (3, 2)),
     dict(stride=2, padding=(1, 2), dilation=(2, 1), groups=2), (2, 4, 11, 9), {}),
    ("conv-gemm", "Conv2d", (8, 8, 3), dict(padding=1), (2, 8, 7, 7), {}),
    ("conv-same-nobias", "Conv2d", (3, 4, (2, 3)), dict(padding="same", dilation=2, bias=False),
     (2, 3, 8, 9), {}),
    ("conv-valid", "Conv2d", (3, 2, 3), dict(padding="valid"), (1, 3, 6, 6), {}),
    ("conv-reflect", "Conv2d", (3, 4, 3), dict(padding=1, padding_mode="reflect"),
     (2, 3, 7, 6), {}),
    ("conv-circular", "Conv2d", (2, 4, 3), dict(padding=(1, 2), padding_mode="circular",
                                                 stride=2), (2, 2, 7, 6), {}),
    ("convt", "ConvTranspose2d", (3, 4, 3), {}, (2, 3, 5, 4), {}),
    ("convt-strided-grouped", "ConvTranspose2d", (4, 6, 3),
     dict(stride=2, padding=1, output_padding=1, groups=2), (2, 4, 5, 4), {}),
    ("convt-dilated-nobias", "ConvTranspose2d", (4, 2, (2, 3)),
     dict(stride=(2, 1), padding=(0, 1), dilation=(1, 2), bias=False), (2, 4, 4, 5), {}),
    ("convt-output-size", "ConvTranspose2d", (3, 2, 4), dict(stride=3, padding=1),
     (2, 3, 4, 4), {"output_size": (12, 13)}),
    ("maxpool", "MaxPool2d", (2,), {}, (2, 3, 8, 9), {}),
    ("maxpool-ceil", "MaxPool2d", (3,), dict(stride=2, padding=1, ceil_mode=True),
     (2, 3, 8, 9), {}),
    ("maxpool-dilated", "MaxPool2d", ((3, 2),), dict(stride=(1, 2), padding=(1, 0), dilation=2),
     (2, 3, 9, 8), {}),
    ("avgpool", "AvgPool2d", (2,), {}, (2, 3, 8, 9), {}),
    ("avgpool-ceil-nopad", "AvgPool2d", (3, 2, 1), dict(ceil_mode=True, count_include_pad=False),
     (2, 3, 8, 9), {}),
    ("avgpool-divisor", "AvgPool2d", ((3, 2), (2, 1), (1, 1)), dict(divisor_override=5),
     (2, 3, 7, 6), {}),
]


def _layer_pair(cls_name, args, kwargs, dtype):
    ours = getattr(fct, cls_name)(*args, **kwargs)
    theirs = getattr(torch.nn, cls_name)(*args, **kwargs)
    ours.to(TORCH_DTYPE[dtype])
    theirs.to(TORCH_DTYPE[dtype])
    theirs.load_state_dict(ours.state_dict())  # same parameter names and shapes
    return ours, theirs


def _forward_backward(layer, x, gy_rng, forward_kwargs):
    """(y, gx, {name: grad}) of layer at x, with a random output gradient."""
    x = x.clone().requires_grad_(True)
    y = layer(x, **forward_kwargs)
    gy = torch.from_numpy(gy_rng.standard_normal(tuple(y.shape))).to(y.dtype)
    y.backward(gy)
    grads = {name: p.grad for name, p in layer.named_parameters()}
    return y.detach(), x.grad, grads


@pytest.mark.parametrize("cls_name, args, kwargs, shape, forward_kwargs",
                         [case[1:] for case in LAYER_CASES], ids=[case[0] for case in LAYER_CASES])
def test_layer_matches_torch(cls_name, args, kwargs, shape, forward_kwargs, dtype, rng,
                             assert_close):
    ours, theirs = _layer_pair(cls_name, args, kwargs, dtype)
    x = _tensor(rng, shape, dtype)
    y, gx, grads = _forward_backward(ours, x, np.random.default_rng(1), forward_kwargs)
    y_t, gx_t, grads_t = _forward_backward(theirs, x, np.random.default_rng(1), forward_kwargs)
    assert y.dtype == y_t.dtype and gx.dtype == gx_t.dtype
    assert_close(y.numpy(), y_t.double().numpy(), err_msg="forward")
    assert_close(gx.numpy(), gx_t.double().numpy(), err_msg="input gradient")
    assert list(grads) == list(grads_t)
    for name in grads:
        assert grads[name].dtype == grads_t[name].dtype
        assert_close(grads[name].numpy(), grads_t[name].double().numpy(), err_msg=name)


@pytest.mark.parametrize("cls_name, args, kwargs, shape, forward_kwargs",
                         [case[1:] for case in LAYER_CASES], ids=[case[0] for case in LAYER_CASES])
def test_layer_outside_autograd_matches_its_graph_forward(cls_name, args, kwargs, shape,
                                                          forward_kwargs, rng):
    """Under no_grad, and with nothing requiring a gradient, a layer runs its forward
    without autograd's bookkeeping: the same values, no graph."""
    ours, _ = _layer_pair(cls_name, args, kwargs, np.dtype(np.float32))
    x = _tensor(rng, shape, np.float32)
    with_graph = ours(x.clone().requires_grad_(True), **forward_kwargs)
    assert with_graph.grad_fn is not None
    with torch.no_grad():
        y = ours(x, **forward_kwargs)
    assert y.grad_fn is None and not y.requires_grad
    np.testing.assert_array_equal(y.numpy(), with_graph.detach().numpy())
    for p in ours.parameters():
        p.requires_grad_(False)
    frozen = ours(x, **forward_kwargs)  # grad mode on, nothing to differentiate
    assert frozen.grad_fn is None
    np.testing.assert_array_equal(frozen.numpy(), y.numpy())
    with torch.inference_mode():
        np.testing.assert_array_equal(ours(x, **forward_kwargs).numpy(), y.numpy())


def _torch_conv(layer, x):
    return torch.nn.functional.conv2d(x, layer.weight, layer.bias, layer.stride,
                                      layer.padding, layer.dilation, layer.groups)


def test_conv2d_outside_autograd_checks_once_per_shape_and_options(rng, assert_close):
    """A Conv2d called outside autograd runs conv2d's checks on the first call of each
    input shape, dtype and set of options and skips them on the next: every call still
    agrees with torch's convolution and reads the weights as they are now (changed in
    place or replaced)."""
    layer = fct.Conv2d(8, 16, 3, padding=1)
    x = _tensor(rng, (1, 8, 12, 12), np.float32)
    with torch.no_grad():
        assert layer._checked is None
        for _ in range(2):
            assert_close(layer(x).numpy(), _torch_conv(layer, x).numpy())
        checked = layer._checked
        assert checked is not None and checked[1].x_shape == (1, 8, 12, 12)
        layer.weight.mul_(-2)  # in place: a new version
        assert_close(layer(x).numpy(), _torch_conv(layer, x).numpy())
        layer.weight = torch.nn.Parameter(layer.weight * 3)  # replaced
        assert_close(layer(x).numpy(), _torch_conv(layer, x).numpy())
        assert layer._checked is checked  # nothing changed what the checks decided
        x2 = _tensor(rng, (3, 8, 9, 10), np.float32)  # another shape: checked again
        assert_close(layer(x2).numpy(), _torch_conv(layer, x2).numpy())
        assert layer._checked[1].x_shape == (3, 8, 9, 10)
        layer.stride = (2, 2)  # another option: checked again, the new output size
        assert layer(x2).shape == _torch_conv(layer, x2).shape == (3, 16, 5, 5)
        layer.padding = (0, 0)
        assert_close(layer(x2).numpy(), _torch_conv(layer, x2).numpy())
        stride = [1, 1]
        layer.stride = stride  # a list could change in place: never taken as checked
        assert_close(layer(x2).numpy(), _torch_conv(layer, x2).numpy())
        stride[0] = 2
        assert_close(layer(x2).numpy(), _torch_conv(layer, x2).numpy())
        layer.stride = (1, 1)
        double = layer.double()  # another dtype
        x64 = x.double()
        assert_close(double(x64).numpy(), _torch_conv(double, x64).numpy())
        for other in (x.to(memory_format=torch.channels_last),  # not C-contiguous
                      torch._neg_view(-x)):                    # a negative bit
            assert_close(double(other.double()).numpy(), _torch_conv(double, x64).numpy())


def test_conv2d_checked_winograd_layer_sees_weights_changed_in_place(rng, assert_close):
    """A checked call of a layer whose forward runs Winograd finds its transformed weights
    by the parameter's identity and version: changed in place, they are transformed
    again."""
    layer = fct.Conv2d(64, 64, 3, padding=1)
    x = _tensor(rng, (2, 64, 28, 28), np.float32)
    assert fastconv.explain(x, layer.weight.detach(), padding=1)["forward"].kernel == "winograd"
    with torch.no_grad():
        for scale in (1.0, -0.5, 3.0):
            layer.weight.mul_(scale)
            want = torch.nn.functional.conv2d(x.double(), layer.weight.double(),
                                              layer.bias.double(), padding=1).numpy()
            assert_close(layer(x).numpy(), want)
            assert_close(layer(x).numpy(), want)


def test_conv2d_checked_then_refuses_a_bad_input(rng):
    """A call that differs from the checked one in anything takes the full checks."""
    layer = fct.Conv2d(2, 4, 3)
    with torch.no_grad():
        layer(torch.zeros(1, 2, 5, 5))
        with pytest.raises(ValueError, match="channels"):
            layer(torch.zeros(1, 3, 5, 5))
        with pytest.raises(TypeError, match=r"^w has dtype torch.float32 but x has"):
            layer(torch.zeros(1, 2, 5, 5, dtype=torch.float64))
        with pytest.raises(TypeError, match=r"^x is on device meta"):
            layer(torch.zeros(1, 2, 5, 5, device="meta"))


def test_max_pool_indices_match_torch(rng):
    x = _tensor(rng, (2, 3, 9, 8), np.float64)
    y, idx = fct.MaxPool2d(3, 2, 1, return_indices=True, ceil_mode=True)(x)
    y_t, idx_t = torch.nn.MaxPool2d(3, 2, 1, return_indices=True, ceil_mode=True)(x)
    assert idx.dtype == torch.int64
    assert torch.equal(idx, idx_t) and torch.equal(y, y_t)
    assert not idx.requires_grad


@pytest.mark.parametrize("cls_name, args", [("Conv2d", (3, 4, 3)), ("MaxPool2d", (2,)),
                                            ("ConvTranspose2d", (3, 2, 3)), ("AvgPool2d", (2,))])
def test_unbatched_input(cls_name, args, rng):
    ours, theirs = _layer_pair(cls_name, args, {}, np.dtype(np.float64))
    x = _tensor(rng, (3, 6, 7), np.float64)
    y, y_t = ours(x), theirs(x)
    assert y.shape == y_t.shape
    torch.testing.assert_close(y, y_t, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls_name, args, kwargs", [
    ("Conv2d", (4, 6, 3), dict(groups=2)),
    ("Conv2d", (3, 5, (2, 3)), dict(bias=False)),
    ("ConvTranspose2d", (4, 6, 3), dict(groups=2, stride=2)),
])
def test_parameters_initialised_as_torch(cls_name, args, kwargs):
    torch.manual_seed(7)
    ours = getattr(fct, cls_name)(*args, **kwargs)
    torch.manual_seed(7)
    theirs = getattr(torch.nn, cls_name)(*args, **kwargs)
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    for name in ours_state:
        assert isinstance(getattr(ours, name), torch.nn.Parameter)
        assert torch.equal(ours_state[name], theirs_state[name]), name
    assert fct.Conv2d(2, 2, 3, dtype=torch.float64).weight.dtype == torch.float64
    assert repr(ours).startswith(cls_name + "(")


# --------------------------------------------------------------------------- #
# gradcheck (float64, small shapes)
# --------------------------------------------------------------------------- #


def _gradcheck(fn, inputs):
    # Hundreds of tiny calls: one thread keeps them quick on a busy machine (results
    # do not depend on the thread count, which tests/test_conv2d.py checks).
    with fastconv.threads(1):
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def _params(rng, *shapes):
    return [_tensor(rng, shape, np.float64, True) for shape in shapes]


@pytest.mark.parametrize("layer, x_shape", [
    (lambda: fct.Conv2d(4, 2, 3, stride=2, padding=1, groups=2), (2, 4, 5, 6)),
    (lambda: fct.Conv2d(2, 3, (2, 3), padding="same", dilation=(2, 1)), (1, 2, 5, 4)),
    (lambda: fct.Conv2d(2, 2, 3, padding=1, padding_mode="replicate"), (1, 2, 4, 4)),
    (lambda: fct.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2),
     (2, 2, 3, 4)),
    (lambda: fct.ConvTranspose2d(2, 3, (3, 2), stride=(1, 2), dilation=(2, 1), padding=(1, 0)),
     (1, 2, 4, 3)),
], ids=["conv", "conv-same", "conv-replicate", "convt", "convt-dilated"])
def test_conv_layer_gradcheck(layer, x_shape, rng):
    layer = layer().double()
    x = _tensor(rng, x_shape, np.float64, True)

    def run(x, weight, bias):
        return torch.func.functional_call(layer, {"weight": weight, "bias": bias}, (x,))

    _gradcheck(run, (x, *_params(rng, layer.weight.shape, layer.bias.shape)))


@pytest.mark.parametrize("layer", [
    fct.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    fct.MaxPool2d((2, 3), stride=1, dilation=(2, 1)),
    fct.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    fct.AvgPool2d((2, 3), stride=(1, 2), padding=(1, 0), divisor_override=4),
], ids=["max", "max-dilated", "avg", "avg-divisor"])
def test_pool_layer_gradcheck(layer, rng):
    _gradcheck(layer, (_tensor(rng, (2, 2, 6, 7), np.float64, True),))


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (True, False, True),
                                   (False, False, True)], ids=["x", "w", "x-b", "b"])
@pytest.mark.parametrize("transposed", [False, True], ids=["conv2d", "conv_transpose2d"])
def test_functional_gradcheck_with_some_inputs_frozen(needs, transposed, rng):
    if transposed:
        x, w, b = _params(rng, (2, 4, 3, 4), (4, 1, 3, 2), (2,))

        def fn(x, w, b):
            # width: stride 1, dilation 2, output_padding 1 (a column only it reaches)
            return fct.conv_transpose2d(x, w, b, (2, 1), 1, 1, 2, (1, 2))
    else:
        x, w, b = _params(rng, (2, 4, 6, 5), (2, 2, 3, 2), (2,))

        def fn(x, w, b):
            return fct.conv2d(x, w, b, 2, "same", (1, 2), 2)

    for tensor, need in zip((x, w, b), needs):
        tensor.requires_grad_(need)
    _gradcheck(fn, (x, w, b))


# --------------------------------------------------------------------------- #
# backward skips the gradients nobody asked for
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("transposed", [False, True], ids=["conv2d", "conv_transpose2d"])
def test_backward_skips_unneeded_gradients(transposed, monkeypatch, rng):
    name = "conv_transpose2d_backward" if transposed else "conv2d_backward"
    calls = []
    original = getattr(functional, name)

    def spy(*args, **kwargs):
        calls.append(kwargs["needs_input_grad"])
        return original(*args, **kwargs)

    monkeypatch.setattr(functional, name, spy)
    ours_cls = fct.ConvTranspose2d if transposed else fct.Conv2d
    theirs_cls = torch.nn.ConvTranspose2d if transposed else torch.nn.Conv2d
    ours = ours_cls(4, 6, 3, stride=2, padding=1, groups=2).double()
    theirs = theirs_cls(4, 6, 3, stride=2, padding=1, groups=2).double()
    theirs.load_state_dict(ours.state_dict())
    x = _tensor(rng, (2, 4, 7, 6), np.float64)

    # a first layer: no input gradient wanted
    ours(x).square().sum().backward()
    theirs(x).square().sum().backward()
    assert calls == [False]
    for p, p_t in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p.grad, p_t.grad, rtol=1e-10, atol=1e-12)

    # frozen parameters: only the input gradient, without the weight-gradient pass
    ours.requires_grad_(False)
    theirs.requires_grad_(False)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours(xa).square().sum().backward()
    theirs(xb).square().sum().backward()
    assert calls == [False]
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- #
# a PyTorch model with fastconv layers trains as the pure PyTorch one
# --------------------------------------------------------------------------- #


def _model(layers, tdtype):
    nn = torch.nn
    return nn.Sequential(
        layers.Conv2d(1, 4, 3, padding=1, dtype=tdtype), nn.ReLU(),
        layers.MaxPool2d(2),                                     # 8x8 -> 4x4
        nn.Conv2d(4, 6, 3, padding=1, dtype=tdtype), nn.ReLU(),  # a torch layer between
        layers.ConvTranspose2d(6, 4, 2, stride=2, dtype=tdtype), nn.Tanh(),  # -> 8x8
        layers.AvgPool2d(2),                                     # -> 4x4
        nn.Flatten(), nn.Linear(4 * 4 * 4, 3, dtype=tdtype),
    )


def _train(model, x, labels, steps=5):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_mixed_model_trains_like_torch(dtype, rng, assert_close):
    tdtype = TORCH_DTYPE[dtype]
    ours = _model(fct, tdtype)
    theirs = _model(torch.nn, tdtype)
    theirs.load_state_dict(ours.state_dict())
    x = _tensor(rng, (8, 1, 8, 8), dtype)
    labels = torch.from_numpy(rng.integers(0, 3, size=8))
    losses = _train(ours, x, labels)
    losses_t = _train(theirs, x, labels)
    assert_close(np.array(losses, dtype=dtype), losses_t, err_msg="losses")
    assert losses[-1] < losses[0]
    state, state_t = ours.state_dict(), theirs.state_dict()
    for name in state:
        assert_close(state[name].numpy(), state_t[name].double().numpy(), err_msg=name)


# --------------------------------------------------------------------------- #
# errors
# --------------------------------------------------------------------------- #


def test_layers_refuse_what_fastconv_cannot_compute(rng):
    conv = fct.Conv2d(2, 2, 3)
    with pytest.raises(TypeError, match=r"^x is on device meta.*CPU tensors only"):
        conv(torch.zeros(1, 2, 5, 5, device="meta"))
    with pytest.raises(TypeError, match=r"^w has dtype torch.float32 but x has torch.float64"):
        conv(torch.zeros(1, 2, 5, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"^x has dtype torch.float16"):
        fct.MaxPool2d(2)(torch.zeros(1, 2, 4, 4, dtype=torch.float16))
    with pytest.raises(TypeError, match=r"^x must be a torch.Tensor, got ndarray"):
        fct.avg_pool2d(np.zeros((1, 1, 4, 4)), 2)
    with pytest.raises(ValueError, match="groups=2 must divide in_channels=3"):
        fct.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding must be"):
        fct.Conv2d(3, 4, 3, padding="half")
    with pytest.raises(ValueError, match="padding_mode of ConvTranspose2d must be 'zeros'"):
        fct.ConvTranspose2d(3, 4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        fct.MaxPool2d(0)
    with pytest.raises(ValueError, match="x must be 4-D"):  # fastconv's own checks still run
        conv(torch.zeros(2, 5, 5, 5, 5))


# --------------------------------------------------------------------------- #
# torch stays optional
# --------------------------------------------------------------------------- #


def _python(code):
    """Run ``code`` in a fresh interpreter that imports the fastconv under test."""
    root = os.path.dirname(os.path.dirname(fastconv.__file__))
    env = dict(os.environ, PYTHONPATH=root)
    # Run outside the source tree: `python -c` puts the working folder first on sys.path.
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60, cwd=tempfile.gettempdir())
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_fastconv_does_not_import_torch():
    out = _python("import fastconv, sys; assert 'torch' not in sys.modules; "
                  "print(fastconv.__file__)")
    assert out.strip() == fastconv.__file__


def test_fastconv_torch_without_torch_says_what_is_missing():
    out = _python(
        "import sys\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "import fastconv\n"
        "try:\n"
        "    import fastconv.torch\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('fastconv.torch imported without torch')\n"
    )
    assert "fastconv.torch needs PyTorch" in out and "pip install torch" in out
