"""Build fastconv's Cython kernels.

Build switches (environment variables, read at build time):

- ``FASTCONV_NATIVE=1``: add ``-march=native`` (SIMD of the build machine; the
  result may crash with an illegal instruction on another CPU). Default: portable.
- ``FASTCONV_DEBUG=1``: Cython bounds, wraparound and initialisation checks on,
  ``-Og -g``. For finding out-of-bounds accesses; slower.
- ``FASTCONV_FAIL_NO_OPENMP=1``: a compiler without OpenMP is an error instead of
  a warning followed by a serial build (CI sets it).

OpenMP is detected by compiling, linking and running a tiny program with the
compiler that builds the extensions.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNEL_MODULES = [
    "_openmp", "_gemm", "_im2col", "_conv_direct", "_conv_gemm", "_conv_winograd", "_pool",
]

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int hits = 0;
        #pragma omp parallel num_threads(2) reduction(+:hits)
        hits += 1;
        printf("%d %d\\n", hits, omp_get_max_threads());
        return hits == 2 ? 0 : 1;
    }
    """
)


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def cython_directives(debug):
    checks = bool(debug)
    return {
        "language_level": 3,
        "boundscheck": checks,
        "wraparound": checks,
        "initializedcheck": checks,
        "cdivision": True,
        "embedsignature": True,
    }


def openmp_flags(compiler):
    """Compile and link flags that enable OpenMP for this compiler."""
    if compiler.compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        # Apple clang has no -fopenmp driver flag; libomp comes from Homebrew or conda.
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


def optimisation_flags(compiler, native, debug):
    if compiler.compiler_type == "msvc":
        return ["/Od", "/Zi"] if debug else ["/O2"]
    flags = ["-Og", "-g"] if debug else ["-O3"]
    if native:
        flags.append("-mcpu=native" if sys.platform == "darwin" else "-march=native")
    return flags


def probe_openmp(compiler, compile_flags, link_flags):
    """Return (works, message): compile, link and run a small OpenMP program."""
    tmp = tempfile.mkdtemp(prefix="fastconv-openmp-")
    try:
        source = os.path.join(tmp, "probe_openmp.c")
        with open(source, "w") as f:
            f.write(OPENMP_PROBE)
        objects = compiler.compile([source], output_dir=tmp, extra_postargs=compile_flags)
        compiler.link_executable(objects, "probe_openmp", output_dir=tmp, extra_postargs=link_flags)
        exe = os.path.join(tmp, "probe_openmp" + (".exe" if sys.platform == "win32" else ""))
        run = subprocess.run([exe], capture_output=True, text=True, timeout=60)
        if run.returncode != 0:
            return False, f"probe program exited with {run.returncode}: {run.stdout}{run.stderr}"
        return True, "ok"
    except Exception as exc:  # any compile/link/run failure means: no usable OpenMP
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compiler_version(compiler):
    exe = getattr(compiler, "compiler", None)
    if not exe:
        return compiler.compiler_type
    try:
        out = subprocess.run([exe[0], "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0].strip() or exe[0]
    except Exception:
        return exe[0]


class BuildKernels(build_ext):
    """build_ext that probes OpenMP and records the build configuration."""

    def build_extensions(self):
        native = env_flag("FASTCONV_NATIVE")
        debug = env_flag("FASTCONV_DEBUG")
        omp_compile, omp_link = openmp_flags(self.compiler)
        has_openmp, why = probe_openmp(self.compiler, omp_compile, omp_link)
        if not has_openmp:
            message = (
                "fastconv: the compiler cannot build OpenMP programs "
                f"({why}); building SERIAL kernels. Install an OpenMP runtime "
                "(gcc's libgomp, or libomp for clang) for multi-threaded kernels."
            )
            if env_flag("FASTCONV_FAIL_NO_OPENMP"):
                raise RuntimeError(message + " (FASTCONV_FAIL_NO_OPENMP is set)")
            warnings.warn(message)
            omp_compile, omp_link = [], []
        compile_flags = optimisation_flags(self.compiler, native, debug) + omp_compile
        for ext in self.extensions:
            ext.extra_compile_args = compile_flags + list(ext.extra_compile_args)
            ext.extra_link_args = omp_link + list(ext.extra_link_args)
        self.write_build_info(
            compiler=compiler_version(self.compiler),
            compile_flags=compile_flags,
            link_flags=omp_link,
            openmp=has_openmp,
            native=native,
            debug=debug,
        )
        super().build_extensions()

    def write_build_info(self, **info):
        text = "# Written by setup.py at build time.\nBUILD_INFO = " + repr(info) + "\n"
        targets = [os.path.join("fastconv", "_build_info.py")]
        if not self.inplace:
            targets.append(os.path.join(self.build_lib, "fastconv", "_build_info.py"))
        for path in targets:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)


def extensions():
    from Cython.Build import cythonize

    modules = [
        Extension(f"fastconv._kernels.{name}", [f"fastconv/_kernels/{name}.pyx"])
        for name in KERNEL_MODULES
    ]
    return cythonize(
        modules,
        compiler_directives=cython_directives(env_flag("FASTCONV_DEBUG")),
        # Debug C files live apart so they never mix with the checked-off ones.
        build_dir="build/cython-debug" if env_flag("FASTCONV_DEBUG") else None,
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildKernels})
