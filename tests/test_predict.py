"""fastconv-predict: evaluation equal to the trainer's test pass, image classification,
CSV output, bad files, flags.

A LeNet-5 is trained for one epoch by ``fastconv-train --save`` on the small synthetic
MNIST-format dataset of test_train.py, written as IDX files (class k is a bright bar at
rows 2k+4..2k+5 over dark noise), so everything runs offline.
"""

import csv
import io
import re
import subprocess
import sys

import numpy as np
import pytest

from fastconv import data, nn, predict, train
from fastconv.weights import load_model, read_metadata, save_model
from test_train import synthetic_dir  # noqa: F401  (the fixture: 640 train, 200 test images)

BATCH = 64  # splits the 200 test images into batches of 64, 64, 64 and 8
NAMES = data.CLASS_NAMES["mnist"]


@pytest.fixture(scope="module")
def trained(synthetic_dir, tmp_path_factory):
    """(data folder, weights path, trainer's stdout) after one epoch of fastconv-train."""
    path = tmp_path_factory.mktemp("predict") / "weights.npz"
    out = io.StringIO()
    argv = ["--dataset", "mnist", "--data-dir", synthetic_dir, "--epochs", "1",
            "--batch-size", "32", "--lr", "0.05", "--test-batch-size", str(BATCH),
            "--threads", "2", "--no-progress", "--save", str(path)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stdout", out)
        assert train.main(argv) == 0
    return synthetic_dir, str(path), out.getvalue()


@pytest.fixture(scope="module")
def test_split(trained):
    images, labels = data.load_dataset("mnist", "test", data_dir=trained[0], download=False)
    return images, labels


def run(capsys, *argv):
    status = predict.main(["--threads", "2", *argv])
    out = capsys.readouterr()
    return status, out.out, out.err


def pil():
    return pytest.importorskip("PIL.Image")


# --------------------------------------------------------------------- evaluation


def test_train_save_writes_the_runs_metadata(trained):
    meta = read_metadata(trained[1])
    assert meta["dataset"] == "mnist" and meta["architecture"] == {"class": "LeNet5",
                                                                   "variant": "modern"}
    assert meta["normalization"] == dict(zip(("mean", "std"), data.NORMALIZATION["mnist"]))


def test_evaluate_equals_the_trainers_test_pass(trained, test_split):
    images, labels = test_split
    model = load_model(trained[1])
    x = train.prepare(images, "mnist")
    loss, correct, seen = train.test(model, nn.CrossEntropyLoss(), x, labels, BATCH)
    result = predict.evaluate(model, x, labels, BATCH)
    assert (result.loss, result.correct, result.total) == (loss, correct, seen)
    assert 0.25 < result.accuracy < 1  # trained (chance is 0.1), and not trivially perfect


def test_the_command_prints_the_trainers_test_numbers(trained, capsys):
    folder, path, train_out = trained
    status, out, err = run(capsys, path, "--evaluate", "--data-dir", folder,
                           "--batch-size", str(BATCH))
    assert status == 0, err
    trainer = re.search(r"test loss \S+ acc \S+ \(\d+/\d+\)", train_out).group()
    assert f"mnist test split, 200 images: {trainer}" in out


def test_per_class_accuracy_and_confusion_matrix_against_numpy(trained, test_split, capsys):
    images, labels = test_split
    model = load_model(trained[1])
    predictions = model(train.prepare(images, "mnist")).argmax(axis=1)  # one batch of 200
    result = predict.evaluate(model, train.prepare(images, "mnist"), labels, 1000)
    for k in range(10):
        hits, count = int((predictions[labels == k] == k).sum()), int((labels == k).sum())
        assert result.per_class_accuracy[k] == hits / count
    confusion = result.confusion
    assert confusion.sum() == 200 and np.trace(confusion) == result.correct
    np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(labels, minlength=10))
    np.testing.assert_array_equal(confusion.sum(axis=0), np.bincount(predictions, minlength=10))
    status, out, _ = run(capsys, trained[1], "--evaluate", "--data-dir", trained[0])
    printed = re.findall(r"^ +(\d) (\S+) +[\d.]+% \((\d+)/(\d+)\)$", out, re.MULTILINE)
    assert printed == [(str(k), NAMES[k], str(confusion[k, k]), str(confusion[k].sum()))
                       for k in range(10)]


def test_a_class_without_images_has_no_accuracy():
    result = predict.Evaluation(0.1, 2, 2, np.array([[2, 0], [0, 0]]))
    assert result.per_class_accuracy[0] == 1 and np.isnan(result.per_class_accuracy[1])


def test_evaluate_takes_its_logits_from_the_predict_argument():
    logits = np.eye(3)[[0, 2, 2, 1]]  # predictions 0, 2, 2, 1
    calls = []

    def fake_predict(model, x, batch_size):
        calls.append((model, x.shape, batch_size))
        return logits

    result = predict.evaluate("model", np.zeros((4, 1, 2, 2)), np.array([0, 1, 2, 1]), 3,
                              predict=fake_predict)
    assert calls == [("model", (4, 1, 2, 2), 3)]
    assert (result.correct, result.total) == (3, 4)
    np.testing.assert_array_equal(result.confusion, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])


def test_predict_logits_batches_and_restores_the_mode():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, rng=0))
    x = np.random.default_rng(1).random((7, 1, 2, 2), np.float32)
    logits = predict.predict_logits(model, x, 3)
    np.testing.assert_array_equal(logits[3:6], model(x[3:6]))
    assert model.training
    with pytest.raises(ValueError, match="at least one image"):
        predict.predict_logits(model, x[:0], 3)
    with pytest.raises(ValueError, match="batch_size"):
        predict.predict_logits(model, x, 0)


def test_plot_writes_a_confusion_matrix_png(trained, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "confusion.png"
    status, out, err = run(capsys, trained[1], "--evaluate", "--data-dir", trained[0],
                           "--plot", str(png))
    assert status == 0, err
    assert f"Saved confusion matrix to {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_plot_without_matplotlib_is_a_one_line_hint(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    status, out, err = run(capsys, trained[1], "--evaluate", "--data-dir", trained[0],
                           "--plot", str(tmp_path / "c.png"))
    assert status == 2 and out == ""
    assert err == "fastconv-predict: --plot needs matplotlib: pip install 'fastconv[plot]'\n"


def test_missing_data_is_a_clear_error(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", [])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("FASTCONV_DATA", raising=False)
    monkeypatch.setattr(data, "MIRRORS", {"mnist": [], "fashion-mnist": []})
    status, _, err = run(capsys, trained[1], "--evaluate", "--data-dir", str(tmp_path))
    assert status == 2 and "mnist test split not found" in err


# --------------------------------------------------------------------- images


def expected_top(model, images):
    """(class names, probabilities) of the 3 likeliest classes, computed here."""
    logits = model(train.prepare(images, "mnist")).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    order = np.argsort(-probs, axis=1)[:, :3]
    return [[(NAMES[k], p[k]) for k in row] for p, row in zip(probs, order)]


def test_a_png_gets_the_models_answer_on_the_array(trained, test_split, tmp_path, capsys):
    Image = pil()
    images, _ = test_split
    model = load_model(trained[1])
    light = tmp_path / "drawn.png"  # dark on light: auto inverts it back
    Image.fromarray(255 - images[1]).save(light)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"test{i}.png")
        Image.fromarray(images[i]).save(paths[-1])
        np.testing.assert_array_equal(predict.load_image(paths[-1]), images[i])
    status, out, err = run(capsys, trained[1], *map(str, paths), str(light))
    assert status == 0, err
    want = expected_top(model, images[[0, 1, 2, 1]])
    lines = out.splitlines()
    assert len(lines) == 4
    for line, path, top in zip(lines, [*paths, light], want):
        text = ", ".join(f"{name} {100 * p:.1f}%" for name, p in top)
        assert line == f"{path}: {text}"


def test_invert_flag(trained, test_split, tmp_path):
    Image = pil()
    image = test_split[0][0]
    path = tmp_path / "a.png"
    Image.fromarray(image).save(path)
    np.testing.assert_array_equal(predict.load_image(path, invert="yes"), 255 - image)
    np.testing.assert_array_equal(predict.load_image(path, invert="no"), image)
    Image.fromarray(255 - image).save(path)
    np.testing.assert_array_equal(predict.load_image(path, invert="no"), 255 - image)
    with pytest.raises(ValueError, match="invert"):
        predict.load_image(path, invert="maybe")


def test_a_wide_colour_image_is_padded_not_squashed(tmp_path):
    Image = pil()
    photo = np.full((40, 80, 3), (250, 240, 230), np.uint8)  # light background
    photo[10:30, 30:50] = (20, 30, 40)  # a dark square in the middle
    path = tmp_path / "photo.jpg"
    Image.fromarray(photo).save(path, quality=95)
    image = predict.load_image(path)
    assert image.shape == (28, 28) and image.dtype == np.uint8
    bright = np.argwhere(image > 128)  # inverted: the square is light, about 7x7 pixels
    height, width = np.ptp(bright, axis=0) + 1
    assert abs(height - width) <= 1 and 5 <= height <= 9
    assert image[:7].max() < 40 and image[-7:].max() < 40  # the padding, dark after inversion


def csv_rows(text):
    return list(csv.reader(io.StringIO(text)))


def test_predictions_file_of_an_evaluation(trained, test_split, tmp_path, capsys):
    images, labels = test_split
    target = tmp_path / "predictions.csv"
    status, out, err = run(capsys, trained[1], "--evaluate", "--data-dir", trained[0],
                           "--predictions", str(target))
    assert status == 0, err
    assert f"Saved 200 predictions to {target}" in out
    rows = csv_rows(target.read_text())
    assert rows[0] == ["index", "label", "label_name", "predicted", "predicted_name",
                       "probability"]
    probabilities = predict.softmax(load_model(trained[1])(train.prepare(images, "mnist")))
    assert [int(r[1]) for r in rows[1:]] == labels.tolist()
    assert [int(r[3]) for r in rows[1:]] == probabilities.argmax(axis=1).tolist()
    np.testing.assert_allclose([float(r[5]) for r in rows[1:]], probabilities.max(axis=1),
                               atol=1e-6)


def test_evaluation_on_a_local_dask_cluster_prints_the_same_numbers(trained, tmp_path, capsys):
    pytest.importorskip("distributed")
    argv = [trained[1], "--evaluate", "--data-dir", trained[0], "--batch-size", str(BATCH)]
    here = tmp_path / "here.csv"
    status, out_here, err = run(capsys, *argv, "--predictions", str(here))
    assert status == 0, err
    on_dask = tmp_path / "dask.csv"
    status, out_dask, err = run(capsys, *argv, "--dask", "local", "--workers", "1",
                                "--predictions", str(on_dask))
    assert status == 0, err
    assert out_dask.replace(str(on_dask), "") == out_here.replace(str(here), "")
    assert on_dask.read_text() == here.read_text()  # bit-equal logits, same probabilities


def test_a_folder_gives_a_csv(trained, test_split, tmp_path, capsys):
    Image = pil()
    images, _ = test_split
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i in (4, 3, 5):
        Image.fromarray(images[i]).save(folder / f"img{i}.PNG")
    Image.fromarray(images[6]).save(folder / "sub" / "nested.png")  # not read: no recursion
    (folder / "README.txt").write_text("not an image, not listed\n")
    status, out, err = run(capsys, trained[1], str(folder))
    assert status == 0, err
    rows = csv_rows(out)
    assert rows[0] == ["file", "class_1", "probability_1", "class_2", "probability_2",
                       "class_3", "probability_3"]
    want = expected_top(load_model(trained[1]), images[[3, 4, 5]])
    assert [row[0] for row in rows[1:]] == [str(folder / f"img{i}.PNG") for i in (3, 4, 5)]
    for row, top in zip(rows[1:], want):
        assert row[1::2] == [name for name, _ in top]
        np.testing.assert_allclose([float(p) for p in row[2::2]], [p for _, p in top],
                                   atol=1e-6)
    target = tmp_path / "out.csv"
    status, out, _ = run(capsys, trained[1], str(folder), "--csv", str(target))
    assert status == 0 and out == "" and csv_rows(target.read_text()) == rows


def test_bad_files_are_reported_and_the_rest_classified(trained, test_split, tmp_path, capsys):
    Image = pil()
    good = tmp_path / "good.png"
    Image.fromarray(test_split[0][0]).save(good)
    text = tmp_path / "notes.png"
    text.write_text("this is text\n")
    empty = tmp_path / "empty.png"
    empty.touch()
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((28, 28), 1000, np.uint16)).save(deep)  # 16-bit grey
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:60])
    bad = {text: "not an image file Pillow can read", empty: "empty file",
           deep: "unsupported image mode", truncated: "damaged image",
           tmp_path / "missing.png": "No such file"}
    status, out, err = run(capsys, trained[1], str(good), *map(str, bad))
    assert status == 1
    assert out.splitlines()[0].startswith(f"{good}: ") and len(out.splitlines()) == 1
    errors = err.splitlines()
    assert len(errors) == len(bad)
    for path, reason in bad.items():
        assert any(line.startswith(f"fastconv-predict: {path}: ") and reason in line
                   for line in errors), (path, err)


def test_bad_files_in_a_folder_and_an_empty_folder(trained, test_split, tmp_path, capsys):
    Image = pil()
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(test_split[0][0]).save(folder / "good.png")
    (folder / "notes.png").write_text("text")
    (folder / "empty.jpg").touch()
    (folder / "dir.png").mkdir()
    (tmp_path / "nothing").mkdir()
    status, out, err = run(capsys, trained[1], str(folder), str(tmp_path / "nothing"))
    assert status == 1
    assert [row[0] for row in csv_rows(out)[1:]] == [str(folder / "good.png")]
    assert sorted(err.splitlines()) == [
        f"fastconv-predict: {folder / 'dir.png'}: Is a directory",
        f"fastconv-predict: {folder / 'empty.jpg'}: empty file",
        f"fastconv-predict: {folder / 'notes.png'}: not an image file Pillow can read",
        f"fastconv-predict: {tmp_path / 'nothing'}: no image files (.png, .jpg, .jpeg, .bmp, "
        ".gif, .tif, .tiff, .webp) in this folder",
    ]


def test_images_without_pillow_is_a_one_line_hint(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "PIL", None)
    status, out, err = run(capsys, trained[1], str(tmp_path / "a.png"))
    assert status == 2 and out == ""
    assert err == ("fastconv-predict: classifying images needs Pillow: "
                   "pip install 'fastconv[image]'\n")


# --------------------------------------------------------------------- flags and weights


def test_help_shows_each_default_once(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fastconv.predict", "--help"],
                            capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)  # `-m` puts the cwd on sys.path
    assert result.returncode == 0
    assert result.stdout.startswith("usage: fastconv-predict")
    parser = predict.build_parser()
    for action in parser._actions:
        if action.dest in ("help", "weights", "images"):
            continue
        assert action.option_strings[0] in result.stdout
        help_text = action.help % {"default": action.default}
        assert help_text.count("default") == 1, action.option_strings


@pytest.mark.parametrize("argv, message", [
    ([], "give IMAGE files or folders, or --evaluate"),
    (["a.png", "--evaluate"], "not both"),
    (["a.png", "--plot", "c.png"], "--plot needs --evaluate"),
    (["--evaluate", "--csv", "x.csv"], "--csv is for IMAGE results"),
    (["--evaluate", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["a.png", "--invert", "sometimes"], "invalid choice"),
    (["a.png", "--predictions", "p.csv"], "--predictions needs --evaluate"),
    (["--evaluate", "--workers", "2"], "--workers needs --dask local"),
    (["--evaluate", "--dask", "threads"], "scheduler address"),
    (["--evaluate", "--dask", "local", "--workers", "0"], "--workers must be >= 1"),
])
def test_bad_flags_exit_with_the_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        predict.main(["w.npz", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_weights_file_exits_2(tmp_path, capsys):
    path = tmp_path / "w.npz"
    path.write_text("not weights")
    status, out, err = run(capsys, str(path), "--evaluate")
    assert status == 2 and out == ""
    assert err.startswith(f"fastconv-predict: {path} is not a fastconv weights file")
    status, _, err = run(capsys, str(tmp_path / "none.npz"), "--evaluate")
    assert status == 2 and "No such file" in err


def test_weights_without_a_dataset_need_dataset(trained, tmp_path, capsys):
    path = tmp_path / "bare.npz"
    save_model(path, load_model(trained[1]))  # no dataset recorded
    status, _, err = run(capsys, str(path), "--evaluate", "--data-dir", trained[0])
    assert status == 2 and "pass --dataset" in err
    status, out, err = run(capsys, str(path), "--evaluate", "--data-dir", trained[0],
                           "--dataset", "mnist", "--limit", "50")
    assert status == 0, err
    assert "mnist test split, 50 images" in out
