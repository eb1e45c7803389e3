"""Character-level text data: Tiny Shakespeare and a character vocabulary (Notes: 002 §3.1.2, 004 RNN).

Each character is a token: `CharVocab` maps the sorted set of characters of a text to ids 0..V-1,
the inputs of an embedding layer or a one-hot encoding.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch

from ..errors import ConfigError
from .download import RemoteFile, ensure_files, sha256_file

TINY_SHAKESPEARE = RemoteFile(
    "input.txt", "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")


def load_tiny_shakespeare(data_dir: str | os.PathLike | None = None, download: bool = True) -> str:
    """The Tiny Shakespeare corpus (1,115,394 characters) as one string, checked against its sha256."""
    folder = ensure_files("tinyshakespeare", [TINY_SHAKESPEARE], data_dir, download)
    path = folder / TINY_SHAKESPEARE.name
    got = sha256_file(path)
    if got != TINY_SHAKESPEARE.sha256:
        raise ConfigError(f"{path} is not the official Tiny Shakespeare file: sha256 expected "
                          f"{TINY_SHAKESPEARE.sha256}, got {got}. Delete it to download it again "
                          f"from {TINY_SHAKESPEARE.url}.")
    return path.read_text(encoding="utf-8")


class CharVocab:
    """A character vocabulary: id = position of the character in the sorted set of the training text."""

    def __init__(self, chars: Iterable[str]):
        chars = list(chars)
        if any(not isinstance(c, str) or len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise ConfigError("CharVocab needs distinct single characters; build it with CharVocab.from_text")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """Vocabulary of the distinct characters of `text`, sorted by code point."""
        if not text:
            raise ConfigError("cannot build a vocabulary from an empty text")
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """Ids of the characters of `text` as an int64 tensor [len(text)]."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64)
        lut = np.full(max(max(map(ord, self.chars)), int(codes.max(initial=0))) + 1, -1, dtype=np.int64)
        lut[[ord(c) for c in self.chars]] = np.arange(len(self.chars))
        ids = lut[codes]
        if (ids < 0).any():
            c = chr(int(codes[np.argmax(ids < 0)]))
            raise ConfigError(f"character {c!r} is not in the vocabulary of {len(self)} characters; "
                              f"build the vocabulary from a text that contains it")
        return torch.from_numpy(ids)

    def decode(self, ids) -> str:
        """The text of a sequence of ids (tensor or list of ints)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        bad = [i for i in ids if not 0 <= int(i) < len(self)]
        if bad:
            raise ConfigError(f"ids must be in [0, {len(self) - 1}]; got {bad[:5]}")
        return "".join(self.chars[int(i)] for i in ids)
