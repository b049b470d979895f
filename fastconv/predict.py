"""fastconv-predict: evaluate a trained LeNet-5, or classify image files with it.

Usage (also ``python -m fastconv.predict``)::

    fastconv-predict weights.npz --evaluate --plot confusion.png
    fastconv-predict weights.npz --evaluate --dask local --predictions test.csv
    fastconv-predict weights.npz shoe.png bag.jpg
    fastconv-predict weights.npz photos/ --csv predictions.csv

``WEIGHTS``: a file of ``fastconv-train --save`` (:mod:`fastconv.weights`), whose metadata
give the dataset, the training normalisation, the class names and the image size.

``--evaluate`` runs the model over the dataset's test split (found as in training, see
:func:`fastconv.data.load_dataset`) and prints the loss and accuracy, the numbers of
``fastconv-train``'s test pass (same batches, ``--batch-size`` 1000 in both), then each
class's accuracy; ``--plot PATH`` writes the confusion matrix as a PNG (matplotlib) and
``--predictions PATH`` each image's label, predicted class and probability as a CSV.
``--dask`` computes the logits on a Dask cluster (``local`` or a scheduler address).

Otherwise each ``IMAGE`` (any format Pillow reads) is made a training-like image (see
:func:`load_image`) and classified: the three likeliest classes and their softmax
probabilities, one line per file. A folder stands for the image files directly inside it
(``IMAGE_SUFFIXES``, any case; not hidden files, not subfolders), and the results are then
a CSV (stdout, or ``--csv PATH``): ``file, class_1, probability_1, ..., probability_3``.

A file that cannot be classified (missing, a folder named like an image, empty, not an
image, damaged, an unsupported pixel mode) gets one line on stderr and no output line; the
other files are still classified. Exit status: 0 when everything worked; 1 when some image
file failed (an argument folder without image files counts as one); 2 for bad flags, an
unreadable weights file, missing data or a missing optional package (matplotlib for
``--plot``, Pillow for images, dask for ``--dask``).

Every number comes from :func:`predict_logits`, the ``predict`` of :func:`evaluate` and
:func:`classify`.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
from numpy.typing import ArrayLike, NDArray

import fastconv
from fastconv import data, nn
from fastconv._blas import single_threaded_blas
from fastconv._validation import as_index
from fastconv.weights import load_model, read_metadata

__all__ = ["Evaluation", "build_parser", "classify", "confusion_matrix", "evaluate",
           "load_image", "main", "plot_confusion", "predict_logits", "softmax"]

TOP_K = 3
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Pillow modes read as 8-bit grey (after a conversion); those with alpha are laid on white.
_OPAQUE_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")

#: the logits function: (model, images (N, 1, H, W), batch_size) -> logits (N, classes)
PredictFn = Callable[[nn.Module, NDArray[Any], int], ArrayLike]


def build_parser() -> argparse.ArgumentParser:
    """The command line of fastconv-predict (``--help`` lists every flag and default).

    Returns
    -------
    argparse.ArgumentParser

    Examples
    --------
    >>> from fastconv.predict import build_parser
    >>> args = build_parser().parse_args(["weights.npz", "--evaluate"])
    >>> args.weights, args.evaluate, args.images, args.batch_size, args.invert
    ('weights.npz', True, [], 1000, 'auto')
    """
    parser = argparse.ArgumentParser(
        prog="fastconv-predict",
        description="Evaluate a LeNet-5 saved by fastconv-train --save on a test split, or "
                    "classify image files with it.",
    )
    parser.add_argument("weights", metavar="WEIGHTS",
                        help="weights file (.npz) from fastconv-train --save")
    parser.add_argument("images", metavar="IMAGE", nargs="*",
                        help="image files or folders of images to classify")
    parser.add_argument("--evaluate", action="store_true",
                        help="evaluate on the dataset's test split instead (default: off)")
    parser.add_argument("--dataset", choices=data.DATASETS, default=None,
                        help="dataset to evaluate on, and whose class names and normalisation "
                             "to use when the weights lack them (default: the weights')")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="folder with the test IDX files (default: found as fastconv-train "
                             "finds them: $FASTCONV_DATA, the cache, system folders, a download)")
    parser.add_argument("--limit", type=int, metavar="N", default=None,
                        help="evaluate on the first N test images (default: all)")
    parser.add_argument("--plot", metavar="PATH", default=None,
                        help="with --evaluate, write the confusion matrix as a PNG (needs "
                             "matplotlib; default: none)")
    parser.add_argument("--invert", choices=["auto", "yes", "no"], default="auto",
                        help="invert image colours to the datasets' light-on-dark; auto: when the "
                             "image border is mostly light (default: %(default)s)")
    parser.add_argument("--csv", metavar="PATH", default=None,
                        help="write the image results as CSV to PATH (default: CSV on stdout "
                             "when an IMAGE is a folder, else one line per file)")
    parser.add_argument("--batch-size", type=int, metavar="N", default=1000,
                        help="images per forward pass (default: %(default)s, as "
                             "fastconv-train's --test-batch-size)")
    parser.add_argument("--threads", type=int, metavar="N", default=None,
                        help="kernel threads (default: fastconv's, see fastconv.show_config())")
    parser.add_argument("--predictions", metavar="PATH", default=None,
                        help="with --evaluate, write every test image's label, predicted class "
                             "and its probability as CSV to PATH (default: not written)")
    parser.add_argument("--dask", metavar="SCHEDULER", default=None,
                        help="compute the logits on Dask (needs pip install 'fastconv[dask]'): "
                             "'local' starts a cluster of worker processes on this machine, an "
                             "address (tcp://HOST:8786) uses a running cluster (default: this "
                             "process)")
    parser.add_argument("--workers", type=int, metavar="N", default=None,
                        help="with --dask local, the worker processes (default: one per core)")
    return parser


# --- logits and probabilities -------------------------------------------------------


def predict_logits(model: nn.Module, images: ArrayLike, batch_size: int) -> NDArray[Any]:
    """The model's output for every image, computed ``batch_size`` images at a time.

    The model runs in evaluation mode; its mode is restored afterwards. The
    batches are those of :func:`fastconv.train.test`, so the logits are the
    ones the trainer's test pass computes for the same ``batch_size``.

    Parameters
    ----------
    model : Module
        Maps (B, ...) to logits (B, classes).
    images : array_like, shape (N, ...)
        Prepared inputs (float32 (N, 1, 28, 28) for LeNet-5), N >= 1.
    batch_size : int
        Images per forward pass, >= 1.

    Returns
    -------
    ndarray, shape (N, classes)

    Raises
    ------
    ValueError
        ``batch_size`` below 1 or no images.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> from fastconv.predict import predict_logits
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, rng=0))
    >>> x = np.random.default_rng(0).random((5, 1, 2, 2), np.float32)
    >>> logits = predict_logits(model, x, batch_size=2)
    >>> logits.shape, bool(np.allclose(logits, model(x)))
    ((5, 3), True)
    """
    batch_size = as_index(batch_size, "batch_size", 1)
    images = np.asarray(images)
    if images.ndim == 0 or len(images) == 0:
        raise ValueError(f"images must hold at least one image, got shape {images.shape}")
    was_training = model.training
    model.eval()
    try:
        return np.concatenate([model(images[start:start + batch_size])
                               for start in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


def softmax(logits: ArrayLike) -> NDArray[np.float64]:
    """Class probabilities of each row of logits, in float64.

    Parameters
    ----------
    logits : array_like, shape (N, classes)

    Returns
    -------
    ndarray of float64, shape (N, classes)
        Each row sums to 1; each row's maximum is subtracted first, so large
        logits do not overflow.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.predict import softmax
    >>> softmax([[0.0, np.log(3.0)], [1000.0, 1000.0]])
    array([[0.25, 0.75],
           [0.5 , 0.5 ]])
    """
    z = np.array(logits, dtype=np.float64, ndmin=2)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


# --- evaluation ---------------------------------------------------------------------


def confusion_matrix(labels: ArrayLike, predictions: ArrayLike,
                     n_classes: int) -> NDArray[np.int64]:
    """Counts of (true class, predicted class) pairs.

    Parameters
    ----------
    labels, predictions : array_like of int, shape (N,)
        Class indices in ``0 .. n_classes - 1``.
    n_classes : int

    Returns
    -------
    ndarray of int64, shape (n_classes, n_classes)
        Row ``i``, column ``j``: images of class ``i`` predicted as ``j``.

    Raises
    ------
    ValueError
        Different lengths or a class index out of range.

    Examples
    --------
    >>> from fastconv.predict import confusion_matrix
    >>> confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1], 3)
    array([[1, 1, 0],
           [0, 1, 0],
           [0, 1, 0]])
    """
    n_classes = as_index(n_classes, "n_classes", 1)
    labels, predictions = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(f"labels and predictions must have one shape (N,), got "
                         f"{labels.shape} and {predictions.shape}")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} must lie in [0, {n_classes})")
    counts = np.bincount(labels * n_classes + predictions, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)


@dataclass(frozen=True)
class Evaluation:
    """The result of :func:`evaluate`.

    Attributes
    ----------
    loss : float
        Mean cross-entropy, accumulated batch by batch as :func:`fastconv.train.test` does.
    correct : int
        Images whose largest logit is at their label.
    total : int
        Images evaluated.
    confusion : ndarray of int64, shape (classes, classes)
        See :func:`confusion_matrix`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.predict import Evaluation
    >>> result = Evaluation(0.5, 3, 4, np.array([[2, 0], [1, 1]]))
    >>> result.accuracy, result.per_class_accuracy.tolist()
    (0.75, [1.0, 0.5])
    """

    loss: float
    correct: int
    total: int
    confusion: NDArray[np.int64]

    @property
    def accuracy(self) -> float:
        """``correct / total`` (0 for no images)."""
        return self.correct / max(self.total, 1)

    @property
    def per_class_accuracy(self) -> NDArray[np.float64]:
        """Accuracy of each true class (NaN for a class without images)."""
        per_class = self.confusion.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.diagonal(self.confusion) / per_class


def evaluate(model: nn.Module, x: ArrayLike, y: ArrayLike, batch_size: int,
             predict: PredictFn = predict_logits) -> Evaluation:
    """Loss, accuracy and confusion matrix of a model on a labelled set.

    Parameters
    ----------
    model : Module
        Maps (B, ...) to logits (B, classes).
    x : array_like, shape (N, ...)
        Prepared inputs, N >= 1.
    y : array_like of int, shape (N,)
        Class indices.
    batch_size : int
        Images per forward pass. With the trainer's ``--test-batch-size``
        the numbers equal those of :func:`fastconv.train.test`.
    predict : callable, default :func:`predict_logits`
        ``predict(model, x, batch_size)`` returns the logits (N, classes).

    Returns
    -------
    Evaluation

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> from fastconv.predict import evaluate
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, rng=0))
    >>> x, y = np.random.default_rng(0).random((10, 1, 2, 2), np.float32), np.arange(10) % 3
    >>> result = evaluate(model, x, y, batch_size=4)
    >>> result.total, int(result.confusion.sum()), int(np.trace(result.confusion)) == result.correct
    (10, 10, True)
    """
    y = np.asarray(y)
    logits = np.asarray(predict(model, np.asarray(x), batch_size))
    loss_fn = nn.CrossEntropyLoss()
    loss_sum = 0.0
    for start in range(0, len(y), batch_size):  # the trainer's sum, batch by batch
        yb = y[start:start + batch_size]
        loss_sum += loss_fn(logits[start:start + batch_size], yb) * len(yb)
    predictions = logits.argmax(axis=1)
    return Evaluation(loss=loss_sum / max(len(y), 1), correct=int((predictions == y).sum()),
                      total=len(y), confusion=confusion_matrix(y, predictions, logits.shape[1]))


def plot_confusion(path: str, confusion: ArrayLike, class_names: Sequence[str],
                   title: str = "Confusion matrix") -> None:
    """Write a confusion matrix as a PNG: counts in the cells, class names on the axes.

    Parameters
    ----------
    path : str
        The PNG file.
    confusion : array_like of int, shape (classes, classes)
        Rows are true classes, columns predicted ones (:func:`confusion_matrix`).
    class_names : sequence of str
        One name per class.
    title : str, optional

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install 'fastconv[plot]'``).

    Examples
    --------
    >>> import os, tempfile
    >>> from fastconv.predict import plot_confusion
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "confusion.png")
    >>> plot_confusion(path, [[5, 1], [2, 7]], ["cat", "dog"])
    >>> with open(path, "rb") as f:
    ...     f.read(4) == b"\\x89PNG"
    True
    >>> folder.cleanup()
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    confusion = np.asarray(confusion)
    n = len(confusion)
    fig = Figure(figsize=(2.5 + 0.6 * n, 1.8 + 0.6 * n), layout="tight")
    ax = fig.add_subplot()
    image = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    ax.set_xticks(range(n), labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=class_names)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    dark = 0.6 * confusion.max()  # white text on the darkest cells of the colour map
    for (i, j), count in np.ndenumerate(confusion):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                color="white" if count > dark else ("black" if count else "0.6"))
    fig.savefig(path, dpi=110)


# --- images -------------------------------------------------------------------------


def _pillow() -> Any:
    """The PIL.Image and PIL.ImageOps modules, or ImportError with the install hint."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ImportError("classifying images needs Pillow: "
                          "pip install 'fastconv[image]'") from None
    return Image, ImageOps


def _grey(img: Any, Image: Any) -> Any:
    """An 8-bit grey version of a Pillow image; transparency is laid on white."""
    if img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img.convert("RGBA")).convert("L")
    if img.mode in _OPAQUE_MODES:
        return img.convert("L")
    raise ValueError(f"unsupported image mode {img.mode!r} (16-bit, 32-bit or float pixels?): "
                     "save it as an 8-bit PNG or JPEG")


def load_image(path: str | os.PathLike[str], size: tuple[int, int] = data.IMAGE_HW,
               invert: str = "auto") -> NDArray[np.uint8]:
    """Read an image file as the datasets store images: uint8 grey, light on dark.

    The steps:

    1. decode with Pillow and apply the EXIF orientation (photos);
    2. convert to 8-bit grey (ITU-R 601-2 luma; transparent pixels laid on white);
       16-bit, 32-bit and float images are refused;
    3. pad to the aspect ratio of ``size``, centred, with the median colour of the
       image's border, then resize to ``size`` with the Lanczos filter (so a tall
       photo of a shoe is not squashed);
    4. invert (255 - value) when ``invert="yes"``, or when ``invert="auto"`` and
       the median of the border pixels (read before step 3) is above 127: a dark
       object on a light background, as in most photos and scans, becomes the
       light-on-dark of MNIST and Fashion-MNIST.

    No cropping to the object: an object that fills the frame, as in the datasets,
    is classified best.

    Parameters
    ----------
    path : str or os.PathLike
        Any image file Pillow reads (PNG, JPEG, BMP, GIF (first frame), TIFF, WebP).
    size : (int, int), default (28, 28)
        Height and width of the result.
    invert : {"auto", "yes", "no"}, default "auto"

    Returns
    -------
    ndarray of uint8, shape size

    Raises
    ------
    ValueError
        An empty file, not an image Pillow can read, a damaged one, an unsupported
        pixel mode, or a bad ``invert``.
    OSError
        The file cannot be opened (missing, a folder, no permission).
    ImportError
        Pillow is not installed (``pip install 'fastconv[image]'``).

    Examples
    --------
    A black bar on white, as drawn on paper, becomes a white bar on black:

    >>> import os, tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> from fastconv.predict import load_image
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "bar.png")
    >>> drawing = np.full((56, 112), 255, np.uint8)
    >>> drawing[20:36, 10:100] = 0
    >>> Image.fromarray(drawing).save(path)
    >>> image = load_image(path)
    >>> image.shape, image.dtype, int(image[0, 0]), int(image[14, 14])
    ((28, 28), dtype('uint8'), 0, 255)
    >>> folder.cleanup()
    """
    if invert not in ("auto", "yes", "no"):
        raise ValueError(f"invert must be 'auto', 'yes' or 'no', got {invert!r}")
    Image, ImageOps = _pillow()
    with open(path, "rb") as f:  # a missing file or a folder raises OSError here
        if not f.read(1):
            raise ValueError("empty file")
        f.seek(0)
        try:
            with Image.open(f) as img:
                grey = _grey(ImageOps.exif_transpose(img), Image)
        except Image.UnidentifiedImageError:
            raise ValueError("not an image file Pillow can read") from None
        except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ValueError(f"damaged image: {exc}") from None
    pixels = np.asarray(grey)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = int(np.median(border))
    height, width = size
    fitted = ImageOps.pad(grey, (width, height), method=Image.Resampling.LANCZOS,
                          color=background)
    result = np.array(fitted, dtype=np.uint8)
    if invert == "yes" or (invert == "auto" and background > 127):
        np.subtract(255, result, out=result)
    return result


def classify(model: nn.Module, images: ArrayLike, normalization: tuple[float, float],
             batch_size: int, predict: PredictFn = predict_logits) -> NDArray[np.float64]:
    """Class probabilities of uint8 images, normalised as in training.

    Parameters
    ----------
    model : Module
        Maps (B, 1, H, W) to logits (B, classes).
    images : array_like of uint8, shape (N, H, W)
        As :func:`load_image` returns them, N >= 1.
    normalization : (float, float)
        The training's (mean, std), e.g. ``fastconv.data.NORMALIZATION["mnist"]``.
    batch_size : int
    predict : callable, default :func:`predict_logits`

    Returns
    -------
    ndarray of float64, shape (N, classes)
        Softmax probabilities.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.data import NORMALIZATION
    >>> from fastconv.models import LeNet5
    >>> from fastconv.predict import classify
    >>> probs = classify(LeNet5(rng=0), np.zeros((2, 28, 28), np.uint8),
    ...                  NORMALIZATION["mnist"], batch_size=10)
    >>> probs.shape, bool(np.allclose(probs.sum(axis=1), 1))
    ((2, 10), True)
    """
    x = data.to_float(np.asarray(images), *normalization)
    return softmax(np.asarray(predict(model, x, batch_size)))


def _image_paths(arguments: Sequence[str]) -> tuple[list[str], list[str], bool]:
    """(files to classify, error lines, whether an argument was a folder)."""
    files, errors, folder_given = [], [], False
    for argument in arguments:
        if not os.path.isdir(argument):
            files.append(argument)  # a missing file fails when it is read
            continue
        folder_given = True
        try:
            names = os.listdir(argument)
        except OSError as exc:
            errors.append(f"{argument}: {exc.strerror or exc}")
            continue
        found = sorted(os.path.join(argument, name) for name in names
                       if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."))
        if not found:
            suffixes = ", ".join(IMAGE_SUFFIXES)
            errors.append(f"{argument}: no image files ({suffixes}) in this folder")
        files += found
    return files, errors, folder_given


def _load_all(paths: Sequence[str], size: tuple[int, int],
              invert: str) -> tuple[list[str], list[NDArray[np.uint8]], list[str]]:
    """The paths read, their images, and an error line for each file that failed."""
    done, images, errors = [], [], []
    for path in paths:
        try:
            images.append(load_image(path, size, invert))
            done.append(path)
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror or exc}")
        except ValueError as exc:
            errors.append(f"{path}: {exc}")
    return done, images, errors


def _top(probabilities: NDArray[np.float64], names: Sequence[str]) -> list[list[tuple[str, float]]]:
    """The TOP_K (class name, probability) pairs of each row, likeliest first."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :TOP_K]
    return [[(names[k], float(row[k])) for k in ks] for row, ks in zip(probabilities, order)]


def _write_csv(out: TextIO, paths: Sequence[str],
               tops: Sequence[Sequence[tuple[str, float]]]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    k = len(tops[0]) if tops else TOP_K
    writer.writerow(["file", *[f"{col}_{i}" for i in range(1, k + 1)
                               for col in ("class", "probability")]])
    for path, top in zip(paths, tops):
        writer.writerow([path, *[item for name, p in top for item in (name, f"{p:.6f}")]])


# --- main ---------------------------------------------------------------------------


def _fail(message: str) -> int:
    print(f"fastconv-predict: {message}", file=sys.stderr)
    return 2


def _missing_package(args: argparse.Namespace) -> str | None:
    """The install hint of an optional package the run needs and lacks (checked before
    the work, not after it)."""
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return "--plot needs matplotlib: pip install 'fastconv[plot]'"
    if args.images:
        try:
            _pillow()
        except ImportError as exc:
            return str(exc)
    if args.dask is not None and importlib.util.find_spec("distributed") is None:
        return "--dask needs Dask: pip install 'fastconv[dask]'"
    return None


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse contradictory or out-of-range flags (exits with the usage, status 2)."""
    if args.evaluate == bool(args.images):
        parser.error("give IMAGE files or folders, or --evaluate (not both)")
    for flag in ("plot", "data_dir", "limit"):
        if getattr(args, flag) is not None and not args.evaluate:
            parser.error(f"--{flag.replace('_', '-')} needs --evaluate")
    if args.csv is not None and args.evaluate:
        parser.error("--csv is for IMAGE results, not --evaluate (see --predictions)")
    if args.predictions is not None and not args.evaluate:
        parser.error("--predictions needs --evaluate (IMAGE results go to --csv)")
    if args.workers is not None and args.dask != "local":
        parser.error("--workers needs --dask local")
    if args.dask is not None and args.dask in ("sync", "threads"):
        parser.error("--dask takes 'local' or a scheduler address (tcp://HOST:8786)")
    for name in ("batch_size", "threads", "limit", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def _class_names(meta: dict[str, Any], dataset: str | None, n_classes: int) -> list[str]:
    names = meta["class_names"] or (data.CLASS_NAMES[dataset] if dataset else None)
    if names is None or len(names) != n_classes:
        return [str(k) for k in range(n_classes)]
    return list(names)


def _normalization(meta: dict[str, Any], dataset: str | None) -> tuple[float, float] | None:
    """The training's (mean, std): the weights', else the dataset's, else None."""
    if meta["normalization"] is not None:
        return meta["normalization"]["mean"], meta["normalization"]["std"]
    return data.NORMALIZATION[dataset] if dataset else None


def _run_evaluation(args: argparse.Namespace, model: nn.Module, meta: dict[str, Any]) -> int:
    dataset = args.dataset or meta["dataset"]
    normalization = _normalization(meta, dataset)
    if dataset is None or normalization is None:
        return _fail(f"{args.weights} names no dataset: pass --dataset")
    if meta["dataset"] and dataset != meta["dataset"]:
        print(f"note: the weights were trained on {meta['dataset']}", file=sys.stderr)
    try:
        images, labels = data.load_dataset(dataset, "test", data_dir=args.data_dir)
    except (FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    images, labels = images[:args.limit], labels[:args.limit]
    logits: list[NDArray[Any]] = []  # kept for --predictions

    def predict_and_keep(model: nn.Module, x: NDArray[Any], batch_size: int) -> NDArray[Any]:
        logits.append(np.asarray(_predict_fn(args)(model, x, batch_size)))
        return logits[-1]

    with single_threaded_blas():
        result = evaluate(model, data.to_float(images, *normalization), labels, args.batch_size,
                          predict_and_keep)
    names = _class_names(meta, dataset, len(result.confusion))
    if args.predictions is not None:
        _write_predictions(args.predictions, labels, softmax(logits[0]), names)
    print(f"{dataset} test split, {result.total} images: test loss {result.loss:.4f} "
          f"acc {100 * result.accuracy:.2f}% ({result.correct}/{result.total})")
    print("Per-class accuracy:")
    width = max(len(name) for name in names)
    for k, (name, acc) in enumerate(zip(names, result.per_class_accuracy)):
        count = result.confusion[k]
        shown = "   n/a" if np.isnan(acc) else f"{100 * acc:6.2f}%"
        print(f"  {k:2d} {name:<{width}} {shown} ({count[k]}/{count.sum()})")
    if args.plot:
        title = (f"{dataset} test split: {100 * result.accuracy:.2f}% of {result.total} "
                 f"images correct")
        plot_confusion(args.plot, result.confusion, names, title)
        print(f"Saved confusion matrix to {args.plot}")
    if args.predictions is not None:
        print(f"Saved {result.total} predictions to {args.predictions}")
    return 0


def _predict_fn(args: argparse.Namespace) -> PredictFn:
    """Where the logits are computed: this process, or Dask (``--dask``)."""
    if args.dask is None:
        return predict_logits
    from fastconv import dask as fastconv_dask

    def on_dask(model: nn.Module, x: NDArray[Any], batch_size: int) -> NDArray[Any]:
        return fastconv_dask.predict_numpy(model, x, batch_size,
                                           scheduler=args.dask, n_workers=args.workers)

    return on_dask


def _write_predictions(path: str, labels: NDArray[Any], probabilities: NDArray[np.float64],
                       names: Sequence[str]) -> None:
    """CSV of the evaluation: index, label, predicted class and its probability."""
    predicted = probabilities.argmax(axis=1)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["index", "label", "label_name", "predicted", "predicted_name",
                         "probability"])
        for i, (label, k) in enumerate(zip(labels, predicted)):
            writer.writerow([i, int(label), names[int(label)], int(k), names[int(k)],
                             f"{probabilities[i, k]:.6f}"])


def _run_images(args: argparse.Namespace, model: nn.Module, meta: dict[str, Any]) -> int:
    dataset = args.dataset or meta["dataset"]
    normalization = _normalization(meta, dataset)
    if normalization is None:
        return _fail(f"{args.weights} holds no normalisation: pass --dataset")
    height, width = meta["image_size"] or data.IMAGE_HW
    paths, errors, folder_given = _image_paths(args.images)
    done, images, load_errors = _load_all(paths, (height, width), args.invert)
    tops: list[list[tuple[str, float]]] = []
    if images:
        with single_threaded_blas():
            probabilities = classify(model, np.stack(images), normalization, args.batch_size,
                                     _predict_fn(args))
        tops = _top(probabilities, _class_names(meta, dataset, probabilities.shape[1]))
    if args.csv is not None:
        with open(args.csv, "w", newline="") as f:
            _write_csv(f, done, tops)
    elif folder_given:
        _write_csv(sys.stdout, done, tops)
    else:
        for path, top in zip(done, tops):
            print(f"{path}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in top))
    for line in errors + load_errors:
        print(f"fastconv-predict: {line}", file=sys.stderr)
    return 1 if errors or load_errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run fastconv-predict; returns the process exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``); see :func:`build_parser`.

    Returns
    -------
    int
        0 on success; 1 when some image file could not be classified (each is
        named on stderr, the others are classified); 2 when the weights file or
        the data cannot be read, or an optional package is missing. Bad flags
        exit through argparse (status 2).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> from fastconv.models import LeNet5
    >>> from fastconv.predict import main
    >>> from fastconv.weights import save_model
    >>> folder = tempfile.TemporaryDirectory()
    >>> weights = os.path.join(folder.name, "w.npz")
    >>> save_model(weights, LeNet5(rng=0), dataset="fashion-mnist")
    >>> Image.fromarray(np.zeros((28, 28), np.uint8)).save(os.path.join(folder.name, "a.png"))
    >>> main([weights, os.path.join(folder.name, "a.png")])  # doctest: +ELLIPSIS
    /...a.png: ...%, ...%, ...%
    0
    >>> folder.cleanup()

    Evaluating reads (or downloads) the test split of Fashion-MNIST:

    >>> main(["weights.npz", "--evaluate", "--plot", "confusion.png"])  # doctest: +SKIP
    0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    if args.threads is not None:
        fastconv.set_num_threads(args.threads)
    missing = _missing_package(args)
    if missing:
        return _fail(missing)
    try:
        meta = read_metadata(args.weights)
        model = load_model(args.weights)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    if args.evaluate:
        return _run_evaluation(args, model, meta)
    return _run_images(args, model, meta)


if __name__ == "__main__":
    sys.exit(main())
