"""Optimiser updates: SGD's step, with or without momentum, one pass over each parameter
of a list.

Dimension legend: E_i elements of parameter i (flattened by the caller).

Notes
-----
Each operation is rounded to the parameter's dtype in the order of the plain formula
(buf = buf * momentum + g; p = p - lr * buf), so results are bit-identical to NumPy's
update: setup.py compiles this module with floating-point contraction off (a fused
multiply-add would round once where NumPy rounds twice). Every element is updated alone,
so results do not depend on the thread count; the caller gives threads by the elements
of all the parameters (a step comes after the backward pass, its arrays mostly out of
cache).
"""

from cython.parallel cimport prange
from libc.stdlib cimport free, malloc

from fastconv._kernels._types cimport floating, index_t

cdef enum:
    BLOCK = 4096  # elements per task


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


def sgd_update_many(
    list params,    # IN/OUT: (E_i,) per parameter, one dtype
    list grads,     # IN: (E_i,) their gradients
    list buffers,   # IN/OUT: (E_i,) their momentum buffers, or None entries (no momentum)
    double momentum,
    double lr,
    int n_threads,
):
    """p -= lr * b for every parameter p of a list (float32, or float64 when the first
    is), where b = buf = buf * momentum + g with a buffer, or b = g (a None buffer);
    momentum and lr are first rounded to the dtype, as NumPy rounds a Python float. One
    call whose threads share every parameter's blocks (a call per parameter cost most
    of a batch-1 step's update)."""
    if len(grads) != len(params) or len(buffers) != len(params):
        raise ValueError("params, grads and buffers must have one entry per parameter")
    if not params:
        return
    if getattr(params[0], "dtype", None) == "float64":
        update_many[double](params, grads, buffers, momentum, lr, n_threads)
    else:
        update_many[float](params, grads, buffers, momentum, lr, n_threads)


cdef update_many(list params, list grads, list buffers, floating momentum, floating lr,
                 int n_threads):
    """sgd_update_many for one dtype: pointers gathered with the GIL, then every block of
    every parameter in one parallel loop."""
    cdef index_t count = len(params), i, blk, blocks = 0, start
    cdef floating[::1] p_view
    cdef const floating[::1] g_view
    cdef floating[::1] b_view
    cdef floating** p_at = <floating**> malloc(count * sizeof(floating*))
    cdef const floating** g_at = <const floating**> malloc(count * sizeof(floating*))
    cdef floating** b_at = <floating**> malloc(count * sizeof(floating*))
    cdef index_t* size = <index_t*> malloc(count * sizeof(index_t))
    cdef index_t* first = <index_t*> malloc((count + 1) * sizeof(index_t))
    cdef index_t* owner = NULL
    try:
        if p_at == NULL or g_at == NULL or b_at == NULL or size == NULL or first == NULL:
            raise MemoryError("no memory for the parameter table")
        for i in range(count):
            p_view = params[i]
            g_view = grads[i]
            size[i] = p_view.shape[0]
            if g_view.shape[0] != size[i]:
                raise ValueError(f"gradient {i} must match its parameter")
            p_at[i] = &p_view[0] if size[i] else NULL
            g_at[i] = &g_view[0] if size[i] else NULL
            b_at[i] = NULL
            if buffers[i] is not None:
                b_view = buffers[i]
                if b_view.shape[0] != size[i]:
                    raise ValueError(f"momentum buffer {i} must match its parameter")
                b_at[i] = &b_view[0] if size[i] else NULL
            first[i] = blocks
            blocks += (size[i] + BLOCK - 1) // BLOCK
        first[count] = blocks
        owner = <index_t*> malloc(max(blocks, 1) * sizeof(index_t))
        if owner == NULL:
            raise MemoryError("no memory for the block table")
        for i in range(count):
            for blk in range(first[i], first[i + 1]):
                owner[blk] = i
        with nogil:
            if n_threads == 1:  # no parallel region: at batch 1 it costs a good part
                for i in range(count):
                    update_run(p_at[i], g_at[i], b_at[i], momentum, lr, 0, size[i])
            else:
                for blk in prange(blocks, num_threads=n_threads, schedule="static"):
                    i = owner[blk]
                    start = (blk - first[i]) * BLOCK
                    update_run(p_at[i], g_at[i], b_at[i], momentum, lr, start,
                               min(start + BLOCK, size[i]))
    finally:
        free(p_at)
        free(<void*> g_at)
        free(b_at)
        free(size)
        free(first)
        free(owner)
