"""fastconv-train's run state and its checkpoint files (written atomically).

A checkpoint is an ``.npz``: the model's arrays (``model/NAME``), the optimiser's
per-parameter arrays (``optim/I/KEY``) and one JSON ``meta`` entry with the run's
signature, the optimiser's scalars, the scheduler's state and the position in the
run (:class:`RunState`). ``fastconv.train`` re-exports everything here.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Any, TypeAlias

import numpy as np

from fastconv import nn, optim

#: The learning-rate schedulers a checkpoint can hold.
Scheduler: TypeAlias = "optim.StepLR | optim.CosineAnnealingLR"

#: Version of the checkpoint layout. 2: the learning-rate scheduler's state is saved
#: (``meta["scheduler"]``); format 1 (no scheduler state) is refused.
CHECKPOINT_FORMAT = 2


class RunState:
    """Everything a checkpoint holds besides model and optimiser: where the run is."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.epoch = 1          # the epoch in progress (1-based)
        self.batch = 0          # next batch of that epoch
        self.epoch_rng_state = rng.bit_generator.state  # shuffling RNG at the epoch's start
        self.sums: dict[str, float] = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.history: list[dict[str, Any]] = []

    def as_meta(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch, "epoch_rng_state": self.epoch_rng_state,
                "sums": self.sums, "history": self.history}

    def load_meta(self, meta: Mapping[str, Any]) -> None:
        self.epoch, self.batch = int(meta["epoch"]), int(meta["batch"])
        self.epoch_rng_state = meta["epoch_rng_state"]
        self.sums = dict(meta["sums"])
        self.history = list(meta["history"])


def run_signature(args: argparse.Namespace) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it."""
    signature = {"dataset": args.dataset, "model": args.model, "optimizer": args.optimizer,
                 "batch_size": args.batch_size, "limit": args.limit, "seed": args.seed,
                 "scheduler": args.scheduler}
    if args.scheduler == "cosine":  # the schedule spans the run's epochs
        signature["epochs"] = args.epochs
    return signature


def save_checkpoint(path: str, model: nn.Module, opt: optim.Optimizer, state: RunState,
                    args: argparse.Namespace, scheduler: Scheduler | None = None) -> None:
    """Write the run state to ``path`` atomically (a temp file, then a rename)."""
    arrays = {f"model/{name}": value for name, value in model.state_dict().items()}
    opt_state = opt.state_dict()
    for i, entry in enumerate(opt_state["state"]):
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                arrays[f"optim/{i}/{key}"] = value
    scalars = [{k: v for k, v in entry.items() if not isinstance(v, np.ndarray)}
               for entry in opt_state["state"]]
    meta = {"format": CHECKPOINT_FORMAT, "run": run_signature(args), "lr": opt_state["lr"],
            "optim_scalars": scalars,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            **state.as_meta()}
    arrays["meta"] = np.array(json.dumps(meta))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".fastconv-ckpt-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            # (mypy: a ** key could fill savez's allow_pickle; no entry has that name)
            np.savez(f, **arrays)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str, model: nn.Module, opt: optim.Optimizer, state: RunState,
                    args: argparse.Namespace, scheduler: Scheduler | None = None,
                    content: bytes | None = None) -> None:
    """Restore model, optimiser, scheduler and run state; refuses a checkpoint of another
    run or of another format. ``content``: the file's bytes, already read (a
    distributed run reads the file on rank 0 alone and broadcasts them); ``path`` then
    only names it in messages."""
    try:
        source = path if content is None else io.BytesIO(content)
        with np.load(source, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from None
    if "meta" not in arrays:
        raise ValueError(f"{path} is not a fastconv-train checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except ValueError as exc:
        raise ValueError(f"{path}: the checkpoint's 'meta' entry is not JSON: {exc}") from None
    if isinstance(meta, dict) and meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {meta.get('format')!r} is not supported "
                         f"(this fastconv-train reads format {CHECKPOINT_FORMAT}; format 1 came "
                         f"from an earlier version without scheduler state): start a new run, "
                         f"or finish this one with the version that wrote it")
    required = ("format", "run", "lr", "optim_scalars", "scheduler", "epoch", "batch",
                "epoch_rng_state", "sums", "history")
    if not isinstance(meta, dict) or any(key not in meta for key in required):
        raise ValueError(f"{path}: the checkpoint's 'meta' entry is damaged (expected an object "
                         f"with {', '.join(required)})")
    mismatched = {k: (meta["run"].get(k), v) for k, v in run_signature(args).items()
                  if meta["run"].get(k) != v}
    if mismatched:
        details = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in mismatched.items())
        raise ValueError(f"checkpoint {path} belongs to a different run ({details})")
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    try:
        model.load_state_dict(model_state)
    except ValueError as exc:
        raise ValueError(f"checkpoint {path} does not fit this model: {exc}") from None
    entries = [dict(scalars) for scalars in meta["optim_scalars"]]
    for key, value in arrays.items():
        if key.startswith("optim/"):
            _, i, name = key.split("/", 2)
            entries[int(i)][name] = value
    opt.load_state_dict({"lr": meta["lr"], "state": entries})
    if scheduler is not None:
        if not isinstance(meta["scheduler"], dict):
            raise ValueError(f"checkpoint {path} holds no scheduler state")
        scheduler.load_state_dict(meta["scheduler"])
    state.load_meta(meta)
