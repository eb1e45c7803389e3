"""The character language-model recipes on the Trainer: the same numbers as the loop they replaced, a run folder
whose model.json rebuilds the network, renamed options, and the speed in the summary."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from dlkit import create_model
from dlkit.data.char_lm import char_corpus
from dlkit.data.text import load_tiny_shakespeare
from dlkit.errors import ConfigError
from dlkit.recipes import get_recipe, make_config, run_recipe
from dlkit.tasks.language_model import LanguageModelTask

# Smoke-mode validation losses of the hand-written loop these recipes ran before moving onto the Trainer
# (commit 19a458e, seed 0; same weights, data and schedule): the move changed no number.
BEFORE = {"char-gpt-shakespeare": 4.000125978516602, "char-lstm-shakespeare": 4.017823231226209}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_smoke_run_matches_the_old_loop_and_its_model_json_rebuilds_the_network(name, tmp_path, data_root):
    summary = run_recipe(name, smoke=True, out=tmp_path, data_dir=str(data_root))
    assert summary["value"] == pytest.approx(BEFORE[name], abs=1e-4)
    assert summary["metrics"]["val/bits_per_char"] == pytest.approx(summary["value"] / math.log(2))
    assert summary["steps"] == 6  # smoke: batch 4 x 16 = 64 tokens a step
    assert summary["tokens_per_second"] == pytest.approx(summary["iterations_per_second"] * 64)
    text = (tmp_path / "samples.txt").read_text()
    assert f"validation loss {summary['value']:.4f} nats/char" in text.splitlines()[0]
    spec = json.loads((tmp_path / "model.json").read_text())
    model = create_model(spec["name"], **spec["kwargs"])
    model.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    cfg = make_config(get_recipe(name), smoke=True)
    corpus = char_corpus(load_tiny_shakespeare(data_root)[: cfg["subset"]], cfg["val_fraction"])
    assert spec["class_names"] == corpus.vocab.chars
    block = cfg["block_size"] if "gpt" in name else cfg["seq_len"]
    task = LanguageModelTask(model, block_size=block, lr=1e-3)
    with torch.no_grad():
        assert task.evaluate(model.eval(), corpus.val)["loss"] == pytest.approx(summary["value"], rel=1e-9)


def test_options_have_their_canonical_names():
    recipe = get_recipe("char-gpt-shakespeare")
    options = recipe.options()
    for old in ("iters", "warmup_iters", "lr_decay_iters", "eval_every"):
        assert old not in options
        with pytest.raises(ConfigError, match="not an option"):
            make_config(recipe, {old: "10"})
    cfg = make_config(recipe, {"max_steps": "10", "warmup_steps": "2", "lr_decay_steps": "10",
                               "eval_every_steps": "5", "grad_clip_norm": "null", "bf16": "auto"})
    assert (cfg["max_steps"], cfg["grad_clip_norm"], cfg["bf16"]) == (10, None, "auto")
    assert (options["max_steps"], options["grad_clip_norm"], options["bf16"], options["compile"]) == (2000, 1.0, False,
                                                                                                   False)


def test_word2vec_without_a_word_to_embed_says_so_and_its_run_keeps_its_vocabulary(tmp_path, data_root):
    from dlkit import load_run

    with pytest.raises(ConfigError, match=r"no word occurs at least min_freq=100000 times in the 20,000 tokens"):
        run_recipe("word2vec-shakespeare", smoke=True, out=tmp_path / "none", overrides={"min_freq": 100000})
    run_recipe("word2vec-shakespeare", smoke=True, out=tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert len(run.class_names) == run.spec["kwargs"]["vocab_size"] and "the" in run.class_names


@pytest.mark.parametrize("name, option", [("char-lstm-shakespeare", "seq_len"), ("char-gpt-shakespeare", "block_size")])
def test_a_window_longer_than_the_text_names_the_recipes_own_option(tmp_path, data_root, name, option):
    with pytest.raises(ConfigError, match=rf"^{option}=100000: a window of {option} predictions needs {option} \+ 1 "
                                          r"tokens, and the validation text has 2000"):
        run_recipe(name, smoke=True, out=tmp_path, overrides={option: 100000})
