"""Transformer recipes (vit-mnist, transformer-copy, bert-mlm-shakespeare): their helpers and registrations.

The smoke runs themselves are in test_recipes_smoke.py."""

import pytest
import torch

from dlkit import create_model
from dlkit.errors import ConfigError
from dlkit.models.sequence.bert import mask_tokens
from dlkit.recipes import get_recipe, make_config, run_recipe
from dlkit.recipes.transformers import BERT_SPECIALS, pretraining_losses


def test_pretraining_losses_equal_the_models_full_loss():
    torch.manual_seed(0)
    model = create_model("bert_tiny", vocab_size=50, max_position=16, dropout=0.0).double()
    x = torch.randint(len(BERT_SPECIALS), 50, (4, 12))
    types = torch.cat([torch.zeros(4, 6, dtype=torch.long), torch.ones(4, 6, dtype=torch.long)], 1)
    corrupted, labels = mask_tokens(x, 50, mask_id=4, special_ids=range(len(BERT_SPECIALS)), mlm_prob=0.3,
                                    generator=torch.Generator().manual_seed(1))
    is_next = torch.tensor([0, 1, 1, 0])
    mlm, nsp, acc = pretraining_losses(model, corrupted, types, labels, is_next)
    full = model.loss(corrupted, labels, is_next, token_type_ids=types)
    torch.testing.assert_close(mlm + nsp, full)
    assert 0.0 <= acc.item() <= 1.0


@pytest.mark.parametrize("name,metric", [("vit-mnist", "test/accuracy"), ("transformer-copy", "test/exact_match"),
                                         ("bert-mlm-shakespeare", "test/masked_accuracy")])
def test_transformer_recipes_are_registered_within_the_cpu_budget(name, metric):
    recipe = get_recipe(name)
    assert recipe.metric == metric and recipe.budget_s <= 600 and recipe.higher_is_better


def test_transformer_copy_rejects_an_unknown_task(tmp_path):
    with pytest.raises(ConfigError, match="task must be one of"):
        run_recipe("transformer-copy", smoke=True, out=tmp_path, overrides={"task": "sort"})
    assert make_config(get_recipe("transformer-copy"), {"task": "copy"}).task == "copy"
