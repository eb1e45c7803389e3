import hashlib

import pytest
import torch

from dlkit.data.text import TINY_SHAKESPEARE, CharVocab, load_tiny_shakespeare
from dlkit.errors import ConfigError, DataError


def test_vocab_ids_are_sorted_character_positions():
    v = CharVocab.from_text("hello")
    assert v.chars == ["e", "h", "l", "o"] and len(v) == 4
    assert v.encode("hello").tolist() == [1, 0, 2, 2, 3]
    assert v.encode("hello").dtype == torch.int64


def test_decode_inverts_encode_including_non_ascii():
    text = "Ünïcode ✓ and 😀 too\n"
    v = CharVocab.from_text(text)
    assert v.decode(v.encode(text)) == text
    assert v.decode([0, 1]) == v.chars[0] + v.chars[1]
    assert v.encode("").shape == (0,)


def test_unknown_characters_and_ids_are_reported():
    v = CharVocab.from_text("abc")
    with pytest.raises(ConfigError, match="'z' is not in the vocabulary"):
        v.encode("abz")
    with pytest.raises(ConfigError, match=r"\[0, 2\]"):
        v.decode([3])
    with pytest.raises(ConfigError):
        CharVocab.from_text("")


def test_wrong_file_contents_are_rejected_by_sha256(tmp_path):
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("not shakespeare")
    with pytest.raises(DataError, match="sha256"):
        load_tiny_shakespeare(tmp_path, download=False)


@pytest.mark.data
def test_tiny_shakespeare_has_published_length_and_hash(data_root):
    text = load_tiny_shakespeare(data_root, download=False)
    assert len(text) == 1115394 and text.startswith("First Citizen:")
    assert hashlib.sha256(text.encode()).hexdigest() == TINY_SHAKESPEARE.sha256
    v = CharVocab.from_text(text)
    assert len(v) == 65
    ids = v.encode(text)
    assert ids.shape == (len(text),) and v.decode(ids[:200]) == text[:200]
