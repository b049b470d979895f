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

Kernel modules: ``KERNEL_MODULES`` below is the one list. Instruction-set variants:
on x86-64 the hot modules (``DISPATCHED``) are built a second time with AVX2 and FMA as
``NAME_avx2`` from a two-line source generated at build time (``include "NAME.pyx"``),
when the compiler accepts the flags (probed); the list of them goes into
fastconv/_build_info.py, and fastconv._dispatch picks one variant at import. Not built
for FASTCONV_NATIVE=1 (the baseline already targets this machine) or FASTCONV_DEBUG=1.

- ``FASTCONV_SANITIZE=address`` (or ``address,undefined``): build with gcc/clang's
  AddressSanitizer (and UndefinedBehaviorSanitizer), baseline only, for finding
  out-of-bounds accesses through raw pointers. Run with libasan preloaded (see .ci/run).
"""

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

#: every kernel module (fastconv/_kernels/NAME.pyx)
KERNEL_MODULES = [
    "_openmp", "_cpu", "_gemm", "_im2col", "_conv_direct", "_conv_wide", "_conv_cvec",
    "_conv_gemm", "_conv_winograd", "_pool", "_probe", "_linear", "_activation", "_loss",
    "_optim",
]
#: modules whose results must round as NumPy's separate operations do: no fused
#: multiply-adds (GCC and clang contract a * b + c by default)
NO_CONTRACTION = ["_optim"]
#: those built once per instruction set (the hot loops); fastconv._dispatch loads them
DISPATCHED = ["_gemm", "_conv_direct", "_conv_wide", "_conv_cvec", "_conv_gemm",
              "_conv_winograd", "_pool", "_probe", "_linear", "_activation"]

#: where the per-ISA wrapper sources are generated
ISA_SOURCE_DIR = os.path.join("build", "isa-sources")

#: C headers the kernels include (a change rebuilds every kernel module)
KERNEL_HEADERS = ["fastconv/_kernels/_cvec.h", "fastconv/_kernels/_sgemm.h",
                  "fastconv/_kernels/_pool_rows.h", "fastconv/_kernels/_im2col_rows.h"]

#: gcc/clang flags of each instruction-set variant; its modules are NAME_<isa>
ISA_FLAGS = {"avx2": ["-mavx2", "-mfma"]}

#: compiled (never run: the build machine may lack AVX2) to check the compiler and
#: assembler take AVX2 and FMA
ISA_PROBE = textwrap.dedent(
    """
    #include <immintrin.h>
    double fastconv_probe(const double *a, const double *b, double *c) {
        __m256d r = _mm256_fmadd_pd(_mm256_loadu_pd(a), _mm256_loadu_pd(b), _mm256_loadu_pd(c));
        __m256i i = _mm256_add_epi64(_mm256_castpd_si256(r), _mm256_castpd_si256(r));
        _mm256_storeu_pd(c, _mm256_castsi256_pd(i));
        return c[0];
    }
    """
)

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


def optimisation_flags(compiler, native, debug, sanitize):
    if compiler.compiler_type == "msvc":
        return ["/Od", "/Zi"] if debug else ["/O2"]
    flags = ["-Og", "-g"] if debug else ["-O3"]
    if sanitize:
        # -O1 keeps the reports readable; UBSan stops at the first error
        flags = ["-O1", "-g", "-fno-omit-frame-pointer"] + [f"-fsanitize={s}" for s in sanitize]
        if "undefined" in sanitize:
            flags.append("-fno-sanitize-recover=undefined")
    if native:
        flags.append("-mcpu=native" if sys.platform == "darwin" else "-march=native")
    return flags


def isa_of(module_name):
    """The instruction-set variant an extension module name stands for."""
    return next((isa for isa in ISA_FLAGS if module_name.endswith("_" + isa)), "baseline")


def sanitizers():
    """The sanitizers FASTCONV_SANITIZE asks for, e.g. ["address", "undefined"]."""
    value = os.environ.get("FASTCONV_SANITIZE", "").strip().lower()
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = set(names) - {"address", "undefined"}
    if unknown:
        raise RuntimeError(f"FASTCONV_SANITIZE: unknown sanitizer(s) {sorted(unknown)}; "
                           "expected address and/or undefined")
    return names


def isa_variants_wanted():
    """Whether to declare the per-ISA builds at all, and why not."""
    if sanitizers():
        return False, "not built: sanitizer build"
    if env_flag("FASTCONV_NATIVE"):
        return False, "not built: FASTCONV_NATIVE=1 targets this machine already"
    if env_flag("FASTCONV_DEBUG"):
        return False, "not built: debug build"
    if platform.machine().lower() not in {"x86_64", "amd64", "i386", "i686", "x86"}:
        return False, f"not built: {platform.machine()} is not x86"
    return True, ""


def probe(compiler, name, source_text, compile_flags, link_flags=None):
    """Return (works, message): compile a small C file with ``compile_flags``; with
    ``link_flags`` (a list), also link it as a program and run it."""
    tmp = tempfile.mkdtemp(prefix=f"fastconv-{name}-")
    try:
        source = os.path.join(tmp, name + ".c")
        with open(source, "w") as f:
            f.write(source_text)
        objects = compiler.compile([source], output_dir=tmp, extra_postargs=compile_flags)
        if link_flags is None:
            return True, "ok"
        compiler.link_executable(objects, name, output_dir=tmp, extra_postargs=link_flags)
        exe = os.path.join(tmp, name + (".exe" if sys.platform == "win32" else ""))
        run = subprocess.run([exe], capture_output=True, text=True, timeout=60)
        if run.returncode != 0:
            return False, f"probe program exited with {run.returncode}: {run.stdout}{run.stderr}"
        return True, "ok"
    except Exception as exc:  # any compile/link/run failure means: these flags do not work
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

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:  # compile the extensions on every CPU (pip passes no -j)
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        native = env_flag("FASTCONV_NATIVE")
        debug = env_flag("FASTCONV_DEBUG")
        sanitize = sanitizers()
        omp_compile, omp_link = openmp_flags(self.compiler)
        has_openmp, why = probe(self.compiler, "probe_openmp", OPENMP_PROBE, omp_compile, omp_link)
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
        compile_flags = optimisation_flags(self.compiler, native, debug, sanitize) + omp_compile
        if sanitize:
            omp_link = omp_link + [f"-fsanitize={s}" for s in sanitize]
        isa_built, isa_note = self.select_isa_variants()
        for ext in self.extensions:
            isa_flags = ISA_FLAGS.get(isa_of(ext.name), [])
            if (ext.name.rsplit(".", 1)[-1] in NO_CONTRACTION
                    and self.compiler.compiler_type != "msvc"):
                isa_flags = isa_flags + ["-ffp-contract=off"]
            ext.extra_compile_args = compile_flags + isa_flags + list(ext.extra_compile_args)
            ext.extra_link_args = omp_link + list(ext.extra_link_args)
        self.write_build_info(
            compiler=compiler_version(self.compiler),
            compile_flags=compile_flags,
            link_flags=omp_link,
            openmp=has_openmp,
            native=native,
            debug=debug,
            sanitize=sanitize,
            dispatched=DISPATCHED,
            isa_variants=isa_built,
            isa_note=isa_note,
        )
        super().build_extensions()

    def select_isa_variants(self):
        """Keep the per-ISA extensions this compiler builds; return ({isa: flags}, note)."""
        wanted, note = isa_variants_wanted()
        built = {}
        for isa, flags in ISA_FLAGS.items() if wanted else ():
            if self.compiler.compiler_type == "msvc":
                ok, why = False, "no MSVC flags set up"
            else:
                ok, why = probe(self.compiler, f"probe_{isa}", ISA_PROBE, flags)
            if ok:
                built[isa] = flags
            else:
                note = f"{isa} not built: the compiler refused {' '.join(flags)}"
                print(f"fastconv: {note} ({why}); building the baseline kernels only")
        self.extensions = [e for e in self.extensions if isa_of(e.name) in ("baseline", *built)]
        return built, note

    def write_build_info(self, **info):
        text = "# Written by setup.py at build time.\nBUILD_INFO = " + repr(info) + "\n"
        targets = [os.path.join("fastconv", "_build_info.py")]
        if not self.inplace:
            targets.append(os.path.join(self.build_lib, "fastconv", "_build_info.py"))
        for path in targets:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)


def isa_source(name, isa):
    """Generate the source of ``name`` for ``isa``: the baseline source, included."""
    os.makedirs(ISA_SOURCE_DIR, exist_ok=True)
    path = os.path.join(ISA_SOURCE_DIR, f"{name}_{isa}.pyx")
    text = (f"# Generated by setup.py: {name}.pyx built with {' '.join(ISA_FLAGS[isa])}.\n"
            f'include "{name}.pyx"\n')
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)
    return path


def extensions():
    from Cython.Build import cythonize

    kernels = "fastconv/_kernels"
    modules = [
        # include_dirs: C headers of the kernels (_cvec.h), also for debug C files elsewhere
        Extension(f"fastconv._kernels.{name}", [f"{kernels}/{name}.pyx"],
                  include_dirs=[kernels], depends=KERNEL_HEADERS)
        for name in KERNEL_MODULES
    ]
    if isa_variants_wanted()[0]:
        modules += [
            Extension(f"fastconv._kernels.{name}_{isa}", [isa_source(name, isa)],
                      include_dirs=[kernels], depends=KERNEL_HEADERS + [f"{kernels}/{name}.pyx"])
            for name in DISPATCHED for isa in ISA_FLAGS
        ]
    debug = env_flag("FASTCONV_DEBUG")
    return cythonize(
        modules,
        nthreads=os.cpu_count() or 1,
        include_path=[".", kernels],  # the generated sources include the kernels' .pyx
        compiler_directives=cython_directives(debug),
        # Debug and sanitizer C files live apart so they never mix with the plain ones.
        build_dir=("build/cython-debug" if debug else "build/cython-sanitize" if sanitizers()
                   else None),
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildKernels})
