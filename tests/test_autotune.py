"""Tests for the per-pass choice of algorithm="auto", the opt-in autotuner, and the
stride-1 direct kernels (wide rows) that "auto" now picks for few channels.

Results are checked against the float64 NumPy reference (tests/reference.py).
"""

import dataclasses

import numpy as np
import pytest

import fastconv as fc
from fastconv import _autotune, _plan, functional
from fastconv._geometry import conv_geometry

from reference import conv2d_backward_ref, conv2d_ref


@pytest.fixture
def autotune():
    """Autotuning on with an empty cache for one test; restored afterwards."""
    fc.clear_autotune_cache()
    previous = fc.set_autotune(True)
    yield
    fc.set_autotune(previous)
    fc.clear_autotune_cache()


def problem(rng, x_shape, w_shape, dtype=np.float64):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    return x, w


def test_set_autotune_returns_previous_and_checks_type():
    assert fc.get_autotune() is False
    assert fc.set_autotune(True) is False
    try:
        assert fc.get_autotune() is True
    finally:
        assert fc.set_autotune(False) is True
    with pytest.raises(TypeError, match="enabled must be a bool"):
        fc.set_autotune(1)


@pytest.mark.usefixtures("autotune")
def test_autotune_times_each_pass_once_and_matches_the_chosen_algorithm(monkeypatch):
    rng = np.random.default_rng(0)
    x, w = problem(rng, (3, 4, 9, 8), (6, 4, 3, 3))
    timed = []
    real_seconds = _autotune._seconds
    monkeypatch.setattr(_autotune, "_seconds", lambda run: timed.append(1) or real_seconds(run))

    y = fc.conv2d(x, w, padding=1)
    gy = rng.standard_normal(y.shape)
    gx, gw, _ = fc.conv2d_backward(gy, x, w, padding=1)
    choices = fc.autotune_choices()
    assert sorted(key[0] for key in choices) == ["forward", "input_grad", "weight_grad"]
    # 3x3 stride 1: direct, im2col and winograd for the forward and input gradient,
    # direct and im2col for the weight gradient
    assert len(timed) == 3 + 3 + 2
    assert set(choices.values()) <= {"direct", "im2col", "winograd"}

    # Later calls reuse the choices without timing, and give that algorithm's bits.
    by_pass = {key[0]: name for key, name in choices.items()}
    y2 = fc.conv2d(x, w, padding=1)
    gx2, gw2, _ = fc.conv2d_backward(gy, x, w, padding=1)
    assert len(timed) == 8
    np.testing.assert_array_equal(y2, fc.conv2d(x, w, padding=1, algorithm=by_pass["forward"]))
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(gx, gx2)
    np.testing.assert_array_equal(gw, gw2)

    gx_ref, gw_ref, _ = conv2d_backward_ref(gy, x, w, padding=1)
    np.testing.assert_allclose(y, conv2d_ref(x, w, None, padding=1), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, gw_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.usefixtures("autotune")
def test_autotune_keys_on_shape_and_dtype_and_clears():
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        for size in (6, 7):
            x, w = problem(rng, (2, 3, size, size), (4, 3, 3, 3), dtype)
            fc.conv2d(x, w)
    assert len(fc.autotune_choices()) == 4
    fc.clear_autotune_cache()
    assert fc.autotune_choices() == {}


@pytest.mark.usefixtures("autotune")
def test_autotune_leaves_explicit_algorithms_alone():
    rng = np.random.default_rng(2)
    x, w = problem(rng, (2, 3, 6, 6), (4, 3, 3, 3))
    fc.conv2d(x, w, algorithm="im2col")
    fc.conv2d_backward(np.ones((2, 4, 4, 4)), x, w, algorithm="direct")
    assert fc.autotune_choices() == {}


@pytest.mark.usefixtures("autotune")
def test_autotune_transposed_convolution_matches_reference():
    rng = np.random.default_rng(3)
    x, w = problem(rng, (2, 4, 5, 5), (4, 3, 3, 3))
    y = fc.conv_transpose2d(x, w, stride=2, padding=1)
    gy = rng.standard_normal(y.shape)
    # conv_transpose2d is the input gradient of the conv whose input has y's shape
    _, _, _ = fc.conv_transpose2d_backward(gy, x, w, stride=2, padding=1)
    passes = sorted(key[0] for key in fc.autotune_choices())
    assert passes == ["forward", "input_grad", "weight_grad"]
    y_explicit = fc.conv_transpose2d(x, w, stride=2, padding=1, algorithm="im2col")
    np.testing.assert_allclose(y, y_explicit, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "params"),
    [
        ((64, 1, 32, 32), (6, 1, 5, 5), {}),  # LeNet C1
        ((64, 6, 14, 14), (16, 6, 5, 5), {}),  # LeNet C3
        ((8, 64, 56, 56), (64, 64, 3, 3), {"padding": 1}),
        ((8, 64, 56, 56), (64, 64, 3, 3), {"padding": 2, "dilation": 2}),
        ((8, 256, 14, 14), (256, 256, 1, 1), {}),
        ((8, 128, 28, 28), (256, 128, 3, 3), {"stride": 2, "padding": 1}),
        ((8, 32, 28, 28), (32, 1, 3, 3), {"padding": 1, "groups": 32}),
    ],
)
def test_auto_rules_depend_on_shape_only(x_shape, w_shape, params):
    """The plan of each pass (kernel, blocking, workspace per thread) is a function of
    the geometry: the thread count sizes nothing but the number of workspace rows."""
    geom = conv_geometry(x_shape, w_shape, params.get("stride", 1), params.get("padding", 0),
                         params.get("dilation", 1), params.get("groups", 1))
    for pass_ in _plan.PASSES:
        plans = [dataclasses.replace(_plan.plan(geom, pass_, np.float32, n), n_threads=0,
                                     fallback=None)
                 for n in (1, 2, 3, 16)]
        assert plans[0].algorithm in {"direct", "im2col", "winograd"}
        assert all(p == plans[0] for p in plans), pass_


# --- the stride-1 direct kernels (wide rows) ----------------------------------------


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "params"),
    [
        ((2, 3, 7, 9), (4, 3, 3, 3), {"padding": 1}),
        ((2, 4, 6, 5), (6, 2, 3, 2), {"padding": ((2, 0), (1, 3)), "groups": 2,
                                      "dilation": (2, 1)}),
        ((1, 1, 5, 5), (1, 1, 5, 5), {"padding": 4}),  # output larger than the input
        ((1, 2, 3, 3), (3, 2, 2, 2), {"padding": 3}),  # input grad crops gy (negative pad)
        ((3, 2, 4, 4), (9, 2, 1, 3), {}),  # odd channel counts: pairs and a single
        ((1, 1, 1, 1), (1, 1, 1, 1), {"padding": ((0, 0), (2, 1))}),
        ((2, 3, 8, 8), (17, 3, 5, 5), {"padding": "same"}),  # more than one channel block
        ((1, 2, 2, 9), (2, 2, 2, 7), {"dilation": (1, 1)}),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_stride1_matches_reference(x_shape, w_shape, params, dtype):
    rng = np.random.default_rng(4)
    x, w = problem(rng, x_shape, w_shape, dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    y = fc.conv2d(x, w, b, **params, algorithm="direct")
    np.testing.assert_allclose(y, conv2d_ref(x, w, b, **params), **tol)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, _ = fc.conv2d_backward(gy, x, w, **params, algorithm="direct")
    gx_ref, gw_ref, _ = conv2d_backward_ref(gy, x, w, **params)
    np.testing.assert_allclose(gx, gx_ref, **tol)
    np.testing.assert_allclose(gw, gw_ref, **tol)


def test_direct_stride1_is_bit_identical_across_threads():
    rng = np.random.default_rng(5)
    x, w = problem(rng, (5, 6, 14, 14), (16, 6, 5, 5), np.float32)
    gy = rng.standard_normal((5, 16, 12, 12)).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        with fc.threads(n):
            y = fc.conv2d(x, w, padding=1, algorithm="direct")
            gx, _, _ = fc.conv2d_backward(gy, x, w, padding=1, algorithm="direct")
            results.append((y, gx))
    for y, gx in results[1:]:
        np.testing.assert_array_equal(y, results[0][0])
        np.testing.assert_array_equal(gx, results[0][1])


def test_direct_input_grad_with_infinite_weights_matches_im2col():
    """A non-finite kernel takes the tap-by-tap input gradient: no inf * 0 from padding."""
    rng = np.random.default_rng(6)
    x, w = problem(rng, (1, 2, 5, 5), (3, 2, 3, 3))
    w[1, 0, 0, 0] = np.inf
    gy = rng.standard_normal((1, 3, 5, 5))
    gx_direct, _, _ = fc.conv2d_backward(gy, x, w, padding=1, algorithm="direct")
    gx_im2col, _, _ = fc.conv2d_backward(gy, x, w, padding=1, algorithm="im2col")
    np.testing.assert_array_equal(np.isnan(gx_direct), np.isnan(gx_im2col))
    np.testing.assert_array_equal(np.isinf(gx_direct), np.isinf(gx_im2col))


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_auto_keeps_the_nonfinite_pattern_where_it_would_take_winograd(bad):
    """auto picks Winograd for this shape, but an inf/NaN input goes to im2col, whose
    pattern of inf and NaN matches PyTorch's."""
    rng = np.random.default_rng(7)
    x, w = problem(rng, (2, 32, 16, 16), (48, 32, 3, 3), np.float32)
    geom = conv_geometry(x.shape, w.shape, 1, 1, 1, 1)
    assert _plan.plan(geom, "forward", np.float32, 1).kernel == "winograd"
    x[0, 3, 4, 4] = bad
    y = fc.conv2d(x, w, padding=1)
    y_im2col = fc.conv2d(x, w, padding=1, algorithm="im2col")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_im2col))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(y_im2col))
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gy[0, 5, 2, 2] = bad
    gx, _, _ = fc.conv2d_backward(gy, x, w, padding=1)
    gx_im2col, _, _ = fc.conv2d_backward(gy, x, w, padding=1, algorithm="im2col")
    np.testing.assert_array_equal(np.isnan(gx), np.isnan(gx_im2col))
