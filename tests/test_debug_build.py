"""On a FASTCONV_DEBUG=1 build, an out-of-bounds access in a kernel raises instead of
corrupting memory. These tests call kernels directly with sizes the public functions
would refuse, so they run on the debug build only (CI builds one)."""

import io

import numpy as np
import pytest

import fastconv
from fastconv._kernels import _conv_direct


def _debug_build():
    out = io.StringIO()
    fastconv.show_config(file=out)
    return "debug checks:  on" in out.getvalue()


pytestmark = pytest.mark.skipif(not _debug_build(),
                                reason="needs a FASTCONV_DEBUG=1 build (bounds checks on)")


def test_output_larger_than_the_input_allows_raises():
    x = np.ones((1, 1, 3, 3))
    w = np.ones((1, 1, 2, 2))
    b = None
    y = np.zeros((2, 1, 2, 2))  # two images out of one: reads past x
    with pytest.raises(IndexError):
        _conv_direct.conv2d_forward(x, w, b, y, 1, 1, 0, 0, 1, 1, 1, 1)
