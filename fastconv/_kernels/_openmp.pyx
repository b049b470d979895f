"""What the OpenMP runtime this build links offers (or that there is none)."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTCONV_OPENMP_ENABLED 1
    #define FASTCONV_OPENMP_VERSION _OPENMP
    static int fastconv_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define FASTCONV_OPENMP_ENABLED 0
    #define FASTCONV_OPENMP_VERSION 0
    static int fastconv_omp_max_threads(void) { return 1; }
    #endif
    """
    int FASTCONV_OPENMP_ENABLED
    int FASTCONV_OPENMP_VERSION
    int fastconv_omp_max_threads() noexcept nogil


def openmp_enabled():
    """True when the kernels were compiled with OpenMP (parallel), False for a serial build."""
    return bool(FASTCONV_OPENMP_ENABLED)


def openmp_version():
    """The ``_OPENMP`` date macro of the compiler (e.g. 201511), or 0 without OpenMP."""
    return FASTCONV_OPENMP_VERSION


def openmp_max_threads():
    """omp_get_max_threads() of the runtime (1 without OpenMP)."""
    return fastconv_omp_max_threads()
