import torch
from torch import nn

from dlkit import create_model
from dlkit.nn.conv_arithmetic import conv_flops, conv_params, dense_params
from dlkit.report.summary import summarize


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_lenet_totals_agree_with_parameters_and_hand_count():
    model = create_model("lenet5")
    s = summarize(model, input_shape=(1, 1, 28, 28))
    assert s.total_params == _count(model) == 61_706
    # hand count of multiply-adds: C1 5*5*1*6*28*28, C3 5*5*6*16*10*10, dense 400*120 + 120*84 + 84*10
    assert s.total_macs == 5 * 5 * 6 * 28 * 28 + 5 * 5 * 6 * 16 * 10 * 10 + 400 * 120 + 120 * 84 + 84 * 10
    shapes = {r.name: r.output_shape for r in s.rows}
    assert shapes["features.0"] == (1, 6, 28, 28) and shapes["classifier.5"] == (1, 10)
    assert "61,706 parameters" in s.format_table()


def test_formulas_match_torch_layers():
    conv = nn.Conv2d(8, 12, (3, 5), groups=4)
    assert conv_params(8, 12, (3, 5), groups=4) == _count(conv)
    assert dense_params(7, 3) == _count(nn.Linear(7, 3)) and dense_params(7, 3, bias=False) == 21
    assert conv_flops(4, 6, 3, (10, 10)) == 3 * 3 * 4 * 6 * 100


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 4)
        self.out = nn.Linear(4, 11, bias=False)
        self.out.weight = self.emb.weight
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return self.out(self.emb(x) * self.scale)


def test_tied_and_own_parameters_counted_once():
    m = _Tied()
    s = summarize(m, inputs=torch.zeros(2, 3, dtype=torch.long))
    assert s.total_params == _count(m) == 11 * 4 + 4


def test_grouped_and_transposed_convolutions_macs():
    m = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=4), nn.ConvTranspose2d(8, 2, 2, stride=2))
    s = summarize(m, input_shape=(2, 4, 5, 5))
    assert s.total_params == _count(m)
    assert s.total_macs == 2 * (9 * 1 * 8 * 25) + 2 * (4 * 8 * 2 * 25)


def test_summarize_leaves_a_model_with_tied_weights_as_it_was():
    model = create_model("transformer_tiny", share_embeddings=True)  # one table for both embeddings and the output
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summary = summarize(model, input_shape=(1, 8))
    assert summary.total_params == sum(p.numel() for p in model.parameters())
    assert model.out_proj.weight is model.src_emb.weight and model.tgt_emb.weight is model.src_emb.weight
    assert all(v.device.type == "cpu" and torch.equal(v, before[k]) for k, v in model.state_dict().items())
