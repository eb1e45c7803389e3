"""Foreign weight files are read without executing code; damaged or malicious files give one-line errors."""

import pytest
import torch
from safetensors.torch import save_file

from dlkit.errors import CheckpointError
from dlkit.models.weights_file import load_weights_file


class _WritesMarker:
    """Unpickling this calls exec(), which writes a marker file: the shape of a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _state():
    g = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "bn.running_var": torch.rand(4, generator=g),
            "bn.num_batches_tracked": torch.tensor(7)}


def _assert_equal(got, expected):
    assert sorted(got) == sorted(expected)  # safetensors stores names sorted
    for key, value in expected.items():
        assert torch.equal(got[key], value) and got[key].dtype == value.dtype


def test_a_pickle_that_would_execute_code_is_refused_and_does_not_run(tmp_path):
    marker, path = tmp_path / "marker.txt", tmp_path / "evil.pth"
    torch.save({"conv.weight": torch.ones(2), "payload": _WritesMarker(marker)}, path)
    with pytest.raises(CheckpointError) as info:
        load_weights_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert "holds executable pickle code (it calls exec)" in message and "dlkit refuses" in message
    assert "torch.save(model.state_dict(), path)" in message and "safetensors" in message
    assert not marker.exists()
    # the file is a real exploit: loading it the unsafe way does run its code
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_a_torch_saved_state_dict_round_trips(tmp_path, wrapper):
    state, path = _state(), tmp_path / "weights.pth"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, path)
    _assert_equal(load_weights_file(path), state)


def test_a_safetensors_file_round_trips(tmp_path):
    state, path = _state(), tmp_path / "weights.safetensors"
    save_file(state, str(path))
    _assert_equal(load_weights_file(path), state)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_missing_and_truncated_files_give_one_line_errors(tmp_path, suffix):
    with pytest.raises(CheckpointError, match="weight file not found: .*; check the path"):
        load_weights_file(tmp_path / f"nothing{suffix}")
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save(_state(), path)
    else:
        save_file(_state(), str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted") as info:
        load_weights_file(path)
    assert "\n" not in str(info.value)


def test_a_file_without_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.ones(2), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="entry 'epoch' is a int, not a tensor"):
        load_weights_file(path)
    torch.save([torch.ones(2)], path)
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_weights_file(path)
