"""Checks of the NumPy reference itself (tests/reference.py).

The expected numbers in the hand-computed cases are worked out on paper and
written out literally; they are not produced by running any code.
"""

import numpy as np
import pytest

from reference import (
    conv2d_backward_ref,
    conv2d_ref,
    normalize_padding_ref,
    output_size_ref,
)

X3 = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
W2 = np.array([[1.0, 2.0], [3.0, 4.0]])


def as4d(a):
    """(H, W) -> (1, 1, H, W)."""
    return np.asarray(a, dtype=np.float64)[None, None]


# --------------------------------------------------------------------------- #
# padding normalisation
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "padding, in_hw, k_hw, stride, dilation, expected",
    [
        (0, (5, 5), (3, 3), 1, 1, ((0, 0), (0, 0))),
        (2, (5, 5), (3, 3), 1, 1, ((2, 2), (2, 2))),
        ((1, 3), (5, 5), (3, 3), 1, 1, ((1, 1), (3, 3))),
        (((0, 1), (2, 3)), (5, 5), (3, 3), 1, 1, ((0, 1), (2, 3))),
        ("valid", (5, 5), (3, 3), 1, 1, ((0, 0), (0, 0))),
        ("VALID", (5, 5), (3, 3), 2, 2, ((0, 0), (0, 0))),
        # same, stride 1: total = k - 1
        ("same", (5, 5), (3, 3), 1, 1, ((1, 1), (1, 1))),
        ("Same", (4, 4), (2, 2), 1, 1, ((0, 1), (0, 1))),
        ("same", (4, 4), (4, 4), 1, 1, ((1, 2), (1, 2))),
        # same with dilation 2: effective kernel 5, total 4
        ("same", (5, 5), (3, 3), 1, 2, ((2, 2), (2, 2))),
        # same, stride 2: out = ceil(5/2) = 3, total = 2*2 + 3 - 5 = 2
        ("same", (5, 5), (3, 3), 2, 1, ((1, 1), (1, 1))),
        # out = ceil(4/2) = 2, total = 2 + 3 - 4 = 1 -> extra on bottom/right
        ("same", (4, 4), (3, 3), 2, 1, ((0, 1), (0, 1))),
        # out = 3, total = 4 + 1 - 6 < 0 -> 0
        ("same", (6, 6), (1, 1), 2, 1, ((0, 0), (0, 0))),
        # per-axis: H: in 7, k 3, s 3 -> out 3, total 6+3-7 = 2; W: in 4, k 2, s 1 -> total 1
        ("SAME", (7, 4), (3, 2), (3, 1), 1, ((1, 1), (0, 1))),
        ("full", (5, 5), (3, 3), 1, 1, ((2, 2), (2, 2))),
        ("Full", (5, 5), (3, 2), 1, (2, 3), ((4, 4), (3, 3))),
    ],
)
def test_normalize_padding_ref(padding, in_hw, k_hw, stride, dilation, expected):
    assert normalize_padding_ref(padding, in_hw, k_hw, stride, dilation) == expected


def test_normalize_padding_ref_unknown_word():
    with pytest.raises(ValueError):
        normalize_padding_ref("middle", (3, 3), (2, 2))


@pytest.mark.parametrize(
    "n, k, s, d, pb, pa, expected",
    [
        (5, 3, 1, 1, 0, 0, 3),
        (5, 3, 2, 1, 0, 0, 2),
        (5, 3, 2, 1, 1, 1, 3),
        (5, 3, 1, 2, 0, 0, 1),
        (3, 2, 1, 3, 0, 0, 0),
        (2, 3, 1, 1, 0, 0, 0),
    ],
)
def test_output_size_ref(n, k, s, d, pb, pa, expected):
    assert output_size_ref(n, k, s, d, pb, pa) == expected


# --------------------------------------------------------------------------- #
# forward, hand-computed
# --------------------------------------------------------------------------- #


def test_2x2_kernel_on_3x3():
    # y00 = 1*1 + 2*2 + 4*3 + 5*4 = 37, y01 = 2 + 6 + 15 + 24 = 47,
    # y10 = 4 + 10 + 21 + 32 = 67,       y11 = 5 + 12 + 24 + 36 = 77
    y = conv2d_ref(as4d(X3), as4d(W2))
    np.testing.assert_array_equal(y, as4d([[37, 47], [67, 77]]))


def test_2x2_kernel_with_bias():
    y = conv2d_ref(as4d(X3), as4d(W2), b=np.array([10.0]))
    np.testing.assert_array_equal(y, as4d([[47, 57], [77, 87]]))


def test_flip_is_true_convolution():
    # rotated kernel [[4, 3], [2, 1]]:
    # y00 = 4 + 6 + 8 + 5 = 23, y01 = 8 + 9 + 10 + 6 = 33,
    # y10 = 16 + 15 + 14 + 8 = 53, y11 = 20 + 18 + 16 + 9 = 63
    y = conv2d_ref(as4d(X3), as4d(W2), flip=True)
    np.testing.assert_array_equal(y, as4d([[23, 33], [53, 63]]))


def test_3x3_ones_kernel_on_4x4():
    x = np.arange(16.0).reshape(4, 4)
    # window sums: top-left 0+1+2+4+5+6+8+9+10 = 45, +9 per step right,
    # +36 per step down
    y = conv2d_ref(as4d(x), as4d(np.ones((3, 3))))
    np.testing.assert_array_equal(y, as4d([[45, 54], [81, 90]]))


def test_3x3_laplacian_on_quadratic():
    # x[i, j] = i**2 + j, the discrete Laplacian of which is 2 everywhere
    x = np.array([[i * i + j for j in range(5)] for i in range(5)], dtype=float)
    lap = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    y = conv2d_ref(as4d(x), as4d(lap))
    np.testing.assert_array_equal(y, np.full((1, 1, 3, 3), 2.0))


def test_3x3_kernel_with_padding_1():
    # sums of the 3x3 neighbourhood of each pixel of X3 (zeros outside)
    y = conv2d_ref(as4d(X3), as4d(np.ones((3, 3))), padding=1)
    expected = [[12, 21, 16], [27, 45, 33], [24, 39, 28]]
    np.testing.assert_array_equal(y, as4d(expected))


def test_stride_2():
    x = np.arange(25.0).reshape(5, 5)
    # window at (r, c): 9 * (5r + c) + (0+1+2+5+6+7+10+11+12) = 9 * (5r + c) + 54
    y = conv2d_ref(as4d(x), as4d(np.ones((3, 3))), stride=2)
    np.testing.assert_array_equal(y, as4d([[54, 72], [144, 162]]))


def test_anisotropic_stride():
    np.testing.assert_array_equal(conv2d_ref(as4d(X3), as4d(W2), stride=(2, 1)), as4d([[37, 47]]))
    np.testing.assert_array_equal(conv2d_ref(as4d(X3), as4d(W2), stride=(1, 2)), as4d([[37], [67]]))


def test_dilation_2():
    x = np.arange(25.0).reshape(5, 5)
    # y[i, j] = v + 2 (v + 2) + 3 (v + 10) + 4 (v + 12) = 10 v + 82, v = 5i + j
    y = conv2d_ref(as4d(x), as4d(W2), dilation=2)
    expected = [[82, 92, 102], [132, 142, 152], [182, 192, 202]]
    np.testing.assert_array_equal(y, as4d(expected))


def test_same_padding_stride_1_even_kernel():
    # [1, 2, 3, 4] padded to [1, 2, 3, 4, 0] (extra zero on the right)
    y = conv2d_ref(as4d([[1, 2, 3, 4]]), as4d([[1, 10]]), padding="same")
    np.testing.assert_array_equal(y, as4d([[21, 32, 43, 4]]))


def test_same_padding_stride_2():
    # W = 5: padded [0, 1, 2, 3, 4, 5, 0], windows at 0, 2, 4
    y = conv2d_ref(as4d([[1, 2, 3, 4, 5]]), as4d([[1, 1, 1]]), stride=2, padding="same")
    np.testing.assert_array_equal(y, as4d([[3, 9, 9]]))
    # W = 4: padded [1, 2, 3, 4, 0], windows at 0, 2
    y = conv2d_ref(as4d([[1, 2, 3, 4]]), as4d([[1, 1, 1]]), stride=2, padding="same")
    np.testing.assert_array_equal(y, as4d([[6, 7]]))


def test_full_padding():
    # [1, 2, 3] padded to [0, 1, 2, 3, 0]
    y = conv2d_ref(as4d([[1, 2, 3]]), as4d([[1, 10]]), padding="full")
    np.testing.assert_array_equal(y, as4d([[10, 21, 32, 3]]))


def test_asymmetric_padding():
    y = conv2d_ref(as4d([[1, 2], [3, 4]]), as4d([[1]]), padding=((0, 1), (2, 0)))
    expected = [[0, 0, 1, 2], [0, 0, 3, 4], [0, 0, 0, 0]]
    np.testing.assert_array_equal(y, as4d(expected))


def test_channels_and_bias():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]])
    w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]).reshape(3, 2, 1, 1)
    y = conv2d_ref(x, w, b=[1.0, 2.0, 3.0])
    expected = np.array(
        [[[[2, 3], [4, 5]], [[7, 8], [9, 10]], [[-1, -1], [-1, -1]]]], dtype=float
    )
    np.testing.assert_array_equal(y, expected)


def test_groups_2x2():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]])
    w = np.array([[[[1.0, 2.0], [3.0, 4.0]]], [[[2.0, 0.0], [0.0, 1.0]]]])
    # channel 0 with kernel 0: 1 + 4 + 9 + 16 = 30; channel 1 with kernel 1: 10 + 8 = 18
    y = conv2d_ref(x, w, groups=2)
    np.testing.assert_array_equal(y, np.array([[[[30.0]], [[18.0]]]]))


def test_groups_two_channels_per_group():
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1, 1)
    w = np.array([[1.0, 10.0], [100.0, 1000.0]]).reshape(2, 2, 1, 1)
    # y0 = 1*1 + 2*10 = 21, y1 = 3*100 + 4*1000 = 4300
    y = conv2d_ref(x, w, groups=2)
    np.testing.assert_array_equal(y, np.array([21.0, 4300.0]).reshape(1, 2, 1, 1))


def test_empty_batch():
    y = conv2d_ref(np.zeros((0, 2, 5, 5)), np.ones((3, 2, 3, 3)), padding=1)
    assert y.shape == (0, 3, 5, 5)


def test_kernel_too_large_raises():
    with pytest.raises(ValueError):
        conv2d_ref(np.zeros((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), dilation=3)


# --------------------------------------------------------------------------- #
# forward, against scipy.signal on single-channel planes
# --------------------------------------------------------------------------- #


def test_against_scipy_signal(rng):
    signal = pytest.importorskip("scipy.signal")
    x = rng.standard_normal((6, 7))
    w = rng.standard_normal((3, 2))
    np.testing.assert_allclose(
        conv2d_ref(as4d(x), as4d(w))[0, 0], signal.correlate2d(x, w, mode="valid"), rtol=1e-12
    )
    np.testing.assert_allclose(
        conv2d_ref(as4d(x), as4d(w), padding="full")[0, 0],
        signal.correlate2d(x, w, mode="full"),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        conv2d_ref(as4d(x), as4d(w), flip=True)[0, 0],
        signal.convolve2d(x, w, mode="valid"),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        conv2d_ref(as4d(x), as4d(w), padding="full", flip=True)[0, 0],
        signal.convolve2d(x, w, mode="full"),
        rtol=1e-12,
    )


# --------------------------------------------------------------------------- #
# backward, hand-computed
# --------------------------------------------------------------------------- #


def test_backward_2x2_kernel_on_3x3():
    gx, gw, gb = conv2d_backward_ref(np.ones((1, 1, 2, 2)), as4d(X3), as4d(W2))
    # each input pixel collects the kernel taps that touch it
    np.testing.assert_array_equal(gx, as4d([[1, 3, 2], [4, 10, 6], [3, 7, 4]]))
    # each tap collects the sum of the input pixels it sees
    np.testing.assert_array_equal(gw, as4d([[12, 16], [24, 28]]))
    np.testing.assert_array_equal(gb, [4.0])


def test_backward_stride_2():
    x = np.arange(25.0).reshape(5, 5)
    gy = as4d([[1, 0], [0, 0]])
    gx, gw, gb = conv2d_backward_ref(gy, as4d(x), as4d(np.ones((3, 3))), stride=2)
    expected_gx = np.zeros((5, 5))
    expected_gx[:3, :3] = 1.0
    np.testing.assert_array_equal(gx, as4d(expected_gx))
    np.testing.assert_array_equal(gw, as4d([[0, 1, 2], [5, 6, 7], [10, 11, 12]]))
    np.testing.assert_array_equal(gb, [1.0])


def test_backward_flip():
    # with flip, y00 = 4*x00 + 3*x01 + 2*x10 + 1*x11
    gy = as4d([[1, 0], [0, 0]])
    gx, gw, gb = conv2d_backward_ref(gy, as4d(X3), as4d(W2), flip=True)
    np.testing.assert_array_equal(gx, as4d([[4, 3, 0], [2, 1, 0], [0, 0, 0]]))
    np.testing.assert_array_equal(gw, as4d([[5, 4], [2, 1]]))
    np.testing.assert_array_equal(gb, [1.0])


def test_backward_padding():
    gy = as4d(np.arange(16.0).reshape(4, 4))
    x = as4d([[1, 2], [3, 4]])
    gx, gw, gb = conv2d_backward_ref(gy, x, as4d([[2.0]]), padding=1)
    # gx = 2 * gy[1:3, 1:3]; gw = 1*5 + 2*6 + 3*9 + 4*10; gb = 0 + 1 + ... + 15
    np.testing.assert_array_equal(gx, as4d([[10, 12], [18, 20]]))
    np.testing.assert_array_equal(gw, as4d([[84]]))
    np.testing.assert_array_equal(gb, [120.0])


def test_backward_groups():
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1, 1)
    w = np.array([[1.0, 10.0], [100.0, 1000.0]]).reshape(2, 2, 1, 1)
    gy = np.array([1.0, 2.0]).reshape(1, 2, 1, 1)
    gx, gw, gb = conv2d_backward_ref(gy, x, w, groups=2)
    # gx[c] = gy[group of c] * w[group, c within group]
    np.testing.assert_array_equal(gx.ravel(), [1.0, 10.0, 200.0, 2000.0])
    np.testing.assert_array_equal(gw.ravel(), [1.0, 2.0, 6.0, 8.0])
    np.testing.assert_array_equal(gb, [1.0, 2.0])


def test_backward_empty_batch():
    gx, gw, gb = conv2d_backward_ref(
        np.zeros((0, 3, 5, 5)), np.zeros((0, 2, 5, 5)), np.ones((3, 2, 3, 3)), padding=1
    )
    assert gx.shape == (0, 2, 5, 5)
    np.testing.assert_array_equal(gw, np.zeros((3, 2, 3, 3)))
    np.testing.assert_array_equal(gb, np.zeros(3))


# --------------------------------------------------------------------------- #
# backward against central differences of the reference forward
# --------------------------------------------------------------------------- #

FD_CASES = [
    # x shape, w shape, stride, padding, dilation, groups, flip
    ((2, 2, 5, 4), (3, 2, 3, 2), 1, 0, 1, 1, False),
    ((1, 2, 6, 5), (2, 2, 3, 3), 2, 1, 1, 1, True),
    ((2, 4, 5, 6), (4, 2, 2, 3), (2, 1), ((0, 2), (1, 0)), (1, 2), 2, False),
    ((1, 3, 5, 5), (3, 1, 3, 3), 1, "same", 2, 3, True),
    ((1, 2, 4, 5), (2, 2, 2, 2), 2, "same", 1, 1, False),
    ((1, 1, 3, 3), (2, 1, 2, 2), 1, "full", 1, 1, False),
]


@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups, flip", FD_CASES)
def test_backward_ref_finite_differences(rng, xs, ws, stride, padding, dilation, groups, flip):
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, flip=flip)
    gy = rng.standard_normal(conv2d_ref(x, w, b, **kw).shape)

    def loss(x_, w_, b_):
        return float(np.sum(gy * conv2d_ref(x_, w_, b_, **kw)))

    eps = 1e-6
    num_gx = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[idx] = eps
        num_gx[idx] = (loss(x + d, w, b) - loss(x - d, w, b)) / (2 * eps)
    num_gw = np.zeros_like(w)
    for idx in np.ndindex(w.shape):
        d = np.zeros_like(w)
        d[idx] = eps
        num_gw[idx] = (loss(x, w + d, b) - loss(x, w - d, b)) / (2 * eps)
    num_gb = np.zeros_like(b)
    for idx in np.ndindex(b.shape):
        d = np.zeros_like(b)
        d[idx] = eps
        num_gb[idx] = (loss(x, w, b + d) - loss(x, w, b - d)) / (2 * eps)

    gx, gw, gb = conv2d_backward_ref(gy, x, w, **kw)
    np.testing.assert_allclose(gx, num_gx, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gw, num_gw, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gb, num_gb, rtol=1e-6, atol=1e-6)
