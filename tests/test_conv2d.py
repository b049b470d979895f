"""Tests for fastconv.conv2d and fastconv.conv2d_backward.

Every result is checked against the plain NumPy float64 reference in
tests/reference.py, against PyTorch where it is installed, and by
finite differences in float64.
"""

import ctypes
import hashlib
import mmap
import os
import random
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastconv as fc

from reference import (
    conv2d_backward_ref,
    conv2d_ref,
    normalize_padding_ref,
    output_size_ref,
    pair_ref,
)

ALGORITHMS = ["auto", "direct", "im2col"]


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def make_problem(rng, n, c, h, w_, k, kh, kw, groups, dtype, bias=True):
    """Random x (N, C, H, W), w (K, C/groups, KH, KW) and b (K,) in ``dtype``."""
    x = rng.standard_normal((n, c, h, w_)).astype(dtype)
    w = rng.standard_normal((k, c // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype) if bias else None
    return x, w, b


def check_against_reference(x, w, b, conv, algorithm, rng, assert_close, dtype=None):
    """Run forward and backward through fastconv and compare with the reference.

    ``conv`` holds stride, padding, dilation, groups and flip.
    """
    dtype = np.dtype(dtype if dtype is not None else np.asarray(x).dtype)
    y = fc.conv2d(x, w, b, **conv, algorithm=algorithm)
    y_ref = conv2d_ref(x, w, b, **conv)
    assert isinstance(y, np.ndarray)
    assert y.dtype == dtype
    assert_close(y, y_ref, err_msg="y:")

    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    gx, gw, gb = fc.conv2d_backward(gy, x, w, **conv, algorithm=algorithm)
    gx_ref, gw_ref, gb_ref = conv2d_backward_ref(gy, x, w, **conv)
    for name, got, ref in (("gx", gx, gx_ref), ("gw", gw, gw_ref), ("gb", gb, gb_ref)):
        assert isinstance(got, np.ndarray), name
        assert got.dtype == dtype, f"{name} dtype {got.dtype} != {dtype}"
        assert_close(got, ref, err_msg=f"{name}:")
    return y, (gx, gw, gb)


# --------------------------------------------------------------------------- #
# the parameter matrix
# --------------------------------------------------------------------------- #

STRIDES = [1, 2, (1, 3)]
PADDINGS = [0, 1, (2, 1), ((0, 2), (1, 0)), "valid", "same", "full"]
DILATIONS = [1, (2, 1)]
GROUPINGS = ["groups1", "groups2", "depthwise"]
KERNELS = [(3, 3), (2, 3), (1, 1), (3, 1), (2, 2)]
SIZES = [(7, 6), (5, 9), (6, 5), (9, 7)]


def _channels(grouping, pick):
    """(C, K, groups) for a grouping name; ``pick`` varies the multiplier."""
    if grouping == "groups1":
        return 3, 4, 1
    if grouping == "groups2":
        return 4, 6, 2
    mult = 1 + pick % 2  # depthwise, channel multiplier 1 or 2
    return 3, 3 * mult, 3


def _build_matrix():
    """Stride x padding x dilation x grouping, with kernel, size, batch, flip
    and bias varied deterministically across the product."""
    chooser = random.Random(1234)
    cases = []
    for stride in STRIDES:
        for padding in PADDINGS:
            for dilation in DILATIONS:
                for grouping in GROUPINGS:
                    i = len(cases)
                    kernel = KERNELS[i % len(KERNELS)]
                    size = SIZES[(i // 2) % len(SIZES)]
                    c, k, groups = _channels(grouping, i // 3)
                    case = dict(
                        n=chooser.choice([1, 2, 3]),
                        c=c,
                        k=k,
                        size=size,
                        kernel=kernel,
                        conv=dict(
                            stride=stride,
                            padding=padding,
                            dilation=dilation,
                            groups=groups,
                            flip=chooser.random() < 0.5,
                        ),
                        bias=chooser.random() < 0.5,
                    )
                    cases.append(case)
    return cases


def _case_id(case):
    conv = case["conv"]

    def fmt(key, default):
        return str(conv.get(key, default)).replace(" ", "")

    return (
        f"n{case['n']}-c{case['c']}-k{case['k']}-{case['size'][0]}x{case['size'][1]}"
        f"-k{case['kernel'][0]}x{case['kernel'][1]}-s{fmt('stride', 1)}"
        f"-p{fmt('padding', 0)}-d{fmt('dilation', 1)}-g{fmt('groups', 1)}"
        f"{'-flip' if conv.get('flip') else ''}{'-bias' if case['bias'] else ''}"
    )


MATRIX = _build_matrix()

# Edge cases: 1x1 kernels (with and without stride/padding, the shortcut's
# guards), kernel equal to the (padded) input, single rows/columns, strides
# larger than the kernel or the input, wider channels for the GEMM path.
EDGE = [
    dict(n=2, c=5, k=7, size=(6, 6), kernel=(1, 1), conv=dict(), bias=True),
    dict(n=2, c=5, k=7, size=(6, 7), kernel=(1, 1), conv=dict(stride=2), bias=True),
    dict(n=2, c=5, k=7, size=(6, 6), kernel=(1, 1), conv=dict(padding=1), bias=False),
    dict(n=1, c=5, k=7, size=(6, 6), kernel=(1, 1), conv=dict(dilation=3), bias=False),
    dict(n=2, c=6, k=4, size=(5, 5), kernel=(1, 1), conv=dict(groups=2), bias=True),
    dict(n=1, c=4, k=4, size=(4, 4), kernel=(1, 1), conv=dict(padding=((1, 0), (0, 2))), bias=True),
    dict(n=2, c=2, k=3, size=(5, 5), kernel=(5, 5), conv=dict(), bias=True),
    dict(n=2, c=2, k=3, size=(3, 4), kernel=(5, 6), conv=dict(padding=1), bias=False),
    dict(n=1, c=2, k=2, size=(2, 5), kernel=(4, 2), conv=dict(padding=(1, 0)), bias=True),
    dict(n=2, c=3, k=2, size=(1, 9), kernel=(1, 3), conv=dict(), bias=True),
    dict(n=2, c=3, k=2, size=(9, 1), kernel=(3, 1), conv=dict(stride=2), bias=True),
    dict(n=1, c=1, k=1, size=(1, 1), kernel=(1, 1), conv=dict(), bias=True),
    dict(n=1, c=1, k=1, size=(1, 1), kernel=(3, 3), conv=dict(padding="same"), bias=False),
    dict(n=2, c=2, k=3, size=(8, 9), kernel=(2, 2), conv=dict(stride=3), bias=True),
    dict(n=2, c=2, k=3, size=(4, 4), kernel=(1, 1), conv=dict(stride=5), bias=True),
    dict(n=2, c=16, k=24, size=(10, 10), kernel=(3, 3), conv=dict(padding=1), bias=True),
    dict(n=2, c=8, k=8, size=(7, 7), kernel=(3, 3), conv=dict(groups=4, padding="same"), bias=True),
    dict(n=2, c=4, k=8, size=(7, 8), kernel=(3, 3), conv=dict(groups=4, stride=2), bias=False),
    dict(n=1, c=2, k=3, size=(10, 11), kernel=(4, 4), conv=dict(stride=3, padding="same"), bias=True),
    dict(n=1, c=2, k=3, size=(8, 12), kernel=(3, 5),
         conv=dict(stride=(2, 1), dilation=(1, 2)), bias=True),
    dict(n=1, c=2, k=2, size=(4, 5), kernel=(2, 2), conv=dict(padding=4), bias=True),
    dict(n=5, c=3, k=2, size=(13, 11), kernel=(3, 3),
         conv=dict(dilation=2, padding="full", flip=True), bias=True),
    dict(n=2, c=3, k=4, size=(9, 9), kernel=(3, 3),
         conv=dict(padding="SAME", stride=2, flip=True), bias=True),
    dict(n=2, c=3, k=4, size=(9, 9), kernel=(3, 3), conv=dict(padding="Valid"), bias=True),
    dict(n=2, c=3, k=4, size=(6, 6), kernel=(2, 2), conv=dict(padding="FULL", stride=(2, 1)), bias=True),
    # deep enough for the weight gradient's channel blocks (the last one short), grouped
    # blocks, and pointwise blocks
    dict(n=3, c=26, k=5, size=(9, 8), kernel=(7, 7), conv=dict(padding=3, stride=(1, 2)), bias=True),
    dict(n=2, c=16, k=16, size=(7, 6), kernel=(3, 3), conv=dict(groups=8, padding=1), bias=True),
    dict(n=2, c=1040, k=3, size=(3, 2), kernel=(1, 1), conv=dict(), bias=False),
]


def _run_case(case, dtype, algorithm, rng, assert_close):
    x, w, b = make_problem(
        rng, case["n"], case["c"], *case["size"], case["k"], *case["kernel"],
        case["conv"].get("groups", 1), dtype, case["bias"],
    )
    check_against_reference(x, w, b, case["conv"], algorithm, rng, assert_close)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", MATRIX, ids=[_case_id(c) for c in MATRIX])
def test_matrix_against_reference(case, dtype, algorithm, rng, assert_close):
    _run_case(case, dtype, algorithm, rng, assert_close)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", EDGE, ids=[_case_id(c) for c in EDGE])
def test_edge_cases_against_reference(case, dtype, algorithm, rng, assert_close):
    _run_case(case, dtype, algorithm, rng, assert_close)


@pytest.mark.parametrize("spelling", ["DIRECT", "Im2Col", "AUTO", "Direct", "IM2COL"])
def test_algorithm_names_case_insensitive(spelling, rng, assert_close):
    x, w, b = make_problem(rng, 2, 3, 6, 6, 4, 3, 3, 1, np.float64)
    check_against_reference(x, w, b, dict(padding=1), spelling, rng, assert_close)


@pytest.mark.parametrize("dtype_", [np.float32, np.float64])
def test_algorithms_agree(dtype_, rng, assert_close):
    x, w, b = make_problem(rng, 3, 6, 11, 10, 8, 3, 3, 2, dtype_)
    conv = dict(stride=(2, 1), padding="same", dilation=(1, 2), groups=2)
    gy = rng.standard_normal(conv2d_ref(x, w, b, **conv).shape).astype(dtype_)
    results = {a: (fc.conv2d(x, w, b, **conv, algorithm=a),
                   *fc.conv2d_backward(gy, x, w, **conv, algorithm=a)) for a in ALGORITHMS}
    for a in ALGORITHMS[1:]:
        for got, ref in zip(results[a], results[ALGORITHMS[0]]):
            assert_close(got, ref.astype(np.float64), err_msg=f"{a} vs auto:")


def test_flip_equals_rotated_kernel(rng):
    x, w, b = make_problem(rng, 2, 4, 7, 8, 6, 3, 2, 2, np.float64)
    conv = dict(stride=(1, 2), padding=((1, 0), (2, 1)), dilation=(2, 1), groups=2)
    for algorithm in ALGORITHMS:
        y_flip = fc.conv2d(x, w, b, **conv, flip=True, algorithm=algorithm)
        y_rot = fc.conv2d(x, np.ascontiguousarray(w[:, :, ::-1, ::-1]), b, **conv, algorithm=algorithm)
        np.testing.assert_allclose(y_flip, y_rot, rtol=1e-12, atol=1e-12)
        gy = rng.standard_normal(y_flip.shape)
        gx_f, gw_f, gb_f = fc.conv2d_backward(gy, x, w, **conv, flip=True, algorithm=algorithm)
        gx_r, gw_r, gb_r = fc.conv2d_backward(gy, x, w[:, :, ::-1, ::-1], **conv, algorithm=algorithm)
        np.testing.assert_allclose(gx_f, gx_r, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(gw_f, gw_r[:, :, ::-1, ::-1], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(gb_f, gb_r, rtol=1e-12, atol=1e-12)


def test_positional_and_keyword_arguments(rng):
    x, w, b = make_problem(rng, 2, 4, 7, 7, 6, 3, 3, 2, np.float64)
    y_pos = fc.conv2d(x, w, b, 2, 1, 1, 2)
    y_kw = fc.conv2d(x=x, w=w, b=b, stride=2, padding=1, dilation=1, groups=2)
    np.testing.assert_array_equal(y_pos, y_kw)
    gy = np.ones_like(y_pos)
    for got, ref in zip(fc.conv2d_backward(gy, x, w, 2, 1, 1, 2),
                        fc.conv2d_backward(gy=gy, x=x, w=w, stride=2, padding=1, dilation=1, groups=2)):
        np.testing.assert_array_equal(got, ref)
    # algorithm, flip and needs_input_grad are keyword-only
    with pytest.raises(TypeError):
        fc.conv2d(x, w, b, 2, 1, 1, 2, "direct")


# --------------------------------------------------------------------------- #
# property sweep with hypothesis
# --------------------------------------------------------------------------- #

small = st.integers(0, 3)


def int_or_pair(lo, hi):
    return st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)))


PADDING_FORMS = st.one_of(
    small,
    st.tuples(small, small),
    st.tuples(st.tuples(small, small), st.tuples(small, small)),
    st.sampled_from(["valid", "same", "full", "VALID", "Same", "FULL", "sAmE"]),
)


@st.composite
def conv_problems(draw):
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, 3))
    k = groups * draw(st.integers(1, 3))
    n = draw(st.integers(0, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    stride = draw(int_or_pair(1, 3))
    dilation = draw(int_or_pair(1, 3))
    padding = draw(PADDING_FORMS)
    (pt, pb), (pl, pr) = normalize_padding_ref(padding, (h, w), (kh, kw), stride, dilation)
    (sh, sw), (dh, dw) = pair_ref(stride), pair_ref(dilation)
    assume(output_size_ref(h, kh, sh, dh, pt, pb) >= 1)
    assume(output_size_ref(w, kw, sw, dw, pl, pr) >= 1)
    return dict(
        shape=(n, c, h, w),
        wshape=(k, c // groups, kh, kw),
        conv=dict(
            stride=stride, padding=padding, dilation=dilation, groups=groups,
            flip=draw(st.booleans()),
        ),
        bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=150, deadline=None)
@given(
    problem=conv_problems(),
    dtype=st.sampled_from([np.float32, np.float64]),
    algorithm=st.sampled_from(ALGORITHMS + ["DIRECT", "Im2col"]),
)
def test_hypothesis_against_reference(problem, dtype, algorithm, assert_close):
    rng = np.random.default_rng(problem["seed"])
    x = rng.standard_normal(problem["shape"]).astype(dtype)
    w = rng.standard_normal(problem["wshape"]).astype(dtype)
    b = rng.standard_normal(problem["wshape"][0]).astype(dtype) if problem["bias"] else None
    check_against_reference(x, w, b, problem["conv"], algorithm, rng, assert_close)


# --------------------------------------------------------------------------- #
# against PyTorch
# --------------------------------------------------------------------------- #


def torch_conv2d(torch, x, w, b, stride=1, padding=0, dilation=1, groups=1, flip=False):
    """y, gx, gw, gb from torch (float64) for a random gy; returns numpy arrays."""
    F = torch.nn.functional
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64)).requires_grad_()
    wt = torch.from_numpy(np.asarray(w, dtype=np.float64)).requires_grad_()
    bt = None if b is None else torch.from_numpy(np.asarray(b, dtype=np.float64)).requires_grad_()
    weight = torch.flip(wt, dims=(2, 3)) if flip else wt
    kh, kw = w.shape[2:]
    dh, dw = pair_ref(dilation)
    inp = xt
    if isinstance(padding, str) and padding.lower() == "valid":
        tpad = "valid"
    elif isinstance(padding, str) and padding.lower() == "same" and pair_ref(stride) == (1, 1):
        tpad = "same"  # torch supports "same" only with stride 1
    elif isinstance(padding, str) and padding.lower() == "full":
        tpad = (dh * (kh - 1), dw * (kw - 1))
    else:
        (pt, pb), (pl, pr) = normalize_padding_ref(padding, x.shape[2:], (kh, kw), stride, dilation)
        if pt == pb and pl == pr:
            tpad = (pt, pl)
        else:  # asymmetric: pad the input first
            inp = F.pad(xt, (pl, pr, pt, pb))
            tpad = 0
    y = F.conv2d(inp, weight, bt, stride=pair_ref(stride), padding=tpad,
                 dilation=(dh, dw), groups=groups)
    gy = torch.from_numpy(np.random.default_rng(7).standard_normal(tuple(y.shape)))
    y.backward(gy)
    gb = bt.grad.numpy() if bt is not None else gy.sum(dim=(0, 2, 3)).numpy()
    return y.detach().numpy(), gy.numpy(), xt.grad.numpy(), wt.grad.numpy(), gb


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@pytest.mark.parametrize("case", MATRIX + EDGE, ids=[_case_id(c) for c in MATRIX + EDGE])
def test_against_torch(case, dtype, torch, rng, assert_close):
    conv = case["conv"]
    x, w, b = make_problem(
        rng, case["n"], case["c"], *case["size"], case["k"], *case["kernel"],
        conv.get("groups", 1), dtype, case["bias"],
    )
    y_t, gy, gx_t, gw_t, gb_t = torch_conv2d(torch, x, w, b, **conv)
    y = fc.conv2d(x, w, b, **conv)
    assert_close(y, y_t, err_msg="y:")
    gx, gw, gb = fc.conv2d_backward(gy.astype(dtype), x, w, **conv)
    assert_close(gx, gx_t, err_msg="gx:")
    assert_close(gw, gw_t, err_msg="gw:")
    assert_close(gb, gb_t, err_msg="gb:")


# --------------------------------------------------------------------------- #
# finite differences of fastconv's own forward (float64)
# --------------------------------------------------------------------------- #

FD_CASES = [
    ((2, 2, 5, 4), (3, 2, 3, 2), dict()),
    ((1, 2, 6, 5), (2, 2, 3, 3), dict(stride=2, padding=1, flip=True)),
    ((2, 4, 5, 6), (4, 2, 2, 3),
     dict(stride=(2, 1), padding=((0, 2), (1, 0)), dilation=(1, 2), groups=2)),
    ((1, 3, 5, 5), (3, 1, 3, 3), dict(padding="same", dilation=2, groups=3, flip=True)),
    ((1, 2, 4, 5), (2, 2, 2, 2), dict(stride=2, padding="same")),
    ((2, 1, 3, 3), (2, 1, 2, 2), dict(padding="full")),
]


def _numerical_gradient(f, a, eps=1e-4):
    """Central differences of scalar f with respect to every element of a."""
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


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("xs, ws, conv", FD_CASES)
def test_finite_differences_full(xs, ws, conv, algorithm, rng):
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    gy = rng.standard_normal(fc.conv2d(x, w, b, **conv, algorithm=algorithm).shape)

    def loss():
        return float(np.sum(gy * fc.conv2d(x, w, b, **conv, algorithm=algorithm)))

    gx, gw, gb = fc.conv2d_backward(gy, x, w, **conv, algorithm=algorithm)
    for name, got, var in (("gx", gx, x), ("gw", gw, w), ("gb", gb, b)):
        num = _numerical_gradient(loss, var)
        np.testing.assert_allclose(got, num, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "xs, ws, conv",
    [
        ((3, 6, 12, 11), (8, 3, 3, 3), dict(stride=2, padding="same", groups=2)),
        ((2, 4, 10, 13), (4, 1, 3, 4),
         dict(stride=(1, 2), dilation=(2, 1), padding=((2, 0), (1, 3)), groups=4, flip=True)),
        ((4, 5, 9, 9), (7, 5, 1, 1), dict()),
    ],
)
def test_finite_differences_directional(xs, ws, conv, algorithm, rng):
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    gy = rng.standard_normal(fc.conv2d(x, w, b, **conv, algorithm=algorithm).shape)
    gx, gw, gb = fc.conv2d_backward(gy, x, w, **conv, algorithm=algorithm)
    eps = 1e-3

    def loss(x_, w_, b_):
        return float(np.sum(gy * fc.conv2d(x_, w_, b_, **conv, algorithm=algorithm)))

    for _ in range(3):
        dx, dw, db = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
        num = (loss(x + eps * dx, w, b) - loss(x - eps * dx, w, b)) / (2 * eps)
        assert np.isclose(num, np.sum(gx * dx), rtol=1e-7, atol=1e-7)
        num = (loss(x, w + eps * dw, b) - loss(x, w - eps * dw, b)) / (2 * eps)
        assert np.isclose(num, np.sum(gw * dw), rtol=1e-7, atol=1e-7)
        num = (loss(x, w, b + eps * db) - loss(x, w, b - eps * db)) / (2 * eps)
        assert np.isclose(num, np.sum(gb * db), rtol=1e-7, atol=1e-7)


# --------------------------------------------------------------------------- #
# array-like inputs, inputs left alone, dtype rule
# --------------------------------------------------------------------------- #

CONV = dict(stride=(2, 1), padding=((1, 0), (0, 2)), dilation=(1, 2), groups=2)


def _base(rng, dtype=np.float64):
    x = rng.standard_normal((2, 4, 7, 8)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    gy = rng.standard_normal(conv2d_ref(x, w, b, **CONV).shape).astype(dtype)
    return x, w, b, gy


def _check_all(x, w, b, gy, expected_dtype, algorithm, assert_close, conv=CONV):
    y = fc.conv2d(x, w, b, **conv, algorithm=algorithm)
    assert y.dtype == expected_dtype
    assert_close(y, conv2d_ref(x, w, b, **conv), err_msg="y:")
    gx, gw, gb = fc.conv2d_backward(gy, x, w, **conv, algorithm=algorithm)
    for name, got, ref in zip(("gx", "gw", "gb"), (gx, gw, gb), conv2d_backward_ref(gy, x, w, **conv)):
        assert got.dtype == expected_dtype, name
        assert_close(got, ref, err_msg=f"{name}:")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_nested_lists(algorithm, rng, assert_close):
    x, w, b, gy = _base(rng)
    _check_all(x.tolist(), w.tolist(), b.tolist(), gy.tolist(), np.float64, algorithm, assert_close)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_nested_integer_lists(algorithm, assert_close):
    x = [[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]]
    w = [[[[1, 2], [3, 4]]]]
    y = fc.conv2d(x, w, algorithm=algorithm)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, [[[[37.0, 47.0], [67.0, 77.0]]]])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("layout", ["fortran", "reversed", "strided", "transposed"])
def test_non_contiguous_inputs(layout, algorithm, dtype, rng, assert_close):
    x, w, b, gy = _base(rng, dtype)
    if layout == "fortran":
        xs, ws, bs, gys = (np.asfortranarray(a) for a in (x, w, b, gy))
        assert not xs.flags.c_contiguous
    elif layout == "reversed":
        xs, ws, bs = x[:, :, ::-1], w[:, :, ::-1, ::-1], b[::-1]
        gys = gy[:, ::-1, ::-1]
    elif layout == "strided":
        big = np.zeros(x.shape[:3] + (2 * x.shape[3],), dtype)
        big[..., ::2] = x
        xs = big[..., ::2]
        wbig = np.zeros((w.shape[0] * 2,) + w.shape[1:], dtype)
        wbig[::2] = w
        ws = wbig[::2]
        bs, gys = np.repeat(b, 2)[::2], np.repeat(gy, 3, axis=0)[::3]
    else:  # transposed views of C arrays holding the same values
        xs = np.ascontiguousarray(x.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)
        ws = np.ascontiguousarray(w.transpose(2, 3, 0, 1)).transpose(2, 3, 0, 1)
        bs = b
        gys = np.ascontiguousarray(gy.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    _check_all(xs, ws, bs, gys, dtype, algorithm, assert_close)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_read_only_inputs(algorithm, dtype, rng, assert_close):
    x, w, b, gy = _base(rng, dtype)
    for a in (x, w, b, gy):
        a.flags.writeable = False
    _check_all(x, w, b, gy, dtype, algorithm, assert_close)
    # read-only and non-contiguous at once
    _check_all(x[:, :, ::-1], w[..., ::-1], b, gy, dtype, algorithm, assert_close)


@pytest.mark.parametrize("needs_input_grad", [True, False])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_inputs_not_modified(algorithm, needs_input_grad, dtype, rng):
    x, w, b, gy = _base(rng, dtype)
    views = (x[:, :, ::-1], w, b, gy)
    copies = [np.array(a, copy=True) for a in (x, w, b, gy)]
    y = fc.conv2d(views[0], w, b, **CONV, algorithm=algorithm)
    for conv in (CONV, dict(CONV, flip=True)):
        fc.conv2d(x, w, b, **conv, algorithm=algorithm)
        fc.conv2d_backward(gy, x, w, **conv, algorithm=algorithm, needs_input_grad=needs_input_grad)
        fc.conv2d_backward(gy, views[0], w, **conv, algorithm=algorithm,
                           needs_input_grad=needs_input_grad)
    for a, c in zip((x, w, b, gy), copies):
        np.testing.assert_array_equal(a, c)
    for a in (x, w, b, gy):
        assert not np.shares_memory(y, a)
    gx, gw, gb = fc.conv2d_backward(gy, x, w, **CONV, algorithm=algorithm)
    for g in (gx, gw, gb):
        for a in (x, w, b, gy):
            assert not np.shares_memory(g, a)


@pytest.mark.parametrize(
    "x_dtype, w_dtype, expected",
    [
        (np.float32, np.float32, np.float32),
        (np.float64, np.float64, np.float64),
        (np.float32, np.float64, np.float64),
        (np.float64, np.float32, np.float64),
        (np.float16, np.float16, np.float32),
        (np.float16, np.float32, np.float32),
        (np.float32, np.float16, np.float32),
        (np.float16, np.float64, np.float64),
        (np.int64, np.float32, np.float64),
        (np.float32, np.int32, np.float64),
        (np.int8, np.int8, np.float64),
        (np.uint8, np.float32, np.float64),
        (np.bool_, np.float32, np.float64),
        (np.float32, np.bool_, np.float64),
        (np.int16, np.float64, np.float64),
    ],
)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_dtype_rule(x_dtype, w_dtype, expected, algorithm, rng, assert_close):
    def sample(shape, dt):
        if np.dtype(dt) == np.bool_:
            return rng.random(shape) < 0.5
        if np.issubdtype(dt, np.integer):
            return rng.integers(0, 5, size=shape).astype(dt)
        return rng.standard_normal(shape).astype(dt)

    x = sample((2, 4, 6, 7), x_dtype)
    w = sample((6, 2, 3, 3), w_dtype)
    conv = dict(padding=1, groups=2)
    y = fc.conv2d(x, w, **conv, algorithm=algorithm)
    assert y.dtype == expected
    assert_close(y, conv2d_ref(x, w, None, **conv), dtype=expected)
    gy = rng.standard_normal(y.shape).astype(expected)
    grads = fc.conv2d_backward(gy, x, w, **conv, algorithm=algorithm)
    for name, got, ref in zip(("gx", "gw", "gb"), grads, conv2d_backward_ref(gy, x, w, **conv)):
        assert got.dtype == expected, f"{name} dtype {got.dtype} != {np.dtype(expected)}"
        assert_close(got, ref, dtype=expected, err_msg=f"{name}:")


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #

X_NAME = r"\bx\b"
W_NAME = r"\bw\b"
B_NAME = r"\bb\b|\bbias\b"
GY_NAME = r"\bgy\b"


def _good():
    return dict(x=np.ones((2, 4, 6, 6)), w=np.ones((6, 2, 3, 3)), groups=2)


BAD_CONV2D = [
    # (id, overrides, exception, match)
    ("x-3d", dict(x=np.ones((4, 6, 6))), ValueError, X_NAME),
    ("x-5d", dict(x=np.ones((1, 2, 4, 6, 6))), ValueError, X_NAME),
    ("x-0d", dict(x=1.0), (ValueError, TypeError), X_NAME),
    ("w-3d", dict(w=np.ones((6, 2, 3))), ValueError, W_NAME),
    ("w-5d", dict(w=np.ones((6, 2, 3, 3, 1))), ValueError, W_NAME),
    ("channel-mismatch", dict(w=np.ones((6, 3, 3, 3))), ValueError, rf"{X_NAME}|{W_NAME}|groups"),
    ("channel-mismatch-g1", dict(w=np.ones((6, 3, 3, 3)), groups=1), ValueError,
     rf"{X_NAME}|{W_NAME}|groups"),
    ("groups-not-dividing-C", dict(w=np.ones((6, 1, 3, 3)), groups=3), ValueError,
     rf"groups|{X_NAME}|{W_NAME}"),
    ("groups-not-dividing-K", dict(w=np.ones((5, 2, 3, 3))), ValueError, "groups"),
    ("groups-0", dict(groups=0), ValueError, "groups"),
    ("groups-negative", dict(groups=-2), ValueError, "groups"),
    ("groups-float", dict(groups=2.5), (ValueError, TypeError), "groups"),
    ("groups-str", dict(groups="2"), (ValueError, TypeError), "groups"),
    ("stride-0", dict(stride=0), ValueError, "stride"),
    ("stride-negative", dict(stride=-1), ValueError, "stride"),
    ("stride-pair-0", dict(stride=(1, 0)), ValueError, "stride"),
    ("stride-pair-negative", dict(stride=(-2, 1)), ValueError, "stride"),
    ("stride-triple", dict(stride=(1, 1, 1)), (ValueError, TypeError), "stride"),
    ("stride-float", dict(stride=1.5), (ValueError, TypeError), "stride"),
    ("dilation-0", dict(dilation=0), ValueError, "dilation"),
    ("dilation-negative", dict(dilation=-2), ValueError, "dilation"),
    ("dilation-pair-0", dict(dilation=(0, 1)), ValueError, "dilation"),
    ("padding-negative", dict(padding=-1), ValueError, "padding"),
    ("padding-pair-negative", dict(padding=(0, -1)), ValueError, "padding"),
    ("padding-4-negative", dict(padding=((0, 1), (-1, 0))), ValueError, "padding"),
    ("padding-word", dict(padding="middle"), ValueError, "padding"),
    ("padding-empty-word", dict(padding=""), ValueError, "padding"),
    ("padding-triple", dict(padding=(1, 1, 1)), (ValueError, TypeError), "padding"),
    ("padding-float", dict(padding=0.5), (ValueError, TypeError), "padding"),
    ("algorithm-unknown", dict(algorithm="fft"), ValueError, "algorithm"),
    ("algorithm-empty", dict(algorithm=""), ValueError, "algorithm"),
    ("algorithm-none", dict(algorithm=None), (ValueError, TypeError), "algorithm"),
    ("kernel-larger", dict(x=np.ones((2, 4, 2, 6))), ValueError, "kernel"),
    ("kernel-larger-dilated", dict(dilation=3), ValueError, "kernel"),
    ("kernel-larger-than-padded", dict(w=np.ones((6, 2, 9, 3)), padding=1), ValueError, "kernel"),
    ("bias-length", dict(b=np.ones(5)), ValueError, B_NAME),
    ("bias-2d", dict(b=np.ones((1, 6))), ValueError, B_NAME),
    ("bias-0d", dict(b=1.0), (ValueError, TypeError), B_NAME),
    ("x-complex", dict(x=np.ones((2, 4, 6, 6), complex)), TypeError, X_NAME),
    ("w-complex", dict(w=np.ones((6, 2, 3, 3), np.complex64)), TypeError, W_NAME),
    ("b-complex", dict(b=np.ones(6, complex)), TypeError, B_NAME),
    ("x-object", dict(x=np.ones((2, 4, 6, 6)).astype(object)), TypeError, X_NAME),
    ("w-object", dict(w=np.ones((6, 2, 3, 3)).astype(object)), TypeError, W_NAME),
    ("x-string", dict(x=np.full((2, 4, 6, 6), "a")), TypeError, X_NAME),
    ("w-string", dict(w=np.full((6, 2, 3, 3), "1")), TypeError, W_NAME),
    ("x-bytes", dict(x=np.full((2, 4, 6, 6), b"1")), TypeError, X_NAME),
    ("padding-overflow", dict(padding=2**62), ValueError, "overflow|too large"),
    ("padding-overflow-one-side", dict(padding=((0, 2**62), (0, 0))), ValueError, "overflow|too large"),
    ("padding-overflow-int64", dict(padding=2**63), ValueError, "overflow|too large"),
    ("padding-overflow-huge", dict(padding=10**30), ValueError, "overflow|too large"),
]


@pytest.mark.parametrize("algorithm", ["auto", "direct", "im2col"])
@pytest.mark.parametrize("overrides, exc, match", [c[1:] for c in BAD_CONV2D],
                         ids=[c[0] for c in BAD_CONV2D])
def test_conv2d_bad_input(overrides, exc, match, algorithm):
    args = _good()
    args["algorithm"] = algorithm
    args.update(overrides)
    with pytest.raises(exc, match=match):
        fc.conv2d(**args)


BAD_BACKWARD = [
    ("gy-3d", dict(gy=np.ones((6, 4, 4))), ValueError, GY_NAME),
    ("gy-batch", dict(gy=np.ones((3, 6, 4, 4))), ValueError, GY_NAME),
    ("gy-channels", dict(gy=np.ones((2, 5, 4, 4))), ValueError, GY_NAME),
    ("gy-height", dict(gy=np.ones((2, 6, 5, 4))), ValueError, GY_NAME),
    ("gy-width", dict(gy=np.ones((2, 6, 4, 3))), ValueError, GY_NAME),
    ("gy-complex", dict(gy=np.ones((2, 6, 4, 4), complex)), TypeError, GY_NAME),
    ("gy-object", dict(gy=np.ones((2, 6, 4, 4)).astype(object)), TypeError, GY_NAME),
    ("gy-string", dict(gy=np.full((2, 6, 4, 4), "a")), TypeError, GY_NAME),
    ("x-3d", dict(x=np.ones((4, 6, 6))), ValueError, X_NAME),
    ("w-3d", dict(w=np.ones((6, 2, 3))), ValueError, W_NAME),
    ("channel-mismatch", dict(w=np.ones((6, 3, 3, 3))), ValueError, rf"{X_NAME}|{W_NAME}|groups"),
    ("groups-not-dividing-K", dict(w=np.ones((5, 2, 3, 3))), ValueError, "groups"),
    ("groups-0", dict(groups=0), ValueError, "groups"),
    ("stride-0", dict(stride=0), ValueError, "stride"),
    ("dilation-negative", dict(dilation=-1), ValueError, "dilation"),
    ("padding-negative", dict(padding=-1), ValueError, "padding"),
    ("padding-word", dict(padding="wide"), ValueError, "padding"),
    ("algorithm-unknown", dict(algorithm="fft"), ValueError, "algorithm"),
    ("kernel-larger", dict(x=np.ones((2, 4, 2, 6))), ValueError, "kernel"),
    ("x-complex", dict(x=np.ones((2, 4, 6, 6), complex)), TypeError, X_NAME),
    ("w-object", dict(w=np.ones((6, 2, 3, 3)).astype(object)), TypeError, W_NAME),
    ("padding-overflow", dict(padding=2**62), ValueError, "overflow|too large"),
]


@pytest.mark.parametrize("overrides, exc, match", [c[1:] for c in BAD_BACKWARD],
                         ids=[c[0] for c in BAD_BACKWARD])
def test_conv2d_backward_bad_input(overrides, exc, match):
    args = _good()
    args["gy"] = np.ones((2, 6, 4, 4))
    args.update(overrides)
    with pytest.raises(exc, match=match):
        fc.conv2d_backward(**args)


def test_good_base_arguments_are_valid():
    """The base of the bad-input cases is itself accepted."""
    args = _good()
    assert fc.conv2d(**args).shape == (2, 6, 4, 4)
    gx, gw, gb = fc.conv2d_backward(np.ones((2, 6, 4, 4)), **args)
    assert gx.shape == (2, 4, 6, 6) and gw.shape == (6, 2, 3, 3) and gb.shape == (6,)


# --------------------------------------------------------------------------- #
# empty batch
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "conv, out_hw",
    [
        (dict(), (5, 4)),
        (dict(padding="same", stride=2, groups=2), (4, 3)),
        (dict(padding=((1, 0), (0, 2)), dilation=(2, 1), flip=True), (4, 6)),
    ],
)
def test_empty_batch(conv, out_hw, algorithm, dtype):
    x = np.zeros((0, 4, 7, 6), dtype)
    w = np.ones((6, 4 // conv.get("groups", 1), 3, 3), dtype)
    b = np.ones(6, dtype)
    y = fc.conv2d(x, w, b, **conv, algorithm=algorithm)
    assert y.shape == (0, 6) + out_hw
    assert y.dtype == dtype
    gy = np.zeros((0, 6) + out_hw, dtype)
    gx, gw, gb = fc.conv2d_backward(gy, x, w, **conv, algorithm=algorithm)
    assert gx.shape == x.shape and gx.dtype == dtype
    assert gw.shape == w.shape and gw.dtype == dtype
    assert gb.shape == (6,) and gb.dtype == dtype
    np.testing.assert_array_equal(gw, 0.0)
    np.testing.assert_array_equal(gb, 0.0)
    gx, gw, gb = fc.conv2d_backward(gy, x, w, **conv, algorithm=algorithm, needs_input_grad=False)
    assert gx is None
    np.testing.assert_array_equal(gw, np.zeros(w.shape))
    np.testing.assert_array_equal(gb, np.zeros(6))


# --------------------------------------------------------------------------- #
# needs_input_grad
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "conv",
    [dict(), dict(stride=2, padding="same", groups=2, flip=True), dict(dilation=2, padding=(0, 3))],
)
def test_needs_input_grad_false(conv, algorithm, dtype, rng):
    x, w, _ = make_problem(rng, 3, 4, 9, 8, 6, 3, 3, conv.get("groups", 1), dtype, bias=False)
    gy = rng.standard_normal(fc.conv2d(x, w, **conv, algorithm=algorithm).shape).astype(dtype)
    gx, gw, gb = fc.conv2d_backward(gy, x, w, **conv, algorithm=algorithm)
    none, gw2, gb2 = fc.conv2d_backward(gy, x, w, **conv, algorithm=algorithm, needs_input_grad=False)
    assert gx is not None and gx.shape == x.shape
    assert none is None
    np.testing.assert_array_equal(gw2, gw)
    np.testing.assert_array_equal(gb2, gb)


# --------------------------------------------------------------------------- #
# threads: results independent of the thread count, bit for bit
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("n", [1, 3, 7, 16])
@pytest.mark.parametrize(
    "c, k, size, kernel, conv",
    [
        (3, 8, (12, 11), (3, 3), dict(padding=1)),
        (4, 6, (10, 9), (3, 2), dict(stride=2, padding="same", dilation=(1, 2), groups=2, flip=True)),
        (6, 12, (8, 8), (1, 1), dict()),
    ],
    ids=["3x3", "grouped-strided", "1x1"],
)
def test_one_and_two_threads_bit_identical(c, k, size, kernel, conv, n, algorithm, dtype, rng,
                                            restore_threads):
    x, w, b = make_problem(rng, n, c, *size, k, *kernel, conv.get("groups", 1), dtype)
    results = {}
    for threads in (1, 2):
        with fc.threads(threads):
            assert fc.get_num_threads() == threads
            y = fc.conv2d(x, w, b, **conv, algorithm=algorithm)
            gy = np.cos(np.arange(y.size, dtype=dtype)).reshape(y.shape)
            grads = fc.conv2d_backward(gy, x, w, **conv, algorithm=algorithm)
            results[threads] = (y,) + tuple(grads)
    for name, one, two in zip(("y", "gx", "gw", "gb"), results[1], results[2]):
        assert one.dtype == two.dtype
        assert np.array_equal(one, two), (
            f"{name} differs between 1 and 2 threads: max abs diff "
            f"{np.max(np.abs(one.astype(np.float64) - two)):.3g}"
        )


# --------------------------------------------------------------------------- #
# the GIL is released while the kernels run
# --------------------------------------------------------------------------- #


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _problem_taking(seconds, algorithm, backward=False):
    """A float32 problem whose single-threaded call takes about ``seconds``."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    n = 2
    while True:
        x = rng.standard_normal((n, 16, 32, 32)).astype(np.float32)
        gy = np.ones((n, 32, 32, 32), np.float32)
        if backward:
            call = lambda x=x, gy=gy: fc.conv2d_backward(gy, x, w, padding=1, algorithm=algorithm)
        else:
            call = lambda x=x: fc.conv2d(x, w, padding=1, algorithm=algorithm)
        elapsed = min(_timed(call) for _ in range(2))
        if elapsed >= seconds or n >= 512:
            return call, elapsed
        n = min(512, max(2 * n, int(n * 1.2 * seconds / max(elapsed, 1e-4))))


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_gil_released_during_call(algorithm, backward, restore_threads):
    """While one Python thread is inside conv2d, another keeps running.

    If the call held the GIL, the main thread could not run a single bytecode
    between the start and the end of the call, so the longest pause between
    its time stamps would span the whole call. Released, the pauses are
    a few milliseconds (the GIL switch interval and OS scheduling).
    """
    with fc.threads(1):
        call, _ = _problem_taking(0.25, algorithm, backward)
        span = {}

        def worker():
            t0 = time.perf_counter()
            call()
            span["t"] = (t0, time.perf_counter())

        stamps = []
        th = threading.Thread(target=worker)
        th.start()
        while th.is_alive():
            stamps.append(time.perf_counter())
            time.sleep(0.001)  # needs the GIL back to wake up
        th.join()
    t0, t1 = span["t"]
    inside = [t0] + [s for s in stamps if t0 < s < t1] + [t1]
    longest = float(np.max(np.diff(inside)))
    assert longest < 0.5 * (t1 - t0), (
        f"main thread stalled {longest:.3f}s during a {t1 - t0:.3f}s call: GIL held?"
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_concurrent_calls_from_python_threads(algorithm, rng, restore_threads):
    """Python threads calling conv2d at once get the same answers as serial calls."""
    problems = []
    for i in range(4):
        x, w, b = make_problem(rng, 3, 4, 16 + i, 15, 8, 3, 3, 2, np.float64)
        conv = dict(padding="same", groups=2, stride=1 + i % 2)
        gy = rng.standard_normal(conv2d_ref(x, w, b, **conv).shape)
        problems.append((x, w, b, gy, conv))

    def compute(p):
        x, w, b, gy, conv = p
        return (fc.conv2d(x, w, b, **conv, algorithm=algorithm),
                *fc.conv2d_backward(gy, x, w, **conv, algorithm=algorithm))

    for threads in (1, 2):
        with fc.threads(threads):
            serial = [compute(p) for p in problems]
            results = [[None] * len(problems) for _ in range(3)]
            errors = []

            def run(rep, i):
                try:
                    results[rep][i] = compute(problems[i])
                except BaseException as e:  # pragma: no cover - reported below
                    errors.append(e)

            workers = [threading.Thread(target=run, args=(rep, i))
                       for rep in range(3) for i in range(len(problems))]
            for t in workers:
                t.start()
            for t in workers:
                t.join()
            assert not errors, errors
            for rep in range(3):
                for got, ref in zip(results[rep], serial):
                    for g, r in zip(got, ref):
                        assert np.array_equal(g, r)


def _two_threads_vs_serial(call, repeats=3):
    """(best serial time of two calls, best time of two calls in two threads)."""

    def serial():
        call()
        call()

    def parallel():
        ts = [threading.Thread(target=call) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    t_serial = min(_timed(serial) for _ in range(repeats))
    t_parallel = min(_timed(parallel) for _ in range(repeats))
    return t_serial, t_parallel


# A speed measurement, so opt-in (pytest -m slow): on a loaded machine it can fail
# for reasons of its own. test_gil_released_during_call shows the GIL is released
# deterministically.
@pytest.mark.slow
@pytest.mark.skipif(_usable_cpus() < 2, reason="needs at least 2 usable CPUs to run in parallel")
@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
def test_python_threads_run_in_parallel(algorithm, restore_threads):
    """Two Python threads each making one single-threaded call finish clearly
    faster than two calls in a row (best of 5; perfect parallelism gives 0.5).

    A control workload that is known to release the GIL (hashing a large
    buffer) is timed the same way first; when even that does not run in
    parallel, the machine has no spare core right now and the test is skipped.
    """
    with fc.threads(1):
        call, elapsed = _problem_taking(0.1, algorithm)
        buf = b"\0" * (1 << 20)
        per_mb = _timed(lambda: hashlib.sha256(buf).digest())
        data = b"\0" * int((1 << 20) * max(1.0, elapsed / max(per_mb, 1e-6)))
        c_serial, c_parallel = _two_threads_vs_serial(lambda: hashlib.sha256(data).digest(), 5)
        if c_parallel > 0.75 * c_serial:
            pytest.skip(
                f"no spare core: a GIL-free control took {c_parallel:.3f}s in 2 threads "
                f"vs {c_serial:.3f}s serially"
            )
        t_serial, t_parallel = _two_threads_vs_serial(call, 5)
    assert t_parallel < 0.85 * t_serial, (
        f"2 Python threads took {t_parallel:.3f}s vs {t_serial:.3f}s serially "
        f"(control: {c_parallel:.3f}s vs {c_serial:.3f}s)"
    )


@pytest.mark.parametrize("k, groups, bias", [(512, 1, True), (600, 1, True), (1040, 2, False)])
def test_im2col_forward_in_output_channel_blocks(k, groups, bias):
    """One small image with many output channels: the GEMM runs in blocks of output
    channels (the last one shorter where K is not a multiple), equal to the reference
    and bit-identical on any thread count."""
    rng = np.random.default_rng(k)
    x, w, b = make_problem(rng, 1, 8 * groups, 5, 6, k, 3, 3, groups, np.float64, bias)
    plan = fc.explain(x, w, padding=1, groups=groups, algorithm="im2col")["forward"]
    assert plan.channel_block not in (0, k // groups)
    ys = []
    for n in (1, 2, 3):
        with fc.threads(n):
            ys.append(fc.conv2d(x, w, b, padding=1, groups=groups, algorithm="im2col"))
    np.testing.assert_allclose(ys[0], conv2d_ref(x, w, b, padding=1, groups=groups),
                               rtol=1e-10, atol=1e-10)
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c, k, kernel, groups, bias", [
    (60, 40, (3, 3), 1, True),    # 252 + 252 + 36 rows of columns: three products
    (96, 32, (1, 7), 2, False),   # 16 output channels per group (BLAS): 252 + 84 rows
    (3, 48, (17, 17), 1, True),   # one channel is 289 deep: a block of one channel
])
def test_im2col_forward_in_depth_blocks(dtype, c, k, kernel, groups, bias):
    """The im2col forward packs and multiplies whole input channels at most 256 deep at a
    time, adding each product to y (float32 products of 32 or more rows on fastconv's
    own GEMM): equal to the float64 reference and bit-identical on any thread count."""
    rng = np.random.default_rng(c * k)
    kh, kw = kernel
    x, w, b = make_problem(rng, 2, c, 19, 21, k, kh, kw, groups, dtype, bias)
    padding = (kh // 2, kw // 2)
    plan = fc.explain(x, w, padding=padding, groups=groups, algorithm="im2col")["forward"]
    cg, taps = c // groups, kh * kw
    block = max(1, min(cg, 256 // taps))
    assert plan.workspace == block * taps * plan.rows * 21  # a block's columns, 21 wide
    ys = []
    for n in (1, 2, 3):
        with fc.threads(n):
            ys.append(fc.conv2d(x, w, b, padding=padding, groups=groups, algorithm="im2col"))
    ref = conv2d_ref(x.astype(np.float64), w.astype(np.float64),
                     None if b is None else b.astype(np.float64), padding=padding,
                     groups=groups)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    scale = np.abs(ref).max()
    np.testing.assert_allclose(ys[0], ref, rtol=tol, atol=tol * scale)
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [7, 15, 16, 17, 18, 33, 35])
@pytest.mark.parametrize("n, c, kernel, padding, dilation", [
    (1, 1, (1, 1), 0, 1),       # the last tap of x's last row is x's last element
    (2, 3, (3, 3), 1, 1),       # ResNet's 3x3 s2 p1
    (1, 2, (1, 3), (0, 1), 1),
    (2, 2, (3, 3), 0, (1, 2)),  # a dilated row: taps two apart
])
def test_im2col_stride_2_rows_in_vectors(dtype, width, n, c, kernel, padding, dilation, rng,
                                         assert_close):
    """im2col rows at stride 2 are gathered in SIMD vectors (8 float, 4 double; the last
    overlapping the one before) where the element one past a row's last tap lies inside
    x, and by the scalar loop where it does not (a 1x1 over an odd width reaches x's
    last element): forward and gradients against the reference, output widths 4 to 18."""
    x, w, b = make_problem(rng, n, c, 5, width, 4, *kernel, 1, dtype)
    conv = dict(stride=2, padding=padding, dilation=dilation, groups=1, flip=False)
    check_against_reference(x, w, b, conv, "im2col", rng, assert_close)


@pytest.mark.skipif(sys.platform != "linux", reason="mprotect through ctypes: Linux only")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_stride_2_rows_never_read_past_x(dtype, rng, assert_close):
    """x's last element just before a page that cannot be read: the vector gather, whose
    loads reach one element past a row's last tap, must leave that row to the scalar
    loop (a read past x would crash here)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    memory = mmap.mmap(-1, 2 * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    shape = (1, 1, 5, 17)
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    x = np.frombuffer(memory, dtype=dtype, count=int(np.prod(shape)),
                      offset=page - size).reshape(shape)
    x[...] = rng.standard_normal(shape)
    w = rng.standard_normal((4, 1, 1, 1)).astype(dtype)
    assert libc.mprotect(base + page, page, 0) == 0, ctypes.get_errno()  # PROT_NONE
    try:
        y = fc.conv2d(x, w, stride=2, algorithm="im2col")
        assert_close(y, conv2d_ref(x, w, None, stride=2))
    finally:
        libc.mprotect(base + page, page, mmap.PROT_READ | mmap.PROT_WRITE)
        del x
        memory.close()


@pytest.mark.parametrize("size, stride", [((7, 7), 1), ((8, 8), 1), ((9, 9), 1), ((14, 14), 2),
                                          ((16, 16), 2)])
def test_im2col_input_gradient_over_small_maps(size, stride, restore_threads):
    """The input gradient's product over bands of at most 64 pixels of gy (7x7 and 8x8)
    runs fastconv's own GEMM with w transposed in place (float32, AVX2), over larger ones
    BLAS: deep layers equal to the float64 reference and bit-identical on 1, 2 and 3
    threads either way."""
    rng = np.random.default_rng(size[0] + stride)
    x = rng.standard_normal((2, 48, *size)).astype(np.float32)
    w = rng.standard_normal((80, 48, 3, 3)).astype(np.float32)
    conv = dict(stride=stride, padding=1)
    gy = rng.standard_normal(conv2d_ref(x, w, None, **conv).shape).astype(np.float32)
    gxs = []
    for threads in (1, 2, 3):
        with fc.threads(threads):
            gxs.append(fc.conv2d_backward(gy, x, w, **conv, algorithm="im2col")[0])
    gx_ref = conv2d_backward_ref(gy.astype(np.float64), x.astype(np.float64),
                                 w.astype(np.float64), **conv)[0]
    np.testing.assert_allclose(gxs[0], gx_ref, rtol=1e-4, atol=1e-4 * np.abs(gx_ref).max())
    for gx in gxs[1:]:
        np.testing.assert_array_equal(gx, gxs[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c, k, kernel, padding, size", [
    (40, 44, 1, 0, 13),   # pointwise, own GEMM in float32: 7 tiles of rows, the last of 2
    (16, 39, 3, 1, 13),   # im2col, one depth block of 144
    (200, 40, 1, 0, 13),  # pointwise, 200 deep
    (20, 20, 3, 1, 13),   # under 32 rows: BLAS after a bias fill
    (24, 45, 3, 1, 7),    # 49 pixels: the last column in dot products
])
def test_im2col_forward_bias_joins_the_first_product(dtype, c, k, kernel, padding, size,
                                                     restore_threads):
    """The im2col forward's bias is added as the first depth block's product is stored
    (fastconv's own GEMM) or filled in before it (BLAS): with one depth block, y equals
    the unbiased y plus the bias bit for bit, on every row (edge tiles of 1-5 rows) and
    column (13x13: tiles of 16 and a last one of 9; 7x7: a last one of 1), on any thread
    count."""
    rng = np.random.default_rng(c + k)
    x = rng.standard_normal((3, c, size, size)).astype(dtype)
    w = rng.standard_normal((k, c, kernel, kernel)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    plan = fc.explain(x, w, padding=padding, algorithm="im2col")["forward"]
    assert plan.kernel == "gemm" and plan.pointwise == (kernel == 1)
    ys = []
    for threads in (1, 2, 3):
        with fc.threads(threads):
            ys.append(fc.conv2d(x, w, b, padding=padding, algorithm="im2col"))
            unbiased = fc.conv2d(x, w, None, padding=padding, algorithm="im2col")
            np.testing.assert_array_equal(ys[-1], unbiased + b[None, :, None, None])
    y_ref = conv2d_ref(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                       padding=padding)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(ys[0], y_ref, rtol=tol, atol=tol * np.abs(y_ref).max())
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, c, k, kernel, padding, dilation, groups, bias", [
    (4, 24, 40, (7, 1), (3, 0), 1, 1, True),                 # Inception's 7x1, smaller
    (3, 8, 36, (3, 1), ((0, 2), (0, 0)), (2, 3), 2, False),  # pads below only, dilated
    (1, 64, 160, (5, 1), (1, 0), 1, 4, True),                # four groups of one image
    (5, 6, 8, (4, 1), 0, 1, 1, True),                        # under 32 rows: BLAS
])
def test_im2col_forward_taps_on_shifted_rows(dtype, n, c, k, kernel, padding, dilation,
                                              groups, bias):
    """A kernel one column wide at stride 1, unpadded left and right: each tap multiplies
    x's own rows, shifted, over the output rows where they exist (no columns packed):
    equal to the float64 reference and bit-identical on any thread count."""
    rng = np.random.default_rng(k + n)
    x, w, b = make_problem(rng, n, c, 11, 9, k, *kernel, groups, dtype, bias)
    options = dict(padding=padding, dilation=dilation, groups=groups, algorithm="im2col")
    plan = fc.explain(x, w, **{key: v for key, v in options.items()})["forward"]
    assert plan.shifted_rows and "shifted rows" in plan.describe()
    ys = []
    for threads in (1, 2, 3):
        with fc.threads(threads):
            ys.append(fc.conv2d(x, w, b, **options))
    ref = conv2d_ref(x.astype(np.float64), w.astype(np.float64),
                     None if b is None else b.astype(np.float64), padding=padding,
                     dilation=dilation, groups=groups)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(ys[0], ref, rtol=tol, atol=tol * np.abs(ref).max())
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])


@pytest.mark.parametrize("n, kernel, padding, stride", [
    (4, (1, 7), (0, 3), 1),   # one row wide, not one column
    (4, (7, 1), (3, 1), 1),   # padded left and right
    (4, (3, 1), (1, 0), 2),   # strided
    (2, (7, 1), (3, 0), 1),   # two images: packing columns is as fast
])
def test_taps_on_shifted_rows_only_where_they_apply(n, kernel, padding, stride):
    x = np.zeros((n, 8, 12, 10), np.float32)
    w = np.zeros((16, 8, *kernel), np.float32)
    plan = fc.explain(x, w, stride=stride, padding=padding, algorithm="im2col")["forward"]
    assert plan.kernel == "gemm" and not plan.shifted_rows


@pytest.mark.parametrize("c, k", [(40, 48), (300, 24), (24, 144)])
def test_pointwise_backward_float32(c, k):
    """A 1x1 convolution's float32 backward (products of 32 or more rows on fastconv's own
    GEMM, x's and gy's rows their operands): equal to the float64 reference and
    bit-identical on any thread count."""
    rng = np.random.default_rng(c + k)
    x, w, _ = make_problem(rng, 3, c, 9, 11, k, 1, 1, 1, np.float32, False)
    gy = rng.standard_normal((3, k, 9, 11)).astype(np.float32)
    grads = []
    for n in (1, 2, 3):
        with fc.threads(n):
            grads.append(fc.conv2d_backward(gy, x, w, algorithm="im2col"))
    refs = conv2d_backward_ref(gy.astype(np.float64), x.astype(np.float64),
                               w.astype(np.float64))
    for got, ref in zip(grads[0], refs):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    for other in grads[1:]:
        for got, first in zip(other, grads[0]):
            np.testing.assert_array_equal(got, first)


@pytest.mark.parametrize("c, kernel, stride", [(100, 3, 1), (512, 1, 2)])
def test_im2col_weight_gradient_in_channel_blocks(c, kernel, stride):
    """The weight gradient in blocks of input channels over whole images (100 channels:
    blocks of 32, the last of 4; 1x1 stride 2: four blocks of 128), equal to the
    reference and bit-identical on any thread count."""
    rng = np.random.default_rng(c)
    x, w, _ = make_problem(rng, 1, c, 9, 8, 12, kernel, kernel, 1, np.float64, False)
    padding = kernel // 2
    plan = fc.explain(x, w, stride=stride, padding=padding, algorithm="im2col")["weight_grad"]
    assert 0 < plan.channel_block < c and plan.chunks == 1
    gy = rng.standard_normal(fc.conv2d(x, w, stride=stride, padding=padding).shape)
    grads = []
    for n in (1, 2, 3):
        with fc.threads(n):
            grads.append(fc.conv2d_backward(gy, x, w, stride=stride, padding=padding,
                                            algorithm="im2col")[1])
    _, gw_ref, _ = conv2d_backward_ref(gy, x, w, stride=stride, padding=padding)
    np.testing.assert_allclose(grads[0], gw_ref, rtol=1e-10, atol=1e-10)
    for gw in grads[1:]:
        np.testing.assert_array_equal(gw, grads[0])


@pytest.mark.parametrize("kernel, padding", [(1, 0), (3, 1)])
def test_im2col_input_gradient_in_channel_blocks(kernel, padding):
    """One image with many input channels: the GEMM input gradient runs in blocks of x's
    channels (pointwise: straight into gx), equal to the reference and bit-identical on
    any thread count."""
    rng = np.random.default_rng(kernel)
    x, w, _ = make_problem(rng, 1, 200, 5, 6, 48, kernel, kernel, 1, np.float64, False)
    gy = rng.standard_normal((1, 48, 5, 6))
    plan = fc.explain(x, w, padding=padding, algorithm="im2col")["input_grad"]
    assert 0 < plan.channel_block < 200
    grads = []
    for n in (1, 2, 3):
        with fc.threads(n):
            grads.append(fc.conv2d_backward(gy, x, w, padding=padding, algorithm="im2col"))
    gx_ref, gw_ref, _ = conv2d_backward_ref(gy, x, w, padding=padding)
    np.testing.assert_allclose(grads[0][0], gx_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grads[0][1], gw_ref, rtol=1e-10, atol=1e-10)
    for gx, gw, gb in grads[1:]:
        np.testing.assert_array_equal(gx, grads[0][0])
        np.testing.assert_array_equal(gw, grads[0][1])


@pytest.mark.parametrize("kw, dilation", [(70, 1), (5, 3), (3, 1)])
def test_row_loops_forward_rows_of_any_kernel_width(kw, dilation):
    """The row-by-row direct forward (strided and dilated, few channels): kernels wider
    than the 64 taps whose column ranges it hoists, dilated taps, bias, against the
    reference and bit-identical on any thread count."""
    rng = np.random.default_rng(kw)
    x, w, b = make_problem(rng, 2, 2, 5, 160, 3, 2, kw, 1, np.float64, True)
    conv = dict(stride=(1, 2), padding=(1, 7), dilation=(2, dilation))
    assert fc.explain(x, w, **conv, algorithm="direct")["forward"].kernel == "row_loops"
    ys = []
    for n in (1, 2, 3):
        with fc.threads(n):
            ys.append(fc.conv2d(x, w, b, **conv, algorithm="direct"))
    np.testing.assert_allclose(ys[0], conv2d_ref(x, w, b, **conv), rtol=1e-12, atol=1e-12)
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])
