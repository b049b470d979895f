"""Tests for the 1-D operations on (N, C, L): conv1d, conv_transpose1d,
max_pool1d, avg_pool1d and their backward functions.

Each is checked against the NumPy float64 references run on (N, C, 1, L),
against the 2-D fastconv operation on (N, C, 1, L), and against PyTorch's
1-D functions where PyTorch is installed.
"""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastconv as fc

from reference import conv2d_backward_ref, conv2d_ref
from reference_ops import (
    avg_pool2d_backward_ref,
    avg_pool2d_ref,
    conv_transpose2d_backward_ref,
    conv_transpose2d_ref,
    max_pool2d_backward_ref,
    max_pool2d_ref,
    pool_output_size_ref,
)

ALGORITHMS = ["auto", "direct", "im2col"]


# --------------------------------------------------------------------------- #
# helpers: 1-D arguments as their 2-D counterparts on (N, C, 1, L)
# --------------------------------------------------------------------------- #


def to4d(a):
    """(N, C, L) -> (N, C, 1, L)."""
    return np.asarray(a)[:, :, None, :]


def pad2d(padding):
    """1-D padding (int, (left, right) or a word) as 2-D padding with none on H."""
    if isinstance(padding, str):
        return padding
    if isinstance(padding, (tuple, list)):
        return ((0, 0), tuple(padding))
    return ((0, 0), (padding, padding))


def conv_args_2d(stride=1, padding=0, dilation=1, groups=1):
    return dict(stride=(1, stride), padding=pad2d(padding), dilation=(1, dilation), groups=groups)


def transpose_args_2d(stride=1, padding=0, output_padding=0, dilation=1, groups=1,
                      output_size=None):
    args = dict(stride=(1, stride), padding=pad2d(padding), output_padding=(0, output_padding),
                dilation=(1, dilation), groups=groups)
    if output_size is not None:
        length = output_size if np.ndim(output_size) == 0 else tuple(output_size)[-1]
        args["output_size"] = (1, length)
        del args["output_padding"]
    return args


def pool_args_2d(kernel_size, stride=None, padding=0, **rest):
    return dict(kernel_size=(1, kernel_size), stride=None if stride is None else (1, stride),
                padding=(0, padding), **rest)


def conv1d_out_len(length, k, stride, padding, dilation):
    if isinstance(padding, str):
        word = padding.lower()
        if word == "valid":
            left = right = 0
        elif word == "full":
            left = right = dilation * (k - 1)
        else:
            out = -(-length // stride)
            total = max((out - 1) * stride + dilation * (k - 1) + 1 - length, 0)
            left, right = total // 2, total - total // 2
    elif isinstance(padding, (tuple, list)):
        left, right = padding
    else:
        left = right = padding
    return (length + left + right - dilation * (k - 1) - 1) // stride + 1


# --------------------------------------------------------------------------- #
# conv1d
# --------------------------------------------------------------------------- #

CONV1D_CASES = [
    # (N, C, L, K, KL, conv keywords)
    (2, 3, 9, 4, 3, dict()),
    (2, 3, 9, 4, 3, dict(stride=2, padding=1)),
    (1, 4, 10, 6, 2, dict(padding=(0, 3), groups=2)),
    (2, 4, 11, 4, 3, dict(padding=(2, 1), dilation=2, groups=4)),
    (3, 2, 8, 3, 4, dict(padding="same")),
    (2, 2, 9, 3, 3, dict(padding="same", stride=2)),
    (2, 2, 7, 3, 3, dict(padding="SAME", dilation=3)),
    (2, 3, 6, 2, 3, dict(padding="valid", stride=3)),
    (2, 3, 5, 2, 3, dict(padding="full", dilation=2)),
    (1, 1, 1, 1, 1, dict()),
    (2, 16, 12, 24, 3, dict(padding=1)),
    (2, 6, 13, 9, 5, dict(stride=2, padding=(1, 4), dilation=2, groups=3)),
]

CONV1D_IDS = [f"{i}-{c[5]}".replace(" ", "") for i, c in enumerate(CONV1D_CASES)]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("n, c, length, k, kl, conv", CONV1D_CASES, ids=CONV1D_IDS)
def test_conv1d_against_reference_and_2d(n, c, length, k, kl, conv, algorithm, dtype, rng,
                                         assert_close):
    groups = conv.get("groups", 1)
    x = rng.standard_normal((n, c, length)).astype(dtype)
    w = rng.standard_normal((k, c // groups, kl)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    conv2 = conv_args_2d(**conv)
    y = fc.conv1d(x, w, b, **conv, algorithm=algorithm)
    out_len = conv1d_out_len(length, kl, conv.get("stride", 1), conv.get("padding", 0),
                             conv.get("dilation", 1))
    assert y.shape == (n, k, out_len) and y.dtype == dtype
    assert_close(y, conv2d_ref(to4d(x), to4d(w), b, **conv2)[:, :, 0], err_msg="y:")
    assert_close(y, fc.conv2d(to4d(x), to4d(w), b, **conv2, algorithm=algorithm)[:, :, 0]
                 .astype(np.float64), dtype=dtype, err_msg="y vs 2-D:")

    gy = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, gb = fc.conv1d_backward(gy, x, w, **conv, algorithm=algorithm)
    refs = conv2d_backward_ref(to4d(gy), to4d(x), to4d(w), **conv2)
    for name, got, ref in (("gx", gx, refs[0][:, :, 0]), ("gw", gw, refs[1][:, :, 0]),
                           ("gb", gb, refs[2])):
        assert got.dtype == dtype, name
        assert_close(got, ref, err_msg=f"{name}:")
    none, gw2, gb2 = fc.conv1d_backward(gy, x, w, **conv, algorithm=algorithm,
                                        needs_input_grad=False)
    assert none is None
    np.testing.assert_array_equal(gw2, gw)
    np.testing.assert_array_equal(gb2, gb)


def test_conv1d_flip(rng, assert_close):
    x = rng.standard_normal((2, 3, 9))
    w = rng.standard_normal((4, 3, 3))
    y = fc.conv1d(x, w, padding=1, flip=True)
    assert_close(y, fc.conv1d(x, np.ascontiguousarray(w[..., ::-1]), padding=1))
    gy = rng.standard_normal(y.shape)
    gx, gw, _ = fc.conv1d_backward(gy, x, w, padding=1, flip=True)
    gx_r, gw_r, _ = fc.conv1d_backward(gy, x, w[..., ::-1], padding=1)
    assert_close(gx, gx_r)
    assert_close(gw, gw_r[..., ::-1])


def _torch_conv1d(torch, x, w, b, stride=1, padding=0, dilation=1, groups=1):
    F = torch.nn.functional
    xt = torch.from_numpy(np.asarray(x, np.float64)).requires_grad_()
    wt = torch.from_numpy(np.asarray(w, np.float64)).requires_grad_()
    bt = torch.from_numpy(np.asarray(b, np.float64)).requires_grad_()
    inp, tpad = xt, padding
    if isinstance(padding, str) and padding.lower() == "full":
        tpad = dilation * (w.shape[2] - 1)
    elif isinstance(padding, str):
        tpad = padding.lower()
    elif isinstance(padding, tuple):
        inp, tpad = F.pad(xt, padding), 0
    y = F.conv1d(inp, wt, bt, stride=stride, padding=tpad, dilation=dilation, groups=groups)
    gy = torch.from_numpy(np.random.default_rng(3).standard_normal(tuple(y.shape)))
    y.backward(gy)
    return y.detach().numpy(), gy.numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@pytest.mark.parametrize("n, c, length, k, kl, conv", CONV1D_CASES, ids=CONV1D_IDS)
def test_conv1d_against_torch(n, c, length, k, kl, conv, dtype, torch, rng, assert_close):
    if conv.get("padding") in ("same", "SAME") and conv.get("stride", 1) != 1:
        pytest.skip("PyTorch takes padding='same' only with stride 1")
    groups = conv.get("groups", 1)
    x = rng.standard_normal((n, c, length)).astype(dtype)
    w = rng.standard_normal((k, c // groups, kl)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    y_t, gy, gx_t, gw_t, gb_t = _torch_conv1d(torch, x, w, b, **conv)
    assert_close(fc.conv1d(x, w, b, **conv), y_t, err_msg="y:")
    gx, gw, gb = fc.conv1d_backward(gy.astype(dtype), x, w, **conv)
    assert_close(gx, gx_t, err_msg="gx:")
    assert_close(gw, gw_t, err_msg="gw:")
    assert_close(gb, gb_t, err_msg="gb:")


# --------------------------------------------------------------------------- #
# conv_transpose1d
# --------------------------------------------------------------------------- #

TRANSPOSE1D_CASES = [
    # (N, C, L, K, KL, keywords)
    (2, 3, 5, 4, 3, dict()),
    (2, 3, 5, 4, 3, dict(stride=2, padding=1, output_padding=1)),
    (1, 4, 6, 6, 2, dict(stride=3, padding=(0, 2), output_padding=2, groups=2)),
    (2, 4, 7, 4, 3, dict(padding=(2, 1), dilation=2, output_padding=1, groups=4)),
    (2, 2, 4, 3, 4, dict(stride=2, output_size=11)),
    (2, 2, 4, 3, 4, dict(stride=2, output_size=(10,))),
    (2, 2, 4, 3, 4, dict(stride=3, dilation=2, output_size=[2, 3, 17])),
    (1, 1, 1, 1, 1, dict()),
    (2, 12, 6, 16, 3, dict(stride=2, padding=1)),
]

TRANSPOSE1D_IDS = [f"{i}-{c[5]}".replace(" ", "") for i, c in enumerate(TRANSPOSE1D_CASES)]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("n, c, length, k, kl, conv", TRANSPOSE1D_CASES, ids=TRANSPOSE1D_IDS)
def test_conv_transpose1d_against_reference_and_2d(n, c, length, k, kl, conv, algorithm, dtype,
                                                   rng, assert_close):
    groups = conv.get("groups", 1)
    x = rng.standard_normal((n, c, length)).astype(dtype)
    w = rng.standard_normal((c, k // groups, kl)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    conv2 = transpose_args_2d(**conv)
    y = fc.conv_transpose1d(x, w, b, **conv, algorithm=algorithm)
    assert y.ndim == 3 and y.dtype == dtype
    y_ref = conv_transpose2d_ref(to4d(x), to4d(w), b, **conv2)[:, :, 0]
    assert_close(y, y_ref, err_msg="y:")
    if "output_size" in conv:
        size = conv["output_size"]
        assert y.shape[2] == (size if np.ndim(size) == 0 else tuple(size)[-1])
    assert_close(y, fc.conv_transpose2d(to4d(x), to4d(w), b, **conv2, algorithm=algorithm)[:, :, 0]
                 .astype(np.float64), dtype=dtype, err_msg="y vs 2-D:")

    gy = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, gb = fc.conv_transpose1d_backward(gy, x, w, **conv, algorithm=algorithm)
    refs = conv_transpose2d_backward_ref(to4d(gy), to4d(x), to4d(w), **conv2)
    for name, got, ref in (("gx", gx, refs[0][:, :, 0]), ("gw", gw, refs[1][:, :, 0]),
                           ("gb", gb, refs[2])):
        assert got.dtype == dtype, name
        assert_close(got, ref, err_msg=f"{name}:")
    none, _, _ = fc.conv_transpose1d_backward(gy, x, w, **conv, algorithm=algorithm,
                                              needs_input_grad=False)
    assert none is None


@pytest.mark.parametrize("n, c, length, k, kl, conv", TRANSPOSE1D_CASES, ids=TRANSPOSE1D_IDS)
def test_conv_transpose1d_against_torch(n, c, length, k, kl, conv, dtype, torch, rng,
                                        assert_close):
    F = torch.nn.functional
    groups = conv.get("groups", 1)
    x = rng.standard_normal((n, c, length)).astype(dtype)
    w = rng.standard_normal((c, k // groups, kl)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    y = fc.conv_transpose1d(x, w, b, **conv)
    stride, dilation = conv.get("stride", 1), conv.get("dilation", 1)
    padding = conv.get("padding", 0)
    left, right = padding if isinstance(padding, tuple) else (padding, padding)
    base = (length - 1) * stride - left - right + dilation * (kl - 1) + 1
    output_padding = y.shape[2] - base
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    wt = torch.from_numpy(w.astype(np.float64)).requires_grad_()
    bt = torch.from_numpy(b.astype(np.float64)).requires_grad_()
    yt = F.conv_transpose1d(xt, wt, bt, stride=stride, padding=0 if left != right else left,
                            output_padding=output_padding, groups=groups, dilation=dilation)
    if left != right:
        yt = yt[:, :, left:left + y.shape[2]]
    assert_close(y, yt.detach().numpy(), err_msg="y:")
    gy = rng.standard_normal(y.shape)
    yt.backward(torch.from_numpy(gy))
    gx, gw, gb = fc.conv_transpose1d_backward(gy.astype(dtype), x, w, **conv)
    assert_close(gx, xt.grad.numpy(), err_msg="gx:")
    assert_close(gw, wt.grad.numpy(), err_msg="gw:")
    assert_close(gb, bt.grad.numpy(), err_msg="gb:")


def test_conv_transpose1d_output_size_forms(rng):
    x = rng.standard_normal((2, 2, 4))
    w = rng.standard_normal((2, 3, 3))
    ref = fc.conv_transpose1d(x, w, stride=3, output_padding=2)
    assert ref.shape == (2, 3, 3 * 3 + 3 + 2)
    for size in (14, (14,), [14], (2, 3, 14), np.int64(14)):
        np.testing.assert_array_equal(fc.conv_transpose1d(x, w, stride=3, output_size=size), ref)
    with pytest.raises(ValueError, match="output_size"):
        fc.conv_transpose1d(x, w, stride=3, output_size=15)
    with pytest.raises(ValueError, match="output_size"):
        fc.conv_transpose1d(x, w, stride=3, output_size=11)
    with pytest.raises(ValueError, match="output_padding"):
        fc.conv_transpose1d(x, w, stride=3, output_padding=3)


@pytest.mark.parametrize("padding", ["same", "valid", "full"])
def test_conv_transpose1d_rejects_padding_words(padding):
    with pytest.raises(ValueError, match="padding"):
        fc.conv_transpose1d(np.ones((1, 2, 5)), np.ones((2, 2, 3)), padding=padding)


# --------------------------------------------------------------------------- #
# max_pool1d and avg_pool1d
# --------------------------------------------------------------------------- #

POOL1D_CASES = [
    (9, dict(kernel_size=2)),
    (9, dict(kernel_size=3, stride=2, padding=1)),
    (9, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (5, dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),  # last window dropped
    (10, dict(kernel_size=4, stride=3, padding=2, ceil_mode=True)),
    (6, dict(kernel_size=6)),
    (1, dict(kernel_size=1)),
    (8, dict(kernel_size=5, stride=1, padding=2)),
]

POOL1D_IDS = [f"L{c[0]}-{c[1]}".replace(" ", "") for c in POOL1D_CASES]


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("length, pool", POOL1D_CASES, ids=POOL1D_IDS)
def test_max_pool1d_against_reference_and_2d(length, pool, dilation, dtype, rng, assert_close):
    x = rng.standard_normal((2, 3, length)).astype(dtype)
    if pool_output_size_ref(length, pool["kernel_size"], pool.get("stride") or pool["kernel_size"],
                            pool.get("padding", 0), dilation, pool.get("ceil_mode", False)) < 1:
        with pytest.raises(ValueError, match="kernel_size"):  # the dilated window does not fit
            fc.max_pool1d(x, **pool, dilation=dilation)
        return
    pool = dict(pool, dilation=dilation)
    pool2 = pool_args_2d(**dict(pool, dilation=(1, dilation)))
    try:
        y_ref, idx_ref = max_pool2d_ref(to4d(x), **pool2)
    except ValueError:  # a window of only padding: refused by fastconv too
        with pytest.raises(ValueError, match="only padding"):
            fc.max_pool1d(x, **pool)
        return
    y, idx = fc.max_pool1d(x, **pool, return_indices=True)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, y_ref[:, :, 0])
    np.testing.assert_array_equal(idx, idx_ref[:, :, 0])
    np.testing.assert_array_equal(fc.max_pool1d(x, **pool), y)
    y2, idx2 = fc.max_pool2d(to4d(x), **pool2, return_indices=True)
    np.testing.assert_array_equal(y, y2[:, :, 0])
    np.testing.assert_array_equal(idx, idx2[:, :, 0])
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = fc.max_pool1d_backward(gy, idx, x.shape)
    assert gx.shape == x.shape and gx.dtype == dtype
    assert_close(gx, max_pool2d_backward_ref(to4d(gy), to4d(idx), to4d(x).shape)[:, :, 0])


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("length, pool", POOL1D_CASES, ids=POOL1D_IDS)
def test_avg_pool1d_against_reference_and_2d(length, pool, count_include_pad, dtype, rng,
                                             assert_close):
    x = rng.standard_normal((2, 3, length)).astype(dtype)
    pool = dict(pool, count_include_pad=count_include_pad)
    pool2 = pool_args_2d(**pool)
    y = fc.avg_pool1d(x, **pool)
    assert y.dtype == dtype
    assert_close(y, avg_pool2d_ref(to4d(x), **pool2)[:, :, 0])
    assert_close(y, fc.avg_pool2d(to4d(x), **pool2)[:, :, 0].astype(np.float64), dtype=dtype)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = fc.avg_pool1d_backward(gy, x.shape, **pool)
    assert gx.shape == x.shape and gx.dtype == dtype
    assert_close(gx, avg_pool2d_backward_ref(to4d(gy), to4d(x).shape, **pool2)[:, :, 0])


@st.composite
def pool1d_problems(draw):
    k = draw(st.integers(1, 5))
    return dict(
        shape=(draw(st.integers(0, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 12))),
        kernel_size=k,
        stride=draw(st.one_of(st.none(), st.integers(1, 4))),
        padding=draw(st.integers(0, k // 2)),
        ceil_mode=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=60, deadline=None)
@given(problem=pool1d_problems(), dilation=st.integers(1, 3), ties=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_max_pool1d_against_torch(torch, problem, dilation, ties, dtype):
    problem = dict(problem)
    shape, seed = problem.pop("shape"), problem.pop("seed")
    pool = dict(problem, dilation=dilation)
    stride = pool["stride"] or pool["kernel_size"]
    assume(pool_output_size_ref(shape[2], pool["kernel_size"], stride, pool["padding"], dilation,
                                pool["ceil_mode"]) >= 1)
    rng = np.random.default_rng(seed)
    x = (rng.integers(-2, 3, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    try:
        max_pool2d_ref(to4d(x[:1] if shape[0] else np.zeros((1,) + shape[1:])),
                       **pool_args_2d(**dict(pool, dilation=(1, dilation))))
    except ValueError:
        with pytest.raises(ValueError, match="only padding"):
            fc.max_pool1d(x, **pool)
        return
    xt = torch.from_numpy(x).requires_grad_()
    yt, it = torch.nn.functional.max_pool1d(xt, **pool, return_indices=True)
    y, idx = fc.max_pool1d(x, **pool, return_indices=True)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    gy = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(fc.max_pool1d_backward(gy, idx, shape), xt.grad.numpy(),
                               rtol=1e-6, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(problem=pool1d_problems(), count_include_pad=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_avg_pool1d_against_torch(torch, problem, count_include_pad, dtype, assert_close):
    problem = dict(problem)
    shape, seed = problem.pop("shape"), problem.pop("seed")
    pool = dict(problem, count_include_pad=count_include_pad)
    stride = pool["stride"] or pool["kernel_size"]
    assume(pool_output_size_ref(shape[2], pool["kernel_size"], stride, pool["padding"], 1,
                                pool["ceil_mode"]) >= 1)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.nn.functional.avg_pool1d(xt, **pool)
    y = fc.avg_pool1d(x.astype(dtype), **pool)
    assert_close(y, yt.detach().numpy())
    gy = rng.standard_normal(y.shape)
    yt.backward(torch.from_numpy(gy))
    assert_close(fc.avg_pool1d_backward(gy.astype(dtype), shape, **pool), xt.grad.numpy())


# --------------------------------------------------------------------------- #
# property sweep of conv1d against PyTorch
# --------------------------------------------------------------------------- #


@st.composite
def conv1d_problems(draw):
    groups = draw(st.integers(1, 3))
    c, k = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3))
    kl, length = draw(st.integers(1, 4)), draw(st.integers(1, 10))
    stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    words = ["valid", "full"] + (["same"] if stride == 1 else [])  # PyTorch: "same" needs stride 1
    padding = draw(st.one_of(st.integers(0, 3), st.tuples(st.integers(0, 3), st.integers(0, 3)),
                             st.sampled_from(words)))
    assume(conv1d_out_len(length, kl, stride, padding, dilation) >= 1)
    return dict(x_shape=(draw(st.integers(0, 2)), c, length), w_shape=(k, c // groups, kl),
                conv=dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
                seed=draw(st.integers(0, 2**32 - 1)))


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@settings(max_examples=60, deadline=None)
@given(problem=conv1d_problems(), dtype=st.sampled_from([np.float32, np.float64]),
       algorithm=st.sampled_from(ALGORITHMS))
def test_conv1d_hypothesis_against_torch(torch, problem, dtype, algorithm, assert_close):
    rng = np.random.default_rng(problem["seed"])
    x = rng.standard_normal(problem["x_shape"]).astype(dtype)
    w = rng.standard_normal(problem["w_shape"]).astype(dtype)
    b = rng.standard_normal(problem["w_shape"][0]).astype(dtype)
    conv = problem["conv"]
    y_t, gy, gx_t, gw_t, gb_t = _torch_conv1d(torch, x, w, b, **conv)
    assert_close(fc.conv1d(x, w, b, **conv, algorithm=algorithm), y_t, err_msg="y:")
    gx, gw, gb = fc.conv1d_backward(gy.astype(dtype), x, w, **conv, algorithm=algorithm)
    assert_close(gx, gx_t, err_msg="gx:")
    assert_close(gw, gw_t, err_msg="gw:")
    assert_close(gb, gb_t, err_msg="gb:")


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: fc.conv1d(np.ones((1, 2, 1, 5)), np.ones((3, 2, 2))), ValueError, r"\bx\b"),
        (lambda: fc.conv1d(np.ones((2, 5)), np.ones((3, 2, 2))), ValueError, r"\bx\b"),
        (lambda: fc.conv1d(np.ones((1, 2, 5)), np.ones((3, 2, 1, 2))), ValueError, r"\bw\b"),
        (lambda: fc.conv1d(np.ones((1, 2, 5)), np.ones((3, 2, 2)), padding=(1, 1, 1)),
         ValueError, "padding"),
        (lambda: fc.conv1d(np.ones((1, 2, 5)), np.ones((3, 2, 2)), padding=-1), ValueError,
         "padding"),
        (lambda: fc.conv1d(np.ones((1, 2, 5)), np.ones((3, 2, 2)), padding="middle"),
         ValueError, "padding"),
        (lambda: fc.conv1d(np.ones((1, 2, 5)), np.ones((3, 2, 2)), stride=0), ValueError,
         "stride"),
        (lambda: fc.conv1d(np.ones((1, 2, 5)), np.ones((3, 2, 6))), ValueError, "kernel"),
        (lambda: fc.conv1d_backward(np.ones((1, 3, 5)), np.ones((1, 2, 5)), np.ones((3, 2, 2))),
         ValueError, r"\bgy\b"),
        (lambda: fc.conv_transpose1d(np.ones((1, 2, 5)), np.ones((3, 2, 2))), ValueError,
         r"\bw\b|\bx\b"),
        (lambda: fc.max_pool1d(np.ones((1, 2, 5)), 2, padding=2), ValueError, "padding"),
        (lambda: fc.max_pool1d(np.ones((1, 2, 1, 5)), 2), ValueError, r"\bx\b"),
        (lambda: fc.avg_pool1d(np.ones((1, 2, 5)), 3, padding=2), ValueError, "padding"),
        (lambda: fc.avg_pool1d(np.ones((1, 2, 5)), 0), ValueError, "kernel_size"),
        (lambda: fc.max_pool1d(np.ones((1, 1, 1)), 2, stride=1, padding=1, dilation=2),
         ValueError, "only padding"),
        (lambda: fc.max_pool1d_backward(np.ones((1, 2, 2)), np.full((1, 2, 2), 5), (1, 2, 5)),
         ValueError, "idx"),
        (lambda: fc.max_pool1d_backward(np.ones((1, 2, 2)), np.full((1, 2, 2), -1), (1, 2, 5)),
         ValueError, "idx"),
        (lambda: fc.max_pool1d_backward(np.ones((1, 2, 2)), np.zeros((1, 2, 3), int), (1, 2, 5)),
         ValueError, "idx"),
        (lambda: fc.max_pool1d_backward(np.ones((1, 2, 2)), np.zeros((1, 2, 2)), (1, 2, 5)),
         TypeError, "idx"),
        (lambda: fc.max_pool1d_backward(np.ones((1, 2, 2)), np.zeros((1, 2, 2), int),
                                        (1, 2, 1, 5)), ValueError, "input_shape"),
        (lambda: fc.avg_pool1d_backward(np.ones((1, 2, 3)), (1, 2, 5), 2), ValueError, r"\bgy\b"),
    ],
    ids=["conv1d-x-4d", "conv1d-x-2d", "conv1d-w-4d", "conv1d-padding-triple",
         "conv1d-padding-negative", "conv1d-padding-word", "conv1d-stride-0",
         "conv1d-kernel-too-long", "conv1d-backward-gy", "transpose-w-channels",
         "max-padding-limit", "max-x-4d", "avg-padding-limit", "avg-kernel-0",
         "max-only-padding", "max-backward-idx-too-large", "max-backward-idx-negative",
         "max-backward-idx-shape", "max-backward-idx-float", "max-backward-input-shape-4d",
         "avg-backward-gy"],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --------------------------------------------------------------------------- #
# empty batch, lists, threads
# --------------------------------------------------------------------------- #


def test_empty_batch(dtype):
    x = np.zeros((0, 2, 7), dtype)
    w = np.ones((3, 2, 3), dtype)
    y = fc.conv1d(x, w, np.ones(3, dtype), padding=1)
    assert y.shape == (0, 3, 7) and y.dtype == dtype
    gx, gw, gb = fc.conv1d_backward(y, x, w, padding=1)
    assert gx.shape == x.shape and gw.shape == w.shape and not gw.any() and not gb.any()
    yt = fc.conv_transpose1d(x, np.ones((2, 3, 3), dtype), stride=2)
    assert yt.shape == (0, 3, 15)
    y, idx = fc.max_pool1d(x, 2, return_indices=True)
    assert y.shape == (0, 2, 3) and fc.max_pool1d_backward(y, idx, x.shape).shape == x.shape
    y = fc.avg_pool1d(x, 3, 2, 1, True)
    assert y.shape == (0, 2, 4) and fc.avg_pool1d_backward(y, x.shape, 3, 2, 1, True).shape == \
        x.shape


def test_nested_lists_and_integers():
    # [1, 2, 3, 4] with kernel [1, 10]: 21, 32, 43
    y = fc.conv1d([[[1, 2, 3, 4]]], [[[1, 10]]])
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, [[[21, 32, 43]]])
    y, idx = fc.max_pool1d([[[1, 5, 5, 2, 7]]], 2, stride=1, return_indices=True)
    np.testing.assert_array_equal(y, [[[5, 5, 5, 7]]])
    np.testing.assert_array_equal(idx, [[[1, 1, 2, 4]]])
    np.testing.assert_array_equal(fc.avg_pool1d([[[1, 2, 3, 4, 5, 6]]], 3, 2, 1, True),
                                  [[[1, 3, 5, 3]]])


def test_one_and_two_threads_bit_identical(dtype, rng, restore_threads):
    x = rng.standard_normal((3, 4, 17)).astype(dtype)
    w = rng.standard_normal((6, 2, 3)).astype(dtype)
    wt = rng.standard_normal((4, 3, 3)).astype(dtype)
    results = {}
    for threads in (1, 2):
        with fc.threads(threads):
            y = fc.conv1d(x, w, stride=2, padding="same", groups=2)
            out = [y, *fc.conv1d_backward(np.cos(y), x, w, stride=2, padding="same", groups=2)]
            yt = fc.conv_transpose1d(x, wt, stride=2, padding=1, output_padding=1, groups=2)
            out += [yt, *fc.conv_transpose1d_backward(np.sin(yt), x, wt, stride=2, padding=1,
                                                      output_padding=1, groups=2)]
            ym, idx = fc.max_pool1d(x, 3, 2, 1, 2, True, True)
            out += [ym, idx, fc.max_pool1d_backward(np.cos(ym), idx, x.shape)]
            ya = fc.avg_pool1d(x, 4, 3, 2, True, False)
            out += [ya, fc.avg_pool1d_backward(np.cos(ya), x.shape, 4, 3, 2, True, False)]
            results[threads] = out
    for i, (one, two) in enumerate(zip(results[1], results[2])):
        assert one.dtype == two.dtype
        assert np.array_equal(one, two), f"result {i} differs between 1 and 2 threads"


def test_one_element_tuples_are_accepted_like_pytorch(rng):
    """PyTorch's 1-D layers store stride=(2,), kernel_size=(3,): those work here too."""
    x = rng.standard_normal((2, 3, 11))
    w = rng.standard_normal((4, 3, 3))
    np.testing.assert_array_equal(
        fc.conv1d(x, w, stride=(2,), padding=(1, 1), dilation=(2,)),
        fc.conv1d(x, w, stride=2, padding=1, dilation=2),
    )
    np.testing.assert_array_equal(fc.max_pool1d(x, (3,), (2,), (1,)), fc.max_pool1d(x, 3, 2, 1))
    np.testing.assert_array_equal(fc.avg_pool1d(x, (3,), (2,)), fc.avg_pool1d(x, 3, 2))
    with pytest.raises(ValueError, match="stride"):
        fc.conv1d(x, w, stride=(2, 2, 2))
