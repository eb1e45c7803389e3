"""Sequence and transformer recipes (vit-mnist, transformer-copy, seq2seq-attention-dates, word2vec-shakespeare,
bert-mlm-shakespeare): registrations, canonical option names, what their runs write.

The smoke runs of every recipe are in test_recipes_smoke.py; the tasks' own tests in tests/tasks/."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dlkit import create_model, load_run
from dlkit.errors import ConfigError
from dlkit.recipes import get_recipe, make_config, run_recipe

TRAINED = ["transformer-copy", "seq2seq-attention-dates", "word2vec-shakespeare", "bert-mlm-shakespeare"]


def needs(*names):
    root = os.environ.get("DLKIT_DATA")
    if not root or not all((Path(root) / n).is_dir() for n in names):
        pytest.skip(f"needs data sets {list(names)} under DLKIT_DATA")


@pytest.mark.parametrize("name,metric", [("vit-mnist", "test/accuracy"), ("transformer-copy", "test/exact_match"),
                                         ("bert-mlm-shakespeare", "test/masked_accuracy")])
def test_transformer_recipes_are_registered_within_the_cpu_budget(name, metric):
    recipe = get_recipe(name)
    assert recipe.metric == metric and recipe.budget_s <= 600 and recipe.higher_is_better


@pytest.mark.parametrize("name", TRAINED)
def test_networks_train_through_the_trainer_with_canonical_option_names(name):
    recipe = get_recipe(name)
    assert not recipe.study
    options = recipe.options()
    assert {"device", "max_steps", "eval_every_steps", "grad_clip_norm"} <= set(options)
    for old in ("steps", "iters", "eval_every", "warmup_fraction"):
        with pytest.raises(ConfigError, match="not an option"):
            make_config(recipe, {old: 1})
    assert get_recipe("rnn-gradient-flow").study  # a measurement of untrained cells: nothing to train


def test_transformer_copy_rejects_an_unknown_task(tmp_path):
    with pytest.raises(ConfigError, match="task must be one of"):
        run_recipe("transformer-copy", smoke=True, out=tmp_path, overrides={"task": "sort"})
    assert make_config(get_recipe("transformer-copy"), {"task": "copy"}).task == "copy"


def test_a_transformer_copy_run_can_be_rebuilt_from_its_folder_and_decodes_with_a_beam(tmp_path):
    summary = run_recipe("transformer-copy", smoke=True, out=tmp_path, overrides={"beam_width": 2})
    assert {"test/beam_exact_match", "test/beam_token_accuracy"} <= set(summary["metrics"])
    spec = json.loads((tmp_path / "model.json").read_text())
    model = create_model(spec["name"], **spec["kwargs"])
    weights = load_file(str(tmp_path / "model.safetensors"))
    model.load_state_dict(weights)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert (tmp_path / "samples.txt").read_text().count("->") >= 20
    assert (tmp_path / "figures" / "cross_attention_layer2.png").is_file()
    run = load_run(tmp_path)  # its vocabulary maps the model's ids back to tokens
    assert run.task == "sequence" and len(run.class_names) == spec["kwargs"]["src_vocab_size"]
    assert run.class_names[spec["kwargs"]["eos_id"]] == "<EOS>" and "a" in run.class_names
    ids = torch.tensor([[run.class_names.index(c) for c in "abc"]])
    out = run.model.greedy_decode(ids, max_len=5)
    assert all(0 <= i < len(run.class_names) for i in out.flatten().tolist())


def test_vit_mnist_writes_its_model_spec(tmp_path):
    needs("mnist")
    run_recipe("vit-mnist", smoke=True, out=tmp_path)
    spec = json.loads((tmp_path / "model.json").read_text())
    assert spec["name"] == "vit_tiny_mnist" and spec["class_names"] == [str(i) for i in range(10)]
    assert spec["input"] == {"mean": [0.1307], "std": [0.3081], "size": [28, 28], "channels": 1}
    model = create_model(spec["name"], **spec["kwargs"])
    model.load_state_dict(load_file(str(tmp_path / "model.safetensors")))


def test_bert_run_reports_the_fine_tuning_comparison(tmp_path):
    needs("tinyshakespeare")
    summary = run_recipe("bert-mlm-shakespeare", smoke=True, out=tmp_path)
    m = summary["metrics"]
    assert {"test/finetune_accuracy_pretrained", "test/finetune_accuracy_scratch", "test/unigram_baseline",
            "test/nsp_accuracy"} <= set(m)
    assert (tmp_path / "figures" / "fine_tuning_loss.png").is_file()
    assert (tmp_path / "samples_mlm.txt").read_text().startswith("every fifth token of held-out lines masked")
    assert summary["steps"] == 4 and (tmp_path / "checkpoints").is_dir()
