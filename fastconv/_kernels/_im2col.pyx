"""Test hooks for the im2col / col2im band kernels declared in ``_im2col.pxd``.

Dimension legend: N batch, C channels, H, W input size, KH, KW kernel size,
OH, OW output size. Sizes are validated by the caller.
"""

from fastconv._kernels._types cimport floating, index_t
from fastconv._kernels._im2col cimport col2im_band, im2col_band


def _im2col_py(const floating[:, :, :, ::1] x, index_t n, index_t c0, index_t channels,
               index_t kh, index_t kw, index_t sh, index_t sw, index_t pt, index_t pl,
               index_t dh, index_t dw, index_t oh0, index_t oh1, index_t ow_count,
               floating[:, ::1] col):
    """Fill ``col[0]`` with the band [oh0, oh1) of image n, channels c0..c0+channels."""
    with nogil:
        im2col_band(x, n, c0, channels, kh, kw, sh, sw, pt, pl, dh, dw,
                    oh0, oh1, ow_count, col, 0)


def _col2im_py(const floating[:, ::1] col, index_t n, index_t c0, index_t channels,
               index_t kh, index_t kw, index_t sh, index_t sw, index_t pt, index_t pl,
               index_t dh, index_t dw, index_t oh0, index_t oh1, index_t ow_count,
               floating[:, :, :, ::1] gx):
    """Accumulate ``col[0]`` (band [oh0, oh1)) into gx: the adjoint of _im2col_py."""
    with nogil:
        col2im_band(col, 0, n, c0, channels, kh, kw, sh, sw, pt, pl, dh, dw,
                    oh0, oh1, ow_count, gx)
