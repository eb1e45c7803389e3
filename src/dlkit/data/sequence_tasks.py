"""Generated sequence-to-sequence tasks: date-format translation, sequence reversal and copying.

Notes: 003 §9 (seq2seq: a source sequence in, a target sequence out, word by word until <EOS>), 004 Seq2Seq
(many-to-many). They stand in for a translation corpus, which needs no download here: every pair is made by a
seeded generator, the train and test splits share no source and no target, and both sides use a character
`Vocab` with the special tokens <PAD>, <SOS>, <EOS>, <UNK>.

- Dates: a human-written date in one of several styles ("september 3, 1998", "3 Sep 1998", "03/09/98", ...)
  -> its ISO form "1998-09-03". Dates lie in 1969-01-01..2068-12-31, so a two-digit year yy means 19yy for
  yy >= 69 and 20yy otherwise (the POSIX/`strptime` pivot). Numeric styles are day first (03/09/98 is 3 Sep).
- Reversal: "cadb" -> "bdac"; copy: "cadb" -> "cadb"; symbols drawn from a small alphabet.
"""

from __future__ import annotations

import datetime as dt
import string
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .text import BucketBatchSampler, PaddedBatch, Vocab, pad_sequences

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

DATE_FORMATS: dict[str, Callable[[dt.date], str]] = {
    "month_day_year": lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",  # september 3, 1998
    "day_mon_year": lambda d: f"{d.day} {MONTHS[d.month - 1][:3].title()} {d.year}",  # 3 Sep 1998
    "dd/mm/yy": lambda d: f"{d.day:02d}/{d.month:02d}/{d.year % 100:02d}",  # 03/09/98
    "day_month_year": lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",  # 3 september 1998
    "mon_dd_year": lambda d: f"{MONTHS[d.month - 1][:3]} {d.day:02d}, {d.year}",  # sep 03, 1998
    "dd.mm.yyyy": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",  # 03.09.1998
    "weekday_day_month_year": lambda d: f"{WEEKDAYS[d.weekday()]}, {d.day} {MONTHS[d.month - 1]} {d.year}",
    "Month_day_year": lambda d: f"{MONTHS[d.month - 1].title()} {d.day} {d.year}",  # September 3 1998
}
FIRST_DATE, LAST_DATE = dt.date(1969, 1, 1), dt.date(2068, 12, 31)

_DATE_SOURCE_CHARS = sorted(set(string.digits + string.ascii_letters + " ,./"))
_DATE_TARGET_CHARS = sorted(set(string.digits + "-"))


@dataclass
class SequenceTask:
    """Source/target string pairs split into train and test, with a character vocabulary per side."""

    name: str
    train: list[tuple[str, str]]
    test: list[tuple[str, str]]
    src_vocab: Vocab
    tgt_vocab: Vocab

    def pairs(self, split: str) -> list[tuple[str, str]]:
        """The (source, target) strings of "train" or "test"."""
        if split not in ("train", "test"):
            raise ConfigError(f"split must be 'train' or 'test'; got {split!r}")
        return self.train if split == "train" else self.test

    def tensors(self, split: str = "train") -> tuple[PaddedBatch, torch.Tensor]:
        """Encoded split: (source batch of ids/lengths/mask, targets [N, T] = [<SOS>, t_1..t_n, <EOS>, <PAD>...])."""
        pairs = self.pairs(split)
        src = pad_sequences([self.src_vocab.encode(s) for s, _ in pairs], self.src_vocab.pad_id)
        tgt = pad_sequences([self.tgt_vocab.encode(t, add_sos=True, add_eos=True) for _, t in pairs],
                            self.tgt_vocab.pad_id).ids
        return src, tgt

    def batches(self, split: str = "train", batch_size: int = 64, shuffle: bool = True, seed: int = 0,
                epoch: int = 0):
        """Mini-batches (source PaddedBatch, targets) of sequences of similar source length (`BucketBatchSampler`)."""
        src, tgt = self.tensors(split)
        sampler = BucketBatchSampler(src.lengths, batch_size, shuffle=shuffle, seed=seed)
        sampler.set_epoch(epoch)
        for idx in sampler:
            idx = torch.tensor(idx)
            L = int(src.lengths[idx].max())
            T = int((tgt[idx] != self.tgt_vocab.pad_id).sum(1).max())
            yield PaddedBatch(src.ids[idx, :L], src.lengths[idx], src.padding_mask[idx, :L]), tgt[idx, :T]

    def loader(self, split: str = "train", batch_size: int = 64, shuffle: bool = True, seed: int = 0,
               bucket: bool = True, rank: int = 0, world_size: int = 1) -> SequenceBatches:
        """The split as a Trainer-ready loader of (source ids, source lengths, targets) batches; see
        `SequenceBatches`."""
        return SequenceBatches(self, split, batch_size, shuffle=shuffle, seed=seed, bucket=bucket, rank=rank,
                               world_size=world_size)


class SequenceBatches:
    """Mini-batches (source ids [B, S], source lengths [B], targets [B, T]) of one split of a `SequenceTask`.

    Targets are [<SOS>, t_1..t_n, <EOS>, <PAD>...] (Notes: 003 §9). With `bucket` (training) the batches are
    those of `SequenceTask.batches`: sequences of similar source length (`BucketBatchSampler`, a new order per
    epoch from (seed, epoch)), each batch cut to its longest source and target. Without it (evaluation) the
    split is cut in order into consecutive batches padded to the split's widths. Sized, with `set_epoch` and
    `iter_from(batch)`, so a Trainer run resumed mid-epoch sees the batches it would have seen. Under DDP
    (`world_size` > 1) each bucketed batch, the global batch, is split into contiguous per-rank slices.
    """

    def __init__(self, task: SequenceTask, split: str = "train", batch_size: int = 64, shuffle: bool = True,
                 seed: int = 0, bucket: bool = True, rank: int = 0, world_size: int = 1):
        if batch_size < 1 or batch_size % world_size:
            raise ConfigError(f"batch_size must be a positive multiple of the number of processes ({world_size}); "
                              f"got {batch_size}")
        self.task, self.split, self.batch_size, self.bucket = task, split, batch_size, bucket
        self.rank, self.world_size = rank, world_size
        self.src, self.tgt = task.tensors(split)
        self.pad_id = task.tgt_vocab.pad_id
        self.sampler = BucketBatchSampler(self.src.lengths, batch_size, shuffle=shuffle, seed=seed) if bucket else None

    def __len__(self) -> int:
        return len(self.sampler) if self.bucket else -(-len(self.tgt) // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use the batch order of `epoch` (bucketed batches only; in-order batches never change)."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def iter_from(self, start: int = 0):
        """The epoch's batches from batch index `start`."""
        if not self.bucket:
            for b in range(start, len(self)):
                sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
                yield self.src.ids[sl], self.src.lengths[sl], self.tgt[sl]
            return
        for b, idx in enumerate(self.sampler):
            if b < start:
                continue
            idx = torch.tensor(idx)
            L = int(self.src.lengths[idx].max())
            T = int((self.tgt[idx] != self.pad_id).sum(1).max())
            if self.world_size > 1:  # the same widths on every rank; a short last batch split as evenly as it goes
                step = -(-len(idx) // self.world_size)
                idx = idx[self.rank * step: (self.rank + 1) * step]
            yield self.src.ids[idx, :L], self.src.lengths[idx], self.tgt[idx, :T]

    def __iter__(self):
        return self.iter_from(0)


def _split_sizes(n_train: int, n_test: int, available: int, what: str) -> None:
    if n_train < 1 or n_test < 0:
        raise ConfigError(f"need n_train >= 1 and n_test >= 0; got {n_train}, {n_test}")
    if n_train + n_test > available:
        raise ConfigError(f"only {available} distinct {what} exist; asked for {n_train} + {n_test}. "
                          "Ask for fewer examples or widen the task.")


def date_task(n_train: int = 10_000, n_test: int = 1_000, seed: int = 0, formats: list[str] | None = None
              ) -> SequenceTask:
    """Date-format translation: human-written date -> ISO "YYYY-MM-DD". Notes: 003 §9 (seq2seq translation).

    Draws n_train + n_test distinct dates of 1969..2068 (seeded), writes each in a random style of `formats`
    (default: all of DATE_FORMATS), and puts the first n_train in train: no date, hence no target and no
    source, is in both splits.
    """
    formats = list(DATE_FORMATS) if formats is None else list(formats)
    bad = [f for f in formats if f not in DATE_FORMATS]
    if bad or not formats:
        raise ConfigError(f"unknown date formats {bad}; choose from {list(DATE_FORMATS)}")
    days = (LAST_DATE - FIRST_DATE).days + 1
    _split_sizes(n_train, n_test, days, "dates")
    g = torch.Generator().manual_seed(seed)
    offsets = torch.randperm(days, generator=g)[:n_train + n_test].tolist()
    styles = torch.randint(len(formats), (n_train + n_test,), generator=g).tolist()
    pairs = []
    for off, k in zip(offsets, styles):
        d = FIRST_DATE + dt.timedelta(days=off)
        pairs.append((DATE_FORMATS[formats[k]](d), d.isoformat()))
    src_vocab = Vocab(_DATE_SOURCE_CHARS)
    tgt_vocab = Vocab(_DATE_TARGET_CHARS)
    return SequenceTask("dates", pairs[:n_train], pairs[n_train:], src_vocab, tgt_vocab)


def _symbol_task(name: str, transform: Callable[[str], str], n_train: int, n_test: int, num_symbols: int,
                 min_len: int, max_len: int, seed: int) -> SequenceTask:
    if not 2 <= num_symbols <= 26:
        raise ConfigError(f"num_symbols must be in [2, 26] (letters a..z); got {num_symbols}")
    if not 1 <= min_len <= max_len:
        raise ConfigError(f"need 1 <= min_len <= max_len; got {min_len}, {max_len}")
    alphabet = string.ascii_lowercase[:num_symbols]
    _split_sizes(n_train, n_test, sum(num_symbols**n for n in range(min_len, max_len + 1)), "sequences")
    g = torch.Generator().manual_seed(seed)
    seen: dict[str, None] = {}
    while len(seen) < n_train + n_test:
        n = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        s = "".join(alphabet[i] for i in torch.randint(num_symbols, (n,), generator=g).tolist())
        seen.setdefault(s)
    sources = list(seen)
    vocab = Vocab(alphabet)
    pairs = [(s, transform(s)) for s in sources]
    return SequenceTask(name, pairs[:n_train], pairs[n_train:], vocab, vocab)


def reversal_task(n_train: int = 2_000, n_test: int = 200, num_symbols: int = 8, min_len: int = 3,
                  max_len: int = 8, seed: int = 0) -> SequenceTask:
    """Sequence reversal: x_1..x_n -> x_n..x_1 over a small alphabet; distinct sources, none in both splits."""
    return _symbol_task("reversal", lambda s: s[::-1], n_train, n_test, num_symbols, min_len, max_len, seed)


def copy_task(n_train: int = 2_000, n_test: int = 200, num_symbols: int = 8, min_len: int = 3, max_len: int = 8,
              seed: int = 0) -> SequenceTask:
    """Sequence copy: x_1..x_n -> x_1..x_n over a small alphabet; distinct sources, none in both splits."""
    return _symbol_task("copy", lambda s: s, n_train, n_test, num_symbols, min_len, max_len, seed)
