"""Sentence-level data for encoders such as BERT: the spoken lines of a play, next-sentence pairs cut from a
token stream, and a generated word-order classification task.

Notes: 004 BERT. Pre-training reads pairs of text segments "[CLS] A [SEP] B [SEP]" with segment ids 0 for A
and 1 for B; next-sentence prediction asks whether B follows A in the text (Training BERT, step 2). Fine-tuning
needs "a new set of data, specific to the task" (Fine-tuning BERT): `word_order_examples` makes one from any
lines of text with no labelling by hand, real lines (label 1) against lines whose words were shuffled
(label 0), a task that needs a model of word order and which pre-training on the same language helps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from ..errors import ConfigError
from .text import word_tokenize


def speech_lines(text: str) -> list[str]:
    """The spoken lines of a play script in the Tiny Shakespeare layout, in order, stripped.

    A speech is a speaker heading ("First Citizen:", the first line after a blank line, ending with ':')
    followed by its lines; blank lines and headings are dropped.
    """
    lines, after_blank = [], True
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            after_blank = True
            continue
        if not (after_blank and line.endswith(":")):
            lines.append(line)
        after_blank = False
    return lines


class SentenceExamples(NamedTuple):
    """Tokenised sentences and their integer labels [N]."""

    tokens: list[list[str]]
    labels: torch.Tensor


def _is_word(token: str) -> bool:
    return token[0].isalnum()


def shuffle_words(tokens: Sequence[str], generator: torch.Generator, keep_punctuation: bool = True) -> list[str]:
    """The tokens with their words in a random order different from the given one (punctuation stays put when
    `keep_punctuation`); needs at least two different words."""
    slots = [i for i, t in enumerate(tokens) if _is_word(t) or not keep_punctuation]
    words = [tokens[i] for i in slots]
    if len(set(words)) < 2:
        raise ConfigError(f"shuffle_words needs at least two different words to move; got {list(tokens)}")
    while True:
        order = torch.randperm(len(words), generator=generator).tolist()
        moved = [words[j] for j in order]
        if moved != words:
            break
    out = list(tokens)
    for i, w in zip(slots, moved):
        out[i] = w
    return out


def word_order_examples(lines: Sequence[str], n: int, min_words: int = 5, seed: int = 0,
                        tokenize: Callable[[str], list[str]] = word_tokenize,
                        keep_punctuation: bool = True) -> SentenceExamples:
    """A balanced real-versus-shuffled sentence task: label 1 = a line as written, 0 = its words shuffled.

    Draws `n` distinct lines with at least `min_words` words (two of them different) in a seeded random order;
    a random half is kept as written and the other half is shuffled by `shuffle_words`, so every line appears
    once, in one form. Notes: 004 Fine-tuning BERT (a task-specific data set).
    """
    if n < 2:
        raise ConfigError(f"word_order_examples needs n >= 2 examples; got {n}")
    candidates = []
    for line in lines:
        toks = tokenize(line)
        words = [t for t in toks if _is_word(t)]
        if len(words) >= min_words and len(set(words)) >= 2:
            candidates.append(toks)
    if len(candidates) < n:
        raise ConfigError(f"only {len(candidates)} lines have >= {min_words} words; asked for {n}. Give more "
                          "lines or lower n / min_words.")
    g = torch.Generator().manual_seed(seed)
    chosen = [candidates[i] for i in torch.randperm(len(candidates), generator=g)[:n].tolist()]
    labels = torch.zeros(n, dtype=torch.long)
    labels[torch.randperm(n, generator=g)[: n // 2]] = 1
    tokens = [toks if y else shuffle_words(toks, g, keep_punctuation) for toks, y in zip(chosen, labels.tolist())]
    return SentenceExamples(tokens, labels)


def encode_single_sentences(sentences: Sequence[torch.Tensor], max_len: int, cls_id: int, sep_id: int,
                            pad_id: int = 0) -> torch.Tensor:
    """BERT inputs for one-segment tasks: [N, max_len] = [CLS] ids [SEP] <PAD>..., ids cut to max_len - 2."""
    if max_len < 3:
        raise ConfigError(f"max_len must leave room for [CLS], one token and [SEP]; got {max_len}")
    out = torch.full((len(sentences), max_len), pad_id, dtype=torch.long)
    for i, ids in enumerate(sentences):
        ids = torch.as_tensor(ids, dtype=torch.long)[: max_len - 2]
        out[i, 0], out[i, 1: len(ids) + 1], out[i, len(ids) + 1] = cls_id, ids, sep_id
    return out


def sentence_pairs(ids: torch.Tensor, n: int, len_a: int, len_b: int, cls_id: int, sep_id: int,
                   generator: torch.Generator | None = None, next_prob: float = 0.5
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next-sentence-prediction pairs from a token stream `ids` [L]. Notes: 004 Training BERT.

    Each of the `n` examples is [CLS] A [SEP] B [SEP] with A = ids[i : i + len_a] at a random i; with
    probability `next_prob` B is the text that follows (ids[i + len_a : i + len_a + len_b], label 1), otherwise
    a segment from a random place (label 0). Returns (input_ids [n, T], token_type_ids [n, T] with 0 for
    [CLS] A [SEP] and 1 for B [SEP], is_next [n]), T = len_a + len_b + 3.
    """
    span = len_a + len_b
    if ids.dim() != 1 or len(ids) <= span:
        raise ConfigError(f"sentence_pairs needs a 1-D token stream longer than len_a + len_b = {span}; got "
                          f"shape {tuple(ids.shape)}")
    starts = torch.randint(len(ids) - span, (n,), generator=generator)
    others = torch.randint(len(ids) - len_b, (n,), generator=generator)
    is_next = (torch.rand(n, generator=generator) < next_prob).long()
    b_starts = torch.where(is_next.bool(), starts + len_a, others)
    a = ids[starts[:, None] + torch.arange(len_a)]
    b = ids[b_starts[:, None] + torch.arange(len_b)]
    cls = torch.full((n, 1), cls_id, dtype=ids.dtype)
    sep = torch.full((n, 1), sep_id, dtype=ids.dtype)
    input_ids = torch.cat([cls, a, sep, b, sep], 1)
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, len_a + 2:] = 1
    return input_ids, token_type_ids, is_next
