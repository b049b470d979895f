/* im2col and col2im rows at stride 2 in SIMD vectors (the AVX2 build; elsewhere these
 * do nothing and the caller runs its scalar loops).
 *
 * Gather, one im2col row: out[q] = src[2q], q < count. Each vector of outputs is the even
 * lanes of two vector loads; the last vector overlaps the one before (the same values
 * written again), so a row has no scalar tail. The loads of the last vector reach
 * src[2 * count - 1], one past the last value taken: the caller passes whether that
 * element lies inside its array. Returns count, or 0 (nothing done) for a row under one
 * vector, an unreadable last element, or a build without AVX2.
 *
 * Scatter-add, one or two col2im rows: dst[2q] += a[q] and, where b is not NULL,
 * dst[2q + 1] += b[q] (the rows of two neighbouring taps), q < count. Each pair of vectors
 * of dst gets a's lanes interleaved with b's, or with -0.0 (x + -0.0 is x, bit for bit, so
 * an element no tap reaches keeps its value). dst is read and written from dst[0] to
 * dst[2 * count - 1] with b, dst[2 * count - 2] without it, never past the last element a
 * tap reaches (the next one may be another thread's); a and b from [0] to [count - 1].
 * Every element gets one addition, as in the scalar loop, so the sums are the same bit for
 * bit. Returns count, or 0 (nothing done) for a row under one vector of taps or a build
 * without AVX2: the caller then runs its scalar loop. FC_IR_VECTORS says whether the
 * build has the vectors. */
#ifndef FASTCONV_IM2COL_ROWS_H
#define FASTCONV_IM2COL_ROWS_H

#include <stddef.h>

#if defined(__AVX2__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12))

#include <immintrin.h>

#define FC_IR_VECTORS 1

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

#define FC_IR_LOW_8 0, 8, 1, 9, 2, 10, 3, 11
#define FC_IR_HIGH_8 4, 12, 5, 13, 6, 14, 7, 15
#define FC_IR_LOW_4 0, 4, 1, 5
#define FC_IR_HIGH_4 2, 6, 3, 7

/* masks of the first n lanes, 0 <= n < the width */
static inline __m256 fc_ir_lanes_below_8(ptrdiff_t n)
{
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)n),
                                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}
static inline __m256d fc_ir_lanes_below_4(ptrdiff_t n)
{
    return _mm256_castsi256_pd(_mm256_cmpgt_epi64(_mm256_set1_epi64x(n),
                                                  _mm256_setr_epi64x(0, 1, 2, 3)));
}

/* dst[2q] += a[q], dst[2q + 1] += b[q] (b NULL: += -0.0) in vectors of LANES (LOW, HIGH:
 * the lower and upper halves of two vectors interleaved; V, BLEND, BELOW: the intrinsics'
 * vector, blend and mask of the first lanes). Whole vectors while they stay inside the
 * row, the rest in one more step that ends at the row's last element, its lanes done
 * before adding -0.0 (masked stores, tried instead, cost more than the overlap). */
#define FC_IR_SCATTER2(NAME, T, V_U, LANES, LOW, HIGH, V, BLEND, BELOW)                    \
    static inline ptrdiff_t NAME(T *dst, const T *a, const T *b, ptrdiff_t count)          \
    {                                                                                     \
        const V_U nothing = -(V_U){0}; /* -0.0 in every lane */                           \
        const ptrdiff_t whole = b ? count : count - 1; /* dst[2 * whole - 1] is the row's */ \
        ptrdiff_t q, last;                                                                \
        V_U va, vb;                                                                       \
        if (whole < LANES)                                                                \
            return 0;                                                                     \
        for (q = 0; q + LANES <= whole; q += LANES) {                                     \
            va = *(const V_U *)(a + q);                                                   \
            vb = b ? *(const V_U *)(b + q) : nothing;                                     \
            *(V_U *)(dst + 2 * q) += __builtin_shufflevector(va, vb, LOW);                \
            *(V_U *)(dst + 2 * q + LANES) += __builtin_shufflevector(va, vb, HIGH);       \
        }                                                                                 \
        if (q == count)                                                                   \
            return count;                                                                 \
        last = count - LANES; /* the last step's first q; its lanes below q are done */  \
        va = (V_U)BLEND((V)(*(const V_U *)(a + last)), (V)nothing, BELOW(q - last));      \
        if (b) {                                                                          \
            vb = (V_U)BLEND((V)(*(const V_U *)(b + last)), (V)nothing, BELOW(q - last));  \
            *(V_U *)(dst + 2 * last) += __builtin_shufflevector(va, vb, LOW);             \
            *(V_U *)(dst + 2 * last + LANES) += __builtin_shufflevector(va, vb, HIGH);    \
        } else { /* one element earlier: dst[2 * count - 1] is not the row's */           \
            *(V_U *)(dst + 2 * last - 1) += __builtin_shufflevector(nothing, va, LOW);    \
            *(V_U *)(dst + 2 * last - 1 + LANES) += __builtin_shufflevector(nothing, va, HIGH); \
        }                                                                                 \
        return count;                                                                     \
    }
FC_IR_SCATTER2(fc_scatter2_f, float, fc_ir_vf_u, 8, FC_IR_LOW_8, FC_IR_HIGH_8, __m256,
               _mm256_blendv_ps, fc_ir_lanes_below_8)
FC_IR_SCATTER2(fc_scatter2_d, double, fc_ir_vd_u, 4, FC_IR_LOW_4, FC_IR_HIGH_4, __m256d,
               _mm256_blendv_pd, fc_ir_lanes_below_4)

#else

#define FC_IR_VECTORS 0
#define FC_IR_NONE(NAME, T)                                                                \
    static inline ptrdiff_t NAME(const T *src, T *out, ptrdiff_t count,                    \
                                 int past_end_readable)                                    \
    {                                                                                     \
        return 0;                                                                         \
    }
FC_IR_NONE(fc_gather2_f, float)
FC_IR_NONE(fc_gather2_d, double)

#define FC_IR_SCATTER_NONE(NAME, T)                                                        \
    static inline ptrdiff_t NAME(T *dst, const T *a, const T *b, ptrdiff_t count)          \
    {                                                                                     \
        return 0;                                                                         \
    }
FC_IR_SCATTER_NONE(fc_scatter2_f, float)
FC_IR_SCATTER_NONE(fc_scatter2_d, double)

#endif
#endif
