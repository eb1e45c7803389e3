"""The character-LM training loop: bf16 autocast where asked, fp32 otherwise; the option is honoured."""

import pytest
import torch
from torch import nn

from dlkit.data.char_lm import CharCorpus
from dlkit.data.text import Vocab
from dlkit.recipes import Config, get_recipe, make_config
from dlkit.recipes.language_models import train_char_lm


class _Bigram(nn.Module):
    """Embedding then a Linear (a matmul, which autocast runs in bf16)."""

    def __init__(self, v: int):
        super().__init__()
        self.table, self.lin = nn.Embedding(v, v), nn.Linear(v, v)

    def forward(self, x):
        return self.lin(self.table(x))


def _run(tmp_path, bf16) -> list[tuple[bool, torch.dtype]]:
    torch.manual_seed(0)
    vocab = Vocab(list("abcd"), specials=())
    ids = torch.randint(0, len(vocab), (400,))
    corpus = CharCorpus(vocab, ids[:300], ids[300:])
    model = _Bigram(len(vocab))
    seen = []

    def loss_fn(x, y):
        logits = model(x)
        seen.append((torch.is_autocast_enabled("cpu"), logits.dtype))
        return nn.functional.cross_entropy(logits.float().reshape(-1, len(vocab)), y.reshape(-1))

    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    cfg = Config(dict(make_config(get_recipe("char-gpt-shakespeare"), smoke=True), iters=4, eval_every=2,
                      log_every=2, batch_size=4, bf16=bf16))
    metrics = train_char_lm(model, loss_fn, opt, sched, corpus, cfg, tmp_path, block_size=8)
    assert metrics["steps"] == 4 and metrics["val/loss"] > 0
    assert model.table.weight.dtype == torch.float32  # master weights stay fp32
    return seen


@pytest.mark.parametrize("bf16, expected", [(True, (True, torch.bfloat16)), (False, (False, torch.float32))])
def test_bf16_option_runs_the_forward_pass_under_autocast(tmp_path, bf16, expected):
    assert set(_run(tmp_path, bf16)) == {expected}
