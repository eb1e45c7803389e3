import pickle

import numpy as np
import pytest
import torch

from dlkit.data.cifar import cifar_class_names, load_cifar10, load_cifar100, unpickle
from dlkit.errors import ConfigError, DataError, DataNotFoundError


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _batch(n, seed, **labels):
    data = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
    return {b"batch_label": b"batch", b"data": data, b"filenames": [b"f.png"] * n,
            **{k.encode(): v for k, v in labels.items()}}


@pytest.fixture
def cifar10_root(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    batches = [_batch(3, i, labels=[i, (i + 1) % 10, 9]) for i in range(6)]
    for i in range(5):
        _write(folder / f"data_batch_{i + 1}", batches[i])
    _write(folder / "test_batch", batches[5])
    _write(folder / "batches.meta", {b"label_names": [b"airplane", b"automobile"], b"num_vis": 3072})
    return tmp_path, batches


def test_cifar10_pixels_follow_the_official_row_layout(cifar10_root):
    root, batches = cifar10_root
    x, y = load_cifar10("train", data_dir=root, download=False)
    assert x.shape == (15, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    data = batches[1][b"data"]  # value of pixel (c, r, col) of image i is data[i, 1024 c + 32 r + col]
    assert x[3, 2, 5, 7] == data[0, 2 * 1024 + 5 * 32 + 7] and x[4, 0, 31, 0] == data[1, 31 * 32]
    assert y.tolist() == [v for b in batches[:5] for v in b[b"labels"]]
    xt, yt = load_cifar10("test", data_dir=root, download=False)
    assert torch.equal(xt.reshape(3, -1), torch.from_numpy(batches[5][b"data"])) and yt.tolist() == [5, 6, 9]
    assert cifar_class_names(data_dir=root) == ["airplane", "automobile"]


def test_cifar100_fine_and_coarse_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    _write(folder / "train", _batch(4, 0, fine_labels=[0, 99, 5, 6], coarse_labels=[0, 19, 1, 1]))
    _write(folder / "test", _batch(2, 1, fine_labels=[7, 8], coarse_labels=[2, 3]))
    _write(folder / "meta", {b"fine_label_names": [b"apple"], b"coarse_label_names": [b"fish"]})
    x, y = load_cifar100("train", data_dir=tmp_path, download=False)
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 99, 5, 6]
    assert load_cifar100("test", data_dir=tmp_path, label="coarse", download=False)[1].tolist() == [2, 3]
    assert cifar_class_names("cifar-100-python", tmp_path, label="coarse") == ["fish"]
    with pytest.raises(ConfigError, match="label"):
        load_cifar100("train", data_dir=tmp_path, label="medium")


def test_legacy_numpy_module_name_is_accepted(tmp_path):
    # The official files were pickled with numpy 1.x: globals live in numpy.core.multiarray.
    arr = np.arange(12, dtype=np.uint8).reshape(2, 6)
    raw = pickle.dumps({b"data": arr}, protocol=2)
    legacy = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert legacy != raw or b"numpy.core.multiarray" in raw
    (tmp_path / "b").write_bytes(legacy)
    np.testing.assert_array_equal(unpickle(tmp_path / "b")["data"], arr)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_restricted_unpickler_refuses_arbitrary_globals(tmp_path, capsys):
    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(DataError, match=r"refusing to load global (__builtin__|builtins)\.print"):
        unpickle(tmp_path / "evil")
    assert "never run" not in capsys.readouterr().out


def test_missing_cifar_error_points_at_the_official_archive(tmp_path):
    with pytest.raises(DataNotFoundError, match="cifar-10-python.tar.gz.*--data-dir"):
        load_cifar10("train", data_dir=tmp_path, download=False)
    with pytest.raises(DataNotFoundError, match="cifar-100-python.tar.gz"):
        load_cifar100("test", data_dir=tmp_path, download=False)
