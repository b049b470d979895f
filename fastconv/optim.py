"""Optimisers and learning-rate schedules, with PyTorch's update rules.

In order of complexity: SGD (momentum, dampening, Nesterov, weight decay), Adam;
then StepLR and CosineAnnealingLR. Every one has ``state_dict()`` /
``load_state_dict()`` so a checkpoint can resume a run exactly.
"""

import math

import numpy as np

__all__ = ["Optimizer", "SGD", "Adam", "StepLR", "CosineAnnealingLR", "cosine_annealing"]


class Optimizer:
    """Base class: holds the parameters, the learning rate and per-parameter state."""

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError("params is empty: the optimiser has nothing to update")
        if not (isinstance(lr, (int, float)) and lr >= 0):
            raise ValueError(f"lr must be a number >= 0, got {lr!r}")
        self.lr = float(lr)
        self.state = [dict() for _ in self.params]

    def zero_grad(self):
        """Set every parameter's gradient to zero."""
        for p in self.params:
            p.grad.fill(0)

    def step(self):
        raise NotImplementedError

    def state_dict(self):
        """Learning rate and per-parameter state (copies)."""
        return {
            "lr": self.lr,
            "state": [{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                      for s in self.state],
        }

    def load_state_dict(self, state):
        """Restore what state_dict returned; refuses state for other parameters."""
        if len(state["state"]) != len(self.params):
            raise ValueError(
                f"optimiser state has {len(state['state'])} parameters, this optimiser "
                f"has {len(self.params)}"
            )
        for s, p in zip(state["state"], self.params):
            for value in s.values():
                if isinstance(value, np.ndarray) and value.shape != p.data.shape:
                    raise ValueError(f"optimiser state of shape {value.shape} does not fit "
                                     f"a parameter of shape {p.data.shape}")
        self.lr = float(state["lr"])
        self.state = [{k: (np.array(v, dtype=p.data.dtype) if isinstance(v, np.ndarray) else v)
                       for k, v in s.items()} for s, p in zip(state["state"], self.params)]


class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch's form.

    g = grad + weight_decay * p; with momentum, d = momentum * d + (1 - dampening) * g
    (d = g on the first step), then g = g + momentum * d (Nesterov) or g = d;
    finally p -= lr * g.
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"momentum and weight_decay must be >= 0, got {momentum}, {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening 0")
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)

    def step(self):
        """Update every parameter from its gradient."""
        for p, state in zip(self.params, self.state):
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.momentum:
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = np.array(g, copy=True)
                else:
                    buf *= self.momentum
                    buf += (1 - self.dampening) * g
                g = g + self.momentum * buf if self.nesterov else buf
            p.data -= (self.lr * g).astype(p.data.dtype, copy=False)


class Adam(Optimizer):
    """Adam (Kingma and Ba), PyTorch's form: bias corrections folded into the step size.

    m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"eps and weight_decay must be >= 0, got {eps}, {weight_decay}")
        self.betas = (float(b1), float(b2))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)

    def step(self):
        """Update every parameter from its gradient."""
        b1, b2 = self.betas
        for p, state in zip(self.params, self.state):
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if "step" not in state:
                state["step"] = 0
                state["exp_avg"] = np.zeros_like(p.data)
                state["exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] += 1
            t = state["step"]
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            denom = np.sqrt(v) / math.sqrt(1 - b2**t) + self.eps
            p.data -= ((self.lr / (1 - b1**t)) * m / denom).astype(p.data.dtype, copy=False)


class _Scheduler:
    """Base class: sets ``optimizer.lr`` from the epoch count on each ``step()``."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def lr_at(self, epoch):
        raise NotImplementedError

    def step(self):
        """Advance one epoch and update the optimiser's learning rate."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def get_last_lr(self):
        return self.optimizer.lr

    def state_dict(self):
        return {"base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state):
        self.base_lr = float(state["base_lr"])
        self.last_epoch = int(state["last_epoch"])
        self.optimizer.lr = self.lr_at(self.last_epoch)


class StepLR(_Scheduler):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        self.step_size = int(step_size)
        self.gamma = float(gamma)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(_Scheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        super().__init__(optimizer)
        if T_max < 1:
            raise ValueError(f"T_max must be >= 1, got {T_max}")
        self.T_max = int(T_max)
        self.eta_min = float(eta_min)

    def lr_at(self, epoch):
        return cosine_annealing(self.base_lr, epoch, self.T_max, self.eta_min)


def cosine_annealing(base_lr, epoch, T_max, eta_min=0.0):
    """eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2."""
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / T_max)) / 2
