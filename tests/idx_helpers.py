"""Tiny MNIST-format datasets for the trainer's tests, written as IDX files.

Imported as a plain module (``from idx_helpers import ...``). Nothing here imports
fastconv, so the files are written independently of the reader under test.
"""

import gzip
import struct

import numpy as np


def write_idx(path, array):
    """Write a uint8 array as an IDX file (gzip-compressed when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(header + array.tobytes())


def write_bar_dataset(folder, seed, sizes, noise=60, bar=220, noisy_bars=False):
    """The four gzip IDX files of a 10-class dataset in ``folder``.

    Class k is a bright horizontal bar at rows 2k+4 .. 2k+5, columns 4 .. 23, on pixels
    drawn from 0 .. noise-1. The bar's pixels are ``bar``, or with ``noisy_bars`` drawn
    from 160 .. 249 (no two pixels need be equal). ``sizes``: (train, test) images.
    """
    rng = np.random.default_rng(seed)
    for prefix, n in zip(("train", "t10k"), sizes):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, noise, (n, 28, 28)).astype(np.uint8)
        for k in range(10):
            rows = labels == k
            images[rows, 2 * k + 4:2 * k + 6, 4:24] = (
                rng.integers(160, 250, (rows.sum(), 2, 20)) if noisy_bars else bar)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return str(folder)
