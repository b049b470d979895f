"""Keep BLAS single-threaded while kernels call it from inside OpenMP regions.

Kernels parallelise over images and call a single-threaded GEMM per thread; a
multi-threaded BLAS underneath would oversubscribe the CPUs. The limit is
reference-counted, so concurrent Python threads share one limit and the BLAS
thread count is restored when the last one leaves.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

_lock = threading.Lock()
_active = 0
_limiter: Any = None  # threadpoolctl's limiter while a block is active
_controller: Any = None  # threadpoolctl.ThreadpoolController, made on first use


def _get_controller() -> Any:
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


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

    def __enter__(self) -> single_threaded_blas:
        global _active, _limiter
        with _lock:
            if _active == 0:
                _limiter = _get_controller().limit(limits=1, user_api="blas")
            _active += 1
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        global _active, _limiter
        with _lock:
            _active -= 1
            if _active == 0:
                _limiter.restore_original_limits()
                _limiter = None
        return False
