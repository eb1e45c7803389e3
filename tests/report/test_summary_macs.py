"""`dlkit summary`'s multiply-adds (report/macs.py, the notes' formulas) against hand counts and, for every
registered model, against torch.utils.flop_counter.FlopCounterMode (an independent count: 2 FLOPs per multiply-add
of a matrix product or convolution, the same convention of counting only those).

Models are built on the meta device (shapes only, no memory, no arithmetic), so each is checked at its full size and
default input (ViT-B/16 at 224x224, GPT-2 XL) in well under a second; models whose forward reads values (lengths
from the padding, detections after NMS) run on the CPU, those larger than 512 x 512 pixels at 256 x 256. The
reference runs with oneDNN off for recurrent models: FlopCounterMode has no formula for the CPU oneDNN LSTM kernel
(aten.mkldnn_rnn_layer) and would count an LSTM as 0.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dlkit import create_model, list_models
from dlkit.nn.attention import MultiHeadAttention
from dlkit.nn.recurrent import LSTM as DlkitLSTM
from dlkit.nn.recurrent import GRUCell
from dlkit.report.summary import default_input_shape, example_inputs, summarize


def _recurrent(model) -> bool:
    return any(isinstance(m, nn.RNNBase) or type(m).__module__ == "dlkit.nn.recurrent" for m in model.modules())


def _torch_macs(model, inputs) -> int:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "TF32 acceleration on top of oneDNN")  # printed by mkldnn.flags
        # oneDNN off only where it matters (recurrent layers): without it a CPU convolution is several times slower
        with torch.backends.mkldnn.flags(enabled=not _recurrent(model)), torch.no_grad(), \
                FlopCounterMode(display=False) as counter:
            model(*inputs)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


def _model_and_inputs(name):
    """On the meta device when the forward needs shapes only, else on the CPU."""
    with torch.device("meta"):
        model = create_model(name).eval()
    inputs = example_inputs(model, (1, *default_input_shape(model)), device="meta")
    try:
        return model, inputs, _torch_macs(model, inputs)
    except (RuntimeError, NotImplementedError) as e:
        if "meta" not in str(e):
            raise
    model = create_model(name).eval()
    shape = default_input_shape(model)
    if len(shape) == 3 and max(shape[1:]) > 512:  # a large detector (EfficientDet-D7: 1536^2) counted at 256^2 on
        shape = (shape[0], 256, 256)  # the CPU: the counts compare at any input size, the default costs minutes
    inputs = example_inputs(model, (1, *shape))
    return model, inputs, _torch_macs(model, inputs)


@pytest.mark.parametrize("name", list_models())
def test_every_model_multiply_adds_equal_flop_counter(name):
    model, inputs, reference = _model_and_inputs(name)
    s = summarize(model, inputs=inputs)
    if s.total_macs != reference:  # a two-stage detector's count depends on its proposals: count the same forward
        with torch.backends.mkldnn.flags(enabled=not _recurrent(model)), FlopCounterMode(display=False) as counter:
            s = summarize(model, inputs=inputs)
        reference = counter.get_total_flops() // 2
    assert reference > 0 and s.total_macs == reference, f"{name}: summary {s.total_macs:,}, torch {reference:,}"
    assert s.total_params == sum(p.numel() for p in model.parameters())


def test_vit_b_16_counts_the_attention():
    """ViT-B/16 at 224: 196 patches + [CLS] = 197 tokens of width 768, 12 layers of 12 heads, MLP 3072 (Notes: 002
    §3.1.3). Per layer: Q/K/V 3 n d^2, output n d^2, Q K^T and A V 2 n^2 d, MLP 2 n d 4d; plus the 16x16 patch
    convolution and the 1000-class head. 17.56 GMACs, torchvision's published 17.56 "GFLOPS" (multiply-adds)."""
    with torch.device("meta"):
        model = create_model("vit_b_16")
    n, d = 197, 768
    layer = 3 * n * d * d + n * d * d + 2 * n * n * d + 2 * n * d * 4 * d
    expected = 12 * layer + 16 * 16 * 3 * d * 196 + d * 1000
    assert summarize(model, inputs=torch.zeros(1, 3, 224, 224, device="meta")).total_macs == expected
    assert expected == 17_563_828_224


def test_tiny_conv_net_by_hand():
    """Conv: K_h K_w D_in/G D_out O_h O_w (Notes: 002/003 conv arithmetic); BN, ReLU and pooling count 0."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 4, 1, stride=2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    s = summarize(model, input_shape=(2, 3, 8, 8))
    per_sample = 3 * 3 * 3 * 8 * 64 + 3 * 3 * 1 * 8 * 64 + 1 * 1 * 8 * 4 * 16 + 4 * 10
    assert s.total_macs == 2 * per_sample
    macs = {r.name: r.macs for r in s.rows}
    assert macs["1"] == macs["2"] == macs["5"] == 0 and macs["4"] == 2 * 8 * 4 * 16


def test_linear_on_tokens_counts_every_position():
    s = summarize(nn.Linear(6, 5), inputs=torch.zeros(2, 7, 6))
    assert s.total_macs == 2 * 7 * 6 * 5


def test_tiny_attention_by_hand():
    """Projections Q, K, V, O (each positions x d x d) plus Q K^T and A V (L S d each, over all heads together)."""
    B, L, S, d = 2, 5, 7, 16
    mha = MultiHeadAttention(d, 4)
    x, memory = torch.randn(B, L, d), torch.randn(B, S, d)
    fused = summarize(mha, inputs=x)  # self-attention: one product with the stacked Q/K/V weights
    assert fused.total_macs == B * (4 * L * d * d + 2 * L * L * d)
    assert {r.name: r.kind for r in fused.rows}["k_proj"] == "Linear (run by (model))"
    cross = summarize(mha, inputs=(x, memory))
    assert cross.total_macs == B * (2 * L * d * d + 2 * S * d * d + 2 * L * S * d)
    rows = {r.name: r.macs for r in cross.rows}
    assert rows["q_proj"] == 0 and rows["(model)"] == cross.total_macs  # the attention row owns its projections
    torch_mha = nn.MultiheadAttention(d, 4, kdim=6, vdim=10, batch_first=True)
    k, v = torch.randn(B, S, 6), torch.randn(B, S, 10)
    expected = B * (L * d * d + S * 6 * d + S * 10 * d + L * d * d + 2 * L * S * d)
    assert summarize(torch_mha, inputs=(x, k, v)).total_macs == expected
    seq_first = nn.MultiheadAttention(d, 4)  # [L, B, E]
    assert summarize(seq_first, inputs=(x.transpose(0, 1),) * 3).total_macs == B * (4 * L * d * d + 2 * L * L * d)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_recurrent_layers_by_hand():
    """Per time step and direction G H (D_in + H): G = 4 (LSTM), 3 (GRU); layer 2 reads both directions (2 H)."""
    lstm = nn.LSTM(6, 10, num_layers=2, bidirectional=True, batch_first=True)
    steps = 3 * 4
    per_step = 4 * 10 * (6 + 10) + 4 * 10 * (20 + 10)
    assert summarize(lstm, inputs=torch.zeros(3, 4, 6)).total_macs == 2 * per_step * steps
    dl = DlkitLSTM(6, 10, num_layers=2, bidirectional=True, batch_first=True)  # the plain time loop
    assert summarize(dl, inputs=torch.zeros(3, 4, 6)).total_macs == 2 * per_step * steps
    projected = nn.LSTM(6, 10, proj_size=3)
    assert summarize(projected, inputs=torch.zeros(4, 3, 6)).total_macs == steps * (4 * 10 * (6 + 3) + 3 * 10)
    packed = nn.utils.rnn.pack_padded_sequence(torch.zeros(3, 4, 6), [4, 2, 1], batch_first=True)
    assert summarize(nn.GRU(6, 10), inputs=(packed,)).total_macs == 7 * 3 * 10 * 16  # only the 7 valid steps
    assert summarize(GRUCell(6, 10), inputs=torch.zeros(3, 6)).total_macs == 3 * 3 * 10 * 16


class _OwnProducts(nn.Module):
    """Matrix products in a module's own code: a matmul, an einsum and the fused attention function."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 9))

    def forward(self, x):
        h = x @ self.w                                        # [2, 5, 9]: 2*5 positions x 6 x 9
        s = torch.einsum("bld,bsd->bls", h, h)                # 2 * 5 * 5 * 9
        q = h.view(2, 5, 3, 3).transpose(1, 2)                # 3 heads of width 3
        return F.scaled_dot_product_attention(q, q, q), s     # 2 * 3 heads * (5 * 5 * 3 + 5 * 5 * 3)


def test_matrix_products_in_custom_modules():
    model = _OwnProducts()
    x = torch.randn(2, 5, 6)
    expected = 2 * 5 * 6 * 9 + 2 * 5 * 5 * 9 + 2 * 3 * 5 * 5 * 6
    assert summarize(model, inputs=x).total_macs == expected
    # the reference on the meta device: FlopCounterMode has no formula for the CPU flash-attention kernel
    # (aten._scaled_dot_product_flash_attention_for_cpu) and would count the attention as 0 there
    assert _torch_macs(model.to("meta"), (x.to("meta"),)) == expected
