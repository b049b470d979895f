"""NaN and infinity propagate as in PyTorch.

Inputs with a few NaN, +inf and -inf entries go through conv2d (both algorithms),
conv2d_backward, conv_transpose2d (and its backward), and max / average / power-
average pooling forward and backward. Against torch (skipped where it is not
installed): the same NaN positions, the same infinities (sign included), the same
max-pool indices, and finite values equal within float tolerance.
"""

import numpy as np
import pytest

from fastconv import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
DTYPES = [np.float32, np.float64]


def sprinkle(rng, shape, dtype, count=4, kinds=(np.nan, np.inf, -np.inf)):
    """Random normal values with ``count`` entries of each non-finite kind."""
    a = rng.standard_normal(shape).astype(dtype)
    flat = a.reshape(-1)
    spots = rng.choice(flat.size, size=count * len(kinds), replace=False)
    for i, kind in enumerate(kinds):
        flat[spots[i * count:(i + 1) * count]] = kind
    return a


def assert_same_nonfinite(ours, theirs, what, other="torch"):
    """Same shape, NaN mask, +inf and -inf masks; finite values close."""
    theirs = theirs.detach().cpu().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs {other} {theirs.shape}"
    for name, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        a, b = test(ours), test(theirs)
        if not np.array_equal(a, b):
            only_ours = np.argwhere(a & ~b)[:5].tolist()
            only_torch = np.argwhere(b & ~a)[:5].tolist()
            raise AssertionError(
                f"{what}: {name} positions differ ({int(a.sum())} here, {int(b.sum())} in "
                f"{other}); only here: {only_ours}, only in {other}: {only_torch}")
    finite = np.isfinite(theirs)
    if finite.any():
        scale = max(1.0, float(np.max(np.abs(theirs[finite]))))
        err = float(np.max(np.abs(ours[finite].astype(np.float64) - theirs[finite])))
        assert err <= RTOL[ours.dtype] * scale * 10, f"{what}: finite values differ by {err:.3g}"


def t(a, grad=False):
    return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(grad)


# --------------------------------------------------------------------------- #
# convolution
# --------------------------------------------------------------------------- #
#
# A non-finite value times the implicit zero of padding (or of a cropped
# transposed-convolution output) is where backends differ: PyTorch's float64 path
# multiplies the zeros (0 * inf = NaN), its float32 path skips them. Those products
# are compared between fastconv's algorithms only (they must agree); everything
# else is compared with PyTorch.

CONV_CASES = [
    dict(stride=1, padding=1, groups=1),
    dict(stride=(2, 1), padding=(0, 2), groups=2),
    dict(stride=1, padding=0, dilation=2, groups=1),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv2d_forward_and_backward(case, algorithm, dtype, rng):
    conv = CONV_CASES[case]
    w = rng.standard_normal((6, 4 // conv["groups"], 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)

    # non-finite x: y, and gx, gw, gb for a finite gy
    x = sprinkle(rng, (2, 4, 9, 10), dtype)
    y = F.conv2d(x, w, b, **conv, algorithm=algorithm)
    xt, wt = t(x, True), t(w, True)
    yt = TF.conv2d(xt, wt, t(b), **conv)
    assert_same_nonfinite(y, yt, f"conv2d {algorithm}")
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, gb = F.conv2d_backward(gy, x, w, **conv, algorithm=algorithm)
    yt.backward(t(gy))
    assert_same_nonfinite(gx, xt.grad, f"conv2d_backward gx {algorithm}")
    assert_same_nonfinite(gw, wt.grad, f"conv2d_backward gw {algorithm}")
    assert_same_nonfinite(gb, t(gy).sum(dim=(0, 2, 3)), f"conv2d_backward gb {algorithm}")

    # non-finite gy, finite x: gx and gb (gw meets the padding, see below)
    x = rng.standard_normal((2, 4, 9, 10)).astype(dtype)
    gy = sprinkle(rng, y.shape, dtype, count=2)
    gx, gw, gb = F.conv2d_backward(gy, x, w, **conv, algorithm=algorithm)
    xt, wt = t(x, True), t(w, True)
    TF.conv2d(xt, wt, None, **conv).backward(t(gy))
    assert_same_nonfinite(gx, xt.grad, f"conv2d_backward gx, non-finite gy, {algorithm}")
    assert_same_nonfinite(gb, t(gy).sum(dim=(0, 2, 3)), f"conv2d_backward gb {algorithm}")
    if conv["padding"] == 0:
        assert_same_nonfinite(gw, wt.grad, f"conv2d_backward gw, non-finite gy, {algorithm}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
def test_conv2d_infinite_weights_over_zero_padding(algorithm, dtype, rng):
    """inf * 0 is NaN: an infinite weight tap over zero padding gives NaN, as in
    PyTorch (both dtypes) and as conv2d of the explicitly zero-padded input."""
    x = rng.standard_normal((1, 2, 6, 6)).astype(dtype)
    w = sprinkle(rng, (3, 2, 3, 3), dtype, count=1)
    y = F.conv2d(x, w, padding=1, algorithm=algorithm)
    assert_same_nonfinite(y, TF.conv2d(t(x), t(w), padding=1), f"conv2d {algorithm} inf weights")
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    assert_same_nonfinite(y, F.conv2d(padded, w, algorithm=algorithm),
                          f"conv2d {algorithm} inf weights", "explicitly padded input")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("padding", [0, 1])
def test_conv_transpose2d_forward_and_backward(padding, algorithm, dtype, rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    kw = dict(stride=2, padding=padding, output_padding=1)

    # non-finite x: y, and gx (and gw when nothing is cropped) for a finite gy
    x = sprinkle(rng, (2, 4, 5, 6), dtype, count=2)
    y = F.conv_transpose2d(x, w, b, **kw, algorithm=algorithm)
    xt, wt = t(x, True), t(w, True)
    yt = TF.conv_transpose2d(xt, wt, t(b), **kw)
    assert_same_nonfinite(y, yt, f"conv_transpose2d {algorithm}")
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, gb = F.conv_transpose2d_backward(gy, x, w, **kw, algorithm=algorithm)
    yt.backward(t(gy))
    assert_same_nonfinite(gx, xt.grad, f"conv_transpose2d_backward gx {algorithm}")
    if padding == 0:
        assert_same_nonfinite(gw, wt.grad, f"conv_transpose2d_backward gw {algorithm}")

    # non-finite gy, finite x: gx, gw, gb
    x = rng.standard_normal((2, 4, 5, 6)).astype(dtype)
    gy = sprinkle(rng, y.shape, dtype, count=2)
    gx, gw, gb = F.conv_transpose2d_backward(gy, x, w, **kw, algorithm=algorithm)
    xt, wt = t(x, True), t(w, True)
    TF.conv_transpose2d(xt, wt, None, **kw).backward(t(gy))
    assert_same_nonfinite(gx, xt.grad, f"conv_transpose2d_backward gx, non-finite gy, {algorithm}")
    assert_same_nonfinite(gw, wt.grad, f"conv_transpose2d_backward gw, non-finite gy, {algorithm}")
    assert_same_nonfinite(gb, t(gy).sum(dim=(0, 2, 3)), f"conv_transpose2d_backward gb")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_conv2d_backward_algorithms_agree_where_infinity_meets_padding(dtype, rng):
    """Every algorithm gives the same result (the design's promise), NaN included:
    conv2d's gradients for a gy with non-finite values and padding."""
    x = rng.standard_normal((2, 4, 9, 10)).astype(dtype)
    w = rng.standard_normal((6, 4, 3, 3)).astype(dtype)
    gy = sprinkle(rng, (2, 6, 9, 10), dtype, count=3)
    results = {alg: F.conv2d_backward(gy, x, w, padding=1, algorithm=alg)
               for alg in ("direct", "im2col")}
    for i, name in enumerate(("gx", "gw", "gb")):
        assert_same_nonfinite(results["direct"][i], results["im2col"][i],
                              f"conv2d_backward {name}, direct", "im2col")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_conv_transpose2d_backward_algorithms_agree_where_infinity_meets_cropping(dtype, rng):
    """The same for conv_transpose2d's gradients with non-finite x and a padding that
    crops the output."""
    x = sprinkle(rng, (2, 4, 5, 6), dtype, count=2)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    kw = dict(stride=2, padding=1, output_padding=1)
    gy = rng.standard_normal((2, 3, 10, 12)).astype(dtype)
    results = {alg: F.conv_transpose2d_backward(gy, x, w, **kw, algorithm=alg)
               for alg in ("direct", "im2col")}
    for i, name in enumerate(("gx", "gw", "gb")):
        assert_same_nonfinite(results["direct"][i], results["im2col"][i],
                              f"conv_transpose2d_backward {name}, direct", "im2col")


# --------------------------------------------------------------------------- #
# pooling
# --------------------------------------------------------------------------- #

POOL_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=1, padding=(1, 0)),
    dict(kernel_size=3, stride=2, ceil_mode=True),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_max_pool2d_forward_and_backward(case, dtype, rng):
    kw = POOL_CASES[case]
    x = sprinkle(rng, (2, 3, 9, 8), dtype, count=5)
    x[0, 0, :3, :3] = -np.inf  # windows of nothing but -inf
    x[0, 1, :3, :3] = np.nan   # windows of nothing but NaN
    x[1, 0, 0, :4] = [np.nan, 1.0, np.nan, np.inf]  # NaN then inf in one window
    y, idx = F.max_pool2d(x, **kw, return_indices=True)
    xt = t(x, True)
    yt, it = TF.max_pool2d(xt, **kw, return_indices=True)
    assert_same_nonfinite(y, yt, "max_pool2d y")
    np.testing.assert_array_equal(idx, it.numpy(), err_msg="max_pool2d indices")
    gy = sprinkle(rng, y.shape, dtype, count=1)
    gx = F.max_pool2d_backward(gy, idx, x.shape)
    yt.backward(t(gy))
    assert_same_nonfinite(gx, xt.grad, "max_pool2d_backward")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_avg_pool2d_forward_and_backward(case, count_include_pad, dtype, rng):
    kw = dict(POOL_CASES[case], count_include_pad=count_include_pad)
    x = sprinkle(rng, (2, 3, 9, 8), dtype, count=3)
    x[1, 2, 2:4, 2:4] = [[np.inf, -np.inf], [np.inf, np.inf]]  # +inf meets -inf
    y = F.avg_pool2d(x, **kw)
    xt = t(x, True)
    yt = TF.avg_pool2d(xt, **kw)
    assert_same_nonfinite(y, yt, "avg_pool2d")
    gy = sprinkle(rng, y.shape, dtype, count=2)
    gx = F.avg_pool2d_backward(gy, x.shape, **kw)
    yt.backward(t(gy))
    assert_same_nonfinite(gx, xt.grad, "avg_pool2d_backward")


LP_CASES = [
    (2, dict(kernel_size=2)),
    (2, dict(kernel_size=3, stride=2)),
    (4, dict(kernel_size=(2, 3), stride=1)),
    (3, dict(kernel_size=2, stride=1)),  # odd p: non-negative inputs only (see lp_pool2d)
    (1, dict(kernel_size=3, stride=2)),
]
# For p = 1, PyTorch's lp_pool2d goes through sign(sum), and torch.sign(NaN) is 0: a
# window holding a NaN gets a zero gradient there. That is an artefact, not a rule:
# p = 1 is compared on infinities only.


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", range(len(LP_CASES)))
def test_lp_pool2d_forward_and_backward(case, dtype, rng):
    p, kw = LP_CASES[case]
    kinds = (np.nan, np.inf, -np.inf) if p % 2 == 0 else (np.nan, np.inf)
    if p == 1:
        kinds = (np.inf,)
    x = sprinkle(rng, (2, 3, 9, 8), dtype, count=3, kinds=kinds)
    if p % 2:
        x = np.abs(x)  # PyTorch's x^p is the p-norm only for x >= 0 when p is odd
    y = F.lp_pool2d(x, p, **kw)
    xt = t(x, True)
    yt = TF.lp_pool2d(xt, p, **kw)
    assert_same_nonfinite(y, yt, f"lp_pool2d p={p}")
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = F.lp_pool2d_backward(gy, x, y, p, **kw)
    yt.backward(t(gy))
    # A deliberate difference: where a window's output is infinite, PyTorch's gradient
    # is NaN for every finite input of the window (sign(out)'s zero derivative times
    # inf); fastconv gives the limit, 0 from that window. Elsewhere NaN and inf match.
    # Likewise an input no window reads has gradient 0 here; PyTorch's x^p backward
    # gives 0 * inf = NaN there when that input is infinite or NaN.
    def coverage(outputs):
        return F.avg_pool2d_backward(outputs.astype(dtype), x.shape, kw["kernel_size"],
                                     kw.get("stride"), 0, kw.get("ceil_mode", False)) > 0

    in_infinite_window = coverage(np.isinf(y))
    read = coverage(np.ones(y.shape, bool))
    compared = read & ~in_infinite_window
    assert_same_nonfinite(np.where(compared, gx, 0), np.where(compared, xt.grad.numpy(), 0),
                          f"lp_pool2d_backward p={p} outside infinite windows")
    assert np.isfinite(gx[in_infinite_window & np.isfinite(x)]).all(), \
        "finite inputs of infinite windows"
    assert not gx[~read].any(), "inputs no window reads"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_adaptive_and_global_avg_pool2d(dtype, rng):
    x = sprinkle(rng, (2, 3, 9, 7), dtype, count=2)
    for size in ((4, 3), 1, (2, 5)):
        xt = t(x, True)
        yt = TF.adaptive_avg_pool2d(xt, size)
        y = F.adaptive_avg_pool2d(x, size)
        assert_same_nonfinite(y, yt, f"adaptive_avg_pool2d {size}")
        gy = sprinkle(rng, y.shape, dtype, count=1, kinds=(np.nan, np.inf))
        yt.backward(t(gy))
        assert_same_nonfinite(F.adaptive_avg_pool2d_backward(gy, x.shape), xt.grad,
                              f"adaptive_avg_pool2d_backward {size}")
    assert_same_nonfinite(F.global_avg_pool2d(x), TF.adaptive_avg_pool2d(t(x), 1),
                          "global_avg_pool2d")
