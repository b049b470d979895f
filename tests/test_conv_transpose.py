"""Tests for fastconv.conv_transpose2d and fastconv.conv_transpose2d_backward.

Every result is checked against the scatter-form NumPy float64 reference in
tests/reference_ops.py, against PyTorch where it is installed, by finite
differences in float64, and by the adjoint identity
``<conv2d(x, w), y> = <x, conv_transpose2d(y, w)>``.
"""

import random

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastconv as fc

from reference import normalize_padding_ref, output_size_ref, pair_ref
from reference_ops import (
    conv_transpose2d_backward_ref,
    conv_transpose2d_output_hw_ref,
    conv_transpose2d_ref,
)

ALGORITHMS = ["auto", "direct", "im2col"]
# "auto" resolves to one of these; the matrix runs both, the sweeps and the
# torch comparisons run "auto" too
EXPLICIT = ["direct", "im2col"]


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def make_problem(rng, n, c, h, w_, k, kh, kw, groups, dtype, bias=True):
    """Random x (N, C, H, W), w (C, K/groups, KH, KW) and b (K,) in ``dtype``."""
    x = rng.standard_normal((n, c, h, w_)).astype(dtype)
    w = rng.standard_normal((c, k // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype) if bias else None
    return x, w, b


def check_against_reference(x, w, b, conv, algorithm, rng, assert_close):
    """Forward and backward through fastconv, compared with the reference.

    ``conv`` holds stride, padding, output_padding (or output_size), dilation
    and groups.
    """
    dtype = np.asarray(x).dtype
    y = fc.conv_transpose2d(x, w, b, **conv, algorithm=algorithm)
    y_ref = conv_transpose2d_ref(x, w, b, **conv)
    assert isinstance(y, np.ndarray)
    assert y.dtype == dtype
    assert_close(y, y_ref, err_msg="y:")

    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    gx, gw, gb = fc.conv_transpose2d_backward(gy, x, w, **conv, algorithm=algorithm)
    gx_ref, gw_ref, gb_ref = conv_transpose2d_backward_ref(gy, x, w, **conv)
    for name, got, ref in (("gx", gx, gx_ref), ("gw", gw, gw_ref), ("gb", gb, gb_ref)):
        assert isinstance(got, np.ndarray), name
        assert got.dtype == dtype, f"{name} dtype {got.dtype} != {dtype}"
        assert_close(got, ref, err_msg=f"{name}:")
    return y, (gx, gw, gb)


# --------------------------------------------------------------------------- #
# the parameter matrix
# --------------------------------------------------------------------------- #

STRIDES = [1, 2, (2, 3)]
PADDINGS = [0, 1, (2, 1), ((0, 2), (1, 0))]
DILATIONS = [1, (1, 2)]
GROUPINGS = ["groups1", "groups2", "depthwise"]
KERNELS = [(3, 3), (2, 3), (1, 1), (3, 1), (2, 2)]
SIZES = [(5, 6), (6, 5), (7, 5)]


def _channels(grouping, pick):
    """(C, K, groups) for a grouping name; ``pick`` varies the multiplier."""
    if grouping == "groups1":
        return 3, 4, 1
    if grouping == "groups2":
        return 4, 6, 2
    mult = 1 + pick % 2  # depthwise, channel multiplier 1 or 2
    return 3, 3 * mult, 3


def _build_matrix():
    """Stride x padding x dilation x grouping; kernel, size, batch, bias and a
    valid output_padding (< max(stride, dilation) per axis) varied across it."""
    chooser = random.Random(4321)
    cases = []
    for stride in STRIDES:
        for padding in PADDINGS:
            for dilation in DILATIONS:
                for grouping in GROUPINGS:
                    i = len(cases)
                    c, k, groups = _channels(grouping, i // 3)
                    limits = [max(s, d) for s, d in zip(pair_ref(stride), pair_ref(dilation))]
                    output_padding = tuple(chooser.randrange(lim) for lim in limits)
                    cases.append(dict(
                        n=chooser.choice([1, 2, 3]),
                        c=c,
                        k=k,
                        size=SIZES[(i // 2) % len(SIZES)],
                        kernel=KERNELS[i % len(KERNELS)],
                        conv=dict(stride=stride, padding=padding, output_padding=output_padding,
                                  dilation=dilation, groups=groups),
                        bias=chooser.random() < 0.5,
                    ))
    return cases


def _case_id(case):
    conv = case["conv"]

    def fmt(key, default):
        return str(conv.get(key, default)).replace(" ", "")

    extra = f"-os{fmt('output_size', None)}" if "output_size" in conv else ""
    return (
        f"n{case['n']}-c{case['c']}-k{case['k']}-{case['size'][0]}x{case['size'][1]}"
        f"-k{case['kernel'][0]}x{case['kernel'][1]}-s{fmt('stride', 1)}"
        f"-p{fmt('padding', 0)}-op{fmt('output_padding', 0)}-d{fmt('dilation', 1)}"
        f"-g{fmt('groups', 1)}{extra}{'-bias' if case['bias'] else ''}"
    )


MATRIX = _build_matrix()

EDGE = [
    # 1x1 kernels: the pointwise path, with and without stride / output_padding
    dict(n=2, c=5, k=7, size=(4, 5), kernel=(1, 1), conv=dict(), bias=True),
    dict(n=2, c=5, k=7, size=(4, 5), kernel=(1, 1), conv=dict(stride=2, output_padding=1),
         bias=True),
    dict(n=1, c=4, k=4, size=(4, 4), kernel=(1, 1), conv=dict(padding=((1, 0), (0, 2))),
         bias=False),
    # stride larger than the kernel: gaps of zeros (plus bias) in the output
    dict(n=2, c=2, k=3, size=(3, 4), kernel=(2, 2), conv=dict(stride=3, output_padding=(2, 1)),
         bias=True),
    # dilation larger than the stride: output_padding may go up to dilation - 1
    dict(n=2, c=2, k=2, size=(4, 4), kernel=(3, 2),
         conv=dict(stride=1, dilation=(3, 2), output_padding=(2, 1)), bias=True),
    # padding that trims the output to a single pixel
    dict(n=2, c=3, k=2, size=(1, 1), kernel=(3, 3), conv=dict(padding=1), bias=True),
    dict(n=1, c=1, k=1, size=(1, 1), kernel=(1, 1), conv=dict(), bias=True),
    dict(n=2, c=3, k=2, size=(1, 1), kernel=(2, 3), conv=dict(stride=3, output_padding=(2, 0)),
         bias=False),
    dict(n=2, c=3, k=2, size=(1, 7), kernel=(1, 3), conv=dict(stride=(1, 2)), bias=True),
    dict(n=2, c=3, k=2, size=(7, 1), kernel=(4, 1), conv=dict(stride=(2, 1), padding=(1, 0)),
         bias=True),
    # wider channels and groups: the GEMM path
    dict(n=2, c=16, k=24, size=(6, 6), kernel=(3, 3), conv=dict(stride=2, padding=1,
                                                                 output_padding=1), bias=True),
    dict(n=2, c=8, k=8, size=(5, 6), kernel=(3, 3), conv=dict(groups=4, padding=1), bias=True),
    dict(n=2, c=4, k=8, size=(5, 5), kernel=(4, 4), conv=dict(groups=4, stride=2, padding=1),
         bias=False),
    dict(n=3, c=6, k=6, size=(5, 4), kernel=(3, 3), conv=dict(groups=6, dilation=2, stride=2,
                                                               padding=((2, 0), (1, 3))),
         bias=True),
    # large enough that the column buffers are cut into bands of rows
    dict(n=1, c=16, k=64, size=(20, 24), kernel=(3, 3), conv=dict(padding=1), bias=True),
    dict(n=2, c=8, k=72, size=(30, 30), kernel=(3, 3), conv=dict(stride=2, output_padding=1),
         bias=True),
    # output_size instead of output_padding, both forms
    dict(n=2, c=2, k=3, size=(4, 5), kernel=(3, 3), conv=dict(stride=2, padding=1,
                                                               output_size=(8, 9)), bias=True),
    dict(n=2, c=2, k=3, size=(4, 5), kernel=(3, 2), conv=dict(stride=(3, 2), dilation=(1, 2),
                                                               output_size=(2, 3, 12, 11)),
         bias=True),
    dict(n=5, c=3, k=2, size=(6, 7), kernel=(3, 3), conv=dict(stride=(2, 1), dilation=(1, 3),
                                                               padding=((0, 3), (2, 1)),
                                                               output_padding=(1, 2)),
         bias=True),
]


def _run_case(case, dtype, algorithm, rng, assert_close):
    x, w, b = make_problem(
        rng, case["n"], case["c"], *case["size"], case["k"], *case["kernel"],
        case["conv"].get("groups", 1), dtype, case["bias"],
    )
    check_against_reference(x, w, b, case["conv"], algorithm, rng, assert_close)


@pytest.mark.parametrize("algorithm", EXPLICIT)
@pytest.mark.parametrize("case", MATRIX, ids=[_case_id(c) for c in MATRIX])
def test_matrix_against_reference(case, dtype, algorithm, rng, assert_close):
    _run_case(case, dtype, algorithm, rng, assert_close)


@pytest.mark.parametrize("algorithm", EXPLICIT)
@pytest.mark.parametrize("case", EDGE, ids=[_case_id(c) for c in EDGE])
def test_edge_cases_against_reference(case, dtype, algorithm, rng, assert_close):
    _run_case(case, dtype, algorithm, rng, assert_close)


@pytest.mark.parametrize("dtype_", [np.float32, np.float64])
def test_algorithms_agree(dtype_, rng, assert_close):
    x, w, b = make_problem(rng, 3, 6, 7, 6, 8, 3, 3, 2, dtype_)
    conv = dict(stride=(2, 1), padding=((1, 0), (2, 1)), output_padding=(1, 0),
                dilation=(1, 2), groups=2)
    gy = rng.standard_normal(conv_transpose2d_ref(x, w, b, **conv).shape).astype(dtype_)
    results = {a: (fc.conv_transpose2d(x, w, b, **conv, algorithm=a),
                   *fc.conv_transpose2d_backward(gy, x, w, **conv, algorithm=a))
               for a in ALGORITHMS}
    for a in ALGORITHMS[1:]:
        for got, ref in zip(results[a], results[ALGORITHMS[0]]):
            assert_close(got, ref.astype(np.float64), dtype=dtype_, err_msg=f"{a} vs auto:")


def test_positional_and_keyword_arguments(rng):
    x, w, b = make_problem(rng, 2, 4, 5, 5, 6, 3, 3, 2, np.float64)
    y_pos = fc.conv_transpose2d(x, w, b, 2, 1, 1, 1, 2)
    y_kw = fc.conv_transpose2d(x=x, w=w, b=b, stride=2, padding=1, output_padding=1,
                               dilation=1, groups=2)
    np.testing.assert_array_equal(y_pos, y_kw)
    gy = np.ones_like(y_pos)
    for got, ref in zip(fc.conv_transpose2d_backward(gy, x, w, 2, 1, 1, 1, 2),
                        fc.conv_transpose2d_backward(gy=gy, x=x, w=w, stride=2, padding=1,
                                                     output_padding=1, dilation=1, groups=2)):
        np.testing.assert_array_equal(got, ref)
    # output_size and algorithm are keyword-only
    with pytest.raises(TypeError):
        fc.conv_transpose2d(x, w, b, 2, 1, 1, 1, 2, (10, 10))


def test_relation_to_conv2d(rng, assert_close):
    """conv_transpose2d is conv2d's input gradient; its input gradient is conv2d."""
    x, w, _ = make_problem(rng, 2, 4, 5, 6, 6, 3, 2, 2, np.float64, bias=False)
    conv = dict(stride=(2, 1), padding=((1, 0), (0, 1)), dilation=(1, 2), groups=2)
    # read as conv2d weights, w (4, 3, KH, KW) maps 6 channels (2 groups of 3) to 4;
    # the conv2d input has the transposed convolution's output size
    out_hw = conv_transpose2d_output_hw_ref(x.shape[2:], w.shape[2:], conv["stride"],
                                            conv["padding"], 0, conv["dilation"])
    y = fc.conv_transpose2d(x, w, **conv)
    gx2, _, _ = fc.conv2d_backward(x, np.zeros((2, 6) + out_hw), w, **conv)
    assert_close(y, gx2)
    gy = rng.standard_normal(y.shape)
    gx, _, _ = fc.conv_transpose2d_backward(gy, x, w, **conv)
    assert_close(gx, fc.conv2d(gy, w, **conv))


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
)


@st.composite
def transpose_problems(draw):
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, 3))
    k = groups * draw(st.integers(1, 3))
    n = draw(st.integers(0, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    stride = draw(int_or_pair(1, 3))
    dilation = draw(int_or_pair(1, 3))
    padding = draw(PADDING_FORMS)
    limits = [max(s, d) for s, d in zip(pair_ref(stride), pair_ref(dilation))]
    output_padding = tuple(draw(st.integers(0, lim - 1)) for lim in limits)
    out_hw = conv_transpose2d_output_hw_ref((h, w), (kh, kw), stride, padding, output_padding,
                                            dilation)
    assume(min(out_hw) >= 1)
    conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    form = draw(st.sampled_from(["output_padding", "output_size", "output_size4", "default"]))
    if form == "output_padding":
        conv["output_padding"] = output_padding
    elif form == "output_size":
        conv["output_size"] = out_hw
    elif form == "output_size4":
        conv["output_size"] = [n, k, *out_hw]
    elif output_padding != (0, 0):
        conv["output_padding"] = output_padding[0] if output_padding[0] == output_padding[1] \
            else output_padding
    return dict(
        shape=(n, c, h, w),
        wshape=(c, k // groups, kh, kw),
        conv=conv,
        bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=120, deadline=None)
@given(
    problem=transpose_problems(),
    dtype=st.sampled_from([np.float32, np.float64]),
    algorithm=st.sampled_from(ALGORITHMS),
)
def test_hypothesis_against_reference(problem, dtype, algorithm, assert_close):
    rng = np.random.default_rng(problem["seed"])
    x = rng.standard_normal(problem["shape"]).astype(dtype)
    w = rng.standard_normal(problem["wshape"]).astype(dtype)
    b = rng.standard_normal(problem["wshape"][1] * problem["conv"]["groups"]).astype(dtype) \
        if problem["bias"] else None
    check_against_reference(x, w, b, problem["conv"], algorithm, rng, assert_close)


# --------------------------------------------------------------------------- #
# the adjoint identity <conv2d(x, w), y> = <x, conv_transpose2d(y, w)>
# --------------------------------------------------------------------------- #


@st.composite
def adjoint_problems(draw):
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, 3))
    k = groups * draw(st.integers(1, 3))
    n = draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    stride = draw(int_or_pair(1, 3))
    dilation = draw(int_or_pair(1, 3))
    padding = draw(PADDING_FORMS)
    (pt, pb), (pl, pr) = normalize_padding_ref(padding, (h, w), (kh, kw), stride, dilation)
    (sh, sw), (dh, dw) = pair_ref(stride), pair_ref(dilation)
    oh = output_size_ref(h, kh, sh, dh, pt, pb)
    ow = output_size_ref(w, kw, sw, dw, pl, pr)
    assume(oh >= 1 and ow >= 1)
    return dict(
        x_shape=(n, c, h, w), w_shape=(k, c // groups, kh, kw), y_shape=(n, k, oh, ow),
        conv=dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=80, deadline=None)
@given(problem=adjoint_problems(), algorithm=st.sampled_from(ALGORITHMS))
def test_adjoint_identity(problem, algorithm):
    rng = np.random.default_rng(problem["seed"])
    x = rng.standard_normal(problem["x_shape"])
    w = rng.standard_normal(problem["w_shape"])
    y = rng.standard_normal(problem["y_shape"])
    conv = problem["conv"]
    forward = fc.conv2d(x, w, **conv, algorithm=algorithm)
    # the output size of the transposed convolution is x's: it picks output_padding
    back = fc.conv_transpose2d(y, w, **conv, output_size=x.shape[2:], algorithm=algorithm)
    assert back.shape == x.shape
    lhs, rhs = np.sum(forward * y), np.sum(x * back)
    scale = np.sum(np.abs(forward * y)) + 1.0
    assert abs(lhs - rhs) <= 1e-10 * scale, (lhs, rhs)
    # the same identity through the backward function's input gradient
    gx, _, _ = fc.conv_transpose2d_backward(x, y, w, **conv, output_size=x.shape[2:],
                                            algorithm=algorithm)
    np.testing.assert_allclose(gx, forward, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- #
# against PyTorch
# --------------------------------------------------------------------------- #


def torch_conv_transpose2d(torch, x, w, b, stride=1, padding=0, output_padding=0, dilation=1,
                           groups=1, output_size=None):
    """y, gy, gx, gw, gb from torch (float64) for a random gy; numpy arrays.

    Asymmetric padding is done as padding 0 followed by cropping the output.
    """
    F = torch.nn.functional
    kh, kw = w.shape[2:]
    (pt, pb), (pl, pr) = normalize_padding_ref(padding, x.shape[2:], (kh, kw), stride, dilation)
    if output_size is not None:
        base = conv_transpose2d_output_hw_ref(x.shape[2:], (kh, kw), stride, padding, 0, dilation)
        output_padding = tuple(o - d for o, d in zip(tuple(output_size)[-2:], base))
    out_hw = conv_transpose2d_output_hw_ref(x.shape[2:], (kh, kw), stride, padding,
                                            output_padding, dilation)
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64)).requires_grad_()
    wt = torch.from_numpy(np.asarray(w, dtype=np.float64)).requires_grad_()
    bt = None if b is None else torch.from_numpy(np.asarray(b, dtype=np.float64)).requires_grad_()
    symmetric = pt == pb and pl == pr
    y = F.conv_transpose2d(
        xt, wt, bt, stride=pair_ref(stride), padding=(pt, pl) if symmetric else 0,
        output_padding=pair_ref(output_padding), groups=groups, dilation=pair_ref(dilation),
    )
    if not symmetric:
        y = y[:, :, pt:pt + out_hw[0], pl:pl + out_hw[1]]
    assert tuple(y.shape[2:]) == tuple(out_hw)
    gy = torch.from_numpy(np.random.default_rng(11).standard_normal(tuple(y.shape)))
    y.backward(gy)
    gb = bt.grad.numpy() if bt is not None else gy.sum(dim=(0, 2, 3)).numpy()
    return y.detach().numpy(), gy.numpy(), xt.grad.numpy(), wt.grad.numpy(), gb


@pytest.mark.parametrize("case", MATRIX + EDGE, ids=[_case_id(c) for c in MATRIX + EDGE])
def test_against_torch(case, dtype, torch, rng, assert_close):
    conv = case["conv"]
    x, w, b = make_problem(
        rng, case["n"], case["c"], *case["size"], case["k"], *case["kernel"],
        conv.get("groups", 1), dtype, case["bias"],
    )
    y_t, gy, gx_t, gw_t, gb_t = torch_conv_transpose2d(torch, x, w, b, **conv)
    y = fc.conv_transpose2d(x, w, b, **conv)
    assert_close(y, y_t, err_msg="y:")
    gx, gw, gb = fc.conv_transpose2d_backward(gy.astype(dtype), x, w, **conv)
    assert_close(gx, gx_t, err_msg="gx:")
    assert_close(gw, gw_t, err_msg="gw:")
    assert_close(gb, gb_t, err_msg="gb:")


# --------------------------------------------------------------------------- #
# finite differences of fastconv's own forward (float64)
# --------------------------------------------------------------------------- #

FD_CASES = [
    ((2, 2, 3, 4), (2, 3, 3, 2), dict()),
    ((1, 2, 3, 3), (2, 2, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ((2, 4, 3, 4), (4, 2, 2, 3),
     dict(stride=(2, 1), padding=((0, 2), (1, 0)), dilation=(1, 2), groups=2)),
    ((1, 3, 3, 3), (3, 1, 3, 3), dict(dilation=2, padding=1, groups=3, output_size=(5, 6))),
    ((2, 1, 2, 2), (1, 2, 2, 2), dict(stride=3, output_padding=(2, 1))),
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


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("xs, ws, conv", FD_CASES)
def test_finite_differences(xs, ws, conv, algorithm, rng):
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[1] * conv.get("groups", 1))
    gy = rng.standard_normal(fc.conv_transpose2d(x, w, b, **conv, algorithm=algorithm).shape)

    def loss():
        return float(np.sum(gy * fc.conv_transpose2d(x, w, b, **conv, algorithm=algorithm)))

    gx, gw, gb = fc.conv_transpose2d_backward(gy, x, w, **conv, algorithm=algorithm)
    for name, got, var in (("gx", gx, x), ("gw", gw, w), ("gb", gb, b)):
        num = _numerical_gradient(loss, var)
        np.testing.assert_allclose(got, num, rtol=1e-6, atol=1e-7, err_msg=name)


# --------------------------------------------------------------------------- #
# output_size and output_padding
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "stride, dilation",
    [(2, 1), ((3, 2), 1), (1, (2, 3)), ((2, 1), (1, 3))],
)
def test_output_size_equals_output_padding(stride, dilation, rng):
    x, w, b = make_problem(rng, 2, 2, 4, 3, 3, 3, 2, 1, np.float64)
    padding = ((1, 0), (0, 1))
    base = conv_transpose2d_output_hw_ref((4, 3), (3, 2), stride, padding, 0, dilation)
    limits = [max(s, d) for s, d in zip(pair_ref(stride), pair_ref(dilation))]
    for oph in range(limits[0]):
        for opw in range(limits[1]):
            conv = dict(stride=stride, padding=padding, dilation=dilation)
            ref = fc.conv_transpose2d(x, w, b, **conv, output_padding=(oph, opw))
            out_hw = (base[0] + oph, base[1] + opw)
            assert ref.shape == (2, 3) + out_hw
            for size in (out_hw, list(out_hw), (2, 3) + out_hw, np.array(out_hw)):
                np.testing.assert_array_equal(
                    fc.conv_transpose2d(x, w, b, **conv, output_size=size), ref
                )
            gy = rng.standard_normal(ref.shape)
            by_padding = fc.conv_transpose2d_backward(gy, x, w, **conv, output_padding=(oph, opw))
            by_size = fc.conv_transpose2d_backward(gy, x, w, **conv, output_size=out_hw)
            for got, want in zip(by_size, by_padding):
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "stride, dilation, padding",
    [(2, 1, 1), ((3, 1), (1, 2), 0), (1, 1, 0), (1, 3, ((2, 0), (0, 1)))],
)
def test_output_size_out_of_range(stride, dilation, padding):
    x = np.ones((1, 2, 4, 5))
    w = np.ones((2, 3, 3, 3))
    low = conv_transpose2d_output_hw_ref((4, 5), (3, 3), stride, padding, 0, dilation)
    limits = [max(s, d) for s, d in zip(pair_ref(stride), pair_ref(dilation))]
    high = tuple(lo + lim - 1 for lo, lim in zip(low, limits))
    conv = dict(stride=stride, padding=padding, dilation=dilation)
    # the extremes of the range are accepted
    assert fc.conv_transpose2d(x, w, **conv, output_size=low).shape[2:] == low
    assert fc.conv_transpose2d(x, w, **conv, output_size=high).shape[2:] == high
    for bad in ((low[0] - 1, low[1]), (low[0], low[1] - 1), (high[0] + 1, high[1]),
                (high[0], high[1] + 1)):
        axis = 0 if bad[0] != low[0] and bad[0] != high[0] else 1
        with pytest.raises(ValueError, match="output_size") as info:
            fc.conv_transpose2d(x, w, **conv, output_size=bad)
        message = str(info.value)
        assert str(low[axis]) in message and str(high[axis]) in message, message
        with pytest.raises(ValueError, match="output_size"):
            fc.conv_transpose2d_backward(np.ones((1, 3) + bad), x, w, **conv, output_size=bad)


@pytest.mark.parametrize(
    "output_size, exc",
    [
        ((7,), ValueError),
        ((1, 7, 7), ValueError),
        ((1, 2, 3, 7, 7), ValueError),
        ((0, 7), ValueError),
        ((-7, 7), ValueError),
        ((7.0, 7), TypeError),
        (7, (TypeError, ValueError)),
        ("77", (TypeError, ValueError)),
    ],
)
def test_output_size_bad_form(output_size, exc):
    with pytest.raises(exc, match="output_size"):
        fc.conv_transpose2d(np.ones((1, 2, 3, 3)), np.ones((2, 1, 3, 3)), stride=2,
                            output_size=output_size)


@pytest.mark.parametrize(
    "stride, dilation, output_padding",
    [(1, 1, 1), (2, 1, 2), (2, 1, (0, 2)), ((3, 1), 1, (1, 1)), (1, 2, 2), (2, 3, (3, 0)),
     ((1, 2), (3, 1), (1, 2))],
)
def test_output_padding_too_large(stride, dilation, output_padding):
    x = np.ones((1, 2, 4, 4))
    w = np.ones((2, 2, 2, 2))
    conv = dict(stride=stride, dilation=dilation, output_padding=output_padding)
    with pytest.raises(ValueError, match="output_padding") as info:
        fc.conv_transpose2d(x, w, **conv)
    # the message says why: several input sizes map to one output size
    assert "output size" in str(info.value)
    with pytest.raises(ValueError, match="output_padding"):
        fc.conv_transpose2d_backward(np.ones((1, 2, 8, 8)), x, w, **conv)


@pytest.mark.parametrize("output_padding", [-1, (0, -1), 1.5, (1, 1, 1)])
def test_output_padding_bad_form(output_padding):
    with pytest.raises((ValueError, TypeError), match="output_padding"):
        fc.conv_transpose2d(np.ones((1, 2, 4, 4)), np.ones((2, 2, 2, 2)), stride=2,
                            output_padding=output_padding)


def test_output_padding_up_to_dilation_minus_one(rng, assert_close):
    """With stride 1, output_padding is limited by the dilation, as in PyTorch."""
    x, w, b = make_problem(rng, 2, 2, 3, 4, 2, 2, 3, 1, np.float64)
    conv = dict(stride=1, dilation=(3, 2), output_padding=(2, 1))
    y = fc.conv_transpose2d(x, w, b, **conv)
    assert y.shape == (2, 2, 3 - 1 + 3 * 1 + 2 + 1, 4 - 1 + 2 * 2 + 1 + 1)
    assert_close(y, conv_transpose2d_ref(x, w, b, **conv))


# --------------------------------------------------------------------------- #
# array-like inputs, inputs left alone, dtype rule
# --------------------------------------------------------------------------- #

CONV = dict(stride=(2, 1), padding=((1, 0), (0, 2)), output_padding=(1, 0), dilation=(1, 2),
            groups=2)


def _base(rng, dtype=np.float64):
    x = rng.standard_normal((2, 4, 5, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    gy = rng.standard_normal(conv_transpose2d_ref(x, w, b, **CONV).shape).astype(dtype)
    return x, w, b, gy


def _check_all(x, w, b, gy, expected_dtype, algorithm, assert_close):
    y = fc.conv_transpose2d(x, w, b, **CONV, algorithm=algorithm)
    assert y.dtype == expected_dtype
    assert_close(y, conv_transpose2d_ref(x, w, b, **CONV), err_msg="y:")
    grads = fc.conv_transpose2d_backward(gy, x, w, **CONV, algorithm=algorithm)
    for name, got, ref in zip(("gx", "gw", "gb"), grads,
                              conv_transpose2d_backward_ref(gy, x, w, **CONV)):
        assert got.dtype == expected_dtype, name
        assert_close(got, ref, err_msg=f"{name}:")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_nested_lists(algorithm, rng, assert_close):
    x, w, b, gy = _base(rng)
    _check_all(x.tolist(), w.tolist(), b.tolist(), gy.tolist(), np.float64, algorithm,
               assert_close)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_integer_inputs(algorithm):
    # x = [[1, 2], [3, 4]], w = [[1, 2], [3, 4]], stride 1: see test_reference_ops
    y = fc.conv_transpose2d([[[[1, 2], [3, 4]]]], [[[[1, 2], [3, 4]]]], algorithm=algorithm)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, [[[[1, 4, 4], [6, 20, 16], [9, 24, 16]]]])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("layout", ["fortran", "reversed", "strided"])
def test_non_contiguous_and_read_only(layout, algorithm, dtype, rng, assert_close):
    x, w, b, gy = _base(rng, dtype)
    if layout == "fortran":
        arrays = [np.asfortranarray(a) for a in (x, w, b, gy)]
    elif layout == "reversed":
        arrays = [x[:, :, ::-1], w[..., ::-1], b[::-1], gy[:, ::-1]]
    else:
        arrays = [np.repeat(a, 2, axis=-1)[..., ::2] for a in (x, w, b, gy)]
    for a in arrays:
        a.flags.writeable = False
    _check_all(*arrays, dtype, algorithm, assert_close)


@pytest.mark.parametrize("needs_input_grad", [True, False])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_inputs_not_modified(algorithm, needs_input_grad, dtype, rng):
    x, w, b, gy = _base(rng, dtype)
    copies = [a.copy() for a in (x, w, b, gy)]
    y = fc.conv_transpose2d(x, w, b, **CONV, algorithm=algorithm)
    grads = fc.conv_transpose2d_backward(gy, x, w, **CONV, algorithm=algorithm,
                                         needs_input_grad=needs_input_grad)
    for a, c in zip((x, w, b, gy), copies):
        np.testing.assert_array_equal(a, c)
    for out in (y, *grads):
        if out is not None:
            for a in (x, w, b, gy):
                assert not np.shares_memory(out, a)


@pytest.mark.parametrize(
    "x_dtype, w_dtype, expected",
    [
        (np.float32, np.float32, np.float32),
        (np.float64, np.float64, np.float64),
        (np.float32, np.float64, np.float64),
        (np.float16, np.float32, np.float32),
        (np.int64, np.float32, np.float64),
        (np.float32, np.int32, np.float64),
    ],
)
def test_dtype_rule(x_dtype, w_dtype, expected, rng, assert_close):
    x = (rng.standard_normal((2, 4, 4, 5)) * 3).astype(x_dtype)
    w = (rng.standard_normal((4, 3, 3, 3)) * 3).astype(w_dtype)
    conv = dict(stride=2, padding=1, groups=2)
    y = fc.conv_transpose2d(x, w, **conv)
    assert y.dtype == expected
    assert_close(y, conv_transpose2d_ref(x, w, None, **conv), dtype=expected)
    gy = rng.standard_normal(y.shape).astype(expected)
    grads = fc.conv_transpose2d_backward(gy, x, w, **conv)
    for name, got, ref in zip(("gx", "gw", "gb"), grads,
                              conv_transpose2d_backward_ref(gy, x, w, **conv)):
        assert got.dtype == expected, name
        assert_close(got, ref, dtype=expected, err_msg=f"{name}:")


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #

X_NAME = r"\bx\b"
W_NAME = r"\bw\b"
B_NAME = r"\bb\b|\bbias\b"
GY_NAME = r"\bgy\b"


def _good():
    return dict(x=np.ones((2, 4, 4, 4)), w=np.ones((4, 3, 3, 3)), groups=2, stride=2)


BAD = [
    ("x-3d", dict(x=np.ones((4, 4, 4))), ValueError, X_NAME),
    ("w-3d", dict(w=np.ones((4, 3, 3))), ValueError, W_NAME),
    ("w-channels", dict(w=np.ones((6, 3, 3, 3))), ValueError, rf"{W_NAME}|{X_NAME}"),
    ("groups-not-dividing-C", dict(groups=3), ValueError, "groups"),
    ("groups-0", dict(groups=0), ValueError, "groups"),
    ("stride-0", dict(stride=0), ValueError, "stride"),
    ("stride-negative", dict(stride=(1, -1)), ValueError, "stride"),
    ("dilation-0", dict(dilation=0), ValueError, "dilation"),
    ("padding-negative", dict(padding=-1), ValueError, "padding"),
    ("padding-pairs-negative", dict(padding=((0, 1), (-1, 0))), ValueError, "padding"),
    ("padding-same", dict(padding="same"), ValueError, "padding"),
    ("padding-valid", dict(padding="valid"), ValueError, "padding"),
    ("padding-full", dict(padding="full"), ValueError, "padding"),
    ("padding-float", dict(padding=0.5), (ValueError, TypeError), "padding"),
    ("output-too-small", dict(x=np.ones((2, 4, 1, 1)), stride=1, padding=2), ValueError,
     "output|padding"),
    ("output-padding-too-large", dict(output_padding=2), ValueError, "output_padding"),
    ("bias-length", dict(b=np.ones(4)), ValueError, B_NAME),
    ("bias-2d", dict(b=np.ones((1, 6))), ValueError, B_NAME),
    ("x-complex", dict(x=np.ones((2, 4, 4, 4), complex)), TypeError, X_NAME),
    ("w-object", dict(w=np.ones((4, 3, 3, 3)).astype(object)), TypeError, W_NAME),
    ("x-none", dict(x=None), TypeError, X_NAME),
    ("algorithm-unknown", dict(algorithm="winograd-ish"), ValueError, "algorithm"),
    ("padding-overflow", dict(padding=2**62), ValueError,
     "overflow|too large|output|padding"),
]


@pytest.mark.parametrize("overrides, exc, match", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_conv_transpose2d_bad_input(overrides, exc, match):
    args = _good()
    args.update(overrides)
    with pytest.raises(exc, match=match):
        fc.conv_transpose2d(**args)


BAD_BACKWARD = [c for c in BAD if not c[0].startswith("bias")] + [
    ("gy-3d", dict(gy=np.ones((6, 9, 9))), ValueError, GY_NAME),
    ("gy-batch", dict(gy=np.ones((3, 6, 9, 9))), ValueError, GY_NAME),
    ("gy-channels", dict(gy=np.ones((2, 4, 9, 9))), ValueError, GY_NAME),
    ("gy-height", dict(gy=np.ones((2, 6, 10, 9))), ValueError, GY_NAME),
    ("gy-width", dict(gy=np.ones((2, 6, 9, 8))), ValueError, GY_NAME),
    ("gy-complex", dict(gy=np.ones((2, 6, 9, 9), complex)), TypeError, GY_NAME),
]


@pytest.mark.parametrize("overrides, exc, match", [c[1:] for c in BAD_BACKWARD],
                         ids=[c[0] for c in BAD_BACKWARD])
def test_conv_transpose2d_backward_bad_input(overrides, exc, match):
    args = _good()
    args["gy"] = np.ones((2, 6, 9, 9))
    args.update(overrides)
    with pytest.raises(exc, match=match):
        fc.conv_transpose2d_backward(**args)


def test_good_base_arguments_are_valid():
    args = _good()
    assert fc.conv_transpose2d(**args).shape == (2, 6, 9, 9)
    gx, gw, gb = fc.conv_transpose2d_backward(np.ones((2, 6, 9, 9)), **args)
    assert gx.shape == (2, 4, 4, 4) and gw.shape == (4, 3, 3, 3) and gb.shape == (6,)


# --------------------------------------------------------------------------- #
# empty batch and needs_input_grad
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    "conv, out_hw",
    [
        (dict(), (7, 6)),
        (dict(stride=2, padding=1, output_padding=1, groups=2), (10, 8)),
        (dict(padding=((1, 0), (0, 2)), dilation=(2, 1)), (8, 4)),
    ],
)
def test_empty_batch(conv, out_hw, algorithm, dtype):
    x = np.zeros((0, 4, 5, 4), dtype)
    w = np.ones((4, 6 // conv.get("groups", 1), 3, 3), dtype)
    b = np.arange(6, dtype=dtype)
    y = fc.conv_transpose2d(x, w, b, **conv, algorithm=algorithm)
    assert y.shape == (0, 6) + out_hw and y.dtype == dtype
    gy = np.zeros((0, 6) + out_hw, dtype)
    gx, gw, gb = fc.conv_transpose2d_backward(gy, x, w, **conv, algorithm=algorithm)
    assert gx.shape == x.shape and gx.dtype == dtype
    assert gw.shape == w.shape and gw.dtype == dtype
    np.testing.assert_array_equal(gw, 0.0)
    np.testing.assert_array_equal(gb, np.zeros(6))
    gx, _, _ = fc.conv_transpose2d_backward(gy, x, w, **conv, algorithm=algorithm,
                                            needs_input_grad=False)
    assert gx is None


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_needs_input_grad_false(algorithm, dtype, rng):
    x, w, b, gy = _base(rng, dtype)
    gx, gw, gb = fc.conv_transpose2d_backward(gy, x, w, **CONV, algorithm=algorithm)
    none, gw2, gb2 = fc.conv_transpose2d_backward(gy, x, w, **CONV, algorithm=algorithm,
                                                  needs_input_grad=False)
    assert gx is not None and none is None
    np.testing.assert_array_equal(gw2, gw)
    np.testing.assert_array_equal(gb2, gb)


# --------------------------------------------------------------------------- #
# threads: results independent of the thread count, bit for bit
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize(
    "c, k, size, kernel, conv",
    [
        (3, 8, (9, 8), (3, 3), dict(padding=1)),
        (4, 6, (7, 6), (4, 3), dict(stride=2, padding=((1, 0), (2, 1)), output_padding=1,
                                     dilation=(1, 2), groups=2)),
        (8, 12, (6, 6), (1, 1), dict()),
        (16, 64, (20, 24), (3, 3), dict(padding=1)),
    ],
    ids=["3x3", "grouped-strided", "1x1", "banded"],
)
def test_one_and_two_threads_bit_identical(c, k, size, kernel, conv, n, algorithm, dtype, rng,
                                            restore_threads):
    x, w, b = make_problem(rng, n, c, *size, k, *kernel, conv.get("groups", 1), dtype)
    results = {}
    for threads in (1, 2):
        with fc.threads(threads):
            y = fc.conv_transpose2d(x, w, b, **conv, algorithm=algorithm)
            gy = np.cos(np.arange(y.size, dtype=dtype)).reshape(y.shape)
            grads = fc.conv_transpose2d_backward(gy, x, w, **conv, algorithm=algorithm)
            results[threads] = (y,) + tuple(grads)
    for name, one, two in zip(("y", "gx", "gw", "gb"), results[1], results[2]):
        assert one.dtype == two.dtype
        assert np.array_equal(one, two), (
            f"{name} differs between 1 and 2 threads: max abs diff "
            f"{np.max(np.abs(one.astype(np.float64) - two)):.3g}"
        )


@pytest.mark.parametrize("c, k, bias", [(256, 64, True), (300, 48, False)])
def test_input_gradient_gemm_in_channel_blocks(c, k, bias):
    """A transposed convolution of one image runs conv2d's GEMM input gradient as blocks
    of its output channels (uneven where C is not a multiple): equal to the reference
    and bit-identical on any thread count."""
    rng = np.random.default_rng(c)
    x = rng.standard_normal((1, k, 5, 4))
    w = rng.standard_normal((k, c, 4, 4))
    b = rng.standard_normal(c) if bias else None
    plan = fc.explain(np.empty((1, c, 10, 8)), np.empty((k, c, 4, 4)), stride=2, padding=1,
                      algorithm="im2col")["input_grad"]
    assert 0 < plan.channel_block < c
    ys = []
    for n in (1, 2, 3):
        with fc.threads(n):
            ys.append(fc.conv_transpose2d(x, w, b, stride=2, padding=1, algorithm="im2col"))
    np.testing.assert_allclose(ys[0], conv_transpose2d_ref(x, w, b, stride=2, padding=1),
                               rtol=1e-10, atol=1e-10)
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])


@pytest.mark.parametrize("width", [3, 4, 5, 8, 9, 12, 16, 17, 18, 33])
@pytest.mark.parametrize("kernel, padding, output_padding, dilation", [
    ((4, 4), 1, 0, 1),            # DCGAN's 4x4 s2 p1: taps 0 and 3 reach one column less
    ((3, 3), 1, 1, 1),            # a pair and a single tap
    ((2, 2), 0, 0, 1),            # U-Net's 2x2 s2: one pair, every column
    ((1, 5), (0, 2), 1, 1),       # two pairs and a single tap, output_padding's column
    ((3, 3), (1, 2), 1, (1, 2)),  # dilated: single taps, each one column in two
    ((1, 1), 0, 1, 1),            # one tap: its last column is the row's next to last
])
def test_col2im_stride_2_rows_in_vectors(dtype, width, kernel, padding, output_padding,
                                         dilation, rng, assert_close):
    """col2im adds its rows at stride 2 in SIMD vectors (rows over 8 float or 4 double
    columns of x; two neighbouring undilated taps at once, the last step ending at the
    row's last element, the columns done before adding -0.0): the transposed convolution
    and its gradients against the reference for x widths 3 to 33, and an output column no
    tap reaches keeps its bias bit for bit, -0.0 included (x + -0.0 is x)."""
    x, w, b = make_problem(rng, 2, 3, 5, width, 4, *kernel, 1, dtype)
    conv = dict(stride=2, padding=padding, output_padding=output_padding, dilation=dilation)
    check_against_reference(x, w, b, conv, "im2col", rng, assert_close)
    y = fc.conv_transpose2d(x, w, np.full(4, -0.0, dtype), **conv, algorithm="im2col")
    reached = conv_transpose2d_ref(np.ones_like(x), np.ones_like(w), None, **conv) > 0
    assert np.all(y[~reached] == 0) and np.all(np.signbit(y[~reached]))
