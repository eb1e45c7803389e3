"""The adaptive methods refuse what they would update wrongly: complex parameters and sparse gradients."""

import pytest
import torch

import dlkit.optim as O
from dlkit.errors import ConfigError

ADAPTIVE = [O.Adam, O.AdamW, O.RMSprop, O.Adagrad]


@pytest.mark.parametrize("cls", ADAPTIVE)
def test_a_complex_parameter_is_refused_before_any_group_is_updated(cls):
    real = torch.nn.Parameter(torch.ones(3))
    cplx = torch.nn.Parameter(torch.tensor([1 + 1j]))
    opt = cls([{"params": [real]}, {"params": [cplx]}], lr=0.1)
    (real.sum() + (cplx.abs() ** 2).sum()).backward()
    with pytest.raises(ConfigError, match=rf"{cls.__name__} updates real parameters; got a complex one of shape "
                                          r"\(1,\).*view_as_real"):
        opt.step()
    assert torch.equal(real.detach(), torch.ones(3)) and cplx.item() == 1 + 1j  # nothing moved


@pytest.mark.parametrize("cls", ADAPTIVE)
def test_a_sparse_gradient_is_refused_in_one_line(cls):
    emb = torch.nn.Embedding(5, 3, sparse=True)
    before = emb.weight.detach().clone()
    opt = cls(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ConfigError, match=rf"{cls.__name__} needs dense gradients; got a sparse gradient .*"
                                          r"\(5, 3\).*sparse=False"):
        opt.step()
    assert torch.equal(emb.weight.detach(), before)


def test_sgd_updates_complex_parameters_and_sparse_gradients_as_torch_does():
    ours = torch.nn.Parameter(torch.tensor([1 + 1j, -2 + 0.5j]))
    ref = torch.nn.Parameter(ours.detach().clone())
    for p, opt in ((ours, O.SGD([ours], lr=0.1, momentum=0.9)), (ref, torch.optim.SGD([ref], lr=0.1, momentum=0.9))):
        for _ in range(3):
            opt.zero_grad()
            (p.abs() ** 2).sum().backward()
            opt.step()
    torch.testing.assert_close(ours, ref)
    a, b = torch.nn.Embedding(5, 3, sparse=True), torch.nn.Embedding(5, 3, sparse=True)
    b.load_state_dict(a.state_dict())
    for emb, opt in ((a, O.SGD(a.parameters(), lr=0.1)), (b, torch.optim.SGD(b.parameters(), lr=0.1))):
        emb(torch.tensor([1, 2, 2])).sum().backward()
        opt.step()
    torch.testing.assert_close(a.weight, b.weight)
