"""fastconv-train end to end: accuracy on real data, exact resume, checkpoints, outputs.

Most tests train on a small synthetic MNIST-format dataset written as IDX files into a
temporary folder (each class a bright bar at its own place, plus noise), so they run
anywhere. The accuracy test uses the real Fashion-MNIST files when they are installed.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fastconv import data, train
from idx_helpers import write_bar_dataset

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    return write_bar_dataset(tmp_path_factory.mktemp("synthetic-mnist"), seed=0, sizes=(640, 200))


def run(argv, capsys=None):
    status = train.main(["--no-progress", "--threads", "2", *argv])
    out = capsys.readouterr() if capsys is not None else None
    return status, out


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def weights(path):
    with np.load(path) as archive:
        return {k: archive[k] for k in archive.files}


# A constant rate: these runs are extended across --epochs values, which a cosine
# schedule (planned over --epochs) refuses.
BASE = ["--dataset", "mnist", "--batch-size", "32", "--lr", "0.05", "--scheduler", "none"]


def test_epoch_line_and_json_log(synthetic_dir, tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    status, out = run([*BASE, "--data-dir", synthetic_dir, "--epochs", "2",
                       "--log-json", str(log)], capsys)
    assert status == 0, out.err
    lines = [line for line in out.out.splitlines() if line.startswith("Epoch ")]
    assert len(lines) == 2
    assert "train loss" in lines[0] and "test loss" in lines[0] and "img/s" in lines[0]
    records = read_log(log)
    assert [r["epoch"] for r in records] == [1, 2]
    assert set(records[0]) == {"epoch", "train_loss", "train_acc", "test_loss", "test_acc",
                               "seconds", "images_per_s"}
    # The bars are easy: two epochs learn them (chance is 0.1).
    assert records[-1]["test_acc"] > 0.8


def test_same_seed_same_results(synthetic_dir, tmp_path, capsys):
    paths = []
    for name in ("a", "b"):
        save = tmp_path / f"{name}.npz"
        status, _ = run([*BASE, "--data-dir", synthetic_dir, "--epochs", "1",
                         "--save", str(save), "--log-json", str(tmp_path / f"{name}.jsonl")],
                        capsys)
        assert status == 0
        paths.append(save)
    first, second = weights(paths[0]), weights(paths[1])
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}
             for r in read_log(tmp_path / "a.jsonl") + read_log(tmp_path / "b.jsonl")]
    assert strip[0] == strip[1]


def metrics(path):
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}
            for r in read_log(path)]


def test_resume_after_an_epoch_equals_uninterrupted(synthetic_dir, tmp_path, capsys):
    full_log, full_save = tmp_path / "full.jsonl", tmp_path / "full.npz"
    status, _ = run([*BASE, "--data-dir", synthetic_dir, "--epochs", "3",
                     "--log-json", str(full_log), "--save", str(full_save)], capsys)
    assert status == 0
    ckpt, part_log, part_save = tmp_path / "run.ckpt", tmp_path / "part.jsonl", tmp_path / "part.npz"
    status, _ = run([*BASE, "--data-dir", synthetic_dir, "--epochs", "1",
                     "--checkpoint", str(ckpt), "--log-json", str(part_log)], capsys)
    assert status == 0 and ckpt.exists()
    status, out = run([*BASE, "--data-dir", synthetic_dir, "--epochs", "3", "--resume", str(ckpt),
                       "--log-json", str(part_log), "--save", str(part_save)], capsys)
    assert status == 0, out.err
    assert "Resumed" in out.out
    assert metrics(part_log) == metrics(full_log)
    for key, value in weights(full_save).items():
        np.testing.assert_array_equal(weights(part_save)[key], value)


class StopAfter:
    """A stop flag that turns on after ``batches`` checks, like Ctrl-C mid-epoch."""

    def __init__(self, batches):
        self.left = batches

    @property
    def requested(self):
        self.left -= 1
        return self.left < 0


def test_resume_mid_epoch_equals_uninterrupted(synthetic_dir, tmp_path, monkeypatch, capsys):
    full_log, full_save = tmp_path / "full.jsonl", tmp_path / "full.npz"
    status, _ = run([*BASE, "--data-dir", synthetic_dir, "--epochs", "2",
                     "--log-json", str(full_log), "--save", str(full_save)], capsys)
    assert status == 0
    ckpt = tmp_path / "run.ckpt"
    part_log, part_save = tmp_path / "part.jsonl", tmp_path / "part.npz"

    class InterruptedOnce(train.StopRequested):
        def __enter__(self):
            super().__enter__()
            return StopAfter(27)  # stops in the second epoch (20 batches per epoch)

    monkeypatch.setattr(train, "StopRequested", InterruptedOnce)
    status, out = run([*BASE, "--data-dir", synthetic_dir, "--epochs", "2",
                       "--checkpoint", str(ckpt), "--log-json", str(part_log)], capsys)
    assert status == 130
    assert "epoch 2, batch 7" in out.out
    monkeypatch.undo()
    status, _ = run([*BASE, "--data-dir", synthetic_dir, "--epochs", "2", "--resume", str(ckpt),
                     "--log-json", str(part_log), "--save", str(part_save)], capsys)
    assert status == 0
    assert metrics(part_log) == metrics(full_log)
    for key, value in weights(full_save).items():
        np.testing.assert_array_equal(weights(part_save)[key], value)


def test_ctrl_c_writes_a_checkpoint(synthetic_dir, tmp_path):
    """A real SIGINT: the run stops between batches, saves, and exits with 130."""
    ckpt = tmp_path / "run.ckpt"
    # The child imports the fastconv this test imported, whatever the working folder.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(train.__file__)))
    pythonpath = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastconv.train", *BASE, "--data-dir", synthetic_dir,
         "--epochs", "500", "--no-progress", "--checkpoint", str(ckpt), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path),
    )
    try:
        for line in proc.stdout:  # wait until training has started
            if line.startswith("Epoch 1:"):
                break
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "run state saved" in out
    meta = json.loads(str(np.load(ckpt, allow_pickle=False)["meta"]))
    assert meta["epoch"] >= 2


def test_resume_refuses_another_model(synthetic_dir, tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    status, _ = run([*BASE, "--data-dir", synthetic_dir, "--epochs", "1",
                     "--checkpoint", str(ckpt)], capsys)
    assert status == 0
    status, out = run([*BASE, "--data-dir", synthetic_dir, "--epochs", "2", "--model", "classic",
                       "--resume", str(ckpt)], capsys)
    assert status == 2
    assert "different run" in out.err and "model" in out.err


def test_resume_refuses_a_file_that_is_not_a_checkpoint(synthetic_dir, tmp_path, capsys):
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    status, out = run([*BASE, "--data-dir", synthetic_dir, "--resume", str(bogus)], capsys)
    assert status == 2
    assert "bogus.ckpt" in out.err


def test_dry_run_and_classic_model(synthetic_dir, capsys):
    status, out = run([*BASE, "--data-dir", synthetic_dir, "--model", "classic", "--dry-run"],
                      capsys)
    assert status == 0, out.err
    assert out.out.count("Epoch 1:") == 1


def test_plot_writes_a_png(synthetic_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    status, _ = run([*BASE, "--data-dir", synthetic_dir, "--epochs", "2", "--plot", str(png)],
                    capsys)
    assert status == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5000


@pytest.mark.parametrize("model", ["modern", "classic"])
def test_plot_features_writes_the_filters_and_feature_maps(synthetic_dir, tmp_path, capsys,
                                                           model):
    image = pytest.importorskip("matplotlib.image")
    png = tmp_path / "features.png"
    status, out = run([*BASE, "--data-dir", synthetic_dir, "--model", model,
                       "--plot-features", str(png)], capsys)
    assert status == 0, out.err
    assert f"Saved filters and feature maps to {png}" in out.out
    pixels = image.imread(png)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300
    assert pixels[..., :3].std() > 0.05  # drawn on, not blank


def test_plots_without_matplotlib_stop_before_training(synthetic_dir, monkeypatch, capsys):
    real_find_spec = train.importlib.util.find_spec
    monkeypatch.setattr(train.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    with pytest.raises(SystemExit) as exc:
        train.main([*BASE, "--data-dir", synthetic_dir, "--plot-features", "f.png"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert 'pip install "fastconv[plot]"' in err and "Epoch" not in err


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "MIRRORS", {name: () for name in data.MIRRORS})
    monkeypatch.setattr(data, "SYSTEM_DATA_DIRS", ())
    monkeypatch.setenv("FASTCONV_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    status, out = run(["--dataset", "mnist", "--data-dir", str(tmp_path)], capsys)
    assert status == 2
    assert str(tmp_path) in out.err


def test_bad_arguments_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(["--batch-size", "0"])
    assert exc.value.code == 2
    assert "--batch-size" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR),
                    reason=f"real Fashion-MNIST not installed ({FASHION_DIR}); "
                           "apt-get install dataset-fashion-mnist")
def test_one_epoch_on_6000_fashion_images_reaches_75_percent(tmp_path, capsys):
    """Modern LeNet-5, Adam lr 0.002, batch 16, seed 1: one epoch over the first 6,000
    training images, tested on the first 2,000 test images."""
    log = tmp_path / "log.jsonl"
    status, out = run(["--dataset", "fashion-mnist", "--data-dir", FASHION_DIR, "--epochs", "1",
                       "--limit", "6000", "--test-limit", "2000", "--optimizer", "adam",
                       "--lr", "0.002", "--batch-size", "16", "--seed", "1",
                       "--log-json", str(log)], capsys)
    assert status == 0, out.err
    (record,) = read_log(log)
    print(out.out)
    assert record["test_acc"] >= 0.75, record


def test_cosine_schedule_and_resume(synthetic_dir, tmp_path, capsys):
    """The cosine rate depends on the epoch alone: a resumed run matches, and a checkpoint
    of a run planned for another number of epochs is refused."""
    cosine = [*BASE[:-2], "--data-dir", synthetic_dir, "--scheduler", "cosine"]
    full_log, ckpt, part_log = tmp_path / "full.jsonl", tmp_path / "run.ckpt", tmp_path / "p.jsonl"
    assert run([*cosine, "--epochs", "3", "--log-json", str(full_log)], capsys)[0] == 0

    class StopInSecondEpoch(train.StopRequested):
        def __enter__(self):
            super().__enter__()
            return StopAfter(25)

    original = train.StopRequested
    train.StopRequested = StopInSecondEpoch
    try:
        status, _ = run([*cosine, "--epochs", "3", "--checkpoint", str(ckpt),
                         "--log-json", str(part_log)], capsys)
    finally:
        train.StopRequested = original
    assert status == 130
    status, out = run([*cosine, "--epochs", "4", "--resume", str(ckpt)], capsys)
    assert status == 2 and "epochs" in out.err
    assert run([*cosine, "--epochs", "3", "--resume", str(ckpt),
                "--log-json", str(part_log)], capsys)[0] == 0
    assert metrics(part_log) == metrics(full_log)


def help_blocks(text):
    """{option string: its help text} parsed from argparse's --help output."""
    blocks, current = {}, None
    for line in text.split("options:", 1)[1].splitlines():
        stripped = line.strip()
        if line.startswith("  -"):  # an option's line: its strings, then maybe its help
            head, _, help_text = stripped.partition("  ")
            current = [help_text.strip()]
            for option in head.split(", "):
                blocks[option.split(" ")[0]] = current
        elif current is not None and stripped:
            current.append(stripped)
    return {option: " ".join(filter(None, parts)) for option, parts in blocks.items()}


def test_help_gives_every_option_a_help_line_and_its_default_once(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # wrapped lines are joined back
    parser = train.build_parser()
    blocks = help_blocks(parser.format_help())
    options = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    assert set(options) <= set(blocks), set(options) - set(blocks)
    for action in parser._actions:
        if "--help" in action.option_strings:
            continue
        text = blocks[action.option_strings[-1]]
        assert text and not text.startswith("("), f"{action.option_strings}: no help"
        assert text.count("(default") == 1, f"{action.option_strings}: {text!r}"
    assert "0.03 for sgd" in blocks["--lr"] and "None" not in blocks["--lr"]
    assert "(default: 64)" in blocks["--batch-size"]
