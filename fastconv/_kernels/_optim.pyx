"""Optimiser updates: SGD's step, with or without momentum, one pass over a parameter.

Dimension legend: E elements of one parameter (flattened by the caller).

Notes
-----
Each operation is rounded to the parameter's dtype in the order of the plain formula
(buf = buf * momentum + g; p = p - lr * buf), so results are bit-identical to NumPy's
update: setup.py compiles this module with floating-point contraction off (a fused
multiply-add would round once where NumPy rounds twice). A parameter of LeNet-5 is
at most tens of thousands of elements: one thread.
"""

from fastconv._kernels._types cimport floating, index_t


def sgd_update(
    floating[::1] p,           # IN/OUT (E,): the parameter
    const floating[::1] g,     # IN (E,): its gradient
    floating[::1] buf,         # IN/OUT (E,): the momentum buffer, or None (no momentum)
    double momentum,
    double lr,
):
    """p -= lr * b where b = buf = buf * momentum + g (with a buffer) or b = g (None);
    momentum and lr are first rounded to the dtype, as NumPy rounds a Python float."""
    cdef index_t count = p.shape[0], i
    cdef floating m = <floating> momentum, rate = <floating> lr, b
    cdef bint has_buf = buf is not None
    if g.shape[0] != count or (has_buf and buf.shape[0] != count):
        raise ValueError("gradient and momentum buffer must match the parameter")
    with nogil:
        if has_buf:
            for i in range(count):
                b = buf[i] * m
                b = b + g[i]
                buf[i] = b
                p[i] = p[i] - b * rate
        else:
            for i in range(count):
                p[i] = p[i] - g[i] * rate
