"""Losses: a forward that returns the loss and a backward that returns dL/dinput."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastconv._kernels import _loss
from fastconv.nn._cache import NeedsForward
from fastconv.nn.module import Module

__all__ = ["CrossEntropyLoss"]


class CrossEntropyLoss(NeedsForward, Module):
    """Mean over the batch of -log softmax(logits)[target] (as torch.nn.CrossEntropyLoss).

    ``forward(logits, target)`` takes logits (N, classes) and integer targets (N,) and
    returns the loss as a Python float; ``backward()`` returns dL/dlogits,
    (softmax(logits) - onehot(target)) / N. The log-softmax subtracts each row's
    maximum first, so large logits do not overflow. An empty batch has loss 0.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> loss_fn = nn.CrossEntropyLoss()
    >>> round(loss_fn(np.zeros((2, 4)), np.array([0, 3])), 4)  # log(4)
    1.3863
    >>> loss_fn.backward()  # (N, classes)
    array([[-0.375,  0.125,  0.125,  0.125],
           [ 0.125,  0.125,  0.125, -0.375]])
    """

    def forward(self, logits: ArrayLike, target: ArrayLike) -> float:
        logits = np.asarray(logits)
        target = np.asarray(target)
        if logits.ndim != 2:
            raise ValueError(f"logits must be (N, classes), got shape {logits.shape}")
        if target.shape != (logits.shape[0],) or target.dtype.kind not in "iu":
            raise ValueError(
                f"target must be integer class indices of shape ({logits.shape[0]},), "
                f"got {target.dtype} array of shape {target.shape}"
            )
        if logits.dtype in (np.float32, np.float64):  # one kernel pass (NumPy's ~12 calls
            # cost 40 us of a LeNet-5 training step)
            logits = np.ascontiguousarray(logits)
            target = np.ascontiguousarray(target, dtype=np.intp)
            log_probs = np.empty_like(logits)
            total, bad = _loss.cross_entropy_forward(logits, target, log_probs)
            if bad:
                raise ValueError(f"target values must lie in [0, {logits.shape[1]})")
            self._save(log_probs, target)
            return total / target.size if target.size else 0.0
        if target.size and (target.min() < 0 or target.max() >= logits.shape[1]):
            raise ValueError(f"target values must lie in [0, {logits.shape[1]})")
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log_probs = shifted - log_norm
        rows = np.arange(logits.shape[0])
        self._save(log_probs, target)
        return float(-log_probs[rows, target].mean()) if target.size else 0.0

    def backward(self, grad_out: float = 1.0) -> NDArray[Any]:
        """dL/dlogits, shape (N, classes), times ``grad_out`` (default 1)."""
        log_probs, target = self._take()
        n = max(1, target.shape[0])
        if log_probs.dtype in (np.float32, np.float64):
            grad = np.empty_like(log_probs)
            _loss.cross_entropy_backward(log_probs, target, grad_out / n, grad)
            return grad
        grad = np.exp(log_probs)
        grad[np.arange(target.shape[0]), target] -= 1
        return (grad * (grad_out / n)).astype(log_probs.dtype, copy=False)
