"""Benchmark cases for fastconv, shared by the pytest-benchmark suites and ``compare.py``.

A case is plain data: shapes and parameters, no arrays and no imports of fastconv or torch,
so it can be listed, filtered and printed anywhere.  ``workloads.py`` turns a case into
callables for fastconv and PyTorch.

Dimension legend: N batch, C input channels, H, W input height and width, K output channels,
KH, KW kernel height and width, OH, OW output height and width.

Work convention (what the GFLOP/s columns mean)
-----------------------------------------------
* Forward: ``2 * N * K * OH * OW * (C / groups) * KH * KW`` floating-point operations, one
  multiply and one add per multiply-accumulate of the direct definition.  The bias add,
  padding and any algorithm's extra work (im2col copies) are not counted, so every algorithm
  of one case is credited with the same work and GFLOP/s compare like for like.
* Forward + backward (``needs_input_grad=True``): 3x forward.  The grad input and the grad
  weight each need as many multiply-accumulates as the forward pass; the grad bias (a sum
  over N, OH, OW) is not counted.

Adding an op kind (transposed conv, pooling, a training step) means: a dataclass here with a
``kind`` and a ``name``, a list of its cases appended to ``ALL_CASES``, and a workload class
for that kind in ``workloads.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Union

IntPair = Union[int, tuple[int, int]]
Padding = Union[int, tuple[int, int], tuple[tuple[int, int], tuple[int, int]], str]


# ---------------------------------------------------------------------------------------
# shape helpers (the benchmarks' own, written from the documented semantics)
# ---------------------------------------------------------------------------------------


def pair(value: IntPair) -> tuple[int, int]:
    """Return ``(h, w)`` from an int or a pair."""
    if isinstance(value, int):
        return (value, value)
    h, w = value
    return (int(h), int(w))


def out_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    """Output length of one axis of a convolution or pooling window."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def explicit_padding(
    padding: Padding,
    in_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Return ``((top, bottom), (left, right))`` for any accepted ``padding`` form.

    ``"same"`` follows TensorFlow: the output is ``ceil(in / stride)`` and an odd total
    padding puts the extra row/column at the bottom/right.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        sides = []
        for size, k, s, d in zip(in_hw, kernel, stride, dilation):
            span = d * (k - 1)
            if mode == "valid":
                sides.append((0, 0))
            elif mode == "full":
                sides.append((span, span))
            elif mode == "same":
                total = max((math.ceil(size / s) - 1) * s + span + 1 - size, 0)
                sides.append((total // 2, total - total // 2))
            else:
                raise ValueError(f"padding={padding!r}: expected 'valid', 'same' or 'full'")
        return (sides[0], sides[1])
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    ph, pw = padding
    if isinstance(ph, int) and isinstance(pw, int):
        return ((ph, ph), (pw, pw))
    return ((int(ph[0]), int(ph[1])), (int(pw[0]), int(pw[1])))


def _dtype_text(case) -> str:
    """`` float64`` where a case fixes its dtype, else nothing (the run's dtype applies)."""
    return f" {case.dtype}" if getattr(case, "dtype", None) else ""


# ---------------------------------------------------------------------------------------
# conv2d
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conv2dCase:
    """One conv2d benchmark shape: ``x`` is (N, C, H, W), ``w`` is (K, C/groups, KH, KW)."""

    name: str
    x_shape: tuple[int, int, int, int]
    out_channels: int
    kernel: IntPair
    stride: IntPair = 1
    padding: Padding = 0
    dilation: IntPair = 1
    groups: int = 1
    bias: bool = True
    #: the case's own dtype ("float32", "float64"); None: the run's ``--dtype``
    dtype: str | None = None

    kind = "conv2d"

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        kh, kw = pair(self.kernel)
        return (self.out_channels, self.x_shape[1] // self.groups, kh, kw)

    @property
    def pads(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Padding as ``((top, bottom), (left, right))``."""
        return explicit_padding(
            self.padding, self.x_shape[2:], pair(self.kernel), pair(self.stride), pair(self.dilation)
        )

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        n, _, h, w = self.x_shape
        (kh, kw), (sh, sw), (dh, dw) = pair(self.kernel), pair(self.stride), pair(self.dilation)
        (pt, pb), (pl, pr) = self.pads
        return (n, self.out_channels, out_size(h, kh, sh, pt + pb, dh), out_size(w, kw, sw, pl + pr, dw))

    def describe(self) -> str:
        """Short human description, e.g. ``8x64x56x56 64@3x3 s1 p1 d1``."""
        kh, kw = pair(self.kernel)
        text = f"{'x'.join(map(str, self.x_shape))} {self.out_channels}@{kh}x{kw}"
        sh, sw = pair(self.stride)
        dh, dw = pair(self.dilation)
        if (sh, sw) != (1, 1):
            text += f" s{sh}" if sh == sw else f" s{sh},{sw}"
        if isinstance(self.padding, str):
            text += f" p={self.padding}"
        elif self.padding not in (0, (0, 0)):
            text += f" p{self.padding}" if isinstance(self.padding, int) else f" p{self._pad_text()}"
        if (dh, dw) != (1, 1):
            text += f" d{dh}" if dh == dw else f" d{dh},{dw}"
        if self.groups != 1:
            text += f" g{self.groups}"
        return text + _dtype_text(self)

    def _pad_text(self) -> str:
        """``3,0`` for symmetric per-axis padding, else the explicit sides."""
        (pt, pb), (pl, pr) = self.pads
        return f"{pt},{pl}" if (pt, pl) == (pb, pr) else str(self.pads)


CONV2D_CASES: list[Conv2dCase] = [
    Conv2dCase("lenet-C1", (64, 1, 32, 32), 6, 5),
    Conv2dCase("lenet-C3", (64, 6, 14, 14), 16, 5),
    Conv2dCase("3x3-64-56", (8, 64, 56, 56), 64, 3, padding=1),
    Conv2dCase("3x3s2-128-28", (8, 128, 28, 28), 256, 3, stride=2, padding=1),
    Conv2dCase("1x1-256-14", (8, 256, 14, 14), 256, 1),
    Conv2dCase("3x3d2-64-56", (8, 64, 56, 56), 64, 3, padding=2, dilation=2),
    Conv2dCase("7x7s2-3-224", (8, 3, 224, 224), 64, 7, stride=2, padding=3),
]

# ---------------------------------------------------------------------------------------
# conv_transpose2d
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvTranspose2dCase:
    """One conv_transpose2d shape: ``x`` is (N, C, H, W), ``w`` is (C, K/groups, KH, KW).

    Work: every input pixel meets every (K/groups) x KH x KW tap once, so the forward is
    ``2 * N * C * H * W * (K / groups) * KH * KW`` flops; forward + backward is 3x that.
    """

    name: str
    x_shape: tuple[int, int, int, int]
    out_channels: int
    kernel: IntPair
    stride: IntPair = 1
    padding: IntPair = 0
    output_padding: IntPair = 0
    groups: int = 1
    bias: bool = True
    #: the case's own dtype; None: the run's ``--dtype``
    dtype: str | None = None

    kind = "conv_transpose2d"

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        kh, kw = pair(self.kernel)
        return (self.x_shape[1], self.out_channels // self.groups, kh, kw)

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        n, _, h, w = self.x_shape
        sizes = [
            (size - 1) * s - 2 * p + (k - 1) + op + 1
            for size, s, p, k, op in zip(
                (h, w), pair(self.stride), pair(self.padding), pair(self.kernel),
                pair(self.output_padding),
            )
        ]
        return (n, self.out_channels, *sizes)

    def describe(self) -> str:
        kh, kw = pair(self.kernel)
        text = f"{'x'.join(map(str, self.x_shape))} ->{self.out_channels} {kh}x{kw}"
        text += f" s{self.stride}" if self.stride != 1 else ""
        text += f" p{self.padding}" if self.padding != 0 else ""
        text += f" op{self.output_padding}" if self.output_padding != 0 else ""
        text += f" g{self.groups}" if self.groups != 1 else ""
        return text + _dtype_text(self)


CONV_TRANSPOSE2D_CASES: list[ConvTranspose2dCase] = [
    ConvTranspose2dCase("convT-4x4s2-128-16", (8, 128, 16, 16), 64, 4, stride=2, padding=1),
    ConvTranspose2dCase("convT-2x2s2-64-28", (8, 64, 28, 28), 32, 2, stride=2),
    ConvTranspose2dCase("convT-3x3s2-32-15", (8, 32, 15, 15), 16, 3, stride=2, padding=1,
                        output_padding=1),
]


# ---------------------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pool2dCase:
    """One pooling shape; ``op`` is "max" or "avg".

    Work is memory traffic (GB/s): the forward reads x and writes y; forward + backward
    also reads gy and writes gx, and max pooling writes and reads its int64 indices.
    """

    name: str
    op: str
    x_shape: tuple[int, int, int, int]
    kernel: IntPair
    stride: IntPair = None
    padding: IntPair = 0
    #: the case's own dtype; None: the run's ``--dtype``
    dtype: str | None = None

    kind = "pool2d"

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        n, c, h, w = self.x_shape
        stride = pair(self.kernel if self.stride is None else self.stride)
        sizes = [out_size(size, k, s, 2 * p, 1)
                 for size, k, s, p in zip((h, w), pair(self.kernel), stride, pair(self.padding))]
        return (n, c, *sizes)

    def describe(self) -> str:
        kh, kw = pair(self.kernel)
        text = f"{self.op} {'x'.join(map(str, self.x_shape))} {kh}x{kw}"
        text += f" s{self.stride}" if self.stride is not None else ""
        text += f" p{self.padding}" if self.padding != 0 else ""
        return text + _dtype_text(self)


POOL2D_CASES: list[Pool2dCase] = [
    Pool2dCase("maxpool-2x2s2-64-56", "max", (32, 64, 56, 56), 2, stride=2),
    Pool2dCase("maxpool-3x3s2p1-64-112", "max", (32, 64, 112, 112), 3, stride=2, padding=1),
    Pool2dCase("avgpool-2x2s2-64-56", "avg", (32, 64, 56, 56), 2, stride=2),
]


# ---------------------------------------------------------------------------------------
# training step
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainStepCase:
    """One whole training step of a model, as ``fastconv-train`` runs it.

    Forward, cross-entropy loss, backward and an SGD update (with momentum) on one batch of
    ``batch`` images of ``image_shape``.  The model is ``fastconv.models.LeNet5(variant)``,
    whose first convolution pads the 28x28 image by 2 (the paper's 32x32 input).
    Work is counted in images: the rate column reads images per second.
    """

    name: str
    batch: int = 64
    image_shape: tuple[int, int, int] = (1, 28, 28)
    classes: int = 10
    variant: str = "modern"
    lr: float = 0.03
    momentum: float = 0.9

    kind = "train_step"

    @property
    def x_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.image_shape)

    def describe(self) -> str:
        return (f"LeNet5-{self.variant} {'x'.join(map(str, self.x_shape))} "
                f"sgd lr{self.lr:g} m{self.momentum:g}")


TRAIN_STEP_CASES: list[TrainStepCase] = [
    TrainStepCase("lenet5-train-step"),
]


@dataclass(frozen=True)
class InferenceCase:
    """One whole forward of ``fastconv.models.LeNet5(variant)`` in eval mode (inference):
    ``batch`` images of ``image_shape`` to logits. Work is counted in images."""

    name: str
    batch: int = 1
    image_shape: tuple[int, int, int] = (1, 28, 28)
    variant: str = "modern"

    kind = "inference"

    @property
    def x_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.image_shape)

    def describe(self) -> str:
        return f"LeNet5-{self.variant} {'x'.join(map(str, self.x_shape))} eval"


INFERENCE_CASES: list[InferenceCase] = [
    InferenceCase("lenet5-infer-b1", batch=1),
    InferenceCase("lenet5-infer-b64", batch=64),
]


def is_large(case) -> bool:
    """The "large" cases of the thread-scaling target: every conv2d case but LeNet's,
    every transposed convolution and every pooling case."""
    if case.kind == "conv2d":  # "in": the networks suite names LeNet "net-lenet5-..."
        return "lenet" not in case.name.lower()
    return case.kind in ("conv_transpose2d", "pool2d")


def near_limit_class(case) -> str | None:
    """Which of the machine's limits a case's forward is held to (the issue's target 3):
    ``"fma"`` for the GEMM-bound forwards of large layers (ungrouped, undilated conv2d with
    a 3x3 kernel and at least 64 input and output channels, a 1x1 kernel with at least 256
    input channels, or a 7x7 stride-2 stem, each with at least 14x14 output pixels over
    the batch), ``"copy"`` for pooling; None for the rest."""
    if case.kind == "pool2d":
        return "copy"
    if case.kind != "conv2d" or case.groups != 1 or pair(case.dilation) != (1, 1):
        return None
    n, c = case.x_shape[:2]
    _, k, oh, ow = case.y_shape
    if n * oh * ow < 14 * 14:
        return None
    kernel, stride = pair(case.kernel), pair(case.stride)
    if kernel == (3, 3):
        return "fma" if min(c, k) >= 64 else None
    if kernel == (1, 1):
        return "fma" if c >= 256 else None
    return "fma" if kernel == (7, 7) and stride == (2, 2) else None


# ---------------------------------------------------------------------------------------
# denormal weights (fastconv.set_flush_denormal)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DenormalConv2dCase(Conv2dCase):
    """A conv2d forward timed three ways: normal weights; the weights scaled into the
    denormal range (``w * finfo(dtype).tiny / 4``, so every product is denormal); and those
    weights with denormals flushed to zero (``set_flush_denormal(True)``).  Work as conv2d."""

    kind = "conv2d_denormal"


DENORMAL_CASES: list[DenormalConv2dCase] = [
    DenormalConv2dCase("denormal-C3", (64, 6, 14, 14), 16, 5),
    DenormalConv2dCase("denormal-3x3-64-28", (8, 64, 28, 28), 64, 3, padding=1),
]


#: Every case of every op kind, in table order: the default suite of ``compare.py``, whose
#: results are compared across versions (add new shapes to another suite, not here).
ALL_CASES: list = [*CONV2D_CASES, *CONV_TRANSPOSE2D_CASES, *POOL2D_CASES, *TRAIN_STEP_CASES,
                   *INFERENCE_CASES, *DENORMAL_CASES]


# ---------------------------------------------------------------------------------------
# layer shapes of well-known networks (the "networks" suite)
# ---------------------------------------------------------------------------------------


def at_batches(case, batches=(1, 8)) -> list:
    """``case`` at each batch size in ``batches``, named ``<name>-b<N>``."""
    return [replace(case, name=f"{case.name}-b{n}", x_shape=(n, *case.x_shape[1:]))
            for n in batches]


def as_float64(case):
    """``case`` in float64 whatever the run's ``--dtype``, named ``<name>-f64``."""
    return replace(case, name=f"{case.name}-f64", dtype="float64")


def _network_conv2d_cases() -> list[Conv2dCase]:
    """Convolutions of LeNet-5, AlexNet, VGG-16, ResNet-18/50, MobileNet-v2, ResNeXt-50 and
    Inception, at the feature-map sizes those networks see on their usual inputs."""
    c = Conv2dCase
    one = [  # batch 1 only: small layers, or a batch-8 twin already in the default suite
        c("net-lenet5-C1", (1, 1, 32, 32), 6, 5),
        c("net-lenet5-C3", (1, 6, 14, 14), 16, 5),
        c("net-resnet-stem-7x7s2-3-224", (1, 3, 224, 224), 64, 7, stride=2, padding=3),
        c("net-resnet18-3x3-64-56", (1, 64, 56, 56), 64, 3, padding=1),
        c("net-resnet18-3x3s2-64-56", (1, 64, 56, 56), 128, 3, stride=2, padding=1),
        c("net-resnet50-1x1-64to256-56", (1, 64, 56, 56), 256, 1),
        c("net-resnet50-1x1s2-512to1024-28", (1, 512, 28, 28), 1024, 1, stride=2),
        c("net-mbv2-dw3x3-576-14", (1, 576, 14, 14), 576, 3, padding=1, groups=576),
        c("net-resnext50-3x3g32-256-28", (1, 256, 28, 28), 256, 3, padding=1, groups=32),
    ]
    both = [  # batch 1 (inference) and batch 8 (a small training batch)
        c("net-alexnet-conv1-11x11s4-3-224", (1, 3, 224, 224), 64, 11, stride=4, padding=2),
        c("net-vgg16-3x3-512-14", (1, 512, 14, 14), 512, 3, padding=1),
        c("net-resnet18-3x3-128-28", (1, 128, 28, 28), 128, 3, padding=1),
        c("net-resnet18-3x3-256-14", (1, 256, 14, 14), 256, 3, padding=1),
        c("net-resnet18-3x3-512-7", (1, 512, 7, 7), 512, 3, padding=1),
        c("net-resnet50-1x1-256to64-56", (1, 256, 56, 56), 64, 1),
        c("net-resnet50-1x1-1024to256-14", (1, 1024, 14, 14), 256, 1),
        c("net-mbv2-dw3x3-144-56", (1, 144, 56, 56), 144, 3, padding=1, groups=144),
        c("net-mbv2-dw3x3s2-144-56", (1, 144, 56, 56), 144, 3, stride=2, padding=1, groups=144),
        c("net-mbv2-1x1-expand-24to144-56", (1, 24, 56, 56), 144, 1),
        c("net-mbv2-1x1-project-144to24-56", (1, 144, 56, 56), 24, 1),
        c("net-resnext50-3x3g32-128-56", (1, 128, 56, 56), 128, 3, padding=1, groups=32),
        c("net-inception-5x5-16-28", (1, 16, 28, 28), 32, 5, padding=2),
        c("net-inception-1x7-128-17", (1, 128, 17, 17), 128, (1, 7), padding=(0, 3)),
        c("net-inception-7x1-128-17", (1, 128, 17, 17), 128, (7, 1), padding=(3, 0)),
    ]
    return [*(b for case in one for b in at_batches(case, (1,))),
            *(b for case in both for b in at_batches(case))]


def _network_conv_transpose2d_cases() -> list[ConvTranspose2dCase]:
    """Decoder upsampling of DCGAN's generator and pix2pix's U-Net: 4x4 kernels, stride 2."""
    t = ConvTranspose2dCase
    both = [
        t("net-dcgan-convT-4x4s2-512-4", (1, 512, 4, 4), 256, 4, stride=2, padding=1),
        t("net-dcgan-convT-4x4s2-64-32", (1, 64, 32, 32), 3, 4, stride=2, padding=1),
    ]
    one = [t("net-unet-convT-4x4s2-1024-16", (1, 1024, 16, 16), 256, 4, stride=2, padding=1)]
    return [*(b for case in both for b in at_batches(case)),
            *(b for case in one for b in at_batches(case, (1,)))]


def _network_pool2d_cases() -> list[Pool2dCase]:
    """ResNet's pooling: the stem's 3x3 max pool and the global average pool before the
    classifier (a 7x7 window over 7x7 maps)."""
    both = [
        Pool2dCase("net-resnet-maxpool-3x3s2p1-64-112", "max", (1, 64, 112, 112), 3, stride=2,
                   padding=1),
        Pool2dCase("net-resnet-gap-7x7-512-7", "avg", (1, 512, 7, 7), 7),
    ]
    return [b for case in both for b in at_batches(case)]


def _network_float64_cases() -> list:
    """A few batch-1 layers again in float64 (the run's ``--dtype`` does not change them)."""
    picks = ("net-resnet18-3x3-128-28-b1", "net-mbv2-dw3x3-144-56-b1",
             "net-dcgan-convT-4x4s2-512-4-b1", "net-resnet-maxpool-3x3s2p1-64-112-b1")
    by_name = {c.name: c for c in _NETWORK_FLOAT32}
    return [as_float64(by_name[name]) for name in picks]


_NETWORK_FLOAT32 = [*_network_conv2d_cases(), *_network_conv_transpose2d_cases(),
                    *_network_pool2d_cases()]

#: Layer shapes of well-known networks, all named ``net-...``: the "networks" suite of
#: ``compare.py``, kept out of the default suite.  ``--cases net-`` selects all of them (with
#: ``--suite all`` the default suite's "lenet-C1" and "lenet-C3" match "net-" too).  1-D
#: (audio) convolutions are not here: the case kinds are 2-D.
NETWORK_CASES: list = [*_NETWORK_FLOAT32, *_network_float64_cases()]

#: suite name -> its cases, for ``compare.py --suite``
SUITES: dict[str, list] = {
    "default": ALL_CASES,
    "networks": NETWORK_CASES,
    "all": [*ALL_CASES, *NETWORK_CASES],
}


def flops(case, backward: bool = False) -> float:
    """Floating-point operations of one call (see the module docstring for the convention).

    ``backward=False``: forward only; ``backward=True``: forward + backward (3x forward).
    """
    if case.kind in ("conv2d", "conv2d_denormal"):
        n, k, oh, ow = case.y_shape
        _, c_per_group, kh, kw = case.w_shape
        forward = 2.0 * n * k * oh * ow * c_per_group * kh * kw
    elif case.kind == "conv_transpose2d":
        n, c, h, w = case.x_shape
        _, k_per_group, kh, kw = case.w_shape
        forward = 2.0 * n * c * h * w * k_per_group * kh * kw
    else:
        raise NotImplementedError(f"flops() has no rule for {case.kind!r} cases")
    return 3.0 * forward if backward else forward


def traffic_bytes(case, itemsize: int, backward: bool = False) -> float:
    """Bytes a pooling call must move at least (see Pool2dCase)."""
    x_elems = math.prod(case.x_shape)
    y_elems = math.prod(case.y_shape)
    total = (x_elems + y_elems) * itemsize
    if backward:
        total += (x_elems + y_elems) * itemsize  # read gy, write gx
        if case.op == "max":
            total += 2 * y_elems * 8  # int64 indices written, then read
    return float(total)


def select(cases, patterns: str | None):
    """Cases whose name contains one of the comma-separated ``patterns`` (case-insensitive)."""
    if not patterns:
        return list(cases)
    wanted = [p.strip().lower() for p in patterns.split(",") if p.strip()]
    return [c for c in cases if any(p in c.name.lower() for p in wanted)]
