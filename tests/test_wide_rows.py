"""The wide-row kernels (_kernels/_conv_wide.pyx): the forward's register blocks, at
stride 1 and over phase planes at a stride, and the weight gradient.

``algorithm="direct"`` runs the forward over phase planes for strided, undilated
kernels with few channels (depthwise ones above all), the input gradient at a stride
as one such convolution per phase of gx (more than one channel of gy per group, or 25
taps), and the weight gradient for
undilated kernels larger than 1x1 with fewer than 4 output channels per group (at a
stride over phase planes too, unless one input channel meets fewer than 25 taps over
fewer than 2048 output pixels), or
4 to 7 at stride 1 on rows of at least 24 outputs. The shapes reach every path: strides
2 and 3 and unequal ones, padding that a phase begins or ends in, images whose width is
not a multiple of the stride, strides larger than the kernel (only the phases its taps
read are made); gradient blocks of 1 to 4 output channels (7 = 4 + 3, 6 = 3 + 3,
5 = 3 + 2) and of 1 to 12 taps, more taps than one block holds (runs of near-equal
blocks, across kernel rows), rows whose padded length is not a whole number of vectors,
more images than partial-sum chunks; groups and both dtypes. Each result is checked against
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

def _gradient_problem(shape, seed, dtype=np.float32):
    """(x, w, conv options, gy) of a (x shape, w shape, stride, padding, groups) case."""
    x_shape, w_shape, stride, padding, groups = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    conv = dict(stride=stride, padding=padding, groups=groups)
    gy = rng.standard_normal(fc.conv2d(x, w, **conv).shape).astype(dtype)
    return x, w, conv, gy


def assert_same_on_1_2_and_3_threads(compute):
    """``compute()`` gives the same bits on 1, 2 and 3 threads (the caller restores the
    thread count: the restore_threads fixture)."""
    results = []
    for n_threads in (1, 2, 3):
        fc.set_num_threads(n_threads)
        results.append(compute())
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


# (x shape, w shape, stride, padding, groups) of the strided forward
STRIDED = [
    ((2, 6, 13, 11), (6, 1, 3, 3), 2, 1, 6),            # depthwise 3x3 s2, odd sizes
    ((1, 4, 14, 15), (8, 2, 5, 4), (2, 3), (2, 1), 2),   # unequal strides, groups
    ((3, 2, 9, 10), (5, 2, 3, 3), 3, 0, 1),             # stride 3, no padding
    ((2, 3, 8, 8), (2, 3, 2, 2), 2, ((1, 0), (0, 1)), 1),  # a phase of padding only
    ((1, 2, 17, 16), (2, 1, 3, 2), (5, 4), 1, 2),       # strides beyond the kernel
    # stride 2 with a 2x2 or larger kernel, phase rows of at most 16: the phases split
    # from one padded plane in whole vectors (8 floats, 4 doubles) with the last one
    # overlapping, rows of fewer one column at a time; many tasks a thread, each copying
    # only x's own pixels
    ((3, 12, 14, 14), (12, 1, 3, 3), 2, 1, 12),         # phase rows of 8 (7x7 outputs)
    ((2, 9, 6, 7), (9, 1, 3, 3), 2, 1, 9),              # rows of 5: under a float vector
    ((2, 5, 26, 27), (5, 1, 3, 3), 2, 1, 5),            # rows of 15: overlapping
    ((1, 3, 40, 41), (3, 1, 3, 3), 2, 1, 3),            # rows of 22: gathered from x
    ((2, 4, 12, 12), (8, 2, 4, 4), 2, 1, 2),            # 4x4, two channels a group
    ((1, 6, 10, 11), (6, 1, 2, 2), 2, 0, 6),            # 2x2: no padding
    ((2, 3, 9, 9), (3, 1, 3, 3), 2, 4, 3),              # padding past the kernel's reach
    ((2, 6, 13, 14), (6, 1, 3, 3), (2, 1), 1, 6),       # stride (2, 1): phases gathered
]

# ... and stride-1 forwards: blocks of every channel count (8 = 4 + 4, 7 = 4 + 3, 6, 5, 2
# and 1 output channels per block), row tails of single vectors, an 80-tap kernel
STRIDE_ONE = [
    ((2, 2, 9, 23), (16, 2, 3, 3), 1, 1, 1),            # two tasks of 4 + 4 channels
    ((1, 1, 3, 100), (7, 1, 1, 80), 1, (0, 4), 1),      # 4 + 3 channels, 80 taps
    ((2, 4, 8, 9), (24, 1, 3, 3), 1, 1, 4),             # 6 channels per group
    ((1, 3, 5, 6), (5, 3, 2, 2), 1, 0, 1),              # 5 channels, short rows
    ((2, 10, 6, 11), (10, 2, 5, 3), 1, 2, 5),           # 2 channels per group
    ((3, 4, 7, 13), (4, 1, 3, 3), 1, 1, 4),             # depthwise: 1 channel blocks
    ((3, 20, 7, 7), (20, 1, 3, 3), 1, 1, 20),           # 60 planes: tasks share zeros
    ((2, 3, 5, 21), (3, 1, 3, 3), 1, 1, 3),             # 15 vectors: 8, then 4 + 2 + 1
    ((2, 6, 5, 9), (6, 1, 3, 3), 1, (4, 0), 6),         # rows of padding past the reach
]
FORWARD = STRIDED + STRIDE_ONE

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
    ((2, 3, 9, 10), (3, 1, 5, 5), 1, 2, 3),             # depthwise 5x5: 8 + 8 + 9 taps
    ((2, 1, 9, 26), (6, 1, 5, 5), 1, 2, 1),             # LeNet C1-like: 3 + 3 channels
    ((1, 2, 6, 25), (5, 2, 3, 3), 1, 1, 1),             # 5 channels: 3 + 2
    ((2, 4, 5, 30), (14, 2, 3, 2), 1, (1, 0), 2),       # 7 channels per group: 4 + 3
    ((2, 2, 89, 91), (2, 1, 3, 3), 2, 1, 2),            # depthwise 3x3 s2, 2070 outputs
    # 16 groups or more: one chunk, each task's channel over every image in turn
    ((3, 20, 7, 9), (20, 1, 3, 3), 1, 1, 20),           # depthwise, 3 images a task
    ((4, 32, 6, 10), (32, 2, 3, 3), 1, 1, 16),          # 2 channels of gy a task
    ((3, 16, 13, 12), (16, 1, 5, 5), 2, 2, 16),         # strided depthwise 5x5: phases
]


def _ids(shape):
    return "x{}-w{}-s{}-p{}-g{}".format(*shape).replace(" ", "")


def _strided_ids(shape):
    return "x{}-w{}-s{}-p{}-g{}".format(*shape).replace(" ", "")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", FORWARD, ids=_strided_ids)
def test_forward_matches_reference(shape, dtype, assert_close):
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


@pytest.mark.parametrize("shape", FORWARD, ids=_strided_ids)
def test_forward_bit_identical_for_1_2_and_3_threads(shape, restore_threads):
    x_shape, w_shape, stride, padding, groups = shape
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    assert_same_on_1_2_and_3_threads(lambda: fc.conv2d(
        x, w, stride=stride, padding=padding, groups=groups, algorithm="direct"))


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_shapes_take_the_wide_weight_gradient(shape):
    x_shape, w_shape, stride, padding, groups = shape
    geom = conv_geometry(x_shape, w_shape, stride, padding, 1, groups)
    assert _plan.plan(geom, "weight_grad", np.float32, 2, "direct").kernel == "wide_rows"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_matches_reference(shape, dtype, assert_close):
    x, w, conv, gy = _gradient_problem(shape, sum(shape[0]) + sum(shape[1]), dtype)
    _, gw, _ = fc.conv2d_backward(gy, x, w, **conv, algorithm="direct")
    assert gw.dtype == dtype and gw.shape == w.shape
    assert_close(gw, conv2d_backward_ref(gy, x, w, **conv)[1], err_msg="gw:")


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_bit_identical_for_1_2_and_3_threads(shape, restore_threads):
    x, w, conv, gy = _gradient_problem(shape, 5)
    assert_same_on_1_2_and_3_threads(
        lambda: fc.conv2d_backward(gy, x, w, **conv, algorithm="direct")[1])


# (x shape, w shape, stride, padding, groups) of the strided input gradient
STRIDED_INPUT_GRAD = [
    ((2, 3, 13, 11), (3, 3, 3, 3), 2, 1, 1),            # 3 -> 3 channels, odd sizes
    ((1, 4, 14, 15), (6, 2, 5, 4), (2, 3), (2, 1), 2),  # unequal strides, groups
    ((2, 6, 12, 13), (6, 1, 5, 5), 2, 2, 6),            # depthwise 5x5: 25 taps
    ((1, 2, 17, 16), (4, 2, 3, 2), (5, 4), 1, 1),       # phases no tap reaches
    ((1, 2, 9, 9), (4, 2, 2, 2), 2, ((1, 0), (0, 1)), 1),  # a crop in some phases
    ((2, 4, 10, 9), (8, 2, 3, 3), 2, 3, 2),             # padding past the reach: crops
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", STRIDED_INPUT_GRAD, ids=_ids)
def test_strided_input_gradient_matches_reference(shape, dtype, assert_close):
    """One stride-1 wide-row convolution per phase of gx, against the reference, and the
    same with a transposed convolution's bias (the input gradient plus b)."""
    x, w, conv, gy = _gradient_problem(shape, sum(shape[0]) * 3 + sum(shape[1]), dtype)
    assert fc.explain(x, w, **conv, algorithm="direct")["input_grad"].kernel == "wide_rows"
    gx = fc.conv2d_backward(gy, x, w, **conv, algorithm="direct")[0]
    assert gx.dtype == dtype and gx.shape == x.shape
    assert_close(gx, conv2d_backward_ref(gy, x, w, **conv)[0], err_msg="gx:")
    b = np.linspace(-1, 1, x.shape[1]).astype(dtype)
    y = fc.conv_transpose2d(gy, w, b, **conv, output_size=x.shape[2:], algorithm="direct")
    assert_close(y, conv2d_backward_ref(gy, x, w, **conv)[0] + b[:, None, None], err_msg="y:")


@pytest.mark.parametrize("shape", STRIDED_INPUT_GRAD, ids=_ids)
def test_strided_input_gradient_bit_identical_for_1_2_and_3_threads(shape, restore_threads):
    x, w, conv, gy = _gradient_problem(shape, 9)
    assert_same_on_1_2_and_3_threads(
        lambda: fc.conv2d_backward(gy, x, w, **conv, algorithm="direct")[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_input_gradient_with_padding_past_the_kernels_reach(dtype, assert_close):
    """A stride-1 input gradient is a wide-row convolution of gy padded by the kernel's
    reach less the forward's padding: padding 3 around a 3x3 kernel gives -1, a crop of
    gy's outer rows and columns (only the pixels inside it are copied)."""
    x, w, conv, gy = _gradient_problem(((2, 5, 8, 9), (5, 1, 3, 3), 1, 3, 5), 11, dtype)
    assert fc.explain(x, w, **conv, algorithm="direct")["input_grad"].kernel == "wide_rows"
    gx = fc.conv2d_backward(gy, x, w, **conv, algorithm="direct")[0]
    assert_close(gx, conv2d_backward_ref(gy, x, w, **conv)[0], err_msg="gx:")


def test_infinite_weights_of_a_strided_input_gradient_fall_back():
    """Each phase's convolution multiplies gy's padding by the weights: inf there would
    make NaN where the gradient is finite, so such weights run the loops (as PyTorch)."""
    x = np.ones((1, 1, 6, 6), np.float32)
    w = np.ones((3, 1, 3, 3), np.float32)
    w[0, 0, 0, 0] = np.inf
    gy = np.ones((1, 3, 3, 3), np.float32)
    gx = fc.conv2d_backward(gy, x, w, stride=2, padding=1, algorithm="direct")[0]
    gx_ref = conv2d_backward_ref(gy, x, w, stride=2, padding=1)[0]
    for test in (np.isnan, np.isposinf):
        np.testing.assert_array_equal(test(gx), test(gx_ref))
    finite = np.isfinite(gx_ref)
    np.testing.assert_allclose(gx[finite], gx_ref[finite], rtol=1e-6)


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
