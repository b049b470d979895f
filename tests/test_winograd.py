"""Tests for conv2d(..., algorithm="winograd") and its backward.

Winograd F(4x4, 3x3) handles 3x3 kernels with stride 1 (a dilated kernel as one
undilated convolution per phase of the dilation). Results
are checked against the float64 NumPy reference (tests/reference.py), against
im2col, against PyTorch where it is installed, by directional finite
differences in float64, for bit-identity across 1, 2 and 3 threads, and for the
cache of transformed weights (weights changed in place must never reuse a stale
transform).
"""

import threading

import numpy as np
import pytest

import fastconv as fc
from fastconv import _blocking, _plan, _winograd
from fastconv._geometry import conv_geometry
from fastconv import functional as F
from fastconv import nn

from reference import conv2d_backward_ref, conv2d_ref

#: Largest error allowed, relative to max |reference| (Winograd's float32 error is
#: about 1e-5 of the output's range at these sizes; float64 about 1e-14).
REL_TOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-12}

# (N, C, H, W, K, padding, groups): odd and even sizes, planes smaller than a tile,
# 1x1 images, C = 1 and K = 1, groups and depthwise, asymmetric padding, words,
# padding above 2 (the input gradient then falls back to im2col), and batches whose
# tiles span several blocks that cross image boundaries.
SHAPES = [
    (2, 3, 7, 6, 4, 1, 1),
    (1, 1, 1, 1, 1, 1, 1),
    (1, 2, 1, 1, 3, ((2, 2), (2, 2)), 1),
    (2, 5, 4, 4, 3, 0, 1),
    (1, 1, 3, 3, 1, 0, 1),
    (3, 4, 9, 11, 6, ((0, 2), (1, 0)), 2),
    (1, 2, 13, 8, 2, "same", 1),
    (2, 2, 3, 3, 2, "full", 1),
    (1, 6, 3, 17, 6, 2, 3),
    (2, 6, 10, 10, 6, "same", 6),
    (1, 1, 8, 8, 1, 0, 1),
    (2, 16, 23, 29, 8, "valid", 1),
    (5, 8, 30, 30, 8, 1, 1),
    (2, 3, 6, 9, 5, ((3, 0), (0, 4)), 1),
]


def _id(shape):
    n, c, h, w, k, padding, groups = shape
    return f"n{n}-c{c}-{h}x{w}-k{k}-p{padding}-g{groups}".replace(" ", "")


def rel_err(got, ref):
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(float(np.max(np.abs(ref))), 1e-300)
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - ref))) / scale


def assert_rel(got, ref, dtype, what):
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert got.dtype == dtype, f"{what}: dtype {got.dtype} != {dtype}"
    err = rel_err(got, ref)
    assert err <= REL_TOL[np.dtype(dtype)], f"{what}: relative error {err:.3g}"


def problem(rng, shape, dtype, bias=True):
    n, c, h, w, k, padding, groups = shape
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype) if bias else None
    return x, wt, b, dict(padding=padding, groups=groups)


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts with an empty transform cache."""
    _winograd.CACHE.clear()
    yield
    _winograd.CACHE.clear()


# --------------------------------------------------------------------------- #
# against the reference and the other algorithms
# --------------------------------------------------------------------------- #


@pytest.fixture(params=[4, 2], ids=["F4x4", "F2x2"])
def winograd_tile(request, monkeypatch):
    """Every Winograd pass on output tiles of this size: F(4x4, 3x3) from no tiles on,
    F(2x2, 3x3) under any count (WINOGRAD_F4_MIN_TILES)."""
    monkeypatch.setattr(_blocking, "WINOGRAD_F4_MIN_TILES", 0 if request.param == 4 else 10**9)
    _plan.clear_cache()  # plans made under the other rule
    yield request.param
    monkeypatch.undo()
    _plan.clear_cache()


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=[_id(s) for s in SHAPES])
def test_forward_and_backward_against_reference(shape, flip, dtype, rng, winograd_tile):
    x, w, b, conv = problem(rng, shape, dtype, bias=not flip)
    assert fc.explain(x, w, **conv, algorithm="winograd")["forward"].winograd_tile == (
        winograd_tile)
    y = fc.conv2d(x, w, b, **conv, flip=flip, algorithm="winograd")
    y_ref = conv2d_ref(x, w, b, **conv, flip=flip)
    assert_rel(y, y_ref, dtype, "y")
    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    grads = fc.conv2d_backward(gy, x, w, **conv, flip=flip, algorithm="winograd")
    for name, got, ref in zip(("gx", "gw", "gb"), grads,
                              conv2d_backward_ref(gy, x, w, **conv, flip=flip)):
        assert_rel(got, ref, dtype, name)


def test_the_tile_is_2x2_under_32_tiles_of_4x4():
    """F(4x4, 3x3) from WINOGRAD_F4_MIN_TILES 4x4 output tiles of the pass on (the input
    gradient's over x's plane), F(2x2, 3x3) under; "auto" takes F(2x2) only with
    WINOGRAD_F2_MIN_CHANNELS channels in and out, their product at most
    WINOGRAD_F2_MAX_CHANNEL_PRODUCT, over WINOGRAD_MIN_TILES 2x2 tiles."""
    assert _blocking.WINOGRAD_F4_MIN_TILES == 32 and _plan.WINOGRAD_MIN_TILES == 32
    assert _plan.WINOGRAD_F2_MIN_CHANNELS == 128
    assert _plan.WINOGRAD_F2_MAX_CHANNEL_PRODUCT == 256 * 512

    def plans(x_shape, k, **conv):
        return fc.explain(x_shape, (k, x_shape[1], 3, 3), **conv)
    assert _blocking.winograd_tile(1, 14, 14) == 2      # 16 tiles of 4x4
    assert _blocking.winograd_tile(2, 14, 14) == 4      # 32
    assert _blocking.winograd_tile(1, 28, 28) == 4      # 49
    deep = plans((1, 256, 14, 14), 256, padding=1)      # ResNet-18 at batch 1
    for pass_ in ("forward", "input_grad"):
        assert (deep[pass_].kernel, deep[pass_].winograd_tile) == ("winograd", 2)
    assert "F(2x2, 3x3)" in str(deep)
    assert plans((8, 256, 14, 14), 256, padding=1)["forward"].winograd_tile == 4
    assert plans((1, 64, 14, 14), 64, padding=1)["forward"].kernel == "gemm"  # shallow
    assert plans((1, 512, 7, 7), 512, padding=1)["forward"].kernel == "gemm"  # 16 tiles
    assert plans((1, 512, 14, 14), 512, padding=1)["forward"].kernel == "gemm"  # 512 x 512
    assert plans((1, 256, 14, 14), 512, padding=1)["forward"].kernel == "winograd"
    # the input gradient of a stride-1 conv whose output is smaller than x: x's tiles
    valid = plans((1, 128, 21, 21), 128)  # 5x5 tiles of 4x4 out, 6x6 over x
    assert valid["forward"].winograd_tile == 2 and valid["input_grad"].winograd_tile == 4
    assert valid["forward"].kernel == valid["input_grad"].kernel == "winograd"


@pytest.mark.parametrize("shape", SHAPES[::3], ids=[_id(s) for s in SHAPES[::3]])
def test_backward_matches_im2col(shape, dtype, rng):
    x, w, _, conv = problem(rng, shape, dtype)
    gy = rng.standard_normal(F.conv2d(x, w, **conv).shape).astype(dtype)
    wino = fc.conv2d_backward(gy, x, w, **conv, algorithm="winograd")
    im2col = fc.conv2d_backward(gy, x, w, **conv, algorithm="im2col")
    assert_rel(wino[0], im2col[0], dtype, "gx")
    # the weight and bias gradients run the same kernels
    assert np.array_equal(wino[1], im2col[1]) and np.array_equal(wino[2], im2col[2])


def test_needs_input_grad_false(rng):
    x, w, _, conv = problem(rng, SHAPES[0], np.float64)
    gy = rng.standard_normal(F.conv2d(x, w, **conv).shape)
    gx, gw, gb = fc.conv2d_backward(gy, x, w, **conv, algorithm="winograd",
                                    needs_input_grad=False)
    assert gx is None
    _, gw_ref, gb_ref = conv2d_backward_ref(gy, x, w, **conv)
    assert_rel(gw, gw_ref, np.float64, "gw")
    assert_rel(gb, gb_ref, np.float64, "gb")


@pytest.mark.parametrize("channels", [64, 256])
def test_float32_accuracy_bound(channels):
    """max |y - y_ref| / max |y_ref| <= 1e-3 for standard normal x and w (float32)."""
    rng = np.random.default_rng(channels)
    x = rng.standard_normal((2, channels, 20, 22)).astype(np.float32)
    w = rng.standard_normal((16, channels, 3, 3)).astype(np.float32)
    y = fc.conv2d(x, w, padding=1, algorithm="winograd")
    y_ref = conv2d_ref(x.astype(np.float64), w.astype(np.float64), None, padding=1)
    assert rel_err(y, y_ref) <= 1e-3
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx, _, _ = fc.conv2d_backward(gy, x, w, padding=1, algorithm="winograd")
    gx_ref, _, _ = conv2d_backward_ref(gy.astype(np.float64), x.astype(np.float64),
                                       w.astype(np.float64), padding=1)
    assert rel_err(gx, gx_ref) <= 1e-3


def test_empty_batch_and_bias():
    x = np.zeros((0, 3, 5, 5), dtype=np.float32)
    w = np.ones((2, 3, 3, 3), dtype=np.float32)
    y = fc.conv2d(x, w, np.array([1.0, 2.0], dtype=np.float32), padding=1, algorithm="winograd")
    assert y.shape == (0, 2, 5, 5) and y.dtype == np.float32
    gx, gw, gb = fc.conv2d_backward(np.zeros((0, 2, 5, 5)), x, w, padding=1,
                                    algorithm="winograd")
    assert gx.shape == x.shape and not gw.any() and not gb.any()


def test_name_case_insensitive(rng):
    x, w, b, conv = problem(rng, SHAPES[0], np.float64)
    assert np.array_equal(fc.conv2d(x, w, b, **conv, algorithm="Winograd"),
                          fc.conv2d(x, w, b, **conv, algorithm="winograd"))


def test_layer_with_winograd(rng):
    layer = nn.Conv2d(4, 6, 3, padding=1, algorithm="winograd", dtype=np.float64, rng=0)
    x = rng.standard_normal((2, 4, 9, 7))
    y = layer(x)
    y_ref = conv2d_ref(x, layer.weight.data, layer.bias.data, padding=1)
    assert_rel(y, y_ref, np.float64, "y")
    gx = layer.backward(np.ones_like(y))
    gx_ref, gw_ref, _ = conv2d_backward_ref(np.ones_like(y), x, layer.weight.data, padding=1)
    assert_rel(gx, gx_ref, np.float64, "gx")
    assert_rel(layer.weight.grad, gw_ref, np.float64, "gw")


# --------------------------------------------------------------------------- #
# finite differences (float64) and PyTorch
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("xs, ws, conv", [
    ((2, 3, 6, 5), (4, 3, 3, 3), dict(padding=1)),
    ((1, 4, 7, 9), (6, 2, 3, 3), dict(padding=((2, 0), (0, 1)), groups=2, flip=True)),
    ((2, 2, 5, 5), (3, 2, 3, 3), dict(padding=((3, 1), (0, 3)))),
])
def test_directional_finite_differences(xs, ws, conv, rng):
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    gy = rng.standard_normal(fc.conv2d(x, w, b, **conv, algorithm="winograd").shape)
    gx, gw, gb = fc.conv2d_backward(gy, x, w, **conv, algorithm="winograd")

    def loss(x_, w_, b_):
        return float(np.sum(gy * fc.conv2d(x_, w_, b_, **conv, algorithm="winograd")))

    eps = 1e-3
    args = (x, w, b)
    for _ in range(3):
        for i, grad in enumerate((gx, gw, gb)):
            step = eps * rng.standard_normal(args[i].shape)
            plus = [a + step if j == i else a for j, a in enumerate(args)]
            minus = [a - step if j == i else a for j, a in enumerate(args)]
            num = (loss(*plus) - loss(*minus)) / (2 * eps)
            assert np.isclose(num, np.sum(grad * step) / eps, rtol=1e-7, atol=1e-7), i


@pytest.mark.parametrize("shape", SHAPES, ids=[_id(s) for s in SHAPES])
def test_against_torch(shape, dtype, torch, rng):
    x, w, b, conv = problem(rng, shape, dtype)
    (pt, pb), (pl, pr) = conv_geometry(x.shape, w.shape, 1, conv["padding"], 1,
                                       conv["groups"]).padding
    tf = torch.nn.functional
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    wt = torch.from_numpy(w.astype(np.float64)).requires_grad_()
    yt = tf.conv2d(tf.pad(xt, (pl, pr, pt, pb)), wt, torch.from_numpy(b.astype(np.float64)),
                   groups=conv["groups"])
    gy = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.from_numpy(gy.astype(np.float64)))
    y = fc.conv2d(x, w, b, **conv, algorithm="winograd")
    assert_rel(y, yt.detach().numpy(), dtype, "y")
    gx, gw, _ = fc.conv2d_backward(gy, x, w, **conv, algorithm="winograd")
    assert_rel(gx, xt.grad.numpy(), dtype, "gx")
    assert_rel(gw, wt.grad.numpy(), dtype, "gw")


# --------------------------------------------------------------------------- #
# threads
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("shape", [
    (5, 8, 30, 30, 8, 1, 1),
    (3, 6, 17, 15, 9, ((0, 2), (1, 0)), 3),
    (1, 3, 9, 11, 5, "same", 1),
    (7, 32, 12, 13, 16, 1, 1),
], ids=["blocks-across-images", "groups-asymmetric", "one-image", "odd-batch"])
def test_bit_identical_for_1_2_and_3_threads(shape, dtype, rng, restore_threads):
    x, w, b, conv = problem(rng, shape, dtype)
    gy = np.cos(np.arange(F.conv2d(x, w, **conv).size)).reshape(
        F.conv2d(x, w, **conv).shape).astype(dtype)
    results = {}
    for threads in (1, 2, 3):
        with fc.threads(threads):
            results[threads] = (fc.conv2d(x, w, b, **conv, algorithm="winograd"),
                                *fc.conv2d_backward(gy, x, w, **conv, algorithm="winograd"))
    for threads in (2, 3):
        for name, one, many in zip(("y", "gx", "gw", "gb"), results[1], results[threads]):
            assert one.dtype == many.dtype
            assert np.array_equal(one, many), f"{name}: 1 vs {threads} threads differ"


def test_concurrent_python_threads(rng):
    """Python threads with different weights of one shape share the cache safely."""
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    weights = [rng.standard_normal((8, 8, 3, 3)).astype(np.float32) for _ in range(12)]
    expected = [fc.conv2d(x, w, padding=1, algorithm="winograd") for w in weights]
    errors = []
    barrier = threading.Barrier(4)

    def work(offset):
        barrier.wait()
        for rep in range(3):
            for i in range(len(weights)):
                j = (i + offset + rep) % len(weights)
                y = fc.conv2d(x, weights[j], padding=1, algorithm="winograd")
                if not np.array_equal(y, expected[j]):
                    errors.append(j)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert _winograd.CACHE.nbytes <= _winograd.CACHE.max_bytes


# --------------------------------------------------------------------------- #
# the cache of transformed weights
# --------------------------------------------------------------------------- #


def test_cache_reuses_transform_for_unchanged_weights(rng):
    w = rng.standard_normal((4, 3, 3, 3))
    u = _winograd.CACHE.get(w, 4)
    assert _winograd.CACHE.get(w, 4) is u
    assert not u.flags.writeable
    assert np.array_equal(_winograd.CACHE.get(w.copy(), 4), u)  # another array, same values
    assert _winograd.CACHE.get(w.astype(np.float32), 4) is not u  # another dtype
    assert _winograd.CACHE.get(w, 4, role="input_grad") is not u  # another role


def test_cache_transforms_each_layer_of_a_deep_network_once(rng, monkeypatch):
    transforms = []
    real = _winograd.transform_weights
    monkeypatch.setattr(_winograd, "transform_weights",
                        lambda w, tile: transforms.append(1) or real(w, tile))
    x = rng.standard_normal((1, 4, 8, 8))
    layers = [rng.standard_normal((4, 4, 3, 3)) for _ in range(40)]
    for _ in range(3):
        for w in layers:
            fc.conv2d(x, w, padding=1, algorithm="winograd")
    assert len(transforms) == len(layers)


def test_weights_changed_in_place_are_not_served_stale(dtype, rng):
    x = rng.standard_normal((2, 3, 9, 9)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    fc.conv2d(x, w, padding=1, algorithm="winograd")
    for step in range(3):
        w[step, 0, 1, 2] += 1  # one element: an optimiser step in place
        y = fc.conv2d(x, w, padding=1, algorithm="winograd")
        assert_rel(y, conv2d_ref(x, w, None, padding=1), dtype, f"y after step {step}")
        gy = np.ones_like(y)
        gx, _, _ = fc.conv2d_backward(gy, x, w, padding=1, algorithm="winograd")
        assert_rel(gx, conv2d_backward_ref(gy, x, w, padding=1)[0], dtype, "gx")


def test_new_weights_of_same_shape_and_flip(rng):
    x = rng.standard_normal((1, 2, 7, 7))
    w1, w2 = rng.standard_normal((2, 2, 2, 3, 3))
    for w in (w1, w2, w1):
        for flip in (False, True):
            y = fc.conv2d(x, w, padding="same", flip=flip, algorithm="winograd")
            assert_rel(y, conv2d_ref(x, w, None, padding="same", flip=flip), np.float64, "y")


def test_cache_is_bounded_by_bytes(rng):
    w = rng.standard_normal((2, 2, 3, 3))
    entry_bytes = _winograd.transform_weights(w, 4).nbytes + w.nbytes
    cache = _winograd.TransformCache(max_bytes=3 * entry_bytes)
    kept = [rng.standard_normal(w.shape) for _ in range(10)]
    for v in kept:
        cache.get(v, 4)
    assert len(cache) == 3 and cache.nbytes == 3 * entry_bytes
    assert cache.get(kept[-1], 4) is cache.get(kept[-1], 4)  # the newest are kept


def test_nan_weights_are_never_cached_as_equal(rng):
    x = rng.standard_normal((1, 1, 4, 4))
    w = np.ones((1, 1, 3, 3))
    w[0, 0, 0, 0] = np.nan
    assert np.isnan(fc.conv2d(x, w, algorithm="winograd")).all()
    w[0, 0, 0, 0] = 1.0
    assert np.isfinite(fc.conv2d(x, w, algorithm="winograd")).all()


# --------------------------------------------------------------------------- #
# unsupported shapes and operations
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("wshape, kwargs", [
    ((2, 3, 5, 5), dict()),
    ((2, 3, 3, 2), dict()),
    ((2, 3, 1, 1), dict()),
    ((2, 3, 3, 3), dict(stride=2)),
    ((2, 3, 3, 3), dict(stride=(1, 2))),
])
def test_unsupported_shapes_raise(wshape, kwargs):
    x = np.ones((1, 3, 8, 8))
    match = "winograd.*3x3 kernels with stride 1"
    with pytest.raises(ValueError, match=match):
        fc.conv2d(x, np.ones(wshape), **kwargs, algorithm="winograd")
    gy = np.ones(fc.conv2d(x, np.ones(wshape), **kwargs).shape)
    with pytest.raises(ValueError, match=match):
        fc.conv2d_backward(gy, x, np.ones(wshape), **kwargs, algorithm="winograd")
    with pytest.raises(ValueError, match=match):  # even with nothing to compute
        fc.conv2d(np.ones((0, 3, 8, 8)), np.ones(wshape), **kwargs, algorithm="winograd")


def test_conv1d_refuses_winograd():
    with pytest.raises(ValueError, match="3x3 kernels"):
        fc.conv1d(np.ones((1, 2, 9)), np.ones((2, 2, 3)), algorithm="winograd")


def test_transposed_convolution_refuses_winograd():
    x, w = np.ones((1, 2, 4, 4)), np.ones((2, 3, 3, 3))
    with pytest.raises(ValueError, match="conv2d only"):
        fc.conv_transpose2d(x, w, algorithm="winograd")
    with pytest.raises(ValueError, match="conv2d only"):
        fc.conv_transpose2d(np.ones((0, 2, 4, 4)), w, algorithm="winograd")
    gy = np.ones(fc.conv_transpose2d(x, w).shape)
    with pytest.raises(ValueError, match="conv2d only"):
        fc.conv_transpose2d_backward(gy, x, w, algorithm="winograd")
    with pytest.raises(ValueError, match="conv2d only"):
        fc.conv_transpose1d(np.ones((1, 2, 4)), np.ones((2, 3, 3)), algorithm="winograd")


def test_winograd_is_listed_and_auto_takes_it_for_deep_3x3(rng):
    assert "winograd" in F.ALGORITHMS
    # few channels: auto keeps the direct kernels; 32 in and 48 out over 32 tiles: Winograd
    x, w, b, conv = problem(rng, (2, 16, 12, 12, 16, 1, 1), np.float32)
    assert np.array_equal(fc.conv2d(x, w, b, **conv),
                          fc.conv2d(x, w, b, **conv, algorithm="direct"))
    x, w, b, conv = problem(rng, (2, 32, 16, 16, 48, 1, 1), np.float32)
    assert np.array_equal(fc.conv2d(x, w, b, **conv),
                          fc.conv2d(x, w, b, **conv, algorithm="winograd"))


DILATED = [
    # (x shape, out channels, padding, dilation, groups)
    ((2, 3, 9, 8), 4, 2, 2, 1),
    ((1, 4, 11, 7), 6, "same", (2, 3), 2),
    ((2, 2, 5, 5), 3, 0, 2, 1),
    ((1, 2, 4, 4), 2, ((4, 0), (1, 3)), (2, 1), 1),
    ((1, 1, 2, 2), 1, 3, 3, 1),  # phases with no input rows: bias only
    ((3, 8, 16, 12), 8, 4, 4, 1),
]


@pytest.mark.parametrize("x_shape, k, padding, dilation, groups", DILATED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dilated_winograd_matches_reference(x_shape, k, padding, dilation, groups, dtype,
                                            winograd_tile):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((k, x_shape[1] // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    conv = dict(padding=padding, dilation=dilation, groups=groups)
    y = fc.conv2d(x, w, b, **conv, algorithm="winograd")
    y_ref = conv2d_ref(x, w, b, **conv)
    limit = 1e-3 if dtype == np.float32 else 1e-10
    assert y.shape == y_ref.shape
    assert rel_err(y, y_ref) <= limit
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, _ = fc.conv2d_backward(gy, x, w, **conv, algorithm="winograd")
    gx_ref, gw_ref, _ = conv2d_backward_ref(gy, x, w, **conv)
    assert rel_err(gx, gx_ref) <= limit
    assert rel_err(gw, gw_ref) <= limit


def test_one_weight_array_under_two_group_counts(rng):
    """The input gradient's transform is of w rotated per group: the same array used
    with another group count must not get the other's cached transform."""
    w = rng.standard_normal((4, 2, 3, 3))
    for groups in (1, 2, 1):
        x = rng.standard_normal((1, 2 * groups, 6, 6))
        gy = rng.standard_normal((1, 4, 6, 6))
        gx, _, _ = fc.conv2d_backward(gy, x, w, padding=1, groups=groups, algorithm="winograd")
        expected = conv2d_backward_ref(gy, x, w, padding=1, groups=groups)[0]
        assert_rel(gx, expected, np.float64, f"gx with groups={groups}")


# ---------------------------------------------------------------------------------------
# the filter transform kernel
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k, c", [(1, 1), (3, 7), (17, 23), (64, 3), (0, 5)])
def test_transform_weights_is_g_w_gt(rng, tile, dtype, k, c):
    """U[a * A + b, k, c] = (G w[k, c] G^T)[a, b], against NumPy in float64 (filter counts
    below, at and across the kernel's block of 128 filters)."""
    w = rng.standard_normal((k, c, 3, 3)).astype(dtype)
    g = _winograd.G_MATRICES[tile]
    expected = np.einsum("ai,kcij,bj->abkc", g, w.astype(np.float64), g)
    expected = expected.reshape(g.shape[0] ** 2, k, c)
    u = _winograd.transform_weights(w, tile)
    assert u.shape == expected.shape and u.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(u, expected, rtol=tol, atol=tol)


def test_transform_weights_of_a_strided_view(rng):
    w = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
    view = w[::2, ::2]
    np.testing.assert_array_equal(_winograd.transform_weights(view, 4),
                                  _winograd.transform_weights(view.copy(), 4))


def test_transform_filters_rejects_mismatched_shapes():
    from fastconv._dispatch import _conv_winograd
    g = _winograd.G_MATRICES[4]
    with pytest.raises(ValueError, match="wt must be"):
        _conv_winograd.transform_filters(np.zeros((8, 5)), g, np.zeros((36, 5)), 1)
    with pytest.raises(ValueError, match="u \\(A \\* A, F\\)"):
        _conv_winograd.transform_filters(np.zeros((9, 5)), g, np.zeros((36, 4)), 1)
    with pytest.raises(ValueError, match="g must be"):
        _conv_winograd.transform_filters(np.zeros((9, 5)), np.zeros((7, 3)),
                                         np.zeros((49, 5)), 1)


# ---------------------------------------------------------------------------------------
# fastconv.torch: transforms known by the parameter's identity and version
# ---------------------------------------------------------------------------------------


def _counting(monkeypatch):
    """Counters of transforms made and of weight comparisons by value."""
    counts = {"transforms": 0, "compared": 0}
    real_transform, real_equal = _winograd.transform_weights, _winograd.np.array_equal

    def transform(w, tile):
        counts["transforms"] += 1
        return real_transform(w, tile)

    def equal(a, b):
        counts["compared"] += 1
        return real_equal(a, b)

    monkeypatch.setattr(_winograd, "transform_weights", transform)
    monkeypatch.setattr(_winograd.np, "array_equal", equal)
    return counts


def _close_to(got, want):
    """Winograd's float32 error: about 1e-5 of the largest |y|."""
    import torch
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_torch_layer_transforms_once_per_weights_version(monkeypatch):
    torch = pytest.importorskip("torch")
    import fastconv.torch as fct

    torch.manual_seed(0)
    layer = fct.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(8, 64, 16, 16)
    assert "winograd" in fc.explain(x.numpy(), layer.weight.detach().numpy(),
                                    padding=1).__str__().splitlines()[1]
    counts = _counting(monkeypatch)

    def expected():
        return torch.nn.functional.conv2d(x, layer.weight, layer.bias, padding=1)

    with torch.no_grad():
        for _ in range(3):
            _close_to(layer(x), expected())
        assert counts == {"transforms": 1, "compared": 0}
        layer.weight.mul_(-0.5)  # an in-place change advances the version: seen
        _close_to(layer(x), expected())
    assert counts == {"transforms": 2, "compared": 0}

    # a training step: forward, backward (the input gradient's own transform), update
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    xg = x.clone().requires_grad_()
    layer(xg).square().sum().backward()
    opt.step()
    with torch.no_grad():
        _close_to(layer(x), expected())
    assert counts["compared"] == 0


def test_torch_layer_at_a_reused_address_gets_its_own_transform():
    """Layers made and dropped one after another may reuse the same memory for their
    weights, at version 0 each time: the owner's identity tells them apart."""
    torch = pytest.importorskip("torch")
    import fastconv.torch as fct

    x = torch.randn(8, 32, 16, 16)
    with torch.no_grad():
        for seed in range(6):
            torch.manual_seed(seed)
            layer = fct.Conv2d(32, 32, 3, padding=1, bias=False)
            want = torch.nn.functional.conv2d(x, layer.weight, padding=1)
            _close_to(layer(x), want)
            del layer


def test_numpy_view_of_known_weights_is_compared_by_value(rng):
    """Outside known_weights the same memory is checked by value, whoever cached it."""
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    x = rng.standard_normal((8, 32, 16, 16)).astype(np.float32)

    class Owner:
        pass

    owner = Owner()
    with _winograd.known_weights(w, owner, 0):
        fc.conv2d(x, w, padding=1, algorithm="winograd")
    w *= 2  # changed without a version: a plain call must not get the old transform
    np.testing.assert_allclose(fc.conv2d(x, w, padding=1, algorithm="winograd"),
                               fc.conv2d(x, w, padding=1, algorithm="im2col"),
                               rtol=1e-4, atol=1e-3)


def test_torch_layer_with_inference_tensors_compares_by_value():
    """Tensors made under torch.inference_mode keep no version counter: the layer still
    runs, and weights changed in place there are still seen."""
    torch = pytest.importorskip("torch")
    import fastconv.torch as fct

    with torch.inference_mode():
        torch.manual_seed(0)
        layer = fct.Conv2d(64, 64, 3, padding=1)
        x = torch.randn(8, 64, 16, 16)
        for scale in (1.0, -2.0):
            layer.weight.mul_(scale)
            want = torch.nn.functional.conv2d(x, layer.weight, layer.bias, padding=1)
            _close_to(layer(x), want)
