"""Element-wise activations: ReLU forward (with its mask, or in place without one) and
backward.

Dimension legend: E elements (any shape, flattened by the caller).

Notes
-----
The elements are cut into fixed blocks of BLOCK, one task each: every element is
computed alone, so results do not depend on the thread count. The forward is
PyTorch's: x where x > 0, NaN where x is NaN, else +0.0 (a select of values already
computed, which compilers vectorise; x * (x > 0) compiled to a branch per element).
"""

from cython.parallel cimport prange

from fastconv._kernels._types cimport floating, index_t

cdef enum:
    BLOCK = 8192


cdef inline void relu_run(const floating* x, floating* y, index_t start,
                          index_t stop) noexcept nogil:
    """y[i] = relu(x[i]) for start <= i < stop (y may be x)."""
    cdef index_t i
    for i in range(start, stop):
        y[i] = x[i] if (x[i] > 0) | (x[i] != x[i]) else 0


def relu_forward(
    const floating[::1] x,    # IN (E,)
    floating[::1] y,          # OUT (E,): x where x > 0 or NaN, else 0
    unsigned char[::1] mask,  # OUT (E,): x > 0, as 0 or 1
    int n_threads,
):
    """y = relu(x) and mask = x > 0."""
    cdef index_t count = x.shape[0]
    cdef index_t blocks = (count + BLOCK - 1) // BLOCK
    cdef index_t blk, i, start, stop
    if count == 0:
        return
    # plain pointers and one output per loop: both loops vectorise
    cdef const floating* xp = &x[0]
    cdef floating* yp = &y[0]
    cdef unsigned char* mp = &mask[0]
    with nogil:
        for blk in prange(blocks, num_threads=n_threads, schedule="static"):
            start = blk * BLOCK
            stop = min(start + BLOCK, count)
            relu_run(xp, yp, start, stop)
            for i in range(start, stop):
                mp[i] = xp[i] > 0


def relu_in_place(floating[::1] x, int n_threads):
    """x = relu(x), as relu_forward's y, no mask (an eval-mode forward keeps none)."""
    cdef index_t count = x.shape[0]
    cdef index_t blocks = (count + BLOCK - 1) // BLOCK
    cdef index_t blk
    if count == 0:
        return
    cdef floating* xp = &x[0]
    with nogil:
        if n_threads == 1:  # no parallel region: a batch-1 call is a few microseconds
            relu_run(xp, xp, 0, count)
        else:
            for blk in prange(blocks, num_threads=n_threads, schedule="static"):
                relu_run(xp, xp, blk * BLOCK, min((blk + 1) * BLOCK, count))


def relu_backward(
    const floating[::1] gy,         # IN (E,)
    const unsigned char[::1] mask,  # IN (E,): the forward's mask
    floating[::1] gx,               # OUT (E,): gy * mask
    int n_threads,
):
    """gx = gy * mask."""
    cdef index_t count = gy.shape[0]
    cdef index_t blocks = (count + BLOCK - 1) // BLOCK
    cdef index_t blk, i, start, stop
    if count == 0:
        return
    cdef const floating* gp = &gy[0]
    cdef const unsigned char* mp = &mask[0]
    cdef floating* xp = &gx[0]
    with nogil:
        for blk in prange(blocks, num_threads=n_threads, schedule="static"):
            start = blk * BLOCK
            stop = min(start + BLOCK, count)
            for i in range(start, stop):
                xp[i] = gp[i] * mp[i]
