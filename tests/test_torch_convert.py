"""fastconv.torch's 1-D, Lp, adaptive and unpooling layers against torch.nn's, and
fastconv.torch.convert on whole networks: same outputs and gradients after the swap,
the report, and the modules left on torch with their reasons. Skipped where torch is
not installed."""

import copy
import inspect

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastconv  # noqa: E402
import fastconv.torch as fct  # noqa: E402

nn = torch.nn
TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
# float32 results of two libraries that sum in different orders
CLOSE = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny shapes: one thread for torch and one for fastconv, so that neither waits
    on the other's threads on a busy machine (results do not depend on the count)."""
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with fastconv.threads(1):
        yield
    torch.set_num_threads(torch_threads)


def _tensor(rng, shape, dtype=np.float64, requires_grad=False):
    return torch.from_numpy(rng.standard_normal(shape).astype(dtype)).requires_grad_(requires_grad)


def _close(actual, expected, what):
    torch.testing.assert_close(actual, expected, **CLOSE[expected.dtype], msg=lambda m: f"{what}: {m}")


# --------------------------------------------------------------------------- #
# the new layers against torch.nn's
# --------------------------------------------------------------------------- #

# (id, class name in both fastconv.torch and torch.nn, constructor args and kwargs,
#  input shape, forward kwargs)
LAYER_CASES = [
    ("conv1d", "Conv1d", (3, 4, 3), {}, (2, 3, 11), {}),
    ("conv1d-strided-grouped", "Conv1d", (4, 6, 3), dict(stride=2, padding=2, dilation=2, groups=2),
     (2, 4, 13), {}),
    ("conv1d-same-nobias", "Conv1d", (3, 5, 4), dict(padding="same", bias=False), (2, 3, 10), {}),
    ("conv1d-reflect-same", "Conv1d", (3, 4, 4), dict(padding="same", padding_mode="reflect"),
     (2, 3, 9), {}),
    ("conv1d-circular", "Conv1d", (2, 4, 3), dict(padding=2, padding_mode="circular", stride=3),
     (2, 2, 10), {}),
    ("convt1d", "ConvTranspose1d", (3, 4, 3), {}, (2, 3, 7), {}),
    ("convt1d-strided-grouped", "ConvTranspose1d", (4, 6, 3),
     dict(stride=2, padding=1, output_padding=1, groups=2), (2, 4, 6), {}),
    ("convt1d-dilated-nobias", "ConvTranspose1d", (4, 2, 2), dict(stride=3, dilation=2, bias=False),
     (2, 4, 5), {}),
    ("convt1d-output-size", "ConvTranspose1d", (3, 2, 4), dict(stride=3, padding=1),
     (2, 3, 5), {"output_size": [15]}),
    ("maxpool1d", "MaxPool1d", (2,), {}, (2, 3, 9), {}),
    ("maxpool1d-ceil-dilated", "MaxPool1d", (3,), dict(stride=2, padding=1, dilation=2, ceil_mode=True),
     (2, 3, 12), {}),
    ("avgpool1d", "AvgPool1d", (2,), {}, (2, 3, 9), {}),
    ("avgpool1d-ceil-nopad", "AvgPool1d", (3, 2, 1), dict(ceil_mode=True, count_include_pad=False),
     (2, 3, 10), {}),
    ("lppool2d", "LPPool2d", (2, 2), {}, (2, 3, 8, 9), {}),
    ("lppool2d-ceil", "LPPool2d", (4, (3, 2), (2, 1)), dict(ceil_mode=True), (2, 3, 8, 7), {}),
    ("adaptive-global", "AdaptiveAvgPool2d", (1,), {}, (2, 3, 7, 5), {}),
    ("adaptive-overlapping", "AdaptiveAvgPool2d", ((4, 3),), {}, (2, 3, 9, 8), {}),
    ("adaptive-none-larger", "AdaptiveAvgPool2d", ((None, 11),), {}, (2, 3, 5, 7), {}),
]


def _layer_pair(cls_name, args, kwargs, tdtype):
    ours = getattr(fct, cls_name)(*args, **kwargs).to(tdtype)
    theirs = getattr(nn, cls_name)(*args, **kwargs).to(tdtype)
    theirs.load_state_dict(ours.state_dict())  # same parameter names and shapes
    return ours, theirs


def _run(layer, inputs, gy_seed, **kwargs):
    """(y, input gradient, {name: parameter gradient}) with a random output gradient."""
    x = inputs[0].clone().requires_grad_(True)
    y = layer(x, *inputs[1:], **kwargs)
    gy = torch.from_numpy(np.random.default_rng(gy_seed).standard_normal(tuple(y.shape)))
    y.backward(gy.to(y.dtype))
    return y.detach(), x.grad, {name: p.grad for name, p in layer.named_parameters()}


def _compare(ours, theirs, inputs, **kwargs):
    y, gx, grads = _run(ours, inputs, 1, **kwargs)
    y_t, gx_t, grads_t = _run(theirs, inputs, 1, **kwargs)
    _close(y, y_t, "forward")
    _close(gx, gx_t, "input gradient")
    assert list(grads) == list(grads_t)
    for name in grads:
        _close(grads[name], grads_t[name], name)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own
@pytest.mark.parametrize("cls_name, args, kwargs, shape, forward_kwargs",
                         [case[1:] for case in LAYER_CASES], ids=[case[0] for case in LAYER_CASES])
def test_layer_matches_torch(cls_name, args, kwargs, shape, forward_kwargs, dtype, rng):
    ours, theirs = _layer_pair(cls_name, args, kwargs, TORCH_DTYPE[dtype])
    _compare(ours, theirs, [_tensor(rng, shape, dtype)], **forward_kwargs)


@pytest.mark.parametrize("output_size", [None, (10, 8)], ids=["default-size", "output-size"])
def test_max_unpool_matches_torch(output_size, dtype, rng):
    # 9 x 7 is the default output size of these windows; overlapping windows may pick
    # one input twice.
    y, idx = nn.functional.max_pool2d(_tensor(rng, (2, 3, 9, 7), dtype), 3, 2, 1,
                                      return_indices=True)
    ours, theirs = fct.MaxUnpool2d(3, 2, 1), nn.MaxUnpool2d(3, 2, 1)
    _compare(ours, theirs, [y, idx], output_size=output_size)


def test_max_pool1d_indices_match_torch(rng):
    x = _tensor(rng, (2, 3, 13))
    y, idx = fct.MaxPool1d(3, 2, 1, return_indices=True, ceil_mode=True)(x)
    y_t, idx_t = nn.MaxPool1d(3, 2, 1, return_indices=True, ceil_mode=True)(x)
    assert idx.dtype == torch.int64 and torch.equal(idx, idx_t) and torch.equal(y, y_t)
    assert torch.equal(fct.max_unpool2d(y[:, :, None], idx[:, :, None], (1, 3), (1, 2), (0, 1),
                                        output_size=(1, 13)),
                       nn.functional.max_unpool2d(y_t[:, :, None], idx_t[:, :, None], (1, 3),
                                                  (1, 2), (0, 1), output_size=(1, 13)))


def test_lp_pool_odd_p_matches_torch_on_non_negative_input(rng):
    x = _tensor(rng, (2, 3, 6, 7)).abs() + 0.1
    _compare(fct.LPPool2d(3, 2, 1), nn.LPPool2d(3, 2, 1), [x])
    _compare(fct.LPPool2d(1, 3, 2, ceil_mode=True), nn.LPPool2d(1, 3, 2, ceil_mode=True), [x])


@pytest.mark.parametrize("cls_name, args, shape", [
    ("Conv1d", (3, 4, 3), (3, 9)), ("ConvTranspose1d", (3, 2, 3), (3, 6)),
    ("MaxPool1d", (2,), (3, 9)), ("AvgPool1d", (2,), (3, 9)), ("LPPool2d", (2, 2), (3, 6, 7)),
    ("AdaptiveAvgPool2d", ((2, 3),), (3, 6, 7)),
])
def test_unbatched_input(cls_name, args, shape, rng):
    ours, theirs = _layer_pair(cls_name, args, {}, torch.float64)
    x = _tensor(rng, shape)
    y, y_t = ours(x), theirs(x)
    assert y.shape == y_t.shape
    _close(y, y_t, "unbatched forward")


@pytest.mark.parametrize("cls_name", ["MaxPool1d", "AvgPool1d"])
def test_unbatched_input_without_channels_raises_as_in_torch(cls_name):
    """An unbatched (0, L) input has no channels: PyTorch raises, and so does fastconv."""
    x = torch.zeros(0, 5)
    with pytest.raises(RuntimeError):
        getattr(nn, cls_name)(2)(x)
    with pytest.raises(ValueError, match="channel"):
        getattr(fct, cls_name)(2)(x)
    assert getattr(fct, cls_name)(2)(torch.zeros(0, 3, 5)).shape == (0, 3, 2)  # empty batch


def test_unbatched_max_unpool(rng):
    y, idx = nn.functional.max_pool2d(_tensor(rng, (3, 6, 8)), 2, return_indices=True)
    out, out_t = fct.MaxUnpool2d(2)(y, idx), nn.MaxUnpool2d(2)(y, idx)
    assert out.shape == (3, 6, 8)
    assert torch.equal(out, out_t)
    assert fct.max_unpool2d(y, idx, 2, output_size=(3, 7, 9)).shape == (3, 7, 9)


@pytest.mark.parametrize("cls_name, args, kwargs", [
    ("Conv1d", (4, 6, 3), dict(groups=2)),
    ("Conv1d", (3, 5, 4), dict(bias=False)),
    ("ConvTranspose1d", (4, 6, 3), dict(groups=2, stride=2)),
])
def test_parameters_initialised_as_torch(cls_name, args, kwargs):
    torch.manual_seed(7)
    ours = getattr(fct, cls_name)(*args, **kwargs)
    torch.manual_seed(7)
    theirs = getattr(nn, cls_name)(*args, **kwargs)
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    for name in ours_state:
        assert isinstance(getattr(ours, name), nn.Parameter)
        assert torch.equal(ours_state[name], theirs_state[name]), name
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("cls_name, args", [
    ("MaxPool1d", (3, 2, 1, 2, False, True)), ("AvgPool1d", (3, 2, 1, True, False)),
    ("LPPool2d", (2.0, (3, 2), None, True)), ("AdaptiveAvgPool2d", ((None, 4),)),
    ("MaxUnpool2d", (3, 2, 1)), ("Conv1d", (4, 6, 3, 1, "same", 2, 2, False, "reflect")),
    ("ConvTranspose1d", (4, 6, 3, 2, 1, 1, 2, False, 3)),
])
def test_settings_stored_as_torch_stores_them(cls_name, args):
    ours, theirs = getattr(fct, cls_name)(*args), getattr(nn, cls_name)(*args)
    for name in inspect.signature(type(theirs)).parameters:
        if name not in ("bias", "device", "dtype"):
            assert getattr(ours, name) == getattr(theirs, name), name
    assert repr(ours) == repr(theirs)


# --------------------------------------------------------------------------- #
# gradcheck of each new path (float64, small shapes)
# --------------------------------------------------------------------------- #


def _gradcheck(fn, inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("fn, shape", [
    (lambda x: fct.lp_pool2d(x, 2, 3, 2, ceil_mode=True), (1, 2, 5, 6)),
    (lambda x: fct.lp_pool2d(x, 3, (2, 3), 1), (2, 1, 4, 5)),
    (lambda x: fct.adaptive_avg_pool2d(x, (3, 2)), (2, 2, 5, 7)),
    (lambda x: fct.adaptive_avg_pool2d(x, (None, 4)), (1, 2, 3, 3)),
    (lambda x: fct.max_pool1d(x, 3, 2, 1, 1, True), (2, 2, 8)),
    (lambda x: fct.avg_pool1d(x, 3, 2, 1, True, False), (2, 2, 8)),
], ids=["lp2", "lp3", "adaptive", "adaptive-none", "max1d", "avg1d"])
def test_pool_gradcheck(fn, shape, rng):
    _gradcheck(fn, (_tensor(rng, shape, requires_grad=True),))


def test_max_unpool_gradcheck(rng):
    # Windows that do not overlap: every value has a position of its own.
    y, idx = nn.functional.max_pool2d(_tensor(rng, (2, 2, 4, 6)), 2, return_indices=True)
    y = y.detach().requires_grad_(True)
    _gradcheck(lambda y: fct.max_unpool2d(y, idx, 2, output_size=(5, 7)), (y,))


@pytest.mark.parametrize("transposed", [False, True], ids=["conv1d", "conv_transpose1d"])
@pytest.mark.parametrize("needs", [(True, True, True), (True, False, False), (False, True, True)],
                         ids=["all", "x", "w-b"])
def test_conv1d_gradcheck(transposed, needs, rng):
    if transposed:
        x, w, b = (_tensor(rng, s, requires_grad=True) for s in ((2, 4, 5), (4, 1, 3), (2,)))

        def fn(x, w, b):
            return fct.conv_transpose1d(x, w, b, 2, 1, 1, 2, 2)
    else:
        x, w, b = (_tensor(rng, s, requires_grad=True) for s in ((2, 4, 9), (2, 2, 3), (2,)))

        def fn(x, w, b):
            return fct.conv1d(x, w, b, 2, "same", 2, 2)

    for tensor, need in zip((x, w, b), needs):
        tensor.requires_grad_(need)
    _gradcheck(fn, (x, w, b))


# --------------------------------------------------------------------------- #
# what the layers refuse
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("make, error, match", [
    (lambda: fct.Conv1d(3, 4, 3, groups=2), ValueError, "groups=2 must divide in_channels=3"),
    (lambda: fct.Conv1d(3, 4, 3, padding="half"), ValueError, "padding must be"),
    (lambda: fct.Conv1d(3, 4, (3, 3)), ValueError, "kernel_size must be an int or a 1-tuple"),
    (lambda: fct.Conv1d(3, 4, 3, padding_mode="mirror"), ValueError,
     r"padding_mode of Conv1d must be one of \('zeros', 'reflect'"),
    (lambda: fct.ConvTranspose1d(3, 4, 3, padding="same"), ValueError,
     "padding of a transposed convolution must be"),
    (lambda: fct.ConvTranspose1d(3, 4, 3, padding_mode="reflect"), ValueError,
     "padding_mode of ConvTranspose1d must be 'zeros'"),
    (lambda: fct.MaxPool1d(0), ValueError, "kernel_size must be >= 1"),
    (lambda: fct.MaxPool1d(2, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: fct.AvgPool1d(2, stride=(1, 2)), ValueError, "stride must be an int or a 1-tuple"),
    (lambda: fct.LPPool2d(0, 2), ValueError, "norm_type must be a finite number > 0"),
    (lambda: fct.LPPool2d(float("inf"), 2), ValueError, "norm_type must be a finite number > 0"),
    (lambda: fct.LPPool2d("2", 2), TypeError, "norm_type must be a real number"),
    (lambda: fct.AdaptiveAvgPool2d(None), ValueError, "output_size must be an int or"),
    (lambda: fct.AdaptiveAvgPool2d((2, 0)), ValueError, "output_size must be >= 1"),
    (lambda: fct.AdaptiveAvgPool2d((1, 2, 3)), ValueError, r"output_size must be an int or \(OH, OW\)"),
    (lambda: fct.MaxUnpool2d(0), ValueError, "kernel_size must be >= 1"),
], ids=lambda value: None)
def test_constructor_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_call_errors(rng):
    x = _tensor(rng, (1, 2, 9))
    with pytest.raises(ValueError, match=r"^x must be \(N, C, L\) or \(C, L\), got shape"):
        fct.Conv1d(2, 2, 3).double()(x[None])
    with pytest.raises(ValueError, match=r"^w must be \(K, C / groups, KL\), got shape"):
        fct.conv1d(x, torch.ones(2, 2, 1, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"^x has dtype torch.float16"):
        fct.MaxPool1d(2)(x.half())
    y, idx = fct.max_pool2d(_tensor(rng, (1, 1, 4, 4)), 2, return_indices=True)
    with pytest.raises(TypeError, match="indices must be a CPU torch.Tensor of int64"):
        fct.max_unpool2d(y, idx.double(), 2)
    with pytest.raises(ValueError, match=r"output_size must be \(OH, OW\) or the full"):
        fct.max_unpool2d(y, idx, 2, output_size=(1, 4, 4))
    with pytest.raises(ValueError, match="offsets outside the plane"):  # fastconv's own check
        fct.max_unpool2d(y, idx + 16, 2)


# --------------------------------------------------------------------------- #
# convert: networks built here, before and after the swap
# --------------------------------------------------------------------------- #


class BasicBlock(nn.Module):
    """ResNet's basic block: conv-bn-relu-conv-bn, plus a shortcut, then relu."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def resnet():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),                              # 12x12 -> 6x6
        BasicBlock(8, 8, 1), BasicBlock(8, 16, 2),          # -> 3x3
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )


RESNET_SWAPPED = [("0", "Conv2d"), ("3", "MaxPool2d"), ("4.conv1", "Conv2d"),
                  ("4.conv2", "Conv2d"), ("5.conv1", "Conv2d"), ("5.conv2", "Conv2d"),
                  ("5.shortcut.0", "Conv2d"), ("6", "AdaptiveAvgPool2d")]


def mobilenet():
    def separable(c_in, c_out, stride):
        return [nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False), nn.BatchNorm2d(c_in),
                nn.ReLU6(), nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU6()]

    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1, bias=False, padding_mode="circular"), nn.BatchNorm2d(8),
        nn.ReLU6(), *separable(8, 16, 1), *separable(16, 16, 2), nn.AvgPool2d(2, 1),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Dropout(0.0), nn.Linear(16, 4),
    )


def audio_net():
    return nn.Sequential(
        nn.Conv1d(1, 8, 9, stride=2, padding=4), nn.BatchNorm1d(8), nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(8, 8, 4, padding="same", padding_mode="reflect"), nn.ReLU(),
        nn.AvgPool1d(3, 2, 1), nn.ConvTranspose1d(8, 4, 4, stride=2, padding=1), nn.Tanh(),
        nn.AdaptiveAvgPool1d(4), nn.Flatten(), nn.Linear(16, 3),
    )


class EncoderDecoder(nn.Module):
    """Unpooling with the encoder's indices, and an Lp pooling head."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(2, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2)
        self.dec = nn.ConvTranspose2d(4, 2, 3, padding=1)
        self.head = nn.LPPool2d(2, 3, 2, ceil_mode=True)

    def forward(self, x):
        y, idx = self.pool(torch.relu(self.enc(x)))
        return self.head(self.dec(self.unpool(y, idx, output_size=x.shape[-2:])))


NETWORKS = {  # name: (builder, input shape)
    "resnet": (resnet, (2, 3, 12, 12)),
    "mobilenet": (mobilenet, (2, 3, 12, 12)),
    "audio": (audio_net, (2, 1, 64)),
    "encoder-decoder": (EncoderDecoder, (2, 2, 9, 8)),
}


def _outputs_and_grads(model, x):
    x = x.clone().requires_grad_(True)
    y = model(x)
    y.backward(torch.from_numpy(np.random.default_rng(3).standard_normal(tuple(y.shape))).to(y.dtype))
    return y.detach(), x.grad, {name: p.grad for name, p in model.named_parameters()}


def _torch_types(model):
    return {name: type(m) for name, m in model.named_modules() if type(m).__module__ != "fastconv.torch"}


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("tdtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_convert_keeps_outputs_and_gradients(network, tdtype, rng):
    build, shape = NETWORKS[network]
    torch.manual_seed(0)
    model = build().to(tdtype)
    reference = copy.deepcopy(model)
    x = _tensor(rng, shape, np.float32 if tdtype == torch.float32 else np.float64)
    y_t, gx_t, grads_t = _outputs_and_grads(reference, x)
    keys = list(model.state_dict())
    parameters = dict(model.named_parameters())

    report = fct.convert(model)

    assert report.model is model
    assert report.swapped, "nothing swapped"
    assert list(model.state_dict()) == keys
    assert all(model.get_parameter(name) is p for name, p in parameters.items())
    for name, kind in report.swapped:
        assert type(model.get_submodule(name)) is getattr(fct, kind), name
    y, gx, grads = _outputs_and_grads(model, x)
    _close(y, y_t, "output")
    _close(gx, gx_t, "input gradient")
    for name in grads_t:
        _close(grads[name], grads_t[name], name)


def test_convert_report_of_a_resnet():
    model = resnet()
    report = fct.convert(model)
    assert report.swapped == RESNET_SWAPPED
    assert report.left == []
    text = str(report)
    assert text.splitlines()[0] == "fastconv.torch.convert: 8 swapped, 0 left on torch"
    assert any(line.split() == ["5.shortcut.0", "Conv2d", "fastconv.torch.Conv2d"]
               for line in text.splitlines())
    # torch's own layers elsewhere are untouched
    assert {kind for kind in _torch_types(model).values()} >= {nn.BatchNorm2d, nn.Linear, BasicBlock}


def test_convert_report_lists_what_has_no_counterpart():
    report = fct.convert(audio_net())
    assert [name for name, _ in report.swapped] == ["0", "3", "4", "6", "7"]
    assert report.left == [("9", "AdaptiveAvgPool1d", "no fastconv.torch counterpart")]
    assert "left: no fastconv.torch counterpart" in str(report)


def test_convert_carries_every_setting_and_the_mode():
    torch.manual_seed(1)
    model = EncoderDecoder()
    model.enc.register_buffer("scale", torch.ones(4))
    model.enc.register_buffer("scratch", torch.zeros(2), persistent=False)
    model.head.eval()
    before = copy.deepcopy(model)
    rng_state = torch.random.get_rng_state()

    report = fct.convert(model)

    assert torch.equal(torch.random.get_rng_state(), rng_state), "convert drew random numbers"
    assert [name for name, _ in report.swapped] == ["enc", "pool", "unpool", "dec", "head"]
    for name, _ in report.swapped:
        old, new = before.get_submodule(name), model.get_submodule(name)
        for arg in inspect.signature(type(old)).parameters:
            if arg not in ("device", "dtype", "bias"):
                assert getattr(new, arg) == getattr(old, arg), (name, arg)
        assert new.training == old.training, name
    assert model.training and not model.head.training
    assert list(model.state_dict()) == list(before.state_dict())  # scratch stays non-persistent
    assert torch.equal(model.enc.scratch, torch.zeros(2))
    assert model.enc.bias is not None and model.dec.weight.requires_grad


def test_convert_keeps_requires_grad_and_the_parameter_objects(rng):
    model = resnet()
    model[0].weight.requires_grad_(False)
    before = list(model.parameters())  # what an optimizer built now would hold
    fct.convert(model)
    after = list(model.parameters())
    assert len(after) == len(before) and all(a is b for a, b in zip(after, before))
    assert not model[0].weight.requires_grad
    model(_tensor(rng, (2, 3, 12, 12), np.float32)).square().mean().backward()
    assert model[0].weight.grad is None
    assert model[4].conv1.weight.grad is not None


class MyConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


def test_convert_leaves_what_fastconv_cannot_compute():
    model = nn.Sequential(
        nn.Conv2d(2, 2, 3),                                      # 0 swapped
        nn.Conv2d(2, 2, 3).half(),                               # 1 float16
        nn.Conv2d(2, 2, 3, device="meta"),                       # 2 not on the CPU
        MyConv(2, 2, 3),                                         # 3 a subclass
        nn.LPPool2d(3, 2),                                       # 4 odd norm_type
        nn.Conv2d(2, 2, 3),                                      # 5 a hook
        fct.Conv2d(2, 2, 3),                                     # 6 already ours
        nn.Conv3d(2, 2, 3),                                      # 7 no counterpart
        nn.MaxPool2d(2),                                         # 8 the model holds float16
    )
    model[5].register_forward_hook(lambda module, args, out: None)
    report = fct.convert(model)
    assert report.swapped == [("0", "Conv2d")]
    reasons = {name: (kind, why) for name, kind, why in report.left}
    assert list(reasons) == [str(i) for i in range(1, 9)]
    assert reasons["1"][1].startswith("dtype torch.float16: fastconv computes in float32 or float64")
    assert reasons["2"][1].startswith("device meta: ")
    assert reasons["3"] == ("MyConv", "a subclass of torch.nn.Conv2d (its forward may differ); "
                                      "only exact types are swapped")
    assert reasons["4"][1].startswith("norm_type 3: PyTorch sums x^p, fastconv |x|^p")
    assert reasons["5"][1] == "has hooks (forward_hooks) that a swap would drop"
    assert reasons["6"] == ("Conv2d", "already a fastconv.torch layer")
    assert reasons["7"] == ("Conv3d", "no fastconv.torch counterpart")
    assert reasons["8"][1].startswith("no parameters, and the model holds tensors of dtype "
                                      "torch.float16, device meta")
    assert type(model[1]) is nn.Conv2d and type(model[8]) is nn.MaxPool2d
    refused = fct.convert(nn.AdaptiveAvgPool2d(None))  # torch's fails at its first forward
    assert [(name, kind) for name, kind, _ in refused.left] == [("", "AdaptiveAvgPool2d")]
    assert refused.left[0][2].startswith("fastconv.torch.AdaptiveAvgPool2d refuses its settings: "
                                         "output_size must be an int or (OH, OW)")
    for name, _, why in report.left:
        assert any(line.split()[0] == name and line.endswith(why) for line in str(report).splitlines())


def test_convert_twice_swaps_nothing_more():
    model = mobilenet()
    first = fct.convert(model)
    second = fct.convert(model)
    assert second.swapped == []
    assert [(name, why) for name, _, why in second.left] == [
        (name, "already a fastconv.torch layer") for name, _ in first.swapped]


def test_convert_not_inplace_leaves_the_model(rng):
    model = audio_net()
    report = fct.convert(model, inplace=False)
    assert report.model is not model
    assert type(model[0]) is nn.Conv1d and type(report.model[0]) is fct.Conv1d
    assert report.model[0].weight is not model[0].weight
    x = _tensor(rng, (2, 1, 64), np.float32)
    _close(report.model(x), model(x), "copy")


def test_convert_a_layer_and_a_shared_module(rng):
    report = fct.convert(nn.Conv2d(2, 3, 3))
    assert type(report.model) is fct.Conv2d and report.swapped == [("", "Conv2d")]
    assert "(model)" in str(report)
    conv = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), conv, nn.Sequential(conv))
    report = fct.convert(model)
    assert report.swapped == [("0", "Conv2d")]
    assert model[0] is model[2] is model[3][0] and type(model[0]) is fct.Conv2d
    assert model[0].weight is conv.weight
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got list"):
        fct.convert([conv])
