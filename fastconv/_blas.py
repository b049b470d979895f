"""Keep BLAS single-threaded while kernels call it from inside OpenMP regions.

Kernels parallelise over images and call a single-threaded GEMM per thread; a
multi-threaded BLAS underneath would oversubscribe the CPUs. The limit is
reference-counted, so concurrent Python threads share one limit and the BLAS
thread count is restored when the last one leaves.
"""

import threading

_lock = threading.Lock()
_active = 0
_limiter = None
_controller = None


def _get_controller():
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


def blas_info():
    """Descriptions of the BLAS libraries loaded in this process (via threadpoolctl)."""
    return [info for info in _get_controller().info() if info.get("user_api") == "blas"]


class single_threaded_blas:
    """Context manager: BLAS uses one thread inside the block (reference-counted)."""

    def __enter__(self):
        global _active, _limiter
        with _lock:
            if _active == 0:
                _limiter = _get_controller().limit(limits=1, user_api="blas")
            _active += 1
        return self

    def __exit__(self, *exc):
        global _active, _limiter
        with _lock:
            _active -= 1
            if _active == 0:
                _limiter.restore_original_limits()
                _limiter = None
        return False
