"""Tests for fastconv's pooling operations and their backward functions.

max_pool2d (+ backward, max_unpool2d), avg_pool2d, lp_pool2d, adaptive and
global average pooling are checked against the plain NumPy float64
references in tests/reference_ops.py, against PyTorch where it is installed,
and (average, Lp, adaptive) by finite differences in float64. Max pooling
selects values, so its outputs and indices are compared exactly.
"""

import random
import threading

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastconv as fc

from reference import pair_ref
from reference_ops import (
    adaptive_avg_pool2d_backward_ref,
    adaptive_avg_pool2d_ref,
    avg_pool2d_backward_ref,
    avg_pool2d_ref,
    lp_pool2d_backward_ref,
    lp_pool2d_ref,
    max_pool2d_backward_ref,
    max_pool2d_ref,
    max_unpool2d_output_hw_ref,
    max_unpool2d_ref,
    pool_output_size_ref,
)

# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def _stride_pair(kernel, stride):
    return pair_ref(kernel) if stride is None else pair_ref(stride)


def pool_out_hw(in_hw, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """(OH, OW) by PyTorch's rule (entries may be < 1); keywords as max_pool2d's."""
    k, s = pair_ref(kernel_size), _stride_pair(kernel_size, stride)
    p, d = pair_ref(padding), pair_ref(dilation)
    return tuple(pool_output_size_ref(in_hw[i], k[i], s[i], p[i], d[i], ceil_mode)
                 for i in range(2))


def max_geometry_ok(in_hw, **pool):
    """True when max_pool2d_ref accepts the geometry (no empty output, no padding-only window)."""
    if min(pool_out_hw(in_hw, **pool)) < 1:
        return False
    try:
        max_pool2d_ref(np.zeros((1, 1) + tuple(in_hw)), **pool)
    except ValueError:
        return False
    return True


def assert_max_equal(y, idx, y_ref, idx_ref):
    """Max pooling picks input values: equal bit for bit (NaN where NaN), same indices."""
    assert idx.dtype == np.int64
    assert y.shape == y_ref.shape and idx.shape == idx_ref.shape
    np.testing.assert_array_equal(y.astype(np.float64), y_ref)
    np.testing.assert_array_equal(idx, idx_ref)


def check_max(x, pool, rng, assert_close):
    """max_pool2d (values, indices) and max_pool2d_backward against the reference."""
    x = np.asarray(x)
    y, idx = fc.max_pool2d(x, **pool, return_indices=True)
    assert y.dtype == x.dtype
    y_ref, idx_ref = max_pool2d_ref(x, **pool)
    assert_max_equal(y, idx, y_ref, idx_ref)
    np.testing.assert_array_equal(fc.max_pool2d(x, **pool), y)
    gy = rng.standard_normal(y.shape).astype(x.dtype)
    gx = fc.max_pool2d_backward(gy, idx, x.shape)
    assert gx.dtype == x.dtype and gx.shape == x.shape
    assert_close(gx, max_pool2d_backward_ref(gy, idx_ref, x.shape), err_msg="gx:")
    return y, idx


def check_avg(x, pool, rng, assert_close):
    x = np.asarray(x)
    y = fc.avg_pool2d(x, **pool)
    assert y.dtype == x.dtype
    assert_close(y, avg_pool2d_ref(x, **pool), err_msg="y:")
    gy = rng.standard_normal(y.shape).astype(x.dtype)
    gx = fc.avg_pool2d_backward(gy, x.shape, **pool)
    assert gx.dtype == x.dtype and gx.shape == x.shape
    assert_close(gx, avg_pool2d_backward_ref(gy, x.shape, **pool), err_msg="gx:")


def check_lp(x, p, pool, rng, assert_close):
    x = np.asarray(x)
    y = fc.lp_pool2d(x, p, **pool)
    assert y.dtype == x.dtype
    assert_close(y, lp_pool2d_ref(x, p, **pool), err_msg="y:")
    gy = rng.standard_normal(y.shape).astype(x.dtype)
    gx = fc.lp_pool2d_backward(gy, x, y, p, **pool)
    assert gx.dtype == x.dtype and gx.shape == x.shape
    # the reference uses fastconv's y, as fastconv's backward does
    assert_close(gx, lp_pool2d_backward_ref(gy, x, p, **pool, y=y), err_msg="gx:")


def max_pool_input(rng, shape, dtype, mode):
    """Inputs for max-pool sweeps: "normal" values, "ties" (few distinct values, so the
    first maximum must win) or "special" (ties, -inf windows and NaN)."""
    if mode == "normal":
        return rng.standard_normal(shape).astype(dtype)
    if mode == "ties":
        return rng.integers(-2, 3, shape).astype(dtype)
    values = np.array([-np.inf, -np.inf, -np.inf, -1.0, 0.0, 1.0, np.nan])
    return rng.choice(values, shape).astype(dtype)


def distinct_values(rng, shape, dtype):
    """Random values without ties (a shuffled range), so argmax is unambiguous."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) - size / 2).astype(dtype)


# --------------------------------------------------------------------------- #
# max pooling: matrix against the reference
# --------------------------------------------------------------------------- #

KERNELS = [(2, 2), (3, 3), (3, 2), (1, 3), (2, 4)]
SIZES = [(5, 6), (7, 5), (6, 6), (4, 7)]
STRIDES = [None, 1, 2, (1, 2)]
PADS = ["none", "half", "one-axis"]


def _padding(kind, kernel):
    kh, kw = kernel
    if kind == "none":
        return 0
    if kind == "half":
        return (kh // 2, kw // 2)
    return (0, kw // 2)


def _build_max_matrix():
    cases = []
    for stride in STRIDES:
        for pad in PADS:
            for dilation in [1, 2, (1, 2)]:
                for ceil_mode in [False, True]:
                    i = len(cases)
                    kernel = KERNELS[i % len(KERNELS)]
                    size = SIZES[(i // 3) % len(SIZES)]
                    pool = dict(kernel_size=kernel, stride=stride, padding=_padding(pad, kernel),
                                dilation=dilation, ceil_mode=ceil_mode)
                    if max_geometry_ok(size, **pool):
                        cases.append(dict(size=size, pool=pool))
    return cases


def _pool_id(case):
    parts = [f"{case['size'][0]}x{case['size'][1]}"]
    for key, value in case["pool"].items():
        parts.append(f"{key.split('_')[0]}{value}".replace(" ", ""))
    return "-".join(parts)


MAX_MATRIX = _build_max_matrix()


@pytest.mark.parametrize("case", MAX_MATRIX, ids=[_pool_id(c) for c in MAX_MATRIX])
def test_max_pool_matrix(case, dtype, rng, assert_close):
    x = rng.standard_normal((2, 3) + case["size"]).astype(dtype)
    check_max(x, case["pool"], rng, assert_close)


def test_max_matrix_is_not_trivial():
    assert len(MAX_MATRIX) >= 60


@st.composite
def pool_geometries(draw, dilation=True, padding=True, max_hw=8):
    """((N, C, H, W), pool keywords) with padding within PyTorch's limit."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    kernel = kh if kh == kw and draw(st.booleans()) else (kh, kw)
    stride = draw(st.one_of(st.none(), st.integers(1, 3),
                            st.tuples(st.integers(1, 3), st.integers(1, 3))))
    pool = dict(kernel_size=kernel, stride=stride, ceil_mode=draw(st.booleans()))
    if padding:
        pool["padding"] = draw(st.tuples(st.integers(0, kh // 2), st.integers(0, kw // 2)))
    if dilation:
        pool["dilation"] = draw(st.one_of(st.integers(1, 3),
                                          st.tuples(st.integers(1, 3), st.integers(1, 3))))
    n, c = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    return (n, c, h, w), pool


VALUE_MODES = st.sampled_from(["normal", "ties", "special"])


@settings(max_examples=120, deadline=None)
@given(geometry=pool_geometries(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1), mode=VALUE_MODES)
def test_max_pool_hypothesis(geometry, dtype, seed, mode, assert_close):
    shape, pool = geometry
    assume(min(pool_out_hw(shape[2:], **pool)) >= 1)
    rng = np.random.default_rng(seed)
    x = max_pool_input(rng, shape, dtype, mode)
    if not max_geometry_ok(shape[2:], **pool):
        with pytest.raises(ValueError, match="only padding"):
            fc.max_pool2d(x, **pool)
        return
    check_max(x, pool, rng, assert_close)


# --------------------------------------------------------------------------- #
# max pooling: corners
# --------------------------------------------------------------------------- #


def as4d(a, dtype=np.float64):
    return np.asarray(a, dtype=dtype)[None, None]


def test_max_pool_docstring_example():
    y, idx = fc.max_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2, return_indices=True)
    np.testing.assert_array_equal(y, as4d([[5, 7], [13, 15]]))
    np.testing.assert_array_equal(idx, [[[[5, 7], [13, 15]]]])


@pytest.mark.parametrize("width", [16, 17, 34, 47])
@pytest.mark.parametrize("mode", ["ties", "special"])
def test_max_pool_2x2_vectors_and_tails(width, mode, dtype, rng, assert_close):
    """2x2 windows at stride 2 run whole vectors of windows (8 float, 4 double) and a
    scalar tail: ties, NaN and -inf in both, against the reference bit for bit."""
    x = max_pool_input(rng, (2, 3, 6, width), dtype, mode)
    x[0, 0, 0, :4] = [-0.0, 0.0, 0.0, -0.0]  # a tie of zeros of both signs: the first
    check_max(x, dict(kernel_size=2), rng, assert_close)


# interior runs of 7 (under one vector), 8, 9, 16, 17 and 33 windows
@pytest.mark.parametrize("width", [16, 17, 19, 20, 35, 36, 68])
@pytest.mark.parametrize("kernel, padding, dilation", [
    ((3, 3), (1, 1), 1), ((3, 3), (0, 0), 1), ((1, 3), (0, 1), 1), ((2, 3), (1, 0), 1),
    ((5, 3), (2, 1), (2, 1)), ((3, 3), (1, 1), (1, 2))])
@pytest.mark.parametrize("mode", ["ties", "special"])
def test_max_pool_3_wide_stride_2_vectors(width, kernel, padding, dilation, mode, dtype, rng,
                                          assert_close):
    """Windows 3 columns wide at stride 2 run vectors of windows (8 float, 4 double) over
    their interior runs, any number of rows, the last vector overlapping: ties, NaN and
    -inf against the reference bit for bit, zeros' signs included, values only and with
    indices (a dilated row, (1, 2), takes the scalar loop)."""
    x = max_pool_input(rng, (2, 2, 9, width), dtype, mode)
    x[0, 0, :3, 4:7] = -0.0
    x[0, 0, 1, 5] = 0.0  # a tie of zeros of both signs: the first in scan order
    pool = dict(kernel_size=kernel, stride=2, padding=padding, dilation=dilation)
    y, _ = check_max(x, pool, rng, assert_close)
    y_ref, _ = max_pool2d_ref(x, **pool)
    np.testing.assert_array_equal(np.signbit(y), np.signbit(y_ref))
    np.testing.assert_array_equal(np.signbit(fc.max_pool2d(x, **pool)), np.signbit(y_ref))


def test_max_pool_ties_first_in_scan_order(dtype):
    y, idx = fc.max_pool2d(as4d([[1, 3], [3, 2]], dtype), 2, return_indices=True)
    assert y.item() == 3 and idx.item() == 1
    x = as4d(np.full((4, 5), 7.0), dtype)
    y, idx = fc.max_pool2d(x, 3, stride=1, padding=1, return_indices=True)
    y_ref, idx_ref = max_pool2d_ref(x, 3, stride=1, padding=1)
    assert_max_equal(y, idx, y_ref, idx_ref)
    # each window's first in-bounds tap: row max(i - 1, 0), column max(j - 1, 0)
    rows = np.maximum(np.arange(4) - 1, 0)[:, None]
    cols = np.maximum(np.arange(5) - 1, 0)[None, :]
    np.testing.assert_array_equal(idx[0, 0], rows * 5 + cols)


def test_max_pool_nan_wins(dtype):
    nan = np.nan
    x = as4d([[1, nan, 5, 2], [nan, 2, 1, 9]], dtype)
    y, idx = fc.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y[0, 0, 0, 0])
    assert idx[0, 0, 0, 0] == 4  # the last NaN of the window, as PyTorch
    assert y[0, 0, 0, 1] == 9 and idx[0, 0, 0, 1] == 7
    # a NaN scanned before larger values still wins
    y, idx = fc.max_pool2d(as4d([[nan, 5.0, 6.0]], dtype), (1, 3), return_indices=True)
    assert np.isnan(y.item()) and idx.item() == 0
    y_ref, idx_ref = max_pool2d_ref(x, 2)
    y, idx = fc.max_pool2d(x, 2, return_indices=True)
    assert_max_equal(y, idx, y_ref, idx_ref)


def test_max_pool_minus_inf_windows(dtype):
    x = as4d(np.full((3, 4), -np.inf), dtype)
    y, idx = fc.max_pool2d(x, 2, padding=1, return_indices=True)
    assert np.all(y == -np.inf)
    y_ref, idx_ref = max_pool2d_ref(x, 2, padding=1)
    assert_max_equal(y, idx, y_ref, idx_ref)
    assert np.all((idx >= 0) & (idx < 12))
    # the indices are valid for the backward pass
    gx = fc.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    assert gx.sum() == y.size


def test_max_pool_ceil_mode_drops_window_in_padding():
    x = as4d([[1, 2, 3, 4, 5]])
    # ceil((5 + 2 - 2) / 2) + 1 = 4, but window 3 would start at 5, in the padding
    y, idx = fc.max_pool2d(x, (1, 2), stride=(1, 2), padding=(0, 1), ceil_mode=True,
                           return_indices=True)
    np.testing.assert_array_equal(y, as4d([[1, 3, 5]]))
    np.testing.assert_array_equal(idx, [[[[0, 2, 4]]]])
    # kept when it starts inside: W = 4, k 3, s 2, p 1 -> 3 windows with ceil, 2 without
    x = as4d([[1, 2, 3, 4]])
    y = fc.max_pool2d(x, (1, 3), stride=(1, 2), padding=(0, 1), ceil_mode=True)
    np.testing.assert_array_equal(y, as4d([[2, 4, 4]]))
    assert fc.max_pool2d(x, (1, 3), stride=(1, 2), padding=(0, 1)).shape == (1, 1, 1, 2)


@pytest.mark.parametrize(
    "size, pool",
    [
        ((1, 1), dict(kernel_size=(1, 2), stride=1, padding=(0, 1), dilation=(1, 2))),
        ((2, 2), dict(kernel_size=2, stride=1, padding=1, dilation=3)),
        ((3, 2), dict(kernel_size=(3, 2), stride=1, padding=(1, 1), dilation=(1, 3),
                      ceil_mode=True)),
    ],
)
def test_max_pool_window_of_only_padding_raises(size, pool):
    """fastconv's one deliberate deviation from PyTorch (which returns -inf)."""
    with pytest.raises(ValueError):
        max_pool2d_ref(np.zeros((1, 1) + size), **pool)
    with pytest.raises(ValueError, match="only padding"):
        fc.max_pool2d(np.zeros((1, 1) + size), **pool)


@pytest.mark.parametrize("kernel, padding", [(2, 2), (3, 2), ((3, 4), (1, 3)), ((1, 3), (1, 0)),
                                             (1, 1), (4, (0, 3))])
def test_max_pool_padding_limit(kernel, padding):
    x = np.ones((1, 1, 8, 8))
    with pytest.raises(ValueError, match="padding"):
        fc.max_pool2d(x, kernel, padding=padding)
    with pytest.raises(ValueError, match="padding"):
        fc.avg_pool2d(x, kernel, padding=padding)


def test_max_pool_padding_at_limit_accepted(rng, assert_close):
    x = rng.standard_normal((2, 2, 5, 6))
    check_max(x, dict(kernel_size=(3, 4), padding=(1, 2)), rng, assert_close)
    check_max(x, dict(kernel_size=(2, 5), stride=1, padding=(1, 2)), rng, assert_close)


def test_max_pool_backward_adds_repeated_indices(dtype):
    # overlapping windows (stride 1) share their maximum 9: its gradient is the sum
    x = as4d([[1, 2, 3], [4, 9, 5], [6, 7, 8]], dtype)
    y, idx = fc.max_pool2d(x, 2, stride=1, return_indices=True)
    np.testing.assert_array_equal(idx, np.full((1, 1, 2, 2), 4))
    gx = fc.max_pool2d_backward(as4d([[1, 2], [3, 4]], dtype), idx, x.shape)
    np.testing.assert_array_equal(gx, as4d([[0, 0, 0], [0, 10, 0], [0, 0, 0]]))


def test_max_pool_indices_are_int64_plane_offsets(rng):
    x = distinct_values(rng, (2, 3, 6, 7), np.float64)
    y, idx = fc.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    assert idx.dtype == np.int64
    planes = x.reshape(2, 3, -1)
    np.testing.assert_array_equal(np.take_along_axis(planes, idx.reshape(2, 3, -1), 2),
                                  y.reshape(2, 3, -1))


# --------------------------------------------------------------------------- #
# index validation (max_pool2d_backward and max_unpool2d)
# --------------------------------------------------------------------------- #


def _pooled(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    y, idx = fc.max_pool2d(x, 2, return_indices=True)  # (2, 3, 2, 2), idx in [0, 20)
    return x, y, idx


@pytest.mark.parametrize(
    "make_idx, exc",
    [
        (lambda idx: idx.astype(np.float64), TypeError),
        (lambda idx: idx.astype(np.float32), TypeError),
        (lambda idx: idx > 3, TypeError),
        (lambda idx: idx.astype(complex), TypeError),
        (lambda idx: idx[:, :, :1], ValueError),
        (lambda idx: idx[:1], ValueError),
        (lambda idx: idx.reshape(2, 3, 4), ValueError),
        (lambda idx: idx.reshape(2, 3, 4, 1), ValueError),
        (lambda idx: np.where(idx == idx.max(), -1, idx), ValueError),
        (lambda idx: np.where(idx == idx.max(), 20, idx), ValueError),
        (lambda idx: np.where(idx == idx.max(), 2**40, idx), ValueError),
        (lambda idx: np.where(idx == idx.min(), -(2**62), idx), ValueError),
        (lambda idx: np.full_like(idx, 21), ValueError),
        (lambda idx: np.where(idx == idx.max(), np.uint64(2**64 - 1), idx.astype(np.uint64)),
         ValueError),
        (lambda idx: np.where(idx == idx.max(), 2**70, idx.astype(object)), TypeError),
    ],
    ids=["float64", "float32", "bool", "complex", "short-h", "short-n", "3d", "wrong-shape",
         "negative", "plane-size", "huge", "very-negative", "all-out", "uint64-max",
         "beyond-int64"],
)
def test_max_pool_backward_rejects_bad_idx(make_idx, exc, rng):
    x, y, idx = _pooled(rng)
    bad = make_idx(idx)
    with pytest.raises(exc, match="idx"):
        fc.max_pool2d_backward(np.ones(y.shape), bad, x.shape)
    with pytest.raises(exc, match="idx"):
        fc.max_unpool2d(y, bad, 2, output_size=(4, 5))


def test_idx_checked_against_the_plane_not_the_array(rng):
    """Offsets must be < H * W of one plane, even where the whole array is larger."""
    x, y, idx = _pooled(rng)
    assert idx.max() < 20
    fc.max_pool2d_backward(np.ones(y.shape), idx, x.shape)
    with pytest.raises(ValueError, match="idx"):
        fc.max_pool2d_backward(np.ones(y.shape), np.full_like(idx, 20), x.shape)
    # the default unpool size (4, 4) is smaller than the pooled 4x5 plane
    big = np.where(idx >= 16, idx, 16)
    with pytest.raises(ValueError, match="idx"):
        fc.max_unpool2d(y, big, 2)


@pytest.mark.parametrize("idx_dtype", [np.int8, np.int16, np.int32, np.uint8, np.uint32,
                                       np.int64, np.uint64])
def test_idx_integer_dtypes_accepted(idx_dtype, rng, assert_close):
    x, y, idx = _pooled(rng)
    gy = rng.standard_normal(y.shape)
    expected = max_pool2d_backward_ref(gy, idx, x.shape)
    assert_close(fc.max_pool2d_backward(gy, idx.astype(idx_dtype), x.shape), expected)
    assert_close(fc.max_pool2d_backward(gy, idx.astype(idx_dtype).tolist(), x.shape), expected)
    fortran = np.asfortranarray(idx.astype(idx_dtype))
    assert_close(fc.max_pool2d_backward(gy, fortran, x.shape), expected)
    out = fc.max_unpool2d(y, idx.astype(idx_dtype), 2, output_size=(4, 5))
    assert_close(out, max_unpool2d_ref(y, idx, (4, 5)))


@pytest.mark.parametrize(
    "gy_shape, input_shape, exc, match",
    [
        ((2, 3, 2, 2), (2, 4, 4, 5), ValueError, "input_shape"),
        ((2, 3, 2, 2), (3, 3, 4, 5), ValueError, "input_shape"),
        ((2, 3, 2, 2), (2, 3, 20), ValueError, "input_shape"),
        ((2, 3, 2, 2), (2, 3, -4, 5), ValueError, "input_shape"),
        ((2, 3, 2, 2), 20, TypeError, "input_shape"),
        ((3, 2, 2), (2, 3, 4, 5), ValueError, "gy"),
    ],
)
def test_max_pool_backward_bad_shapes(gy_shape, input_shape, exc, match, rng):
    _, _, idx = _pooled(rng)
    with pytest.raises(exc, match=match):
        fc.max_pool2d_backward(np.ones(gy_shape), idx if len(gy_shape) == 4 else idx[0],
                               input_shape)


# --------------------------------------------------------------------------- #
# max_unpool2d
# --------------------------------------------------------------------------- #

UNPOOL_CASES = [
    ((2, 3, 4, 6), dict(kernel_size=2)),
    ((2, 3, 5, 5), dict(kernel_size=2)),  # default size 4x4 is too small for the indices
    ((1, 2, 7, 6), dict(kernel_size=3, stride=2, padding=1)),
    ((2, 2, 6, 7), dict(kernel_size=(2, 3), stride=(2, 1))),
    ((1, 3, 8, 5), dict(kernel_size=(3, 2), stride=(3, 2), padding=(1, 0))),
]


@pytest.mark.parametrize("shape, pool", UNPOOL_CASES)
def test_max_unpool_against_reference(shape, pool, dtype, rng, assert_close):
    x = distinct_values(rng, shape, dtype)
    y, idx = fc.max_pool2d(x, **pool, return_indices=True)
    default = max_unpool2d_output_hw_ref(y.shape[2:], **pool)
    s = _stride_pair(pool["kernel_size"], pool.get("stride"))
    lo = tuple(d - si + 1 for d, si in zip(default, s))
    hi = tuple(d + si - 1 for d, si in zip(default, s))
    for out_hw in {default, lo, hi, tuple(shape[2:])}:
        if min(out_hw) < 1 or idx.max() >= out_hw[0] * out_hw[1]:
            continue
        for form in (out_hw, list(out_hw), y.shape[:2] + out_hw):
            out = fc.max_unpool2d(y, idx, **pool, output_size=form)
            assert out.dtype == dtype
            assert_close(out, max_unpool2d_ref(y, idx, out_hw))
    out = fc.max_unpool2d(y, idx, **pool, output_size=shape[2:])
    # unpooling puts every maximum back where it came from
    np.testing.assert_array_equal(out[out != 0], x[out != 0])
    if idx.max() < default[0] * default[1]:
        assert_close(fc.max_unpool2d(y, idx, **pool), max_unpool2d_ref(y, idx, default))


def test_max_unpool_duplicate_index_later_value_wins():
    y = as4d([[1.0, 2.0], [3.0, 4.0]])
    idx = np.array([[[[0, 0], [5, 3]]]])
    out = fc.max_unpool2d(y, idx, (1, 2), stride=1, output_size=(2, 3))
    np.testing.assert_array_equal(out, max_unpool2d_ref(y, idx, (2, 3)))


@pytest.mark.parametrize(
    "pool, in_hw",
    [(dict(kernel_size=2), (3, 4)), (dict(kernel_size=3, stride=2, padding=1), (3, 3)),
     (dict(kernel_size=(2, 3), stride=(3, 1)), (2, 4))],
)
def test_max_unpool_output_size_range(pool, in_hw):
    y = np.ones((1, 2) + in_hw)
    idx = np.zeros((1, 2) + in_hw, dtype=np.int64)
    default = max_unpool2d_output_hw_ref(in_hw, **pool)
    s = _stride_pair(pool["kernel_size"], pool.get("stride"))
    # strictly between default - stride and default + stride, per axis
    for axis in range(2):
        for delta in range(-s[axis] + 1, s[axis]):
            size = list(default)
            size[axis] += delta
            if size[axis] < 1:
                continue
            assert fc.max_unpool2d(y, idx, **pool, output_size=size).shape[2:] == tuple(size)
        for delta in (-s[axis], s[axis], 5 * s[axis]):
            size = list(default)
            size[axis] += delta
            if size[axis] < 1:
                continue
            with pytest.raises(ValueError, match="output_size"):
                fc.max_unpool2d(y, idx, **pool, output_size=size)


@pytest.mark.parametrize(
    "output_size, exc",
    [((4,), ValueError), ((1, 4, 4), ValueError), ((0, 4), ValueError), ((4.0, 4), TypeError),
     (4, (TypeError, ValueError))],
)
def test_max_unpool_bad_output_size(output_size, exc):
    with pytest.raises(exc, match="output_size"):
        fc.max_unpool2d(np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 2), np.int64), 2,
                        output_size=output_size)


# --------------------------------------------------------------------------- #
# average pooling
# --------------------------------------------------------------------------- #


def _build_avg_matrix():
    chooser = random.Random(99)
    cases = []
    for stride in STRIDES:
        for pad in PADS:
            for ceil_mode in [False, True]:
                for count_include_pad in [True, False]:
                    for divisor_override in [None, 3]:
                        i = len(cases)
                        kernel = KERNELS[i % len(KERNELS)]
                        size = SIZES[chooser.randrange(len(SIZES))]
                        pool = dict(kernel_size=kernel, stride=stride,
                                    padding=_padding(pad, kernel), ceil_mode=ceil_mode,
                                    count_include_pad=count_include_pad,
                                    divisor_override=divisor_override)
                        if min(pool_out_hw(size, kernel, stride, pool["padding"], 1,
                                           ceil_mode)) >= 1:
                            cases.append(dict(size=size, pool=pool))
    return cases


AVG_MATRIX = _build_avg_matrix()


@pytest.mark.parametrize("case", AVG_MATRIX, ids=[_pool_id(c) for c in AVG_MATRIX])
def test_avg_pool_matrix(case, dtype, rng, assert_close):
    x = rng.standard_normal((2, 3) + case["size"]).astype(dtype)
    check_avg(x, case["pool"], rng, assert_close)


@settings(max_examples=100, deadline=None)
@given(geometry=pool_geometries(dilation=False), dtype=st.sampled_from([np.float32, np.float64]),
       count_include_pad=st.booleans(),
       divisor_override=st.one_of(st.none(), st.integers(1, 20)), seed=st.integers(0, 2**32 - 1))
def test_avg_pool_hypothesis(geometry, dtype, count_include_pad, divisor_override, seed,
                             assert_close):
    shape, pool = geometry
    assume(min(pool_out_hw(shape[2:], **pool)) >= 1)
    pool = dict(pool, count_include_pad=count_include_pad, divisor_override=divisor_override)
    rng = np.random.default_rng(seed)
    check_avg(rng.standard_normal(shape).astype(dtype), pool, rng, assert_close)


X6 = np.array([[1, 2, 3, 4, 5, 6]], dtype=np.float64)[None, None]
AVG6 = dict(kernel_size=(1, 3), stride=(1, 2), padding=(0, 1), ceil_mode=True)


def test_avg_pool_ceil_mode_with_and_without_padding_count(dtype):
    # see test_reference_ops: divisors 3, 3, 3, 2 (padding counts, overhang not)
    x = X6.astype(dtype)
    np.testing.assert_allclose(fc.avg_pool2d(x, **AVG6), [[[[1, 3, 5, 3]]]], rtol=1e-6)
    np.testing.assert_allclose(fc.avg_pool2d(x, **AVG6, count_include_pad=False),
                               [[[[1.5, 3, 5, 6]]]], rtol=1e-6)
    np.testing.assert_allclose(fc.avg_pool2d(x, **AVG6, divisor_override=2),
                               [[[[1.5, 4.5, 7.5, 3]]]], rtol=1e-6)
    gx = fc.avg_pool2d_backward(np.ones((1, 1, 1, 4), dtype), x.shape, **AVG6)
    np.testing.assert_allclose(gx, [[[[1 / 3, 2 / 3, 1 / 3, 2 / 3, 1 / 3, 5 / 6]]]], rtol=1e-6)


def test_avg_pool_docstring_example():
    np.testing.assert_array_equal(fc.avg_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2),
                                  as4d([[2.5, 4.5], [10.5, 12.5]]))


@pytest.mark.parametrize("divisor_override", [0, -(2**64), 2.5, True])
def test_avg_pool_bad_divisor_override(divisor_override):
    with pytest.raises((ValueError, TypeError), match="divisor_override"):
        fc.avg_pool2d(np.ones((1, 1, 4, 4)), 2, divisor_override=divisor_override)
    with pytest.raises((ValueError, TypeError), match="divisor_override"):
        fc.avg_pool2d_backward(np.ones((1, 1, 2, 2)), (1, 1, 4, 4), 2,
                               divisor_override=divisor_override)


@pytest.mark.parametrize(
    "gy_shape, input_shape",
    [((1, 1, 3, 2), (1, 1, 4, 4)), ((1, 2, 2, 2), (1, 1, 4, 4)), ((2, 1, 2, 2), (1, 1, 4, 4)),
     ((1, 2, 2), (1, 1, 4, 4))],
)
def test_avg_pool_backward_bad_gy(gy_shape, input_shape):
    with pytest.raises(ValueError, match="gy"):
        fc.avg_pool2d_backward(np.ones(gy_shape), input_shape, 2)


# --------------------------------------------------------------------------- #
# Lp pooling
# --------------------------------------------------------------------------- #


def _build_lp_matrix():
    cases = []
    for p in [1, 2, 3, 1.5, 4.0]:
        for stride in STRIDES:
            for ceil_mode in [False, True]:
                i = len(cases)
                kernel = KERNELS[i % len(KERNELS)]
                size = SIZES[(i // 2) % len(SIZES)]
                pool = dict(kernel_size=kernel, stride=stride, ceil_mode=ceil_mode)
                if min(pool_out_hw(size, kernel, stride, 0, 1, ceil_mode)) >= 1:
                    cases.append(dict(size=size, p=p, pool=pool))
    return cases


LP_MATRIX = _build_lp_matrix()


@pytest.mark.parametrize("case", LP_MATRIX,
                         ids=[f"p{c['p']}-" + _pool_id(c) for c in LP_MATRIX])
def test_lp_pool_matrix(case, dtype, rng, assert_close):
    x = rng.standard_normal((2, 3) + case["size"]).astype(dtype)
    check_lp(x, case["p"], case["pool"], rng, assert_close)


@settings(max_examples=80, deadline=None)
@given(geometry=pool_geometries(dilation=False, padding=False),
       p=st.sampled_from([1, 2, 3, 0.5, 1.25, 2.5, 6]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1))
def test_lp_pool_hypothesis(geometry, p, dtype, seed, assert_close):
    shape, pool = geometry
    assume(min(pool_out_hw(shape[2:], **pool)) >= 1)
    rng = np.random.default_rng(seed)
    # magnitudes kept in [0.25, 2] so that |x|^(p-1) stays tame in float32
    x = (rng.uniform(0.25, 2.0, shape) * rng.choice([-1.0, 1.0], shape)).astype(dtype)
    check_lp(x, p, pool, rng, assert_close)


def test_lp_pool_ceil_mode_scale_and_values(dtype):
    # windows [3, 4] -> 5 and [12, past] -> sqrt(144 * 2 / 1), see test_reference_ops
    x = as4d([[3, 4, 12]], dtype)
    y = fc.lp_pool2d(x, 2, (1, 2), ceil_mode=True)
    np.testing.assert_allclose(y, as4d([[5, 12 * np.sqrt(2)]]), rtol=1e-6)
    gx = fc.lp_pool2d_backward(np.ones_like(y), x, y, 2, (1, 2), ceil_mode=True)
    np.testing.assert_allclose(gx, as4d([[0.6, 0.8, np.sqrt(2)]]), rtol=1e-6)
    # odd p on negative inputs is the p-norm (|x|^p)
    assert fc.lp_pool2d(as4d([[-3, 4]], dtype), 1, (1, 2)).item() == 7
    np.testing.assert_allclose(fc.lp_pool2d(as4d([[-1, -2]], dtype), 3, (1, 2)),
                               as4d([[9 ** (1 / 3)]]), rtol=1e-6)


def test_lp_pool_zero_window_has_zero_gradient(dtype):
    x = as4d([[0, 0, 1, -2]], dtype)
    y = fc.lp_pool2d(x, 2, (1, 2))
    np.testing.assert_allclose(y, as4d([[0, np.sqrt(5)]]), rtol=1e-6)
    gx = fc.lp_pool2d_backward(np.ones_like(y), x, y, 2, (1, 2))
    assert np.all(np.isfinite(gx))
    np.testing.assert_allclose(gx, as4d([[0, 0, 1 / np.sqrt(5), -2 / np.sqrt(5)]]), rtol=1e-6)


@pytest.mark.parametrize("p, exc", [(0, ValueError), (-1, ValueError), (np.inf, ValueError),
                                    (np.nan, ValueError), ("2", TypeError), (None, TypeError),
                                    (True, TypeError)])
def test_lp_pool_bad_p(p, exc):
    with pytest.raises(exc, match=r"\bp\b"):
        fc.lp_pool2d(np.ones((1, 1, 4, 4)), p, 2)
    with pytest.raises(exc, match=r"\bp\b"):
        fc.lp_pool2d_backward(np.ones((1, 1, 2, 2)), np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)),
                              p, 2)


def test_lp_pool_backward_bad_shapes():
    x = np.ones((1, 1, 4, 4))
    with pytest.raises(ValueError, match="gy"):
        fc.lp_pool2d_backward(np.ones((1, 1, 3, 2)), x, np.ones((1, 1, 3, 2)), 2, 2)
    with pytest.raises(ValueError, match=r"\by\b"):
        fc.lp_pool2d_backward(np.ones((1, 1, 2, 2)), x, np.ones((1, 1, 2, 1)), 2, 2)


# --------------------------------------------------------------------------- #
# adaptive and global average pooling
# --------------------------------------------------------------------------- #

ADAPTIVE_CASES = [
    ((5, 6), 1), ((5, 6), 2), ((5, 6), 3), ((5, 6), (2, 5)), ((5, 6), (None, 4)),
    ((5, 6), (3, None)), ((5, 6), (None, None)), ((5, 6), (7, 9)), ((3, 2), (5, 5)),
    ((1, 1), (2, 3)), ((7, 7), 7), ((8, 4), [4, 2]),
]


@pytest.mark.parametrize("in_hw, output_size", ADAPTIVE_CASES)
def test_adaptive_avg_pool_against_reference(in_hw, output_size, dtype, rng, assert_close):
    x = rng.standard_normal((2, 3) + in_hw).astype(dtype)
    y = fc.adaptive_avg_pool2d(x, output_size)
    y_ref = adaptive_avg_pool2d_ref(x, output_size)
    assert y.dtype == dtype
    assert_close(y, y_ref)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = fc.adaptive_avg_pool2d_backward(gy, x.shape)
    assert gx.dtype == dtype
    assert_close(gx, adaptive_avg_pool2d_backward_ref(gy, x.shape))


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9),
       oh=st.one_of(st.none(), st.integers(1, 10)), ow=st.one_of(st.none(), st.integers(1, 10)),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1))
def test_adaptive_avg_pool_hypothesis(h, w, oh, ow, dtype, seed, assert_close):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, h, w)).astype(dtype)
    y = fc.adaptive_avg_pool2d(x, (oh, ow))
    assert_close(y, adaptive_avg_pool2d_ref(x, (oh, ow)))
    gy = rng.standard_normal(y.shape).astype(dtype)
    assert_close(fc.adaptive_avg_pool2d_backward(gy, x.shape),
                 adaptive_avg_pool2d_backward_ref(gy, x.shape))


def test_adaptive_divisible_sizes_equal_avg_pool(rng, assert_close):
    x = rng.standard_normal((2, 3, 6, 8))
    assert_close(fc.adaptive_avg_pool2d(x, (3, 2)), fc.avg_pool2d(x, (2, 4)).astype(np.float64))


def test_global_avg_pool(dtype, rng, assert_close):
    x = rng.standard_normal((3, 4, 5, 7)).astype(dtype)
    y = fc.global_avg_pool2d(x)
    assert y.shape == (3, 4, 1, 1) and y.dtype == dtype
    assert_close(y, x.astype(np.float64).mean(axis=(2, 3), keepdims=True))
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = fc.global_avg_pool2d_backward(gy, x.shape)
    assert gx.dtype == dtype
    assert_close(gx, np.broadcast_to(gy.astype(np.float64) / 35, x.shape))


@pytest.mark.parametrize("output_size, exc", [(0, ValueError), ((2, 0), ValueError),
                                              ((2, 2, 2), ValueError), (-1, ValueError),
                                              (2.0, TypeError), ("2", TypeError)])
def test_adaptive_bad_output_size(output_size, exc):
    with pytest.raises(exc, match="output_size"):
        fc.adaptive_avg_pool2d(np.ones((1, 1, 4, 4)), output_size)


@pytest.mark.parametrize("gy_shape, input_shape", [((1, 1, 2, 2), (1, 2, 4, 4)),
                                                   ((1, 1, 2, 2), (2, 1, 4, 4)),
                                                   ((1, 1, 2, 2), (1, 1, 0, 4)),
                                                   ((1, 1, 2, 2), (1, 1, 4))])
def test_adaptive_backward_bad_input_shape(gy_shape, input_shape):
    with pytest.raises(ValueError, match="input_shape"):
        fc.adaptive_avg_pool2d_backward(np.ones(gy_shape), input_shape)


# --------------------------------------------------------------------------- #
# finite differences (float64) of fastconv's own forwards
# --------------------------------------------------------------------------- #


def _numerical_gradient(f, a, eps=1e-5):
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        fp = f()
        a[idx] = old - eps
        fm = f()
        a[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


@pytest.mark.parametrize(
    "shape, pool",
    [
        ((2, 2, 5, 5), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
        ((1, 2, 6, 5), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1),
                            count_include_pad=False, ceil_mode=True)),
        ((1, 1, 5, 6), dict(kernel_size=(2, 4), stride=(3, 2), padding=(1, 2),
                            divisor_override=5)),
    ],
)
def test_avg_pool_finite_differences(shape, pool, rng):
    x = rng.standard_normal(shape)
    gy = rng.standard_normal(fc.avg_pool2d(x, **pool).shape)
    num = _numerical_gradient(lambda: float(np.sum(gy * fc.avg_pool2d(x, **pool))), x)
    np.testing.assert_allclose(fc.avg_pool2d_backward(gy, shape, **pool), num,
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "shape, p, pool",
    [
        ((2, 2, 5, 5), 2, dict(kernel_size=2, ceil_mode=True)),
        ((1, 2, 5, 6), 3, dict(kernel_size=(3, 2), stride=(2, 1), ceil_mode=True)),
        ((1, 1, 6, 6), 1.5, dict(kernel_size=3, stride=2)),
        ((1, 1, 4, 5), 1, dict(kernel_size=(2, 3), stride=1)),
        ((1, 1, 4, 4), 0.5, dict(kernel_size=2)),
    ],
)
def test_lp_pool_finite_differences(shape, p, pool, rng):
    x = rng.uniform(0.3, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    y = fc.lp_pool2d(x, p, **pool)
    gy = rng.standard_normal(y.shape)
    num = _numerical_gradient(lambda: float(np.sum(gy * fc.lp_pool2d(x, p, **pool))), x)
    np.testing.assert_allclose(fc.lp_pool2d_backward(gy, x, y, p, **pool), num,
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("in_hw, output_size", [((5, 6), (3, 4)), ((4, 3), (6, 5)),
                                                ((7, 5), (None, 2))])
def test_adaptive_finite_differences(in_hw, output_size, rng):
    x = rng.standard_normal((2, 2) + in_hw)
    gy = rng.standard_normal(fc.adaptive_avg_pool2d(x, output_size).shape)
    num = _numerical_gradient(
        lambda: float(np.sum(gy * fc.adaptive_avg_pool2d(x, output_size))), x)
    np.testing.assert_allclose(fc.adaptive_avg_pool2d_backward(gy, x.shape), num,
                               rtol=1e-6, atol=1e-8)


def test_max_pool_backward_is_the_reference_scatter(rng, assert_close):
    """Max pooling is piecewise linear: its gradient is the scatter to the argmax."""
    x = distinct_values(rng, (2, 3, 7, 6), np.float64)
    pool = dict(kernel_size=3, stride=(2, 1), padding=1, dilation=(1, 2), ceil_mode=True)
    y, idx = fc.max_pool2d(x, **pool, return_indices=True)
    gy = rng.standard_normal(y.shape)
    gx = fc.max_pool2d_backward(gy, idx, x.shape)
    assert_close(gx, max_pool2d_backward_ref(gy, max_pool2d_ref(x, **pool)[1], x.shape))
    num = _numerical_gradient(lambda: float(np.sum(gy * fc.max_pool2d(x, **pool))), x, eps=1e-3)
    np.testing.assert_allclose(gx, num, rtol=1e-8, atol=1e-8)


# --------------------------------------------------------------------------- #
# against PyTorch
# --------------------------------------------------------------------------- #


def _t(torch, a, grad=False):
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.requires_grad_() if grad else t


@settings(max_examples=80, deadline=None)
@given(geometry=pool_geometries(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1), mode=VALUE_MODES)
def test_max_pool_against_torch(torch, geometry, dtype, seed, mode):
    shape, pool = geometry
    assume(max_geometry_ok(shape[2:], **pool))
    rng = np.random.default_rng(seed)
    x = max_pool_input(rng, shape, dtype, mode)
    xt = _t(torch, x, grad=True)
    yt, it = torch.nn.functional.max_pool2d(xt, **pool, return_indices=True)
    y, idx = fc.max_pool2d(x, **pool, return_indices=True)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    gy = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(_t(torch, gy))
    np.testing.assert_allclose(fc.max_pool2d_backward(gy, idx, x.shape), xt.grad.numpy(),
                               rtol=1e-6, atol=1e-6)
    out_hw = tuple(shape[2:])
    unpool = dict(kernel_size=pool["kernel_size"], stride=pool["stride"],
                  padding=pool.get("padding", 0))
    default = max_unpool2d_output_hw_ref(y.shape[2:], **unpool)
    s = _stride_pair(pool["kernel_size"], pool["stride"])
    if all(d - si < o < d + si for o, d, si in zip(out_hw, default, s)) and y.size:
        ut = torch.nn.functional.max_unpool2d(_t(torch, y), it, **unpool, output_size=out_hw)
        np.testing.assert_array_equal(fc.max_unpool2d(y, idx, **unpool, output_size=out_hw),
                                      ut.numpy())


def test_max_pool_nan_and_minus_inf_against_torch(torch, dtype):
    nan, inf = np.nan, np.inf
    x = np.array([[1, nan, 5, nan, -inf, -inf],
                  [nan, 2, 1, 9, -inf, -inf],
                  [3, 3, 3, 0, -inf, -inf]], dtype=dtype)[None, None]
    for pool in (dict(kernel_size=2, padding=1), dict(kernel_size=2, stride=1),
                 dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                 dict(kernel_size=(2, 3), stride=1, dilation=(1, 2))):
        yt, it = torch.nn.functional.max_pool2d(_t(torch, x), **pool, return_indices=True)
        y, idx = fc.max_pool2d(x, **pool, return_indices=True)
        np.testing.assert_array_equal(y, yt.numpy())
        np.testing.assert_array_equal(idx, it.numpy())


@settings(max_examples=80, deadline=None)
@given(geometry=pool_geometries(dilation=False), dtype=st.sampled_from([np.float32, np.float64]),
       count_include_pad=st.booleans(),
       divisor_override=st.one_of(st.none(), st.integers(1, 20)), seed=st.integers(0, 2**32 - 1))
def test_avg_pool_against_torch(torch, geometry, dtype, count_include_pad, divisor_override, seed,
                                assert_close):
    shape, pool = geometry
    assume(min(pool_out_hw(shape[2:], **pool)) >= 1)
    pool = dict(pool, count_include_pad=count_include_pad, divisor_override=divisor_override)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    xt = _t(torch, x, grad=True)
    yt = torch.nn.functional.avg_pool2d(xt, **pool)
    y = fc.avg_pool2d(x.astype(dtype), **pool)
    assert_close(y, yt.detach().numpy())
    gy = rng.standard_normal(y.shape)
    yt.backward(_t(torch, gy))
    assert_close(fc.avg_pool2d_backward(gy.astype(dtype), shape, **pool), xt.grad.numpy())


@settings(max_examples=60, deadline=None)
@given(geometry=pool_geometries(dilation=False, padding=False),
       p=st.sampled_from([1, 2, 3, 4, 1.5, 0.75]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1))
def test_lp_pool_against_torch(torch, geometry, p, dtype, seed, assert_close):
    shape, pool = geometry
    assume(min(pool_out_hw(shape[2:], **pool)) >= 1)
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.25, 2.0, shape)
    if p in (2, 4):  # even p: PyTorch's x^p is the p-norm for any sign
        x *= rng.choice([-1.0, 1.0], shape)
    xt = _t(torch, x, grad=True)
    yt = torch.nn.functional.lp_pool2d(xt, p, **pool)
    y = fc.lp_pool2d(x.astype(dtype), p, **pool)
    assert_close(y, yt.detach().numpy())
    gy = rng.standard_normal(y.shape)
    yt.backward(_t(torch, gy))
    gx = fc.lp_pool2d_backward(gy.astype(dtype), x.astype(dtype), y, p, **pool)
    assert_close(gx, xt.grad.numpy())


@pytest.mark.parametrize("in_hw, output_size", ADAPTIVE_CASES)
def test_adaptive_avg_pool_against_torch(torch, in_hw, output_size, dtype, rng, assert_close):
    x = rng.standard_normal((2, 3) + in_hw)
    xt = _t(torch, x, grad=True)
    yt = torch.nn.functional.adaptive_avg_pool2d(xt, output_size)
    y = fc.adaptive_avg_pool2d(x.astype(dtype), output_size)
    assert_close(y, yt.detach().numpy())
    gy = rng.standard_normal(y.shape)
    yt.backward(_t(torch, gy))
    assert_close(fc.adaptive_avg_pool2d_backward(gy.astype(dtype), x.shape), xt.grad.numpy())


# --------------------------------------------------------------------------- #
# bad input shared by the pooling forwards
# --------------------------------------------------------------------------- #

POOL_CALLS = {
    "max": lambda x, **kw: fc.max_pool2d(x, **kw),
    "avg": lambda x, **kw: fc.avg_pool2d(x, **kw),
    "lp": lambda x, **kw: fc.lp_pool2d(x, 2, **kw),
}

BAD_POOL = [
    ("x-3d", dict(x=np.ones((1, 4, 4))), ValueError, r"\bx\b"),
    ("x-5d", dict(x=np.ones((1, 1, 1, 4, 4))), ValueError, r"\bx\b"),
    ("x-complex", dict(x=np.ones((1, 1, 4, 4), complex)), TypeError, r"\bx\b"),
    ("x-none", dict(x=None), TypeError, r"\bx\b"),
    ("x-empty-plane", dict(x=np.ones((1, 1, 0, 4))), ValueError, r"\bx\b|empty"),
    ("kernel-0", dict(kernel_size=0), ValueError, "kernel_size"),
    ("kernel-negative", dict(kernel_size=(2, -1)), ValueError, "kernel_size"),
    ("kernel-float", dict(kernel_size=2.0), TypeError, "kernel_size"),
    ("kernel-triple", dict(kernel_size=(2, 2, 2)), ValueError, "kernel_size"),
    ("kernel-too-large", dict(kernel_size=5), ValueError, "kernel_size"),
    ("stride-0", dict(stride=0), ValueError, "stride"),
    ("stride-negative", dict(stride=(1, -2)), ValueError, "stride"),
]


@pytest.mark.parametrize("op", sorted(POOL_CALLS))
@pytest.mark.parametrize("overrides, exc, match", [c[1:] for c in BAD_POOL],
                         ids=[c[0] for c in BAD_POOL])
def test_pool_bad_input(op, overrides, exc, match):
    args = dict(x=np.ones((1, 1, 4, 4)), kernel_size=2)
    args.update(overrides)
    x = args.pop("x")
    with pytest.raises(exc, match=match):
        POOL_CALLS[op](x, **args)


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize("padding, exc", [(-1, ValueError), ((0, -1), ValueError),
                                          (0.5, TypeError), ("same", TypeError)])
def test_pool_bad_padding(op, padding, exc):
    with pytest.raises(exc, match="padding"):
        POOL_CALLS[op](np.ones((1, 1, 4, 4)), kernel_size=2, padding=padding)


@pytest.mark.parametrize("dilation", [0, -1, (1, 0)])
def test_max_pool_bad_dilation(dilation):
    with pytest.raises(ValueError, match="dilation"):
        fc.max_pool2d(np.ones((1, 1, 4, 4)), 2, dilation=dilation)


# --------------------------------------------------------------------------- #
# empty batch, array-likes, dtypes, inputs left alone
# --------------------------------------------------------------------------- #


def test_empty_batch(dtype):
    x = np.zeros((0, 3, 5, 6), dtype)
    y, idx = fc.max_pool2d(x, 2, return_indices=True)
    assert y.shape == (0, 3, 2, 3) and y.dtype == dtype and idx.dtype == np.int64
    gx = fc.max_pool2d_backward(y, idx, x.shape)
    assert gx.shape == x.shape and gx.dtype == dtype
    assert fc.max_unpool2d(y, idx, 2).shape == (0, 3, 4, 6)
    y = fc.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)
    assert y.shape == (0, 3, 3, 4) and y.dtype == dtype
    gx = fc.avg_pool2d_backward(y, x.shape, 3, stride=2, padding=1, ceil_mode=True)
    assert gx.shape == x.shape and gx.dtype == dtype
    y = fc.lp_pool2d(x, 2, 2)
    assert y.shape == (0, 3, 2, 3)
    assert fc.lp_pool2d_backward(y, x, y, 2, 2).shape == x.shape
    y = fc.adaptive_avg_pool2d(x, (4, 4))
    assert y.shape == (0, 3, 4, 4) and y.dtype == dtype
    assert fc.adaptive_avg_pool2d_backward(y, x.shape).shape == x.shape
    assert fc.global_avg_pool2d(x).shape == (0, 3, 1, 1)


@pytest.mark.parametrize(
    "in_dtype, expected",
    [(np.float32, np.float32), (np.float64, np.float64), (np.float16, np.float32),
     (np.int64, np.float64), (np.int8, np.float64), (np.uint8, np.float64),
     (np.bool_, np.float64)],
)
def test_dtype_rule(in_dtype, expected, rng, assert_close):
    x = (rng.integers(0, 2, (2, 2, 5, 6)) if in_dtype == np.bool_
         else rng.integers(-9, 10, (2, 2, 5, 6))).astype(in_dtype)
    y, idx = fc.max_pool2d(x, 2, padding=1, return_indices=True)
    assert y.dtype == expected
    y_ref, idx_ref = max_pool2d_ref(x, 2, padding=1)
    assert_max_equal(y, idx, y_ref, idx_ref)
    assert fc.max_pool2d_backward(x[:, :, :3, :4], idx, x.shape).dtype == expected
    for got, ref in ((fc.avg_pool2d(x, 3, 1, 1), avg_pool2d_ref(x, 3, 1, 1)),
                     (fc.lp_pool2d(x, 2, 2), lp_pool2d_ref(x, 2, 2)),
                     (fc.adaptive_avg_pool2d(x, 3), adaptive_avg_pool2d_ref(x, 3))):
        assert got.dtype == expected
        assert_close(got, ref)
    assert fc.avg_pool2d_backward(x[:, :, :2, :3], x.shape, 2).dtype == expected
    assert fc.adaptive_avg_pool2d_backward(x[:, :, :2, :2], x.shape).dtype == expected


def test_nested_lists_and_views(rng, assert_close):
    x = rng.standard_normal((2, 3, 6, 7))
    views = [x.tolist(), np.asfortranarray(x), x[:, :, ::-1], np.repeat(x, 2, axis=3)[..., ::2]]
    for v in views:
        expected = np.asarray(v, dtype=np.float64)
        y, idx = fc.max_pool2d(v, 3, 2, 1, return_indices=True)
        assert_max_equal(y, idx, *max_pool2d_ref(expected, 3, 2, 1))
        assert_close(fc.avg_pool2d(v, 3, 2, 1, True, False), avg_pool2d_ref(expected, 3, 2, 1,
                                                                            True, False))
        assert_close(fc.lp_pool2d(v, 3, 2), lp_pool2d_ref(expected, 3, 2))
        assert_close(fc.adaptive_avg_pool2d(v, (4, 3)), adaptive_avg_pool2d_ref(expected, (4, 3)))
    gy = rng.standard_normal((2, 3, 3, 4))
    _, idx = fc.max_pool2d(x, 3, 2, 1, return_indices=True)
    for g in (gy.tolist(), gy[:, ::-1][:, ::-1], np.asfortranarray(gy)):
        assert_close(fc.max_pool2d_backward(g, idx.tolist(), x.shape),
                     max_pool2d_backward_ref(gy, idx, x.shape))
        assert_close(fc.avg_pool2d_backward(g, list(x.shape), 3, 2, 1),
                     avg_pool2d_backward_ref(gy, x.shape, 3, 2, 1))


def test_inputs_not_modified(dtype, rng):
    x = rng.standard_normal((2, 3, 6, 7)).astype(dtype)
    x.flags.writeable = False
    copy = x.copy()
    y, idx = fc.max_pool2d(x, 3, 2, 1, return_indices=True)
    gy = rng.standard_normal(y.shape).astype(dtype)
    for a in (y, idx, gy):
        a.flags.writeable = False
    copies = [a.copy() for a in (y, idx, gy)]
    outs = [
        fc.max_pool2d_backward(gy, idx, x.shape),
        fc.max_unpool2d(y, idx, 3, 2, 1, output_size=(6, 7)),
        fc.avg_pool2d(x, 3, 2, 1),
        fc.avg_pool2d_backward(gy, x.shape, 3, 2, 1),
        fc.lp_pool2d(x, 2, 3, 2),
        fc.adaptive_avg_pool2d(x, (3, 4)),
        fc.adaptive_avg_pool2d_backward(gy, x.shape),
    ]
    ylp = fc.lp_pool2d(x, 2, 2)
    ylp.flags.writeable = False
    outs.append(fc.lp_pool2d_backward(np.ones_like(ylp), x, ylp, 2, 2))
    np.testing.assert_array_equal(x, copy)
    for a, c in zip((y, idx, gy), copies):
        np.testing.assert_array_equal(a, c)
    for out in outs:
        for a in (x, y, idx, gy, ylp):
            assert not np.shares_memory(out, a)


# --------------------------------------------------------------------------- #
# threads: bit-identical results for 1 and 2 threads
# --------------------------------------------------------------------------- #


def _all_pool_results(x, gy_seed):
    rng = np.random.default_rng(gy_seed)
    out = {}
    pool = dict(kernel_size=3, stride=(2, 1), padding=1, dilation=(1, 2), ceil_mode=True)
    y, idx = fc.max_pool2d(x, **pool, return_indices=True)
    gy = rng.standard_normal(y.shape).astype(x.dtype)
    out["max"], out["max_idx"] = y, idx
    out["max_backward"] = fc.max_pool2d_backward(gy, idx, x.shape)
    y, idx = fc.max_pool2d(x, 3, 2, 1, return_indices=True)
    out["max_undilated"] = y
    out["unpool"] = fc.max_unpool2d(y, idx, 3, 2, 1, output_size=x.shape[2:])
    avg = dict(kernel_size=(3, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    y = fc.avg_pool2d(x, **avg)
    out["avg"] = y
    out["avg_backward"] = fc.avg_pool2d_backward(rng.standard_normal(y.shape).astype(x.dtype),
                                                 x.shape, **avg)
    y = fc.lp_pool2d(x, 3, 2, ceil_mode=True)
    out["lp"] = y
    out["lp_backward"] = fc.lp_pool2d_backward(rng.standard_normal(y.shape).astype(x.dtype), x, y,
                                               3, 2, ceil_mode=True)
    y = fc.adaptive_avg_pool2d(x, (4, 5))
    out["adaptive"] = y
    out["adaptive_backward"] = fc.adaptive_avg_pool2d_backward(
        rng.standard_normal(y.shape).astype(x.dtype), x.shape)
    return out


@pytest.mark.parametrize("n, c", [(1, 1), (1, 5), (3, 4), (8, 3)])
def test_one_and_two_threads_bit_identical(n, c, dtype, rng, restore_threads):
    x = rng.standard_normal((n, c, 9, 11)).astype(dtype)
    results = {}
    for threads in (1, 2):
        with fc.threads(threads):
            results[threads] = _all_pool_results(x, 5)
    for name in results[1]:
        one, two = results[1][name], results[2][name]
        assert one.dtype == two.dtype
        assert np.array_equal(one, two), f"{name} differs between 1 and 2 threads"


# --------------------------------------------------------------------------- #
# the kernels' fast paths: interior runs, edge columns, in-kernel checks
# --------------------------------------------------------------------------- #
# Max and average pooling compute a row's interior columns (windows wholly inside the
# row) over the whole run, with code specialised for whole 2x2 and 3x3 windows, rows of
# 2 and 3 taps and strides 1 and 2 (3 for the average backward), else tap by tap, and
# the clipped edge columns one by one. Rows here are wide enough for runs longer than
# a vector, with odd lengths (remainders), edges on one or both sides, overlapping
# windows (stride < kernel) and gaps (stride > kernel).

from fastconv._kernels import _pool  # noqa: E402

WIDE_SIZES = [(9, 37), (6, 64), (5, 19)]
WIDE_POOLS = [
    dict(kernel_size=2, stride=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=(2, 3), stride=3),
    dict(kernel_size=(3, 4), stride=(2, 3), padding=(1, 2), ceil_mode=True),
    dict(kernel_size=(1, 5), stride=(1, 4), padding=(0, 2)),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(2, 1), stride=(1, 1)),
    dict(kernel_size=2, stride=1, ceil_mode=True),
    dict(kernel_size=3, stride=3, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=(1, 2)),
]
WIDE_DILATED = [
    dict(kernel_size=3, stride=2, padding=1, dilation=2),
    dict(kernel_size=(2, 3), stride=1, dilation=(2, 3), ceil_mode=True),
    dict(kernel_size=(3, 2), stride=(1, 3), padding=(1, 1), dilation=(1, 4)),
]


def _wide_id(pool):
    return "-".join(f"{key.split('_')[0]}{value}".replace(" ", "") for key, value in pool.items())


@pytest.mark.parametrize("mode", ["normal", "ties", "special"])
@pytest.mark.parametrize("size", WIDE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("pool", WIDE_POOLS + WIDE_DILATED, ids=_wide_id)
def test_max_pool_wide_rows(pool, size, mode, dtype, rng, assert_close):
    if not max_geometry_ok(size, **pool):
        pytest.skip("geometry without output")
    check_max(max_pool_input(rng, (2, 3) + size, dtype, mode), pool, rng, assert_close)


@pytest.mark.parametrize("pool", WIDE_POOLS[:3] + WIDE_DILATED[:1], ids=_wide_id)
def test_max_pool_nan_and_ties_at_edges_and_interior(pool, dtype):
    """NaN in the first, an interior and the last column, one NaN pair in one window
    (the last wins), and rows of equal values (the first tap wins)."""
    x = np.zeros((1, 2, 7, 41), dtype)
    x[0, 0, 1, [0, 17, 40]] = np.nan
    x[0, 0, 4, 20:22] = np.nan
    x[0, 0, 5] = -np.inf
    x[0, 1, ::2] = 3.0
    x[0, 1, 3, [0, 25, 40]] = np.nan
    y, idx = fc.max_pool2d(x, **pool, return_indices=True)
    y_ref, idx_ref = max_pool2d_ref(x, **pool)
    assert_max_equal(y, idx, y_ref, idx_ref)
    np.testing.assert_array_equal(fc.max_pool2d(x, **pool), y)


@pytest.mark.parametrize("pool", WIDE_POOLS + WIDE_DILATED, ids=_wide_id)
def test_max_pool_int64_tracking_equals_int32(pool, dtype, rng):
    """Without scratch the kernel tracks int64 plane offsets (its path for windows
    spanning over 2**31 elements); it must choose exactly the same taps."""
    x = max_pool_input(rng, (2, 2, 9, 37), dtype, "special")
    if not max_geometry_ok(x.shape[2:], **pool):
        pytest.skip("geometry without output")
    y_ref, idx_ref = max_pool2d_ref(x, **pool)
    k, s = pair_ref(pool["kernel_size"]), _stride_pair(pool["kernel_size"], pool["stride"])
    p, d = pair_ref(pool.get("padding", 0)), pair_ref(pool.get("dilation", 1))
    y = np.empty(y_ref.shape, dtype)
    idx = np.empty(y_ref.shape, np.int64)
    _pool.max_pool2d_forward(x, y, idx, None, *k, *s, *p, *d, 2)
    assert_max_equal(y, idx, y_ref, idx_ref)


@pytest.mark.parametrize("count_include_pad, divisor_override", [(True, None), (False, None),
                                                                  (True, 5)])
@pytest.mark.parametrize("size", WIDE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("pool", WIDE_POOLS, ids=_wide_id)
def test_avg_pool_wide_rows(pool, size, count_include_pad, divisor_override, dtype, rng,
                            assert_close):
    pool = dict(pool, count_include_pad=count_include_pad, divisor_override=divisor_override)
    check_avg(rng.standard_normal((2, 3) + size).astype(dtype), pool, rng, assert_close)


def _kernel_args(pool):
    k, s = pair_ref(pool["kernel_size"]), _stride_pair(pool["kernel_size"], pool["stride"])
    return (*k, *s, *pair_ref(pool.get("padding", 0)))


@pytest.mark.parametrize("pool", WIDE_POOLS, ids=_wide_id)
def test_backward_kernels_overwrite_every_element(pool, dtype, rng, assert_close):
    """The backward kernels zero gx themselves: NaN garbage in it must not survive, also
    where no window reaches (gaps of stride > kernel, floor-mode leftovers)."""
    x = rng.standard_normal((2, 3, 9, 37)).astype(dtype)
    y, idx = fc.max_pool2d(x, **pool, return_indices=True)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = np.full(x.shape, np.nan, dtype)
    assert _pool.max_pool2d_backward(gy, idx, gx, 2) == 0
    assert_close(gx, max_pool2d_backward_ref(gy, idx, x.shape))
    gx = np.full(x.shape, np.nan, dtype)
    workspace = np.full((2, y.shape[3]), np.nan, dtype)
    _pool.avg_pool2d_backward(gy, gx, workspace, *_kernel_args(pool), True, 0, 2)
    assert_close(gx, avg_pool2d_backward_ref(gy, x.shape, **pool))
    if "dilation" not in pool:
        out = np.full(x.shape, np.nan, dtype)
        assert _pool.max_unpool2d(y, idx, out, 2) == 0
        np.testing.assert_array_equal(out, max_unpool2d_ref(y, idx, x.shape[2:]))


def test_scatter_kernels_skip_and_count_indices_outside_the_plane(dtype):
    """The scatter kernels check every index: one outside the plane is skipped (never
    written) and counted, so the caller can raise."""
    gy = np.array([[[[1.0, 2.0], [4.0, 8.0]]]], dtype)
    idx = np.array([[[[0, 8], [-1, 9]]]], dtype=np.int64)  # a 3x3 plane: 8 is its last
    gx = np.full((1, 1, 3, 3), np.nan, dtype)
    assert _pool.max_pool2d_backward(gy, idx, gx, 1) == 2
    np.testing.assert_array_equal(gx.ravel(), [1, 0, 0, 0, 0, 0, 0, 0, 2])
    out = np.full((1, 1, 3, 3), np.nan, dtype)
    assert _pool.max_unpool2d(gy, idx, out, 1) == 2
    np.testing.assert_array_equal(out.ravel(), [1, 0, 0, 0, 0, 0, 0, 0, 2])
    with pytest.raises(ValueError, match=r"idx holds offsets outside the plane.*\[-1, 9\]"):
        fc.max_pool2d_backward(gy, idx, (1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"idx holds offsets outside the plane.*\[-1, 9\]"):
        fc.max_unpool2d(gy, idx, 2, output_size=(3, 3))


@pytest.mark.parametrize("pool", WIDE_POOLS[1:3] + WIDE_POOLS[4:5] + WIDE_DILATED[:1],
                         ids=_wide_id)
def test_wide_rows_bit_identical_for_1_2_3_threads(pool, dtype, rng, restore_threads):
    x = max_pool_input(rng, (3, 5, 9, 37), dtype, "special")
    finite = np.nan_to_num(x, neginf=-2.0)
    results = []
    for threads in (1, 2, 3):
        with fc.threads(threads):
            y, idx = fc.max_pool2d(x, **pool, return_indices=True)
            gy = np.cos(fc.max_pool2d(finite, **pool))
            out = [y, idx, fc.max_pool2d(x, **pool), fc.max_pool2d_backward(gy, idx, x.shape)]
            if "dilation" not in pool:
                avg = fc.avg_pool2d(finite, **pool)
                out += [avg, fc.avg_pool2d_backward(np.cos(avg), x.shape, **pool)]
            results.append(out)
    for other in results[1:]:
        for one, two in zip(results[0], other):
            assert one.dtype == two.dtype
            np.testing.assert_array_equal(one, two)  # NaN where NaN


def test_pool_geometry_cache_keeps_validation():
    """A remembered geometry never lets through what the checks refuse: a bool or
    float kernel equal to a cached int one, or sizes that only fail for another plane."""
    x = np.ones((1, 1, 6, 6))
    assert fc.max_pool2d(x, 2).shape == (1, 1, 3, 3)  # (2, ...) is now remembered
    with pytest.raises(TypeError, match="kernel_size"):
        fc.max_pool2d(x, True)
    assert fc.max_pool2d(x, 1).shape == (1, 1, 6, 6)
    with pytest.raises(TypeError, match="kernel_size"):
        fc.max_pool2d(x, True)  # True == 1 and hashes alike, still refused
    with pytest.raises(TypeError, match="stride"):
        fc.max_pool2d(x, 2, stride=2.0)
    with pytest.raises(ValueError, match="only padding"):  # valid for 6x6, not for 1x1
        fc.max_pool2d(np.zeros((1, 1, 1, 1)), (1, 2), stride=1, padding=(0, 1), dilation=(1, 2))
    for _ in range(2):  # refused again: failures are not remembered
        with pytest.raises(ValueError, match="padding"):
            fc.max_pool2d(x, 2, padding=2)
    np.testing.assert_array_equal(fc.max_pool2d(x, [2, 2]), fc.max_pool2d(x, (2, 2)))


def test_remembered_pooling_checks_keep_validation(rng, assert_close):
    """avg_pool2d's and max_pool2d's remembered checks never let through what the checks
    refuse (a bool equal to a remembered int), follow the thread count, and give each
    call its own scratch: threads pooling the same shape at once get their own answers."""
    x = np.ones((1, 1, 6, 6))
    assert fc.avg_pool2d(x, 2, divisor_override=1)[0, 0, 0, 0] == 4.0  # remembered
    with pytest.raises(TypeError, match="divisor_override"):
        fc.avg_pool2d(x, 2, divisor_override=True)
    assert fc.max_pool2d(x, 1, dilation=1).shape == (1, 1, 6, 6)
    with pytest.raises(TypeError, match="dilation"):
        fc.max_pool2d(x, 1, dilation=True)
    # rows of many windows: the kernel sums them in its scratch row
    inputs = [rng.standard_normal((4, 8, 16, 64)) for _ in range(4)]
    pool = dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)
    expected = [avg_pool2d_ref(a, **pool) for a in inputs]
    for n in (1, 2, 1):
        with fc.threads(n):
            assert_close(fc.avg_pool2d(inputs[0], **pool), expected[0])
    wrong = [0] * len(inputs)  # calls of each thread off the reference

    def work(i):
        for _ in range(30):
            got = fc.avg_pool2d(inputs[i], **pool)
            wrong[i] += not np.allclose(got, expected[i], rtol=0, atol=1e-12)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert wrong == [0] * len(inputs)


@pytest.mark.parametrize("size", range(1, 10))
@pytest.mark.parametrize("kernel, stride, padding, dilation", [
    (k, s, p, d) for k in (1, 2, 3, 4) for s in (1, 2, 3) for p in range(k // 2 + 1)
    for d in (1, 2, 3)])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pool_only_padding_check_matches_every_window(size, kernel, stride, padding, dilation,
                                                      ceil_mode):
    """The padding-only check looks at the left windows and the last one; every window
    is checked here, by brute force."""
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * padding - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and out > 0 and (out - 1) * stride >= size + padding:
        out -= 1
    x = np.zeros((1, 1, size, size))
    if out < 1:
        with pytest.raises(ValueError):
            fc.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
        return
    covers = [any(0 <= i * stride - padding + t * dilation < size for t in range(kernel))
              for i in range(out)]
    if all(covers):
        assert fc.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode).shape[2] == out
    else:
        with pytest.raises(ValueError, match="only padding"):
            fc.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)


@pytest.mark.parametrize("size", [(2, 2), (28, 28), (10, 10), (5, 7), (7, 4), (3, 3), (2, 9),
                                  (16, 130)])
@pytest.mark.parametrize("mode", ["normal", "ties", "special"])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool_2x2_stride_2(size, mode, ceil_mode, dtype, rng, assert_close):
    """Whole 2x2 windows at stride 2 have their own loop (one per output row); odd sizes
    with ceil_mode take the general one (their last window is clipped)."""
    x = max_pool_input(rng, (3, 4) + size, dtype, mode)
    check_max(x, dict(kernel_size=2, stride=2, ceil_mode=ceil_mode), rng, assert_close)


@pytest.mark.parametrize("signs", [(0.0, -0.0), (-0.0, 0.0)])
def test_max_pool_2x2_signed_zero_ties(signs, dtype):
    """+0 and -0 tie: the first in scan order is kept, with its sign."""
    x = np.array([[-1.0, signs[0]], [signs[1], -0.5]], dtype)[None, None]
    y, idx = fc.max_pool2d(x, 2, return_indices=True)
    assert idx.ravel().tolist() == [1]
    assert np.signbit(y.ravel()[0]) == np.signbit(signs[0])


def test_max_pool_2x2_bit_identical_for_1_2_3_threads(dtype, rng, restore_threads):
    x = max_pool_input(rng, (5, 7, 12, 14), dtype, "special")
    results = []
    for threads in (1, 2, 3):
        with fc.threads(threads):
            results.append((*fc.max_pool2d(x, 2, return_indices=True), fc.max_pool2d(x, 2)))
    for other in results[1:]:
        for one, two in zip(results[0], other):
            np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("pool", [
    dict(kernel_size=7),                                    # a 7x7 mean over 7x7 maps
    dict(kernel_size=7, divisor_override=5),                # ... its one-sum-per-plane path
    dict(kernel_size=7, stride=3, ceil_mode=True),          # ... reached with other options
    dict(kernel_size=5, stride=1, padding=2),               # few windows, padded edges
    dict(kernel_size=(7, 3), stride=(1, 2), padding=(3, 1), count_include_pad=False),
])
def test_avg_pool_few_large_windows(pool, dtype, rng, assert_close):
    """Rows of at most a few windows sum window by window (the heads of image networks)."""
    check_avg(rng.standard_normal((2, 5, 7, 7)).astype(dtype), pool, rng, assert_close)


def test_a_whole_plane_window_equals_the_global_mean_bit_for_bit(dtype, rng):
    x = rng.standard_normal((3, 4, 7, 7)).astype(dtype)
    np.testing.assert_array_equal(fc.avg_pool2d(x, 7), fc.global_avg_pool2d(x))
    gy = rng.standard_normal((3, 4, 1, 1)).astype(dtype)
    np.testing.assert_array_equal(fc.avg_pool2d_backward(gy, x.shape, 7),
                                  fc.global_avg_pool2d_backward(gy, x.shape))


def test_small_poolings_take_fewer_threads():
    """One thread per WORK_PER_THREAD elements, at most the threads configured; the
    result is the same either way."""
    from fastconv import _pool_ops

    with fc.threads(2):
        assert _pool_ops._threads(6 * 28 * 28) == 1
        assert _pool_ops._threads(2 * _pool_ops.WORK_PER_THREAD) == 2
        assert _pool_ops._threads(1 << 30) == 2
        x = np.random.default_rng(0).standard_normal((4, 8, 64, 64))
        y2 = fc.max_pool2d(x, 3, 2, 1)
    with fc.threads(1):
        np.testing.assert_array_equal(fc.max_pool2d(x, 3, 2, 1), y2)
