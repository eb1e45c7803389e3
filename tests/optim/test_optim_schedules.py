"""Learning-rate schedules (Notes: 003 §2.2.6) against torch.optim.lr_scheduler and their formulas."""

import math

import pytest
import torch
from torch.optim import lr_scheduler as tls

from dlkit.errors import ConfigError
from dlkit.optim import (
    SGD,
    Adam,
    CosineAnnealingLR,
    ExponentialLR,
    FixedLR,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    StepLR,
    WarmupCosineLR,
)


def _opt(cls=torch.optim.SGD, lr=0.1, **kw):
    return cls([torch.zeros(2, requires_grad=True)], lr=lr, **kw)


def _lrs(sched, steps, key="lr"):
    """The group values in force at steps 0 .. steps-1 (what each optimizer step uses)."""
    out = []
    for _ in range(steps):
        g = sched.optimizer.param_groups[0]
        out.append(g[key] if key != "beta1" else g["betas"][0])
        sched.optimizer.step()
        sched.step()
    return out


CASES = [
    (lambda o: StepLR(o, step_size=30, gamma=0.5), lambda o: tls.StepLR(o, step_size=30, gamma=0.5)),
    (lambda o: MultiStepLR(o, [120, 50, 120, 200], gamma=0.3),
     lambda o: tls.MultiStepLR(o, [120, 50, 120, 200], gamma=0.3)),
    (lambda o: ExponentialLR(o, gamma=0.99), lambda o: tls.ExponentialLR(o, gamma=0.99)),
    (lambda o: CosineAnnealingLR(o, T_max=300, eta_min=1e-3), lambda o: tls.CosineAnnealingLR(o, 300, eta_min=1e-3)),
]


@pytest.mark.parametrize("ours,ref", CASES, ids=["step", "multistep", "exponential", "cosine"])
def test_schedule_matches_torch_over_a_run(ours, ref):
    a, b = _lrs(ours(_opt()), 301), _lrs(ref(_opt()), 301)
    assert a == pytest.approx(b, rel=1e-9, abs=1e-15)


def test_step_and_exponential_follow_their_formulas():
    assert _lrs(StepLR(_opt(lr=1.0), 4, gamma=0.5), 10) == pytest.approx([1, 1, 1, 1, .5, .5, .5, .5, .25, .25])
    assert _lrs(ExponentialLR(_opt(lr=2.0), 0.9), 5) == pytest.approx([2 * 0.9**t for t in range(5)])


def test_cosine_stays_at_eta_min_after_t_max():
    lrs = _lrs(CosineAnnealingLR(_opt(lr=0.1), T_max=10, eta_min=0.01), 20)
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.055)
    assert lrs[10:] == pytest.approx([0.01] * 10)


def test_fixed_lr_never_changes():
    assert _lrs(FixedLR(_opt(lr=0.03)), 50) == [0.03] * 50


@pytest.mark.parametrize("cls,key", [(torch.optim.SGD, "momentum"), (torch.optim.Adam, "beta1")])
def test_onecycle_matches_torch_lr_and_momentum(cls, key):
    kw = dict(momentum=0.9) if cls is torch.optim.SGD else {}
    ours = OneCycleLR(_opt(cls, lr=0.5, **kw), total_steps=250)
    ref = tls.OneCycleLR(_opt(cls, lr=0.5, **kw), max_lr=0.5, total_steps=250)
    steps = 250
    a, b = _lrs(ours, steps), _lrs(ref, steps)
    assert a == pytest.approx(b, rel=1e-9, abs=1e-15)
    assert max(a) == pytest.approx(0.5) and a[0] == pytest.approx(0.5 / 25)
    ours = OneCycleLR(_opt(cls, lr=0.5, **kw), total_steps=250)
    ref = tls.OneCycleLR(_opt(cls, lr=0.5, **kw), max_lr=0.5, total_steps=250)
    assert _lrs(ours, steps, key) == pytest.approx(_lrs(ref, steps, key), rel=1e-12)


def test_onecycle_linear_anneal_matches_torch_and_rejects_optimizers_without_momentum():
    ours = OneCycleLR(_opt(lr=1.0), total_steps=100, anneal_strategy="linear", cycle_momentum=False, pct_start=0.25)
    ref = tls.OneCycleLR(_opt(lr=1.0), max_lr=1.0, total_steps=100, anneal_strategy="linear", cycle_momentum=False,
                         pct_start=0.25)
    assert _lrs(ours, 100) == pytest.approx(_lrs(ref, 100), rel=1e-9)
    with pytest.raises(ConfigError, match="momentum"):
        OneCycleLR(_opt(torch.optim.Adagrad), total_steps=10)


def test_warmup_cosine_follows_its_formula():
    base, w, total, low = 0.4, 10, 50, 0.01
    lrs = _lrs(WarmupCosineLR(_opt(lr=base), warmup_steps=w, total_steps=total, eta_min=low), 60)
    expected = [base * (t + 1) / (w + 1) if t < w else
                low + (base - low) * (1 + math.cos(math.pi * (t - w) / (total - w))) / 2 for t in range(total + 1)]
    assert lrs[:total + 1] == pytest.approx(expected, rel=1e-12)
    assert lrs[w] == pytest.approx(base) and lrs[total:] == pytest.approx([low] * 10)


def test_warmup_cosine_equals_sequential_linear_then_cosine():
    base, w, total = 0.4, 20, 200
    ours = WarmupCosineLR(_opt(lr=base), warmup_steps=w, total_steps=total, eta_min=1e-3)
    o = _opt(lr=base)
    ref = tls.SequentialLR(o, [tls.LinearLR(o, start_factor=1 / (w + 1), end_factor=1.0, total_iters=w),
                               tls.CosineAnnealingLR(o, T_max=total - w, eta_min=1e-3)], milestones=[w])
    assert _lrs(ours, total + 1) == pytest.approx(_lrs(ref, total + 1), rel=1e-9)


def _metrics(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    # a loss that falls, then wanders on plateaus: improvements come in bursts
    jump = torch.rand(n, generator=g) < 0.2
    steps = torch.where(jump, -torch.rand(n, generator=g), 0.02 * torch.randn(n, generator=g))
    return (5 + steps.cumsum(0)).tolist()


@pytest.mark.parametrize("kw", [dict(), dict(mode="max", patience=3), dict(threshold_mode="abs", threshold=0.05),
                                dict(patience=2, cooldown=3, factor=0.5, min_lr=1e-3),
                                dict(mode="max", threshold_mode="abs", patience=0, factor=0.9, eps=1e-4)])
def test_reduce_on_plateau_matches_torch(kw):
    values = _metrics(seed=len(kw))
    ours, ref = ReduceLROnPlateau(_opt(lr=1.0), **kw), tls.ReduceLROnPlateau(_opt(lr=1.0), **kw)
    a, b = [], []
    for v in values:
        ours.step(v)
        ref.step(v)
        a.append(ours.optimizer.param_groups[0]["lr"])
        b.append(ref.optimizer.param_groups[0]["lr"])
    assert a == pytest.approx(b, rel=1e-12)
    assert min(a) < 1.0  # the sequence did trigger reductions
    assert ours.get_last_lr() == ref.get_last_lr()


def test_reduce_on_plateau_waits_patience_evaluations_then_reduces():
    sched = ReduceLROnPlateau(_opt(lr=1.0), patience=2, factor=0.5)
    lrs = []
    for v in [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]:
        sched.step(v)
        lrs.append(sched.optimizer.param_groups[0]["lr"])
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25]


def test_reduce_on_plateau_is_recognised_as_a_plateau_schedule_and_round_trips_its_state():
    sched = ReduceLROnPlateau(_opt(lr=1.0), patience=1)
    assert isinstance(sched, tls.ReduceLROnPlateau)  # the Trainer passes it the metric
    for v in [3.0, 3.0, 3.0]:
        sched.step(v)
    fresh = ReduceLROnPlateau(_opt(lr=1.0), patience=1)
    fresh.load_state_dict(sched.state_dict())
    assert (fresh.best, fresh.num_bad_epochs, fresh.last_epoch) == (3.0, 0, 3)


def test_schedule_state_dict_resumes_the_same_run():
    full = _lrs(OneCycleLR(_opt(SGD, lr=0.2, momentum=0.9), total_steps=80), 80)
    opt = _opt(SGD, lr=0.2, momentum=0.9)
    first = OneCycleLR(opt, total_steps=80)
    head = _lrs(first, 30)
    opt2 = _opt(SGD, lr=0.2, momentum=0.9)
    resumed = OneCycleLR(opt2, total_steps=80)
    opt2.load_state_dict(opt.state_dict())
    resumed.load_state_dict(first.state_dict())
    assert head + _lrs(resumed, 50) == pytest.approx(full, rel=1e-12)


def test_schedules_drive_our_optimizers():
    opt = Adam([torch.zeros(2, requires_grad=True)], lr=1.0)
    sched = StepLR(opt, step_size=2, gamma=0.1)
    assert _lrs(sched, 5) == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


@pytest.mark.parametrize("make", [lambda o: StepLR(o, 0), lambda o: WarmupCosineLR(o, 20, 10),
                                  lambda o: ReduceLROnPlateau(o, mode="lowest"), lambda o: OneCycleLR(o, 0)])
def test_schedules_reject_bad_arguments(make):
    with pytest.raises(ConfigError):
        make(_opt(SGD, lr=0.1, momentum=0.9))
