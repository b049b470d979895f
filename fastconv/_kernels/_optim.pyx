"""Optimiser updates: SGD's step, with or without momentum, one pass over a parameter.

Dimension legend: E elements of one parameter (flattened by the caller).

Notes
-----
Each operation is rounded to the parameter's dtype in the order of the plain formula
(buf = buf * momentum + g; p = p - lr * buf), so results are bit-identical to NumPy's
update: setup.py compiles this module with floating-point contraction off (a fused
multiply-add would round once where NumPy rounds twice). Every element is updated alone,
so results do not depend on the thread count; the caller gives threads to large
parameters only (a step comes after the backward pass, its arrays mostly out of cache).
"""

from cython.parallel cimport prange

from fastconv._kernels._types cimport floating, index_t

cdef enum:
    BLOCK = 4096  # elements per task


def sgd_update(
    floating[::1] p,           # IN/OUT (E,): the parameter
    const floating[::1] g,     # IN (E,): its gradient
    floating[::1] buf,         # IN/OUT (E,): the momentum buffer, or None (no momentum)
    double momentum,
    double lr,
    int n_threads,
):
    """p -= lr * b where b = buf = buf * momentum + g (with a buffer) or b = g (None);
    momentum and lr are first rounded to the dtype, as NumPy rounds a Python float."""
    cdef index_t count = p.shape[0]
    cdef floating m = <floating> momentum, rate = <floating> lr
    cdef bint has_buf = buf is not None
    if g.shape[0] != count or (has_buf and buf.shape[0] != count):
        raise ValueError("gradient and momentum buffer must match the parameter")
    cdef index_t blocks = (count + BLOCK - 1) // BLOCK, blk
    if count == 0:
        return
    with nogil:
        if n_threads == 1:
            update_run(&p[0], &g[0], &buf[0] if has_buf else NULL, m, rate, 0, count)
        else:
            for blk in prange(blocks, num_threads=n_threads, schedule="static"):
                update_run(&p[0], &g[0], &buf[0] if has_buf else NULL, m, rate,
                           blk * BLOCK, min((blk + 1) * BLOCK, count))


cdef inline void update_run(floating* p, const floating* g, floating* buf, floating m,
                            floating rate, index_t start, index_t stop) noexcept nogil:
    """Elements start..stop of the update (buf NULL: no momentum)."""
    cdef index_t i
    cdef floating b
    if buf != NULL:
        for i in range(start, stop):
            b = buf[i] * m
            b = b + g[i]
            buf[i] = b
            p[i] = p[i] - b * rate
    else:
        for i in range(start, stop):
            p[i] = p[i] - g[i] * rate
