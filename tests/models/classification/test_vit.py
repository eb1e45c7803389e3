"""Vision Transformer: torchvision parameter counts, patch embedding = flatten + linear, shapes, gradients, analyses."""

import math

import pytest
import torch
import torch.nn.functional as F

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.classification.vit import (
    PatchEmbedding,
    VisionTransformer,
    mean_attention_distance,
    patchify,
    position_embedding_similarity,
)

# torchvision's documented num_params (1000 classes); spec rows 3-23
TORCHVISION = {"vit_b_16": 86_567_656, "vit_b_32": 88_224_232, "vit_l_16": 304_326_632, "vit_l_32": 306_535_400,
               "vit_h_14": 632_045_800}


@pytest.mark.parametrize("name", TORCHVISION)
def test_parameter_counts_equal_torchvision(name):
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION[name]


def test_vit_b_16_sees_197_tokens_and_gives_logits():
    with torch.device("meta"):
        model = create_model("vit_b_16").eval()
        x = torch.empty(1, 3, 224, 224)
        assert model.tokens(x).shape == (1, 197, 768)  # 14 x 14 = 196 patches + [CLS]
        assert model(x).shape == (1, 1000)
    assert model.default_input_shape == (3, 224, 224)
    with torch.device("meta"):
        assert create_model("vit_h_14").tokens(torch.empty(1, 3, 224, 224)).shape == (1, 257, 1280)


def test_patch_embedding_equals_flatten_then_linear_projection():
    # 002 §3.2: flatten each P x P patch to a P^2 C vector, multiply by W_E in R^{P^2 C x D}
    x = torch.randn(2, 3, 12, 8, dtype=torch.float64)
    emb = PatchEmbedding(4, 3, 5).double()
    W_E = emb.proj.weight.reshape(5, -1).T  # [P^2 C, D] with rows ordered C x P x P
    patches = patchify(x, 4)
    assert patches.shape == (2, 6, 48)  # (12/4)(8/4) = 6 patches of 4*4*3 = 48 values
    torch.testing.assert_close(emb(x), patches @ W_E + emb.proj.bias)
    # the flattening order is that of F.unfold (an independent reference), and patch 0 is the top-left block
    torch.testing.assert_close(patches, F.unfold(x, 4, stride=4).transpose(1, 2))
    torch.testing.assert_close(patches[0, 1], x[0, :, 0:4, 4:8].reshape(-1))


def test_tiny_mnist_shapes_and_every_parameter_gets_gradient():
    model = create_model("vit_tiny_mnist")
    assert model.default_input_shape == (1, 28, 28)
    out = model(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    F.cross_entropy(out, torch.tensor([1, 2, 3])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_class_token_output_is_the_representation():
    model = VisionTransformer(16, 4, 1, 3, dim=16, depth=2, num_heads=2).eval()
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(model(x), model.head(model.encoder(model.tokens(x))[:, 0]))
    tokens = model.tokens(x)
    torch.testing.assert_close(tokens[:, 0], (model.cls_token[0] + model.pos_embed.weight[0]).expand(2, -1))


def test_tiny_vit_learns_sklearn_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images[:200], dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(digits.target[:200])
    torch.manual_seed(0)
    model = VisionTransformer(8, 4, 1, 10, dim=32, depth=2, num_heads=2, mlp_dim=64)  # 8x8 digits, four 4x4 patches
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    acc = (model.eval()(x).argmax(1) == y).float().mean().item()
    assert loss.item() < 0.3 and acc > 0.95  # seeds 0-2: loss 0.09-0.16, accuracy 0.985-1.0


def test_attention_maps_are_row_stochastic_per_layer_and_head():
    model = VisionTransformer(16, 4, 1, 3, dim=16, depth=3, num_heads=2)
    maps = model.attention_maps(torch.randn(2, 1, 16, 16))
    assert len(maps) == 3 and maps[0].shape == (2, 2, 17, 17)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(2, 2, 17))
    d = mean_attention_distance(maps[0][..., 1:, 1:] / maps[0][..., 1:, 1:].sum(-1, keepdim=True), 4, 4)
    assert d.shape == (2, 2) and torch.all(d > 0)


def test_mean_attention_distance_hand_values():
    assert mean_attention_distance(torch.eye(4), 2).item() == 0.0  # every patch attends to itself
    uniform = torch.full((4, 4), 0.25, dtype=torch.float64)
    # on a 2 x 2 grid each patch is 0, 1, 1 and sqrt(2) patches from the four patches
    assert mean_attention_distance(uniform, 2, patch_size=16).item() == pytest.approx(16 * (2 + math.sqrt(2)) / 4)
    with pytest.raises(ConfigError, match="drop \\[CLS\\]"):
        mean_attention_distance(torch.eye(5), 2)


def test_position_embedding_similarity_is_symmetric_with_unit_diagonal():
    model = create_model("vit_tiny_mnist")
    sim = position_embedding_similarity(model.pos_embed.weight[1:].detach())
    assert sim.shape == (16, 16)
    torch.testing.assert_close(sim, sim.T)
    torch.testing.assert_close(sim.diagonal(), torch.ones(16))


def test_wrong_input_is_explained():
    with pytest.raises(ConfigError, match=r"expects images \[N, 1, 28, 28\]"):
        create_model("vit_tiny_mnist")(torch.randn(2, 1, 32, 32))
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        VisionTransformer(30, 7)
