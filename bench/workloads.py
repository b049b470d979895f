"""Turn the benchmark cases of ``cases.py`` into timed callables for fastconv and PyTorch.

One workload class per op kind.  A workload makes its inputs from a seeded generator and
offers, per mode (``"fwd"``, ``"fwd+bwd"``, later e.g. ``"step"``), a fastconv function and a
PyTorch function of those inputs plus the work one call does.  ``bind()`` returns zero-argument
callables ready to time, so the pytest suites and ``compare.py`` time exactly the same code.

PyTorch is optional: without it ``HAVE_TORCH`` is false and the torch callables are ``None``.

Adding an op kind: subclass ``Workload``, fill ``modes`` and the methods they name, and register
the class in ``WORKLOADS`` under the case's ``kind``.
"""

from __future__ import annotations

import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Optional

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)


def _prefer_checkout() -> None:
    """Benchmark the fastconv of this checkout when it has been built in place.

    ``python bench/compare.py`` puts ``bench/`` on ``sys.path``, not the repository root, so an
    in-place build (``setup.py build_ext --inplace``) would not be found.  A checkout without
    compiled extensions is left alone so that an installed fastconv is used instead.
    """
    pkg = os.path.join(REPO_ROOT, "fastconv")
    if not os.path.isdir(pkg) or REPO_ROOT in sys.path:
        return
    for _, _, files in os.walk(pkg):
        if any(f.endswith((".so", ".pyd")) for f in files):
            sys.path.insert(0, REPO_ROOT)
            return


_prefer_checkout()

import fastconv  # noqa: E402

import onnx_anchor  # noqa: E402
from cases import flops, traffic_bytes  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # PyTorch is optional
    torch = None
    F = None

HAVE_TORCH = torch is not None
ALGORITHMS = ("direct", "im2col", "winograd", "auto")

#: rate unit -> work per second that makes one unit (GFLOP/s: 1e9 flops per second)
UNIT_SCALE = {"GFLOP/s": 1e9, "GB/s": 1e9, "img/s": 1.0}


def rate(work: float, seconds: float, unit: str) -> float:
    """``work`` done in ``seconds`` expressed in ``unit`` (see ``UNIT_SCALE``)."""
    return work / seconds / UNIT_SCALE.get(unit, 1e9)


def set_threads(n: Optional[int] = None) -> int:
    """Use ``n`` threads (default: fastconv's current setting) in fastconv and PyTorch alike."""
    if n is not None:
        fastconv.set_num_threads(n)
    n = fastconv.get_num_threads()
    if HAVE_TORCH:
        torch.set_num_threads(n)
    return n


def machine_limits(threads: int, refresh: bool = False):
    """fastconv's measured FMA peak and copy bandwidth at ``threads`` threads
    (``fastconv.machine_limits``), or None for a fastconv without the probes."""
    probe = getattr(fastconv, "machine_limits", None)
    return probe(threads, refresh=refresh) if probe is not None else None


def versions() -> dict[str, str]:
    """Versions and thread counts for report headers."""
    info = {
        "fastconv": getattr(fastconv, "__version__", "?"),
        "fastconv_path": os.path.dirname(getattr(fastconv, "__file__", "?") or "?"),
        "fastconv_threads": str(fastconv.get_num_threads()),
        "numpy": np.__version__,
        "torch": torch.__version__ if HAVE_TORCH else "not installed",
    }
    if HAVE_TORCH:
        info["torch_threads"] = str(torch.get_num_threads())
    return info


def _accepts(func: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):  # no signature available: do not pass optional keywords
        return False


@dataclass
class Timed:
    """One thing to time: a mode of a workload, bound to its inputs."""

    mode: str
    fastconv: Callable[[], Any]
    torch: Optional[Callable[[], Any]]
    work: float  # flops or bytes per call, see ``unit``
    unit: str
    #: context manager factory to hold around timed fastconv calls (None: nothing)
    fastconv_context: Optional[Callable[[], ContextManager]] = None
    #: the same forward in ONNX Runtime, the second anchor (None: not for this mode, or
    #: onnxruntime not installed)
    onnx: Optional[Callable[[], Any]] = None


class Workload:
    """Base class: a case, a dtype and a fastconv algorithm."""

    #: (mode, fastconv method, torch method) in table order
    modes: tuple[tuple[str, str, str], ...] = ()
    #: rate unit of ``work()``: "GFLOP/s" (work in flops), "GB/s" (work in bytes) or
    #: "img/s" (work in images)
    unit = "GFLOP/s"
    #: the mode whose fastconv call ``compare.py`` measures memory of
    memory_mode = "fwd+bwd"
    #: why ONNX Runtime could not run this case (set by ``bind``), or None
    onnx_unavailable: Optional[str] = None

    def __init__(self, case, dtype: str = "float32", algorithm: str = "auto"):
        self.case = case
        self.dtype = np.dtype(dtype)
        self.algorithm = algorithm

    def make_inputs(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def torch_inputs(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        raise NotImplementedError

    def work(self, mode: str) -> float:
        raise NotImplementedError

    def fastconv_context(self) -> Optional[ContextManager]:
        """A context to hold around timed fastconv calls, or None (the default)."""
        return None

    def _random(self, rng: np.random.Generator, shape) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float64).astype(self.dtype)

    def onnx_forward(self, inputs: dict[str, Any], threads: int) -> Optional[Callable[[], Any]]:
        """The forward in ONNX Runtime over ``inputs`` (``onnx_anchor``), or None where the
        kind has no ONNX counterpart (the default)."""
        return None

    def bind(self, rng: np.random.Generator, with_torch: bool = True,
             with_onnx: bool = False) -> list[Timed]:
        """Make the inputs once and return one ``Timed`` per mode (the "fwd" mode with its
        ONNX Runtime forward when ``with_onnx`` and onnxruntime is installed)."""
        inputs = self.make_inputs(rng)
        tinputs = self.torch_inputs(inputs) if (with_torch and HAVE_TORCH) else None
        onnx_fwd = None
        if with_onnx and onnx_anchor.HAVE_ORT:
            try:
                onnx_fwd = self.onnx_forward(inputs, fastconv.get_num_threads())
            except Exception as exc:  # e.g. no float64 Conv in ONNX Runtime's CPU provider
                self.onnx_unavailable = str(exc).strip().splitlines()[-1][:160]
        timed = []
        for mode, fc_name, torch_name in self.modes:
            fc_method = getattr(self, fc_name)
            torch_method = getattr(self, torch_name)
            timed.append(
                Timed(
                    mode=mode,
                    fastconv=lambda m=fc_method: m(inputs),
                    torch=None if tinputs is None else (lambda m=torch_method: m(tinputs)),
                    work=self.work(mode),
                    unit=self.unit,
                    fastconv_context=self.fastconv_context,
                    onnx=onnx_fwd if mode == "fwd" else None,
                )
            )
        return timed


class Conv2dWorkload(Workload):
    """``conv2d`` forward, and forward followed by ``conv2d_backward`` (with grad input)."""

    modes = (
        ("fwd", "fastconv_fwd", "torch_fwd"),
        ("fwd+bwd", "fastconv_fwdbwd", "torch_fwdbwd"),
    )

    def __init__(self, case, dtype: str = "float32", algorithm: str = "auto"):
        super().__init__(case, dtype, algorithm)
        c = case
        self.params = dict(stride=c.stride, padding=c.padding, dilation=c.dilation, groups=c.groups)
        self.backward_kwargs = {"needs_input_grad": True}
        if _accepts(fastconv.conv2d_backward, "algorithm"):
            self.backward_kwargs["algorithm"] = algorithm

    def make_inputs(self, rng):
        c = self.case
        return {
            "x": self._random(rng, c.x_shape),
            "w": self._random(rng, c.w_shape),
            "b": self._random(rng, (c.out_channels,)) if c.bias else None,
            "gy": self._random(rng, c.y_shape),
        }

    def work(self, mode):
        return flops(self.case, backward=(mode == "fwd+bwd"))

    # fastconv -----------------------------------------------------------------------

    def fastconv_fwd(self, inp):
        return fastconv.conv2d(inp["x"], inp["w"], inp["b"], **self.params, algorithm=self.algorithm)

    def fastconv_fwdbwd(self, inp):
        y = fastconv.conv2d(inp["x"], inp["w"], inp["b"], **self.params, algorithm=self.algorithm)
        grads = fastconv.conv2d_backward(inp["gy"], inp["x"], inp["w"], **self.params, **self.backward_kwargs)
        return y, grads

    def onnx_forward(self, inputs, threads):
        return onnx_anchor.conv_forward(self.case, inputs, threads)

    # PyTorch ------------------------------------------------------------------------

    def torch_inputs(self, inp):
        (pt, pb), (pl, pr) = self.case.pads
        t = {k: (None if v is None else torch.from_numpy(v)) for k, v in inp.items()}
        # leaves for autograd; they share memory with the NumPy inputs, which nothing writes
        t["x_req"] = t["x"].detach().requires_grad_()
        t["w_req"] = t["w"].detach().requires_grad_()
        t["b_req"] = None if t["b"] is None else t["b"].detach().requires_grad_()
        if pt == pb and pl == pr:
            t["padding"], t["pre_pad"] = (pt, pl), None
        else:  # torch.nn.functional.conv2d takes symmetric padding only: pad explicitly
            t["padding"], t["pre_pad"] = 0, (pl, pr, pt, pb)
        return t

    def _torch_conv(self, t, x, w, b):
        c = self.case
        if t["pre_pad"] is not None:
            x = F.pad(x, t["pre_pad"])
        return F.conv2d(x, w, b, stride=c.stride, padding=t["padding"], dilation=c.dilation, groups=c.groups)

    def torch_fwd(self, t):
        with torch.no_grad():
            return self._torch_conv(t, t["x"], t["w"], t["b"])

    def torch_fwdbwd(self, t):
        leaves = [v for v in (t["x_req"], t["w_req"], t["b_req"]) if v is not None]
        for leaf in leaves:  # fresh gradients every call, as fastconv returns new arrays
            leaf.grad = None
        y = self._torch_conv(t, t["x_req"], t["w_req"], t["b_req"])
        y.backward(t["gy"])
        return y, [leaf.grad for leaf in leaves]


class ConvTranspose2dWorkload(Workload):
    """``conv_transpose2d`` forward, and forward followed by its backward (with grad input)."""

    modes = (
        ("fwd", "fastconv_fwd", "torch_fwd"),
        ("fwd+bwd", "fastconv_fwdbwd", "torch_fwdbwd"),
    )

    def __init__(self, case, dtype: str = "float32", algorithm: str = "auto"):
        super().__init__(case, dtype, algorithm)
        c = case
        self.params = dict(stride=c.stride, padding=c.padding, output_padding=c.output_padding,
                           groups=c.groups)

    def make_inputs(self, rng):
        c = self.case
        return {
            "x": self._random(rng, c.x_shape),
            "w": self._random(rng, c.w_shape),
            "b": self._random(rng, (c.out_channels,)) if c.bias else None,
            "gy": self._random(rng, c.y_shape),
        }

    def work(self, mode):
        return flops(self.case, backward=(mode == "fwd+bwd"))

    def onnx_forward(self, inputs, threads):
        return onnx_anchor.conv_forward(self.case, inputs, threads)

    def fastconv_fwd(self, inp):
        return fastconv.conv_transpose2d(inp["x"], inp["w"], inp["b"], **self.params,
                                         algorithm=self.algorithm)

    def fastconv_fwdbwd(self, inp):
        y = self.fastconv_fwd(inp)
        grads = fastconv.conv_transpose2d_backward(inp["gy"], inp["x"], inp["w"], **self.params,
                                                   algorithm=self.algorithm)
        return y, grads

    def torch_inputs(self, inp):
        t = {k: (None if v is None else torch.from_numpy(v)) for k, v in inp.items()}
        t["x_req"] = t["x"].detach().requires_grad_()
        t["w_req"] = t["w"].detach().requires_grad_()
        t["b_req"] = None if t["b"] is None else t["b"].detach().requires_grad_()
        return t

    def _torch_op(self, x, w, b):
        c = self.case
        return F.conv_transpose2d(x, w, b, stride=c.stride, padding=c.padding,
                                  output_padding=c.output_padding, groups=c.groups)

    def torch_fwd(self, t):
        with torch.no_grad():
            return self._torch_op(t["x"], t["w"], t["b"])

    def torch_fwdbwd(self, t):
        leaves = [v for v in (t["x_req"], t["w_req"], t["b_req"]) if v is not None]
        for leaf in leaves:
            leaf.grad = None
        y = self._torch_op(t["x_req"], t["w_req"], t["b_req"])
        y.backward(t["gy"])
        return y, [leaf.grad for leaf in leaves]


class Pool2dWorkload(Workload):
    """Max or average pooling forward, and forward followed by its backward."""

    modes = (
        ("fwd", "fastconv_fwd", "torch_fwd"),
        ("fwd+bwd", "fastconv_fwdbwd", "torch_fwdbwd"),
    )
    unit = "GB/s"

    def __init__(self, case, dtype: str = "float32", algorithm: str = "auto"):
        super().__init__(case, dtype, algorithm)  # pooling has one algorithm
        self.params = dict(kernel_size=case.kernel, stride=case.stride, padding=case.padding)

    def make_inputs(self, rng):
        return {"x": self._random(rng, self.case.x_shape),
                "gy": self._random(rng, self.case.y_shape)}

    def work(self, mode):
        return traffic_bytes(self.case, self.dtype.itemsize, backward=(mode == "fwd+bwd"))

    def onnx_forward(self, inputs, threads):
        return onnx_anchor.pool_forward(self.case, inputs, threads)

    def fastconv_fwd(self, inp):
        if self.case.op == "max":
            return fastconv.max_pool2d(inp["x"], **self.params)
        return fastconv.avg_pool2d(inp["x"], **self.params)

    def fastconv_fwdbwd(self, inp):
        x = inp["x"]
        if self.case.op == "max":
            y, idx = fastconv.max_pool2d(x, **self.params, return_indices=True)
            return y, fastconv.max_pool2d_backward(inp["gy"], idx, x.shape)
        y = fastconv.avg_pool2d(x, **self.params)
        return y, fastconv.avg_pool2d_backward(inp["gy"], x.shape, **self.params)

    def torch_inputs(self, inp):
        t = {k: torch.from_numpy(v) for k, v in inp.items()}
        t["x_req"] = t["x"].detach().requires_grad_()
        return t

    def _torch_op(self, x):
        if self.case.op == "max":
            return F.max_pool2d(x, **self.params)
        return F.avg_pool2d(x, **self.params)

    def torch_fwd(self, t):
        with torch.no_grad():
            return self._torch_op(t["x"])

    def torch_fwdbwd(self, t):
        t["x_req"].grad = None
        y = self._torch_op(t["x_req"])
        y.backward(t["gy"])
        return y, t["x_req"].grad


class DenormalConv2dWorkload(Conv2dWorkload):
    """``conv2d`` forward with normal weights, with denormal weights, and with denormal
    weights while denormals are flushed to zero (``set_flush_denormal`` in both libraries).

    The flushing mode is switched only when the mode changes, not around every call:
    switching wakes fastconv's worker threads, which would be timed too. The last case
    leaves flushing on.
    """

    modes = (
        ("normal", "fastconv_normal", "torch_normal"),
        ("denormal", "fastconv_denormal", "torch_denormal"),
        ("denormal+flush", "fastconv_flush", "torch_flush"),
    )

    def make_inputs(self, rng):
        inp = super().make_inputs(rng)
        inp["w_denormal"] = inp["w"] * (np.finfo(self.dtype).tiny / 4)
        return inp

    def work(self, mode):
        return flops(self.case)

    @staticmethod
    def _flush(enabled):
        if fastconv.get_flush_denormal() != enabled:
            fastconv.set_flush_denormal(enabled)
            if HAVE_TORCH:  # the calling thread's mode, which both libraries share
                torch.set_flush_denormal(enabled)

    def _conv(self, inp, w):
        return fastconv.conv2d(inp["x"], w, inp["b"], **self.params, algorithm=self.algorithm)

    def fastconv_normal(self, inp):
        self._flush(False)
        return self._conv(inp, inp["w"])

    def fastconv_denormal(self, inp):
        self._flush(False)
        return self._conv(inp, inp["w_denormal"])

    def fastconv_flush(self, inp):
        self._flush(True)
        return self._conv(inp, inp["w_denormal"])

    def torch_normal(self, t):
        self._flush(False)
        return self.torch_fwd(t)

    def torch_denormal(self, t):
        self._flush(False)
        with torch.no_grad():
            return self._torch_conv(t, t["x"], t["w_denormal"], t["b"])

    def torch_flush(self, t):
        self._flush(True)
        with torch.no_grad():
            return self._torch_conv(t, t["x"], t["w_denormal"], t["b"])


def lenet5_fastconv(variant: str, dtype: np.dtype, algorithm: str, rng):
    """fastconv's LeNet-5, its convolutions on ``algorithm`` (LeNet5 builds them "auto")."""
    from fastconv.models import LeNet5

    model = LeNet5(variant, dtype=dtype, rng=rng)
    if algorithm != "auto":
        for layer in model:
            if hasattr(layer, "algorithm"):
                layer.algorithm = algorithm
    return model


def lenet5_torch_copy(model, dtype: np.dtype):
    """``lenet_torch.lenet5()`` with the weights of fastconv's ``model``, in ``dtype``."""
    import lenet_torch

    copy = lenet_torch.lenet5()
    state = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
    copy.load_state_dict(state)
    return copy.to(torch.float64 if dtype == np.float64 else torch.float32)


class TrainStepWorkload(Workload):
    """One training step of LeNet-5: fastconv as ``fastconv-train`` runs it, and its torch twin.

    fastconv: ``fastconv.models.LeNet5``, ``fastconv.nn.CrossEntropyLoss`` and
    ``fastconv.optim.SGD``, stepped by ``fastconv.train.train_step`` (the trainer's own step)
    with BLAS held single-threaded around the timed calls, as the trainer holds it for the
    whole run.  torch: ``bench/lenet_torch.py``'s network, started from the same weights,
    ``torch.nn.CrossEntropyLoss`` and ``torch.optim.SGD`` with the same settings.

    Each call trains on the next batch of a seeded pool of random images and labels (both
    libraries see the same batches in the same order).  The pool is large enough that the
    model cannot memorise it within a benchmark run, so the gradients stay of training size
    instead of vanishing into denormals.
    """

    modes = (("step", "fastconv_step", "torch_step"),)
    unit = "img/s"
    memory_mode = "step"
    #: batches in the pool of inputs
    pool_batches = 32

    def make_inputs(self, rng):
        from fastconv import nn
        from fastconv.optim import SGD

        c = self.case
        x = self._random(rng, (self.pool_batches, *c.x_shape))
        y = rng.integers(0, c.classes, size=(self.pool_batches, c.batch), dtype=np.int64)
        model = lenet5_fastconv(c.variant, self.dtype, self.algorithm, rng)
        model.train()
        return {
            "x": x, "y": y, "model": model, "loss": nn.CrossEntropyLoss(),
            "opt": SGD(model.parameters(), lr=c.lr, momentum=c.momentum),
            "next": [0],  # index of the next batch, per library
        }

    def work(self, mode):
        return float(self.case.batch)

    def fastconv_context(self):
        from fastconv._blas import single_threaded_blas

        return single_threaded_blas()

    def fastconv_step(self, inp):
        from fastconv.train import train_step

        i = inp["next"][0]
        inp["next"][0] = (i + 1) % self.pool_batches
        return train_step(inp["model"], inp["loss"], inp["opt"], inp["x"][i], inp["y"][i])

    def torch_inputs(self, inp):
        model = lenet5_torch_copy(inp["model"], self.dtype)
        model.train()
        return {
            "x": torch.from_numpy(inp["x"]), "y": torch.from_numpy(inp["y"]), "model": model,
            "loss": torch.nn.CrossEntropyLoss(),
            "opt": torch.optim.SGD(model.parameters(), lr=self.case.lr, momentum=self.case.momentum),
            "next": [0],
        }

    def torch_step(self, t):
        import lenet_torch

        i = t["next"][0]
        t["next"][0] = (i + 1) % self.pool_batches
        return lenet_torch.train_step(t["model"], t["loss"], t["opt"], t["x"][i], t["y"][i])


class InferenceWorkload(Workload):
    """A whole LeNet-5 forward in eval mode, against the same network and weights in
    PyTorch (``lenet_torch.lenet5``) and in ONNX Runtime (``onnx_anchor.lenet5_forward``)."""

    modes = (("fwd", "fastconv_fwd", "torch_fwd"),)
    unit = "img/s"
    memory_mode = "fwd"

    def make_inputs(self, rng):
        model = lenet5_fastconv(self.case.variant, self.dtype, self.algorithm, rng)
        model.eval()
        return {"x": self._random(rng, self.case.x_shape), "model": model}

    def work(self, mode):
        return float(self.case.batch)

    def fastconv_fwd(self, inp):
        return inp["model"](inp["x"])

    def onnx_forward(self, inputs, threads):
        state = {k: np.asarray(v) for k, v in inputs["model"].state_dict().items()}
        return onnx_anchor.lenet5_forward(state, inputs["x"], threads)

    def torch_inputs(self, inp):
        model = lenet5_torch_copy(inp["model"], self.dtype).eval()
        return {"x": torch.from_numpy(inp["x"]), "model": model}

    def torch_fwd(self, t):
        with torch.no_grad():
            return t["model"](t["x"])


#: op kind -> workload class
WORKLOADS: dict[str, type[Workload]] = {
    "conv2d": Conv2dWorkload,
    "conv_transpose2d": ConvTranspose2dWorkload,
    "pool2d": Pool2dWorkload,
    "conv2d_denormal": DenormalConv2dWorkload,
    "train_step": TrainStepWorkload,
    "inference": InferenceWorkload,
}


def workload(case, dtype: str = "float32", algorithm: str = "auto") -> Workload:
    """The workload for ``case``, whatever its op kind."""
    return WORKLOADS[case.kind](case, dtype=dtype, algorithm=algorithm)
