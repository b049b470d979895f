"""What the running CPU offers, and the per-thread floating-point mode the kernels run in.

Built once, portable (never per instruction set): it is what picks the variant of
the other kernel modules (fastconv._dispatch).

Notes
-----
Flushing denormals is a per-thread control register (x86-64: MXCSR bits FTZ and
DAZ; aarch64: FPCR.FZ). ``apply_flush_denormal`` sets it in the calling thread and
in every OpenMP worker of a team of ``n_threads``: the workers belong to a pool that
the runtime reuses for the next parallel regions started from the same thread.
"""

from cython.parallel cimport parallel

cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    static int fastconv_cpu_avx2_fma(void) {
        /* GCC and clang report AVX features only when the OS saves the YMM registers (XSAVE). */
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    #else
    static int fastconv_cpu_avx2_fma(void) { return 0; }
    #endif

    #if defined(__x86_64__) || defined(_M_X64)
    #include <xmmintrin.h>
    /* MXCSR bit 15 (FTZ): denormal results become 0; bit 6 (DAZ): denormal inputs read as 0. */
    #define FASTCONV_FLUSH_SUPPORTED 1
    #define FASTCONV_FLUSH_BITS 0x8040u
    static int fastconv_get_flush(void) {
        return (_mm_getcsr() & FASTCONV_FLUSH_BITS) == FASTCONV_FLUSH_BITS;
    }
    static void fastconv_set_flush(int on) {
        unsigned int csr = _mm_getcsr();
        _mm_setcsr(on ? (csr | FASTCONV_FLUSH_BITS) : (csr & ~FASTCONV_FLUSH_BITS));
    }
    #elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
    /* FPCR bit 24 (FZ): denormal inputs and results of float arithmetic become 0. */
    #define FASTCONV_FLUSH_SUPPORTED 1
    static unsigned long long fastconv_fpcr(void) {
        unsigned long long value;
        __asm__ __volatile__("mrs %0, fpcr" : "=r"(value));
        return value;
    }
    static int fastconv_get_flush(void) { return (int)((fastconv_fpcr() >> 24) & 1u); }
    static void fastconv_set_flush(int on) {
        unsigned long long value = fastconv_fpcr();
        value = on ? (value | (1ull << 24)) : (value & ~(1ull << 24));
        __asm__ __volatile__("msr fpcr, %0" : : "r"(value));
    }
    #else
    #define FASTCONV_FLUSH_SUPPORTED 0
    static int fastconv_get_flush(void) { return 0; }
    static void fastconv_set_flush(int on) { (void)on; }
    #endif
    """
    int FASTCONV_FLUSH_SUPPORTED
    int fastconv_cpu_avx2_fma() noexcept nogil
    int fastconv_get_flush() noexcept nogil
    void fastconv_set_flush(int on) noexcept nogil


def cpu_has_avx2_fma():
    """True when the CPU (and the OS) can run AVX2 and FMA instructions; False off x86."""
    return bool(fastconv_cpu_avx2_fma())


def flush_denormal_supported():
    """True when this build can flush denormals on this architecture (x86-64, aarch64)."""
    return bool(FASTCONV_FLUSH_SUPPORTED)


def thread_flushes_denormal():
    """Whether the calling thread's floating-point mode flushes denormals now."""
    return bool(fastconv_get_flush())


def apply_flush_denormal(bint enabled, int n_threads):
    """Set (or clear) flushing in the calling thread and the workers of a team of ``n_threads``."""
    if n_threads <= 1:
        fastconv_set_flush(enabled)
        return
    with nogil, parallel(num_threads=n_threads):
        fastconv_set_flush(enabled)
