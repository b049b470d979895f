"""On a FASTCONV_DEBUG=1 build, an out-of-bounds access in a kernel raises instead of
corrupting memory, and on a FASTCONV_SANITIZE=address one AddressSanitizer stops a raw
pointer going too far. These tests call kernels directly with sizes the public functions
would refuse, so they run on such builds only (CI builds one with both)."""

import io
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv._build_info import BUILD_INFO
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


ADDRESS_SANITIZED = "address" in BUILD_INFO.get("sanitize", [])

OVERFLOW = """
import numpy as np
from fastconv._kernels import _pool
x, y = np.ones((2, 1, 2, 2)), np.empty((1, 1, 1, 1))  # two planes in, room for one out
_pool.max_pool2d_forward(x, y, None, None, 2, 2, 2, 2, 0, 0, 1, 1, 1)  # raw-pointer write past y
"""


@pytest.mark.skipif(not ADDRESS_SANITIZED,
                    reason="needs a FASTCONV_SANITIZE=address build run with libasan preloaded")
def test_address_sanitizer_stops_a_raw_pointer_write_past_an_array(tmp_path):
    """The bounds checks see memoryview indexing only; a kernel writing through a raw
    pointer is caught by AddressSanitizer, which stops the process."""
    result = subprocess.run([sys.executable, "-c", OVERFLOW], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)  # `-c` puts the cwd on sys.path
    assert result.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in result.stderr, result.stderr[-2000:]
