# Window-range helpers shared by conv and pooling kernels (output sizes are computed
# and validated in Python).

from fastconv._kernels._types cimport index_t


cdef inline index_t ceil_div(index_t a, index_t b) noexcept nogil:
    """ceil(a / b) for b > 0 and any sign of a."""
    if b == 1:  # the common stride and dilation: skip the (slow) integer division
        return a
    if a >= 0:
        return (a + b - 1) // b
    return -((-a) // b)


# Valid output range of one kernel tap: outputs o in [first_valid, stop_valid) have
# 0 <= o * stride + offset < in_size, where offset = tap * dilation - pad_before is the
# input coordinate of output 0. Hoists the bounds test out of inner loops. They return
# values (not out-pointers) on purpose: inside prange, Cython makes a variable private
# only when it sees it assigned.

cdef inline index_t first_valid(index_t offset, index_t stride, index_t out_count) noexcept nogil:
    cdef index_t lo = ceil_div(-offset, stride)
    if lo < 0:
        return 0
    return lo if lo < out_count else out_count


cdef inline index_t stop_valid(index_t offset, index_t stride, index_t in_size,
                               index_t out_count) noexcept nogil:
    cdef index_t lo = first_valid(offset, stride, out_count)
    cdef index_t hi = ceil_div(in_size - offset, stride)
    if hi > out_count:
        hi = out_count
    return hi if hi > lo else lo


cdef inline index_t input_extent(index_t outputs, index_t stride, index_t kernel,
                                 index_t dilation) noexcept nogil:
    """Input rows (or columns) that ``outputs`` consecutive outputs read, padding included."""
    return (outputs - 1) * stride + (kernel - 1) * dilation + 1
