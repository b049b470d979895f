"""The kernels under fastconv.nn's Linear and ReLU layers (``_kernels/_linear.pyx``,
``_kernels/_activation.pyx``): against float64 NumPy, bit-identical on any thread
count, and the NumPy fallbacks for operands the kernels do not take."""

import numpy as np
import pytest

import fastconv
from fastconv import nn

try:
    import torch
except ImportError:  # the comparisons with torch.relu are skipped, the rest runs
    torch = None


def _normal(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, n_in, n_out, bias", [(64, 400, 120, True), (37, 19, 50, False),
                                                  (1, 5, 3, True), (600, 24, 17, True)])
def test_linear_blocks_match_reference_on_any_thread_count(dtype, n, n_in, n_out, bias):
    """Linear's blocked kernel (blocks of rows and of output features, one GEMM each)
    against float64 NumPy, gradients accumulated twice, bit-identical on 1-3 threads."""
    rng = np.random.default_rng(n)
    x = _normal(rng, (n, n_in), dtype)
    gy = _normal(rng, (n, n_out), dtype)
    results = []
    for threads in (1, 2, 3):
        layer = nn.Linear(n_in, n_out, bias=bias, dtype=dtype, rng=0)
        with fastconv.threads(threads):
            y = layer(x)
            gx = layer.backward(gy)
            layer(x)
            layer.backward(gy)  # adds into the gradients again
        results.append((y, gx, layer.weight.grad,
                        None if layer.bias is None else layer.bias.grad))
    w = layer.weight.data.astype(np.float64)
    y_ref = x.astype(np.float64) @ w.T + (layer.bias.data if bias else 0)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    y, gx, gw, gb = results[0]
    assert y.dtype == gx.dtype == gw.dtype == dtype
    np.testing.assert_allclose(y, y_ref, **tol)
    np.testing.assert_allclose(gx, gy.astype(np.float64) @ w, **tol)
    np.testing.assert_allclose(gw, 2 * gy.T.astype(np.float64) @ x, **tol)
    if bias:
        np.testing.assert_allclose(gb, 2 * gy.sum(axis=0, dtype=np.float64), **tol)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            if a is not None:
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_in", [1, 7, 8, 9, 17, 400])
@pytest.mark.parametrize("n_out", [1, 3, 4, 5, 9])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_single_rows_match_reference(dtype, n_in, n_out, bias):
    """A block of one row (a batch of one, the last row of a batch of 33) takes the dot
    product path, every tail of 8 inputs and 4 outputs: against float64 NumPy, and an
    output's bits do not depend on the outputs grouped with it."""
    rng = np.random.default_rng(n_in * 10 + n_out)
    layer = nn.Linear(n_in, n_out, bias=bias, dtype=dtype, rng=0)
    x = _normal(rng, (33, n_in), dtype)
    w = layer.weight.data.astype(np.float64)
    y_ref = x.astype(np.float64) @ w.T + (layer.bias.data if bias else 0)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    single = np.concatenate([layer(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(single, y_ref, **tol)
    np.testing.assert_array_equal(layer(x)[32], single[32])  # the batch's 1-row block
    if n_out > 4:  # output 4 alone (the tail) or in a group of four: the same sums
        alone = nn.Linear(n_in, 1, bias=bias, dtype=dtype, rng=0)
        alone.weight.data[...] = layer.weight.data[4:5]
        if bias:
            alone.bias.data[...] = layer.bias.data[4:5]
        np.testing.assert_array_equal(alone(x[:1])[:, 0], single[:1, 4])


def test_linear_falls_back_for_mixed_and_odd_operands():
    """float64 input to float32 weights, a non-contiguous replaced weight, an empty
    batch: NumPy's products, the same values."""
    rng = np.random.default_rng(3)
    layer = nn.Linear(6, 4, rng=0)
    x64 = rng.standard_normal((5, 6))
    y = layer(x64)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, x64 @ layer.weight.data.T + layer.bias.data, rtol=1e-6)
    layer.weight.data = np.asfortranarray(layer.weight.data)
    x = x64.astype(np.float32)
    np.testing.assert_allclose(layer(x), x @ layer.weight.data.T + layer.bias.data, rtol=1e-6)
    np.testing.assert_allclose(layer.backward(np.ones((5, 4), np.float32)),
                               np.ones((5, 4)) @ layer.weight.data, rtol=1e-6)
    layer.weight.data = np.ascontiguousarray(layer.weight.data)
    layer.bias.data = np.zeros(8, np.float32)[::2]  # a strided bias, a strided input
    strided = np.ones((6, 5), np.float32).T
    np.testing.assert_allclose(layer(strided), strided @ layer.weight.data.T, rtol=1e-6)
    np.testing.assert_allclose(layer.backward(np.ones((5, 4), np.float32)),
                               np.ones((5, 4)) @ layer.weight.data, rtol=1e-6)
    empty = layer(np.zeros((0, 6), np.float32))
    assert empty.shape == (0, 4)
    assert layer.backward(empty).shape == (0, 6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 6, 14, 14), (3, 5), (40000,), (0, 4), ()])
def test_relu_kernel_matches_numpy_on_any_thread_count(dtype, shape):
    """torch.relu's values exactly (+0.0 for negatives and -inf, NaN kept), the mask's
    gradient, on 1-3 threads (blocks of elements: 40000 spans several)."""
    rng = np.random.default_rng(len(shape))
    x = _normal(rng, shape, dtype)
    if x.size > 4:
        x.reshape(-1)[:4] = [np.nan, np.inf, -np.inf, 0.0]
    gy = _normal(rng, shape, dtype)
    if gy.size > 5:
        gy.reshape(-1)[4] = np.nan
    expected_y = np.where((x > 0) | np.isnan(x), x, np.zeros((), dtype))
    expected_gx = gy * (x > 0)
    for threads in (1, 2, 3):
        relu = nn.ReLU()
        with fastconv.threads(threads):
            y = relu(x)
            gx = relu.backward(gy)
        assert y.dtype == gx.dtype == dtype and y.shape == gx.shape == shape
        # bitwise: signs of zero and NaN included
        assert y.tobytes() == expected_y.tobytes()
        assert gx.tobytes() == expected_gx.tobytes()
    if torch is not None and x.size:
        np.testing.assert_array_equal(y, torch.relu(torch.from_numpy(x)).numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 9, 8192, 40000])
def test_relu_in_place_is_the_forward_without_a_mask(dtype, size):
    """The eval-mode kernel (a compiled Sequential's in-place ReLU): relu_forward's
    values bit for bit, signs of zero and NaN included, on 1-3 threads."""
    from fastconv._dispatch import _activation

    rng = np.random.default_rng(size)
    x = _normal(rng, (size,), dtype)
    x[:4] = [np.nan, -0.0, -np.inf, np.inf][:size]
    y, mask = np.empty_like(x), np.empty(size, np.uint8)
    _activation.relu_forward(x, y, mask, 1)
    for threads in (1, 2, 3):
        z = x.copy()
        _activation.relu_in_place(z, threads)
        assert z.tobytes() == y.tobytes()


def test_relu_falls_back_for_other_operands():
    """Integer, float16 and strided inputs keep NumPy's products; so does a gradient of
    another layout."""
    relu = nn.ReLU()
    ints = np.array([-2, 0, 3])
    assert relu(ints).tolist() == [0, 0, 3] and relu(ints).dtype == ints.dtype
    half = np.array([-1.5, np.nan, 2.5], np.float16)
    out = relu(half)
    assert out.dtype == np.float16 and np.signbit(out[0]) == 0 and np.isnan(out[1])
    x = np.arange(-6.0, 6.0).reshape(3, 4)[:, ::2]
    np.testing.assert_array_equal(relu(x), np.maximum(x, 0))
    np.testing.assert_array_equal(relu.backward(np.ones((3, 4))[:, ::2]), (x > 0) * 1.0)
