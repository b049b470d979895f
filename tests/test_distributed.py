"""Data-parallel training over MPI: fastconv.distributed and ``mpirun -n N fastconv-train``.

The MPI tests launch ``mpirun`` (Open MPI) subprocesses on a tiny synthetic MNIST-format
dataset written by the test; each has a hard timeout after which its whole process tree
is killed, so a hang fails the test instead of stalling the suite. They are skipped,
saying why, where ``mpirun`` or mpi4py is missing. The rest (shards, the optimiser
wrapper in one process, the thread rule, the CLI without mpi4py) runs everywhere.

Tolerance: N ranks sum N partial gradients where one process sums the whole batch, so
weights agree up to float32 rounding of the reduction, compounded over the steps. After
the 18 steps (2 epochs) of these runs the largest difference measured was 4.5e-8 with 2
and 4 ranks and 6.7e-8 with 3 (1 step: 7.5e-9, one float32 ulp of the weights); the tests
allow ``ATOL`` = 1e-6, far below one step's change of the weights (about 1e-3). The
synthetic images are noisy everywhere: on exactly equal pixels max pooling meets exact
ties, where a one-ulp difference routes a gradient to another pixel (measured: 2e-5).
"""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

import fastconv
from fastconv import distributed, nn, optim, train
from fastconv.models import LeNet5
from fastconv.weights import METADATA_KEY
from idx_helpers import write_bar_dataset

ATOL = 1e-6
TIMEOUT = 120  # seconds, per mpirun
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(train.__file__)))

MPIRUN = shutil.which("mpirun")
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
needs_mpi = pytest.mark.skipif(
    MPIRUN is None or not HAVE_MPI4PY,
    reason="needs mpirun and mpi4py: apt-get install openmpi-bin libopenmpi-dev; "
           'pip install ".[mpi]"',
)

# 98 training images in batches of 12: 8 full batches and a last one of 2, so 3 and 4
# ranks meet an uneven last batch with empty shards.
FLAGS = ["--dataset", "mnist", "--batch-size", "12", "--scheduler", "none", "--lr", "0.05",
         "--limit", "98", "--test-limit", "40", "--threads", "1", "--no-progress"]


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Train and test splits; class k is a noisy bright bar at rows 2k+4 .. 2k+5."""
    return write_bar_dataset(tmp_path_factory.mktemp("idx"), seed=7, sizes=(120, 40),
                             noisy_bars=True)


#: `python -m` and `-c` put the working directory first on sys.path: from the repository
#: root the source tree, which has no compiled kernels, would shadow the installed package.
OUTSIDE_CHECKOUT = tempfile.gettempdir()


def child_env(**extra):
    pythonpath = os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}
    env.pop("FASTCONV_NUM_THREADS", None)
    env.pop("OMP_NUM_THREADS", None)
    env.update(extra)
    return env


def trainer(*argv):
    return [sys.executable, "-m", "fastconv.train", *FLAGS, *argv]


def mpirun_command(*contexts):
    """mpirun over one or more (ranks, command) contexts (several: MPMD, ':'-separated)."""
    command = [MPIRUN, "--oversubscribe"]
    if os.geteuid() == 0:
        command.append("--allow-run-as-root")
    for i, (n, argv) in enumerate(contexts):
        command += ([":"] if i else []) + ["-n", str(n), *argv]
    return command


def descendants(pid):
    """Every process below ``pid`` (from /proc), children first."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(proc):
    """SIGKILL mpirun and everything it started (Open MPI gives ranks their own groups)."""
    for pid in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def launch(*contexts, env=None):
    """Start mpirun; returns the Popen (stdout and stderr merged, text)."""
    return subprocess.Popen(mpirun_command(*contexts), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env or child_env(),
                            start_new_session=True, cwd=OUTSIDE_CHECKOUT)


def mpirun(*contexts, env=None, timeout=TIMEOUT):
    """Run mpirun to the end; (exit status, output). A run past ``timeout`` is killed
    and fails the test."""
    proc = launch(*contexts, env=env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        pytest.fail(f"mpirun did not end within {timeout} s (hang): {proc.stdout.read()}")
    return proc.returncode, out


def weights(path):
    """The saved parameters by name (the file's metadata entry left out)."""
    with np.load(path) as archive:
        return {k: archive[k] for k in archive.files if k != METADATA_KEY}


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)


def metrics(path):
    with open(path) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "images_per_s")}
                for line in f]


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """The one-process run (in this process): its weights and log."""
    folder = tmp_path_factory.mktemp("reference")
    save, log = folder / "w.npz", folder / "log.jsonl"
    status = train.main([*FLAGS, "--data-dir", data_dir, "--epochs", "2", "--save", str(save),
                         "--log-json", str(log)])
    assert status == 0
    return weights(save), metrics(log)


def run_ranks(n, data_dir, folder, *argv):
    """``mpirun -n n fastconv-train`` for 2 epochs; (weights, log, output)."""
    folder.mkdir(exist_ok=True)
    save, log = folder / f"w{n}.npz", folder / f"log{n}.jsonl"
    status, out = mpirun((n, trainer("--data-dir", data_dir, "--epochs", "2", "--save", str(save),
                                     "--log-json", str(log), *argv)))
    assert status == 0, out
    return weights(save), metrics(log), out


# --------------------------------------------------------------------------- no MPI needed


@pytest.mark.parametrize("n, size", [(0, 1), (1, 3), (2, 3), (12, 4), (98, 12), (7, 7), (5, 1)])
def test_shards_are_contiguous_cover_the_batch_and_differ_by_at_most_one(n, size):
    bounds = [distributed.shard_bounds(n, rank, size) for rank in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(hi == lo for (_, hi), (lo, _) in zip(bounds, bounds[1:]))
    lengths = [hi - lo for lo, hi in bounds]
    assert max(lengths) - min(lengths) <= 1
    if n % size == 0:
        assert set(lengths) == {n // size}


@pytest.mark.parametrize("n, rank, size", [(-1, 0, 1), (4, 1, 1), (4, -1, 2), (4, 0, 0)])
def test_bad_shard_arguments_are_refused(n, rank, size):
    with pytest.raises(ValueError, match="rank"):
        distributed.shard_bounds(n, rank, size)


def test_launcher_detection():
    assert distributed.launched_by_mpi({"OMPI_COMM_WORLD_SIZE": "2"})
    assert distributed.launched_by_mpi({"PMI_SIZE": "2"})
    assert distributed.launched_by_mpi({"PMIX_RANK": "0"})
    assert not distributed.launched_by_mpi({"PATH": "/usr/bin"})


def test_distributed_optimizer_in_one_process_is_the_plain_optimizer():
    """With one process the wrapper changes nothing: bit for bit the plain steps."""
    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = np.arange(8) % 10
    results = []
    for wrap in (False, True):
        model, loss_fn = LeNet5(rng=3), nn.CrossEntropyLoss()
        opt = optim.Adam(model.parameters(), lr=0.01)
        if wrap:
            opt = distributed.DistributedOptimizer(opt, distributed.SingleProcess())
        for _ in range(3):
            train.train_step(model, loss_fn, opt, x, y)
        results.append([p.data.copy() for p in model.parameters()])
    for plain, wrapped in zip(*results):
        np.testing.assert_array_equal(plain, wrapped)
    assert opt.steps == 3 and opt.nbytes == 61706 * 4


def test_distributed_optimizer_refuses_mixed_dtypes():
    params = [nn.Parameter(np.zeros(2, np.float32)), nn.Parameter(np.zeros(2, np.float64))]
    with pytest.raises(ValueError, match="dtype"):
        distributed.DistributedOptimizer(optim.SGD(params, lr=0.1), distributed.SingleProcess())


class FakeNode(distributed.SingleProcess):
    """A node whose ranks report the given CPU affinities."""

    def __init__(self, affinities):
        self.affinities = affinities

    def node_allgather(self, value):
        return [value if cpus == "mine" else cpus for cpus in self.affinities]


@pytest.mark.parametrize("cpus, others, expected", [
    (8, ["mine", "mine", "mine", "mine"], 2),           # unbound: 4 ranks share 8 CPUs
    (8, ["mine", "mine", "mine"], 2),                   # 8 // 3
    (1, ["mine", (1,), (2,), (3,)], 1),                 # bound, one core each
    (4, ["mine", (4, 5, 6, 7)], 4),                     # bound to a socket each
    (2, ["mine", "mine", "mine", "mine", "mine"], 1),   # oversubscribed: at least 1
])
def test_default_threads_divide_the_cpus_among_the_ranks_sharing_them(
        cpus, others, expected, monkeypatch):
    monkeypatch.setattr(distributed, "available_cpus", lambda: cpus)
    assert distributed.default_threads(FakeNode(others)) == expected


def test_the_cli_says_how_to_install_mpi4py(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py raises ImportError
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)
    assert train.main(["--distributed", "mpi", "--dry-run"]) == 2
    assert 'pip install "fastconv[mpi]"' in capsys.readouterr().err


def test_importing_fastconv_does_not_import_mpi4py():
    code = ("import sys, fastconv, fastconv.train, fastconv.distributed; "
            "print('mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=child_env(), timeout=TIMEOUT, check=True,
                         cwd=OUTSIDE_CHECKOUT).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------- mpirun


@needs_mpi
def test_one_rank_under_mpirun_equals_the_plain_run_bit_for_bit(data_dir, reference, tmp_path):
    w, log, _ = run_ranks(1, data_dir, tmp_path)
    plain_w, plain_log = reference
    assert log == plain_log
    for key in plain_w:
        np.testing.assert_array_equal(w[key], plain_w[key], err_msg=key)


@needs_mpi
def test_two_ranks_match_one_process_and_repeat_bit_for_bit(data_dir, reference, tmp_path):
    first, log, out = run_ranks(2, data_dir, tmp_path / "first")
    second, _, _ = run_ranks(2, data_dir, tmp_path / "second")
    assert "(6 per rank x 2 ranks)" in out
    assert out.count("Epoch 1:") == 1, "only rank 0 prints"
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    plain_w, plain_log = reference
    assert max_difference(first, plain_w) <= ATOL
    assert len(log) == len(plain_log) == 2
    for record, plain in zip(log, plain_log):
        assert record["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-5)
        assert record["test_loss"] == pytest.approx(plain["test_loss"], rel=1e-5)


# ------------------------------------------------------------ a rank killed mid-run


def wait_for_line(proc, start, timeout=TIMEOUT):
    """Read the job's output up to the first line that begins with ``start``; the lines.
    A job silent past ``timeout`` is killed (its output then ends)."""
    watchdog = threading.Timer(timeout, kill_tree, [proc])
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(start):
                return lines
    finally:
        watchdog.cancel()
    raise AssertionError(f"the job ended (or was killed after {timeout} s) before printing "
                         f"{start!r}: {''.join(lines)}")


def rank_pid(mpirun_pid, rank, timeout=30):
    """The pid of ``rank`` among mpirun's descendants (from its environment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in descendants(mpirun_pid):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    environ = f.read().split(b"\0")
            except OSError:
                continue
            if f"OMPI_COMM_WORLD_RANK={rank}".encode() in environ:
                return pid
        time.sleep(0.05)
    raise AssertionError(f"rank {rank} not found under mpirun {mpirun_pid}")


@needs_mpi
@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_rank_ends_the_job_and_the_checkpoint_resumes(victim, data_dir, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    proc = launch((2, trainer("--data-dir", data_dir, "--epochs", "100000",
                              "--checkpoint", str(ckpt))))
    try:
        lines = wait_for_line(proc, "Epoch 3:")  # by then the epoch-2 checkpoint is written
        os.kill(rank_pid(proc.pid, victim), signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        pytest.fail("the job did not end after a rank was killed")
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    out = "".join(lines) + out
    assert proc.returncode != 0, out
    assert f"rank {victim}" in out and "signal 9" in out, out
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "run.ckpt"]
    assert all(name.startswith(".fastconv-ckpt-") for name in leftovers), leftovers

    # The surviving checkpoint loads, and the run resumes from it for one more epoch.
    args = train.build_parser().parse_args([*FLAGS, "--data-dir", data_dir])
    train.check_args(train.build_parser(), args)
    model = LeNet5(rng=0)
    state = train.RunState(np.random.default_rng(0))
    train.load_checkpoint(str(ckpt), model, train.make_optimizer(args, model), state, args)
    assert state.epoch >= 3 and state.batch == 0
    status, out = mpirun((2, trainer("--data-dir", data_dir, "--epochs", str(state.epoch),
                                     "--resume", str(ckpt))))
    assert status == 0, out
    assert f"Resumed from {ckpt}: epoch {state.epoch}, batch 0" in out, out
    assert out.count(f"Epoch {state.epoch}:") == 1, out


@needs_mpi
def test_ctrl_c_on_one_rank_stops_every_rank_at_the_same_batch(data_dir, tmp_path):
    """SIGINT to rank 1 alone: the ranks agree to stop before the same batch, rank 0
    saves the run state mid-epoch, all exit 130; resumed, the run ends exactly as an
    uninterrupted one on as many ranks."""
    ckpt = tmp_path / "run.ckpt"
    proc = launch((2, trainer("--data-dir", data_dir, "--epochs", "100000",
                              "--checkpoint", str(ckpt))))
    try:
        wait_for_line(proc, "Epoch 1:")
        os.kill(rank_pid(proc.pid, 1), signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert proc.returncode == 130, out
    assert "Interrupted: run state saved" in out, out
    args = train.build_parser().parse_args([*FLAGS, "--data-dir", data_dir])
    train.check_args(train.build_parser(), args)
    model = LeNet5(rng=0)
    state = train.RunState(np.random.default_rng(0))
    train.load_checkpoint(str(ckpt), model, train.make_optimizer(args, model), state, args)
    epochs = str(state.epoch)
    resumed, full = tmp_path / "resumed.npz", tmp_path / "full.npz"
    status, out = mpirun((2, trainer("--data-dir", data_dir, "--epochs", epochs,
                                     "--resume", str(ckpt), "--save", str(resumed))))
    assert status == 0 and "Resumed" in out, out
    status, out = mpirun((2, trainer("--data-dir", data_dir, "--epochs", epochs,
                                     "--save", str(full))))
    assert status == 0, out
    for key, value in weights(full).items():
        np.testing.assert_array_equal(weights(resumed)[key], value, err_msg=key)


@needs_mpi
def test_3_then_4_ranks_with_a_resume_between_match_one_process(data_dir, reference, tmp_path):
    """More ranks than cores (oversubscribed): epoch 1 on 3 ranks, then a resume on 4 for
    epoch 2. The last batch of each epoch (2 images) leaves some ranks an empty shard.
    The run ends as the one-process run ends, up to rounding."""
    ckpt = tmp_path / "run.ckpt"
    status, out = mpirun((3, trainer("--data-dir", data_dir, "--epochs", "1",
                                     "--checkpoint", str(ckpt))))
    assert status == 0 and "(4 per rank x 3 ranks)" in out, out
    w, log, out = run_ranks(4, data_dir, tmp_path, "--resume", str(ckpt))
    assert "Resumed" in out and "(3 per rank x 4 ranks)" in out, out
    plain_w, plain_log = reference
    assert max_difference(w, plain_w) <= ATOL
    assert log[-1]["test_loss"] == pytest.approx(plain_log[-1]["test_loss"], rel=1e-5)


# ------------------------------------------------------------------ bad set-ups


def offline_site(folder, version=None):
    """A sitecustomize for one rank: no download mirrors, and optionally another
    fastconv version."""
    folder.mkdir()
    lines = ["import fastconv, fastconv.data as d", "d.MIRRORS = {k: () for k in d.MIRRORS}"]
    if version:
        lines.append(f"fastconv.__version__ = {version!r}")
    (folder / "sitecustomize.py").write_text("\n".join(lines) + "\n")
    return str(folder)


def rank_1_with(env_path, *argv):
    """An MPMD context: rank 1 runs the trainer with a sitecustomize and extra flags."""
    pythonpath = os.pathsep.join([env_path, PACKAGE_ROOT])
    return ["env", f"PYTHONPATH={pythonpath}", *trainer(*argv)]


@needs_mpi
@pytest.mark.parametrize("case", ["batch not divisible", "data missing on rank 1",
                                  "other arguments on rank 1", "other version on rank 1"])
def test_a_bad_setup_stops_every_rank_with_one_message(case, data_dir, tmp_path):
    base = ["--data-dir", data_dir, "--epochs", "1"]
    rank0 = trainer(*base)
    if case == "batch not divisible":
        contexts = [(2, trainer(*base, "--batch-size", "13"))]
        expected = "--batch-size 13 is not divisible by the 2 ranks"
    elif case == "data missing on rank 1":
        missing = tmp_path / "nothing-here"
        site = offline_site(tmp_path / "site")
        rank1 = ["env", f"XDG_CACHE_HOME={tmp_path / 'cache'}", f"FASTCONV_DATA={missing}",
                 *rank_1_with(site, "--epochs", "1", "--data-dir", str(missing))]
        contexts = [(1, rank0), (1, rank1)]
        expected = "the data could not be loaded on rank 1"
    elif case == "other arguments on rank 1":
        contexts = [(1, rank0), (1, trainer(*base, "--lr", "0.06"))]
        expected = ("rank 1 differs from rank 0 in the arguments or fastconv version "
                    "(lr: rank 0 0.05, rank 1 0.06)")
    else:
        site = offline_site(tmp_path / "site", version="0.0.0+other")
        contexts = [(1, rank0), (1, rank_1_with(site, *base))]
        expected = f"(fastconv: rank 0 {fastconv.__version__!r}, rank 1 '0.0.0+other')"
    start = time.monotonic()
    status, out = mpirun(*contexts, timeout=60)
    assert status != 0, out
    assert expected in out, out
    assert out.count("fastconv-train:") == 1, f"one message, from rank 0:\n{out}"
    assert "Epoch" not in out and "Traceback" not in out, out
    assert time.monotonic() - start < 30


# ------------------------------------------------------------------ the library API

USER_LOOP = r"""
import sys
import numpy as np
from fastconv import distributed, nn, optim
from fastconv.models import LeNet5

comm = distributed.Communicator()
model = LeNet5(rng=100 + comm.rank)        # different on every rank until the broadcast
distributed.broadcast_parameters(model, comm)
loss_fn = nn.CrossEntropyLoss()
opt = distributed.DistributedOptimizer(
    optim.SGD(model.parameters(), lr=0.05, momentum=0.9), comm)
data = np.random.default_rng(5)
x = data.standard_normal((48, 1, 28, 28)).astype(np.float32)
y = data.integers(0, 10, 48)
for step in range(4):
    xb, yb = x[12 * step:12 * step + 12], y[12 * step:12 * step + 12]
    lo, hi = distributed.shard_bounds(len(yb), comm.rank, comm.size)
    logits = model(xb[lo:hi])
    loss_fn(logits, yb[lo:hi])
    opt.zero_grad()
    model.backward(loss_fn.backward())
    opt.step()
flat = np.concatenate([p.data.ravel() for p in model.parameters()])
identical = all(np.array_equal(flat, other) for other in comm.allgather(flat))
if comm.rank == 0:
    np.save(sys.argv[1], flat)
    print("identical on every rank:", identical, "bytes per step:", opt.nbytes)
"""


@needs_mpi
def test_a_users_own_loop_with_the_distributed_optimizer(tmp_path):
    script, result = tmp_path / "loop.py", tmp_path / "flat.npy"
    script.write_text(USER_LOOP)
    status, out = mpirun((2, [sys.executable, str(script), str(result)]))
    assert status == 0, out
    assert "identical on every rank: True" in out and "bytes per step: 246824" in out, out

    # The same loop in one process, on whole batches from rank 0's initial weights.
    model, loss_fn = LeNet5(rng=100), nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = np.random.default_rng(5)
    x = data.standard_normal((48, 1, 28, 28)).astype(np.float32)
    y = data.integers(0, 10, 48)
    for step in range(4):
        train.train_step(model, loss_fn, opt, x[12 * step:12 * step + 12],
                         y[12 * step:12 * step + 12])
    flat = np.concatenate([p.data.ravel() for p in model.parameters()])
    np.testing.assert_allclose(np.load(result), flat, rtol=0, atol=ATOL)
