"""Datasets for the trainer: IDX files, MNIST and Fashion-MNIST, mini-batches.

``read_idx`` reads one IDX file, raw or gzip-compressed, and checks its structure (magic
number, type byte, dimensions, exact length): a truncated, over-long or corrupt file raises
a ``ValueError`` naming the file, never returns a wrong array.

``load_dataset(name, split)`` finds the two IDX files of a split (images and labels, each
as ``NAME`` or ``NAME.gz``; the dotted spelling ``train-images.idx3-ubyte`` is accepted
too). The first folder holding both files wins, in this order:

1. the ``data_dir`` argument (the trainer's ``--data-dir``), then ``data_dir/NAME``;
2. ``$FASTCONV_DATA/NAME``, then ``$FASTCONV_DATA`` itself;
3. the user cache, ``$XDG_CACHE_HOME/fastconv/NAME`` (default ``~/.cache/fastconv/NAME``);
4. the system folders in :data:`SYSTEM_DATA_DIRS`, each as ``FOLDER/NAME`` (Debian's
   package ``dataset-fashion-mnist`` installs ``/usr/share/datasets/fashion-mnist``);
5. with ``download=True``, a download of the missing ``.gz`` files from the public mirrors
   in :data:`MIRRORS` into the user cache. Each download is checked against the SHA-256
   and size of its decompressed bytes (:data:`SHA256`) and moved into place atomically; a
   failed check tries the next mirror.

``NAME`` is the canonical dataset name, ``mnist`` or ``fashion-mnist``. Files found locally
(steps 1 to 4) are not checksummed, so MNIST-format data of one's own can be used, but they
are validated structurally. When no step succeeds, :class:`DatasetNotFoundError` lists
every place looked at, every download error and how to get the files.

``batches`` cuts a dataset into shuffled mini-batches with a NumPy ``Generator``;
``to_float`` turns uint8 images into float32 NCHW arrays.

Dimensions: N images, H x W pixels (28 x 28 for both datasets), C = 1 channel.

Examples
--------
>>> import numpy as np
>>> from fastconv.data import batches, to_float
>>> images = np.zeros((5, 28, 28), np.uint8)
>>> labels = np.arange(5)
>>> for x, y in batches(to_float(images), labels, batch_size=2, seed=0):
...     print(x.shape, y.shape)
(2, 1, 28, 28) (2,)
(2, 1, 28, 28) (2,)
(1, 1, 28, 28) (1,)
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import struct
import sys
import tempfile
import urllib.request
import zlib
from collections.abc import Iterator
from typing import IO, Any, TypeAlias, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastconv._validation import as_index

__all__ = [
    "CLASS_NAMES",
    "DatasetNotFoundError",
    "DATASETS",
    "MIRRORS",
    "NORMALIZATION",
    "SHA256",
    "SPLITS",
    "SYSTEM_DATA_DIRS",
    "batches",
    "cache_dir",
    "load_dataset",
    "locate_dataset",
    "read_idx",
    "to_float",
]

#: canonical dataset names
DATASETS = ("mnist", "fashion-mnist")

#: (images file, labels file) of each split, without the ``.gz`` suffix
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: base URLs tried in order; a file is fetched as ``BASE + NAME + ".gz"``
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ],
}

#: (SHA-256 hex digest, size in bytes) of each DECOMPRESSED file, checked on download
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": (
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47040016),
        "train-labels-idx1-ubyte": (
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60008),
        "t10k-images-idx3-ubyte": (
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7840016),
        "t10k-labels-idx1-ubyte": (
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10008),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47040016),
        "train-labels-idx1-ubyte": (
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60008),
        "t10k-images-idx3-ubyte": (
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7840016),
        "t10k-labels-idx1-ubyte": (
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10008),
    },
}

#: system folders searched as ``FOLDER/NAME`` after the user cache
SYSTEM_DATA_DIRS = ["/usr/share/datasets", "/usr/local/share/datasets"]

#: (mean, std) of the training images scaled to [0, 1], for ``to_float``
NORMALIZATION = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}

#: seconds a download may wait on the network (connection, then each read)
DOWNLOAD_TIMEOUT = 30.0
#: downloads at least this large report their progress on stderr
PROGRESS_MIN_BYTES = 1 << 20

NUM_CLASSES = 10
IMAGE_HW = (28, 28)

#: the name of each class label 0 to 9, per dataset
CLASS_NAMES = {
    "mnist": tuple(str(digit) for digit in range(NUM_CLASSES)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
}

#: A file name: str or os.PathLike.
StrPath: TypeAlias = str | os.PathLike[str]

# IDX type byte -> big-endian NumPy dtype
_IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16
# what a failing mirror may raise: network, HTTP, gzip and URL errors
_DOWNLOAD_ERRORS = (OSError, http.client.HTTPException, EOFError, zlib.error, ValueError)


class DatasetNotFoundError(FileNotFoundError):
    """No folder holds the dataset's files and no download succeeded.

    The message lists every place looked at, the download error of each
    mirror, and how to get the files. A ``FileNotFoundError``, so
    ``except FileNotFoundError`` catches it too.

    Examples
    --------
    >>> from fastconv.data import DatasetNotFoundError
    >>> issubclass(DatasetNotFoundError, FileNotFoundError)
    True
    """


# --------------------------------------------------------------------- IDX files


def _read_bytes(path: StrPath) -> bytes:
    """The file's bytes, decompressed when it is gzip (by name or by magic)."""
    with open(path, "rb") as f:
        raw = f.read()
    if not (os.fspath(path).endswith(".gz") or raw[:2] == _GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{os.fspath(path)}: corrupt gzip stream ({exc})") from None


def _idx_layout(name: str, head: bytes, size: int) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """(shape, big-endian dtype, data offset) an IDX header declares.

    ``head`` holds the file's first bytes (at least the whole header when the file
    has one), ``size`` its whole (decompressed) length, which must be exactly what
    the header declares. Errors are ``ValueError`` starting with ``name``.
    """
    if size < 4:
        raise ValueError(f"{name}: not an IDX file: {size} bytes, shorter than the "
                         "4-byte magic number")
    zero0, zero1, type_code, ndim = head[:4]
    if zero0 or zero1:
        raise ValueError(f"{name}: not an IDX file: bad magic number 0x{head[:4].hex()} "
                         "(expected 0x0000 then the type and dimension bytes)")
    if type_code not in _IDX_TYPES:
        raise ValueError(f"{name}: unknown IDX type byte 0x{type_code:02X} (known: "
                         f"{', '.join(f'0x{t:02X}' for t in _IDX_TYPES)})")
    if ndim == 0:
        raise ValueError(f"{name}: IDX header declares no dimensions")
    header = 4 + 4 * ndim
    if size < header:
        raise ValueError(f"{name}: truncated IDX header: {size} bytes, the header of "
                         f"{ndim} dimensions needs {header}")
    shape = struct.unpack(f">{ndim}I", head[4:header])
    dtype = _IDX_TYPES[type_code]
    expected = header + math.prod(shape) * dtype.itemsize
    if size != expected:
        what = "truncated" if size < expected else "over-long"
        raise ValueError(f"{name}: {what} IDX file: {size} bytes, the header declares "
                         f"shape {shape} of {dtype.newbyteorder('=').name}, {expected} bytes")
    return shape, dtype, header


def read_idx(path: StrPath) -> NDArray[Any]:
    """Read an IDX file (raw or ``.gz``) into a NumPy array.

    The header is the magic number ``00 00 TYPE NDIM``, then NDIM big-endian
    uint32 dimensions; the data follow in C order, big-endian. The file must
    hold exactly the declared number of bytes.

    Parameters
    ----------
    path : str or os.PathLike
        The file. It is decompressed when its name ends in ``.gz`` or it starts
        with the gzip magic bytes.

    Returns
    -------
    ndarray, shape (d1, ..., dNDIM)
        A new writable array in native byte order, of dtype uint8 (type byte
        0x08), int8 (0x09), int16 (0x0B), int32 (0x0C), float32 (0x0D) or
        float64 (0x0E).

    Raises
    ------
    ValueError
        The file is corrupt: a bad gzip stream, a bad magic number, an unknown
        type byte, no dimensions, or a length other than the header declares.
        The message starts with the file's path.
    OSError
        The file cannot be opened (``FileNotFoundError`` when missing).

    Examples
    --------
    >>> import gzip, os, tempfile
    >>> from fastconv.data import read_idx
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "tiny-idx2-ubyte")
    >>> header = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3])  # uint8, shape (2, 3)
    >>> with open(path, "wb") as f:
    ...     _ = f.write(header + bytes(range(6)))
    >>> read_idx(path)
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint8)
    >>> with gzip.open(path + ".gz", "wb") as f:
    ...     _ = f.write(header + bytes(range(5)))  # one byte short
    >>> read_idx(path + ".gz")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...tiny-idx2-ubyte.gz: truncated IDX file: 17 bytes, the header declares ..., 18 bytes
    >>> folder.cleanup()
    """
    name = os.fspath(path)
    data = _read_bytes(path)
    shape, dtype, header = _idx_layout(name, data, len(data))
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _idx_digest(path: StrPath, limit: int | None = None) -> tuple[str, int]:
    """(SHA-256 hex digest, size) of the decompressed bytes of a ``.gz`` file.

    Stops reading once ``limit`` bytes are exceeded (the size returned then
    says so). A bad gzip stream raises what gzip raises.
    """
    digest = hashlib.sha256()
    size = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                break
    return digest.hexdigest(), size


# --------------------------------------------------------------------- finding files


def _canonical_name(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return key


def _canonical_split(split: str) -> str:
    key = str(split).strip().lower()
    if key not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    return key


def cache_dir(name: str) -> str:
    """The user cache folder of a dataset, where downloads go.

    Parameters
    ----------
    name : str
        ``"mnist"`` or ``"fashion-mnist"`` (any case, ``_`` for ``-``).

    Returns
    -------
    str
        ``$XDG_CACHE_HOME/fastconv/NAME``, or ``~/.cache/fastconv/NAME`` when
        ``$XDG_CACHE_HOME`` is unset or empty. The folder may not exist yet.

    Raises
    ------
    ValueError
        Unknown dataset.

    Examples
    --------
    >>> import os
    >>> from fastconv.data import cache_dir
    >>> path = cache_dir("Fashion_MNIST")
    >>> os.path.basename(path), os.path.basename(os.path.dirname(path))
    ('fashion-mnist', 'fastconv')
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastconv", _canonical_name(name))


def _search_folders(name: str, data_dir: StrPath | None) -> list[tuple[str, str]]:
    """[(folder, where it comes from)] in resolution order."""
    folders = []
    if data_dir is not None:
        root = os.path.expanduser(os.fspath(data_dir))
        folders += [(root, "data_dir"), (os.path.join(root, name), "data_dir")]
    env = os.environ.get("FASTCONV_DATA")
    if env:
        root = os.path.expanduser(env)
        folders += [(os.path.join(root, name), "$FASTCONV_DATA"), (root, "$FASTCONV_DATA")]
    folders.append((cache_dir(name), "user cache"))
    folders += [(os.path.join(d, name), "system folder") for d in SYSTEM_DATA_DIRS]
    return folders


def _file_variants(base: str) -> list[str]:
    dotted = base.replace("-idx", ".idx", 1)
    return [base, base + ".gz", dotted, dotted + ".gz"]


def _find_file(folder: str, base: str) -> str | None:
    """The path of ``base`` (raw, ``.gz`` or dotted) in ``folder``, or None."""
    for variant in _file_variants(base):
        path = os.path.join(folder, variant)
        if os.path.isfile(path):
            return path
    return None


# --------------------------------------------------------------------- downloading


def _progress(url: str, done: int, total: int | None) -> None:
    total_text = f" / {total / 2**20:.1f}" if total else ""
    print(f"\rfastconv: downloading {url}: {done / 2**20:.1f}{total_text} MiB",
          end="", file=sys.stderr, flush=True)


def _fetch(url: str, tmp: IO[bytes], limit: int) -> None:
    """Copy ``url`` into the open file ``tmp``; at most ``limit`` bytes."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > limit:
            raise ValueError(f"server announces {total} bytes, more than the {limit} expected")
        show = total is not None and total >= PROGRESS_MIN_BYTES
        done = shown = 0
        try:
            while chunk := response.read(_CHUNK):
                tmp.write(chunk)
                done += len(chunk)
                if done > limit:
                    raise ValueError(f"more than the {limit} bytes expected")
                show = show or done >= PROGRESS_MIN_BYTES
                if show and done - shown >= PROGRESS_MIN_BYTES:
                    _progress(url, done, total)
                    shown = done
        finally:
            if show:
                _progress(url, done, total)
                print(file=sys.stderr, flush=True)
        if total is not None and done != total:
            raise ValueError(f"connection closed after {done} of {total} bytes")


def _download(name: str, base: str, folder: str, errors: list[str]) -> str | None:
    """Fetch ``base + ".gz"`` into ``folder``, trying each mirror; the path or None.

    Every failure is appended to ``errors`` as a line of text. The file is
    written to a temporary file in ``folder`` and moved into place with
    ``os.replace`` only after its decompressed SHA-256 and size match.
    """
    sha256, size = SHA256[name][base]
    target = os.path.join(folder, base + ".gz")
    # gzip never grows MNIST-like data by more than a small header and block overhead
    limit = size + size // 100 + (1 << 16)
    for mirror in MIRRORS[name]:
        url = mirror + base + ".gz"
        tmp_path = None
        try:
            fd, tmp_path = tempfile.mkstemp(prefix=f".{base}.gz.", suffix=".part", dir=folder)
            with os.fdopen(fd, "wb") as tmp:
                _fetch(url, tmp, limit)
            try:
                got_sha, got_size = _idx_digest(tmp_path, limit=size)
            except (OSError, EOFError, zlib.error) as exc:
                raise ValueError(f"not a valid gzip file ({exc})") from None
            if (got_sha, got_size) != (sha256, size):
                raise ValueError(f"checksum mismatch: decompressed SHA-256 {got_sha} "
                                 f"({got_size} bytes), expected {sha256} ({size} bytes)")
            os.replace(tmp_path, target)
            return target
        except _DOWNLOAD_ERRORS as exc:
            errors.append(f"{url}: {exc}")
        finally:
            if tmp_path is not None and os.path.exists(tmp_path):
                os.remove(tmp_path)
    return None


# --------------------------------------------------------------------- datasets


def _how_to_get(name: str) -> list[str]:
    files = ", ".join(f"{b}.gz" for pair in SPLITS.values() for b in pair)
    mirrors = MIRRORS.get(name) or ["(no mirror configured)"]
    lines = ["How to get the files:"]
    if name == "fashion-mnist":
        lines.append("  - Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist "
                     "(installs them in /usr/share/datasets/fashion-mnist);")
    lines += [
        f"  - put the four IDX files ({files}; raw or .gz), published at {mirrors[0]}, "
        "in a folder and pass it with --data-dir (data_dir=) or $FASTCONV_DATA;",
        "  - or run once with network access and downloads enabled; they are saved in "
        f"{cache_dir(name)}.",
    ]
    return lines


def locate_dataset(name: str, split: str, data_dir: StrPath | None = None,
                   download: bool = True) -> tuple[str, str]:
    """Find (or download) the two IDX files of a dataset split.

    Parameters
    ----------
    name : str
        ``"mnist"`` or ``"fashion-mnist"`` (any case; ``"fashion_mnist"`` too).
    split : str
        ``"train"`` or ``"test"``.
    data_dir : str or os.PathLike, optional
        Folder searched first (then ``data_dir/NAME``).
    download : bool, default True
        Whether to download the missing files into the user cache when no
        folder holds both.

    Returns
    -------
    images_path, labels_path : str
        The files found, both from the same folder. See the module docstring
        for the resolution order.

    Raises
    ------
    DatasetNotFoundError
        Nowhere holds both files and no download succeeded.
    ValueError
        Unknown dataset or split.

    Examples
    --------
    >>> import os, tempfile
    >>> from fastconv.data import locate_dataset
    >>> folder = tempfile.TemporaryDirectory()
    >>> for name in ("train-images-idx3-ubyte.gz", "train-labels.idx1-ubyte"):
    ...     open(os.path.join(folder.name, name), "wb").close()
    >>> paths = locate_dataset("mnist", "train", data_dir=folder.name, download=False)
    >>> [os.path.basename(p) for p in paths]  # found, not read
    ['train-images-idx3-ubyte.gz', 'train-labels.idx1-ubyte']
    >>> folder.cleanup()
    """
    name = _canonical_name(name)
    split = _canonical_split(split)
    bases = SPLITS[split]
    looked = []
    for folder, origin in _search_folders(name, data_dir):
        if not os.path.isdir(folder):
            looked.append(f"  {folder} ({origin}): no such folder")
            continue
        paths = [_find_file(folder, b) for b in bases]
        if all(paths):
            return cast("tuple[str, str]", tuple(paths))
        missing = ", ".join(b for b, p in zip(bases, paths) if p is None)
        looked.append(f"  {folder} ({origin}): missing {missing} (raw or .gz)")
    if not os.environ.get("FASTCONV_DATA"):
        looked.append("  $FASTCONV_DATA: not set")

    errors = []
    if download:
        folder = cache_dir(name)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            errors.append(f"cannot create the cache folder {folder}: {exc}")
        else:
            paths = [_find_file(folder, b) or _download(name, b, folder, errors) for b in bases]
            if all(paths):
                return cast("tuple[str, str]", tuple(paths))
        download_lines = [f"Downloads into {folder} failed:"] + [f"  {e}" for e in errors]
    else:
        download_lines = ["Download: disabled (download=False)."]

    message = [
        f"{name} {split} split not found: need {bases[0]} and {bases[1]} (raw or .gz) "
        "in one folder.",
        "Looked in:",
        *looked,
        *download_lines,
        *_how_to_get(name),
    ]
    raise DatasetNotFoundError("\n".join(message))


def load_dataset(name: str, split: str, data_dir: StrPath | None = None,
                 download: bool = True) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Load MNIST or Fashion-MNIST images and labels.

    Parameters
    ----------
    name : str
        ``"mnist"`` or ``"fashion-mnist"`` (any case; ``"fashion_mnist"`` too).
    split : str
        ``"train"`` (60000 images) or ``"test"`` (10000 images).
    data_dir : str or os.PathLike, optional
        Folder searched first (then ``data_dir/NAME``); see the module
        docstring for the whole resolution order.
    download : bool, default True
        Whether to download the files into the user cache when no folder
        holds them. Downloads are checked by SHA-256; local files are only
        checked structurally.

    Returns
    -------
    images : ndarray of uint8, shape (N, 28, 28)
        Pixel values 0 (background) to 255.
    labels : ndarray of int64, shape (N,)
        Class indices in 0..9.

    Raises
    ------
    DatasetNotFoundError
        Nowhere holds the files and no download succeeded (a
        ``FileNotFoundError``; the message says where it looked and how to get
        the files).
    ValueError
        Unknown dataset or split; a corrupt file; images that are not uint8
        (N, 28, 28); labels that are not uint8 (N,) in 0..9; or different
        image and label counts. File errors name the files.

    Examples
    --------
    A folder holding a tiny test split of two images (no network: ``download=False``):

    >>> import os, struct, tempfile
    >>> import numpy as np
    >>> from fastconv.data import load_dataset
    >>> def write_idx(path, array):  # uint8 IDX file: magic 00 00 08 NDIM, then the sizes
    ...     header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    ...     with open(path, "wb") as f:
    ...         _ = f.write(header + array.astype(np.uint8).tobytes())
    >>> folder = tempfile.TemporaryDirectory()
    >>> write_idx(os.path.join(folder.name, "t10k-images-idx3-ubyte"), np.zeros((2, 28, 28)))
    >>> write_idx(os.path.join(folder.name, "t10k-labels-idx1-ubyte"), np.array([3, 7]))
    >>> images, labels = load_dataset("mnist", "test", data_dir=folder.name, download=False)
    >>> images.shape, images.dtype, labels
    ((2, 28, 28), dtype('uint8'), array([3, 7]))
    >>> folder.cleanup()
    """
    images_path, labels_path = locate_dataset(name, split, data_dir=data_dir,
                                              download=download)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_HW:
        raise ValueError(f"{images_path}: expected uint8 images of shape (N, 28, 28), got "
                         f"{images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected uint8 labels of shape (N,), got "
                         f"{labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                         f"{len(labels)} labels")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise ValueError(f"{labels_path}: label {int(labels.max())} out of range 0.."
                         f"{NUM_CLASSES - 1} (images {images_path})")
    return images, labels.astype(np.int64)


# --------------------------------------------------------------------- batches


class _Batches:
    """Iterator over mini-batches with a length (the number of batches)."""

    def __init__(self, images: NDArray[Any], labels: NDArray[Any], order: NDArray[Any] | None,
                 batch_size: int, starts: range) -> None:
        self._images = images
        self._labels = labels
        self._order = order
        self._starts = iter(starts)
        self._len = len(starts)
        self._batch_size = batch_size

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[tuple[NDArray[Any], NDArray[Any]]]:
        return self

    def __next__(self) -> tuple[NDArray[Any], NDArray[Any]]:
        start = next(self._starts)
        end = start + self._batch_size
        if self._order is None:
            return self._images[start:end], self._labels[start:end]
        index = self._order[start:end]
        return self._images[index], self._labels[index]


def batches(images: ArrayLike, labels: ArrayLike, batch_size: int, shuffle: bool = True,
            seed: int | None = None, rng: np.random.Generator | None = None,
            drop_last: bool = False, start: int = 0) -> _Batches:
    """Iterate over a dataset in mini-batches, shuffled by a NumPy generator.

    The permutation is drawn when ``batches`` is called, so a generator kept
    across epochs (``rng``) advances once per call and its state can be saved
    with a checkpoint to resume the exact same sequence of epochs. ``start``
    resumes inside an epoch: the whole permutation is still drawn (the
    generator advances exactly as for ``start=0``) and the first ``start``
    batches are skipped without being gathered.

    Parameters
    ----------
    images : ndarray, shape (N, ...)
        Samples along the first axis (e.g. uint8 (N, 28, 28) or float32
        (N, 1, 28, 28)).
    labels : ndarray, shape (N, ...)
        One label per sample.
    batch_size : int
        Samples per batch, at least 1. The last batch is smaller when N is
        not a multiple of it (unless ``drop_last``).
    shuffle : bool, default True
        Visit the samples in a random order; otherwise in order, as views.
    seed : int, optional
        Seed for ``numpy.random.default_rng`` when ``rng`` is not given.
    rng : numpy.random.Generator, optional
        Generator to draw the permutation from (advanced in place). Give
        ``seed`` or ``rng``, not both.
    drop_last : bool, default False
        Skip the last batch when it is smaller than ``batch_size``.
    start : int, default 0
        Index of the first batch to yield (0 to the number of batches): the
        batches before it are skipped, e.g. to resume an epoch.

    Returns
    -------
    iterator of (x_batch, y_batch)
        ``x_batch`` of shape (B, ...) and ``y_batch`` of shape (B, ...), with
        B <= batch_size; copies when shuffled, views otherwise. Every sample
        appears exactly once per call (except those dropped by
        ``drop_last`` or skipped by ``start``). ``len()`` gives the number of
        batches it yields (all of them less ``start``).

    Raises
    ------
    TypeError
        ``batch_size`` or ``start`` is not an integer.
    ValueError
        ``batch_size`` is below 1, ``start`` is below 0 or past the last batch,
        the lengths differ, or both ``seed`` and ``rng`` are given.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.data import batches
    >>> x, y = np.arange(10).reshape(5, 2), np.arange(5)
    >>> [yb.tolist() for xb, yb in batches(x, y, 2, shuffle=False)]
    [[0, 1], [2, 3], [4]]
    >>> len(batches(x, y, 2, seed=0, drop_last=True))
    2
    >>> sorted(np.concatenate([yb for xb, yb in batches(x, y, 2, seed=0)]).tolist())
    [0, 1, 2, 3, 4]

    Resuming at the third batch of an epoch gives the batches it would have given:

    >>> [yb.tolist() for xb, yb in batches(x, y, 2, seed=0)]
    [[2, 4], [3, 0], [1]]
    >>> [yb.tolist() for xb, yb in batches(x, y, 2, seed=0, start=2)]
    [[1]]
    """
    batch_size = as_index(batch_size, "batch_size", 1)
    start = as_index(start, "start", 0)
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 0 or labels.ndim == 0 or len(images) != len(labels):
        raise ValueError(f"images and labels must have the same length along axis 0, got "
                         f"shapes {images.shape} and {labels.shape}")
    if seed is not None and rng is not None:
        raise ValueError("give seed or rng, not both")
    n = len(images)
    starts = range(0, n - n % batch_size if drop_last else n, batch_size)
    if start > len(starts):
        raise ValueError(f"start must be <= the number of batches ({len(starts)}), got {start}")
    order = None
    if shuffle:
        generator = rng if rng is not None else np.random.default_rng(seed)
        order = generator.permutation(n)
    # Skipped batches are never gathered: only their positions are passed over.
    return _Batches(images, labels, order, batch_size, starts[start:])


def to_float(images: ArrayLike, mean: float | None = None,
             std: float | None = None) -> NDArray[np.float32]:
    """Scale uint8 images to float32 in [0, 1], with a channel axis.

    Parameters
    ----------
    images : ndarray of uint8, shape (N, H, W) or (N, 1, H, W)
        Pixel values 0 to 255.
    mean, std : float, optional
        When given, return ``(x - mean) / std`` of the scaled images ``x``
        (e.g. ``NORMALIZATION["mnist"]``). ``std`` must be positive and is
        only allowed with ``mean``.

    Returns
    -------
    ndarray of float32, shape (N, 1, H, W)
        A new C-contiguous array.

    Raises
    ------
    ValueError
        Not uint8, not 3 or 4 dimensions (one channel), or a bad ``std``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.data import NORMALIZATION, to_float
    >>> to_float(np.array([[[0, 51, 255]]], np.uint8))
    array([[[[0. , 0.2, 1. ]]]], dtype=float32)
    >>> x = to_float(np.zeros((2, 28, 28), np.uint8), *NORMALIZATION["mnist"])
    >>> x.shape, round(float(x[0, 0, 0, 0]), 4)  # (0 - 0.1307) / 0.3081
    ((2, 1, 28, 28), -0.4242)
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images of shape (N, H, W) or (N, 1, H, W), got "
                         f"{images.shape}")
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    x = images.astype(np.float32)
    np.divide(x, np.float32(255), out=x)
    if mean is not None and std is not None:  # both or neither, checked above
        if not std > 0:
            raise ValueError(f"std must be positive, got {std}")
        np.subtract(x, np.float32(mean), out=x)
        np.divide(x, np.float32(std), out=x)
    return x
