"""The kernels' building blocks tested directly through their test hooks.

GEMM (row-major: BLAS, or fastconv's own float32 GEMM for few columns in an AVX2 build)
against NumPy matmul, and the own GEMM on every shape; im2col bands against a column
matrix built plainly from a padded image; col2im as im2col's adjoint.
"""

import numpy as np
import pytest

from fastconv._dispatch import _gemm
from fastconv._kernels._im2col import _col2im_py, _im2col_py

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
# (512, 20, 256): few columns and a large A, which the own kernel takes in an AVX2 build
@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (3, 5, 7), (17, 2, 33), (4, 6, 0), (512, 20, 256)])
def test_gemm_matches_matmul(dtype, trans_a, trans_b, m, n, k, rng):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    expected = 0.5 * (a.T if trans_a else a).astype(np.float64) @ (
        b.T if trans_b else b
    ).astype(np.float64) + 2.0 * c
    _gemm._gemm_py(trans_a, trans_b, dtype(0.5), a, b, dtype(2.0), c)
    np.testing.assert_allclose(c, expected, rtol=TOL[dtype], atol=TOL[dtype] * max(1, k))


OWN_GEMM = pytest.mark.skipif(not _gemm.HAS_OWN_GEMM,
                              reason="fastconv's own float32 GEMM is in AVX2 builds only")


@OWN_GEMM
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (1.0, 1.0), (0.5, 2.0)])
# one micro-tile (6 x 16) and beyond, half-width edge tiles (<= 8 columns), more than one
# depth block (256) and more than one column block (64), edge tiles on every side, last
# tiles of 1 to 5 rows (on 2, 4 or 6 rows of registers)
@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (6, 16, 256), (7, 17, 257), (13, 8, 600),
                                     (130, 9, 40), (11, 70, 300), (5, 129, 3), (4, 6, 0),
                                     (3, 17, 257), (8, 9, 40), (33, 40, 70), (13, 20, 300),
                                     (33, 51, 70), (9, 2, 13)])
def test_own_gemm_matches_matmul(trans_a, trans_b, alpha, beta, m, n, k, rng):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c = rng.standard_normal((m, n)).astype(np.float32)
    expected = alpha * (a.T if trans_a else a).astype(np.float64) @ (
        b.T if trans_b else b).astype(np.float64) + beta * c
    _gemm._own_gemm_py(trans_a, trans_b, alpha, a, b, beta, c)
    np.testing.assert_allclose(c, expected, rtol=1e-5, atol=1e-5 * max(1, k))


@OWN_GEMM
def test_own_gemm_with_beta_zero_never_reads_c(rng):
    a, b = rng.standard_normal((9, 300)).astype(np.float32), rng.standard_normal((300, 21))
    c = np.full((9, 21), np.nan, np.float32)
    _gemm._own_gemm_py(False, False, 1.0, a, b.astype(np.float32), 0.0, c)
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-5, atol=3e-3)


@OWN_GEMM
def test_own_gemm_element_does_not_depend_on_the_tile_it_falls_in(rng):
    # only its row of A, its column of B and K decide an element's bits, never where its
    # tile starts or the product's other sizes: the kernels cut products by shape (a
    # last panel of at most 4 columns, dot products, aside: none here but in `narrow`)
    a = rng.standard_normal((23, 700)).astype(np.float32)
    b = rng.standard_normal((700, 45)).astype(np.float32)
    whole = np.zeros((23, 45), np.float32)
    _gemm._own_gemm_py(False, False, 1.0, a, b, 0.0, whole)
    part = np.zeros((9, 21), np.float32)
    _gemm._own_gemm_py(False, False, 1.0, np.ascontiguousarray(a[7:16]),
                       np.ascontiguousarray(b[:, 13:34]), 0.0, part)
    assert np.array_equal(part, whole[7:16, 13:34])
    # the dot products' columns: the same bits wherever their rows' tile starts
    narrow = np.zeros((23, 3), np.float32)
    _gemm._own_gemm_py(False, False, 1.0, a, np.ascontiguousarray(b[:, :3]), 0.0, narrow)
    rows = np.zeros((9, 3), np.float32)
    _gemm._own_gemm_py(False, False, 1.0, np.ascontiguousarray(a[7:16]),
                       np.ascontiguousarray(b[:, :3]), 0.0, rows)
    assert np.array_equal(rows, narrow[7:16])
    np.testing.assert_allclose(narrow, a.astype(np.float64) @ b[:, :3], rtol=1e-4,
                               atol=1e-3)


def test_gemm_takes_the_own_kernel_for_few_columns_and_a_large_a(rng):
    # the wrapper's rule (_gemm.pxd): float32, at most 32 columns, A of 2^16 elements or
    # more; its result is then the own kernel's, bit for bit
    a = rng.standard_normal((512, 256)).astype(np.float32)
    b = rng.standard_normal((256, 20)).astype(np.float32)
    through_wrapper = np.zeros((512, 20), np.float32)
    _gemm._gemm_py(False, False, 1.0, a, b, 0.0, through_wrapper)
    np.testing.assert_allclose(through_wrapper, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
    if _gemm.HAS_OWN_GEMM:
        own = np.zeros_like(through_wrapper)
        _gemm._own_gemm_py(False, False, 1.0, a, b, 0.0, own)
        assert np.array_equal(through_wrapper, own)


def columns_plain(x, n, c0, channels, kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1, ow_count):
    """Column matrix of rows [oh0, oh1) built from an explicitly padded image."""
    height, width = x.shape[2:]
    padded = np.zeros((channels, height + 2 * pt + dh * kh + sh * oh1,
                       width + 2 * pl + dw * kw + sw * ow_count))
    padded[:, pt:pt + height, pl:pl + width] = x[n, c0:c0 + channels]
    rows = []
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                rows.append([padded[c, oh * sh + i * dh, ow * sw + j * dw]
                             for oh in range(oh0, oh1) for ow in range(ow_count)])
    return np.array(rows)


BANDS = [
    # (N, C, H, W), n, c0, channels, kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1
    ((1, 1, 4, 4), 0, 0, 1, 2, 2, 1, 1, 0, 0, 1, 1, 0, 3),
    ((2, 3, 6, 5), 1, 1, 2, 3, 3, 1, 1, 1, 1, 1, 1, 2, 5),
    ((1, 2, 7, 8), 0, 0, 2, 3, 2, 2, 3, 1, 2, 2, 1, 0, 4),
    ((1, 1, 5, 5), 0, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 2),
    ((1, 1, 3, 3), 0, 0, 1, 3, 3, 2, 2, 2, 2, 2, 2, 0, 3),
    # stride 1, output as wide as x: each tap's rows are one contiguous copy, then the
    # columns it wrapped into and the rows in padding are zeroed
    ((1, 2, 6, 7), 0, 0, 2, 3, 3, 1, 1, 1, 1, 1, 1, 0, 6),
    ((2, 3, 9, 9), 1, 1, 2, 1, 7, 1, 1, 0, 3, 1, 1, 2, 7),     # a 1x7 band mid-image
    ((1, 1, 5, 6), 0, 0, 1, 5, 3, 1, 1, 2, 1, 1, 1, 1, 4),
    ((1, 2, 6, 8), 0, 0, 2, 3, 3, 1, 1, 2, 2, 2, 2, 1, 5),     # dilated
    ((1, 1, 4, 5), 0, 0, 1, 3, 3, 1, 1, 4, 1, 1, 1, 0, 10),    # rows all in padding
    ((1, 1, 3, 2), 0, 0, 1, 1, 5, 1, 1, 0, 2, 1, 1, 0, 3),     # taps all in padding
]


def out_width(width, kw, sw, pl, dw):
    return (width + 2 * pl - dw * (kw - 1) - 1) // sw + 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", BANDS)
def test_im2col_band_matches_plain_columns(case, dtype, rng):
    shape, n, c0, channels, kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1 = case
    x = rng.standard_normal(shape).astype(dtype)
    ow_count = out_width(shape[3], kw, sw, pl, dw)
    col = np.full((1, channels * kh * kw * (oh1 - oh0) * ow_count), np.nan, dtype=dtype)
    _im2col_py(x, n, c0, channels, kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1, ow_count, col)
    expected = columns_plain(x, n, c0, channels, kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1,
                             ow_count)
    np.testing.assert_array_equal(col.reshape(expected.shape), expected.astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", BANDS)
def test_col2im_is_adjoint_of_im2col(case, dtype, rng):
    shape, n, c0, channels, kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1 = case
    ow_count = out_width(shape[3], kw, sw, pl, dw)
    x = rng.standard_normal(shape).astype(dtype)
    cols = rng.standard_normal((1, channels * kh * kw * (oh1 - oh0) * ow_count)).astype(dtype)
    im2col_x = np.empty_like(cols)
    _im2col_py(x, n, c0, channels, kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1, ow_count, im2col_x)
    gx = np.zeros(shape, dtype=dtype)
    _col2im_py(cols, n, c0, channels, kh, kw, sh, sw, pt, pl, dh, dw, oh0, oh1, ow_count, gx)
    # col2im touches only image n, channels c0..c0+channels.
    untouched = np.ones(shape, bool)
    untouched[n, c0:c0 + channels] = False
    assert not gx[untouched].any()
    lhs = np.dot(im2col_x.ravel().astype(np.float64), cols.ravel().astype(np.float64))
    rhs = np.dot(x.ravel().astype(np.float64), gx.ravel().astype(np.float64))
    assert lhs == pytest.approx(rhs, rel=TOL[dtype] * 10, abs=TOL[dtype] * 10)
