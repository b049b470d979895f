"""Shared fixtures and helpers for the fastconv tests.

Nothing here imports fastconv at module level, so the checks of the NumPy
reference (tests/test_reference.py) run even before the package is built.
"""

import numpy as np
import pytest

try:  # hypothesis is a test extra; keep the rest of the suite usable without it
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover
    settings = None
else:
    settings.register_profile(
        "fastconv",
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile("fastconv")

SEED = 20240611

#: relative tolerance per result dtype, see :func:`assert_close`
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}


#: The test files of the kernels' numerics: `-m kernels` selects them (CI runs them again
#: on the baseline instruction set and on a bounds-checked AddressSanitizer build).
KERNEL_TEST_FILES = {
    "test_kernels.py", "test_conv2d.py", "test_conv1d.py", "test_conv_transpose.py",
    "test_pool.py", "test_cvec.py", "test_winograd.py", "test_nonfinite.py",
    "test_denormal.py", "test_memory.py", "test_debug_build.py", "test_machine.py",
    "test_layer_kernels.py", "test_wide_rows.py", "test_fused_layers.py", "test_optim.py",
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: long-running test (deselect with -m 'not slow')"
    )
    config.addinivalue_line(
        "markers", "kernels: a test of the kernels' numerics (see KERNEL_TEST_FILES)"
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in KERNEL_TEST_FILES:
            item.add_marker(pytest.mark.kernels)


def assert_close(actual, expected, dtype=None, err_msg=""):
    """Check ``actual`` against a float64 reference ``expected``.

    The comparison is relative to the size of the reference: the largest
    absolute error must not exceed ``tol * max(1, max |expected|)``, with
    ``tol`` 1e-10 for float64 and 1e-4 for float32 (``dtype`` defaults to the
    dtype of ``actual``). Shapes must match exactly.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (
        f"{err_msg} shape {actual.shape} != expected {expected.shape}"
    )
    tol = TOLERANCE[np.dtype(dtype if dtype is not None else actual.dtype)]
    if expected.size == 0:
        return
    assert np.all(np.isfinite(actual)), f"{err_msg} non-finite values in result"
    scale = max(1.0, float(np.max(np.abs(expected))))
    err = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    assert err <= tol * scale, (
        f"{err_msg} max abs error {err:.3g} > {tol:g} * {scale:.3g} "
        f"(dtype {np.dtype(dtype if dtype is not None else actual.dtype)})"
    )


@pytest.fixture(name="assert_close", scope="session")
def assert_close_fixture():
    """The :func:`assert_close` helper as a fixture."""
    return assert_close


@pytest.fixture
def rng():
    """A freshly seeded NumPy generator (same stream in every test)."""
    return np.random.default_rng(SEED)


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    """Each floating dtype the kernels are specialised for."""
    return np.dtype(request.param)


@pytest.fixture(scope="session")
def torch():
    """The torch module; the test is skipped where torch is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture
def restore_threads():
    """Restore fastconv's thread count after the test."""
    import fastconv

    before = fastconv.get_num_threads()
    yield
    fastconv.set_num_threads(before)
