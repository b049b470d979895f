"""Whole networks: fastconv.torch's layers against plain PyTorch, in one process.

Usage::

    python bench/networks.py [--networks resnet18,vgg11,mobilenet_v2,googlenet]
                             [--size 224] [--batch 8] [--repeat 5] [--threads N] [--quick]

Each network is written out below in plain ``torch.nn`` (the torchvision designs:
ResNet-18, VGG-11, MobileNet-v2, GoogLeNet with batch norm), built once from a fixed
seed, and copied; ``fastconv.torch.convert`` swaps the copy's Conv2d, MaxPool2d,
AvgPool2d and AdaptiveAvgPool2d layers for fastconv's, keeping the weights (batch norm,
activations and linear layers stay PyTorch's in both). The two must agree (eval-mode
outputs within 1e-3 of the largest logit) before anything is timed.

Three modes per network: inference (eval mode, no autograd) at batch 1 and at
``--batch``, and a training step at ``--batch`` (forward, cross-entropy, backward, SGD
with momentum). Repetitions alternate the two libraries (the order flips every
repetition) and the table shows medians of ms per call and ``ratio = fastconv / torch``;
the issue's target is 0.8 or less for each. Both libraries use ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as tnn

import workloads  # noqa: F401  (puts an in-place build of the checkout first on sys.path)
from compare import geomean
import fastconv
import fastconv.torch as fct


# ---------------------------------------------------------------------------------------
# the networks, in plain torch.nn
# ---------------------------------------------------------------------------------------


def conv_bn(c_in: int, c_out: int, kernel, stride=1, padding=0, groups=1, act=tnn.ReLU):
    layers = [tnn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False),
              tnn.BatchNorm2d(c_out)]
    return tnn.Sequential(*layers, act(inplace=True)) if act else tnn.Sequential(*layers)


class BasicBlock(tnn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = tnn.Sequential(conv_bn(c_in, c_out, 3, stride, 1),
                                   conv_bn(c_out, c_out, 3, 1, 1, act=None))
        self.skip = (conv_bn(c_in, c_out, 1, stride, act=None)
                     if stride != 1 or c_in != c_out else tnn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


def resnet18(classes: int = 1000) -> tnn.Module:
    stages, c_in = [], 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        stages += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
        c_in = c_out
    return tnn.Sequential(conv_bn(3, 64, 7, 2, 3), tnn.MaxPool2d(3, 2, 1), *stages,
                          tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(512, classes))


def vgg11(classes: int = 1000) -> tnn.Module:
    layers, c_in = [], 3
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if v == "M":
            layers.append(tnn.MaxPool2d(2, 2))
        else:
            layers += [tnn.Conv2d(c_in, v, 3, padding=1), tnn.ReLU(inplace=True)]
            c_in = v
    return tnn.Sequential(*layers, tnn.AdaptiveAvgPool2d(7), tnn.Flatten(),
                          tnn.Linear(512 * 49, 4096), tnn.ReLU(inplace=True),
                          tnn.Linear(4096, 4096), tnn.ReLU(inplace=True),
                          tnn.Linear(4096, classes))


class InvertedResidual(tnn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        layers = [conv_bn(c_in, hidden, 1, act=tnn.ReLU6)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, 1, groups=hidden, act=tnn.ReLU6),
                   conv_bn(hidden, c_out, 1, act=None)]
        self.body = tnn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2(classes: int = 1000) -> tnn.Module:
    layers, c_in = [conv_bn(3, 32, 3, 2, 1, act=tnn.ReLU6)], 32
    for expand, c_out, repeats, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                                           (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                                           (6, 320, 1, 1)):
        for i in range(repeats):
            layers.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, expand))
            c_in = c_out
    return tnn.Sequential(*layers, conv_bn(c_in, 1280, 1, act=tnn.ReLU6),
                          tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(1280, classes))


class Inception(tnn.Module):
    """GoogLeNet's module: 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1."""

    def __init__(self, c_in, c1, c3r, c3, c5r, c5, pool):
        super().__init__()
        self.b1 = conv_bn(c_in, c1, 1)
        self.b3 = tnn.Sequential(conv_bn(c_in, c3r, 1), conv_bn(c3r, c3, 3, padding=1))
        self.b5 = tnn.Sequential(conv_bn(c_in, c5r, 1), conv_bn(c5r, c5, 5, padding=2))
        self.bp = tnn.Sequential(tnn.MaxPool2d(3, 1, 1), conv_bn(c_in, pool, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


def googlenet(classes: int = 1000) -> tnn.Module:
    return tnn.Sequential(
        conv_bn(3, 64, 7, 2, 3), tnn.MaxPool2d(3, 2, 1),
        conv_bn(64, 64, 1), conv_bn(64, 192, 3, padding=1), tnn.MaxPool2d(3, 2, 1),
        Inception(192, 64, 96, 128, 16, 32, 32), Inception(256, 128, 128, 192, 32, 96, 64),
        tnn.MaxPool2d(3, 2, 1),
        Inception(480, 192, 96, 208, 16, 48, 64), Inception(512, 160, 112, 224, 24, 64, 64),
        Inception(512, 128, 128, 256, 24, 64, 64), Inception(512, 112, 144, 288, 32, 64, 64),
        Inception(528, 256, 160, 320, 32, 128, 128), tnn.MaxPool2d(3, 2, 1),
        Inception(832, 256, 160, 320, 32, 128, 128), Inception(832, 384, 192, 384, 48, 128, 128),
        tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(1024, classes))


NETWORKS = {"resnet18": resnet18, "vgg11": vgg11, "mobilenet_v2": mobilenet_v2,
            "googlenet": googlenet}


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------


def pair_of_models(name: str, seed: int = 0) -> tuple[tnn.Module, tnn.Module, int]:
    """(torch model, the same model converted to fastconv.torch, layers swapped)."""
    torch.manual_seed(seed)
    reference = NETWORKS[name]()
    report = fct.convert(copy.deepcopy(reference))
    return reference, report.model, len(report.swapped)


def inference(model: tnn.Module, x: torch.Tensor):
    model.eval()

    def run():
        with torch.no_grad():
            return model(x)
    return run


def train_step(model: tnn.Module, x: torch.Tensor, labels: torch.Tensor):
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = tnn.CrossEntropyLoss()

    def run():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), labels)
        loss.backward()
        opt.step()
        return loss
    return run


def check_agree(reference: tnn.Module, converted: tnn.Module, x: torch.Tensor) -> float:
    """Largest |difference| of the eval-mode logits over the largest |logit|."""
    want, got = inference(reference, x)(), inference(converted, x)()
    error = float((want - got).abs().max() / want.abs().max().clamp_min(1e-30))
    if not error <= 1e-3:
        raise AssertionError(f"fastconv's network disagrees with torch's: relative error {error:.2e}")
    return error


def interleaved(fns: dict[str, object], repeat: int) -> dict[str, float]:
    """Median seconds per call of each function, one call each per repetition, the order
    reversed every other repetition (after one warm-up call each)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {who: [] for who in fns}
    names = list(fns)
    for r in range(repeat):
        for who in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            fns[who]()
            times[who].append(time.perf_counter() - start)
    return {who: statistics.median(t) for who, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--networks", default=",".join(NETWORKS),
                        help=f"comma-separated, of: {', '.join(NETWORKS)}")
    parser.add_argument("--size", type=int, default=224, help="image height and width")
    parser.add_argument("--batch", type=int, default=8, help="batch of the second inference "
                        "mode and of the training step")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed calls per library and mode (default 7, or 1 with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of both libraries (default: fastconv's setting)")
    parser.add_argument("--quick", action="store_true", help="smoke test: one timed call each")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = [n for n in names if n not in NETWORKS]
    if unknown or not names:
        parser.error(f"--networks: unknown {unknown or names}; choose from {', '.join(NETWORKS)}")
    if args.size < 32:
        parser.error("--size must be at least 32 (the networks downsample by 32)")
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 7)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        fastconv.set_num_threads(args.threads)
    threads = fastconv.get_num_threads()
    torch.set_num_threads(threads)
    print(f"fastconv {fastconv.__version__} | torch {torch.__version__} | threads {threads} | "
          f"images {args.size}x{args.size} | repeat {repeat} (medians, interleaved)")
    print(f"{'network':<13} {'mode':<12} {'fc ms':>10} {'torch ms':>10} {'ratio':>7}")
    rng = np.random.default_rng(0)
    ratios: dict[str, list[float]] = {}
    start = time.perf_counter()
    for name in names:
        reference, converted, swapped = pair_of_models(name)
        x8 = torch.from_numpy(rng.standard_normal((args.batch, 3, args.size, args.size),
                                                  dtype=np.float32))
        labels = torch.from_numpy(rng.integers(0, 1000, args.batch))
        error = check_agree(reference, converted, x8[:2])
        modes = {
            "infer b1": lambda m: inference(m, x8[:1]),
            f"infer b{args.batch}": lambda m: inference(m, x8),
            f"train b{args.batch}": lambda m: train_step(m, x8, labels),
        }
        for mode, make in modes.items():
            t = interleaved({"fc": make(converted), "torch": make(reference)}, repeat)
            ratio = t["fc"] / t["torch"]
            ratios.setdefault(mode, []).append(ratio)
            print(f"{name:<13} {mode:<12} {t['fc'] * 1e3:>10.2f} {t['torch'] * 1e3:>10.2f} "
                  f"{ratio:>7.2f}", flush=True)
        print(f"{'':<13} ({swapped} layers on fastconv; logits agree within {error:.1e})")
    every = [r for values in ratios.values() for r in values]
    print("geometric mean of ratios fastconv / torch: "
          + ", ".join(f"{mode} {geomean(v):.2f}" for mode, v in ratios.items())
          + f"; all {geomean(every):.2f} (target <= 0.8 each; above it: "
          f"{sum(r > 0.8 for r in every)} of {len(every)})")
    print(f"[{time.perf_counter() - start:.1f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
