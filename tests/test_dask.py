"""Tests for fastconv.dask: batch inference equals the single-process batches, bit for bit.

The reference is always the plain loop ``model(images[i:i + batch_size])`` in this
process. The distributed tests share one LocalCluster of 2 worker processes (1 thread
each) per module; every wait on it has a timeout, and a watchdog ends the run with
the stacks printed if a test hangs anyway.
"""

import faulthandler
import gzip
import logging
import os
import signal
import sys

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
cloudpickle = pytest.importorskip("cloudpickle")

from threadpoolctl import threadpool_limits  # noqa: E402

import fastconv  # noqa: E402
from fastconv import data, nn  # noqa: E402
from fastconv.dask import (  # noqa: E402
    from_idx,
    from_image_folder,
    predict,
    predict_numpy,
)
from fastconv.models import LeNet5  # noqa: E402

# Classes and functions of this file reach the workers by value: the workers cannot
# import the test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

N = 60
#: seconds any one wait on the cluster may take
TIMEOUT = 60
#: seconds a distributed test may take before the watchdog ends the run
WATCHDOG = 120


def batched(model, images, batch_size):
    """The single-process reference: the model on each batch in turn, in this thread."""
    return np.concatenate([model(images[i:i + batch_size])
                           for i in range(0, len(images), batch_size)])


@pytest.fixture(scope="module")
def net():
    return LeNet5(rng=0).eval()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(7).standard_normal((N, 1, 28, 28)).astype(np.float32)


# --------------------------------------------------------------------- in this process


# 23 and 60: batches large enough that a multi-threaded BLAS would change Linear's bits.
@pytest.mark.parametrize("batch_size", [4, 7, 15, 23, 60, 100])
def test_numpy_input_equals_batches(net, images, batch_size):
    result = predict(net, images, batch_size)
    sizes = [min(batch_size, N - i) for i in range(0, N, batch_size)]
    assert result.chunks == (tuple(sizes), (10,))
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result.compute(scheduler="sync"),
                                  batched(net, images, batch_size))


@pytest.mark.parametrize("batch_size", [12, 23])
def test_dask_input_rechunked_to_batches(net, images, batch_size):
    # Chunks that cut both the batch and the image axes: rechunked to whole batches.
    lazy = da.from_array(images, chunks=(7, 1, 14, 28))
    result = predict(net, lazy, batch_size)
    assert result.chunks[0] == predict(net, images, batch_size).chunks[0]
    np.testing.assert_array_equal(result.compute(scheduler="sync"),
                                  batched(net, images, batch_size))


@pytest.mark.parametrize("batch_size", [6, 23])
def test_threaded_scheduler(net, images, batch_size):
    expected = batched(net, images, batch_size)
    result = predict_numpy(net, images, batch_size, scheduler="threads")
    np.testing.assert_array_equal(result, expected)
    with threadpool_limits(1, user_api="blas"):  # what the module docstring advises
        lazy = predict(net, images, batch_size).compute(scheduler="threads")
    np.testing.assert_array_equal(lazy, expected)


def test_result_does_not_depend_on_kernel_threads(net, images):
    expected = batched(net, images, 23)
    for n in (1, 2, 3):
        with fastconv.threads(n):
            np.testing.assert_array_equal(predict_numpy(net, images, 23, scheduler="sync"),
                                          expected, err_msg=f"{n} threads")


def test_model_runs_in_eval_mode_and_is_left_alone(images):
    net = nn.Sequential(nn.Flatten(), nn.Dropout(0.5, rng=0), nn.Linear(784, 3, rng=0))
    assert net.training
    result = predict_numpy(net, images, 16, scheduler="sync")
    assert net.training  # still in training mode
    net.eval()
    np.testing.assert_array_equal(result, batched(net, images, 16))


def test_training_state_is_not_shipped(images):
    # Gradients and the activations kept for backward stay behind: the graph does
    # not grow after a forward over many images.
    net = LeNet5(rng=0)
    before = len(cloudpickle.dumps(dict(predict(net, images[:1], 1).__dask_graph__())))
    net(np.zeros((200, 1, 28, 28), np.float32))
    after = len(cloudpickle.dumps(dict(predict(net, images[:1], 1).__dask_graph__())))
    weights = sum(p.data.nbytes for p in net.parameters())
    assert after == before
    assert weights < before < weights + 100_000  # the weights once, no gradients


def test_model_is_one_key_of_the_graph(net, images):
    graph = dict(predict(net, images, 10).__dask_graph__())
    holders = [key for key in graph if "fastconv-model" in str(key)]
    tasks = [key for key in graph if "fastconv-predict" in str(key)]
    assert len(holders) == 1 and len(tasks) == 6
    assert all(holders[0] in dask.core.get_dependencies(graph, key) for key in tasks)


def test_output_of_any_shape(images):
    # Not only logits: a model whose output keeps image axes.
    net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0)).eval()
    result = predict(net, images, 25)
    assert result.shape == (N, 2, 26, 26) and result.chunks[1:] == ((2,), (26,), (26,))
    np.testing.assert_array_equal(result.compute(scheduler="sync"), batched(net, images, 25))


def test_no_images(net, images):
    result = predict(net, images[:0], 4)
    assert result.shape == (0, 10) and result.dtype == np.float32
    assert result.compute(scheduler="sync").shape == (0, 10)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(model=object()), TypeError, "model must be a fastconv.nn.Module"),
    (dict(images=np.zeros((2, 28, 28), np.float32)), ValueError, r"images must have shape \(N, C, H, W\)"),
    (dict(images=np.zeros((2, 1, 28, 28), np.uint8)), TypeError, "images must be float32 or float64"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(batch_size=2.0), TypeError, "batch_size must be an int"),
    (dict(batch_size=True), TypeError, "batch_size must be an int"),
    (dict(kernel_threads=0), ValueError, "kernel_threads must be >= 1"),
    (dict(images=np.zeros((2, 3, 28, 28), np.float32)), ValueError, "must have 1 channels"),
])
def test_predict_rejects_bad_input(net, kwargs, error, match):
    call = dict(model=net, images=np.zeros((2, 1, 28, 28), np.float32), batch_size=1)
    call.update(kwargs)
    with pytest.raises(error, match=match):
        predict(**call)


@pytest.mark.parametrize("scheduler", ["processes", "thread", 3])
def test_predict_numpy_rejects_unknown_scheduler(net, scheduler):
    with pytest.raises(ValueError, match="scheduler must be"):
        predict_numpy(net, np.zeros((2, 1, 28, 28), np.float32), scheduler=scheduler)


# --------------------------------------------------------------------- lazy inputs


def write_idx(path, array, compress=False):
    """An IDX file of uint8 ``array`` (written plainly here, not by fastconv)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())
    return path


@pytest.fixture(scope="module")
def raw_images():
    return np.random.default_rng(3).integers(0, 256, (37, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("normalization", ["fashion-mnist", (0.5, 0.25), None])
def test_from_idx_equals_prepared_images(tmp_path, raw_images, compress, normalization):
    path = write_idx(tmp_path / ("x-idx3-ubyte" + (".gz" if compress else "")), raw_images,
                     compress)
    lazy = from_idx(path, normalization, batch_size=10)
    assert lazy.shape == (37, 1, 28, 28) and lazy.chunks[0] == (10, 10, 10, 7)
    mean_std = data.NORMALIZATION[normalization] if isinstance(normalization, str) else (
        normalization or (None, None))
    expected = data.to_float(raw_images, *mean_std)  # as the trainer's prepare
    np.testing.assert_array_equal(lazy.compute(scheduler="sync"), expected)


def test_from_idx_raw_file_stays_on_disk(tmp_path):
    # The graph holds the file's path, not its bytes.
    big = np.random.default_rng(0).integers(0, 256, (2000, 28, 28), dtype=np.uint8)
    lazy = from_idx(write_idx(tmp_path / "big-idx3-ubyte", big), "mnist", batch_size=500)
    assert len(cloudpickle.dumps(dict(lazy.__dask_graph__()))) < big.nbytes // 20
    np.testing.assert_array_equal(lazy[1500:].compute(scheduler="sync"),
                                  data.to_float(big[1500:], *data.NORMALIZATION["mnist"]))


@pytest.mark.parametrize("case, match", [
    ("truncated", "truncated IDX file"),
    ("labels", r"expected uint8 images \(N, H, W\)"),
    ("normalization", "normalization must be one of"),
])
def test_from_idx_rejects_bad_files(tmp_path, raw_images, case, match):
    path = tmp_path / "x-idx3-ubyte"
    normalization = "mnist"
    if case == "labels":
        write_idx(path, np.arange(5))
    else:
        write_idx(path, raw_images)
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:-1])
    if case == "normalization":
        normalization = "cifar"
    with pytest.raises(ValueError, match=match):
        from_idx(path, normalization)


def test_from_idx_feeds_predict(tmp_path, net, raw_images):
    lazy = from_idx(write_idx(tmp_path / "x-idx3-ubyte", raw_images), "fashion-mnist", 16)
    prepared = data.to_float(raw_images, *data.NORMALIZATION["fashion-mnist"])
    np.testing.assert_array_equal(predict_numpy(net, lazy, 16, scheduler="sync"),
                                  batched(net, prepared, 16))


def test_from_image_folder(tmp_path, raw_images):
    image = pytest.importorskip("PIL.Image")
    for k in range(7):
        image.fromarray(raw_images[k]).save(tmp_path / f"img{k:02d}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    lazy, paths = from_image_folder(tmp_path, "mnist", batch_size=3)
    assert [os.path.basename(p) for p in paths] == [f"img{k:02d}.png" for k in range(7)]
    assert lazy.shape == (7, 1, 28, 28) and lazy.chunks[0] == (3, 3, 1)
    np.testing.assert_array_equal(lazy.compute(scheduler="sync"),
                                  data.to_float(raw_images[:7], *data.NORMALIZATION["mnist"]))


def test_from_image_folder_errors(tmp_path):
    image = pytest.importorskip("PIL.Image")
    with pytest.raises(FileNotFoundError, match="no file matches"):
        from_image_folder(tmp_path, None)
    image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "a.png")
    image.fromarray(np.zeros((28, 27), np.uint8)).save(tmp_path / "b.png")
    lazy, _ = from_image_folder(tmp_path, None)
    with pytest.raises(ValueError, match=r"b\.png: image of 27x28 pixels, expected 28x28"):
        lazy.compute(scheduler="sync")


# --------------------------------------------------------------------- on a LocalCluster


@pytest.fixture
def watchdog():
    """End the whole run, printing every stack, if a test outlives WATCHDOG seconds."""
    faulthandler.dump_traceback_later(WATCHDOG, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    faulthandler.dump_traceback_later(WATCHDOG, exit=True)  # the start may hang too
    with dask.config.set({"distributed.comm.timeouts.connect": f"{TIMEOUT}s"}):
        local = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
            silence_logs=logging.ERROR)
    faulthandler.cancel_dump_traceback_later()
    try:
        yield local
    finally:
        local.close(timeout=TIMEOUT)


@pytest.fixture
def client(cluster, watchdog):
    distributed = pytest.importorskip("distributed")
    with distributed.Client(cluster, timeout=TIMEOUT) as connection:
        connection.wait_for_workers(2, timeout=TIMEOUT)  # after a killed one restarts
        yield connection


def on_cluster(client, array):
    return client.compute(array).result(timeout=TIMEOUT)


@pytest.mark.parametrize("batch_size", [15, 23])
def test_cluster_equals_batches(client, net, images, batch_size):
    expected = batched(net, images, batch_size)
    np.testing.assert_array_equal(on_cluster(client, predict(net, images, batch_size)), expected)
    lazy = da.from_array(images, chunks=(7, 1, 28, 28))
    np.testing.assert_array_equal(on_cluster(client, predict(net, lazy, batch_size)), expected)


def test_cluster_kernel_threads(client, net, images):
    from fastconv._config import available_cpus

    expected = batched(net, images, 23)
    np.testing.assert_array_equal(on_cluster(client, predict(net, images, 23)), expected)
    # Default: each worker's share of the host's 2 task slots (2 workers x 1 thread).
    report = client.run(lambda: (fastconv.get_num_threads(), available_cpus()))
    assert len(report) == 2
    assert all(threads == max(1, cpus // 2) for threads, cpus in report.values()), report
    result = on_cluster(client, predict(net, images, 23, kernel_threads=3))
    assert set(client.run(fastconv.get_num_threads).values()) == {3}
    np.testing.assert_array_equal(result, expected)


class CountingLeNet(LeNet5):
    """LeNet5 that appends its process id to a file each time it is unpickled."""

    def __init__(self, log):
        super().__init__(rng=0)
        self.log = str(log)

    def __setstate__(self, state):
        with open(state["log"], "a") as f:
            f.write(f"{os.getpid()}\n")
        self.__dict__.update(state)


def test_model_is_built_once_per_worker(client, images, tmp_path):
    log = tmp_path / "unpickled"
    net = CountingLeNet(log)
    result = on_cluster(client, predict(net, images, 5))  # 12 chunks on 2 workers
    np.testing.assert_array_equal(result, batched(net.eval(), images, 5))
    pids = [int(line) for line in log.read_text().split()]
    worker_pids = set(client.run(os.getpid).values())
    # Here once (predict learns the output's shape), each worker at most once; the
    # scheduler, in this process, only sees bytes.
    assert pids.count(os.getpid()) == 1, pids
    assert set(pids) <= worker_pids | {os.getpid()}, pids
    assert all(pids.count(pid) == 1 for pid in worker_pids & set(pids)), pids
    assert worker_pids & set(pids), pids


def test_predict_numpy_by_address(cluster, watchdog, net, images):
    result = predict_numpy(net, images, 23, scheduler=cluster.scheduler_address,
                           timeout=TIMEOUT)
    np.testing.assert_array_equal(result, batched(net, images, 23))


def test_predict_numpy_on_new_local_cluster(watchdog, net, images):
    pytest.importorskip("distributed")
    # One worker running 2 tasks at a time.
    result = predict_numpy(net, images, 23, scheduler="local", n_workers=1,
                           threads_per_worker=2, timeout=TIMEOUT)
    np.testing.assert_array_equal(result, batched(net, images, 23))


class KillOnce(LeNet5):
    """LeNet5 whose first forward anywhere (marked by a file) kills its own process."""

    def __init__(self, marker):
        super().__init__(rng=0)
        self.marker = str(marker)

    def forward(self, x, return_activations=False):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return super().forward(x, return_activations)
        os.kill(os.getpid(), signal.SIGKILL)


def test_worker_killed_mid_run(client, images, tmp_path):
    marker = tmp_path / "killed"
    net = KillOnce(marker)
    marker.touch()  # predict runs the model once here, on one image: not this process
    lazy = predict(net, images, 10)
    marker.unlink()  # armed: the first chunk to run kills its worker
    result = on_cluster(client, lazy)
    assert marker.exists()  # a worker did die; its chunk ran again elsewhere
    np.testing.assert_array_equal(result, batched(net.eval(), images, 10))
