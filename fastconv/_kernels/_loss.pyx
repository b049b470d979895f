"""Softmax cross-entropy over a batch of logits: forward (log-softmax and the summed
loss) and backward.

Dimension legend: N batch, C classes.

Notes
-----
One pass per row, in the row's dtype as NumPy's log_softmax would compute it: the row's
maximum subtracted first (so large logits do not overflow), the exponentials summed in
double, one log of the sum. A row with a NaN has its log-probabilities NaN. The rows
are few and short (a classifier's batch), so there are no threads: a parallel region
would cost more than the work.
"""

from libc.math cimport exp, log

from fastconv._kernels._types cimport floating, index_t


def cross_entropy_forward(
    const floating[:, ::1] logits,  # IN (N, C)
    const index_t[::1] target,      # IN (N,): class indices
    floating[:, ::1] log_probs,     # OUT (N, C): log_softmax(logits) per row
):
    """Fill log_probs; return (sum over rows of -log_probs[n, target[n]] in double,
    rows whose target lies outside [0, C)). Those rows add nothing to the sum."""
    cdef index_t n_rows = logits.shape[0], classes = logits.shape[1]
    cdef index_t n, c, t, bad = 0
    cdef floating top, v
    cdef double total = 0, s
    if target.shape[0] != n_rows or log_probs.shape[0] != n_rows or log_probs.shape[1] != classes:
        raise ValueError("target and log_probs do not match logits")
    with nogil:
        for n in range(n_rows):
            top = logits[n, 0] if classes else 0
            for c in range(1, classes):
                v = logits[n, c]
                if v != v:  # NaN: the whole row is NaN, as NumPy's max makes it
                    top = v
                    break
                if v > top:
                    top = v
            s = 0
            for c in range(classes):
                log_probs[n, c] = logits[n, c] - top
                s += exp(<double> log_probs[n, c])
            s = log(s)
            for c in range(classes):
                log_probs[n, c] = <floating> (log_probs[n, c] - s)
            t = target[n]
            if t < 0 or t >= classes:
                bad += 1
            else:
                total -= log_probs[n, t]
    return total, bad


def cross_entropy_backward(
    const floating[:, ::1] log_probs,  # IN (N, C): the forward's
    const index_t[::1] target,         # IN (N,): class indices, all in [0, C)
    double scale,                      # the factor of every gradient (grad_out / N)
    floating[:, ::1] grad,             # OUT (N, C): (softmax - onehot(target)) * scale
):
    """grad = (exp(log_probs) - onehot(target)) * scale, each step in the dtype."""
    cdef index_t n_rows = log_probs.shape[0], classes = log_probs.shape[1]
    cdef index_t n, c, t
    cdef floating p, factor = <floating> scale  # rounded first, as NumPy's weak scalar
    if target.shape[0] != n_rows or grad.shape[0] != n_rows or grad.shape[1] != classes:
        raise ValueError("target and grad do not match log_probs")
    with nogil:
        for n in range(n_rows):
            t = target[n]
            for c in range(classes):
                p = <floating> exp(<double> log_probs[n, c])
                if c == t:
                    p = p - 1
                grad[n, c] = p * factor
