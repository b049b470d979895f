"""Keep BLAS single-threaded while kernels call it from inside OpenMP regions.

Kernels parallelise over images and call a single-threaded GEMM per thread; a
multi-threaded BLAS underneath would oversubscribe the CPUs. The limit is
reference-counted, so concurrent Python threads share one limit and the BLAS
thread count is restored when the last one leaves.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Literal

_lock = threading.Lock()
_active = 0
_saved: list[tuple[Any, int]] = []  # (library controller, its thread count) while a block is active
_controller: Any = None  # threadpoolctl.ThreadpoolController, made on first use
_blas_libs: list[Any] = []  # threadpoolctl's controllers of the loaded BLAS libraries


def _get_controller() -> Any:
    global _controller, _blas_libs
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
        _blas_libs = _kernels_blas(_controller.select(user_api="blas").lib_controllers)
    return _controller


def _kernels_blas(libs: list[Any]) -> list[Any]:
    """Of the BLAS libraries loaded, those the kernels may call: SciPy's (they call
    scipy.linalg.cython_blas), found as the ones inside SciPy's installation (a wheel
    keeps its BLAS in ``scipy.libs`` beside the package); all of them where none is
    (SciPy built against a system BLAS, often NumPy's too). NumPy's own copy in its
    wheel is never called from a kernel: setting its threads cost as much again."""
    import scipy

    package = os.path.realpath(os.path.dirname(scipy.__file__))
    roots = tuple(root + os.sep for root in (package, package + ".libs"))
    own = [lib for lib in libs if os.path.realpath(lib.filepath).startswith(roots)]
    return own or list(libs)


def blas_info() -> list[dict[str, Any]]:
    """Descriptions of the BLAS libraries loaded in this process (via threadpoolctl).

    Returns
    -------
    list of dict
        threadpoolctl's ``info()`` entries whose ``user_api`` is ``"blas"``
        (keys such as ``internal_api``, ``version``, ``num_threads``, ``filepath``).
    """
    return [info for info in _get_controller().info() if info.get("user_api") == "blas"]


class single_threaded_blas:
    """Context manager: BLAS uses one thread inside the block (reference-counted).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv._blas import single_threaded_blas
    >>> with single_threaded_blas():
    ...     (np.ones((2, 3)) @ np.ones((3, 2))).tolist()
    [[3.0, 3.0], [3.0, 3.0]]
    """

    # The library controllers are found once and driven directly: a threadpoolctl
    # ``limit()`` per call re-queries every library and costs ~17 us, a kernel call's
    # worth on small shapes. A library loaded later is picked up by ``blas_info()``
    # only; kernels call scipy's BLAS, which is loaded at import.

    def __enter__(self) -> single_threaded_blas:
        global _active
        with _lock:
            if _active == 0:
                _get_controller()
                for lib in _blas_libs:
                    threads = lib.get_num_threads()
                    if threads != 1:
                        lib.set_num_threads(1)
                        _saved.append((lib, threads))
            _active += 1
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        global _active
        with _lock:
            _active -= 1
            if _active == 0:
                while _saved:
                    lib, threads = _saved.pop()
                    lib.set_num_threads(threads)
        return False
