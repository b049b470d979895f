"""fastconv._blas: BLAS held single-threaded while kernels call it from OpenMP threads."""

import os
from types import SimpleNamespace

import pytest
import scipy

from fastconv import _blas

threadpoolctl = pytest.importorskip("threadpoolctl")


def _threads_of(filepaths):
    return {info["filepath"]: info["num_threads"]
            for info in threadpoolctl.threadpool_info() if info["filepath"] in filepaths}


def test_the_kernels_blas_is_single_threaded_inside_the_block_and_restored_after():
    _blas._get_controller()
    kernels = {lib.filepath for lib in _blas._blas_libs}
    assert kernels
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        with _blas.single_threaded_blas():
            with _blas.single_threaded_blas():  # nested: one limit, reference-counted
                assert set(_threads_of(kernels).values()) == {1}
            assert set(_threads_of(kernels).values()) == {1}
        assert set(_threads_of(kernels).values()) == {2}


def test_the_kernels_blas_is_scipys_where_scipy_ships_one():
    package = os.path.dirname(scipy.__file__)
    numpys = SimpleNamespace(filepath="/site-packages/numpy.libs/libopenblas64_.so")
    wheel = SimpleNamespace(filepath=package + ".libs/libscipy_openblas.so")
    inside = SimpleNamespace(filepath=os.path.join(package, "linalg", "libblas.so"))
    assert _blas._kernels_blas([numpys, wheel, inside]) == [wheel, inside]
    # SciPy on a system BLAS: every library loaded, as nothing tells which it calls
    system = SimpleNamespace(filepath="/usr/lib/x86_64-linux-gnu/libblas.so.3")
    assert _blas._kernels_blas([numpys, system]) == [numpys, system]
