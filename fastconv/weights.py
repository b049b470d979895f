"""Trained weights on disk: a model's state dict and its metadata in one ``.npz`` file.

``save_model(path, model, dataset=...)`` writes what ``fastconv-train --save`` writes;
``load_model(path)`` rebuilds the LeNet-5 it holds, ``load_weights(path, model)`` loads
the weights into a model one builds oneself (any :class:`fastconv.nn.Module`), and
``read_metadata(path)`` returns the metadata alone.

The file is an ordinary NumPy ``.npz`` archive (no pickle: it is read with
``allow_pickle=False``):

- one array per entry of ``model.state_dict()``, under the same name
  (``"0.weight"``, ``"0.bias"``, ...), all of one dtype, float32 or float64;
- ``"fastconv_metadata"``: a 0-d string array holding a JSON object::

    {"format": 1, "fastconv_version": "0.1.0",
     "architecture": {"class": "LeNet5", "variant": "modern"},
     "dtype": "float32", "dataset": "fashion-mnist",
     "normalization": {"mean": 0.286, "std": 0.353},
     "class_names": ["T-shirt/top", ...], "image_size": [28, 28], "extra": {}}

  ``architecture`` names the model's class, plus the constructor arguments needed
  to rebuild it for LeNet-5 (its variant); ``normalization`` is the ``(x - mean) /
  std`` applied to the images scaled to [0, 1] in training
  (:data:`fastconv.data.NORMALIZATION`), so prediction can preprocess exactly as
  training did; ``dataset``, ``normalization``, ``class_names`` and ``image_size``
  are null when unknown; ``extra`` holds any further keyword given to
  :func:`save_model`.

Writes are atomic (a temporary file in the same folder, flushed to disk, then
renamed over ``path``): a failed or interrupted write leaves the previous file as
it was. Reading refuses, with a ``ValueError`` naming the file: a file that is not
a fastconv weights file (a training checkpoint, a plain ``np.savez`` of a state
dict, anything else), a corrupt or truncated one, a newer format version, weights
of another architecture or variant, of another dtype (unless a conversion is asked
for explicitly: ``dtype=`` of :func:`load_model`, ``cast=True`` of
:func:`load_weights`), and keys or shapes that do not fit the model.

Examples
--------
>>> import os, tempfile
>>> from fastconv.models import LeNet5
>>> from fastconv.weights import load_model, read_metadata, save_model
>>> folder = tempfile.TemporaryDirectory()
>>> path = os.path.join(folder.name, "lenet.npz")
>>> save_model(path, LeNet5("classic", rng=0), dataset="fashion-mnist")
>>> meta = read_metadata(path)
>>> meta["architecture"], meta["dtype"], meta["class_names"][:2]
({'class': 'LeNet5', 'variant': 'classic'}, 'float32', ['T-shirt/top', 'Trouser'])
>>> load_model(path).variant
'classic'
>>> folder.cleanup()
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from fastconv import data, nn
from fastconv._version import __version__
from fastconv.models import LeNet5

__all__ = ["FORMAT_VERSION", "load_model", "load_weights", "read_metadata", "save_model"]

#: the version of the file layout this fastconv writes (and the newest it reads)
FORMAT_VERSION = 1

METADATA_KEY = "fastconv_metadata"
_REQUIRED = ("format", "fastconv_version", "architecture", "dtype", "dataset", "normalization",
             "class_names", "image_size", "extra")
_DTYPES = ("float32", "float64")
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a first entry, or an empty archive
# what reading a damaged archive can raise (zipfile checks every entry's CRC-32)
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


# --------------------------------------------------------------------- writing


def _architecture(model: nn.Module) -> dict[str, Any]:
    """The class name, plus what its constructor needs where :func:`load_model` rebuilds it."""
    if type(model) is LeNet5:
        return {"class": "LeNet5", "variant": model.variant}
    return {"class": type(model).__name__}


def _model_dtype(model: nn.Module) -> str:
    dtypes = sorted({param.data.dtype.name for param in model.parameters()})
    if len(dtypes) != 1:
        raise ValueError(f"model must have parameters of one dtype, got {dtypes or 'none'}")
    return dtypes[0]


def _metadata(model: nn.Module, dataset: str | None, class_names: Sequence[str] | None,
              image_size: Sequence[int] | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    normalization = None
    if dataset is not None:
        dataset = data._canonical_name(dataset)
        mean, std = data.NORMALIZATION[dataset]
        normalization = {"mean": mean, "std": std}
        if class_names is None:
            class_names = data.CLASS_NAMES[dataset]
    if class_names is not None:
        class_names = [str(name) for name in class_names]
    if image_size is None and type(model) is LeNet5:
        image_size = data.IMAGE_HW
    if image_size is not None:
        image_size = [int(side) for side in image_size]
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"image_size must be (height, width) >= 1, got {image_size}")
    try:
        json.dumps(dict(extra))
    except TypeError as exc:
        raise TypeError(f"metadata must be JSON-serialisable: {exc}") from None
    return {"format": FORMAT_VERSION, "fastconv_version": __version__,
            "architecture": _architecture(model), "dtype": _model_dtype(model),
            "dataset": dataset, "normalization": normalization, "class_names": class_names,
            "image_size": image_size, "extra": dict(extra)}


def _atomic_savez(path: str, arrays: Mapping[str, NDArray[Any]]) -> None:
    """``np.savez`` into a temporary file next to ``path``, then rename it over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".fastconv-weights-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            # (mypy: a ** key could fill savez's allow_pickle; none has that name)
            np.savez(f, **arrays)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_model(path: str | os.PathLike[str], model: nn.Module, *, dataset: str | None = None,
               class_names: Sequence[str] | None = None, image_size: Sequence[int] | None = None,
               **extra: Any) -> None:
    """Write a model's weights and metadata to an ``.npz`` file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file, written as given (no suffix is added); its folder is created.
    model : Module
        Any :class:`fastconv.nn.Module` whose parameters share one dtype.
    dataset : {"mnist", "fashion-mnist"}, optional
        The training data: stored with its normalisation
        (:data:`fastconv.data.NORMALIZATION`) and, unless ``class_names`` is
        given, its class names (:data:`fastconv.data.CLASS_NAMES`).
    class_names : sequence of str, optional
        The name of each output class, in index order.
    image_size : (int, int), optional
        Height and width of the input images (default for LeNet-5: (28, 28)).
    **extra
        Further JSON-serialisable metadata (epochs, accuracy, ...), stored under
        ``"extra"``.

    Raises
    ------
    ValueError
        Unknown dataset, a bad ``image_size``, or parameters of mixed dtypes
        (or none).
    TypeError
        ``extra`` is not JSON-serialisable.
    OSError
        The file cannot be written; a previous file at ``path`` is then unchanged.

    Examples
    --------
    >>> import os, tempfile
    >>> from fastconv import nn
    >>> from fastconv.weights import read_metadata, save_model
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "tiny.npz")
    >>> save_model(path, nn.Linear(4, 3, rng=0), class_names=["a", "b", "c"], epochs=2)
    >>> meta = read_metadata(path)
    >>> meta["architecture"], meta["class_names"], meta["dataset"], meta["extra"]
    ({'class': 'Linear'}, ['a', 'b', 'c'], None, {'epochs': 2})
    >>> folder.cleanup()
    """
    state = model.state_dict()
    if METADATA_KEY in state:
        raise ValueError(f"model has a parameter named {METADATA_KEY!r}, the metadata's entry")
    metadata = _metadata(model, dataset, class_names, image_size, extra)
    _atomic_savez(os.fspath(path), {**state, METADATA_KEY: np.array(json.dumps(metadata))})


# --------------------------------------------------------------------- reading


def _not_weights(name: str, keys: Sequence[str]) -> ValueError:
    """The refusal of an .npz without metadata, with a hint at what it probably is."""
    if "meta" in keys and any(key.startswith("model/") for key in keys):
        what = ("a fastconv-train checkpoint (--checkpoint), not a weights file; "
                "continue it with fastconv-train --resume")
    elif keys:
        what = (f"an .npz without the {METADATA_KEY!r} entry (a plain np.savez of a state "
                "dict, as fastconv-train --save wrote before weights files had metadata?); "
                "load it "
                "with model.load_state_dict(dict(np.load(path)))")
    else:
        what = "an empty .npz archive"
    return ValueError(f"{name} is not a fastconv weights file: {what}")


def _read_archive(name: str, f: Any) -> dict[str, NDArray[Any]]:
    """Every array of the open .npz file ``f``; ValueError when it is not one or is damaged."""
    head = f.read(4)
    if not head:
        raise ValueError(f"{name} is not a fastconv weights file: the file is empty")
    if head not in _ZIP_MAGICS:
        raise ValueError(f"{name} is not a fastconv weights file: not an .npz archive "
                         f"(starts with {head!r})")
    f.seek(0)
    try:
        with np.load(f, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except _READ_ERRORS as exc:
        raise ValueError(f"{name}: corrupt or truncated weights file ({exc})") from None


def _parse_metadata(name: str, entry: NDArray[Any]) -> dict[str, Any]:
    damaged = f"{name}: the weights file's metadata is damaged"
    if entry.ndim != 0 or entry.dtype.kind != "U":
        raise ValueError(f"{damaged} (not a JSON string)")
    try:
        meta = json.loads(str(entry))
    except ValueError as exc:
        raise ValueError(f"{damaged} (not JSON: {exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{damaged} (not a JSON object)")
    version = meta.get("format")
    if type(version) is not int or version < 1:
        raise ValueError(f"{damaged} (format {version!r})")
    if version > FORMAT_VERSION:
        raise ValueError(f"{name} has weights format {version}, newer than this fastconv "
                         f"{__version__} reads (up to {FORMAT_VERSION}); upgrade fastconv")
    missing = [key for key in _REQUIRED if key not in meta]
    if missing:
        raise ValueError(f"{damaged} (missing {', '.join(missing)})")
    if meta["dtype"] not in _DTYPES or not isinstance(meta["architecture"], dict) \
            or not isinstance(meta["architecture"].get("class"), str):
        raise ValueError(f"{damaged} (dtype {meta['dtype']!r}, architecture "
                         f"{meta['architecture']!r})")
    return meta


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    """(metadata, state dict) of a weights file, both checked."""
    name = os.fspath(path)
    with open(path, "rb") as f:  # a missing file or a folder raises OSError here
        arrays = _read_archive(name, f)
    if METADATA_KEY not in arrays:
        raise _not_weights(name, list(arrays))
    meta = _parse_metadata(name, arrays.pop(METADATA_KEY))
    wrong = {key: value.dtype.name for key, value in arrays.items()
             if value.dtype.name != meta["dtype"]}
    if wrong:
        raise ValueError(f"{name}: the metadata says {meta['dtype']} but entries have other "
                         f"dtypes: {wrong}")
    return meta, arrays


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a weights file (after checking the whole file).

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_model` (or ``fastconv-train --save``).

    Returns
    -------
    dict
        The JSON object described in the module docstring: ``format``,
        ``fastconv_version``, ``architecture``, ``dtype``, ``dataset``,
        ``normalization``, ``class_names``, ``image_size``, ``extra``.

    Raises
    ------
    ValueError
        Not a fastconv weights file, a corrupt or truncated one, or a newer
        format version.
    OSError
        The file cannot be opened.

    Examples
    --------
    >>> import os, tempfile
    >>> from fastconv.models import LeNet5
    >>> from fastconv.weights import read_metadata, save_model
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "lenet.npz")
    >>> save_model(path, LeNet5(rng=0), dataset="mnist")
    >>> meta = read_metadata(path)
    >>> meta["normalization"], meta["image_size"]
    ({'mean': 0.1307, 'std': 0.3081}, [28, 28])
    >>> folder.cleanup()
    """
    return _read(path)[0]


def _load_into(name: str, meta: Mapping[str, Any], state: Mapping[str, NDArray[Any]],
               model: nn.Module, cast: bool) -> None:
    """Check architecture and dtype, then load ``state`` into ``model`` (all or nothing)."""
    expected = _architecture(model)
    if meta["architecture"] != expected:
        raise ValueError(f"{name} holds weights of {meta['architecture']}, the model is "
                         f"{expected}")
    dtype = _model_dtype(model)
    if meta["dtype"] != dtype:
        if not cast:
            raise ValueError(f"{name} holds {meta['dtype']} weights and the model is {dtype}: "
                             f"build the model in {meta['dtype']}, or convert explicitly "
                             "(cast=True / load_model(path, dtype=...))")
        state = {key: value.astype(dtype) for key, value in state.items()}
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise ValueError(f"{name} does not fit this model: {exc}") from None


def load_weights(path: str | os.PathLike[str], model: nn.Module, *,
                 cast: bool = False) -> dict[str, Any]:
    """Load the weights of a file into a model built by the caller.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_model`.
    model : Module
        Of the file's architecture (same class; for LeNet-5, same variant).
    cast : bool, default False
        Convert weights of another dtype to the model's (float64 to float32
        rounds each value to the nearest float32). Without it another dtype is
        refused.

    Returns
    -------
    dict
        The file's metadata (see :func:`read_metadata`).

    Raises
    ------
    ValueError
        Not a fastconv weights file, a corrupt or truncated one, a newer format
        version, another architecture or variant, another dtype (without
        ``cast``), or keys and shapes that do not match the model's parameters.
        The model is unchanged then.
    OSError
        The file cannot be opened.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from fastconv import nn
    >>> from fastconv.weights import load_weights, save_model
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "linear.npz")
    >>> save_model(path, nn.Linear(4, 3, rng=0))
    >>> model = nn.Linear(4, 3, rng=1)
    >>> _ = load_weights(path, model)
    >>> bool(np.array_equal(model.weight.data, nn.Linear(4, 3, rng=0).weight.data))
    True
    >>> load_weights(path, nn.Linear(4, 3, dtype=np.float64))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...linear.npz holds float32 weights and the model is float64: ...
    >>> _ = load_weights(path, nn.Linear(4, 3, dtype=np.float64), cast=True)
    >>> folder.cleanup()
    """
    meta, state = _read(path)
    _load_into(os.fspath(path), meta, state, model, cast)
    return meta


def load_model(path: str | os.PathLike[str], dtype: DTypeLike | None = None) -> LeNet5:
    """Rebuild the LeNet-5 saved in a weights file.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_model` for a :class:`fastconv.models.LeNet5`.
    dtype : float32 or float64, optional
        The model's dtype (default: the file's). Another dtype than the file's
        is an explicit conversion (float64 to float32 rounds).

    Returns
    -------
    LeNet5
        In the file's variant, holding its weights bit for bit (when ``dtype``
        is the file's), in evaluation mode.

    Raises
    ------
    ValueError
        The file holds another architecture (build that model and use
        :func:`load_weights`), or any reason :func:`load_weights` refuses.
    OSError
        The file cannot be opened.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from fastconv.models import LeNet5
    >>> from fastconv.weights import load_model, save_model
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "lenet.npz")
    >>> net = LeNet5(rng=0)
    >>> save_model(path, net)
    >>> loaded = load_model(path)
    >>> all(np.array_equal(a, b) for a, b in zip(net.state_dict().values(),
    ...                                          loaded.state_dict().values()))
    True
    >>> load_model(path, dtype=np.float64)[0].weight.data.dtype
    dtype('float64')
    >>> folder.cleanup()
    """
    if dtype is not None and np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    name = os.fspath(path)
    meta, state = _read(path)
    architecture = meta["architecture"]
    variant = architecture.get("variant")
    if architecture["class"] != "LeNet5" or variant not in ("modern", "classic"):
        raise ValueError(f"{name} holds weights of {architecture}; load_model rebuilds LeNet5 "
                         "only: build that model and call load_weights(path, model)")
    model = LeNet5(variant, dtype=meta["dtype"] if dtype is None else dtype, rng=0)
    _load_into(name, meta, state, model, cast=True)
    return model.eval()
