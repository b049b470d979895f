"""Seeing inside a network: image grids and a picture of the convolutions' features.

``make_grid`` tiles a batch of images into one image with
``torchvision.utils.make_grid``'s semantics, on NumPy arrays and without
PyTorch. ``save_feature_figure`` writes a PNG of what a trained CNN computes:
the first convolution's filters, then for a few images the input, the first
and second convolutions' output maps, the true class and the predicted one.

Dimensions: N images, C channels, H x W pixels; K filters of KH x KW.

matplotlib is needed by ``save_feature_figure`` only (``pip install
"fastconv[plot]"``). It draws on a :class:`matplotlib.figure.Figure` of its
own, rendered by Agg, and never touches pyplot or matplotlib's global state.

Examples
--------
>>> import numpy as np
>>> from fastconv.viz import make_grid
>>> batch = np.ones((5, 1, 2, 2), np.float32)  # five 2x2 one-channel images
>>> grid = make_grid(batch, nrow=4, padding=1)
>>> grid.shape  # 3 channels, 2 rows of 3-pixel cells + 1, 4 columns of them + 1
(3, 7, 13)
>>> grid[0, :4, :7]
array([[0., 0., 0., 0., 0., 0., 0.],
       [0., 1., 1., 0., 1., 1., 0.],
       [0., 1., 1., 0., 1., 1., 0.],
       [0., 0., 0., 0., 0., 0., 0.]], dtype=float32)
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastconv import nn
from fastconv._validation import as_array, as_index, float_kind

__all__ = ["PLOT_HINT", "make_grid", "save_feature_figure"]

#: what to run when matplotlib is missing: the message of the ImportError raised then
PLOT_HINT = 'pip install "fastconv[plot]"'

# torchvision's floor on (high - low) when normalising a constant image
_MIN_SPAN = 1e-5
# figure geometry, in inches: height of one row of panels, width of the label column
_ROW_INCHES = 1.25
_LABEL_INCHES = 1.6
_FONT = 8
_FILTER_ROW = 0.75  # height of the filters' row, in image rows
_DPI = 120


# --------------------------------------------------------------------------- make_grid


def _as_batch(nchw: ArrayLike) -> NDArray[np.floating[Any]]:
    """A new float (N, C, H, W) array; one-channel images repeated into three channels."""
    array = as_array(nchw, "nchw")
    if array.ndim not in (2, 3, 4):
        raise ValueError(f"nchw must have 2 (H, W), 3 (C, H, W) or 4 (N, C, H, W) dimensions, "
                         f"got shape {array.shape}")
    array = array.astype(float_kind(array, "nchw"))  # a copy: normalising works in place
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 3:
        array = array[None]
    if array.shape[0] == 0:
        raise ValueError(f"nchw holds no image: shape {array.shape}")
    if array.shape[1] == 1:
        array = np.repeat(array, 3, axis=1)
    return array


def _as_flag(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def _as_real(value: object, name: str) -> float:
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def _as_value_range(value_range: object) -> tuple[float, float] | None:
    if value_range is None:
        return None
    if not isinstance(value_range, (tuple, list)) or len(value_range) != 2:
        raise TypeError(f"value_range must be None or a pair (low, high), got {value_range!r}")
    low, high = (_as_real(v, "value_range") for v in value_range)
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"value_range must be finite with low <= high, got {value_range!r}")
    return low, high


def _normalize(batch: NDArray[np.floating[Any]], value_range: tuple[float, float] | None,
               scale_each: bool) -> None:
    """Clamp to the range (given, or each group's min and max), map it to [0, 1], in place."""
    for group in (batch if scale_each else batch[None]):
        if value_range is None:
            low, high = float(group.min()), float(group.max())
        else:
            low, high = value_range
        np.clip(group, low, high, out=group)
        group -= low
        group /= max(high - low, _MIN_SPAN)


def make_grid(nchw: ArrayLike, nrow: int = 8, padding: int = 2, normalize: bool = False,
              value_range: tuple[float, float] | None = None, scale_each: bool = False,
              pad_value: float = 0) -> NDArray[np.floating[Any]]:
    """Tile images into one image, as ``torchvision.utils.make_grid`` does.

    Parameters
    ----------
    nchw : array_like, shape (N, C, H, W), (C, H, W) or (H, W)
        The images (a list of equal-shaped (C, H, W) arrays is stacked). Real
        values; one-channel images become three equal channels (as torchvision
        does for an RGB picture).
    nrow : int, default 8
        Images per row of the grid (fewer when N is smaller).
    padding : int, default 2
        Pixels of ``pad_value`` around and between the images.
    normalize : bool, default False
        Clamp to ``value_range`` (default: the images' min and max) and map it
        linearly to [0, 1]; a range narrower than 1e-5 is divided by 1e-5.
    value_range : (low, high), optional
        Finite, ``low <= high``; used only with ``normalize``.
    scale_each : bool, default False
        With ``normalize`` and no ``value_range``: each image's own min and max
        rather than the whole batch's.
    pad_value : float, default 0
        Value of the padding pixels (``nan`` leaves them blank in matplotlib).

    Returns
    -------
    ndarray, shape (C', H', W')
        A new array; float32 for float16 or float32 input, float64 otherwise.
        C' is 3 for one-channel input, else C. With ``xmaps = min(nrow, N)``
        columns and ``ymaps = ceil(N / xmaps)`` rows, ``H' = ymaps * (H +
        padding) + padding`` and ``W' = xmaps * (W + padding) + padding``;
        image k sits at row ``k // xmaps``, column ``k % xmaps``, its top-left
        pixel at ``(row * (H + padding) + padding, column * (W + padding) +
        padding)``. A single image (N = 1) comes back unpadded, as in torchvision.

    Raises
    ------
    TypeError
        Complex or non-numeric images, a non-int ``nrow`` or ``padding``, a
        non-bool flag, a non-real ``pad_value``, a ``value_range`` that is not a pair.
    ValueError
        Not 2 to 4 dimensions, no image, ``nrow < 1``, ``padding < 0``, or a
        ``value_range`` that is not finite or has ``low > high``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.viz import make_grid
    >>> images = np.arange(3 * 4, dtype=float).reshape(3, 1, 2, 2)
    >>> grid = make_grid(images, nrow=2, padding=1, pad_value=-1)
    >>> grid.shape
    (3, 7, 7)
    >>> grid[0]
    array([[-1., -1., -1., -1., -1., -1., -1.],
           [-1.,  0.,  1., -1.,  4.,  5., -1.],
           [-1.,  2.,  3., -1.,  6.,  7., -1.],
           [-1., -1., -1., -1., -1., -1., -1.],
           [-1.,  8.,  9., -1., -1., -1., -1.],
           [-1., 10., 11., -1., -1., -1., -1.],
           [-1., -1., -1., -1., -1., -1., -1.]])

    ``normalize`` maps the batch's [0, 11] to [0, 1]; ``scale_each`` each image's own range:

    >>> make_grid(images, nrow=3, padding=0, normalize=True)[0, 0] * 11
    array([0., 1., 4., 5., 8., 9.])
    >>> make_grid(images, nrow=3, padding=0, normalize=True, scale_each=True)[0, 0] * 3
    array([0., 1., 0., 1., 0., 1.])
    """
    batch = _as_batch(nchw)
    nrow = as_index(nrow, "nrow", 1)
    padding = as_index(padding, "padding", 0)
    normalize = _as_flag(normalize, "normalize")
    scale_each = _as_flag(scale_each, "scale_each")
    low_high = _as_value_range(value_range)
    fill = _as_real(pad_value, "pad_value")
    if normalize:
        _normalize(batch, low_high, scale_each)
    if len(batch) == 1:
        return batch[0]

    n, channels, height, width = batch.shape
    xmaps = min(nrow, n)
    ymaps = -(-n // xmaps)
    cell_h, cell_w = height + padding, width + padding
    grid = np.full((channels, ymaps * cell_h + padding, xmaps * cell_w + padding), fill,
                   dtype=batch.dtype)
    for k, image in enumerate(batch):
        top = (k // xmaps) * cell_h + padding
        left = (k % xmaps) * cell_w + padding
        grid[:, top:top + height, left:left + width] = image
    return grid


# ------------------------------------------------------------------ the feature figure


def _matplotlib() -> tuple[Any, Any]:
    """matplotlib's Figure class and colormap registry, or ImportError(PLOT_HINT)."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(PLOT_HINT) from None
    return Figure, matplotlib.colormaps


def _conv_layers(seq: nn.Sequential, prefix: str = "") -> Iterator[tuple[str, nn.Conv2d]]:
    """Every Conv2d in order, named as ``return_activations`` names its output."""
    for index, layer in enumerate(seq):
        name = f"{prefix}{index}"
        if isinstance(layer, nn.Sequential):
            yield from _conv_layers(layer, name + ".")
        elif isinstance(layer, nn.Conv2d):
            yield name, layer


def _pick(labels: NDArray[np.int64] | None, total: int, n_images: int) -> NDArray[np.intp]:
    """Indices of n_images images: the first of each class first, then the next ones."""
    if labels is None:
        return np.arange(min(n_images, total))
    _, firsts = np.unique(labels, return_index=True)
    firsts = np.sort(firsts)[:n_images]
    rest = np.setdiff1d(np.arange(total), firsts)[:n_images - len(firsts)]
    return np.concatenate([firsts, rest]).astype(np.intp)


def _forward(model: nn.Sequential, x: NDArray[Any]) -> tuple[NDArray[Any], dict[str, Any]]:
    """Logits and activations in evaluation mode; each module's mode restored after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        return model.forward(x, return_activations=True)
    finally:
        for module, mode in modes:  # parents before children: each ends as it was
            module.train(mode)


def _softmax(logits: NDArray[Any]) -> NDArray[np.float64]:
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _signed_tiles(maps: NDArray[Any], nrow: int) -> NDArray[np.float64]:
    """(M, H, W) maps tiled one pixel apart, each divided by its largest |value|.

    Dividing each map by its own peak keeps zero at the colormap's centre and
    shows every map's pattern, strong or weak; the padding is NaN (drawn blank).
    """
    maps = np.asarray(maps, np.float64)
    peak = np.abs(maps).max(axis=(1, 2), keepdims=True)
    scaled = maps / np.where(peak > 0, peak, 1.0)
    return make_grid(scaled[:, None], nrow=nrow, padding=1, pad_value=np.nan)[0]


def _grid_columns(count: int, height: int, width: int) -> int:
    """Columns that make ``count`` maps of height x width tile closest to a square."""
    return min(range(1, count + 1),
               key=lambda cols: abs(math.log(cols * width / (-(-count // cols) * height))))


def _row_label(true: int | None, predicted: int, probability: float,
               names: Sequence[str]) -> tuple[str, str]:
    """The row's text and its colour: red when the prediction is wrong."""
    text = f"predicted: {names[predicted]}\nprobability {probability:.0%}"
    if true is None:
        return text, "black"
    return f"true: {names[true]}\n{text}", "black" if true == predicted else "tab:red"


def _class_names(class_names: Sequence[str] | None, n_classes: int) -> Sequence[str]:
    if class_names is None:
        return [str(k) for k in range(n_classes)]
    if isinstance(class_names, str) or len(class_names) < n_classes:
        raise ValueError(f"class_names must be a sequence of at least {n_classes} names "
                         f"(one per logit), got {class_names!r}")
    return [str(name) for name in class_names]


def _as_labels(labels: ArrayLike | None, n: int) -> NDArray[np.int64] | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be {n} integers (one per image), got "
                         f"shape {labels.shape} dtype {labels.dtype}")
    return labels.astype(np.int64)


def save_feature_figure(model: nn.Sequential, images: ArrayLike, labels: ArrayLike | None,
                        class_names: Sequence[str] | None, path: str | os.PathLike[str],
                        n_images: int = 4) -> None:
    """Write a PNG of a CNN's first filters and its feature maps on a few images.

    The top row shows the first convolution's filters. Below, one row per
    image: the true class (when ``labels`` are given) and the predicted one
    with its softmax probability (in red when wrong), the input image (grey,
    its channels averaged), and the output maps of the first and second
    convolutions (before any pooling or activation). Filters and maps are drawn
    red for positive and blue for negative, each scaled to its own largest
    absolute value. The convolutions are the first two
    :class:`fastconv.nn.Conv2d` layers of ``model`` (nested Sequentials
    included), so both :class:`fastconv.models.LeNet5` variants work (C1, C3).

    Parameters
    ----------
    model : fastconv.nn.Sequential
        Maps ``images`` to logits (N, classes); it must hold a Conv2d layer.
        It runs one forward pass in evaluation mode (each module's mode is
        restored after), which replaces what the layers keep for backward.
    images : array_like, shape (N, C, H, W)
        Inputs as the model takes them (e.g. ``fastconv.data.to_float``'s
        normalised images). Only the ``n_images`` shown go through the model.
    labels : array_like of int, shape (N,), or None
        The true classes. When given, the images shown are the first image of
        each class, in order of appearance, then the next images if fewer than
        ``n_images`` classes appear; without labels, the first ``n_images``.
    class_names : sequence of str, or None
        The name of each class (e.g. ``fastconv.data.CLASS_NAMES[dataset]``);
        None writes the class numbers.
    path : str or os.PathLike
        The PNG file written (overwritten if it exists).
    n_images : int, default 4
        Rows of images, at most N.

    Raises
    ------
    ImportError
        matplotlib is missing; the message is :data:`PLOT_HINT`,
        ``pip install "fastconv[plot]"``.
    TypeError
        ``model`` is not a Sequential, or a bad ``n_images`` type.
    ValueError
        No Conv2d layer in ``model``, ``images`` not 4-D or empty, ``labels``
        not one integer per image, too few ``class_names``, ``n_images < 1``.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from fastconv.data import CLASS_NAMES
    >>> from fastconv.models import LeNet5
    >>> from fastconv.viz import save_feature_figure
    >>> images = np.random.default_rng(0).normal(size=(8, 1, 28, 28)).astype(np.float32)
    >>> labels = np.array([3, 3, 1, 4, 1, 5, 9, 2])
    >>> names = CLASS_NAMES["fashion-mnist"]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "features.png")
    ...     save_feature_figure(LeNet5(rng=0), images, labels, names, path)
    ...     with open(path, "rb") as f:
    ...         f.read(8) == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be a fastconv.nn.Sequential, got {type(model).__name__}")
    convs = list(itertools.islice(_conv_layers(model), 2))
    if not convs:
        raise ValueError(f"model has no Conv2d layer to show: {type(model).__name__}")
    x = as_array(images, "images")
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) batch, got shape {x.shape}")
    n_images = as_index(n_images, "n_images", 1)
    labels = _as_labels(labels, len(x))
    Figure, colormaps = _matplotlib()

    chosen = _pick(labels, len(x), n_images)
    logits, activations = _forward(model, x[chosen])
    probabilities = _softmax(logits)
    names = _class_names(class_names, probabilities.shape[1])
    if labels is not None and not np.all((labels >= 0) & (labels < len(names))):
        raise ValueError(f"labels must lie in [0, {len(names)}) (one name per class), "
                         f"got values from {labels.min()} to {labels.max()}")
    rows = [(_row_label(None if labels is None else int(labels[i]), int(p.argmax()),
                        float(p.max()), names), x[i])
            for i, p in zip(chosen, probabilities)]
    fig = _draw(Figure, colormaps, convs, activations, rows)
    fig.savefig(os.fspath(path), format="png", dpi=_DPI)


def _draw(Figure: Any, colormaps: Any, convs: list[tuple[str, nn.Conv2d]],
          activations: dict[str, Any], rows: list[tuple[tuple[str, str], NDArray[Any]]]) -> Any:
    """The figure: a row of filters, then per image its label, input and each conv's maps."""
    signed = colormaps["RdBu_r"].with_extremes(bad="white")
    maps = [activations[name] for name, _ in convs]
    columns = [_grid_columns(a.shape[1], a.shape[2], a.shape[3]) for a in maps]
    tiles = [[_signed_tiles(a[r], cols) for a, cols in zip(maps, columns)]
             for r in range(len(rows))]
    titles = ["input"] + [f"layer {name} output\n{a.shape[1]} maps {a.shape[2]}x{a.shape[3]}"
                          for (name, _), a in zip(convs, maps)]
    # every panel of an image row has the row's height: widths follow the aspect ratios
    input_hw = rows[0][1].shape[-2:]
    widths = [_LABEL_INCHES / _ROW_INCHES, input_hw[1] / input_hw[0]]
    widths += [t.shape[1] / t.shape[0] for t in tiles[0]]

    height = _ROW_INCHES * (len(rows) + _FILTER_ROW) + 0.6
    fig = Figure(figsize=(_ROW_INCHES * sum(widths) + 0.3, height),
                 layout="constrained")
    fig.suptitle("red > 0 > blue, each filter and map scaled to its own largest |value|",
                 fontsize=_FONT)
    # the filters are one short strip: their row needs less height than an image row
    grid = fig.add_gridspec(len(rows) + 1, len(widths), width_ratios=widths,
                            height_ratios=[_FILTER_ROW] + [1.0] * len(rows))
    _draw_filters(fig.add_subplot(grid[0, :]), convs[0], signed)
    for r, ((text, colour), image) in enumerate(rows):
        label_ax = fig.add_subplot(grid[r + 1, 0])
        label_ax.axis("off")
        label_ax.text(1.0, 0.5, text, ha="right", va="center", color=colour, fontsize=_FONT,
                      transform=label_ax.transAxes)
        panels: list[tuple[NDArray[Any], Any, tuple[float, float] | None]]
        panels = [(image.mean(axis=0), colormaps["gray"], None)]
        panels += [(tile, signed, (-1.0, 1.0)) for tile in tiles[r]]
        for c, (picture, cmap, limits) in enumerate(panels):
            ax = fig.add_subplot(grid[r + 1, c + 1])
            _show(ax, picture, cmap, limits)
            if r == 0:
                ax.set_title(titles[c], fontsize=_FONT)
    return fig


def _draw_filters(ax: Any, conv: tuple[str, nn.Conv2d], cmap: Any) -> None:
    name, layer = conv
    weight = layer.weight.data
    k, c, kh, kw = weight.shape
    # each (filter, input channel) kernel; one row of filters per input channel would be
    # unreadable past a few channels, so filters run along the rows
    kernels = weight.reshape(k * c, kh, kw)
    _show(ax, _signed_tiles(kernels, nrow=c * min(k, 16)), cmap, (-1.0, 1.0))
    ax.axis("off")  # the tiles' blank padding would sit inside a frame
    ax.set_title(f"layer {name} ({type(layer).__name__}): {k} filters of {c}@{kh}x{kw}",
                 fontsize=_FONT)


def _show(ax: Any, image: NDArray[Any], cmap: Any, limits: tuple[float, float] | None) -> None:
    vmin, vmax = limits if limits is not None else (None, None)
    ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
