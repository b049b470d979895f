"""Tests of fastconv.data: IDX reading, dataset resolution, downloads, batches.

No test needs the internet: downloads are served by a local HTTP server on
127.0.0.1 and the checksums are patched to those of small synthetic files. The
real Fashion-MNIST files are checked where Debian's dataset-fashion-mnist is
installed.
"""

import functools
import gzip
import hashlib
import http.server
import os
import re
import socket
import struct
import threading

import numpy as np
import pytest

from fastconv import data

FASHION_DIR = "/usr/share/datasets/fashion-mnist"

# Published SHA-256 of the decompressed Fashion-MNIST files (kept here independently
# of fastconv.data so a typo in its table is caught).
FASHION_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

TYPE_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")


# ----------------------------------------------------------------------------- helpers


def idx_bytes(array):
    """The IDX encoding of ``array`` (written plainly, independent of fastconv)."""
    array = np.asarray(array)
    kind = array.dtype.kind + str(array.dtype.itemsize)
    header = bytes([0, 0, TYPE_CODES[kind], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_file(path, payload, gz=None):
    """Write ``payload`` to ``path``, gzip-compressed when the name ends in .gz."""
    path = str(path)
    if gz is None:
        gz = path.endswith(".gz")
    with open(path, "wb") as f:
        f.write(gzip.compress(payload) if gz else payload)
    return path


def synthetic_split(n, label=None, seed=0):
    """Small (images, labels) of the MNIST format: uint8 (n, 28, 28) and (n,)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    if label is None:
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    else:
        labels = np.full(n, label, dtype=np.uint8)
    return images, labels


def write_split(folder, images, labels, names=TRAIN, suffix=".gz"):
    """Write a split's two IDX files into ``folder`` (created)."""
    os.makedirs(folder, exist_ok=True)
    return [write_file(os.path.join(folder, name + suffix), idx_bytes(a))
            for name, a in zip(names, (images, labels))]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No $FASTCONV_DATA, a user cache and a system folder under tmp_path, no proxy."""
    for var in ("FASTCONV_DATA", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", [str(tmp_path / "system")])
    return tmp_path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client hanging up early (an oversized download refused) is expected


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over tmp_path/www; yields (root, base_url, requested paths)."""
    root = tmp_path / "www"
    root.mkdir()
    requests = []

    class Handler(_QuietHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    httpd = _QuietServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}/", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def serve_split(root, folder, images, labels):
    """Put a split's .gz files under root/folder; their (sha256, size) by name."""
    sums = {}
    for name, array in zip(TRAIN, (images, labels)):
        payload = idx_bytes(array)
        os.makedirs(root / folder, exist_ok=True)
        write_file(root / folder / (name + ".gz"), payload)
        sums[name] = (hashlib.sha256(payload).hexdigest(), len(payload))
    return sums


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leftovers(folder):
    return [f for f in os.listdir(folder) if f.endswith(".part")] if os.path.isdir(folder) else []


# ----------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (2, 1, 2, 3)])
@pytest.mark.parametrize("kind", list(TYPE_CODES))
def test_read_idx_round_trip(tmp_path, kind, shape, gz):
    rng = np.random.default_rng(1)
    dtype = np.dtype(kind)
    if dtype.kind == "f":
        array = rng.standard_normal(shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    path = write_file(tmp_path / ("x.idx" + (".gz" if gz else "")), idx_bytes(array))
    result = data.read_idx(path)
    assert result.dtype == dtype and result.dtype.isnative
    assert result.shape == shape
    assert result.flags.writeable
    np.testing.assert_array_equal(result, array)


def test_read_idx_gzip_detected_by_magic_and_empty(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = write_file(tmp_path / "noext", idx_bytes(array), gz=True)
    np.testing.assert_array_equal(data.read_idx(path), array)
    payload = idx_bytes(np.zeros((0, 28, 28), np.uint8))
    empty = data.read_idx(write_file(tmp_path / "empty", payload))
    assert empty.shape == (0, 28, 28) and empty.dtype == np.uint8


def _corrupt_cases():
    good = idx_bytes(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    gz = gzip.compress(good)
    flipped = bytearray(gz)
    flipped[len(gz) // 2] ^= 0xFF
    return {
        "truncated": ("x.idx", good[:-1]),
        "truncated-header": ("x.idx", good[:9]),
        "over-long": ("x.idx", good + b"\0"),
        "bad-magic": ("x.idx", b"\x01" + good[1:]),
        "bad-type": ("x.idx", good[:2] + b"\x0a" + good[3:]),
        "no-dimensions": ("x.idx", b"\0\0\x08\0"),
        "too-short": ("x.idx", b"\0\0"),
        "empty": ("x.idx", b""),
        "gzip-corrupt": ("x.idx.gz", bytes(flipped)),
        "gzip-truncated": ("x.idx.gz", gz[:-10]),
        "gzip-not-gzip": ("x.idx.gz", good),
        "gzip-truncated-idx": ("x.idx.gz", gzip.compress(good[:-2])),
    }


@pytest.mark.parametrize("case", list(_corrupt_cases()))
def test_read_idx_corrupt_file_names_it(tmp_path, case):
    name, payload = _corrupt_cases()[case]
    path = write_file(tmp_path / f"{case}-{name}", payload, gz=False)
    with pytest.raises(ValueError, match=re.escape(os.path.basename(path))):
        data.read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.read_idx(tmp_path / "nope.gz")


# ----------------------------------------------------------------------------- resolution


def test_resolution_order(isolated, monkeypatch):
    tmp = isolated
    env_root = tmp / "env"
    places = {
        "data_dir": tmp / "given",
        "env_named": env_root / "mnist",
        "env_root": env_root,
        "cache": tmp / "cache" / "fastconv" / "mnist",
        "system": tmp / "system" / "mnist",
    }
    for label, (key, folder) in enumerate(places.items()):
        images, labels = synthetic_split(3, label=label, seed=label)
        # vary the spellings: raw, .gz, and the dotted names
        names = TRAIN if label % 2 else [n.replace("-idx", ".idx") for n in TRAIN]
        write_split(folder, images, labels, names=names, suffix=".gz" if label < 3 else "")
    monkeypatch.setenv("FASTCONV_DATA", str(env_root))

    for label, (key, folder) in enumerate(places.items()):
        data_dir = places["data_dir"] if key == "data_dir" else tmp / "nothing-here"
        images_path, labels_path = data.locate_dataset("mnist", "train", data_dir=data_dir,
                                                       download=False)
        assert os.path.dirname(images_path) == str(folder), key
        assert os.path.dirname(labels_path) == str(folder), key
        _, labels = data.load_dataset("MNIST", "train", data_dir=data_dir, download=False)
        assert labels.dtype == np.int64 and labels.tolist() == [label] * 3, key
        # remove this place's labels: the next place must win
        os.remove(labels_path)
    with pytest.raises(data.DatasetNotFoundError):
        data.load_dataset("mnist", "train", download=False)


def test_data_dir_named_subfolder_and_half_folders(isolated):
    tmp = isolated
    images, labels = synthetic_split(4, label=7)
    write_split(tmp / "given" / "fashion-mnist", images, labels)
    # a folder holding only the images is skipped
    write_split(tmp / "given", images, labels, names=(TRAIN[0], "unrelated"))
    x, y = data.load_dataset("Fashion_MNIST", "train", data_dir=tmp / "given", download=False)
    np.testing.assert_array_equal(x, images)
    assert y.tolist() == [7] * 4
    # the test split is not there
    with pytest.raises(data.DatasetNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load_dataset("fashion-mnist", "test", data_dir=tmp / "given", download=False)


@pytest.mark.parametrize("name, split", [("cifar10", "train"), ("mnist", "validation")])
def test_unknown_name_or_split(isolated, name, split):
    with pytest.raises(ValueError, match="unknown"):
        data.load_dataset(name, split, download=False)


@pytest.mark.parametrize("problem", ["count", "range", "image-shape", "label-shape", "dtype"])
def test_inconsistent_files_name_them(isolated, problem):
    images, labels = synthetic_split(5)
    if problem == "count":
        labels = labels[:4]
    elif problem == "range":
        labels[2] = 10
    elif problem == "image-shape":
        images = images[:, :27]
    elif problem == "label-shape":
        labels = labels[:, None]
    else:
        images = images.astype(np.int16)
    folder = isolated / "given"
    paths = write_split(folder, images, labels)
    with pytest.raises(ValueError) as info:
        data.load_dataset("mnist", "train", data_dir=folder, download=False)
    message = str(info.value)
    wanted = {"count": paths, "range": paths[1:], "label-shape": paths[1:]}.get(problem, paths[:1])
    for path in wanted:
        assert path in message


def test_not_found_offline_lists_places_and_help(isolated, monkeypatch):
    monkeypatch.setenv("FASTCONV_DATA", str(isolated / "env"))
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load_dataset("fashion_mnist", "test", data_dir=isolated / "given", download=False)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    for place in [isolated / "given", isolated / "given" / "fashion-mnist",
                  isolated / "env", isolated / "env" / "fashion-mnist",
                  isolated / "cache" / "fastconv" / "fashion-mnist",
                  isolated / "system" / "fashion-mnist"]:
        assert str(place) in message
    for text in ["apt-get install dataset-fashion-mnist", "--data-dir", "$FASTCONV_DATA",
                 "download=False", "t10k-images-idx3-ubyte"]:
        assert text in message
    assert not (isolated / "cache").exists()  # nothing created without downloading
    mnist_message = ""
    try:
        data.load_dataset("mnist", "train", download=False)
    except data.DatasetNotFoundError as exc:
        mnist_message = str(exc)
    assert "--data-dir" in mnist_message and "apt-get" not in mnist_message


# ----------------------------------------------------------------------------- downloads


@pytest.fixture
def synthetic_mnist(monkeypatch):
    """Synthetic train split; patches fastconv's checksums of the mnist train files."""
    images, labels = synthetic_split(6, seed=3)
    sums = {name: (hashlib.sha256(idx_bytes(a)).hexdigest(), len(idx_bytes(a)))
            for name, a in zip(TRAIN, (images, labels))}
    monkeypatch.setitem(data.SHA256, "mnist", {**data.SHA256["mnist"], **sums})
    return images, labels


def test_download_success_atomic_and_cached(isolated, server, synthetic_mnist, monkeypatch):
    root, url, requests = server
    images, labels = synthetic_mnist
    serve_split(root, "good", images, labels)
    monkeypatch.setitem(data.MIRRORS, "mnist", [url + "good/"])
    replaced = []
    real_replace = os.replace

    def spy_replace(src, dst):
        replaced.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(data.os, "replace", spy_replace)

    x, y = data.load_dataset("mnist", "train")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    cache = isolated / "cache" / "fastconv" / "mnist"
    assert sorted(os.listdir(cache)) == sorted(n + ".gz" for n in TRAIN)
    assert len(replaced) == 2
    for src, dst in replaced:  # a temp file in the same folder, moved into place
        assert os.path.dirname(src) == os.path.dirname(dst) == str(cache)
        assert not os.path.exists(src) and os.path.exists(dst)
    assert len(requests) == 2
    data.load_dataset("mnist", "train")  # now from the cache: no new request
    assert len(requests) == 2


def test_download_only_missing_file_and_progress(isolated, server, synthetic_mnist,
                                                 monkeypatch, capsys):
    root, url, requests = server
    images, labels = synthetic_mnist
    serve_split(root, "good", images, labels)
    cache = isolated / "cache" / "fastconv" / "mnist"
    write_split(cache, images[:0], labels, names=("unused", TRAIN[1]))
    monkeypatch.setitem(data.MIRRORS, "mnist", [url + "good/"])
    monkeypatch.setattr(data, "PROGRESS_MIN_BYTES", 1)
    x, _ = data.load_dataset("mnist", "train")
    np.testing.assert_array_equal(x, images)
    assert requests == [f"/good/{TRAIN[0]}.gz"]
    assert "downloading" in capsys.readouterr().err


def test_download_bad_mirror_then_good(isolated, server, synthetic_mnist, monkeypatch):
    root, url, requests = server
    images, labels = synthetic_mnist
    serve_split(root, "good", images, labels)
    wrong_images, wrong_labels = synthetic_split(6, seed=4)
    serve_split(root, "wrong", wrong_images, wrong_labels)  # valid gzip, wrong checksum
    os.makedirs(root / "garbage")
    for name in TRAIN:
        write_file(root / "garbage" / (name + ".gz"), b"not gzip at all", gz=False)
    monkeypatch.setitem(data.MIRRORS, "mnist",
                        [url + "wrong/", url + "garbage/", url + "missing/", url + "good/"])
    x, y = data.load_dataset("mnist", "train")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    cache = isolated / "cache" / "fastconv" / "mnist"
    assert leftovers(cache) == []
    assert sorted(os.listdir(cache)) == sorted(n + ".gz" for n in TRAIN)
    assert len(requests) == 8


def test_download_all_mirrors_fail(isolated, server, synthetic_mnist, monkeypatch):
    root, url, _ = server
    wrong_images, wrong_labels = synthetic_split(6, seed=4)
    serve_split(root, "wrong", wrong_images, wrong_labels)
    os.makedirs(root / "big")
    noise = np.random.default_rng(0).bytes(300_000)  # more than a 6-image file can be
    for name in TRAIN:
        write_file(root / "big" / (name + ".gz"), noise, gz=False)
    refused = f"http://127.0.0.1:{closed_port()}/"
    mirrors = [url + "missing/", refused, url + "wrong/", url + "big/"]
    monkeypatch.setitem(data.MIRRORS, "mnist", mirrors)
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load_dataset("mnist", "train", data_dir=isolated / "given")
    message = str(info.value)
    for mirror in mirrors:
        for name in TRAIN:
            assert f"{mirror}{name}.gz: " in message
    for text in ["404", "checksum mismatch", "more than", str(isolated / "given"),
                 str(isolated / "system" / "mnist"), "Downloads into", "--data-dir"]:
        assert text in message
    cache = isolated / "cache" / "fastconv" / "mnist"
    assert os.listdir(cache) == []  # neither temp files nor unverified files remain


# ----------------------------------------------------------------------------- real data


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR),
                    reason=f"{FASHION_DIR} missing (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist(isolated, monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", [os.path.dirname(FASHION_DIR)])
    for split, n in [("train", 60000), ("test", 10000)]:
        paths = data.locate_dataset("fashion-mnist", split, download=False)
        assert all(os.path.dirname(p) == FASHION_DIR for p in paths)
        images, labels = data.load_dataset("fashion-mnist", split, download=False)
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.min() == 0 and labels.max() == 9
        assert np.bincount(labels).tolist() == [n // 10] * 10
        for path, array in zip(paths, (images, labels)):
            with gzip.open(path, "rb") as f:
                raw = f.read()
            base = os.path.basename(path)[: -len(".gz")]
            assert hashlib.sha256(raw).hexdigest() == FASHION_SHA256[base]
            assert hashlib.sha256(raw).hexdigest() == data.SHA256["fashion-mnist"][base][0]
            assert len(raw) == data.SHA256["fashion-mnist"][base][1]
        if split == "train":
            x = data.to_float(images)
            mean, std = data.NORMALIZATION["fashion-mnist"]
            assert abs(float(x.mean()) - mean) < 1e-3 and abs(float(x.std()) - std) < 1e-3


# ----------------------------------------------------------------------------- batches


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("batch_size", [1, 3, 7, 10, 11])
def test_batches_cover_every_sample_once(shuffle, batch_size):
    n = 10
    images = np.arange(n * 4).reshape(n, 2, 2)
    labels = np.arange(n)
    it = data.batches(images, labels, batch_size, shuffle=shuffle, seed=5)
    out = list(it)
    assert len(out) == -(-n // batch_size) == len(data.batches(images, labels, batch_size))
    seen = np.concatenate([y for _, y in out])
    assert sorted(seen.tolist()) == list(range(n))
    for x, y in out:
        assert len(x) == len(y) <= batch_size
        np.testing.assert_array_equal(x, images[y])
    if not shuffle:
        assert seen.tolist() == list(range(n))
        assert np.shares_memory(out[0][0], images)  # views when not shuffled


def test_batches_seed_and_generator():
    images = np.arange(100)
    order = lambda it: np.concatenate([y for _, y in it]).tolist()  # noqa: E731
    first = order(data.batches(images, images, 8, seed=1))
    assert first == order(data.batches(images, images, 8, seed=1))
    assert first != list(range(100))
    assert first != order(data.batches(images, images, 8, seed=2))
    # a generator kept across epochs: each epoch differs, and its state replays them
    rng = np.random.default_rng(1)
    epoch1 = order(data.batches(images, images, 8, rng=rng))
    state = rng.bit_generator.state
    epoch2 = order(data.batches(images, images, 8, rng=rng))
    assert epoch1 == first and epoch2 != epoch1
    rng.bit_generator.state = state
    assert order(data.batches(images, images, 8, rng=rng)) == epoch2


def test_batches_drop_last():
    images = np.arange(10)
    out = list(data.batches(images, images, 4, seed=0, drop_last=True))
    assert [len(y) for _, y in out] == [4, 4]
    assert len(data.batches(images, images, 4, drop_last=True)) == 2
    assert len(set(np.concatenate([y for _, y in out]).tolist())) == 8
    assert list(data.batches(images, images, 11, drop_last=True)) == []


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("start", [0, 1, 2, 3])
def test_batches_start_resumes_the_same_epoch(shuffle, drop_last, start):
    """start=k yields batches k, k+1, ... of the epoch start=0 yields, and leaves the
    generator exactly where a whole epoch leaves it."""
    images = np.arange(10) * 10
    labels = np.arange(10)
    whole_rng, resumed_rng = np.random.default_rng(3), np.random.default_rng(3)
    whole = list(data.batches(images, labels, 4, shuffle=shuffle, rng=whole_rng,
                              drop_last=drop_last))
    resumed = data.batches(images, labels, 4, shuffle=shuffle, rng=resumed_rng,
                           drop_last=drop_last, start=min(start, len(whole)))
    assert len(resumed) == len(whole) - min(start, len(whole))
    rest = list(resumed)
    assert len(rest) == len(whole[start:])
    for (x, y), (x_ref, y_ref) in zip(rest, whole[start:]):
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(y, y_ref)
    assert resumed_rng.bit_generator.state == whole_rng.bit_generator.state


@pytest.mark.parametrize("start, error", [(-1, ValueError), (4, ValueError), (1.0, TypeError),
                                          (True, TypeError)])
def test_batches_bad_start(start, error):
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    with pytest.raises(error, match="start"):
        data.batches(np.arange(5), np.arange(5), 2, rng=rng, start=start)  # 3 batches
    assert rng.bit_generator.state == state  # refused before drawing a permutation


@pytest.mark.parametrize("batch_size, error", [
    (0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError), ("3", TypeError),
    (None, TypeError),
])
def test_batches_bad_batch_size(batch_size, error):
    with pytest.raises(error, match="batch_size"):
        data.batches(np.arange(4), np.arange(4), batch_size)


def test_batches_bad_arguments():
    with pytest.raises(ValueError, match="same length"):
        data.batches(np.arange(4), np.arange(5), 2)
    with pytest.raises(ValueError, match="not both"):
        data.batches(np.arange(4), np.arange(4), 2, seed=1, rng=np.random.default_rng(1))


# ----------------------------------------------------------------------------- to_float


def test_to_float():
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    x = data.to_float(images)
    assert x.dtype == np.float32 and x.shape == (1, 1, 2, 2) and x.flags.c_contiguous
    np.testing.assert_array_equal(x, (images[:, None] / np.float32(255)).astype(np.float32))
    assert x.min() == 0 and x.max() == 1
    np.testing.assert_array_equal(data.to_float(images[:, None]), x)
    z = data.to_float(images, mean=0.5, std=0.25)
    np.testing.assert_allclose(z, (images[:, None] / 255.0 - 0.5) / 0.25, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        data.to_float(images.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        data.to_float(np.zeros((2, 3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="both"):
        data.to_float(images, mean=0.5)
    with pytest.raises(ValueError, match="positive"):
        data.to_float(images, mean=0.5, std=0.0)
