"""The optimizer and schedule factories the recipes call (Notes: 002 §1, 003 §2.2.6)."""

import pytest
import torch

import dlkit.optim as optim
from dlkit.errors import ConfigError, UnknownNameError


def _params():
    return [torch.zeros(3, requires_grad=True)]


def test_list_functions_name_every_option():
    assert optim.list_optimizers() == sorted(["sgd", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "amsgrad"])
    assert {"none", "constant", "step", "exponential", "cosine", "warmup_cosine", "onecycle",
            "plateau"} <= set(optim.list_schedulers())


@pytest.mark.parametrize("name,cls,flags", [
    ("sgd", optim.SGD, dict(momentum=0.5, nesterov=False)),
    ("nesterov", optim.SGD, dict(momentum=0.5, nesterov=True)),
    ("adagrad", optim.Adagrad, {}),
    ("rmsprop", optim.RMSprop, dict(momentum=0.5)),
    ("adam", optim.Adam, dict(amsgrad=False, decoupled_weight_decay=False)),
    ("amsgrad", optim.Adam, dict(amsgrad=True)),
    ("adamw", optim.AdamW, dict(decoupled_weight_decay=True)),
])
def test_create_optimizer_builds_the_named_rule(name, cls, flags):
    momentum = {"momentum": 0.5} if "momentum" in flags else {}
    opt = optim.create_optimizer(name, _params(), lr=0.01, weight_decay=1e-4, **momentum)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.01 and group["weight_decay"] == 1e-4
    for key, value in flags.items():
        assert group[key] == value
    if name in ("adam", "amsgrad", "adamw", "adagrad"):
        assert "momentum" not in group
        with pytest.raises(ConfigError, match=f"momentum=0.5 is for sgd, nesterov and rmsprop; {name} has no"):
            optim.create_optimizer(name, _params(), lr=0.01, momentum=0.5)  # not silently ignored


def test_create_optimizer_defaults_weight_decay_as_torch_optim_does():
    for name, reference in (("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)):
        ours = optim.create_optimizer(name, _params(), lr=0.01).param_groups[0]["weight_decay"]
        assert ours == reference(_params(), lr=0.01).param_groups[0]["weight_decay"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=float("inf")), "lr must be a finite number; got inf"),
    (dict(lr="1e-3"), "lr must be a finite number; got '1e-3'"),
    (dict(lr=torch.tensor(1e-3)), "lr must be a Python number; got a tensor"),
    (dict(lr=0.1, weight_decay=float("nan")), "weight_decay must be a finite number"),
])
def test_optimizer_hyperparameters_must_be_finite_numbers(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        optim.create_optimizer("adam", _params(), **kwargs)
    with pytest.raises(ConfigError, match="the optimizer is named by a string"):
        optim.create_optimizer(None, _params(), lr=0.1)


@pytest.mark.parametrize("kwargs, match", [(dict(total_steps=2.7), "total_steps must be a whole number >= 1"),
                                           (dict(total_steps=10, warmup_steps=-5), "warmup_steps must be a whole")])
def test_schedule_lengths_must_be_whole_numbers(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        optim.create_scheduler("cosine", optim.SGD(_params(), lr=0.1), **kwargs)


def test_nesterov_without_momentum_uses_point_nine():
    assert optim.create_optimizer("nesterov", _params(), lr=0.1).param_groups[0]["momentum"] == 0.9


def test_unknown_optimizer_suggests_close_names():
    with pytest.raises(UnknownNameError, match="adam") as err:
        optim.create_optimizer("adamm", _params(), lr=0.1)
    assert "list_optimizers" in str(err.value)


def _run(sched, steps):
    lrs = []
    for _ in range(steps):
        lrs.append(sched.optimizer.param_groups[0]["lr"])
        sched.optimizer.step()
        sched.step()
    return lrs


def test_create_scheduler_defaults():
    opt = lambda: optim.create_optimizer("sgd", _params(), lr=1.0, momentum=0.9)
    assert _run(optim.create_scheduler("none", opt(), total_steps=10), 10) == [1.0] * 10
    step = _run(optim.create_scheduler("step", opt(), total_steps=30), 30)
    assert step[9] == 1.0 and step[10] == pytest.approx(0.1) and step[20] == pytest.approx(0.01)
    expo = _run(optim.create_scheduler("exponential", opt(), total_steps=50), 51)
    assert expo[50] == pytest.approx(0.01, rel=1e-9)
    cos = _run(optim.create_scheduler("cosine", opt(), total_steps=40), 41)
    assert cos[20] == pytest.approx(0.5) and cos[40] == pytest.approx(0.0, abs=1e-12)
    warm = _run(optim.create_scheduler("warmup_cosine", opt(), total_steps=40, warmup_steps=4), 41)
    assert warm[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0]) and warm[40] == pytest.approx(0.0, abs=1e-12)
    assert isinstance(optim.create_scheduler("cosine", opt(), total_steps=40, warmup_steps=4), optim.WarmupCosineLR)
    assert isinstance(optim.create_scheduler("plateau", opt(), total_steps=1), optim.ReduceLROnPlateau)


def test_onecycle_peaks_at_the_optimizers_lr():
    opt = optim.create_optimizer("adam", _params(), lr=3e-3)
    lrs = _run(optim.create_scheduler("onecycle", opt, total_steps=100), 100)
    assert max(lrs) == pytest.approx(3e-3) and lrs[0] == pytest.approx(3e-3 / 25)
    assert opt.param_groups[0]["betas"][0] != 0.9  # beta1 is cycled
    plain = optim.create_optimizer("sgd", _params(), lr=0.1)
    optim.create_scheduler("onecycle", plain, total_steps=10)
    assert plain.param_groups[0]["momentum"] == 0.0  # no momentum to cycle: plain SGD stays plain


def test_unknown_scheduler_suggests_close_names_and_bad_total_is_refused():
    opt = optim.create_optimizer("sgd", _params(), lr=0.1)
    with pytest.raises(UnknownNameError, match="cosine"):
        optim.create_scheduler("cosin", opt, total_steps=10)
    with pytest.raises(ConfigError, match="total_steps"):
        optim.create_scheduler("cosine", opt, total_steps=0)
