"""Kernel modules built for several instruction sets, and the variant picked at import.

On x86-64, setup.py builds every module of its ``DISPATCHED`` list twice from one
source: a portable baseline (e.g. ``fastconv._kernels._pool``) and an AVX2 + FMA build
(``fastconv._kernels._pool_avx2``, compiled with ``-mavx2 -mfma``), and records the
list in ``fastconv/_build_info.py``. At import, one
variant is chosen for all of them: the best one this CPU runs, or the one named by the
environment variable ``FASTCONV_ISA`` (``auto``, ``avx2`` or ``baseline``, read once).
An AVX2 module is never imported on a CPU without AVX2: even its import could stop the
process with an illegal instruction. Asking for ``avx2`` where it cannot run warns and
uses the baseline.

The rest of fastconv imports these kernel modules from here (``from
fastconv._dispatch import _pool``), never from ``fastconv._kernels`` directly.

Examples
--------
>>> from fastconv import _dispatch
>>> _dispatch.ISA in _dispatch.ISAS
True
>>> _dispatch._pool.__name__ in {f"fastconv._kernels._pool{_dispatch.SUFFIX[isa]}"
...                              for isa in _dispatch.ISAS}
True
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from types import ModuleType
from typing import Any

import numpy as np

from fastconv._kernels import _cpu


def _dispatched() -> tuple[str, ...]:
    """The kernel modules built per instruction set, as the build recorded them."""
    try:
        from fastconv._build_info import BUILD_INFO
    except ImportError:  # built by something other than setup.py's build_ext
        return ()
    names: list[str] = BUILD_INFO.get("dispatched", [])  # type: ignore[assignment]
    return tuple(names)


#: kernel modules built per instruction set (setup.py's list)
DISPATCHED = _dispatched()

#: instruction-set variants, best first
ISAS = ("avx2", "baseline")

#: module-name suffix of each variant
SUFFIX = {"avx2": "_avx2", "baseline": ""}


def cpu_supports(isa: str) -> bool:
    """Whether this CPU (and OS) can run the kernels built for ``isa``."""
    return isa == "baseline" or (isa == "avx2" and _cpu.cpu_has_avx2_fma())


def built(isa: str) -> bool:
    """Whether every module of ``DISPATCHED`` was built for ``isa`` (found, not imported)."""
    return bool(DISPATCHED) and all(
        importlib.util.find_spec(f"fastconv._kernels.{name}{SUFFIX[isa]}") is not None
        for name in DISPATCHED
    )


def load(isa: str) -> dict[str, ModuleType]:
    """The ``isa`` variant of every module of ``DISPATCHED``, by base name.

    Only for an ``isa`` with ``cpu_supports(isa)``: the import alone may run its code.
    """
    if not cpu_supports(isa):
        raise RuntimeError(f"this CPU cannot run the {isa} kernels")
    return {name: importlib.import_module(f"fastconv._kernels.{name}{SUFFIX[isa]}")
            for name in DISPATCHED}


def specialised(kernel: Any, dtype: Any) -> Any:
    """``kernel``'s float32 or float64 version (by ``dtype``): a kernel over both float
    types picks its version from its arguments on every call, which costs about half a
    microsecond; a caller that binds a kernel once (nn._program) binds the version."""
    return kernel["float" if np.dtype(dtype) == np.float32 else "double"]


def _requested() -> str:
    value = os.environ.get("FASTCONV_ISA", "").strip().lower()
    if value not in ("", "auto", *ISAS):
        raise ValueError(
            "environment variable FASTCONV_ISA must be one of auto, "
            f"{', '.join(ISAS)}, got {os.environ['FASTCONV_ISA']!r}"
        )
    return value or "auto"


def _choose() -> tuple[str, dict[str, ModuleType]]:
    requested = _requested()
    for isa in ISAS if requested == "auto" else (requested,):
        if isa == "baseline":
            break
        problem = None
        if not cpu_supports(isa):
            problem = "this CPU lacks AVX2 or FMA"
        elif not built(isa):
            problem = "this build has no avx2 kernels"
        else:
            try:
                return isa, load(isa)
            except ImportError as exc:
                problem = f"its modules do not import ({exc})"
        if requested != "auto":
            warnings.warn(f"fastconv: FASTCONV_ISA={requested} but {problem}: "
                          "using the baseline kernels", RuntimeWarning, stacklevel=3)
    return "baseline", load("baseline")


#: the instruction-set variant of the kernels in use
ISA, _modules = _choose()
#: the value of FASTCONV_ISA this choice followed ("auto" when unset)
REQUESTED = _requested()


def __getattr__(name: str) -> ModuleType:
    """The variant in use of the kernel module ``name`` (``from fastconv._dispatch
    import _pool``); a module the build made once (or a build that recorded no list)
    is the baseline module itself."""
    if name not in _modules:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            _modules[name] = importlib.import_module(f"fastconv._kernels.{name}")
        except ImportError:
            raise AttributeError(f"module {__name__!r} has no kernel module {name!r}") from None
    return _modules[name]
