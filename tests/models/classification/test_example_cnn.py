"""The example CNN of the notes (003 §3.2.5, cheat sheet §3.4): 30,485 parameters, the layer table, softmax output,
GAP accepting other sizes."""

import pytest
import torch
from model_checks import digits_batch, training_losses
from torch import nn

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.report.summary import summarize


def conv_params(f: int, k: int, d_in: int) -> int:
    return f * (k * k * d_in + 1)  # cheat sheet: F (k_w k_h d_in + 1)


def dense_params(d_in: int, d_out: int) -> int:
    return d_out * (d_in + 1)  # cheat sheet: d_out (d_in + 1)


def test_example_cnn_has_exactly_30485_trainable_parameters():
    model = create_model("example_cnn_003")
    per_layer = [conv_params(8, 3, 3), conv_params(16, 3, 8), conv_params(16, 3, 16), conv_params(24, 5, 16),
                 conv_params(24, 5, 24), dense_params(24, 64), dense_params(64, 16), dense_params(16, 5)]
    assert per_layer == [224, 1168, 2320, 9624, 14424, 1600, 1040, 85]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == sum(per_layer) == 30_485
    assert sum(p.numel() for p in model.parameters()) == 30_485


def test_example_cnn_reproduces_the_layer_table_of_the_notes():
    # shapes H x W x C as Keras prints them, after each conv/pool/GAP/dense layer (spec row 3-11)
    table = [((64, 64, 8), 224), ((32, 32, 8), 0), ((32, 32, 16), 1168), ((32, 32, 16), 2320), ((16, 16, 16), 0),
             ((16, 16, 24), 9624), ((16, 16, 24), 14424), ((8, 8, 24), 0), ((24,), 0), ((64,), 1600),
             ((16,), 1040), ((5,), 85)]
    model = create_model("example_cnn_003")
    assert model.default_input_shape == (3, 64, 64)
    summary = summarize(model, (1, 3, 64, 64))
    kinds = (nn.Conv2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Linear)
    rows = [r for r in summary.rows if r.kind in {k.__name__ for k in kinds}]

    def hwc(shape):  # torch [1, C, H, W] / [1, C, 1, 1] / [1, D] -> the notes' H x W x C or (D,)
        if len(shape) == 4 and shape[2:] != (1, 1):
            return (shape[2], shape[3], shape[1])
        return (shape[1],)

    assert [(hwc(r.output_shape), r.params) for r in rows] == table
    assert summary.total_params == 30_485


def test_example_cnn_outputs_probabilities_and_accepts_96x96():
    model = create_model("example_cnn_003").eval()
    probs = model.predict_proba(torch.randn(4, 3, 64, 64))
    assert probs.shape == (4, 5) and (probs > 0).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(4))
    assert model(torch.randn(2, 3, 96, 96)).shape == (2, 5)  # GAP: other input sizes work


def test_example_cnn_has_dropout_half_and_is_not_fully_convolutional():
    model = create_model("example_cnn_003")
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 3


def test_every_example_cnn_parameter_gets_a_gradient():
    model = create_model("example_cnn_003").train()
    model(torch.randn(4, 3, 64, 64)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_example_cnn_explains_bad_input():
    with pytest.raises(ConfigError, match=r"expects images \[N, 3, H, W\]"):
        create_model("example_cnn_003")(torch.randn(1, 64, 64, 3))


def test_example_cnn_003_loss_falls_on_a_small_batch():
    # dropout off: the listing's two dropouts of 0.5 on 64 and 16 units make a 40-step fit on 32 images too noisy
    x, y = digits_batch(32, 64, 3, 5)
    losses = training_losses(create_model("example_cnn_003", dropout=0.0), x, y, steps=40)
    assert losses[-1] < 0.7 * losses[0], losses
