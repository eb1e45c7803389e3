"""Checkpoints: safetensors + JSON, atomic, nothing pickled, and a fallback past damaged files."""

import json
import pickle

import pytest
import torch

from dlkit.engine.checkpoint import (
    flatten,
    list_checkpoints,
    load_checkpoint_file,
    load_latest_checkpoint,
    save_checkpoint,
    unflatten,
)
from dlkit.errors import CheckpointError


def state(v: float) -> dict:
    return {"model": {"w": torch.full((3, 2), v), "b": torch.arange(3)},
            "optimizers": [{"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.ones(2)}},
                            "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0]}]}],
            "trainer": {"step": int(v), "best": None, "name": "x"}}


def assert_state_equal(a, b):
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b) and a.dtype == b.dtype
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_state_equal(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_state_equal(x, y)
    else:
        assert a == b


def test_flatten_roundtrip_keeps_int_keys_tuples_and_tensors():
    tensors = {}
    skeleton = flatten(state(1.0), tensors)
    json.dumps(skeleton)  # everything but tensors is JSON
    assert_state_equal(unflatten(json.loads(json.dumps(skeleton)), tensors), state(1.0))


def test_save_and_load_roundtrip_without_pickle(tmp_path):
    path = save_checkpoint(tmp_path, 7, state(7.0))
    assert_state_equal(load_checkpoint_file(path), state(7.0))
    blob = path.with_suffix(".safetensors").read_bytes()
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(blob)
    assert not list(tmp_path.glob("*.tmp"))


def test_tied_weights_are_saved():
    tied = torch.nn.Linear(2, 2)
    s = {"a": tied.weight, "b": tied.weight}
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = load_checkpoint_file(save_checkpoint(d, 1, s))
    assert torch.equal(out["a"], out["b"])


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, state(step), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000000004.json", "step_000000005.json"]
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_tensors", "garbage_json"])
def test_damaged_checkpoint_gives_clear_error_and_resume_falls_back(tmp_path, damage):
    save_checkpoint(tmp_path, 1, state(1.0))
    newest = save_checkpoint(tmp_path, 2, state(2.0))
    blob = newest.with_suffix(".safetensors")
    if damage == "truncate":
        blob.write_bytes(blob.read_bytes()[:-10])
    elif damage == "flip":
        data = bytearray(blob.read_bytes())
        data[-3] ^= 0xFF
        blob.write_bytes(bytes(data))
    elif damage == "delete_tensors":
        blob.unlink()
    else:
        newest.write_text("{not json")
    with pytest.raises(CheckpointError, match="step_000000002"):
        load_checkpoint_file(newest)
    with pytest.warns(UserWarning, match="falling back"):
        loaded, path = load_latest_checkpoint(tmp_path)
    assert path.name == "step_000000001.json"
    assert_state_equal(loaded, state(1.0))


def test_no_good_checkpoint_is_an_error_naming_the_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_latest_checkpoint(tmp_path)
    p = save_checkpoint(tmp_path, 3, state(3.0))
    p.with_suffix(".safetensors").write_bytes(b"xx")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="every checkpoint"):
        load_latest_checkpoint(tmp_path)


def test_unsupported_values_are_refused_not_pickled(tmp_path):
    with pytest.raises(CheckpointError, match="never pickled"):
        save_checkpoint(tmp_path, 1, {"f": lambda x: x})


def _forge(path, meta: dict) -> None:
    """Rewrite a checkpoint's JSON as `meta`, keeping its state checksum consistent (a deliberate forgery)."""
    from dlkit.engine.checkpoint import _skeleton_digest

    if isinstance(meta.get("state"), dict) and "state_sha256" in meta:
        meta["state_sha256"] = _skeleton_digest(meta["state"])
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", ["null", "list", "no_sha", "int_sha", "short_sha", "emptied_state", "no_state",
                                    "edited_state", "dangling_tensor", "bad_dict_entry", "deep_nesting",
                                    "forged_sha_bad_tensors", "not_utf8"])
def test_a_checkpoint_of_the_wrong_shape_falls_back_to_the_previous_good_one(tmp_path, damage):
    import hashlib

    save_checkpoint(tmp_path, 1, state(1.0))
    newest = save_checkpoint(tmp_path, 2, state(2.0))
    meta = json.loads(newest.read_text())
    if damage == "null":
        newest.write_text("null")
    elif damage == "list":
        newest.write_text("[1, 2]")
    elif damage == "no_sha":
        del meta["sha256"]
        _forge(newest, meta)
    elif damage == "int_sha":
        meta["sha256"] = 12
        _forge(newest, meta)
    elif damage == "short_sha":
        meta["sha256"] = meta["sha256"][:10]
        _forge(newest, meta)
    elif damage == "emptied_state":
        meta["state"] = {"__dict__": []}
        _forge(newest, meta)
    elif damage == "no_state":
        del meta["state"]
        _forge(newest, meta)
    elif damage == "edited_state":  # the JSON state changed behind the checksum's back
        meta["state"]["__dict__"] = meta["state"]["__dict__"][:1]
        newest.write_text(json.dumps(meta))
    elif damage == "dangling_tensor":
        meta["state"]["__dict__"][0][1]["__dict__"][0][1] = {"__tensor__": "nope"}
        _forge(newest, meta)
    elif damage == "bad_dict_entry":
        meta["state"]["__dict__"][0] = "model"
        _forge(newest, meta)
    elif damage == "deep_nesting":
        newest.write_text('{"format": "dlkit-checkpoint-1", "state": ' + "[" * 100_000 + "]" * 100_000 + "}")
    elif damage == "forged_sha_bad_tensors":  # garbage tensors with a recomputed, matching checksum
        blob = newest.with_suffix(".safetensors")
        blob.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage" + b"\x00" * 32)
        meta["sha256"] = hashlib.sha256(blob.read_bytes()).hexdigest()
        newest.write_text(json.dumps(meta))
    else:
        newest.write_bytes(b"\xff\xfe{" + newest.read_bytes())
    with pytest.raises(CheckpointError, match="step_000000002") as err:
        load_checkpoint_file(newest)
    assert "\n" not in str(err.value)
    with pytest.warns(UserWarning, match="falling back"):
        loaded, path = load_latest_checkpoint(tmp_path)
    assert path.name == "step_000000001.json"
    assert_state_equal(loaded, state(1.0))


def test_when_no_checkpoint_is_good_the_error_is_one_line_and_says_what_to_do(tmp_path):
    save_checkpoint(tmp_path, 1, state(1.0)).write_text("null")
    save_checkpoint(tmp_path, 2, state(2.0)).write_text('{"format": "dlkit-checkpoint-1", "sha256": 5}')
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="every checkpoint") as err:
        load_latest_checkpoint(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "--overwrite" in msg and "step_000000001" in msg and "step_000000002" in msg


def test_checkpoints_written_before_the_state_checksum_still_load(tmp_path):
    path = save_checkpoint(tmp_path, 4, state(4.0))
    meta = json.loads(path.read_text())
    del meta["state_sha256"]
    path.write_text(json.dumps(meta))
    assert_state_equal(load_checkpoint_file(path), state(4.0))


def test_an_empty_state_is_refused_when_saving(tmp_path):
    with pytest.raises(CheckpointError, match="non-empty dict"):
        save_checkpoint(tmp_path, 1, {})
