"""fastconv: fast CPU convolution and pooling for NumPy arrays.

Typed Cython kernels with OpenMP, released from the GIL; PyTorch semantics on
NCHW float32/float64 arrays. See ``fastconv.functional`` for the operations
(all re-exported here), ``fastconv.nn`` for layers with forward/backward,
``fastconv.optim`` for optimisers and ``fastconv.models`` for LeNet-5.

Examples
--------
>>> import numpy as np, fastconv
>>> x = np.ones((1, 1, 4, 4))
>>> fastconv.conv2d(x, np.ones((2, 1, 3, 3))).shape
(1, 2, 2, 2)
>>> with fastconv.threads(1):
...     fastconv.avg_pool2d(x, 2)[0, 0]
array([[1., 1.],
       [1., 1.]])
"""

from __future__ import annotations

import os
import platform
import sys
from typing import IO, Any

from fastconv._version import __version__


def _kernels_missing(exc: ImportError) -> ImportError:
    """The error of an import of fastconv whose compiled kernels are not there: almost
    always Python run inside the source tree, which shadows the installed package."""
    here = os.path.dirname(os.path.abspath(__file__))
    return ImportError(
        f"fastconv's compiled kernels are missing from {here} ({exc}). You are most "
        "likely importing fastconv from its source tree, which shadows the installed "
        "package: run Python from another directory (cd elsewhere, or run `pytest` "
        "from the repository root, not `python -m pytest`), or build the kernels in "
        "place first: pip install Cython numpy scipy setuptools && "
        "python setup.py build_ext --inplace"
    )


try:
    from fastconv._kernels import _cpu  # noqa: F401  (compiled: the package is built)
except ImportError as _exc:
    raise _kernels_missing(_exc) from _exc

from fastconv._config import (
    get_flush_denormal,
    get_num_threads,
    set_flush_denormal,
    set_num_threads,
    threads,
)
from fastconv._autotune import (
    autotune_choices,
    clear_autotune_cache,
    get_autotune,
    set_autotune,
)
from fastconv import functional
from fastconv.functional import *  # noqa: F401,F403  (the public operations)
from fastconv._conv_ops import ConvPlans, explain
from fastconv._machine import MachineLimits, machine_limits

__all__ = [
    "__version__",
    *[name for name in functional.__all__ if name != "ALGORITHMS"],
    "functional",
    "get_num_threads",
    "set_num_threads",
    "get_flush_denormal",
    "set_flush_denormal",
    "threads",
    "get_autotune",
    "set_autotune",
    "autotune_choices",
    "clear_autotune_cache",
    "explain",
    "ConvPlans",
    "show_config",
    "machine_limits",
    "MachineLimits",
]


def _read_build_info() -> dict[str, Any]:
    # Not named _build_info: importing the submodule fastconv._build_info binds that
    # name on the package, which would replace the function after its first call.
    try:
        from fastconv._build_info import BUILD_INFO
    except ImportError:  # built by something other than setup.py's build_ext
        return {}
    return BUILD_INFO


def _own_gemm_note() -> str:
    """Which products the kernels in use hand to fastconv's own GEMM (_kernels/_sgemm.h)."""
    from fastconv._dispatch import _gemm

    if not _gemm.HAS_OWN_GEMM:
        return "none in these kernels (BLAS runs every product)"
    return (f"float32 products of at most {_gemm.OWN_GEMM_MAX_COLUMNS} columns and an A of "
            f"{_gemm.OWN_GEMM_MIN_AREA} elements or more, and the im2col forward's and 1x1 "
            f"backward's of {_gemm.OWN_GEMM_MIN_ROWS} rows or more")


def show_config(file: IO[str] | None = None) -> None:
    """Print how fastconv was built and how it will run.

    Lists the version, compiler and flags, whether OpenMP is on (a serial build
    says so), the instruction-set variants of the kernels built and the one in use,
    the thread count and the CPUs available, whether denormals are flushed, the
    products fastconv's own GEMM takes instead of BLAS, the BLAS libraries loaded (the
    one the kernels' GEMM calls is marked), and this
    machine's float32 FMA peak and copy bandwidth at that thread count
    (``machine_limits``: measured on the first call, about half a second).

    Parameters
    ----------
    file : file-like, optional
        Where to print (default: sys.stdout).

    Examples
    --------
    >>> import io, fastconv
    >>> out = io.StringIO()
    >>> fastconv.show_config(out)
    >>> out.getvalue().splitlines()[0] == f"fastconv {fastconv.__version__}"
    True
    >>> any(line.split(":")[0].strip() == "OpenMP" for line in out.getvalue().splitlines())
    True
    """
    from fastconv import _config, _dispatch
    from fastconv._blas import blas_info
    from fastconv._kernels import _cpu, _openmp

    out = sys.stdout if file is None else file
    info = _read_build_info()
    if _openmp.openmp_enabled():
        openmp = f"on (OpenMP {_openmp.openmp_version()})"
    else:
        openmp = "OFF: serial build, the kernels run on one thread"
    variants = ["baseline"] + [
        f"{isa} ({' '.join(flags)})" for isa, flags in info.get("isa_variants", {}).items()
    ]
    isa = (
        f"{_dispatch.ISA} in use (FASTCONV_ISA={_dispatch.REQUESTED}; "
        f"CPU has AVX2+FMA: {'yes' if _cpu.cpu_has_avx2_fma() else 'no'}); "
        f"built: {', '.join(variants)}"
        + (f"; {info['isa_note']}" if info.get("isa_note") else "")
    )
    lines = [
        f"fastconv {__version__}",
        f"  python:        {platform.python_version()} ({sys.executable})",
        f"  compiler:      {info.get('compiler', 'unknown')}",
        f"  compile flags: {' '.join(info.get('compile_flags', [])) or 'unknown'}",
        f"  link flags:    {' '.join(info.get('link_flags', [])) or '-'}",
        f"  native SIMD:   {'on (FASTCONV_NATIVE=1)' if info.get('native') else 'off (portable)'}",
        f"  debug checks:  {'on (FASTCONV_DEBUG=1)' if info.get('debug') else 'off'}",
        f"  sanitizers:    {', '.join(info.get('sanitize', [])) or 'none'}",
        f"  OpenMP:        {openmp}",
        f"  kernels ISA:   {isa}",
        f"  threads:       {_config.get_num_threads()} (CPUs available: {_config.available_cpus()})",
        f"  flush denormal: {'on' if _config.get_flush_denormal() else 'off'}",
    ]
    limits = machine_limits()
    lines.append(
        f"  machine:       float32 FMA peak {limits.fma_gflops:.0f} GFLOP/s, copy bandwidth "
        f"{limits.copy_gbs:.1f} GB/s ({limits.threads} threads, {limits.isa} kernels; measured)"
    )
    lines.append(f"  own GEMM:      {_own_gemm_note()}")
    blas = blas_info()
    if not blas:
        lines.append("  BLAS:          none found by threadpoolctl")
    for lib in blas:
        # The kernels call scipy.linalg.cython_blas; mark scipy's own copy when it has one.
        folders = os.path.dirname(str(lib.get("filepath", ""))).lower().split(os.sep)
        role = "kernels' GEMM" if any(f.startswith("scipy") for f in folders) else "loaded"
        lines.append(
            f"  BLAS ({role}): {lib.get('internal_api')} {lib.get('version')} "
            f"({lib.get('threading_layer', '?')} threading, {lib.get('num_threads')} threads, "
            f"arch {lib.get('architecture', '?')}) {lib.get('filepath')}"
        )
    print("\n".join(lines), file=out)
