"""Tests for fastconv.optim: update rules and schedules against torch.optim, state round trips."""

import numpy as np
import pytest

from fastconv import nn, optim

SHAPES = [(3, 4), (5,), (2, 1, 3, 3), (120, 400)]  # the last: SGD's update on threads
N_STEPS = 5


def _make_params(rng, dtype):
    return [nn.Parameter(rng.standard_normal(shape).astype(dtype)) for shape in SHAPES]


def _gradients(rng, dtype, steps=N_STEPS):
    """A fixed gradient sequence: one list of arrays (one per parameter) per step."""
    return [[rng.standard_normal(shape).astype(dtype) for shape in SHAPES] for _ in range(steps)]


def _torch_params(torch, params):
    return [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in params]


def _step(opt, params, grads):
    opt.zero_grad()
    for p, g in zip(params, grads):
        p.grad += g
    opt.step()


def _torch_step(topt, tparams, grads, torch):
    topt.zero_grad()
    for p, g in zip(tparams, grads):
        p.grad = torch.from_numpy(g.copy())
    topt.step()


SGD_CONFIGS = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.05, momentum=0.9),
    "dampening": dict(lr=0.05, momentum=0.9, dampening=0.3),
    "nesterov": dict(lr=0.05, momentum=0.8, nesterov=True),
    "weight-decay": dict(lr=0.1, weight_decay=0.05),
    "all": dict(lr=0.02, momentum=0.7, nesterov=True, weight_decay=0.01),
    "momentum-dampening-decay": dict(lr=0.03, momentum=0.5, dampening=0.5, weight_decay=0.2),
}

ADAM_CONFIGS = {
    "default": dict(),
    "lr-betas-eps": dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
    "weight-decay": dict(lr=0.005, weight_decay=0.1),
}


def _compare_with_torch(make, make_torch, dtype, rng, torch, assert_close):
    params = _make_params(rng, dtype)
    tparams = _torch_params(torch, params)
    opt, topt = make(params), make_torch(tparams)
    for step, grads in enumerate(_gradients(rng, dtype)):
        _step(opt, params, grads)
        _torch_step(topt, tparams, grads, torch)
        for i, (p, tp) in enumerate(zip(params, tparams)):
            assert p.data.dtype == dtype
            assert_close(p.data, tp.detach().numpy(), dtype=dtype,
                         err_msg=f"step {step + 1}, parameter {i}:")


@pytest.mark.parametrize("config", list(SGD_CONFIGS))
def test_sgd_matches_torch(config, dtype, rng, torch, assert_close):
    kwargs = SGD_CONFIGS[config]
    _compare_with_torch(lambda ps: optim.SGD(ps, **kwargs),
                        lambda ps: torch.optim.SGD(ps, **kwargs), dtype, rng, torch, assert_close)


@pytest.mark.parametrize("config", list(ADAM_CONFIGS))
def test_adam_matches_torch(config, dtype, rng, torch, assert_close):
    kwargs = ADAM_CONFIGS[config]
    _compare_with_torch(lambda ps: optim.Adam(ps, **kwargs),
                        lambda ps: torch.optim.Adam(ps, **kwargs), dtype, rng, torch, assert_close)


def test_sgd_plain_by_hand(rng):
    p = nn.Parameter(np.array([1.0, -2.0]))
    opt = optim.SGD([p], lr=0.5, momentum=0.9)
    p.grad[...] = [1.0, 1.0]
    opt.step()
    np.testing.assert_allclose(p.data, [0.5, -2.5])
    opt.step()  # buffer 0.9 * 1 + 1 = 1.9
    np.testing.assert_allclose(p.data, [0.5 - 0.95, -2.5 - 0.95])


def test_optimizer_zero_grad(rng):
    params = _make_params(rng, np.float64)
    for p in params:
        p.grad += 1
    optim.Adam(params).zero_grad()
    assert not any(np.any(p.grad) for p in params)


def test_optimizer_accepts_module_parameters(rng):
    net = nn.Sequential(nn.Linear(3, 2, rng=0))
    opt = optim.SGD(net.parameters(), lr=0.1)  # a generator is enough
    net[0].weight.grad += 1
    before = net[0].weight.data.copy()
    opt.step()
    np.testing.assert_allclose(net[0].weight.data, before - 0.1, rtol=1e-6)


# --------------------------------------------------------------------------- #
# state_dict round trips
# --------------------------------------------------------------------------- #

ROUND_TRIP = {
    "sgd-plain": lambda ps: optim.SGD(ps, lr=0.1),
    "sgd-momentum": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01),
    "sgd-nesterov": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda ps: optim.Adam(ps, lr=0.01),
    "adam-weight-decay": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("name", list(ROUND_TRIP))
def test_state_dict_resumes_exactly(name, rng):
    make = ROUND_TRIP[name]
    start = _make_params(rng, np.float64)
    grads = _gradients(rng, np.float64)

    # five steps uninterrupted
    params = [nn.Parameter(p.data) for p in start]
    opt = make(params)
    for g in grads:
        _step(opt, params, g)

    # three steps, save, a new optimiser (and new parameter objects) load, two more
    first = [nn.Parameter(p.data) for p in start]
    opt1 = make(first)
    for g in grads[:3]:
        _step(opt1, first, g)
    state = opt1.state_dict()
    values = [p.data.copy() for p in first]
    # what was saved does not change when the first optimiser goes on
    for g in grads[3:]:
        _step(opt1, first, g)

    resumed = [nn.Parameter(v) for v in values]
    opt2 = make(resumed)
    opt2.load_state_dict(state)
    for g in grads[3:]:
        _step(opt2, resumed, g)
    for i, (p, q, r) in enumerate(zip(params, resumed, first)):
        np.testing.assert_array_equal(q.data, p.data, err_msg=f"resumed parameter {i}")
        np.testing.assert_array_equal(r.data, p.data, err_msg=f"continued parameter {i}")


def test_state_dict_keeps_lr(rng):
    params = _make_params(rng, np.float64)
    opt = optim.SGD(params, lr=0.1)
    optim.StepLR(opt, 1, gamma=0.5).step()
    other = optim.SGD(_make_params(rng, np.float64), lr=0.3)
    other.load_state_dict(opt.state_dict())
    assert other.lr == pytest.approx(0.05)


def test_load_state_dict_rejects_other_parameters(rng):
    params = _make_params(rng, np.float64)
    opt = optim.Adam(params)
    for g in _gradients(rng, np.float64, 2):
        _step(opt, params, g)
    state = opt.state_dict()
    fewer = optim.Adam(params[:2])
    with pytest.raises(ValueError):
        fewer.load_state_dict(state)
    reshaped = [nn.Parameter(np.zeros((4, 3))), params[1], params[2]]
    other = optim.Adam(reshaped)
    with pytest.raises(ValueError):
        other.load_state_dict(state)


# --------------------------------------------------------------------------- #
# learning-rate schedules
# --------------------------------------------------------------------------- #

SCHEDULES = {
    "step": (lambda o: optim.StepLR(o, 3, gamma=0.5), lambda t, o: t.StepLR(o, 3, gamma=0.5)),
    "step-default-gamma": (lambda o: optim.StepLR(o, 2), lambda t, o: t.StepLR(o, 2)),
    "cosine": (lambda o: optim.CosineAnnealingLR(o, 4),
               lambda t, o: t.CosineAnnealingLR(o, 4)),
    "cosine-eta-min": (lambda o: optim.CosineAnnealingLR(o, 5, eta_min=0.01),
                       lambda t, o: t.CosineAnnealingLR(o, 5, eta_min=0.01)),
}
EPOCHS = 13


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_matches_torch(name, torch):
    make, make_torch = SCHEDULES[name]
    p = nn.Parameter(np.zeros(2))
    opt = optim.SGD([p], lr=0.2, momentum=0.9)
    sched = make(opt)
    tp = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    topt = torch.optim.SGD([tp], lr=0.2, momentum=0.9)
    tsched = make_torch(torch.optim.lr_scheduler, topt)
    ours, theirs = [opt.lr], [topt.param_groups[0]["lr"]]
    for _ in range(EPOCHS):
        opt.step()
        sched.step()
        topt.step()
        tsched.step()
        ours.append(opt.lr)
        theirs.append(topt.param_groups[0]["lr"])
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_state_dict_resumes(name):
    make = SCHEDULES[name][0]
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=0.2)
    sched = make(opt)
    lrs = []
    for _ in range(7):
        sched.step()
        lrs.append(opt.lr)

    opt1 = optim.SGD([nn.Parameter(np.zeros(1))], lr=0.2)
    sched1 = make(opt1)
    for _ in range(3):
        sched1.step()
    state, opt_state = sched1.state_dict(), opt1.state_dict()
    opt2 = optim.SGD([nn.Parameter(np.zeros(1))], lr=0.2)
    sched2 = make(opt2)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(state)
    assert opt2.lr == lrs[2]
    resumed = []
    for _ in range(4):
        sched2.step()
        resumed.append(opt2.lr)
    assert resumed == lrs[3:]


# --------------------------------------------------------------------------- #
# bad arguments
# --------------------------------------------------------------------------- #


def _param():
    return [nn.Parameter(np.zeros(3))]


@pytest.mark.parametrize(
    "make",
    [
        lambda: optim.SGD(_param(), lr=-0.1),
        lambda: optim.SGD(_param(), lr="0.1"),
        lambda: optim.SGD(_param(), lr=0.1, momentum=-0.5),
        lambda: optim.SGD(_param(), lr=0.1, weight_decay=-1e-4),
        lambda: optim.SGD(_param(), lr=0.1, nesterov=True),
        lambda: optim.SGD(_param(), lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
        lambda: optim.SGD([], lr=0.1),
        lambda: optim.Adam(_param(), lr=-1e-3),
        lambda: optim.Adam(_param(), betas=(1.0, 0.999)),
        lambda: optim.Adam(_param(), betas=(0.9, 1.0)),
        lambda: optim.Adam(_param(), betas=(-0.1, 0.999)),
        lambda: optim.Adam(_param(), eps=-1e-8),
        lambda: optim.Adam(_param(), weight_decay=-0.1),
        lambda: optim.Adam([]),
        lambda: optim.StepLR(optim.SGD(_param(), lr=0.1), 0),
        lambda: optim.CosineAnnealingLR(optim.SGD(_param(), lr=0.1), 0),
    ],
    ids=["sgd-lr-negative", "sgd-lr-string", "sgd-momentum-negative",
         "sgd-weight-decay-negative", "sgd-nesterov-no-momentum", "sgd-nesterov-dampening",
         "sgd-no-params", "adam-lr-negative", "adam-beta1-one", "adam-beta2-one",
         "adam-beta1-negative", "adam-eps-negative", "adam-weight-decay-negative",
         "adam-no-params", "steplr-step-size-0", "cosine-t-max-0"],
)
def test_bad_arguments_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


def _sgd_numpy_ref(data, grads, lr, momentum=0.0, dampening=0.0, nesterov=False,
                   weight_decay=0.0):
    """PyTorch's SGD rule in plain NumPy, in the parameters' dtype (float32 rounding
    of each operation as fastconv's SGD rounds it)."""
    data = [d.copy() for d in data]
    bufs = [None] * len(data)
    for step_grads in grads:
        for i, (d, g) in enumerate(zip(data, step_grads)):
            g = g + weight_decay * d if weight_decay else g
            if momentum:
                bufs[i] = (g.copy() if bufs[i] is None
                           else bufs[i] * momentum + (1 - dampening) * g)
                g = g + momentum * bufs[i] if nesterov else bufs[i]
            d -= lr * g
    return data


@pytest.mark.parametrize("config, kernel_steps", [("plain", N_STEPS), ("momentum", N_STEPS),
                                                  ("nesterov", 0), ("weight-decay", 0)])
def test_sgd_kernel_runs_the_plain_rules(config, kernel_steps, dtype, rng, monkeypatch):
    """Plain SGD and momentum without dampening run the update kernel, one call per
    step over every parameter (so the bit-identity test below checks the kernel); the
    other rules run NumPy."""
    calls = []
    update = optim._optim.sgd_update_many
    monkeypatch.setattr(optim._optim, "sgd_update_many",
                        lambda *args: calls.append(len(args[0])) or update(*args))
    params = _make_params(rng, dtype)
    opt = optim.SGD(params, **SGD_CONFIGS[config])
    for step_grads in _gradients(rng, dtype):
        _step(opt, params, step_grads)
    assert calls == [len(params)] * kernel_steps


def test_sgd_kernel_refuses_mismatched_lists():
    update = optim._optim.sgd_update_many
    p, g = np.zeros(5, np.float32), np.ones(5, np.float32)
    update([p], [g], [None], 0.9, 0.5, 1)
    np.testing.assert_array_equal(p, -0.5)
    with pytest.raises(ValueError):  # a gradient per parameter
        update([p], [], [None], 0.9, 0.5, 1)
    with pytest.raises(ValueError):  # of the parameter's size
        update([p], [g[:4]], [None], 0.9, 0.5, 1)
    with pytest.raises(ValueError):  # a momentum buffer of its size
        update([p], [g], [g[:4]], 0.9, 0.5, 1)
    with pytest.raises(ValueError):  # one dtype
        update([p], [g.astype(np.float64)], [None], 0.9, 0.5, 1)
    np.testing.assert_array_equal(p, -0.5)  # nothing updated by a refused call


@pytest.mark.parametrize("config", list(SGD_CONFIGS))
def test_sgd_bit_identical_to_numpy_rule(config, dtype, rng):
    """The in-place update (kept lr * g buffer, buf += g without dampening) rounds
    exactly as the plain formula; also after Module.to changes the dtype."""
    kwargs = SGD_CONFIGS[config]
    params = _make_params(rng, dtype)
    start = [p.data.copy() for p in params]
    grads = _gradients(rng, dtype)
    opt = optim.SGD(params, **kwargs)
    for step_grads in grads:
        _step(opt, params, step_grads)
    for p, ref in zip(params, _sgd_numpy_ref(start, grads, **kwargs)):
        assert p.data.dtype == dtype
        np.testing.assert_array_equal(p.data, ref)
    other = np.float64 if dtype == np.float32 else np.float32
    for p in params:  # as Module.to does; the momentum buffer keeps its dtype
        p.data, p.grad = p.data.astype(other), p.grad.astype(other)
    _step(opt, params, [g.astype(other) for g in grads[0]])
    assert all(p.data.dtype == other for p in params)
