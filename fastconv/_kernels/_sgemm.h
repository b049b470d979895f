/* fastconv's own float32 GEMM for products with few columns, AVX2 + FMA builds:
 * C = alpha * op(A) op(B) + beta * C, all row-major, single-threaded (the kernels call it
 * from inside their own parallel regions, one call per thread).
 *
 * Where it runs instead of BLAS: products with few columns (n <= FC_SG_MAX_COLUMNS) and
 * a large A (m * k >= FC_SG_MIN_AREA), as a transposed convolution over small maps and
 * Winograd over few tiles make. OpenBLAS copies all of A into its panels on every call;
 * with few columns that copy costs as much as the arithmetic. And the forward
 * convolution's products of at least FC_SG_MIN_ROWS rows, any width (the im2col forward
 * hands it one depth block per call, written into L2 just before; measured on the
 * development machine, alternating processes: Inception's 1x7 over 8 images of 128
 * channels 0.80 of the time with BLAS, a 1x1 256 -> 256 on 14x14 0.94, a 3x3 of 256
 * channels on one 14x14 image 0.89; with 24 rows, a 1x1 144 -> 24 on 56x56, 1.2x), and
 * the 1x1 convolutions' backward products, B being x's or gy's own rows (forward and
 * backward of a 1x1 256 -> 256 over 8 images of 14x14 0.89 of the time, ResNet-50's
 * 256 -> 64 on 56x56 0.93, MobileNet-v2's 144 -> 24 projection at batch 1 0.59; the
 * 3x3 backward products stay on BLAS, 3-6% faster there, but over maps of at most 64
 * pixels, where BLAS's copy of all of w^T per call costs as much as the product: see
 * _conv_gemm.pyx's INPUT_GRAD_OWN_GEMM_COLUMNS). This kernel reads A in
 * place, six rows at a time, each row tile against every column of B while the rows
 * stay in L1. Measured on the 2-core AVX2 development machine (Zen 4), one thread,
 * interleaved with OpenBLAS in one process: 2048 x 16 x 512 with A transposed 0.62 of
 * its time, 512 x 32 x 512 0.82, 256 x (16-32) x 256 0.74-0.81; a transposed convolution
 * of 8 images of 512 channels on 4x4 maps 0.62. With more columns OpenBLAS is as fast or
 * faster (512 x 49 x 512: this kernel 1.18x its time; from 98 columns on within 5%), and
 * with a smaller A this kernel's packing of B does not pay (128 x 28 x 256: 1.17x).
 *
 * The scheme: for each block of at most KC depth and NC columns, op(B) is copied into
 * panels of NR columns (depth-major, NR contiguous, zero past the last column); for each
 * tile of six rows of A, a 6 x 16 micro-kernel holds its tile of C in 12 AVX registers
 * and adds one rank-1 product per step of depth (two vector loads of B, six broadcasts
 * of A from memory, twelve FMAs), tile after tile along the block's columns; a last
 * tile of at most 8 columns runs on one vector, a last one of at most 2 or 4 rows on
 * that many. Edge tiles go through a small buffer.
 *
 * Summation order: each element of C is its depth blocks' sums added in order, each
 * block summed in order of depth; the blocks depend on K alone, so a result depends on
 * the operands and K, never on where its tile lies or on M and N. Except in a block's
 * last panel of at most FC_SG_NARROW columns with A read by rows, which multiplies as
 * dot products (eight interleaved partial sums, then their sum, then the last steps of
 * depth): the bits of such a column depend on K too, and on its falling in that panel,
 * which the callers decide from the shape alone (never from the thread count).
 *
 * Scratch: one grow-only buffer per thread and kernel module (thread-local), KC x NC
 * floats (64 KB) at most, kept as BLAS libraries keep theirs: it is not freed when a
 * thread ends (OpenMP's threads live as long as the process).
 *
 * Other builds (no AVX2 and FMA) define FC_OWN_SGEMM 0 and the caller uses BLAS.
 */
#ifndef FASTCONV_SGEMM_H
#define FASTCONV_SGEMM_H

#include <stddef.h>

#if defined(__AVX2__) && defined(__FMA__) && (defined(__GNUC__) || defined(__clang__))
#define FC_OWN_SGEMM 1

#include <immintrin.h>
#include <stdlib.h>

enum {
    FC_SG_MR = 6,     /* rows of a micro-tile (A broadcasts) */
    FC_SG_NR = 16,    /* columns of a micro-tile (two vectors of B) */
    FC_SG_KC = 256,   /* most depth per block: a B panel (16 KB) stays in L1 */
    FC_SG_NC = 64,    /* columns per B block (64 KB at KC): stays in L2 */
    FC_SG_NARROW = 4, /* a last panel of at most this many columns: dot products */
    FC_SG_MAX_COLUMNS = 32,     /* the callers' rule, above: at most this many columns */
    FC_SG_MIN_AREA = 1 << 16,   /* ... and at least this many elements of A */
    FC_SG_MIN_ROWS = 32,        /* the forward convolution's rule: at least this many rows */
};

static __thread float *fc_sg_buffer = NULL;
static __thread size_t fc_sg_capacity = 0;

/* The thread's scratch, at least `count` floats, 64-byte aligned; NULL if out of memory. */
static inline float *fc_sg_scratch(size_t count)
{
    if (count > fc_sg_capacity) {
        void *fresh = NULL;
        if (posix_memalign(&fresh, 64, count * sizeof(float)) != 0)
            return NULL;
        free(fc_sg_buffer);
        fc_sg_buffer = (float *)fresh;
        fc_sg_capacity = count;
    }
    return fc_sg_buffer;
}

/* Depth [p0, p0 + kc) and columns [j0, j0 + nc) of op(B) into panels of NR columns:
 * dst[panel][p][q], zero past the block's last column. */
static inline void fc_sg_pack_b(int trans, const float *b, ptrdiff_t ldb, ptrdiff_t p0,
                                ptrdiff_t kc, ptrdiff_t j0, ptrdiff_t nc, float *dst)
{
    for (ptrdiff_t jj = 0; jj < nc; jj += FC_SG_NR) {
        ptrdiff_t cols = nc - jj < FC_SG_NR ? nc - jj : FC_SG_NR;
        ptrdiff_t j = j0 + jj;
        if (trans) {  /* B(p, j) = b[j * ldb + p]: one stream per column */
            ptrdiff_t q = 0;
            for (; q < cols; q++) {
                const float *src = b + (j + q) * ldb + p0;
                for (ptrdiff_t p = 0; p < kc; p++) dst[p * FC_SG_NR + q] = src[p];
            }
            for (; q < FC_SG_NR; q++)
                for (ptrdiff_t p = 0; p < kc; p++) dst[p * FC_SG_NR + q] = 0.0f;
        } else if (cols == FC_SG_NR) {  /* B(p, j) = b[p * ldb + j]: NR contiguous values */
            for (ptrdiff_t p = 0; p < kc; p++) {
                const float *src = b + (p0 + p) * ldb + j;
                _mm256_store_ps(dst + p * FC_SG_NR, _mm256_loadu_ps(src));
                _mm256_store_ps(dst + p * FC_SG_NR + 8, _mm256_loadu_ps(src + 8));
            }
        } else {
            for (ptrdiff_t p = 0; p < kc; p++) {
                const float *src = b + (p0 + p) * ldb + j;
                ptrdiff_t q = 0;
                for (; q < cols; q++) dst[p * FC_SG_NR + q] = src[q];
                for (; q < FC_SG_NR; q++) dst[p * FC_SG_NR + q] = 0.0f;
            }
        }
        dst += kc * FC_SG_NR;
    }
}

/* One block's product into C (rows x cols of an MR x 8 * NV tile, MR 2, 4 or 6: an edge
 * of at most 4 rows multiplies no more than it keeps): row r of A is read at
 * a[r][p * a_step] (1 for a plain A, lda for a transposed one), B's panel at
 * pb[p * NR + lane]. Then
 * C = alpha * acc (beta 0), C + alpha * acc (beta 1), or beta * C + alpha * acc, plus
 * bias[r] on row r where bias is not NULL; full tiles update C in place, edge tiles go
 * through `edge`, the same arithmetic. */
static inline __attribute__((always_inline)) void
fc_sg_tile(ptrdiff_t kc, const float *const a[FC_SG_MR], ptrdiff_t a_step, const float *pb,
           float *c, ptrdiff_t ldc, ptrdiff_t rows, ptrdiff_t cols, float alpha, float beta,
           const float *bias, const int mr, const int nv)
{
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (ptrdiff_t p = 0, o = 0; p < kc; p++, o += a_step) {
        const __m256 b0 = _mm256_load_ps(pb);
        const __m256 b1 = nv > 1 ? _mm256_load_ps(pb + 8) : b0;
        __m256 s = _mm256_broadcast_ss(a0 + o);
        c00 = _mm256_fmadd_ps(s, b0, c00); if (nv > 1) c01 = _mm256_fmadd_ps(s, b1, c01);
        s = _mm256_broadcast_ss(a1 + o);
        c10 = _mm256_fmadd_ps(s, b0, c10); if (nv > 1) c11 = _mm256_fmadd_ps(s, b1, c11);
        if (mr > 2) {
            s = _mm256_broadcast_ss(a2 + o);
            c20 = _mm256_fmadd_ps(s, b0, c20); if (nv > 1) c21 = _mm256_fmadd_ps(s, b1, c21);
            s = _mm256_broadcast_ss(a3 + o);
            c30 = _mm256_fmadd_ps(s, b0, c30); if (nv > 1) c31 = _mm256_fmadd_ps(s, b1, c31);
        }
        if (mr > 4) {
            s = _mm256_broadcast_ss(a4 + o);
            c40 = _mm256_fmadd_ps(s, b0, c40); if (nv > 1) c41 = _mm256_fmadd_ps(s, b1, c41);
            s = _mm256_broadcast_ss(a5 + o);
            c50 = _mm256_fmadd_ps(s, b0, c50); if (nv > 1) c51 = _mm256_fmadd_ps(s, b1, c51);
        }
        pb += FC_SG_NR;
    }
    float edge[FC_SG_MR * FC_SG_NR] __attribute__((aligned(32)));
    const int full = rows == mr && cols == 8 * nv;
    float *t = full ? c : edge;
    const ptrdiff_t ldt = full ? ldc : FC_SG_NR;
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    __m256 acc[FC_SG_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                               {c30, c31}, {c40, c41}, {c50, c51}};
    if (!full && beta != 0.0f) {  /* the edge buffer takes the valid part of C first */
        for (ptrdiff_t r = 0; r < rows; r++)
            for (ptrdiff_t q = 0; q < cols; q++) edge[r * FC_SG_NR + q] = c[r * ldc + q];
    }
    for (int r = 0; r < mr; r++) {
        for (int h = 0; h < nv; h++) {
            float *dst = t + r * ldt + 8 * h;
            __m256 v = alpha == 1.0f ? acc[r][h] : _mm256_mul_ps(va, acc[r][h]);
            if (beta == 1.0f)
                v = _mm256_add_ps(_mm256_loadu_ps(dst), v);
            else if (beta != 0.0f)
                v = _mm256_add_ps(_mm256_mul_ps(vb, _mm256_loadu_ps(dst)), v);
            if (bias != NULL)  /* rows past the edge are never stored: bias[0] */
                v = _mm256_add_ps(v, _mm256_set1_ps(bias[r < rows ? r : 0]));
            _mm256_storeu_ps(dst, v);
        }
    }
    if (!full) {
        for (ptrdiff_t r = 0; r < rows; r++)
            for (ptrdiff_t q = 0; q < cols; q++) c[r * ldc + q] = edge[r * FC_SG_NR + q];
    }
}

/* Equal depth blocks of at most KC: their number and size depend on k alone. */
static inline ptrdiff_t fc_sg_depth_block(ptrdiff_t k)
{
    ptrdiff_t blocks = (k + FC_SG_KC - 1) / FC_SG_KC;
    return (k + blocks - 1) / blocks;
}

/* One tile of MR rows of A against every panel of B_block in turn (fc_sg_block). */
static inline __attribute__((always_inline)) void
fc_sg_row_tile(ptrdiff_t kc, const float *const a[FC_SG_MR], ptrdiff_t a_step,
               const float *pack_b, ptrdiff_t nc, float *c, ptrdiff_t ldc, ptrdiff_t rows,
               float alpha, float beta, const float *bias, const int mr)
{
    for (ptrdiff_t j = 0; j < nc; j += FC_SG_NR) {
        const ptrdiff_t cols = nc - j < FC_SG_NR ? nc - j : FC_SG_NR;
        if (cols > 8)
            fc_sg_tile(kc, a, a_step, pack_b + j * kc, c + j, ldc, rows, cols, alpha, beta,
                       bias, mr, 2);
        else
            fc_sg_tile(kc, a, a_step, pack_b + j * kc, c + j, ldc, rows, cols, alpha, beta,
                       bias, mr, 1);
    }
}

/* The sum of v's eight lanes, always in the same order. */
static inline float fc_sg_lanes_sum(__m256 v)
{
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}

/* C[:, :cols] = alpha * A[:, :kc] B_panel + beta * C (+ bias[i] on row i), for a block's
 * last panel of at most FC_SG_NARROW columns and A read by rows: each column's products
 * as dot products along depth, four rows of A at a time, eight steps of depth in the
 * lanes (then the lanes' sum, then the steps past the last whole 8), where a tile
 * would broadcast six rows of A to multiply 8 lanes of B of which `cols` are kept. */
static inline void fc_sg_narrow_columns(ptrdiff_t m, ptrdiff_t kc, const float *a,
                                        ptrdiff_t lda, const float *panel, ptrdiff_t cols,
                                        float *c, ptrdiff_t ldc, float alpha, float beta,
                                        const float *bias)
{
    float column[FC_SG_KC] __attribute__((aligned(32)));
    const ptrdiff_t whole = kc & ~(ptrdiff_t)7;
    for (ptrdiff_t q = 0; q < cols; q++) {
        for (ptrdiff_t p = 0; p < kc; p++) column[p] = panel[p * FC_SG_NR + q];
        for (ptrdiff_t i = 0; i < m; i += 4) {
            const ptrdiff_t rows = m - i < 4 ? m - i : 4;
            const float *a0 = a + i * lda;  /* rows past the edge re-read the first */
            const float *a1 = rows > 1 ? a0 + lda : a0;
            const float *a2 = rows > 2 ? a0 + 2 * lda : a0;
            const float *a3 = rows > 3 ? a0 + 3 * lda : a0;
            __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
            __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
            for (ptrdiff_t p = 0; p < whole; p += 8) {
                const __m256 v = _mm256_load_ps(column + p);
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + p), v, s0);
                s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a1 + p), v, s1);
                s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a2 + p), v, s2);
                s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a3 + p), v, s3);
            }
            float dot[4] = {fc_sg_lanes_sum(s0), fc_sg_lanes_sum(s1), fc_sg_lanes_sum(s2),
                            fc_sg_lanes_sum(s3)};
            const float *row_of_a[4] = {a0, a1, a2, a3};
            for (ptrdiff_t r = 0; r < rows; r++) {
                float v = dot[r];
                for (ptrdiff_t p = whole; p < kc; p++) v += row_of_a[r][p] * column[p];
                float *dst = c + (i + r) * ldc + q;
                v = alpha == 1.0f ? v : alpha * v;
                if (beta == 1.0f)
                    v = *dst + v;
                else if (beta != 0.0f)
                    v = beta * *dst + v;
                if (bias != NULL)
                    v = v + bias[i + r];
                *dst = v;
            }
        }
    }
}

/* C[:, :nc] (m rows) = alpha * op(A)[:, pc:pc + kc] B_block + beta * C (+ bias[i] on
 * row i where bias is not NULL), B_block being kc x nc in panels (pack_b): each tile of
 * six rows of A (the last one of 2, 4 or 6) meets every panel in turn; a last panel of
 * at most FC_SG_NARROW columns, A read by rows, runs fc_sg_narrow_columns instead. */
static inline void fc_sg_block(int trans_a, ptrdiff_t m, ptrdiff_t nc, ptrdiff_t kc,
                               const float *a, ptrdiff_t lda, ptrdiff_t pc,
                               const float *pack_b, float *c, ptrdiff_t ldc, float alpha,
                               float beta, const float *bias)
{
    const ptrdiff_t a_step = trans_a ? lda : 1;
    const ptrdiff_t narrow = trans_a ? 0 : nc % FC_SG_NR;
    if (narrow > 0 && narrow <= FC_SG_NARROW) {
        nc -= narrow;
        fc_sg_narrow_columns(m, kc, a + pc, lda, pack_b + nc * kc, narrow, c + nc, ldc,
                             alpha, beta, bias);
    }
    for (ptrdiff_t i = 0; i < m; i += FC_SG_MR) {
        const ptrdiff_t rows = m - i < FC_SG_MR ? m - i : FC_SG_MR;
        const float *rows_of_a[FC_SG_MR];
        for (int r = 0; r < FC_SG_MR; r++) {  /* rows past the edge re-read the first */
            const ptrdiff_t row = i + (r < rows ? r : 0);
            rows_of_a[r] = trans_a ? a + pc * lda + row : a + row * lda + pc;
        }
        const float *tile_bias = bias != NULL ? bias + i : NULL;
        float *tile = c + i * ldc;
        if (rows > 4)
            fc_sg_row_tile(kc, rows_of_a, a_step, pack_b, nc, tile, ldc, rows, alpha, beta,
                           tile_bias, 6);
        else if (rows > 2)
            fc_sg_row_tile(kc, rows_of_a, a_step, pack_b, nc, tile, ldc, rows, alpha, beta,
                           tile_bias, 4);
        else
            fc_sg_row_tile(kc, rows_of_a, a_step, pack_b, nc, tile, ldc, rows, alpha, beta,
                           tile_bias, 2);
    }
}

/* C (m x n) = alpha * op(A) op(B) + beta * C, plus bias[i] on row i where bias is not
 * NULL, row-major: op(A) is m x k (A is k x m when trans_a), op(B) is k x n (B is n x k
 * when trans_b). Any sizes; fast for the shapes of the rule above. Returns 0, or -1
 * when the scratch could not be allocated (C untouched). With beta 0, C is not read.
 * The bias joins the first depth block's sum as the last addend: with beta 0,
 * (alpha * acc) + bias, the same bits as C = bias then beta 1. */
static inline int fc_sgemm(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                           float alpha, const float *a, ptrdiff_t lda, const float *b,
                           ptrdiff_t ldb, float beta, float *c, ptrdiff_t ldc,
                           const float *bias)
{
    const ptrdiff_t kb = fc_sg_depth_block(k);
    float *pack_b;
    if (m <= 0 || n <= 0 || k <= 0)
        return 0;  /* the caller handles empty products */
    pack_b = fc_sg_scratch((size_t)(kb * FC_SG_NC));
    if (pack_b == NULL)
        return -1;
    for (ptrdiff_t jc = 0; jc < n; jc += FC_SG_NC) {
        const ptrdiff_t nc = n - jc < FC_SG_NC ? n - jc : FC_SG_NC;
        for (ptrdiff_t pc = 0; pc < k; pc += kb) {
            const ptrdiff_t kc = k - pc < kb ? k - pc : kb;
            fc_sg_pack_b(trans_b, b, ldb, pc, kc, jc, nc, pack_b);
            fc_sg_block(trans_a, m, nc, kc, a, lda, pc, pack_b, c + jc, ldc, alpha,
                        pc == 0 ? beta : 1.0f, pc == 0 ? bias : NULL);
        }
    }
    return 0;
}

#else
#define FC_OWN_SGEMM 0
#define FC_SG_MAX_COLUMNS 0
#define FC_SG_MIN_AREA 0
#define FC_SG_MIN_ROWS 0
/* never called: FC_OWN_SGEMM is 0 and the callers use BLAS */
static inline int fc_sgemm(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                           float alpha, const float *a, ptrdiff_t lda, const float *b,
                           ptrdiff_t ldb, float beta, float *c, ptrdiff_t ldc,
                           const float *bias)
{
    (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k; (void)alpha; (void)a;
    (void)lda; (void)b; (void)ldb; (void)beta; (void)c; (void)ldc; (void)bias;
    return -1;
}
#endif

#endif /* FASTCONV_SGEMM_H */
