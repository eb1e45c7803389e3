"""Sentence-level data for encoders such as BERT: the spoken lines of a play, next-sentence pairs cut from a
token stream, masked pre-training batches of a corpus, and a generated word-order classification task.

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
from .text import PAD, UNK, Vocab, word_tokenize

CLS, SEP, MASK = "[CLS]", "[SEP]", "[MASK]"
BERT_SPECIALS = (PAD, UNK, CLS, SEP, MASK)  # <PAD> first: id 0 is BertModel's padding id
TOKENIZERS: dict[str, Callable[[str], list[str]]] = {"char": list, "word": word_tokenize}


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


class MaskedLMCorpus:
    """A BERT pre-training corpus: the token streams of training and held-out lines and their vocabulary.

    Notes: 004 Training BERT. Lines are tokenised by characters (`level="char"`) or words, each ended by "\n"
    (dropped by the word tokenizer); the vocabulary (`BERT_SPECIALS` first, then the training tokens, most
    frequent first, at most `vocab_size` in all when > 0) comes from the training lines only. `batch` draws
    masked next-sentence-prediction batches; `encode_sentences` makes [CLS] line [SEP] inputs for fine-tuning.
    """

    def __init__(self, train_lines: Sequence[str], test_lines: Sequence[str], level: str = "char",
                 vocab_size: int = 0):
        if level not in TOKENIZERS:
            raise ConfigError(f"level must be one of {sorted(TOKENIZERS)}; got {level!r}")
        self.level, self.tokenize = level, TOKENIZERS[level]
        train = [t for line in train_lines for t in self.tokenize(line + "\n")]
        test = [t for line in test_lines for t in self.tokenize(line + "\n")]
        if vocab_size and vocab_size <= len(BERT_SPECIALS):
            raise ConfigError(f"vocab_size counts BERT's {len(BERT_SPECIALS)} special tokens {list(BERT_SPECIALS)} "
                              f"too, so it must be > {len(BERT_SPECIALS)} to leave a text token to mask and predict "
                              f"(or 0: every token of the text); got {vocab_size}")
        self.vocab = v = Vocab.build([train], max_size=vocab_size or None, specials=BERT_SPECIALS)
        self.cls_id, self.sep_id, self.mask_id, self.pad_id = v[CLS], v[SEP], v[MASK], v.pad_id
        self.special_ids = [v[s] for s in BERT_SPECIALS]  # <UNK> is never a target either
        self.train_ids, self.test_ids = v.encode(train), v.encode(test)
        self.most_frequent = len(BERT_SPECIALS)  # Vocab puts the most frequent training token first

    def batch(self, ids: torch.Tensor, n: int, segment_len: int, generator: torch.Generator | None = None,
              mlm_prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A masked next-sentence-prediction batch of `n` pairs of `segment_len`-token segments of `ids`:
        (corrupted ids, segment ids, MLM labels (-100 where not chosen), is_next)."""
        from ..models.sequence.bert import mask_tokens

        x, types, is_next = sentence_pairs(ids, n, segment_len, segment_len, self.cls_id, self.sep_id, generator)
        corrupted, labels = mask_tokens(x, len(self.vocab), self.mask_id, self.special_ids, mlm_prob, generator)
        return corrupted, types, labels, is_next

    def heldout_batches(self, n_batches: int, n: int, segment_len: int, seed: int) -> list[tuple]:
        """`n_batches` fixed batches of the held-out stream, drawn from a generator seeded `seed` (the same
        batches every time they are asked for)."""
        g = torch.Generator().manual_seed(seed)
        return [self.batch(self.test_ids, n, segment_len, g) for _ in range(n_batches)]

    def stream(self, n: int, segment_len: int, seed: int) -> MaskedLMStream:
        """The endless stream of training batches (see `MaskedLMStream`)."""
        return MaskedLMStream(self, n, segment_len, seed)

    def encode_sentences(self, token_lists: Sequence[Sequence[str]], max_len: int) -> torch.Tensor:
        """[CLS] line [SEP] <PAD>... for fine-tuning; a line is its words joined by spaces, then tokenised."""
        return encode_single_sentences([self.vocab.encode(self.tokenize(" ".join(t))) for t in token_lists],
                                       max_len, self.cls_id, self.sep_id, self.pad_id)


class MaskedLMStream:
    """An endless iterable of masked pre-training batches of a corpus's training stream, all drawn from one
    generator seeded `seed`; its state (the generator's) goes into the Trainer's checkpoints, so a resumed run
    draws the batches an uninterrupted one would have drawn. Notes: 004 Training BERT."""

    def __init__(self, corpus: MaskedLMCorpus, n: int, segment_len: int, seed: int = 0):
        if n < 1 or segment_len < 1:
            raise ConfigError(f"batch size and segment_len must be >= 1; got {n}, {segment_len}")
        self.corpus, self.n, self.segment_len = corpus, n, segment_len
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        while True:
            yield self.corpus.batch(self.corpus.train_ids, self.n, self.segment_len, self.generator)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
