"""Losses: a forward that returns the loss and a backward that returns dL/dinput."""

import numpy as np

from fastconv.nn._cache import NeedsForward
from fastconv.nn.module import Module

__all__ = ["CrossEntropyLoss"]


class CrossEntropyLoss(NeedsForward, Module):
    """Mean over the batch of -log softmax(logits)[target] (as torch.nn.CrossEntropyLoss).

    ``forward(logits, target)`` takes logits (N, classes) and integer targets (N,) and
    returns the loss as a Python float; ``backward()`` returns dL/dlogits,
    (softmax(logits) - onehot(target)) / N. The log-softmax subtracts each row's
    maximum first, so large logits do not overflow.
    """

    def forward(self, logits, target):
        logits = np.asarray(logits)
        target = np.asarray(target)
        if logits.ndim != 2:
            raise ValueError(f"logits must be (N, classes), got shape {logits.shape}")
        if target.shape != (logits.shape[0],) or target.dtype.kind not in "iu":
            raise ValueError(
                f"target must be integer class indices of shape ({logits.shape[0]},), "
                f"got {target.dtype} array of shape {target.shape}"
            )
        if target.size and (target.min() < 0 or target.max() >= logits.shape[1]):
            raise ValueError(f"target values must lie in [0, {logits.shape[1]})")
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log_probs = shifted - log_norm
        rows = np.arange(logits.shape[0])
        self._save(log_probs, target)
        return float(-log_probs[rows, target].mean()) if target.size else 0.0

    def backward(self, grad_out=1.0):
        log_probs, target = self._take()
        n = max(1, target.shape[0])
        grad = np.exp(log_probs)
        grad[np.arange(target.shape[0]), target] -= 1
        return (grad * (grad_out / n)).astype(log_probs.dtype, copy=False)
