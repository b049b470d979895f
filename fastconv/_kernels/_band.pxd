# Copying a band of image rows into a zero-padded scratch buffer, shared by the
# direct kernels: their loops then read padding as zeros and test nothing.

from fastconv._kernels._types cimport floating, index_t


cdef inline void copy_band(const floating[:, :, :, ::1] x, index_t n, index_t c0,
                           index_t channels, index_t h0, index_t rows, index_t l0,
                           index_t wp, index_t plane, floating* out) noexcept nogil:
    """out[c * plane + r * wp + q] = x[n, c0 + c, h0 + r, l0 + q] for r < rows, q < wp,
    zero outside x (h0 and l0 may be negative: padding)."""
    cdef index_t height = x.shape[2], width = x.shape[3]
    cdef index_t c, r, q, h, q_lo, q_hi
    cdef floating* row
    q_lo = min(max(-l0, 0), wp)  # columns with 0 <= l0 + q < width
    q_hi = max(min(width - l0, wp), q_lo)
    for c in range(channels):
        for r in range(rows):
            row = out + c * plane + r * wp
            h = h0 + r
            if h < 0 or h >= height:
                for q in range(wp):
                    row[q] = 0
                continue
            for q in range(q_lo):
                row[q] = 0
            for q in range(q_lo, q_hi):
                row[q] = x[n, c0 + c, h, l0 + q]
            for q in range(q_hi, wp):
                row[q] = 0
