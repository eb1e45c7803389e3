"""`dlkit summary` on models that read token ids: the input shape is the sequence length; image shapes for token
models and sequence shapes for image models are refused with one line (Notes: 004 GPT, 002 §3.1)."""

import torch

from dlkit import create_model
from dlkit.cli import main
from dlkit.report.summary import default_input_shape, example_inputs, summarize


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_gpt_summary_from_a_sequence_length(capsys):
    """gpt_char_nano at 16 tokens: per layer Q/K/V/O 4 T d^2, scores and values 2 T^2 d, MLP 8 T d^2; head T d V."""
    model = create_model("gpt_char_nano")
    d, layers, vocab = model.tok_emb.embedding_dim, len(model.blocks.layers), model.vocab_size
    T = 16
    expected = layers * (4 * T * d * d + 2 * T * T * d + 8 * T * d * d) + T * d * vocab
    code, out, err = run(capsys, "summary", "gpt_char_nano", "--input-shape", "16")
    assert code == 0, err
    assert f"input 1x16: {sum(p.numel() for p in model.parameters()):,} parameters" in out
    assert f"{expected:,} multiply-adds" in out


def test_token_models_have_a_default_length_and_two_input_models_get_both(capsys):
    model = create_model("transformer_tiny")
    assert default_input_shape(model) == (32,)
    src, tgt = example_inputs(model, (1, 32))
    assert src.dtype == torch.long and tgt.shape == (1, 32) and int(src.max()) < model.src_emb.num_embeddings
    for name in ("transformer_tiny", "seq2seq_gru_attention", "char_lstm", "word2vec_cbow", "elmo_small"):
        code, out, err = run(capsys, "summary", name)
        assert code == 0 and "input 1x32:" in out, (name, err)
    # seq2seq reads lengths from the padding, which the meta device cannot give: the memory estimate probes
    s = summarize(create_model("seq2seq_gru"), input_shape=(1, 20))
    assert s.total_macs > 0 and s.input_shape == (1, 20)


def test_wrong_kind_of_shape_is_one_line(capsys):
    code, _, err = run(capsys, "summary", "gpt_char_nano", "--input-shape", "3,32,32")
    assert code == 2 and err.count("\n") == 1
    assert "reads token ids [batch, length]" in err and "one number, the sequence length" in err and "3x32x32" in err
    code, _, err = run(capsys, "summary", "resnet18", "--input-shape", "64")
    assert code == 2 and err.count("\n") == 1
    assert "ResNet cannot take an input of shape 64" in err and "3x224x224 (its default)" in err
    code, _, err = run(capsys, "summary", "gpt_char_nano", "--input-shape", "100000")
    assert code == 2 and err.count("\n") == 1 and "cannot take an input of shape 100000" in err
