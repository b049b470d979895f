/* One im2col row at stride 2 in SIMD vectors: out[q] = src[2q], q < count. Each vector of
 * outputs is the even lanes of two vector loads; the last vector overlaps the one before
 * (the same values written again), so a row has no scalar tail. The loads of the last
 * vector reach src[2 * count - 1], one past the last value taken: the caller passes
 * whether that element lies inside its array. Returns count, or 0 (nothing done) for a
 * row under one vector, an unreadable last element, or a build without AVX2 (the caller
 * then runs its scalar loop). */
#ifndef FASTCONV_IM2COL_ROWS_H
#define FASTCONV_IM2COL_ROWS_H

#include <stddef.h>

#if defined(__AVX2__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12))

typedef float fc_ir_vf __attribute__((vector_size(32)));
typedef float fc_ir_vf_u __attribute__((vector_size(32), aligned(4)));
typedef double fc_ir_vd __attribute__((vector_size(32)));
typedef double fc_ir_vd_u __attribute__((vector_size(32), aligned(8)));

static inline ptrdiff_t fc_gather2_f(const float *src, float *out, ptrdiff_t count,
                                     int past_end_readable)
{
    ptrdiff_t q;
    if (count < 8 || !past_end_readable)
        return 0;
    for (q = 0;; q += 8) {
        if (q > count - 8)
            q = count - 8;
        fc_ir_vf a = *(const fc_ir_vf_u *)(src + 2 * q);
        fc_ir_vf b = *(const fc_ir_vf_u *)(src + 2 * q + 8);
        *(fc_ir_vf_u *)(out + q) = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
        if (q == count - 8)
            return count;
    }
}

static inline ptrdiff_t fc_gather2_d(const double *src, double *out, ptrdiff_t count,
                                     int past_end_readable)
{
    ptrdiff_t q;
    if (count < 4 || !past_end_readable)
        return 0;
    for (q = 0;; q += 4) {
        if (q > count - 4)
            q = count - 4;
        fc_ir_vd a = *(const fc_ir_vd_u *)(src + 2 * q);
        fc_ir_vd b = *(const fc_ir_vd_u *)(src + 2 * q + 4);
        *(fc_ir_vd_u *)(out + q) = __builtin_shufflevector(a, b, 0, 2, 4, 6);
        if (q == count - 4)
            return count;
    }
}

#else

static inline ptrdiff_t fc_gather2_f(const float *src, float *out, ptrdiff_t count,
                                     int past_end_readable)
{
    return 0;
}

static inline ptrdiff_t fc_gather2_d(const double *src, double *out, ptrdiff_t count,
                                     int past_end_readable)
{
    return 0;
}

#endif
#endif
