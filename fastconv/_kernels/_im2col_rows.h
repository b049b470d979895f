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

typedef float fc_ir_vf_u __attribute__((vector_size(32), aligned(4)));
typedef double fc_ir_vd_u __attribute__((vector_size(32), aligned(8)));
#define FC_IR_EVENS_8 0, 2, 4, 6, 8, 10, 12, 14
#define FC_IR_EVENS_4 0, 2, 4, 6

/* out[q] = src[2q] for a row of T in vectors of LANES (EVENS: the even lanes of two) */
#define FC_IR_GATHER2(NAME, T, V_U, LANES, EVENS)                                          \
    static inline ptrdiff_t NAME(const T *src, T *out, ptrdiff_t count,                    \
                                 int past_end_readable)                                    \
    {                                                                                     \
        ptrdiff_t q;                                                                      \
        if (count < LANES || !past_end_readable)                                          \
            return 0;                                                                     \
        for (q = 0;; q += LANES) {                                                        \
            if (q > count - LANES)                                                        \
                q = count - LANES;                                                        \
            *(V_U *)(out + q) = __builtin_shufflevector(*(const V_U *)(src + 2 * q),      \
                                                        *(const V_U *)(src + 2 * q + LANES), \
                                                        EVENS);                           \
            if (q == count - LANES)                                                       \
                return count;                                                             \
        }                                                                                 \
    }
FC_IR_GATHER2(fc_gather2_f, float, fc_ir_vf_u, 8, FC_IR_EVENS_8)
FC_IR_GATHER2(fc_gather2_d, double, fc_ir_vd_u, 4, FC_IR_EVENS_4)

#else

#define FC_IR_NONE(NAME, T)                                                                \
    static inline ptrdiff_t NAME(const T *src, T *out, ptrdiff_t count,                    \
                                 int past_end_readable)                                    \
    {                                                                                     \
        return 0;                                                                         \
    }
FC_IR_NONE(fc_gather2_f, float)
FC_IR_NONE(fc_gather2_d, double)

#endif
#endif
