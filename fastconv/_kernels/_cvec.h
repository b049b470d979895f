/* Register-blocked micro-kernels of the channel-vectorised direct convolution
 * (_conv_cvec.pyx): one SIMD vector holds FC_LANES_F floats (FC_LANES_D doubles) of
 * consecutive output channels, so each input value is loaded once, broadcast, and
 * multiplied into every channel of the vector.
 *
 * Written with GCC/clang vector extensions: the same source compiles to SSE2 in the
 * baseline build and to AVX2 + FMA in the _avx2 build. Other compilers get vectors
 * of one lane: the same blocking on scalars (correct, slower).
 *
 * Block sizes are compile-time constants in each inlined call (a switch on R or TB),
 * so the accumulators live in registers: NV vectors of channels x R pixels (forward),
 * x TB taps (weight gradient), or x R pixels x TB taps (input gradient), at most
 * FC_MAX_ACC of them.
 */
#ifndef FASTCONV_CVEC_H
#define FASTCONV_CVEC_H

#include <stddef.h>

#define FC_MAX_ACC 12

#if defined(__GNUC__) || defined(__clang__)
#define FC_LANES_F 8
#define FC_LANES_D 4
#define FC_INLINE static inline __attribute__((always_inline))
#define FC_UNROLL _Pragma("GCC unroll 16")
typedef float fc_vf __attribute__((vector_size(32)));
typedef double fc_vd __attribute__((vector_size(32)));
/* the same vectors at element alignment: loads and stores at any address */
typedef float fc_vf_u __attribute__((vector_size(32), aligned(4)));
typedef double fc_vd_u __attribute__((vector_size(32), aligned(8)));
#else
/* one lane: the same blocking with scalars */
#define FC_LANES_F 1
#define FC_LANES_D 1
#define FC_INLINE static __inline
#define FC_UNROLL
typedef float fc_vf;
typedef double fc_vd;
typedef float fc_vf_u;
typedef double fc_vd_u;
#endif
#define FC_LOAD(U, p) (*(const U *)(p))
#define FC_STORE(U, p, v) (*(U *)(p) = (v))
#define FC_ZERO(V) ((V){0})
#define FC_FMA(acc, v, s) ((acc) += (v) * (s))
#define FC_ADD_TO(U, p, v) (*(U *)(p) += (v))

/* Forward block: out[r * ldo + lane] (r < R, NV vectors of channels) =
 *     sum over taps t of w[t * ldw + lane] * x[tap_off[t] + r * step]
 * x points at the input of the block's first pixel, step is the input distance between
 * neighbouring output pixels (the stride), w at this channel block of the packed
 * weights. Taps are summed in order t = 0, 1, ...: the result does not depend on R. */
#define FC_DEFINE_FWD_BLOCK(NAME, T, V, U, LANES)                                          \
FC_INLINE void NAME(const T *x, ptrdiff_t step, const ptrdiff_t *tap_off, ptrdiff_t n_taps,  \
                    const T *w, ptrdiff_t ldw, T *out, ptrdiff_t ldo, const int NV,          \
                    const int R)                                                             \
{                                                                                            \
    V acc0[FC_MAX_ACC], acc1[FC_MAX_ACC];                                                    \
    ptrdiff_t t;                                                                             \
    int r;                                                                                   \
    FC_UNROLL for (r = 0; r < R; r++) { acc0[r] = FC_ZERO(V); acc1[r] = FC_ZERO(V); }        \
    for (t = 0; t < n_taps; t++) {                                                           \
        const T *xt = x + tap_off[t];                                                        \
        const V w0 = FC_LOAD(U, w + t * ldw);                                                \
        const V w1 = NV > 1 ? FC_LOAD(U, w + t * ldw + LANES) : FC_ZERO(V);                  \
        FC_UNROLL for (r = 0; r < R; r++) {                                                  \
            const T s = xt[r * step];                                                        \
            FC_FMA(acc0[r], w0, s);                                                          \
            if (NV > 1) FC_FMA(acc1[r], w1, s);                                              \
        }                                                                                    \
    }                                                                                        \
    FC_UNROLL for (r = 0; r < R; r++) {                                                      \
        FC_STORE(U, out + r * ldo, acc0[r]);                                                 \
        if (NV > 1) FC_STORE(U, out + r * ldo + LANES, acc1[r]);                             \
    }                                                                                        \
}

/* Weight-gradient block: for taps t < TB (NV vectors of channels),
 *     out[t * ldo + lane] += sum over pixels (i < rows, j < cols) of
 *         g[(i * cols + j) * ldg + lane] * x[i * row_step + j * step + tap_off[t]]
 * g holds the output gradient transposed, pixel-major with channels contiguous.
 * Pixels are summed in order into registers, then added to out once. */
#define FC_DEFINE_WGRAD_BLOCK(NAME, T, V, U, LANES)                                         \
FC_INLINE void NAME(const T *x, ptrdiff_t row_step, ptrdiff_t step, ptrdiff_t rows,          \
                    ptrdiff_t cols, const T *g, ptrdiff_t ldg, const ptrdiff_t *tap_off,     \
                    T *out, ptrdiff_t ldo, const int NV, const int TB)                       \
{                                                                                            \
    V acc0[FC_MAX_ACC], acc1[FC_MAX_ACC];                                                    \
    ptrdiff_t off[FC_MAX_ACC];                                                               \
    ptrdiff_t i, j;                                                                          \
    int t;                                                                                   \
    FC_UNROLL for (t = 0; t < TB; t++) {                                                     \
        acc0[t] = FC_ZERO(V); acc1[t] = FC_ZERO(V); off[t] = tap_off[t];                     \
    }                                                                                        \
    for (i = 0; i < rows; i++) {                                                             \
        const T *xr = x + i * row_step;                                                      \
        const T *gr = g + i * cols * ldg;                                                    \
        for (j = 0; j < cols; j++) {                                                         \
            const T *xp = xr + j * step;                                                     \
            const V g0 = FC_LOAD(U, gr + j * ldg);                                           \
            const V g1 = NV > 1 ? FC_LOAD(U, gr + j * ldg + LANES) : FC_ZERO(V);             \
            FC_UNROLL for (t = 0; t < TB; t++) {                                             \
                const T s = xp[off[t]];                                                      \
                FC_FMA(acc0[t], g0, s);                                                      \
                if (NV > 1) FC_FMA(acc1[t], g1, s);                                          \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
    FC_UNROLL for (t = 0; t < TB; t++) {                                                     \
        FC_ADD_TO(U, out + t * ldo, acc0[t]);                                                \
        if (NV > 1) FC_ADD_TO(U, out + t * ldo + LANES, acc1[t]);                            \
    }                                                                                        \
}

/* Input-gradient block (scatter form): for R output-gradient pixels r and TB taps t,
 *     out[r * r_step + t * t_step + lane] +=
 *         sum over k < n_k of g[r * g_r + k * g_k] * w[k * ldk + t * t_w + lane]
 * g points at the block's first pixel of gy (channel k at k * g_k), w at the first tap
 * of this channel block of the packed weights (KG, taps, CP), out at the padded
 * input-gradient pixel of the block's first pixel and first tap (channels contiguous).
 * Two taps share each broadcast of gy. Targets are added in a fixed order (t, then r),
 * so every sum's order is fixed by the shape and the caller's loops. */
#define FC_DEFINE_IGRAD_BLOCK(NAME, T, V, U, LANES)                                         \
FC_INLINE void NAME(const T *g, ptrdiff_t g_r, ptrdiff_t g_k, ptrdiff_t n_k, const T *w,     \
                    ptrdiff_t ldk, ptrdiff_t t_w, T *out, ptrdiff_t r_step,                  \
                    ptrdiff_t t_step, const int NV, const int R, const int TB)               \
{                                                                                            \
    V acc0[FC_MAX_ACC], acc1[FC_MAX_ACC];                                                    \
    ptrdiff_t k;                                                                             \
    int r, t;                                                                                \
    FC_UNROLL for (r = 0; r < TB * R; r++) { acc0[r] = FC_ZERO(V); acc1[r] = FC_ZERO(V); }   \
    for (k = 0; k < n_k; k++) {                                                              \
        const T *gk = g + k * g_k;                                                           \
        const T *wk = w + k * ldk;                                                           \
        V w0[2], w1[2];                                                                      \
        FC_UNROLL for (t = 0; t < TB; t++) {                                                 \
            w0[t] = FC_LOAD(U, wk + t * t_w);                                                \
            w1[t] = NV > 1 ? FC_LOAD(U, wk + t * t_w + LANES) : FC_ZERO(V);                  \
        }                                                                                    \
        FC_UNROLL for (r = 0; r < R; r++) {                                                  \
            const T s = gk[r * g_r];                                                         \
            FC_UNROLL for (t = 0; t < TB; t++) {                                             \
                FC_FMA(acc0[t * R + r], w0[t], s);                                           \
                if (NV > 1) FC_FMA(acc1[t * R + r], w1[t], s);                               \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
    FC_UNROLL for (t = 0; t < TB; t++) {                                                     \
        FC_UNROLL for (r = 0; r < R; r++) {                                                  \
            T *o = out + r * r_step + t * t_step;                                            \
            FC_ADD_TO(U, o, acc0[t * R + r]);                                                \
            if (NV > 1) FC_ADD_TO(U, o + LANES, acc1[t * R + r]);                            \
        }                                                                                    \
    }                                                                                        \
}

FC_DEFINE_FWD_BLOCK(fc_fwd_block_f, float, fc_vf, fc_vf_u, FC_LANES_F)
FC_DEFINE_FWD_BLOCK(fc_fwd_block_d, double, fc_vd, fc_vd_u, FC_LANES_D)
FC_DEFINE_WGRAD_BLOCK(fc_wgrad_block_f, float, fc_vf, fc_vf_u, FC_LANES_F)
FC_DEFINE_WGRAD_BLOCK(fc_wgrad_block_d, double, fc_vd, fc_vd_u, FC_LANES_D)
FC_DEFINE_IGRAD_BLOCK(fc_igrad_block_f, float, fc_vf, fc_vf_u, FC_LANES_F)
FC_DEFINE_IGRAD_BLOCK(fc_igrad_block_d, double, fc_vd, fc_vd_u, FC_LANES_D)

/* The blocks with R (or TB) fixed at compile time, one case per size. */
#define FC_CASES_12(CALL) \
    case 1: CALL(1); break; case 2: CALL(2); break; case 3: CALL(3); break;     \
    case 4: CALL(4); break; case 5: CALL(5); break; case 6: CALL(6); break;     \
    case 7: CALL(7); break; case 8: CALL(8); break; case 9: CALL(9); break;     \
    case 10: CALL(10); break; case 11: CALL(11); break; case 12: CALL(12); break;
#define FC_CASES_3(CALL) \
    case 1: CALL(1); break; case 2: CALL(2); break; case 3: CALL(3); break;
#define FC_CASES_6(CALL) \
    case 1: CALL(1); break; case 2: CALL(2); break; case 3: CALL(3); break;     \
    case 4: CALL(4); break; case 5: CALL(5); break; case 6: CALL(6); break;

/* Largest block (pixels or taps) for NV vectors: NV * block accumulators. */
static inline int fc_max_block(int nv) { return nv > 1 ? FC_MAX_ACC / 2 : FC_MAX_ACC; }

#define FC_DEFINE_DISPATCH(T, SUFFIX)                                                        \
static inline void fc_fwd_##SUFFIX(const T *x, ptrdiff_t step, const ptrdiff_t *tap_off,     \
                                   ptrdiff_t n_taps, const T *w, ptrdiff_t ldw, T *out,      \
                                   ptrdiff_t ldo, int nv, int r)                             \
{                                                                                            \
    if (nv > 1) {                                                                            \
        switch (r) {                                                                         \
        FC_CASES_6(_FC_FWD_CALL_##SUFFIX##_2)                                                \
        }                                                                                    \
    } else {                                                                                 \
        switch (r) {                                                                         \
        FC_CASES_12(_FC_FWD_CALL_##SUFFIX##_1)                                               \
        }                                                                                    \
    }                                                                                        \
}                                                                                            \
static inline void fc_wgrad_##SUFFIX(const T *x, ptrdiff_t row_step, ptrdiff_t step,         \
                                     ptrdiff_t rows, ptrdiff_t cols, const T *g,             \
                                     ptrdiff_t ldg, const ptrdiff_t *tap_off, T *out,        \
                                     ptrdiff_t ldo, int nv, int tb)                          \
{                                                                                            \
    if (nv > 1) {                                                                            \
        switch (tb) {                                                                        \
        FC_CASES_6(_FC_WGRAD_CALL_##SUFFIX##_2)                                              \
        }                                                                                    \
    } else {                                                                                 \
        switch (tb) {                                                                        \
        FC_CASES_12(_FC_WGRAD_CALL_##SUFFIX##_1)                                             \
        }                                                                                    \
    }                                                                                        \
}                                                                                            \
static inline void fc_igrad_##SUFFIX(const T *g, ptrdiff_t g_r, ptrdiff_t g_k,               \
                                     ptrdiff_t n_k, const T *w, ptrdiff_t ldk,               \
                                     ptrdiff_t t_w, T *out, ptrdiff_t r_step,                \
                                     ptrdiff_t t_step, int nv, int r, int tb)                \
{                                                                                            \
    if (tb > 1 && nv > 1) {                                                                  \
        switch (r) {                                                                         \
        FC_CASES_3(_FC_IGRAD_CALL_##SUFFIX##_2_2)                                            \
        }                                                                                    \
    } else if (tb > 1) {                                                                     \
        switch (r) {                                                                         \
        FC_CASES_6(_FC_IGRAD_CALL_##SUFFIX##_1_2)                                            \
        }                                                                                    \
    } else if (nv > 1) {                                                                     \
        switch (r) {                                                                         \
        FC_CASES_6(_FC_IGRAD_CALL_##SUFFIX##_2_1)                                            \
        }                                                                                    \
    } else {                                                                                 \
        switch (r) {                                                                         \
        FC_CASES_12(_FC_IGRAD_CALL_##SUFFIX##_1_1)                                           \
        }                                                                                    \
    }                                                                                        \
}

#define _FC_FWD_CALL_f_1(R) fc_fwd_block_f(x, step, tap_off, n_taps, w, ldw, out, ldo, 1, R)
#define _FC_FWD_CALL_f_2(R) fc_fwd_block_f(x, step, tap_off, n_taps, w, ldw, out, ldo, 2, R)
#define _FC_FWD_CALL_d_1(R) fc_fwd_block_d(x, step, tap_off, n_taps, w, ldw, out, ldo, 1, R)
#define _FC_FWD_CALL_d_2(R) fc_fwd_block_d(x, step, tap_off, n_taps, w, ldw, out, ldo, 2, R)
#define _FC_WGRAD_CALL_f_1(B) \
    fc_wgrad_block_f(x, row_step, step, rows, cols, g, ldg, tap_off, out, ldo, 1, B)
#define _FC_WGRAD_CALL_f_2(B) \
    fc_wgrad_block_f(x, row_step, step, rows, cols, g, ldg, tap_off, out, ldo, 2, B)
#define _FC_WGRAD_CALL_d_1(B) \
    fc_wgrad_block_d(x, row_step, step, rows, cols, g, ldg, tap_off, out, ldo, 1, B)
#define _FC_WGRAD_CALL_d_2(B) \
    fc_wgrad_block_d(x, row_step, step, rows, cols, g, ldg, tap_off, out, ldo, 2, B)

#define _FC_IGRAD_CALL_f_1_1(R) \
    fc_igrad_block_f(g, g_r, g_k, n_k, w, ldk, t_w, out, r_step, t_step, 1, R, 1)
#define _FC_IGRAD_CALL_f_1_2(R) \
    fc_igrad_block_f(g, g_r, g_k, n_k, w, ldk, t_w, out, r_step, t_step, 1, R, 2)
#define _FC_IGRAD_CALL_f_2_1(R) \
    fc_igrad_block_f(g, g_r, g_k, n_k, w, ldk, t_w, out, r_step, t_step, 2, R, 1)
#define _FC_IGRAD_CALL_f_2_2(R) \
    fc_igrad_block_f(g, g_r, g_k, n_k, w, ldk, t_w, out, r_step, t_step, 2, R, 2)
#define _FC_IGRAD_CALL_d_1_1(R) \
    fc_igrad_block_d(g, g_r, g_k, n_k, w, ldk, t_w, out, r_step, t_step, 1, R, 1)
#define _FC_IGRAD_CALL_d_1_2(R) \
    fc_igrad_block_d(g, g_r, g_k, n_k, w, ldk, t_w, out, r_step, t_step, 1, R, 2)
#define _FC_IGRAD_CALL_d_2_1(R) \
    fc_igrad_block_d(g, g_r, g_k, n_k, w, ldk, t_w, out, r_step, t_step, 2, R, 1)
#define _FC_IGRAD_CALL_d_2_2(R) \
    fc_igrad_block_d(g, g_r, g_k, n_k, w, ldk, t_w, out, r_step, t_step, 2, R, 2)

FC_DEFINE_DISPATCH(float, f)
FC_DEFINE_DISPATCH(double, d)

/* Input-gradient rows (scatter form) for one vector of channels: the blocks of every
 * kernel tap for one block of R output-gradient pixels, in one call (a call per block of
 * two taps cost a tenth of the pass on LeNet-5's C3): for kernel rows i < kh, taps in
 * pairs along the row (an odd last one alone), each an FC_DEFINE_IGRAD_BLOCK at
 * w + i * w_row + j * t_w, out + i * out_row + j * t_step. R is a constant in each case
 * of the switch, at most FC_MAX_ACC / 2. (With two vectors of channels the taps' blocks,
 * whose outputs overlap, wait on each other's stores: they keep a call per block.) */
#define FC_DEFINE_IGRAD_ROWS(NAME, BLOCK, T)                                                 \
FC_INLINE void NAME(const T *g, ptrdiff_t g_r, ptrdiff_t g_k, ptrdiff_t n_k, const T *w,     \
                    ptrdiff_t ldk, ptrdiff_t t_w, T *out, ptrdiff_t r_step, ptrdiff_t t_step, \
                    ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t w_row, ptrdiff_t out_row,          \
                    const int R)                                                             \
{                                                                                            \
    ptrdiff_t i, j;                                                                          \
    for (i = 0; i < kh; i++) {                                                               \
        const T *wi = w + i * w_row;                                                         \
        T *oi = out + i * out_row;                                                           \
        for (j = 0; j + 1 < kw; j += 2)                                                      \
            BLOCK(g, g_r, g_k, n_k, wi + j * t_w, ldk, t_w, oi + j * t_step, r_step, t_step, \
                  1, R, 2);                                                                  \
        if (j < kw)                                                                          \
            BLOCK(g, g_r, g_k, n_k, wi + j * t_w, ldk, t_w, oi + j * t_step, r_step, t_step, \
                  1, R, 1);                                                                  \
    }                                                                                        \
}
FC_DEFINE_IGRAD_ROWS(fc_igrad_rows_block_f, fc_igrad_block_f, float)
FC_DEFINE_IGRAD_ROWS(fc_igrad_rows_block_d, fc_igrad_block_d, double)

#define _FC_IGRAD_ROWS_f(R) fc_igrad_rows_block_f(g, g_r, g_k, n_k, w, ldk, t_w, out, r_step, \
                                                  t_step, kh, kw, w_row, out_row, R)
#define _FC_IGRAD_ROWS_d(R) fc_igrad_rows_block_d(g, g_r, g_k, n_k, w, ldk, t_w, out, r_step, \
                                                  t_step, kh, kw, w_row, out_row, R)
#define FC_DEFINE_IGRAD_ROWS_DISPATCH(T, SUFFIX)                                             \
static inline void fc_igrad_rows_##SUFFIX(const T *g, ptrdiff_t g_r, ptrdiff_t g_k,          \
                                          ptrdiff_t n_k, const T *w, ptrdiff_t ldk,          \
                                          ptrdiff_t t_w, T *out, ptrdiff_t r_step,           \
                                          ptrdiff_t t_step, ptrdiff_t kh, ptrdiff_t kw,      \
                                          ptrdiff_t w_row, ptrdiff_t out_row, int r)         \
{                                                                                            \
    switch (r) {                                                                             \
    FC_CASES_6(_FC_IGRAD_ROWS_##SUFFIX)                                                      \
    }                                                                                        \
}
FC_DEFINE_IGRAD_ROWS_DISPATCH(float, f)
FC_DEFINE_IGRAD_ROWS_DISPATCH(double, d)

/* dst[j * ld_dst + i] = src[i * ld_src + j] + add[j] (no add: NULL) for i < 8, j < rows:
 * one 8 x 8 block of floats transposed in AVX registers (8 loads, 24 shuffles, `rows`
 * stores), for _conv_cvec's changes between pixel-major bands and channel planes
 * (store_band, transpose_band), whose scalar loops moved one float at a time. AVX2
 * builds only (FC_TRANSPOSE8 1); the callers keep their scalar loops elsewhere. */
#if defined(__AVX2__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FC_TRANSPOSE8 1
static inline void fc_transpose8_f(const float *src, ptrdiff_t ld_src, float *dst,
                                   ptrdiff_t ld_dst, const float *add, int rows)
{
    __m256 r[8], t[8], u[8], v[8];
    int i;
    for (i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * ld_src);
    for (i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (i = 0; i < 4; i++) {
        v[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        v[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
    for (i = 0; i < rows; i++) {
        __m256 row = v[i];
        if (add != NULL)
            row = _mm256_add_ps(row, _mm256_set1_ps(add[i]));
        _mm256_storeu_ps(dst + i * ld_dst, row);
    }
}
#else
#define FC_TRANSPOSE8 0
/* never called: FC_TRANSPOSE8 is 0 and the caller keeps its scalar loop */
static inline void fc_transpose8_f(const float *src, ptrdiff_t ld_src, float *dst,
                                   ptrdiff_t ld_dst, const float *add, int rows)
{
    (void)src; (void)ld_src; (void)dst; (void)ld_dst; (void)add; (void)rows;
}
#endif

#endif /* FASTCONV_CVEC_H */
