"""LeNet-5, in its modern form and as LeCun et al. (1998) describe it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import DTypeLike

from fastconv import nn
from fastconv.functional import FloatArray
from fastconv.nn._init import RNGLike, default_bound, generator

__all__ = ["LeNet5", "C3_CONNECTIONS"]

#: Which S2 maps (rows of each entry) feed each of the 16 C3 maps, as in Table I of
#: LeCun et al. (1998): six maps see 3 neighbouring S2 maps, six see 4 neighbouring,
#: three see 4 non-neighbouring, and the last sees all 6.
C3_CONNECTIONS = (
    *[tuple((i + j) % 6 for j in range(3)) for i in range(6)],
    *[tuple((i + j) % 6 for j in range(4)) for i in range(6)],
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


class PartialConv2d(nn.Conv2d):
    """Conv2d whose output map k sees only the input maps listed in ``connections[k]``.

    The weight keeps zeros outside the table: the forward uses them as they are, and
    backward masks their gradient, so training never makes them non-zero.

    Examples
    --------
    >>> from fastconv.models import C3_CONNECTIONS, PartialConv2d
    >>> c3 = PartialConv2d(6, C3_CONNECTIONS, 5, rng=0)
    >>> c3.weight.shape
    (16, 6, 5, 5)
    >>> [int((c3.weight.data[k] != 0).any(axis=(1, 2)).sum()) for k in (0, 6, 15)]
    [3, 4, 6]
    """

    def __init__(self, in_channels: int, connections: Sequence[Sequence[int]], kernel_size: int,
                 *, dtype: DTypeLike = np.float32, rng: RNGLike = None) -> None:
        super().__init__(in_channels, len(connections), kernel_size, dtype=dtype, rng=rng)
        mask = np.zeros((len(connections), in_channels), dtype=dtype)
        for k, inputs in enumerate(connections):
            mask[k, list(inputs)] = 1
        self.mask = mask[:, :, None, None]
        # PyTorch's default bound, with each map's real fan-in.
        rng = generator(rng)
        kh, kw = self.weight.shape[2:]
        assert self.bias is not None  # Conv2d was made with its default bias=True
        for k, inputs in enumerate(connections):
            bound = default_bound(len(inputs) * kh * kw)
            self.weight.data[k] = rng.uniform(-bound, bound, self.weight.shape[1:])
            self.bias.data[k] = rng.uniform(-bound, bound)
        self.weight.data *= self.mask

    def _mask_grad(self, gw: FloatArray) -> FloatArray:
        return gw * self.mask


class LeNet5(nn.Sequential):
    """LeNet-5 for (N, 1, 28, 28) images and 10 classes.

    Parameters
    ----------
    variant : {"modern", "classic"}
        ``"modern"``: conv 6@5x5 pad 2, max pool 2, ReLU; conv 16@5x5, max pool 2,
        ReLU; Linear 400-120, ReLU, 120-84, ReLU, 84-10. Pooling before the ReLU is
        the same network as the usual ReLU-then-pool order: the maximum of ReLUs is
        the ReLU of the maximum, and where a window's maximum is not positive the
        gradient is zero in both orders (only where a NaN gradient lands can
        differ). The ReLU then sees a quarter of the elements.
        ``"classic"`` (LeCun et al. 1998): the 28x28 image padded by 2 to 32x32; C1
        6@5x5; S2 trainable subsampling (2x2 average times a coefficient plus a bias);
        C3 16@5x5 with the paper's partial connection table to S2's maps; S4 like S2;
        C5 120@5x5; F6 84; as in the paper every layer up to F6 passes its output
        through the scaled tanh 1.7159 tanh(2x/3); a Linear 84-10 output (in place
        of the paper's RBF units).
    dtype : float32 (default) or float64
    rng : None, int or numpy.random.Generator
        Source of the initial weights (PyTorch's default initialisation).

    Notes
    -----
    A :class:`fastconv.nn.Sequential`: ``forward(x)`` maps images (N, 1, 28, 28)
    to logits (N, 10); ``backward(grad_logits)`` returns None, as the first
    convolution skips its input gradient (``needs_input_grad=False``), and
    fills every parameter's ``.grad``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.models import LeNet5
    >>> net = LeNet5(rng=0)
    >>> logits = net(np.zeros((2, 1, 28, 28), np.float32))
    >>> logits.shape
    (2, 10)
    >>> net.backward(np.ones_like(logits)) is None
    True
    >>> net[0].weight.grad.shape
    (6, 1, 5, 5)
    >>> sum(p.data.size for p in net.parameters())
    61706
    >>> LeNet5("classic", rng=0)(np.zeros((2, 1, 28, 28), np.float32)).shape
    (2, 10)
    """

    def __init__(self, variant: str = "modern", *, dtype: DTypeLike = np.float32,
                 rng: RNGLike = None) -> None:
        rng = generator(rng)
        if variant == "modern":
            layers = self._modern(dtype, rng)
        elif variant == "classic":
            layers = self._classic(dtype, rng)
        else:
            raise ValueError(f"variant must be 'modern' or 'classic', got {variant!r}")
        super().__init__(*layers)
        self.variant = variant

    @staticmethod
    def _modern(dtype: DTypeLike, rng: np.random.Generator) -> list[nn.Module]:
        return [
            nn.Conv2d(1, 6, 5, padding=2, needs_input_grad=False, dtype=dtype, rng=rng),
            nn.MaxPool2d(2),  # before the ReLU: same values, a quarter of the ReLU's work
            nn.ReLU(),
            nn.Conv2d(6, 16, 5, dtype=dtype, rng=rng),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(400, 120, dtype=dtype, rng=rng),
            nn.ReLU(),
            nn.Linear(120, 84, dtype=dtype, rng=rng),
            nn.ReLU(),
            nn.Linear(84, 10, dtype=dtype, rng=rng),
        ]

    @staticmethod
    def _classic(dtype: DTypeLike, rng: np.random.Generator) -> list[nn.Module]:
        return [
            # Padding the 28x28 input by 2 is the paper's 32x32 input.
            nn.Conv2d(1, 6, 5, padding=2, needs_input_grad=False, dtype=dtype, rng=rng),
            nn.ScaledTanh(),
            nn.Subsampling(6, 2, dtype=dtype, rng=rng),
            nn.ScaledTanh(),
            PartialConv2d(6, C3_CONNECTIONS, 5, dtype=dtype, rng=rng),
            nn.ScaledTanh(),
            nn.Subsampling(16, 2, dtype=dtype, rng=rng),
            nn.ScaledTanh(),
            nn.Conv2d(16, 120, 5, dtype=dtype, rng=rng),
            nn.ScaledTanh(),
            nn.Flatten(),
            nn.Linear(120, 84, dtype=dtype, rng=rng),
            nn.ScaledTanh(),
            nn.Linear(84, 10, dtype=dtype, rng=rng),
        ]
