"""fastconv.weights: exact round trips, the metadata, every refusal, atomic writes."""

import json
import os

import numpy as np
import pytest

from fastconv import data, nn, weights
from fastconv._version import __version__
from fastconv.models import LeNet5
from fastconv.weights import load_model, load_weights, read_metadata, save_model

VARIANTS = ["modern", "classic"]


def arrays_of(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def rewrite(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def rewrite_metadata(path, change):
    arrays = arrays_of(path)
    meta = json.loads(str(arrays[weights.METADATA_KEY]))
    change(meta)
    arrays[weights.METADATA_KEY] = np.array(json.dumps(meta))
    rewrite(path, arrays)


def assert_same_bits(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert a[key].tobytes() == b[key].tobytes(), key


@pytest.fixture
def saved(tmp_path):
    """A modern float32 LeNet-5 saved with Fashion-MNIST's metadata: (path, model)."""
    model = LeNet5(rng=3)
    path = tmp_path / "lenet.npz"
    save_model(path, model, dataset="fashion-mnist")
    return path, model


# --------------------------------------------------------------------- round trips


@pytest.mark.parametrize("variant", VARIANTS)
def test_load_model_gives_back_every_bit(tmp_path, variant, dtype):
    model = LeNet5(variant, dtype=dtype, rng=7)
    for param in model.parameters():  # values a lossy path would change: -0.0, tiny, huge
        param.data.flat[:3] = [-0.0, np.finfo(dtype).tiny, np.finfo(dtype).max]
    path = tmp_path / "w.npz"
    save_model(path, model, dataset="mnist")
    loaded = load_model(path)
    assert type(loaded) is LeNet5 and loaded.variant == variant
    assert_same_bits(model.state_dict(), loaded.state_dict())


@pytest.mark.parametrize("variant", VARIANTS)
def test_load_weights_into_a_fresh_model_gives_back_every_bit(tmp_path, variant, dtype):
    model = LeNet5(variant, dtype=dtype, rng=7)
    path = tmp_path / "w.npz"
    save_model(path, model)
    fresh = LeNet5(variant, dtype=dtype, rng=8)
    assert not np.array_equal(fresh[0].weight.data, model[0].weight.data)
    meta = load_weights(path, fresh)
    assert meta["dtype"] == np.dtype(dtype).name
    assert_same_bits(model.state_dict(), fresh.state_dict())
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(dtype)
    np.testing.assert_array_equal(fresh(x), model(x))


def test_metadata_records_training_and_architecture(saved):
    path, _ = saved
    meta = read_metadata(path)
    mean, std = data.NORMALIZATION["fashion-mnist"]
    assert meta == {
        "format": weights.FORMAT_VERSION, "fastconv_version": __version__,
        "architecture": {"class": "LeNet5", "variant": "modern"}, "dtype": "float32",
        "dataset": "fashion-mnist", "normalization": {"mean": mean, "std": std},
        "class_names": list(data.CLASS_NAMES["fashion-mnist"]), "image_size": [28, 28],
        "extra": {},
    }


def test_metadata_of_another_module_and_extra_keys(tmp_path):
    path = tmp_path / "seq.npz"
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, dtype=np.float64, rng=0))
    save_model(path, model, class_names=["no", "yes"], image_size=(2, 2), epochs=3,
               note={"lr": 0.1})
    meta = read_metadata(path)
    assert meta["architecture"] == {"class": "Sequential"}
    assert (meta["dtype"], meta["dataset"], meta["normalization"]) == ("float64", None, None)
    assert (meta["class_names"], meta["image_size"]) == (["no", "yes"], [2, 2])
    assert meta["extra"] == {"epochs": 3, "note": {"lr": 0.1}}
    other = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, dtype=np.float64, rng=1))
    load_weights(path, other)
    assert_same_bits(model.state_dict(), other.state_dict())


def test_the_path_is_written_as_given(tmp_path):
    path = tmp_path / "sub" / "weights"  # no .npz added, the folder is made
    save_model(path, LeNet5(rng=0))
    assert os.listdir(tmp_path / "sub") == ["weights"]
    assert read_metadata(path)["dataset"] is None


def test_no_pickle_anywhere_in_the_file(saved):
    path, _ = saved
    assert all(a.dtype != object for a in arrays_of(path).values())  # np.load refused them else


# --------------------------------------------------------------------- refusals


def refused(match, call, *args, **kwargs):
    with pytest.raises(ValueError, match=match) as info:
        call(*args, **kwargs)
    return str(info.value)


@pytest.mark.parametrize("content, match", [
    (b"", "not a fastconv weights file: the file is empty"),
    (b"epoch,loss\n1,0.5\n", "not a fastconv weights file: not an .npz archive"),
    (b"\x93NUMPY\x01\x00", "not a fastconv weights file: not an .npz archive"),
])
def test_a_file_that_is_not_an_archive_is_refused(tmp_path, content, match):
    path = tmp_path / "w.npz"
    path.write_bytes(content)
    message = refused(match, read_metadata, path)
    assert str(path) in message


def test_a_plain_state_dict_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "old.npz"
    rewrite(path, LeNet5(rng=0).state_dict())  # what --save wrote before the metadata
    message = refused("not a fastconv weights file", load_model, path)
    assert "load_state_dict" in message


def test_a_training_checkpoint_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "run.ckpt"
    rewrite(path, {"model/0.weight": np.zeros(3, np.float32), "meta": np.array("{}")})
    assert "--resume" in refused("checkpoint", load_model, path)


def test_an_empty_archive_is_refused(tmp_path):
    path = tmp_path / "empty.npz"
    rewrite(path, {})
    refused("empty .npz archive", read_metadata, path)


def test_a_truncated_file_is_refused(saved):
    path, _ = saved
    content = path.read_bytes()
    for size in (10, len(content) // 2, len(content) - 1):
        path.write_bytes(content[:size])
        refused("corrupt or truncated", load_model, path)


def test_a_flipped_byte_is_caught_by_the_checksum(saved):
    path, model = saved
    content = bytearray(path.read_bytes())
    big = model[7].weight.data  # Linear 400-120: most of the file
    start = bytes(content).find(big.tobytes()[:64])
    assert start > 0
    content[start + big.nbytes // 2] ^= 0x10
    path.write_bytes(bytes(content))
    refused("corrupt or truncated", load_model, path)


def test_a_missing_file_is_an_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_metadata(tmp_path / "nothing.npz")
    with pytest.raises(IsADirectoryError):
        read_metadata(tmp_path)


def test_a_newer_format_is_refused(saved):
    path, _ = saved
    rewrite_metadata(path, lambda meta: meta.update(format=weights.FORMAT_VERSION + 1))
    message = refused("newer", load_model, path)
    assert "upgrade fastconv" in message


@pytest.mark.parametrize("change, match", [
    (lambda meta: meta.update(format="1"), "damaged"),
    (lambda meta: meta.pop("dtype"), "damaged .*missing dtype"),
    (lambda meta: meta.update(dtype="float16"), "damaged"),
    (lambda meta: meta.update(architecture="LeNet5"), "damaged"),
])
def test_damaged_metadata_is_refused(saved, change, match):
    path, _ = saved
    rewrite_metadata(path, change)
    refused(match, load_model, path)


def test_metadata_that_is_not_json_is_refused(saved):
    path, _ = saved
    arrays = arrays_of(path)
    arrays[weights.METADATA_KEY] = np.array("{format: 1")
    rewrite(path, arrays)
    refused("damaged .*not JSON", read_metadata, path)


def test_an_entry_of_another_dtype_than_the_metadata_says_is_refused(saved):
    path, _ = saved
    arrays = arrays_of(path)
    arrays["0.bias"] = arrays["0.bias"].astype(np.float64)
    rewrite(path, arrays)
    refused("other dtypes", load_model, path)


def test_another_variant_is_refused_and_the_model_is_unchanged(saved):
    path, _ = saved
    classic = LeNet5("classic", rng=0)
    before = classic.state_dict()
    message = refused("the model is", load_weights, path, classic)
    assert "'modern'" in message and "'classic'" in message
    assert_same_bits(before, classic.state_dict())


def test_another_architecture_is_refused(saved, tmp_path):
    path, _ = saved
    refused("LeNet5", load_weights, path, nn.Sequential(nn.Linear(4, 2)))
    other = tmp_path / "linear.npz"
    save_model(other, nn.Linear(4, 2))
    refused("load_model rebuilds LeNet5 only", load_model, other)


def test_another_dtype_is_refused_unless_converted_explicitly(tmp_path):
    model = LeNet5(dtype=np.float64, rng=0)
    path = tmp_path / "w64.npz"
    save_model(path, model)
    target = LeNet5(rng=1)
    before = target.state_dict()
    refused("float64 weights and the model is float32", load_weights, path, target)
    assert_same_bits(before, target.state_dict())
    load_weights(path, target, cast=True)
    expected = {k: v.astype(np.float32) for k, v in model.state_dict().items()}
    assert_same_bits(expected, target.state_dict())
    assert_same_bits(expected, load_model(path, dtype=np.float32).state_dict())
    with pytest.raises(TypeError, match="float32 or float64"):
        load_model(path, dtype=np.float16)


def test_mismatched_shapes_and_keys_are_refused(tmp_path):
    path = tmp_path / "seq.npz"
    save_model(path, nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    wider = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    message = refused("does not fit this model", load_weights, path, wider)
    assert "shape" in message
    deeper = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.Linear(2, 2))
    message = refused("does not fit this model", load_weights, path, deeper)
    assert "missing keys ['3.weight', '3.bias']" in message


def test_a_missing_entry_is_refused(saved):
    path, _ = saved
    arrays = arrays_of(path)
    del arrays["7.weight"]
    rewrite(path, arrays)
    assert "7.weight" in refused("does not fit this model", load_model, path)


def test_save_refuses_what_it_cannot_describe(tmp_path):
    path = tmp_path / "w.npz"
    with pytest.raises(ValueError, match="unknown dataset"):
        save_model(path, LeNet5(rng=0), dataset="cifar")
    mixed = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2, dtype=np.float64))
    with pytest.raises(ValueError, match="one dtype"):
        save_model(path, mixed)
    with pytest.raises(TypeError, match="JSON"):
        save_model(path, LeNet5(rng=0), when=object())
    with pytest.raises(ValueError, match="image_size"):
        save_model(path, nn.Linear(2, 2), image_size=(28,))
    assert not path.exists()


# --------------------------------------------------------------------- atomic writes


def failing_savez(f, **arrays):
    f.write(b"PK\x03\x04 half an archive")
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("where", ["savez", "fsync", "replace"])
def test_a_failing_write_leaves_the_previous_file_intact(saved, monkeypatch, where):
    path, model = saved
    before = path.read_bytes()
    if where == "savez":
        monkeypatch.setattr(weights.np, "savez", failing_savez)
    else:
        def fail(*args):
            raise OSError(5, f"{where} failed")
        monkeypatch.setattr(weights.os, where, fail)
    with pytest.raises(OSError):
        save_model(path, LeNet5("classic", rng=9))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind
    assert_same_bits(model.state_dict(), load_model(path).state_dict())


def test_a_successful_write_replaces_the_file(saved):
    path, _ = saved
    save_model(path, LeNet5("classic", rng=9))
    assert load_model(path).variant == "classic"
    assert os.listdir(path.parent) == [path.name]
