"""Initialisations: variances from the formulas, fans and draws equal torch.nn.init (Notes: 003 §2.2.4)."""

import math

import pytest
import torch

from dlkit.errors import ConfigError, UnknownNameError
from dlkit.nn import init as I


def _var(fn, shape=(1000, 1000), **kw):
    w = torch.empty(shape)
    out = fn(w, generator=torch.Generator().manual_seed(0), **kw)
    assert out is w
    return w.double().var().item(), w.double().mean().item()


@pytest.mark.parametrize(
    "name,fn,kw,expected",
    [
        ("small_normal", I.small_normal_, {}, 0.01),  # the notes' 0.01 is the variance: std 0.1
        ("lecun", I.lecun_normal_, {}, 1 / 1000),
        ("xavier_normal", I.xavier_normal_, {}, 2 / 2000),
        ("xavier_uniform", I.xavier_uniform_, {}, 2 / 2000),
        ("he_normal", I.kaiming_normal_, {}, 2 / 1000),
        ("he_uniform", I.kaiming_uniform_, {}, 2 / 1000),
        ("leaky", I.kaiming_normal_, {"a": 0.2, "nonlinearity": "leaky_relu"}, 2 / (1 + 0.04) / 1000),
        ("he_fan_out", I.kaiming_normal_, {"mode": "fan_out"}, 2 / 1000),
    ],
)
def test_empirical_variance_matches_formula_within_5_percent(name, fn, kw, expected):
    var, mean = _var(fn, **kw)
    assert var == pytest.approx(expected, rel=0.05)
    assert abs(mean) < 0.05 * math.sqrt(expected)


def test_fan_out_differs_from_fan_in_on_rectangular_weight():
    var_in, _ = _var(I.kaiming_normal_, shape=(200, 800), mode="fan_in")
    var_out, _ = _var(I.kaiming_normal_, shape=(200, 800), mode="fan_out")
    assert var_in == pytest.approx(2 / 800, rel=0.05) and var_out == pytest.approx(2 / 200, rel=0.05)


def test_small_normal_std_is_one_tenth_and_glorot_100x100_is_001():
    var, _ = _var(I.small_normal_)
    assert math.sqrt(var) == pytest.approx(0.1, rel=0.03)
    w = I.xavier_normal_(torch.empty(100, 100), generator=torch.Generator().manual_seed(1))
    assert w.var().item() == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize("shape", [(16, 3, 5, 5), (8, 4, 3), (6, 2, 3, 3, 3), (10, 20)])
def test_fans_equal_torch_for_conv_weights(shape):
    w = torch.empty(shape)
    assert I.calculate_fan_in_and_fan_out(w) == torch.nn.init._calculate_fan_in_and_fan_out(w)


@pytest.mark.parametrize(
    "nl,param",
    [
        ("linear", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0.2),
        ("conv2d", None),
        ("selu", None),
    ],
)
def test_gain_equals_torch(nl, param):
    assert I.calculate_gain(nl, param) == pytest.approx(torch.nn.init.calculate_gain(nl, param))


@pytest.mark.parametrize(
    "ours,theirs,kw",
    [
        (I.xavier_normal_, torch.nn.init.xavier_normal_, {"gain": 1.5}),
        (I.xavier_uniform_, torch.nn.init.xavier_uniform_, {}),
        (I.kaiming_normal_, torch.nn.init.kaiming_normal_, {"mode": "fan_out", "nonlinearity": "relu"}),
        (
            I.kaiming_uniform_,
            torch.nn.init.kaiming_uniform_,
            {"a": math.sqrt(5), "nonlinearity": "leaky_relu"},
        ),
    ],
)
def test_draws_equal_torch_init_with_same_generator(ours, theirs, kw):
    a, b = torch.empty(32, 16, 3, 3), torch.empty(32, 16, 3, 3)
    ours(a, generator=torch.Generator().manual_seed(7), **kw)
    theirs(b, generator=torch.Generator().manual_seed(7), **kw)
    torch.testing.assert_close(a, b)


def _deep_second_moments(init, activation, depth=20, width=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, width, generator=g)
    moments = []
    for _ in range(depth):
        w = init(torch.empty(width, width), generator=g)
        x = activation(x @ w.T)
        moments.append(x.pow(2).mean().item())
    return moments


def test_he_keeps_relu_second_moment_while_lecun_halves_it():
    he = _deep_second_moments(I.kaiming_normal_, torch.relu, width=512)
    lecun = _deep_second_moments(I.lecun_normal_, torch.relu, width=512)
    assert 0.25 < he[-1] / he[0] < 4  # constant in expectation; finite width adds a random drift
    assert lecun[-1] / lecun[0] == pytest.approx(0.5**19, rel=0.5)


def test_lecun_keeps_linear_variance_and_small_normal_shrinks_tanh():
    lecun = _deep_second_moments(I.lecun_normal_, lambda t: t)
    assert all(0.5 < m < 2 for m in lecun)
    small = _deep_second_moments(I.small_normal_, torch.tanh, depth=10, width=32)  # 32 * 0.01 < 1: shrinks
    assert all(b < a for a, b in zip(small, small[1:])) and small[-1] < 1e-3 * small[0]


def test_zero_init_keeps_hidden_units_identical():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    for p in net.parameters():
        I.zeros_(p)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    assert (net[0].weight == 0).all() and (net[2].weight == 0).all()  # tanh(0) = 0: hidden weights never move
    assert net[2].bias.abs().item() > 0  # only the output bias learns


def test_lookup_and_bad_input():
    assert I.get_initializer("He") is I.kaiming_normal_
    assert I.get_initializer("glorot-uniform") is I.xavier_uniform_
    with pytest.raises(UnknownNameError, match="Did you mean"):
        I.get_initializer("xavier_norm")
    with pytest.raises(ConfigError, match="at least 2 dims"):
        I.xavier_normal_(torch.empty(10))
    with pytest.raises(ConfigError, match="fan_in"):
        I.kaiming_normal_(torch.empty(3, 3), mode="fan")
    with pytest.raises(UnknownNameError):
        I.calculate_gain("relu7")
    with pytest.raises(ConfigError, match="variance"):
        I.small_normal_(torch.empty(3, 3), variance=-1)


def test_he_init_conv_bn_draws_fan_out_he_normal_and_resets_batch_norm():
    from dlkit.nn.init import he_init_conv_bn_

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(64, 256, 3), torch.nn.BatchNorm2d(256), torch.nn.Conv2d(256, 8, 1))
    with torch.no_grad():
        net[1].weight.fill_(3.0)
        net[0].bias.fill_(1.0)
    assert he_init_conv_bn_(net) is net
    w = net[0].weight  # fan_out = 256 * 9: std sqrt(2 / 2304)
    assert abs(w.std().item() / math.sqrt(2 / 2304) - 1) < 0.02 and abs(w.mean().item()) < 2e-3
    assert torch.equal(net[0].bias, torch.zeros(256)) and torch.equal(net[1].weight, torch.ones(256))
    assert torch.equal(net[1].bias, torch.zeros(256))


def _net():
    return torch.nn.Sequential(torch.nn.Conv2d(64, 256, 3), torch.nn.GroupNorm(32, 256), torch.nn.Conv2d(256, 128, 1),
                               torch.nn.BatchNorm2d(128), torch.nn.Flatten(), torch.nn.Linear(512, 300),
                               torch.nn.Embedding(50, 400))


def test_init_weights_draws_equal_torch_nn_init_in_module_order():
    torch.manual_seed(3)
    net = _net()
    with torch.no_grad():
        for m in (net[1], net[3]):
            m.weight.fill_(3.0)
            m.bias.fill_(2.0)
    torch.manual_seed(7)
    assert I.init_weights(net, conv="he_fan_out", linear="normal_0.01", embedding="normal_0.02") is net
    torch.manual_seed(7)
    ref = [torch.nn.init.kaiming_normal_(torch.empty(256, 64, 3, 3), mode="fan_out", nonlinearity="relu"),
           torch.nn.init.kaiming_normal_(torch.empty(128, 256, 1, 1), mode="fan_out", nonlinearity="relu"),
           torch.nn.init.normal_(torch.empty(300, 512), 0.0, 0.01),
           torch.nn.init.normal_(torch.empty(50, 400), 0.0, 0.02)]
    for got, want in zip((net[0].weight, net[2].weight, net[5].weight, net[6].weight), ref):
        assert torch.equal(got, want)
    # the formulas: std sqrt(2 / fan_out), fan_out = 256 * 9; zero biases; norms gamma 1, beta 0
    w = net[0].weight
    assert abs(w.std().item() / math.sqrt(2 / 2304) - 1) < 0.02 and abs(w.mean().item()) < 2e-3
    assert abs(net[2].weight.std().item() / math.sqrt(2 / 128) - 1) < 0.03
    assert torch.count_nonzero(net[0].bias) == 0 and torch.count_nonzero(net[2].bias) == 0
    assert torch.count_nonzero(net[5].bias) == 0
    for m in (net[1], net[3]):
        assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))


@pytest.mark.parametrize("scheme, ref", [
    ("he_fan_in", lambda w: torch.nn.init.kaiming_normal_(w, nonlinearity="relu")),
    ("xavier_uniform", torch.nn.init.xavier_uniform_),
    ("trunc_normal_0.02", lambda w: torch.nn.init.trunc_normal_(w, std=0.02)),
    ("uniform_fan_out", lambda w: torch.nn.init.uniform_(w, -1 / math.sqrt(w.shape[0]), 1 / math.sqrt(w.shape[0]))),
])
def test_init_weights_schemes_equal_torch(scheme, ref):
    conv, lin = torch.nn.Conv2d(16, 32, 3), torch.nn.Linear(40, 20)
    torch.manual_seed(1)
    I.init_weights([conv, lin], conv=scheme, linear=scheme)
    torch.manual_seed(1)
    assert torch.equal(conv.weight, ref(torch.empty(32, 16, 3, 3)))
    assert torch.equal(lin.weight, ref(torch.empty(20, 40)))


def test_init_weights_keeps_what_it_is_not_asked_to_touch():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    I.init_weights(net, conv=None, conv_bias=False, norm=False)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    I.init_weights(net, conv="he_fan_out", conv_bias=False)  # RegNet keeps its conv biases
    assert torch.equal(net[0].bias, before["0.bias"]) and torch.equal(net[5].weight, before["5.weight"])


def test_init_weights_unknown_scheme_is_a_config_error_listing_the_schemes():
    with pytest.raises(ConfigError) as e:
        I.init_weights(torch.nn.Conv2d(1, 1, 1), conv="kaiming")
    assert "he_fan_out" in str(e.value) and "xavier_uniform" in str(e.value) and "\n" not in str(e.value)
