/* Max pooling in SIMD vectors of windows: one output row of 2x2 windows at stride 2, for
 * the pooling kernels and the wide-row convolution that pools its own rows
 * (_pool_rows.pxd), and runs of windows 3 columns wide at stride 2 (any rows).
 *
 * Each lane is one window, its four taps taken in scan order exactly as the scalar
 * loop takes them: a tap replaces the best so far where it is greater or NaN, ties
 * keep the earlier tap, and the argmax is base + 2k + (0, 1, width, width + 1). The
 * replacement is a bit select, never arithmetic, so values (NaN payloads, -0.0) are
 * those of the scalar loop. Even and odd columns are split with a shuffle; the argmax
 * offsets are widened to int64. A row of at least one vector of windows is done whole
 * (its last vector may overlap the one before: the same results written again); the
 * functions return how many windows they did, and the caller does shorter rows.
 *
 * Built with AVX2 (the kernels' avx2 variant) by GCC 12+ or clang (vector extensions
 * with __builtin_shufflevector); otherwise they do nothing and the scalar loops run: the
 * baseline build lowers the 32-byte shuffles to SSE2 element by element, 6.7x the scalar
 * loop's time on 2x2 windows and 5.4x on 3x3 s2 (32 x 64 planes of 112 x 112, float32).
 *
 * On the 2-core development machine (Zen 4, AVX2), one thread, 64 x 6 planes of 28 x 28
 * (rows of 14 windows: one vector and an overlapping one): with the argmax 90 -> 76 us,
 * values only 65 -> 49 us against the scalar loop. 3x3 s2 p1 over 32 x 64 x 112 x 112,
 * values only, two threads: 9.2 -> 4.5 ms (float32), 24 -> 14.5 ms (float64).
 */
#ifndef FASTCONV_POOL_ROWS_H
#define FASTCONV_POOL_ROWS_H

#include <stddef.h>

#if defined(__AVX2__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12))

typedef float fc_pr_vf __attribute__((vector_size(32)));
typedef float fc_pr_vf_u __attribute__((vector_size(32), aligned(4)));
typedef int fc_pr_vi __attribute__((vector_size(32)));
typedef int fc_pr_vi4 __attribute__((vector_size(16)));
typedef long long fc_pr_vl __attribute__((vector_size(32)));
typedef long long fc_pr_vl_u __attribute__((vector_size(32), aligned(8)));
typedef double fc_pr_vd __attribute__((vector_size(32)));
typedef double fc_pr_vd_u __attribute__((vector_size(32), aligned(8)));

/* one tap over 8 float windows: where v > best or v is NaN, take v and offset r */
#define FC_PR_TAKE(best, rel, v, r, VI)                                                   \
    do {                                                                                  \
        VI take_ = (VI)((v) > (best)) | (VI)((v) != (v));                                 \
        (best) = (__typeof__(best))(((VI)(v) & take_) | ((VI)(best) & ~take_));           \
        (rel) = ((r) & take_) | ((rel) & ~take_);                                         \
    } while (0)

/* windows k .. k + 7 of a float row */
static inline void fc_max_windows_f(const float *r0, const float *r1, float *yr,
                                    long long *ir, ptrdiff_t k, long long base, int width)
{
    const fc_pr_vi steps = {0, 2, 4, 6, 8, 10, 12, 14};
    fc_pr_vf a0 = *(const fc_pr_vf_u *)(r0 + 2 * k), a1 = *(const fc_pr_vf_u *)(r0 + 2 * k + 8);
    fc_pr_vf b0 = *(const fc_pr_vf_u *)(r1 + 2 * k), b1 = *(const fc_pr_vf_u *)(r1 + 2 * k + 8);
    fc_pr_vf best = __builtin_shufflevector(a0, a1, 0, 2, 4, 6, 8, 10, 12, 14);
    fc_pr_vf v = __builtin_shufflevector(a0, a1, 1, 3, 5, 7, 9, 11, 13, 15);
    fc_pr_vi rel = {0, 0, 0, 0, 0, 0, 0, 0};
    FC_PR_TAKE(best, rel, v, (fc_pr_vi){0} + 1, fc_pr_vi);
    v = __builtin_shufflevector(b0, b1, 0, 2, 4, 6, 8, 10, 12, 14);
    FC_PR_TAKE(best, rel, v, (fc_pr_vi){0} + width, fc_pr_vi);
    v = __builtin_shufflevector(b0, b1, 1, 3, 5, 7, 9, 11, 13, 15);
    FC_PR_TAKE(best, rel, v, (fc_pr_vi){0} + (width + 1), fc_pr_vi);
    *(fc_pr_vf_u *)(yr + k) = best;
    if (ir) {
        fc_pr_vi at = rel + steps;  /* 2k + rel per lane, then widened */
        fc_pr_vi4 lo = __builtin_shufflevector(at, at, 0, 1, 2, 3);
        fc_pr_vi4 hi = __builtin_shufflevector(at, at, 4, 5, 6, 7);
        long long start = base + 2 * (long long)k;
        *(fc_pr_vl_u *)(ir + k) = __builtin_convertvector(lo, fc_pr_vl) + start;
        *(fc_pr_vl_u *)(ir + k + 4) = __builtin_convertvector(hi, fc_pr_vl) + start;
    }
}

/* windows k .. k + 3 of a double row */
static inline void fc_max_windows_d(const double *r0, const double *r1, double *yr,
                                    long long *ir, ptrdiff_t k, long long base, int width)
{
    const fc_pr_vl steps = {0, 2, 4, 6};
    fc_pr_vd a0 = *(const fc_pr_vd_u *)(r0 + 2 * k), a1 = *(const fc_pr_vd_u *)(r0 + 2 * k + 4);
    fc_pr_vd b0 = *(const fc_pr_vd_u *)(r1 + 2 * k), b1 = *(const fc_pr_vd_u *)(r1 + 2 * k + 4);
    fc_pr_vd best = __builtin_shufflevector(a0, a1, 0, 2, 4, 6);
    fc_pr_vd v = __builtin_shufflevector(a0, a1, 1, 3, 5, 7);
    fc_pr_vl rel = {0, 0, 0, 0};
    FC_PR_TAKE(best, rel, v, (fc_pr_vl){0} + 1, fc_pr_vl);
    v = __builtin_shufflevector(b0, b1, 0, 2, 4, 6);
    FC_PR_TAKE(best, rel, v, (fc_pr_vl){0} + width, fc_pr_vl);
    v = __builtin_shufflevector(b0, b1, 1, 3, 5, 7);
    FC_PR_TAKE(best, rel, v, (fc_pr_vl){0} + (width + 1), fc_pr_vl);
    *(fc_pr_vd_u *)(yr + k) = best;
    if (ir)
        *(fc_pr_vl_u *)(ir + k) = rel + steps + (base + 2 * (long long)k);
}

/* a row of `count` windows in vectors of LANES: the last may overlap the one before
   (the same results written again); 0 (nothing done) for a row under one vector */
#define FC_PR_ROW(NAME, WINDOWS, T, LANES)                                                 \
    static inline ptrdiff_t NAME(const T *r0, const T *r1, T *yr, long long *ir,           \
                                 ptrdiff_t count, long long base, int width)               \
    {                                                                                     \
        ptrdiff_t k;                                                                      \
        if (count < LANES)                                                                \
            return 0;                                                                     \
        for (k = 0; k + LANES <= count; k += LANES)                                       \
            WINDOWS(r0, r1, yr, ir, k, base, width);                                      \
        if (k < count)                                                                    \
            WINDOWS(r0, r1, yr, ir, count - LANES, base, width);                          \
        return count;                                                                     \
    }
FC_PR_ROW(fc_max_row_2x2_f, fc_max_windows_f, float, 8)
FC_PR_ROW(fc_max_row_2x2_d, fc_max_windows_d, double, 4)

/* Windows three columns wide at stride 2 (ResNet's 3x3 s2 stem pool), any number of
 * rows: windows k .. k + LANES - 1 of a run whose window 0 has its first tap at src,
 * rows row_step apart. Each lane starts from -inf and offset 0 and takes the taps in
 * scan order (row, then column), as max_plane's scalar run does. The three taps of a
 * row are the even columns of src[2k .. 2k + 15] and the even and odd columns of
 * src[2k + 1 .. 2k + 16]: no read past the last window's last tap. with_idx is a
 * constant at every call: without it the offsets are not tracked at all. */
static inline __attribute__((always_inline)) void
fc_max_windows_3s2_f(const float *src, ptrdiff_t row_step, int rows, float *yr,
                     long long *ir, ptrdiff_t k, long long first, int with_idx)
{
    const fc_pr_vi steps = {0, 2, 4, 6, 8, 10, 12, 14};
    fc_pr_vf best = (fc_pr_vf){0} - __builtin_inff();
    fc_pr_vi rel = {0, 0, 0, 0, 0, 0, 0, 0};
    int i;
    for (i = 0; i < rows; i++) {
        const float *p = src + i * row_step + 2 * k;
        fc_pr_vf a0 = *(const fc_pr_vf_u *)p, a1 = *(const fc_pr_vf_u *)(p + 8);
        fc_pr_vf b0 = *(const fc_pr_vf_u *)(p + 1), b1 = *(const fc_pr_vf_u *)(p + 9);
        fc_pr_vf v0 = __builtin_shufflevector(a0, a1, 0, 2, 4, 6, 8, 10, 12, 14);
        fc_pr_vf v1 = __builtin_shufflevector(b0, b1, 0, 2, 4, 6, 8, 10, 12, 14);
        fc_pr_vf v2 = __builtin_shufflevector(b0, b1, 1, 3, 5, 7, 9, 11, 13, 15);
        int tap = i * (int)row_step;
        FC_PR_TAKE(best, rel, v0, (fc_pr_vi){0} + tap, fc_pr_vi);
        FC_PR_TAKE(best, rel, v1, (fc_pr_vi){0} + (tap + 1), fc_pr_vi);
        FC_PR_TAKE(best, rel, v2, (fc_pr_vi){0} + (tap + 2), fc_pr_vi);
    }
    *(fc_pr_vf_u *)(yr + k) = best;
    if (with_idx) {
        fc_pr_vi at = rel + steps;
        fc_pr_vi4 lo = __builtin_shufflevector(at, at, 0, 1, 2, 3);
        fc_pr_vi4 hi = __builtin_shufflevector(at, at, 4, 5, 6, 7);
        long long start = first + 2 * (long long)k;
        *(fc_pr_vl_u *)(ir + k) = __builtin_convertvector(lo, fc_pr_vl) + start;
        *(fc_pr_vl_u *)(ir + k + 4) = __builtin_convertvector(hi, fc_pr_vl) + start;
    }
}

static inline __attribute__((always_inline)) void
fc_max_windows_3s2_d(const double *src, ptrdiff_t row_step, int rows, double *yr,
                     long long *ir, ptrdiff_t k, long long first, int with_idx)
{
    const fc_pr_vl steps = {0, 2, 4, 6};
    fc_pr_vd best = (fc_pr_vd){0} - __builtin_inf();
    fc_pr_vl rel = {0, 0, 0, 0};
    int i;
    for (i = 0; i < rows; i++) {
        const double *p = src + i * row_step + 2 * k;
        fc_pr_vd a0 = *(const fc_pr_vd_u *)p, a1 = *(const fc_pr_vd_u *)(p + 4);
        fc_pr_vd b0 = *(const fc_pr_vd_u *)(p + 1), b1 = *(const fc_pr_vd_u *)(p + 5);
        fc_pr_vd v0 = __builtin_shufflevector(a0, a1, 0, 2, 4, 6);
        fc_pr_vd v1 = __builtin_shufflevector(b0, b1, 0, 2, 4, 6);
        fc_pr_vd v2 = __builtin_shufflevector(b0, b1, 1, 3, 5, 7);
        long long tap = i * (long long)row_step;
        FC_PR_TAKE(best, rel, v0, (fc_pr_vl){0} + tap, fc_pr_vl);
        FC_PR_TAKE(best, rel, v1, (fc_pr_vl){0} + (tap + 1), fc_pr_vl);
        FC_PR_TAKE(best, rel, v2, (fc_pr_vl){0} + (tap + 2), fc_pr_vl);
    }
    *(fc_pr_vd_u *)(yr + k) = best;
    if (with_idx)
        *(fc_pr_vl_u *)(ir + k) = rel + steps + (first + 2 * (long long)k);
}

/* a run of `count` windows in vectors of LANES, the last possibly overlapping the one
   before; 0 (nothing done) for a run under one vector. ir NULL: values only, else the
   argmax as plane offsets (first: the plane offset of window 0's first tap) */
#define FC_PR_RUN_3S2(NAME, WINDOWS, T, LANES)                                             \
    static inline ptrdiff_t NAME(const T *src, ptrdiff_t row_step, int rows, T *yr,        \
                                 long long *ir, ptrdiff_t count, long long first)          \
    {                                                                                     \
        ptrdiff_t k;                                                                      \
        if (count < LANES)                                                                \
            return 0;                                                                     \
        if (ir) {                                                                         \
            for (k = 0; k + LANES <= count; k += LANES)                                   \
                WINDOWS(src, row_step, rows, yr, ir, k, first, 1);                        \
            if (k < count)                                                                \
                WINDOWS(src, row_step, rows, yr, ir, count - LANES, first, 1);            \
        } else {                                                                          \
            for (k = 0; k + LANES <= count; k += LANES)                                   \
                WINDOWS(src, row_step, rows, yr, ir, k, first, 0);                        \
            if (k < count)                                                                \
                WINDOWS(src, row_step, rows, yr, ir, count - LANES, first, 0);            \
        }                                                                                 \
        return count;                                                                     \
    }
FC_PR_RUN_3S2(fc_max_run_3s2_f, fc_max_windows_3s2_f, float, 8)
FC_PR_RUN_3S2(fc_max_run_3s2_d, fc_max_windows_3s2_d, double, 4)

#else

#define FC_PR_NONE(NAME, T)                                                                \
    static inline ptrdiff_t NAME(const T *r0, const T *r1, T *yr, long long *ir,           \
                                 ptrdiff_t count, long long base, int width)               \
    {                                                                                     \
        return 0;                                                                         \
    }
FC_PR_NONE(fc_max_row_2x2_f, float)
FC_PR_NONE(fc_max_row_2x2_d, double)

#define FC_PR_NONE_3S2(NAME, T)                                                            \
    static inline ptrdiff_t NAME(const T *src, ptrdiff_t row_step, int rows, T *yr,        \
                                 long long *ir, ptrdiff_t count, long long first)          \
    {                                                                                     \
        return 0;                                                                         \
    }
FC_PR_NONE_3S2(fc_max_run_3s2_f, float)
FC_PR_NONE_3S2(fc_max_run_3s2_d, double)

#endif
#endif
