"""The channel-vectorised direct kernels (fastconv/_kernels/_conv_cvec.pyx).

``algorithm="direct"`` runs them where the planner (fastconv/_plan.py) says
``channel_vector`` (forward, weight gradient) or ``channel_vector_scatter`` (input
gradient), at any stride. The shapes below reach every blocking path: channel counts
that fill two vectors, one vector, or part of one; rows whose pixel blocks overlap;
tap counts that leave a short last block; images cut into several bands; groups,
dilation, padding, strides and both dtypes. Each result is checked against the plain
NumPy float64 reference and for bit-identical results with 1, 2 and 3 threads.
"""

import numpy as np
import pytest

import fastconv as fc
from fastconv import _blocking, _execute, _plan
from fastconv._geometry import conv_geometry

from reference import conv2d_backward_ref, conv2d_ref

# (x shape, w shape, stride, padding, dilation, groups)
SHAPES = [
    ((4, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1),      # LeNet C3: two vectors of channels
    ((3, 1, 28, 28), (6, 1, 5, 5), 1, 2, 1, 1),       # LeNet C1: part of one vector
    ((2, 3, 11, 13), (9, 3, 3, 3), 1, 1, 1, 1),       # one vector and one lane more
    ((2, 5, 9, 17), (24, 5, 3, 2), 1, (1, 0), 1, 1),  # three vectors: two, then one
    ((2, 8, 10, 10), (20, 4, 3, 3), 1, 2, 2, 2),      # groups, dilation, wide padding
    ((1, 4, 70, 23), (12, 4, 3, 3), 1, 1, 1, 1),      # one image: cut into bands
    ((2, 3, 17, 15), (8, 3, 4, 3), (2, 3), (1, 2), (2, 1), 1),  # strided weight gradient
    ((2, 16, 7, 7), (8, 16, 3, 3), 1, 1, 1, 1),       # input gradient to 16 channels
    ((2, 3, 4, 30), (40, 3, 2, 7), 1, (0, 3), 1, 1),  # pixel blocks of a long row
    ((2, 6, 9, 9), (8, 6, 2, 2), 3, 0, 1, 1),         # stride 3: rows gy never reaches
    ((1, 12, 19, 21), (6, 4, 3, 5), 2, (2, 1), (1, 2), 3),  # strided, dilated groups
    ((2, 5, 9, 11), (13, 5, 3, 3), 1, 1, 1, 1),       # 8 x 8 transposes: 8 + 5 channels
]


def _ids(shape):
    return "x{}-w{}-s{}-p{}-d{}-g{}".format(*shape).replace(" ", "")


def _passes_on_cvec(x_shape, w_shape, stride, padding, dilation, groups):
    """Which passes of this shape run the channel-vectorised kernels under "direct"."""
    geom = conv_geometry(x_shape, w_shape, stride, padding, dilation, groups)
    return {pass_: _plan.plan(geom, pass_, np.float32, 1, "direct").kernel.startswith(
        "channel_vector") for pass_ in _plan.PASSES}


def test_every_pass_is_covered():
    on_cvec = [_passes_on_cvec(*shape) for shape in SHAPES]
    for name in ("forward", "input_grad", "weight_grad"):
        assert any(passes[name] for passes in on_cvec), name
        assert not all(passes[name] for passes in on_cvec), name  # the others run too


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_matches_reference(shape, dtype, assert_close):
    x_shape, w_shape, stride, padding, dilation, groups = shape
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = fc.conv2d(x, w, b, **conv, algorithm="direct")
    assert_close(y, conv2d_ref(x, w, b, **conv), err_msg="y:")
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, gb = fc.conv2d_backward(gy, x, w, **conv, algorithm="direct")
    gx_ref, gw_ref, gb_ref = conv2d_backward_ref(gy, x, w, **conv)
    assert_close(gx, gx_ref, err_msg="gx:")
    assert_close(gw, gw_ref, err_msg="gw:")
    assert_close(gb, gb_ref, err_msg="gb:")


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_bit_identical_for_1_2_and_3_threads(shape, restore_threads):
    x_shape, w_shape, stride, padding, dilation, groups = shape
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    results = []
    for n_threads in (1, 2, 3):
        fc.set_num_threads(n_threads)
        y = fc.conv2d(x, w, **conv, algorithm="direct")
        gy = np.cos(np.arange(y.size, dtype=np.float32)).reshape(y.shape)
        results.append((y, *fc.conv2d_backward(gy, x, w, **conv, algorithm="direct")))
    for other in results[1:]:
        for got, first in zip(other, results[0]):
            np.testing.assert_array_equal(got, first)


def test_weight_gradient_keeps_padding_products_of_infinite_gy():
    """Like im2col (and PyTorch), inf in gy times the zero padding gives NaN in gw."""
    x = np.ones((1, 3, 4, 4), np.float32)
    w = np.ones((8, 3, 3, 3), np.float32)
    gy = np.zeros((1, 8, 4, 4), np.float32)
    gy[0, 0, 0, 0] = np.inf
    _, gw_direct, _ = fc.conv2d_backward(gy, x, w, padding=1, algorithm="direct")
    _, gw_im2col, _ = fc.conv2d_backward(gy, x, w, padding=1, algorithm="im2col")
    np.testing.assert_array_equal(gw_direct, gw_im2col)
    assert np.isnan(gw_direct[0, :, 0, 0]).all() and np.isinf(gw_direct[0, :, 2, 2]).all()


def test_auto_picks_the_channel_vectorised_kernels_for_lenet_c3():
    geom = conv_geometry((64, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1)
    assert _plan.plan(geom, "forward", np.float32, 2).kernel == "channel_vector"
    assert _plan.plan(geom, "weight_grad", np.float32, 2).kernel == "channel_vector"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_packed_weights_layout(dtype):
    w = np.arange(2 * 3 * 2 * 2, dtype=dtype).reshape(2, 3, 2, 2)
    packed = _execute._channel_vector_packed(w, groups=1)
    lanes = fc._dispatch._conv_cvec.lanes(dtype == np.float64)
    assert packed.shape == (1, 12, -(-2 // lanes) * lanes)
    np.testing.assert_array_equal(packed[0, :, :2], w.reshape(2, 12).T)
    assert not packed[0, :, 2:].any()


@pytest.mark.parametrize("algorithm, x_shape, w_shape, padding, kernel", [
    ("direct", (2, 6, 9, 9), (16, 6, 3, 3), 1, "channel_vector_scatter"),
    ("direct", (2, 2, 30, 30), (4, 2, 3, 3), 1, "wide_rows"),
    ("direct", (2, 6, 9, 9), (16, 6, 3, 3), 1, "row_loops"),
    ("im2col", (2, 6, 9, 9), (16, 6, 3, 3), 1, "gemm"),       # col2im accumulates
    ("im2col", (2, 6, 9, 9), (16, 6, 1, 1), 0, "gemm"),       # pointwise GEMM
    ("winograd", (2, 6, 9, 9), (16, 6, 3, 3), 1, "winograd"),
])
@pytest.mark.parametrize("with_bias", [False, True])
def test_every_input_gradient_kernel_overwrites_its_output(algorithm, x_shape, w_shape,
                                                           padding, kernel, with_bias):
    """The kernel contract: gx holds anything before the call (NaN here) and, after it,
    exactly bias + gradient, the same as the reference."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    geom = conv_geometry(x.shape, w.shape, 1, padding, 1, 1)
    gy = rng.standard_normal(geom.y_shape)
    bias = rng.standard_normal(x_shape[1]) if with_bias else None
    plan = _plan.plan(geom, "input_grad", np.float64, 2, algorithm)
    if plan.kernel != kernel:
        plan = _plan._blocked(geom, "input_grad", algorithm, kernel, "test", np.float64, 2)
    garbage = np.full_like(x, np.nan)
    _execute.input_grad(plan, geom, gy, w, garbage, bias)
    expected = conv2d_backward_ref(gy, x, w, padding=padding)[0]
    if with_bias:
        expected = expected + bias[None, :, None, None]
    np.testing.assert_allclose(garbage, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("stride, expected_kernel", [(1, "wide_rows"), (2, "wide_rows")])
def test_input_gradient_beyond_the_scatter_budget_runs_other_kernels(
        monkeypatch, stride, expected_kernel, assert_close):
    """The scatter kernel needs a padded image of x's channels per thread: past
    SCATTER_MAX_ELEMENTS "direct" falls back (a budget shrunk here, not a huge image)."""
    x_shape, w_shape = (2, 6, 12, 12), (16, 6, 3, 3)
    geom = conv_geometry(x_shape, w_shape, stride, 1, 1, 1)
    assert _plan.plan(geom, "input_grad", np.float64, 1, "direct").kernel == (
        "channel_vector_scatter")
    monkeypatch.setattr(_plan, "SCATTER_MAX_ELEMENTS",
                        _blocking.scatter_workspace(geom, np.float32) - 1)
    _plan.clear_cache()
    assert _plan.plan(geom, "input_grad", np.float64, 1, "direct").kernel == expected_kernel
    rng = np.random.default_rng(11)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    gy = rng.standard_normal(geom.y_shape)
    gx, gw, _ = fc.conv2d_backward(gy, x, w, stride=stride, padding=1, algorithm="direct")
    gx_ref, gw_ref, _ = conv2d_backward_ref(gy, x, w, stride=stride, padding=1)
    assert_close(gx, gx_ref)
    assert_close(gw, gw_ref)
    _plan.clear_cache()  # forget the plans of the shrunk budget


def test_kernels_refuse_mismatched_arrays():
    """The kernels check what they index through raw pointers, whatever the caller."""
    cvec = fc._dispatch._conv_cvec
    lanes = cvec.lanes(False)
    x = np.ones((2, 3, 6, 6), np.float32)
    packed = np.zeros((1, 27, lanes), np.float32)
    tap_off = np.arange(27, dtype=np.intp)
    work = np.zeros((4, 4096), np.float32)
    y = np.zeros((2, lanes, 4, 4), np.float32)
    args = (3, 3, 1, 1, 0, 0, 1, 1)
    cvec.conv2d_forward(x, packed, None, y, work, tap_off, *args, 4, 1)  # consistent
    with pytest.raises(ValueError):  # fewer images in y than in x
        cvec.conv2d_forward(x, packed, None, y[:1], work, tap_off, *args, 4, 1)
    with pytest.raises(ValueError):  # bias of the wrong length
        cvec.conv2d_forward(x, packed, np.zeros(1, np.float32), y, work, tap_off, *args, 4, 1)
    with pytest.raises(ValueError):  # no rows per band
        cvec.conv2d_forward(x, packed, None, y, work, tap_off, *args, 0, 1)
    if lanes > 1:
        with pytest.raises(ValueError):  # channels not padded to whole vectors
            cvec.conv2d_forward(x, packed[:, :, :-1], None, y[:, :-1], work, tap_off, *args,
                                4, 1)
    partials = np.zeros((1, 1, 27, lanes), np.float32)
    with pytest.raises(ValueError):  # gy with other channels than the partials
        cvec.conv2d_weight_grad(np.zeros((2, lanes + 1, 4, 4), np.float32), x, partials, work,
                                tap_off, *args, 4, 1)
    with pytest.raises(ValueError):  # gx with fewer images than gy
        cvec.conv2d_input_grad(np.zeros((2, 1, 4, 4), np.float32),
                               np.zeros((1, 9, lanes), np.float32), None, x[:1], work, 3, 3, 1, 1,
                               0, 0, 1, 1, 1)
    with pytest.raises(ValueError):  # no groups
        cvec.conv2d_forward(x, packed[:0], None, y, work, tap_off, *args, 4, 1)
    with pytest.raises(ValueError):  # more threads than workspace rows
        cvec.conv2d_forward(x, packed, None, y, work, tap_off, *args, 4, 5)
    pooled, idx = np.zeros((2, lanes, 2, 2), np.float32), np.zeros((2, lanes, 2, 2), np.int64)
    pool_args = (4, 4, 3, 3, 0, 0, 1, 1)  # the convolution's 4 x 4 output, its kernel
    cvec.conv2d_forward_max_pool(x, packed, None, pooled, idx, work, tap_off, *pool_args, 4, 1)
    with pytest.raises(ValueError):  # an odd number of rows per band
        cvec.conv2d_forward_max_pool(x, packed, None, pooled, idx, work, tap_off, *pool_args,
                                     3, 1)
    with pytest.raises(ValueError):  # indices of another shape
        cvec.conv2d_forward_max_pool(x, packed, None, pooled, idx[:1], work, tap_off,
                                     *pool_args, 4, 1)
    with pytest.raises(ValueError):  # pooled rows of another output size
        cvec.conv2d_forward_max_pool(x, packed, None, pooled[:, :, :1], idx[:, :, :1], work,
                                     tap_off, *pool_args, 4, 1)
