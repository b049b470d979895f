"""Batch inference on Dask: a fastconv model mapped over chunks of images.

``predict(model, images, batch_size)`` returns a lazy dask array of the model's
outputs (logits (N, classes) for a classifier). The images (N, C, H, W), a NumPy
or a dask array, are cut along the batch axis into chunks of ``batch_size``
images (the other axes in one chunk each); each chunk is one task that runs the
model in eval mode on it. The result equals, bit for bit, the single-process
loop over the same batches::

    np.concatenate([model(images[i:i + batch_size]) for i in range(0, N, batch_size)])

since the chunks are exactly those batches and fastconv's results do not
depend on its kernel thread count (``algorithm="auto"`` follows fixed shape
rules; with autotuning switched on in a process, the last bits may differ).

Computing the array runs on whatever scheduler is active: the synchronous or
threaded scheduler in this process, or a ``distributed.Client`` -- on a
``LocalCluster`` of worker processes (:func:`client` starts one) or on a real
cluster reached by its scheduler address. :func:`predict_numpy` does it all in
one call and returns the NumPy outputs.

How the model travels: it is pickled once (with cloudpickle, as Dask pickles
tasks, so a model class defined in a script or a notebook works) into one key
of the task graph, without what only training needs (gradients, the inputs
each layer keeps for backward). Each worker process rebuilds it once, on first
use, and all the chunks it runs share that copy. The model passed in is not
changed (the copy is put in eval mode).

Threads on workers: Dask's worker processes start with ``OMP_NUM_THREADS=1``,
which fastconv would follow. Instead each worker process sets
``fastconv.set_num_threads`` once to its share of the host's cores,
``max(1, cores // task slots on the host)``, where the task slots are the Dask
threads of all the workers on that host (one per worker with
``threads_per_worker=1``), so that workers do not oversubscribe the CPUs;
``kernel_threads=n`` sets ``n`` instead. In this process (synchronous or
threaded scheduler) fastconv's own setting holds.

Notes
-----
BLAS threads and bit equality: the last bits of a Linear layer depend on how
many threads BLAS uses (OpenBLAS splits its sums differently), so fastconv
limits BLAS to one thread around each call. With OpenBLAS's pthreads build
(NumPy's and SciPy's wheels), that limit is not always honoured when taken
from a thread other than the one that set it first: in this process, set from
the main thread, it does not reach the threaded scheduler's threads. So:

- threaded scheduler in this process: limit BLAS from the calling thread, as
  :func:`predict_numpy` does, with ``threadpoolctl.threadpool_limits(1,
  user_api="blas")`` around ``compute()``, or run with
  ``OPENBLAS_NUM_THREADS=1``; the synchronous scheduler needs nothing;
- Dask workers: their nanny starts them with ``OPENBLAS_NUM_THREADS=1``
  (``distributed.nanny.pre-spawn-environ``); keep it so, and set it for
  workers started without a nanny.

Large inputs are read lazily, chunk by chunk, on the workers: :func:`from_idx`
(an IDX image file, memory-mapped when uncompressed) and
:func:`from_image_folder` (image files, with Pillow), both normalised as
``fastconv.data.to_float`` does for training. Workers must see the files at the
same path.

Dimensions: N images, C channels, H x W pixels.

Examples
--------
>>> import numpy as np
>>> from fastconv.dask import predict
>>> from fastconv.models import LeNet5
>>> net = LeNet5(rng=0).eval()
>>> images = np.random.default_rng(0).standard_normal((10, 1, 28, 28)).astype(np.float32)
>>> logits = predict(net, images, batch_size=4)
>>> logits.shape, logits.chunks[0]
((10, 10), (4, 4, 2))
>>> result = logits.compute(scheduler="sync")
>>> expected = np.concatenate([net(images[i:i + 4]) for i in range(0, 10, 4)])
>>> np.array_equal(result, expected)
True

With the threaded scheduler, BLAS limited from this thread (see the Notes):

>>> from threadpoolctl import threadpool_limits
>>> with threadpool_limits(1, user_api="blas"):
...     np.array_equal(logits.compute(scheduler="threads"), expected)
True
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import logging
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

try:
    import cloudpickle
    import dask
    import dask.array as da
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"fastconv.dask needs dask[array] ({exc}); install it with: pip install 'fastconv[dask]'"
    ) from exc

from fastconv import data
from fastconv._blas import single_threaded_blas
from fastconv._config import available_cpus, get_num_threads, set_num_threads
from fastconv._validation import as_index
from fastconv.nn import Module, Parameter

if TYPE_CHECKING:
    import distributed

__all__ = ["client", "from_idx", "from_image_folder", "predict", "predict_numpy"]

#: images per chunk unless told (the trainer's --test-batch-size)
DEFAULT_BATCH_SIZE = 1000

# Scheduler names run in this process; anything else with ":" is an address.
_LOCAL_SCHEDULERS = ("sync", "synchronous", "single-threaded", "threads", "threading")

#: A normalisation: a dataset name of fastconv.data.NORMALIZATION, (mean, std) or None.
Normalization = str | tuple[float, float] | None


# --------------------------------------------------------------------- the model in transit


class _LeanPickler(cloudpickle.Pickler):
    """Pickles a model without gradients (a Module pickles without the state a layer
    carries from one call to the next: nn._cache.TRANSIENT_STATE)."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is Parameter:
            return Parameter, (obj.data, obj.data.dtype)  # grad: zeros, made on arrival
        return super().reducer_override(obj)


class _ShippedModel:
    """A model as pickled bytes; rebuilt (in eval mode) once per process, on first use.

    Only the bytes are pickled, so a scheduler that unpickles the graph never
    rebuilds the model; each worker does once, and its tasks share that copy.
    """

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.token = hashlib.sha256(blob).hexdigest()[:32]
        self._model: Module | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, model: Module) -> _ShippedModel:
        buffer = io.BytesIO()
        _LeanPickler(buffer, protocol=5).dump(model)
        return cls(buffer.getvalue())

    def __reduce__(self) -> tuple[type[_ShippedModel], tuple[bytes]]:
        return _ShippedModel, (self.blob,)

    @property
    def model(self) -> Module:
        with self._lock:  # tasks of one worker may start together
            if self._model is None:
                model = cloudpickle.loads(self.blob)
                self._model = model.eval()
            return self._model


# --------------------------------------------------------------------- kernel threads on workers

# worker address -> its share of the host's cores (set up once per worker process)
_worker_shares: dict[str, int] = {}


def _current_worker() -> distributed.Worker | None:
    """The Dask worker running this task, or None outside one."""
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return get_worker()
    except ValueError:  # not in a worker: this process's scheduler
        return None


def _task_slots_on_host(worker: distributed.Worker) -> int:
    """Dask threads of all workers on this worker's host (at least its own)."""
    from distributed import get_client
    from distributed.comm import get_address_host

    own = int(worker.state.nthreads)
    host = get_address_host(worker.address)
    try:
        workers = get_client().scheduler_info(n_workers=-1)["workers"]
    except (OSError, TimeoutError):  # the scheduler is unreachable: count this worker only
        return own
    slots = sum(int(w["nthreads"]) for address, w in workers.items()
                if get_address_host(address) == host)
    return max(own, slots)


def _worker_share(worker: distributed.Worker) -> int:
    """The worker's share of its host's cores, asked of the scheduler once per process."""
    if worker.address not in _worker_shares:
        _worker_shares[worker.address] = max(1, available_cpus() // _task_slots_on_host(worker))
    return _worker_shares[worker.address]


def _use_worker_threads(kernel_threads: int | None) -> None:
    """On a Dask worker, set fastconv's threads to ``kernel_threads`` or the host share."""
    worker = _current_worker()
    if worker is None:
        return
    share = _worker_share(worker)
    kernel_threads = share if kernel_threads is None else kernel_threads
    if get_num_threads() != kernel_threads:
        set_num_threads(kernel_threads)


def _predict_block(block: NDArray[Any], shipped: _ShippedModel,
                   kernel_threads: int | None) -> NDArray[Any]:
    _use_worker_threads(kernel_threads)
    return np.asarray(shipped.model(block))


# --------------------------------------------------------------------- predict


def _as_batches(images: Any, batch_size: int) -> da.Array:
    """``images`` as a dask array chunked (batch_size, C, H, W), validated."""
    if not isinstance(images, da.Array):
        images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got shape {images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"images must be float32 or float64 (prepared images, see "
                        f"fastconv.data.to_float), got {images.dtype}")
    chunks = (batch_size, -1, -1, -1)
    if isinstance(images, da.Array):
        return images.rechunk(chunks)
    return da.from_array(images, chunks=chunks)


def _output_meta(model: Module, images: da.Array) -> NDArray[Any]:
    """The model's output for one zero image: its trailing shape and dtype."""
    probe = np.zeros((1, *images.shape[1:]), dtype=images.dtype)
    out = np.asarray(model(probe))
    if out.ndim < 1 or out.shape[0] != 1:
        raise ValueError(f"the model must map images (N, C, H, W) to outputs (N, ...); "
                         f"one image gave shape {out.shape}")
    return out


def predict(model: Module, images: ArrayLike | da.Array, batch_size: int = DEFAULT_BATCH_SIZE,
            *, kernel_threads: int | None = None) -> da.Array:
    """The model's outputs on ``images``, as a lazy dask array computed in batches.

    Parameters
    ----------
    model : fastconv.nn.Module
        Any fastconv model (e.g. :class:`fastconv.models.LeNet5`) mapping
        (n, C, H, W) images to (n, ...) outputs. A copy is run in eval mode; the
        model itself is not changed. It is pickled once into the graph (see the
        module docstring), so it must be picklable with cloudpickle.
    images : ndarray or dask array, shape (N, C, H, W), float32 or float64
        Prepared images (for MNIST-style data, ``fastconv.data.to_float`` with
        the dataset's normalisation, or :func:`from_idx`). A dask array is
        rechunked along axis 0; its other axes become one chunk each.
    batch_size : int, default 1000
        Images per chunk, so per task and per model call: the chunks are
        ``images[0:batch_size]``, ``images[batch_size:2 * batch_size]``, ...,
        the last one shorter when ``batch_size`` does not divide N.
    kernel_threads : int, optional
        fastconv kernel threads in each Dask worker process. Default: the
        worker's share of its host's cores, ``max(1, cores // task slots on
        the host)``. Not applied in this process (synchronous or threaded
        scheduler), where ``fastconv.set_num_threads`` holds.

    Returns
    -------
    dask.array.Array, shape (N, ...)
        Lazy: ``.compute()`` runs on the active scheduler. Chunks along axis 0
        are the batches; the dtype is the model's output dtype. Equal, bit for
        bit, to ``np.concatenate([model(images[i:i + batch_size]) for i in
        range(0, N, batch_size)])`` with the model in eval mode (empty, without
        running the model on an empty batch, when N is 0).

    Raises
    ------
    TypeError
        ``model`` is not a fastconv Module, ``images`` is not a float array,
        or ``batch_size`` / ``kernel_threads`` is not an int.
    ValueError
        ``images`` is not 4-D, ``batch_size`` or ``kernel_threads`` is below
        1, or the model does not map (1, C, H, W) to (1, ...) (it is run once
        here on one zero image, in eval mode, to learn the output's shape and
        dtype).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.dask import predict
    >>> from fastconv.models import LeNet5
    >>> net = LeNet5(rng=0)
    >>> images = np.zeros((5, 1, 28, 28), np.float32)
    >>> logits = predict(net, images, batch_size=2)
    >>> logits
    dask.array<fastconv-predict, shape=(5, 10), dtype=float32, chunksize=(2, 10), chunktype=numpy.ndarray>
    >>> logits.compute(scheduler="sync").shape
    (5, 10)
    >>> net.training  # the model passed in is left as it was
    True
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a fastconv.nn.Module, got {type(model).__name__}")
    batch_size = as_index(batch_size, "batch_size", 1)
    if kernel_threads is not None:
        kernel_threads = as_index(kernel_threads, "kernel_threads", 1)
    x = _as_batches(images, batch_size)
    shipped = _ShippedModel.of(model)
    meta = _output_meta(_ShippedModel(shipped.blob).model, x)
    if x.shape[0] == 0:  # no batch to run (a model may not take an empty one)
        return da.from_array(np.empty((0, *meta.shape[1:]), dtype=meta.dtype))
    model_key = dask.delayed(shipped, name=f"fastconv-model-{shipped.token}", pure=True)
    out_axes = "".join(chr(ord("i") + k) for k in range(meta.ndim - 1))  # "i", "j", ...
    name = "fastconv-predict-" + dask.base.tokenize(shipped.token, x.name, kernel_threads)
    return da.blockwise(
        _predict_block, "n" + out_axes, x, "nchw", model_key, None, kernel_threads, None,
        new_axes=dict(zip(out_axes, meta.shape[1:])), concatenate=True,
        meta=np.empty((0,) * meta.ndim, dtype=meta.dtype), name=name,
    )


# --------------------------------------------------------------------- schedulers


@contextlib.contextmanager
def client(address: str | None = None, *, n_workers: int | None = None,
           threads_per_worker: int = 1, timeout: float | None = None
           ) -> Iterator[distributed.Client]:
    """A ``distributed.Client``: on a new LocalCluster, or connected to a scheduler.

    Parameters
    ----------
    address : str, optional
        None or ``"local"``: start a ``LocalCluster`` of worker processes
        (``processes=True``, dashboard on a free port) on this machine, closed on exit.
        Otherwise the address of a running scheduler, e.g.
        ``"tcp://10.0.0.5:8786"`` (``dask scheduler`` prints it); the cluster
        is left running, only the connection is closed on exit.
    n_workers : int, optional
        Worker processes of the LocalCluster; default: one per core this
        process may use. Ignored with an address.
    threads_per_worker : int, default 1
        Dask threads (tasks at a time) per worker of the LocalCluster. With 1,
        each worker's fastconv kernels get ``cores // n_workers`` threads.
        Ignored with an address.
    timeout : float, optional
        Seconds to wait for the connection to the scheduler (default: Dask's
        ``distributed.comm.timeouts.connect``, 30 s).

    Yields
    ------
    distributed.Client
        Also made the default scheduler while the block runs, so
        ``predict(...).compute()`` runs on it.

    Raises
    ------
    ImportError
        ``distributed`` is not installed.
    OSError, TimeoutError
        The scheduler cannot be reached in time.

    Examples
    --------
    Not run here (it starts processes)::

        with fastconv.dask.client(n_workers=2) as c:       # a LocalCluster
            logits = predict(net, images, 1000).compute()
        with fastconv.dask.client("tcp://10.0.0.5:8786"):  # a running cluster
            logits = predict(net, images, 1000).compute()

    >>> from fastconv.dask import client
    >>> callable(client)
    True
    """
    from distributed import Client, LocalCluster

    options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    if address is not None and address != "local":
        with Client(address, **options) as connection:
            yield connection
        return
    n_workers = available_cpus() if n_workers is None else as_index(n_workers, "n_workers", 1)
    threads_per_worker = as_index(threads_per_worker, "threads_per_worker", 1)
    with LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                      processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, \
            Client(cluster, **options) as connection:
        yield connection


def _check_scheduler(scheduler: str | None) -> None:
    if scheduler is None or scheduler == "local" or scheduler in _LOCAL_SCHEDULERS:
        return
    if not isinstance(scheduler, str) or ":" not in scheduler:
        raise ValueError(
            f"scheduler must be None, 'local', one of {', '.join(map(repr, _LOCAL_SCHEDULERS))} "
            f"or a scheduler address such as 'tcp://host:8786', got {scheduler!r}")


def predict_numpy(model: Module, images: ArrayLike | da.Array,
                  batch_size: int = DEFAULT_BATCH_SIZE, *, scheduler: str | None = None,
                  n_workers: int | None = None, threads_per_worker: int = 1,
                  kernel_threads: int | None = None, timeout: float | None = None
                  ) -> NDArray[Any]:
    """:func:`predict`, computed: the outputs as a NumPy array.

    Parameters
    ----------
    model, images, batch_size, kernel_threads
        As for :func:`predict`.
    scheduler : str, optional
        Where the batches run:

        - None: the active Dask scheduler (a ``distributed.Client`` made
          earlier, else Dask's default, the threaded scheduler);
        - ``"sync"`` (or ``"synchronous"``, ``"single-threaded"``): one batch
          after another in this process; ``"threads"`` (``"threading"``): a
          thread pool in this process;
        - ``"local"``: a new ``LocalCluster`` of ``n_workers`` processes with
          ``threads_per_worker`` threads each, closed afterwards;
        - an address such as ``"tcp://10.0.0.5:8786"``: that cluster.
    n_workers, threads_per_worker
        The LocalCluster's size, with ``scheduler="local"`` (see :func:`client`).
    timeout : float, optional
        With ``"local"`` or an address: seconds to wait for the connection and
        then for the result (default: no limit on the result).

    Returns
    -------
    ndarray, shape (N, ...)
        The model's outputs, equal bit for bit whatever the scheduler.

    Raises
    ------
    ValueError
        An unknown scheduler name, or what :func:`predict` raises.
    TimeoutError
        The result did not come within ``timeout`` seconds.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.dask import predict_numpy
    >>> from fastconv.models import LeNet5
    >>> net = LeNet5(rng=0).eval()
    >>> images = np.ones((3, 1, 28, 28), np.float32)
    >>> logits = predict_numpy(net, images, batch_size=2, scheduler="sync")
    >>> type(logits).__name__, logits.shape, np.array_equal(logits[2:], net(images[2:]))
    ('ndarray', (3, 10), True)
    """
    _check_scheduler(scheduler)
    result = predict(model, images, batch_size, kernel_threads=kernel_threads)
    if scheduler is None or scheduler in _LOCAL_SCHEDULERS:
        # From this thread, BLAS's limit reaches the threaded scheduler's threads too.
        with single_threaded_blas():
            return np.asarray(result.compute(scheduler=scheduler))
    with client(scheduler, n_workers=n_workers, threads_per_worker=threads_per_worker,
                timeout=timeout) as connection:
        return np.asarray(connection.compute(result).result(timeout=timeout))


# --------------------------------------------------------------------- lazy inputs


class _IdxFile:
    """An uncompressed IDX file as a lazy array: each read memory-maps the file.

    Pickles as its path and layout only, so tasks read their own slices.
    """

    def __init__(self, path: str) -> None:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(4 + 4 * 255)  # the longest header: 255 dimensions
        self.path = path
        shape, self.file_dtype, self.offset = data._idx_layout(path, head, size)
        self.shape = tuple(shape)
        self.dtype = self.file_dtype.newbyteorder("=")
        self.ndim = len(self.shape)
        self._stamp = (size, os.stat(path).st_mtime_ns)

    def __getitem__(self, key: Any) -> NDArray[Any]:
        mapped = np.memmap(self.path, dtype=self.file_dtype, mode="r", offset=self.offset,
                           shape=self.shape)
        return np.array(mapped[key], dtype=self.dtype)

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return (type(self).__name__, self.path, self.offset, self._stamp)


def _normalization(normalization: Normalization) -> tuple[float | None, float | None]:
    if normalization is None:
        return None, None
    if isinstance(normalization, str):
        if normalization not in data.NORMALIZATION:
            raise ValueError(f"normalization must be one of {sorted(data.NORMALIZATION)}, "
                             f"(mean, std) or None, got {normalization!r}")
        return data.NORMALIZATION[normalization]
    mean, std = normalization
    return float(mean), float(std)


def _prepared(images: da.Array, normalization: Normalization) -> da.Array:
    """uint8 (N, H, W) chunks -> float32 (N, 1, H, W), as ``fastconv.data.to_float``."""
    mean, std = _normalization(normalization)
    n_chunks, h_chunks, w_chunks = images.chunks
    return da.map_blocks(data.to_float, images, mean, std, new_axis=1,
                         chunks=(n_chunks, (1,), h_chunks, w_chunks),
                         meta=np.empty((0, 0, 0, 0), np.float32))


def _check_uint8_images(shape: tuple[int, ...], dtype: np.dtype[Any], name: str) -> None:
    if len(shape) != 3 or dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 images (N, H, W), got shape {shape} "
                         f"of {dtype}")


def from_idx(path: str | os.PathLike[str], normalization: Normalization,
             batch_size: int = DEFAULT_BATCH_SIZE) -> da.Array:
    """The images of an IDX file as a lazy, normalised dask array (N, 1, H, W).

    Parameters
    ----------
    path : str or os.PathLike
        A uint8 IDX image file (N, H, W), such as MNIST's
        ``t10k-images-idx3-ubyte``. Uncompressed, it is memory-mapped: each
        chunk reads its own images when computed, on the worker (which must see
        the file at this path). Gzip-compressed (``.gz``), it is decompressed
        and checked here, held in memory as uint8, and sent with the graph.
    normalization : str, (mean, std) or None
        A dataset name of ``fastconv.data.NORMALIZATION`` (``"mnist"``,
        ``"fashion-mnist"``: what training used), an explicit (mean, std) of
        the images scaled to [0, 1], or None for [0, 1] only.
    batch_size : int, default 1000
        Images per chunk; pass :func:`predict`'s ``batch_size`` so that it
        needs no rechunking.

    Returns
    -------
    dask.array.Array of float32, shape (N, 1, H, W)
        Equal, chunk by chunk, to ``fastconv.data.to_float(read_idx(path),
        mean, std)`` (the trainer's ``prepare``).

    Raises
    ------
    ValueError
        A corrupt IDX file (as ``fastconv.data.read_idx`` says), one that does
        not hold uint8 (N, H, W) images, an unknown normalization, or a bad
        ``batch_size``.
    OSError
        The file cannot be read.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from fastconv.dask import from_idx
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "images-idx3-ubyte")
    >>> header = bytes([0, 0, 0x08, 3, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 2])  # uint8 (5, 2, 2)
    >>> with open(path, "wb") as f:
    ...     _ = f.write(header + bytes(range(0, 200, 10)))
    >>> x = from_idx(path, None, batch_size=2)
    >>> x.shape, x.chunks[0], x.dtype
    ((5, 1, 2, 2), (2, 2, 1), dtype('float32'))
    >>> x[4].compute(scheduler="sync") * 255  # the file's last image, scaled to [0, 1]
    array([[[160., 170.],
            [180., 190.]]], dtype=float32)
    >>> folder.cleanup()
    """
    batch_size = as_index(batch_size, "batch_size", 1)
    name = os.fspath(path)
    source: Any
    with open(name, "rb") as f:
        compressed = f.read(2) == b"\x1f\x8b" or name.endswith(".gz")
    source = data.read_idx(name) if compressed else _IdxFile(name)
    _check_uint8_images(source.shape, source.dtype, name)
    return _prepared(da.from_array(source, chunks=(batch_size, -1, -1),
                                   meta=np.empty((0, 0, 0), np.uint8)), normalization)


def _read_images(paths: NDArray[Any], height: int, width: int) -> NDArray[np.uint8]:
    """The image files ``paths`` as uint8 (n, height, width), in 8-bit grayscale."""
    from PIL import Image

    out = np.empty((len(paths), height, width), np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            if image.size != (width, height):
                raise ValueError(f"{path}: image of {image.size[0]}x{image.size[1]} pixels, "
                                 f"expected {width}x{height} like the first image")
            out[i] = np.asarray(image.convert("L"))
    return out


def from_image_folder(folder: str | os.PathLike[str], normalization: Normalization, *,
                      pattern: str = "*.png", batch_size: int = DEFAULT_BATCH_SIZE
                      ) -> tuple[da.Array, list[str]]:
    """The image files of a folder as a lazy, normalised dask array (N, 1, H, W).

    Needs Pillow. Each chunk reads its files when computed, on the worker
    (which must see the folder at this path).

    Parameters
    ----------
    folder : str or os.PathLike
        The folder; its files matching ``pattern`` are read in sorted order.
    normalization : str, (mean, std) or None
        As for :func:`from_idx`.
    pattern : str, default "*.png"
        A glob pattern of file names in ``folder`` (any format Pillow reads).
    batch_size : int, default 1000
        Images per chunk, as for :func:`from_idx`.

    Returns
    -------
    images : dask.array.Array of float32, shape (N, 1, H, W)
        Each image converted to 8-bit grayscale (Pillow's ``convert("L")``),
        then as ``fastconv.data.to_float``. H x W is the first image's size;
        every image must have it (no resizing).
    paths : list of str
        The N files, in the order of ``images``.

    Raises
    ------
    ImportError
        Pillow is not installed.
    FileNotFoundError
        No file matches.
    ValueError
        An unknown normalization or a bad ``batch_size``; when computed, an
        image of another size (naming its file).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> from fastconv.dask import from_image_folder
    >>> folder = tempfile.TemporaryDirectory()
    >>> for k in range(3):
    ...     Image.fromarray(np.full((28, 28), 51 * k, np.uint8)).save(
    ...         os.path.join(folder.name, f"{k}.png"))
    >>> x, paths = from_image_folder(folder.name, None, batch_size=2)
    >>> x.shape, [os.path.basename(p) for p in paths]
    ((3, 1, 28, 28), ['0.png', '1.png', '2.png'])
    >>> x[:, 0, 0, 0].compute(scheduler="sync")
    array([0. , 0.2, 0.4], dtype=float32)
    >>> folder.cleanup()
    """
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(f"from_image_folder needs Pillow ({exc}): pip install pillow") from exc
    batch_size = as_index(batch_size, "batch_size", 1)
    paths = sorted(glob.glob(os.path.join(glob.escape(os.fspath(folder)), pattern)))
    if not paths:
        raise FileNotFoundError(f"no file matches {pattern!r} in {os.fspath(folder)!r}")
    with Image.open(paths[0]) as first:
        width, height = first.size
    names = da.from_array(np.array(paths, dtype=object), chunks=batch_size)
    images = names.map_blocks(_read_images, height, width, new_axis=[1, 2],
                              chunks=(names.chunks[0], (height,), (width,)),
                              meta=np.empty((0, 0, 0), np.uint8))
    return _prepared(images, normalization), paths

