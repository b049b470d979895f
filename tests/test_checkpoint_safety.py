"""fastconv-train checkpoints survive crashes, and bad checkpoints are refused clearly.

- A crash in the middle of a checkpoint write (an exception inside numpy.savez,
  fsync or the rename, or a SIGKILL of a process that writes large checkpoints in
  a loop) leaves the previous checkpoint intact and loadable. An exception leaves
  no temporary file behind; a SIGKILL can only leave ``.fastconv-ckpt-*.tmp``
  files next to the checkpoint, never a half-written checkpoint.
- A truncated or corrupted checkpoint, or a foreign .npz, gives a clear error that
  names the file: ValueError/OSError from ``train.load_checkpoint``, exit status 2
  and a message (no traceback) from ``fastconv-train --resume``.
- A checkpoint of another model, optimiser or parameter shapes is refused the same
  way.

The training runs use a tiny synthetic MNIST-format dataset written as IDX files
into a temporary folder, so everything runs offline in seconds.
"""

import errno
import fnmatch
import io
import json
import os
import tempfile
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fastconv import nn, train
from fastconv.models import LeNet5
from idx_helpers import write_bar_dataset

TMP_PATTERN = ".fastconv-ckpt-*.tmp"


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Tiny MNIST-format train and test splits (class k: a bright bar at row 2k+4)."""
    return write_bar_dataset(tmp_path_factory.mktemp("idx"), seed=1, sizes=(96, 32), noise=50,
                             bar=230)


FLAGS = ["--dataset", "mnist", "--batch-size", "32", "--scheduler", "none", "--lr", "0.05",
         "--threads", "1", "--no-progress"]


def cli(data_dir, *argv):
    return train.main([*FLAGS, "--data-dir", data_dir, *argv])


def run_args(*argv):
    parser = train.build_parser()
    args = parser.parse_args([*FLAGS, *argv])
    train.check_args(parser, args)
    return args


def fresh_run(args, seed=0, variant="modern"):
    """(model, optimiser, run state) as fastconv-train builds them."""
    model = LeNet5(variant, rng=np.random.default_rng(seed))
    return model, train.make_optimizer(args, model), train.RunState(np.random.default_rng(1))


def parameters(model):
    return {name: p.data.copy() for name, p in model.named_parameters()}


def loads_into(path, args, variant="modern"):
    """Load ``path`` into a fresh model; returns (model parameters, run state)."""
    model, opt, state = fresh_run(args, seed=99, variant=variant)
    train.load_checkpoint(str(path), model, opt, state, args)
    return parameters(model), state


def leftovers(folder, keep):
    return sorted(name for name in os.listdir(folder) if name not in keep)


def assert_clear_error(message, path):
    assert str(path) in message or os.path.basename(str(path)) in message, (
        f"the message does not name the file {path}: {message!r}")
    assert "Traceback" not in message, message


# --------------------------------------------------------------------------- #
# a crash inside the write keeps the previous checkpoint
# --------------------------------------------------------------------------- #


class DiskFull(OSError):
    def __init__(self):
        super().__init__(errno.ENOSPC, "No space left on device (simulated)")


CRASHES = {
    "disk full": DiskFull,
    "runtime error": lambda: RuntimeError("simulated crash"),
    "ctrl-c": KeyboardInterrupt,
}


@pytest.fixture
def saved(tmp_path):
    """A checkpoint written by save_checkpoint, with what it holds."""
    args = run_args()
    model, opt, state = fresh_run(args)
    state.epoch, state.batch = 2, 3
    path = tmp_path / "run.ckpt"
    train.save_checkpoint(str(path), model, opt, state, args)
    return dict(path=path, args=args, model=model, opt=opt, state=state,
                params=parameters(model), data=path.read_bytes())


def assert_previous_intact(saved):
    path = saved["path"]
    assert path.read_bytes() == saved["data"], "the previous checkpoint was changed"
    params, state = loads_into(path, saved["args"])
    assert (state.epoch, state.batch) == (2, 3)
    for name, value in saved["params"].items():
        np.testing.assert_array_equal(params[name], value, err_msg=name)


@pytest.mark.parametrize("crash", sorted(CRASHES))
def test_crash_inside_savez_keeps_the_previous_checkpoint(crash, saved, monkeypatch):
    real_savez = np.savez

    def savez_then_crash(file, *args, **kwds):
        buffer = io.BytesIO()
        real_savez(buffer, *args, **kwds)
        data = buffer.getvalue()
        file.write(data[:len(data) // 2])  # half of the archive reaches the disk
        file.flush()
        raise CRASHES[crash]()

    for p in saved["model"].parameters():
        p.data += 1.0  # the run moved on: the new checkpoint would differ
    saved["state"].batch = 4
    monkeypatch.setattr(np, "savez", savez_then_crash)  # the numpy the writer calls
    expected = KeyboardInterrupt if crash == "ctrl-c" else (OSError, RuntimeError)
    with pytest.raises(expected):
        train.save_checkpoint(str(saved["path"]), saved["model"], saved["opt"], saved["state"],
                              saved["args"])
    monkeypatch.undo()
    assert_previous_intact(saved)
    assert leftovers(saved["path"].parent, {"run.ckpt"}) == [], "a temporary file was left"


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_crash_in_fsync_or_rename_keeps_the_previous_checkpoint(step, saved, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError(errno.EIO, f"simulated I/O error in {step}")

    for p in saved["model"].parameters():
        p.data *= 2.0
    monkeypatch.setattr(os, step, fail)  # the os module the checkpoint writer calls
    with pytest.raises(OSError):
        train.save_checkpoint(str(saved["path"]), saved["model"], saved["opt"], saved["state"],
                              saved["args"])
    monkeypatch.undo()
    assert_previous_intact(saved)
    assert leftovers(saved["path"].parent, {"run.ckpt"}) == [], "a temporary file was left"


def test_a_successful_write_leaves_only_the_checkpoint(data_dir, tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    assert cli(data_dir, "--epochs", "2", "--limit", "64", "--checkpoint", str(ckpt)) == 0
    capsys.readouterr()
    assert leftovers(tmp_path, {"run.ckpt"}) == []
    _, state = loads_into(ckpt, run_args("--epochs", "2", "--limit", "64"))
    assert state.epoch == 3 and len(state.history) == 2


# --------------------------------------------------------------------------- #
# SIGKILL while a large checkpoint is being written
# --------------------------------------------------------------------------- #

# The child writes a checkpoint of a ~34 MB model again and again; before each write
# every parameter is set to the write's number i and state.batch to i. It prints
# "writing i" before and "saved i" after each write.
CHILD = r"""
import sys
import numpy as np
from fastconv import nn, train

path = sys.argv[1]
parser = train.build_parser()
args = parser.parse_args(sys.argv[2:])
train.check_args(parser, args)
model = nn.Sequential(nn.Flatten(), nn.Linear(2048, 4096, rng=0))
opt = train.make_optimizer(args, model)
state = train.RunState(np.random.default_rng(0))
i = 0
while True:
    i += 1
    for p in model.parameters():
        p.data[...] = i
    state.batch = i
    print(f"writing {i}", flush=True)
    train.save_checkpoint(path, model, opt, state, args)
    print(f"saved {i}", flush=True)
"""


def big_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(2048, 4096, rng=1))


def kill_while_writing(path, delay):
    """Start the child, kill it ``delay`` s after its first completed write; returns
    the lines it printed."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(train.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [package_root, os.environ.get("PYTHONPATH")])),
        "FASTCONV_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), *FLAGS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=tempfile.gettempdir())  # `python -c` puts the cwd on sys.path
    lines, first_saved = [], threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("saved"):
                first_saved.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not first_saved.wait(120):
            proc.kill()
            raise AssertionError(f"the child wrote no checkpoint: {proc.stderr.read()}")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    return list(lines)


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    path = tmp_path / "big.ckpt"
    args = run_args()
    mid_write_kills = 0
    for attempt, delay in enumerate((0.05, 0.31, 0.17, 0.53, 0.11)):
        lines = kill_while_writing(path, delay)
        saved_numbers = [int(line.split()[1]) for line in lines if line.startswith("saved")]
        last_saved = max(saved_numbers)
        writing = lines[-1].startswith("writing")
        mid_write_kills += writing
        # The file is a whole checkpoint: the last completed write, or the one in
        # progress if its rename happened just before the kill.
        model = big_model()
        state = train.RunState(np.random.default_rng(0))
        train.load_checkpoint(str(path), model, train.make_optimizer(args, model), state, args)
        allowed = {last_saved, last_saved + 1} if writing else {last_saved}
        assert state.batch in allowed, (attempt, state.batch, lines[-3:])
        for name, p in model.named_parameters():
            assert np.all(p.data == state.batch), f"{name} is not all {state.batch}"
        others = leftovers(tmp_path, {"big.ckpt"})
        assert all(fnmatch.fnmatch(name, TMP_PATTERN) for name in others), others
        if mid_write_kills >= 2:
            break
    assert mid_write_kills >= 1, "no kill landed during a write (the writes were too quick?)"

    # The next run resumes from the surviving checkpoint and writes over it.
    model = big_model()
    opt = train.make_optimizer(args, model)
    state = train.RunState(np.random.default_rng(0))
    train.load_checkpoint(str(path), model, opt, state, args)
    state.batch += 1000
    train.save_checkpoint(str(path), model, opt, state, args)
    model2 = big_model()
    state2 = train.RunState(np.random.default_rng(0))
    train.load_checkpoint(str(path), model2, train.make_optimizer(args, model2), state2, args)
    assert state2.batch == state.batch
    others = leftovers(tmp_path, {"big.ckpt"})
    assert all(fnmatch.fnmatch(name, TMP_PATTERN) for name in others), others


# --------------------------------------------------------------------------- #
# truncated, corrupted and foreign checkpoints
# --------------------------------------------------------------------------- #


def _flip_middle_byte(data):
    data = bytearray(data)
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


def _npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


DAMAGE = {
    "empty file": lambda data: b"",
    "1 byte": lambda data: data[:1],
    "10 bytes": lambda data: data[:10],
    "first half": lambda data: data[:len(data) // 2],
    "all but the zip end record": lambda data: data[:-22],
    "all but the last byte": lambda data: data[:-1],
    "a flipped byte in the middle": _flip_middle_byte,
    "zeros": lambda data: bytes(len(data)),
    "a text file": lambda data: b"epoch 3\n",
    "an npz without meta": lambda data: _npz_bytes(w=np.ones(3)),
    "meta that is not JSON": lambda data: _npz_bytes(meta=np.array("not json {")),
    "meta that is a JSON list": lambda data: _npz_bytes(meta=np.array("[1, 2]")),
    "meta without the run": lambda data: _npz_bytes(meta=np.array(json.dumps({"format": 1}))),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_checkpoint_is_a_clear_error(damage, saved, tmp_path):
    bad = tmp_path / "damaged.ckpt"
    bad.write_bytes(DAMAGE[damage](saved["data"]))
    args = saved["args"]
    model, opt, state = fresh_run(args)
    with pytest.raises((ValueError, OSError)) as exc:
        train.load_checkpoint(str(bad), model, opt, state, args)
    assert_clear_error(str(exc.value), bad)


@pytest.mark.parametrize("damage", ["empty file", "first half", "a flipped byte in the middle",
                                    "meta that is a JSON list"])
def test_resume_from_a_damaged_checkpoint_exits_2(damage, data_dir, tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    assert cli(data_dir, "--epochs", "1", "--limit", "64", "--checkpoint", str(ckpt)) == 0
    ckpt.write_bytes(DAMAGE[damage](ckpt.read_bytes()))
    capsys.readouterr()
    try:
        status = cli(data_dir, "--epochs", "2", "--limit", "64", "--resume", str(ckpt))
    except Exception as exc:  # a crash instead of an exit status
        raise AssertionError(f"--resume crashed on a damaged checkpoint ({damage}): "
                             f"{type(exc).__name__}: {exc}") from exc
    err = capsys.readouterr().err
    assert status == 2, err
    assert_clear_error(err, ckpt)


def test_resume_refuses_a_checkpoint_of_another_model(data_dir, tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    assert cli(data_dir, "--epochs", "1", "--limit", "64", "--checkpoint", str(ckpt)) == 0
    capsys.readouterr()
    status = cli(data_dir, "--epochs", "2", "--limit", "64", "--model", "classic",
                 "--resume", str(ckpt))
    err = capsys.readouterr().err
    assert status == 2
    assert_clear_error(err, ckpt)
    assert "model" in err


def test_resume_refuses_another_models_parameters_under_a_matching_signature(
        data_dir, tmp_path, capsys):
    """The run signature says "modern" but the arrays are the classic LeNet-5's."""
    ckpt = tmp_path / "run.ckpt"
    args = run_args("--epochs", "2", "--limit", "64")
    model, opt, state = fresh_run(args, variant="classic")
    train.save_checkpoint(str(ckpt), model, opt, state, args)
    status = cli(data_dir, "--epochs", "2", "--limit", "64", "--resume", str(ckpt))
    err = capsys.readouterr().err
    assert status == 2, err
    assert_clear_error(err, ckpt)


def test_resume_refuses_a_parameter_of_the_wrong_shape(data_dir, tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    assert cli(data_dir, "--epochs", "1", "--limit", "64", "--checkpoint", str(ckpt)) == 0
    with np.load(ckpt) as archive:
        arrays = {k: archive[k] for k in archive.files}
    name = next(k for k in arrays if k.startswith("model/"))
    arrays[name] = np.zeros(arrays[name].shape + (2,), arrays[name].dtype)
    with open(ckpt, "wb") as f:
        np.savez(f, **arrays)
    capsys.readouterr()
    status = cli(data_dir, "--epochs", "2", "--limit", "64", "--resume", str(ckpt))
    err = capsys.readouterr().err
    assert status == 2, err
    assert_clear_error(err, ckpt)


def test_resume_refuses_another_optimizer(data_dir, tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    assert cli(data_dir, "--epochs", "1", "--limit", "64", "--optimizer", "adam",
               "--checkpoint", str(ckpt)) == 0
    capsys.readouterr()
    status = cli(data_dir, "--epochs", "2", "--limit", "64", "--resume", str(ckpt))
    err = capsys.readouterr().err
    assert status == 2
    assert_clear_error(err, ckpt)
    assert "optimizer" in err


def test_resume_refuses_a_weights_file_saved_with_save(data_dir, tmp_path, capsys):
    weights = tmp_path / "weights.npz"
    assert cli(data_dir, "--epochs", "1", "--limit", "64", "--save", str(weights)) == 0
    capsys.readouterr()
    status = cli(data_dir, "--epochs", "2", "--limit", "64", "--resume", str(weights))
    err = capsys.readouterr().err
    assert status == 2
    assert_clear_error(err, weights)


def test_a_format_1_checkpoint_is_refused_with_the_reason(saved, tmp_path):
    """Format 1 (before the scheduler's state was saved) is refused, saying which
    format this version reads."""
    with np.load(saved["path"]) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["scheduler"]
    meta["format"] = 1
    arrays["meta"] = np.array(json.dumps(meta))
    old = tmp_path / "old.ckpt"
    with open(old, "wb") as f:
        np.savez(f, **arrays)
    args = saved["args"]
    model, opt, state = fresh_run(args)
    with pytest.raises(ValueError, match="format 1") as exc:
        train.load_checkpoint(str(old), model, opt, state, args)
    assert_clear_error(str(exc.value), old)
    assert f"format {train.CHECKPOINT_FORMAT}" in str(exc.value)
