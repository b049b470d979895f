"""Argument spellings PyTorch code passes (fastconv/_validation.py, _geometry.py):
what PyTorch accepts is accepted with the same meaning, what it rejects is rejected.

Each accepted spelling is compared with the canonical one (and with PyTorch where it
is installed); each rejected one must raise ValueError or TypeError naming the
argument.
"""

import numpy as np
import pytest

from fastconv import functional as F

RNG = np.random.default_rng(17)
X = RNG.standard_normal((2, 3, 9, 8))
W = RNG.standard_normal((4, 3, 3, 3))
X1 = RNG.standard_normal((2, 3, 11))
W1 = RNG.standard_normal((4, 3, 3))

# (call with the spelling, the same call spelled canonically)
SAME = {
    "conv2d stride=(2,)": (lambda: F.conv2d(X, W, stride=(2,)), lambda: F.conv2d(X, W, stride=2)),
    "conv2d padding=(1,)": (lambda: F.conv2d(X, W, padding=(1,)),
                            lambda: F.conv2d(X, W, padding=1)),
    "conv2d dilation=[2]": (lambda: F.conv2d(X, W, dilation=[2]),
                            lambda: F.conv2d(X, W, dilation=2)),
    "conv2d_backward stride=(2,)": (
        lambda: F.conv2d_backward(np.ones((2, 4, 4, 3)), X, W, stride=(2,)),
        lambda: F.conv2d_backward(np.ones((2, 4, 4, 3)), X, W, stride=2)),
    "conv_transpose2d stride=(2,) output_padding=(1,)": (
        lambda: F.conv_transpose2d(X, W.transpose(1, 0, 2, 3), stride=(2,), output_padding=(1,)),
        lambda: F.conv_transpose2d(X, W.transpose(1, 0, 2, 3), stride=2, output_padding=1)),
    "conv_transpose1d padding=(1,)": (
        lambda: F.conv_transpose1d(X1, W1.transpose(1, 0, 2), padding=(1,)),
        lambda: F.conv_transpose1d(X1, W1.transpose(1, 0, 2), padding=1)),
    "conv1d stride=(2,)": (lambda: F.conv1d(X1, W1, stride=(2,)),
                           lambda: F.conv1d(X1, W1, stride=2)),
    "max_pool2d kernel_size=(2,)": (lambda: F.max_pool2d(X, (2,)), lambda: F.max_pool2d(X, 2)),
    "max_pool2d stride=()": (lambda: F.max_pool2d(X, 3, stride=()), lambda: F.max_pool2d(X, 3)),
    "max_pool2d padding=(1,) dilation=(2,)": (
        lambda: F.max_pool2d(X, 3, 1, padding=(1,), dilation=(2,)),
        lambda: F.max_pool2d(X, 3, 1, padding=1, dilation=2)),
    "avg_pool2d kernel_size=(2,) stride=()": (lambda: F.avg_pool2d(X, (2,), stride=()),
                                              lambda: F.avg_pool2d(X, 2)),
    "avg_pool2d_backward stride=()": (
        lambda: F.avg_pool2d_backward(np.ones((2, 3, 4, 4)), X.shape, 2, stride=()),
        lambda: F.avg_pool2d_backward(np.ones((2, 3, 4, 4)), X.shape, 2)),
    "lp_pool2d stride=()": (lambda: F.lp_pool2d(X, 2, 2, stride=()),
                            lambda: F.lp_pool2d(X, 2, 2)),
    "max_pool1d stride=()": (lambda: F.max_pool1d(X1, 2, stride=()),
                             lambda: F.max_pool1d(X1, 2)),
    "avg_pool1d stride=() kernel_size=(3,)": (lambda: F.avg_pool1d(X1, (3,), stride=()),
                                              lambda: F.avg_pool1d(X1, 3)),
}


@pytest.mark.parametrize("name", sorted(SAME))
def test_pytorch_spelling_means_the_same(name):
    spelled, canonical = SAME[name]
    for got, expected in zip(_flat(spelled()), _flat(canonical()), strict=True):
        np.testing.assert_array_equal(got, expected)


def _flat(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("divisor", [-2, -1, 3])
def test_avg_pool_divides_by_any_nonzero_divisor_override(divisor):
    y = F.avg_pool2d(X, 2, divisor_override=divisor)
    sums = X[:, :, :8, :8].reshape(2, 3, 4, 2, 4, 2).sum(axis=(3, 5))
    np.testing.assert_allclose(y, sums / divisor, rtol=1e-12)
    gx = F.avg_pool2d_backward(np.ones_like(y), X.shape, 2, divisor_override=divisor)
    np.testing.assert_allclose(gx[:, :, :8, :8], np.full((2, 3, 8, 8), 1 / divisor))
    assert not gx[:, :, 8:].any()


@pytest.mark.parametrize("call, names", [
    (lambda: F.avg_pool2d(X, 2, divisor_override=0), "divisor_override"),
    (lambda: F.conv2d(X, W, stride=()), "stride"),
    (lambda: F.conv2d(X, W, stride=(1, 1, 1)), "stride"),
    (lambda: F.max_pool2d(X, ()), "kernel_size"),
    (lambda: F.max_pool2d(np.zeros((1, 0, 4, 4)), 2), "channel"),
    (lambda: F.avg_pool2d(np.zeros((1, 0, 4, 4)), 2), "channel"),
    (lambda: F.lp_pool2d(np.zeros((1, 0, 4, 4)), 2, 2), "channel"),
    (lambda: F.max_pool1d(np.zeros((1, 0, 5)), 2), "channel"),
    (lambda: F.avg_pool1d(np.zeros((3, 0, 5)), 2), "channel"),
    (lambda: F.max_pool1d(np.zeros((0, 5)), 2), "3-D"),
])
def test_what_pytorch_rejects_is_rejected(call, names):
    with pytest.raises((ValueError, TypeError), match=names):
        call()


def test_an_empty_batch_still_pools():
    """Only the batch may be empty, as in PyTorch."""
    y = F.max_pool1d(np.zeros((0, 2, 5)), 2)
    assert y.shape == (0, 2, 2)
    assert F.avg_pool2d(np.zeros((0, 3, 4, 4)), 2).shape == (0, 3, 2, 2)


def test_against_pytorch(torch):
    tf = torch.nn.functional
    x = torch.from_numpy(X)
    w = torch.from_numpy(W)
    np.testing.assert_allclose(F.conv2d(X, W, stride=(2,), padding=(1,)),
                               tf.conv2d(x, w, stride=(2,), padding=(1,)).numpy(), rtol=1e-10)
    np.testing.assert_allclose(F.max_pool2d(X, (2,), stride=()),
                               tf.max_pool2d(x, (2,), stride=()).numpy())
    np.testing.assert_allclose(F.avg_pool2d(X, 3, 1, 1, divisor_override=-2),
                               tf.avg_pool2d(x, 3, 1, 1, divisor_override=-2).numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(
        F.conv_transpose1d(X1, W1.transpose(1, 0, 2), padding=(1,)),
        tf.conv_transpose1d(torch.from_numpy(X1), torch.from_numpy(W1.transpose(1, 0, 2).copy()),
                            padding=(1,)).numpy(), rtol=1e-10)
    for bad in (lambda m: m.max_pool1d(m_zeros(m, (1, 0, 5)), 2),
                lambda m: m.avg_pool2d(m_zeros(m, (1, 0, 4, 4)), 2)):
        with pytest.raises(RuntimeError):
            bad(tf)
        with pytest.raises(ValueError):
            bad(F)


def m_zeros(module, shape):
    """Zeros for ``module``: a torch tensor for torch.nn.functional, else NumPy."""
    if module is F:
        return np.zeros(shape)
    import torch
    return torch.zeros(shape, dtype=torch.float64)
