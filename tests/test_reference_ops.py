"""Checks of the NumPy references for transposed convolution and pooling
(tests/reference_ops.py).

The expected numbers are worked out by hand, in the comments next to them,
and written out literally; they are not produced by running any code.
"""

import math

import numpy as np
import pytest

from reference_ops import (
    adaptive_avg_pool2d_backward_ref,
    adaptive_avg_pool2d_ref,
    avg_pool2d_backward_ref,
    avg_pool2d_ref,
    conv_transpose2d_backward_ref,
    conv_transpose2d_ref,
    lp_pool2d_backward_ref,
    lp_pool2d_ref,
    max_pool2d_backward_ref,
    max_pool2d_ref,
    max_unpool2d_output_hw_ref,
    max_unpool2d_ref,
    pool_output_size_ref,
)

X2 = np.array([[1.0, 2.0], [3.0, 4.0]])
W2 = np.array([[1.0, 2.0], [3.0, 4.0]])


def as4d(a):
    """(H, W) -> (1, 1, H, W)."""
    return np.asarray(a, dtype=np.float64)[None, None]


# --------------------------------------------------------------------------- #
# transposed convolution
# --------------------------------------------------------------------------- #

# stride 1: y[a, b] = sum x[i, j] * w[a - i, b - j]
#   y00 = 1*1 = 1            y01 = 1*2 + 2*1 = 4             y02 = 2*2 = 4
#   y10 = 1*3 + 3*1 = 6      y11 = 1*4 + 2*3 + 3*2 + 4*1 = 20 y12 = 2*4 + 4*2 = 16
#   y20 = 3*3 = 9            y21 = 3*4 + 4*3 = 24            y22 = 4*4 = 16
FULL_3X3 = [[1, 4, 4], [6, 20, 16], [9, 24, 16]]


def test_transpose_stride_1_is_full_convolution():
    np.testing.assert_array_equal(conv_transpose2d_ref(as4d(X2), as4d(W2)), as4d(FULL_3X3))


def test_transpose_padding_crops():
    np.testing.assert_array_equal(conv_transpose2d_ref(as4d(X2), as4d(W2), padding=1), as4d([[20]]))
    # top 0 / bottom 1 rows, left 1 / right 0 columns of FULL_3X3
    y = conv_transpose2d_ref(as4d(X2), as4d(W2), padding=((0, 1), (1, 0)))
    np.testing.assert_array_equal(y, as4d([[4, 4], [20, 16]]))


def test_transpose_stride_2_ones_kernel_repeats_blocks():
    y = conv_transpose2d_ref(as4d(X2), as4d(np.ones((2, 2))), stride=2)
    expected = [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    np.testing.assert_array_equal(y, as4d(expected))


def test_transpose_output_padding_adds_zero_rows():
    # 1x1 kernel, stride 2: pixels land on even positions of a 3x3 output;
    # output_padding (1, 1) appends one zero row and column
    y = conv_transpose2d_ref(as4d(X2), as4d([[1.0]]), stride=2, output_padding=1)
    expected = [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]
    np.testing.assert_array_equal(y, as4d(expected))
    # output_size (3, 4) is output_padding (0, 1)
    y = conv_transpose2d_ref(as4d(X2), as4d([[1.0]]), stride=2, output_size=(3, 4))
    np.testing.assert_array_equal(y, as4d([[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0]]))


def test_transpose_dilation():
    # x = [1, 2], w = [1, 2] with dilation 2: x0 lands at 0 and 2, x1 at 1 and 3
    # y = [1*1, 2*1, 1*2, 2*2] = [1, 2, 2, 4]
    y = conv_transpose2d_ref(as4d([[1, 2]]), as4d([[1, 2]]), dilation=2)
    np.testing.assert_array_equal(y, as4d([[1, 2, 2, 4]]))


def test_transpose_groups_and_bias():
    x = np.array([2.0, 3.0]).reshape(1, 2, 1, 1)
    # groups 2, w (C=2, K/G=2): channel 0 -> outputs 0, 1; channel 1 -> outputs 2, 3
    w = np.array([[1.0, 10.0], [100.0, 1000.0]]).reshape(2, 2, 1, 1)
    y = conv_transpose2d_ref(x, w, b=[1.0, 2.0, 3.0, 4.0], groups=2)
    np.testing.assert_array_equal(y.ravel(), [2 + 1, 20 + 2, 300 + 3, 3000 + 4])
    # groups 1: every input channel reaches every output channel
    y = conv_transpose2d_ref(x, w)
    np.testing.assert_array_equal(y.ravel(), [2 * 1 + 3 * 100, 2 * 10 + 3 * 1000])


def test_transpose_backward_ones():
    # gy = ones (3x3): each x pixel reaches all 4 taps -> gx = sum(w) = 10;
    # gw[a, b] = sum_ij x[i, j] * gy[i + a, j + b] = sum(x) = 10; gb = 9
    gx, gw, gb = conv_transpose2d_backward_ref(np.ones((1, 1, 3, 3)), as4d(X2), as4d(W2))
    np.testing.assert_array_equal(gx, np.full((1, 1, 2, 2), 10.0))
    np.testing.assert_array_equal(gw, np.full((1, 1, 2, 2), 10.0))
    np.testing.assert_array_equal(gb, [9.0])


def test_transpose_backward_single_pixel():
    # gy = e_(1,1): x[i, j] reaches (1, 1) through tap (1 - i, 1 - j)
    # gx[i, j] = w[1 - i, 1 - j] = [[4, 3], [2, 1]]; gw[a, b] = x[1 - a, 1 - b]
    gy = np.zeros((1, 1, 3, 3))
    gy[0, 0, 1, 1] = 1.0
    gx, gw, gb = conv_transpose2d_backward_ref(gy, as4d(X2), as4d(W2))
    np.testing.assert_array_equal(gx, as4d([[4, 3], [2, 1]]))
    np.testing.assert_array_equal(gw, as4d([[4, 3], [2, 1]]))
    np.testing.assert_array_equal(gb, [1.0])


def test_transpose_backward_with_padding():
    # padding 1 keeps only y11 = 1*4 + 2*3 + 3*2 + 4*1; with gy = [[5]]:
    # gx[i, j] = 5 * w[1 - i, 1 - j], gw[a, b] = 5 * x[1 - a, 1 - b]
    gx, gw, gb = conv_transpose2d_backward_ref(as4d([[5.0]]), as4d(X2), as4d(W2), padding=1)
    np.testing.assert_array_equal(gx, as4d([[20, 15], [10, 5]]))
    np.testing.assert_array_equal(gw, as4d([[20, 15], [10, 5]]))
    np.testing.assert_array_equal(gb, [5.0])


# --------------------------------------------------------------------------- #
# pooling output sizes
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "size, k, s, p, d, ceil_mode, expected",
    [
        (4, 2, 2, 0, 1, False, 2),
        (5, 2, 2, 0, 1, False, 2),
        (5, 2, 2, 0, 1, True, 3),      # (5 - 2) / 2 = 1.5 -> 2, + 1
        (4, 3, 2, 1, 1, False, 2),     # (4 + 2 - 3) / 2 = 1.5 -> 1, + 1
        (4, 3, 2, 1, 1, True, 3),      # last window starts at 3 < 4 + 1: kept
        (5, 2, 2, 1, 1, True, 3),      # ceil gives 4, but window 3 would start at 5, in the padding
        (5, 2, 1, 0, 2, False, 3),     # span 3
        (3, 3, 1, 0, 2, False, -1),    # span 5 > 3
    ],
)
def test_pool_output_size_ref(size, k, s, p, d, ceil_mode, expected):
    assert pool_output_size_ref(size, k, s, p, d, ceil_mode) == expected


# --------------------------------------------------------------------------- #
# max pooling
# --------------------------------------------------------------------------- #


def test_max_pool_2x2():
    x = np.arange(16.0).reshape(4, 4)
    y, idx = max_pool2d_ref(as4d(x), 2)
    np.testing.assert_array_equal(y, as4d([[5, 7], [13, 15]]))
    np.testing.assert_array_equal(idx, [[[[5, 7], [13, 15]]]])


def test_max_pool_ties_keep_first():
    y, idx = max_pool2d_ref(as4d([[1, 3], [3, 2]]), 2)
    assert y.item() == 3 and idx.item() == 1
    y, idx = max_pool2d_ref(as4d(np.full((3, 3), 7.0)), 2, stride=1)
    np.testing.assert_array_equal(idx, [[[[0, 1], [3, 4]]]])


def test_max_pool_nan_wins_last_nan():
    y, idx = max_pool2d_ref(as4d([[1, np.nan], [np.nan, 2]]), 2)
    assert np.isnan(y.item()) and idx.item() == 2
    # a NaN before a larger value still wins
    y, idx = max_pool2d_ref(as4d([[np.nan, 5.0]]), (1, 2))
    assert np.isnan(y.item()) and idx.item() == 0


def test_max_pool_minus_inf_window():
    # padding 1, kernel 2, stride 2 on a 2x2 plane of -inf: window (0, 0) sees only
    # pixel (0, 0), window (0, 1) sees (0, 1), window (1, 0) sees (1, 0) ...
    y, idx = max_pool2d_ref(as4d(np.full((2, 2), -np.inf)), 2, padding=1)
    np.testing.assert_array_equal(y, as4d(np.full((2, 2), -np.inf)))
    np.testing.assert_array_equal(idx, [[[[0, 1], [2, 3]]]])
    y, idx = max_pool2d_ref(as4d(np.full((3, 3), -np.inf)), 3, stride=1)
    assert y.item() == -np.inf and idx.item() == 0


def test_max_pool_ceil_mode_and_drop():
    # W = 4, k 3, s 2, p 1, ceil: windows start at -1, 1, 3:
    # [pad, 1, 2] -> 2 (idx 1), [2, 3, 4] -> 4 (idx 3), [4, pad, past] -> 4 (idx 3)
    x = as4d([[1, 2, 3, 4]])
    y, idx = max_pool2d_ref(x, (1, 3), stride=(1, 2), padding=(0, 1), ceil_mode=True)
    np.testing.assert_array_equal(y, as4d([[2, 4, 4]]))
    np.testing.assert_array_equal(idx, [[[[1, 3, 3]]]])
    y, _ = max_pool2d_ref(x, (1, 3), stride=(1, 2), padding=(0, 1))
    np.testing.assert_array_equal(y, as4d([[2, 4]]))
    # W = 5, k 2, s 2, p 1: ceil would add a window starting at 5 (in the padding): dropped
    y, idx = max_pool2d_ref(as4d([[1, 2, 3, 4, 5]]), (1, 2), (1, 2), (0, 1), ceil_mode=True)
    np.testing.assert_array_equal(y, as4d([[1, 3, 5]]))
    np.testing.assert_array_equal(idx, [[[[0, 2, 4]]]])


def test_max_pool_dilation():
    # taps 0 and 2 apart: [4, 2] -> 4, [3, 1] -> 3, [2, 0] -> 2
    y, idx = max_pool2d_ref(as4d([[4, 3, 2, 1, 0]]), (1, 2), stride=1, dilation=(1, 2))
    np.testing.assert_array_equal(y, as4d([[4, 3, 2]]))
    np.testing.assert_array_equal(idx, [[[[0, 1, 2]]]])


def test_max_pool_only_padding_raises():
    # W = 1, k 2, p 1, d 2: taps at -1 and 1, both outside
    with pytest.raises(ValueError, match="only padding"):
        max_pool2d_ref(as4d([[1.0]]), (1, 2), stride=1, padding=(0, 1), dilation=(1, 2))


def test_max_pool_backward_and_unpool():
    gy = as4d([[1.0, 2.0], [3.0, 4.0]])
    idx = np.array([[[[0, 0], [5, 3]]]])
    # idx 0 twice: 1 + 2 = 3 at (0, 0); 3 at (1, 2); 4 at (1, 0) on a 2x3 plane
    gx = max_pool2d_backward_ref(gy, idx, (1, 1, 2, 3))
    np.testing.assert_array_equal(gx, as4d([[3, 0, 0], [4, 0, 3]]))
    # unpool: the later duplicate (2.0) overwrites the earlier (1.0)
    out = max_unpool2d_ref(gy, idx, (2, 3))
    np.testing.assert_array_equal(out, as4d([[2, 0, 0], [4, 0, 3]]))
    assert max_unpool2d_output_hw_ref((2, 3), 2) == (4, 6)
    assert max_unpool2d_output_hw_ref((3, 3), 3, stride=2, padding=1) == (5, 5)


# --------------------------------------------------------------------------- #
# average pooling
# --------------------------------------------------------------------------- #

# W = 6, k 3, s 2, p 1, ceil: windows start at -1, 1, 3, 5
#   [pad, 1, 2] sum 3, [2, 3, 4] sum 9, [4, 5, 6] sum 15, [6, pad, past] sum 6
#   divisors with padding: 3, 3, 3, 2 (the past-the-padding tap is not counted)
#   divisors without padding: 2, 3, 3, 1
X6 = as4d([[1, 2, 3, 4, 5, 6]])
AVG6 = dict(kernel_size=(1, 3), stride=(1, 2), padding=(0, 1), ceil_mode=True)


def test_avg_pool_2x2():
    y = avg_pool2d_ref(as4d(np.arange(16.0).reshape(4, 4)), 2)
    np.testing.assert_array_equal(y, as4d([[2.5, 4.5], [10.5, 12.5]]))


def test_avg_pool_ceil_mode_divisors():
    np.testing.assert_array_equal(avg_pool2d_ref(X6, **AVG6), as4d([[1, 3, 5, 3]]))
    np.testing.assert_array_equal(
        avg_pool2d_ref(X6, **AVG6, count_include_pad=False), as4d([[1.5, 3, 5, 6]])
    )
    np.testing.assert_array_equal(
        avg_pool2d_ref(X6, **AVG6, divisor_override=2), as4d([[1.5, 4.5, 7.5, 3]])
    )


def test_avg_pool_backward_ceil_mode():
    # gy = 1: pixel 0 in window 0 (1/3); 1 in 0, 1 (2/3); 2 in 1; 3 in 1, 2;
    # 4 in 2; 5 in 2 (1/3) and 3 (1/2)
    gx = avg_pool2d_backward_ref(np.ones((1, 1, 1, 4)), (1, 1, 1, 6), **AVG6)
    np.testing.assert_allclose(gx, as4d([[1 / 3, 2 / 3, 1 / 3, 2 / 3, 1 / 3, 5 / 6]]),
                               rtol=1e-15)
    gx = avg_pool2d_backward_ref(np.ones((1, 1, 1, 4)), (1, 1, 1, 6), **AVG6,
                                 count_include_pad=False)
    np.testing.assert_allclose(gx, as4d([[1 / 2, 1 / 2 + 1 / 3, 1 / 3, 2 / 3, 1 / 3, 1 / 3 + 1]]),
                               rtol=1e-15)


def test_avg_pool_padding_2d():
    # 2x2 plane of ones, k 2, p 1: every window sees one pixel, divisor 4 (or 1)
    y = avg_pool2d_ref(as4d(np.ones((2, 2))), 2, padding=1)
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), 0.25))
    y = avg_pool2d_ref(as4d(np.ones((2, 2))), 2, padding=1, count_include_pad=False)
    np.testing.assert_array_equal(y, np.ones((1, 1, 2, 2)))


# --------------------------------------------------------------------------- #
# Lp pooling
# --------------------------------------------------------------------------- #


def test_lp_pool_values():
    assert lp_pool2d_ref(as4d([[3, 4]]), 2, (1, 2)).item() == 5.0
    assert lp_pool2d_ref(as4d([[-3, 4]]), 1, (1, 2)).item() == 7.0
    assert lp_pool2d_ref(as4d([[-3, 4]]), 2, (1, 2)).item() == 5.0


def test_lp_pool_ceil_mode_overhang():
    # W = 3, k 2, s 2, ceil: windows [3, 4] -> 5 and [12, past] -> sqrt(144 * 2 / 1)
    y = lp_pool2d_ref(as4d([[3, 4, 12]]), 2, (1, 2), ceil_mode=True)
    np.testing.assert_allclose(y, as4d([[5, 12 * math.sqrt(2)]]), rtol=1e-15)


def test_lp_pool_backward():
    # p = 2: gx = gy * x / y -> [3/5, 4/5]; the overhanging window y = sqrt(2) |x|
    # has gradient sqrt(2)
    gx = lp_pool2d_backward_ref(np.ones((1, 1, 1, 2)), as4d([[3, 4, 12]]), 2, (1, 2),
                                ceil_mode=True)
    np.testing.assert_allclose(gx, as4d([[0.6, 0.8, math.sqrt(2)]]), rtol=1e-15)
    # p = 1: gx = gy * sign(x)
    gx = lp_pool2d_backward_ref(as4d([[2.0]]), as4d([[-3, 4]]), 1, (1, 2))
    np.testing.assert_array_equal(gx, as4d([[-2, 2]]))
    # y == 0: zero gradient
    gx = lp_pool2d_backward_ref(as4d([[1.0]]), as4d([[0, 0]]), 2, (1, 2))
    np.testing.assert_array_equal(gx, as4d([[0, 0]]))


# --------------------------------------------------------------------------- #
# adaptive average pooling
# --------------------------------------------------------------------------- #


def test_adaptive_avg_pool_windows():
    # W = 5 -> 3: [0, 2), [1, 4), [3, 5): means 0.5, 2, 3.5
    y = adaptive_avg_pool2d_ref(as4d([[0, 1, 2, 3, 4]]), (1, 3))
    np.testing.assert_array_equal(y, as4d([[0.5, 2, 3.5]]))
    # W = 2 -> 3: [0, 1), [0, 2), [1, 2)
    y = adaptive_avg_pool2d_ref(as4d([[2, 6]]), (None, 3))
    np.testing.assert_array_equal(y, as4d([[2, 4, 6]]))
    y = adaptive_avg_pool2d_ref(as4d(np.arange(16.0).reshape(4, 4)), 2)
    np.testing.assert_array_equal(y, as4d([[2.5, 4.5], [10.5, 12.5]]))


def test_adaptive_avg_pool_backward():
    # W = 5 -> 3, gy = 1: [1/2, 1/2 + 1/3, 1/3, 1/3 + 1/2, 1/2]
    gx = adaptive_avg_pool2d_backward_ref(np.ones((1, 1, 1, 3)), (1, 1, 1, 5))
    np.testing.assert_allclose(gx, as4d([[0.5, 5 / 6, 1 / 3, 5 / 6, 0.5]]), rtol=1e-15)
