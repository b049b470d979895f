"""The wide-row kernels' newer paths (_kernels/_conv_wide.pyx): the strided forward
over phase planes and the weight gradient.

``algorithm="direct"`` runs the forward over phase planes for strided, undilated
kernels with few channels (depthwise ones above all), and the weight gradient for
undilated kernels larger than 1x1 with fewer than 4 output channels per group (at a
stride over phase planes too, unless one input channel meets fewer than 25 taps). The shapes reach every path: strides 2 and 3 and unequal ones, padding that a
phase begins or ends in, images whose width is not a multiple of the stride, strides
larger than the kernel (only the phases its taps read are made); one or two
output channels per gradient block (an odd count leaves one), a kernel row wider than
a block of 5 taps, rows whose padded length is not a whole number of vectors, more
images than partial-sum chunks; groups and both dtypes. Each result is checked against
the plain NumPy float64 reference and for bit-identical results on 1, 2 and 3 threads;
inf and NaN in x meet the zeros past each gradient row's end only in the fallback's
way (as PyTorch).
"""

import numpy as np
import pytest

import fastconv as fc
from fastconv._geometry import conv_geometry
from fastconv import _plan

from reference import conv2d_backward_ref, conv2d_ref

# (x shape, w shape, stride, padding, groups) of the strided forward
STRIDED = [
    ((2, 6, 13, 11), (6, 1, 3, 3), 2, 1, 6),            # depthwise 3x3 s2, odd sizes
    ((1, 4, 14, 15), (8, 2, 5, 4), (2, 3), (2, 1), 2),   # unequal strides, groups
    ((3, 2, 9, 10), (5, 2, 3, 3), 3, 0, 1),             # stride 3, no padding
    ((2, 3, 8, 8), (2, 3, 2, 2), 2, ((1, 0), (0, 1)), 1),  # a phase of padding only
    ((1, 2, 17, 16), (2, 1, 3, 2), (5, 4), 1, 2),       # strides beyond the kernel
]

# (x shape, w shape, stride, padding, groups) of the weight gradient
SHAPES = [
    ((3, 6, 11, 13), (6, 1, 3, 3), 1, 1, 6),            # depthwise, odd row lengths
    ((2, 4, 9, 10), (6, 2, 3, 7), 1, (1, 3), 2),        # 3 channels per group, 7 taps a row
    ((20, 1, 12, 12), (1, 1, 5, 5), 1, 2, 1),           # more images than chunks
    ((1, 3, 8, 6), (2, 3, 2, 4), 1, ((0, 1), (2, 0)), 1),  # uneven padding, 2 channels
    ((2, 8, 5, 17), (8, 1, 4, 1), 1, (2, 0), 8),        # one tap a row
    ((2, 6, 13, 11), (6, 1, 5, 5), 2, 2, 6),            # strided depthwise 5x5: phases
    ((1, 4, 14, 15), (6, 2, 5, 4), (2, 3), (2, 1), 2),  # unequal strides, groups
    ((2, 3, 11, 9), (3, 3, 7, 6), (2, 1), 3, 1),        # one row phase, blocks of 5 + 1 taps
    ((1, 2, 17, 16), (2, 2, 3, 2), (5, 4), 1, 1),       # strides beyond the kernel
]


def _ids(shape):
    return "x{}-w{}-s{}-p{}-g{}".format(*shape).replace(" ", "")


def _strided_ids(shape):
    return "x{}-w{}-s{}-p{}-g{}".format(*shape).replace(" ", "")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", STRIDED, ids=_strided_ids)
def test_strided_forward_matches_reference(shape, dtype, assert_close):
    x_shape, w_shape, stride, padding, groups = shape
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    conv = dict(stride=stride, padding=padding, groups=groups)
    assert fc.explain(x, w, **conv, algorithm="direct")["forward"].kernel == "wide_rows"
    y = fc.conv2d(x, w, b, **conv, algorithm="direct")
    assert y.dtype == dtype
    assert_close(y, conv2d_ref(x, w, b, **conv), err_msg="y:")


@pytest.mark.parametrize("shape", STRIDED, ids=_strided_ids)
def test_strided_forward_bit_identical_for_1_2_and_3_threads(shape, restore_threads):
    x_shape, w_shape, stride, padding, groups = shape
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    results = []
    for n_threads in (1, 2, 3):
        fc.set_num_threads(n_threads)
        results.append(fc.conv2d(x, w, stride=stride, padding=padding, groups=groups,
                                 algorithm="direct"))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_shapes_take_the_wide_weight_gradient(shape):
    x_shape, w_shape, stride, padding, groups = shape
    geom = conv_geometry(x_shape, w_shape, stride, padding, 1, groups)
    assert _plan.plan(geom, "weight_grad", np.float32, 2, "direct").kernel == "wide_rows"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_matches_reference(shape, dtype, assert_close):
    x_shape, w_shape, stride, padding, groups = shape
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    conv = dict(stride=stride, padding=padding, groups=groups)
    gy = rng.standard_normal(fc.conv2d(x, w, **conv).shape).astype(dtype)
    _, gw, _ = fc.conv2d_backward(gy, x, w, **conv, algorithm="direct")
    assert gw.dtype == dtype and gw.shape == w.shape
    assert_close(gw, conv2d_backward_ref(gy, x, w, **conv)[1], err_msg="gw:")


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_bit_identical_for_1_2_and_3_threads(shape, restore_threads):
    x_shape, w_shape, stride, padding, groups = shape
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    conv = dict(stride=stride, padding=padding, groups=groups)
    gy = np.cos(np.arange(fc.conv2d(x, w, **conv).size, dtype=np.float32))
    gy = gy.reshape(fc.conv2d(x, w, **conv).shape)
    results = []
    for n_threads in (1, 2, 3):
        fc.set_num_threads(n_threads)
        results.append(fc.conv2d_backward(gy, x, w, **conv, algorithm="direct")[1])
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_infinite_x_past_the_rows_reach_falls_back():
    """A tap's wide row also reads x past the columns its outputs read (times zeros of
    gy's row gaps): inf there would make NaN where the gradient is finite, so x with
    inf or NaN runs the loops, which read only what each output reads."""
    x = np.ones((1, 1, 4, 6), np.float32)
    x[0, 0, 1, 5] = np.inf  # column 5: only taps j >= 2 of a 3-wide kernel read it
    w = np.ones((1, 1, 3, 3), np.float32)
    gy = np.ones((1, 1, 2, 4), np.float32)
    _, gw, _ = fc.conv2d_backward(gy, x, w, algorithm="direct")
    _, gw_ref, _ = conv2d_backward_ref(gy, x, w)
    np.testing.assert_array_equal(np.isinf(gw), np.isinf(gw_ref))
    assert not np.isnan(gw).any()
    np.testing.assert_array_equal(gw[np.isfinite(gw)], gw_ref[np.isfinite(gw_ref)])
