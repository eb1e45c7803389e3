import gzip
import struct
import time

import numpy as np
import pytest
import torch

from dlkit.data.mnist import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_fashion_mnist, load_mnist, read_idx
from dlkit.errors import ConfigError, DataError, DataNotFoundError

_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def _idx_bytes(arr: np.ndarray) -> bytes:
    """IDX written by hand from the format's definition: 0, 0, dtype code, ndim, big-endian dims and data."""
    header = bytes([0, 0, _CODES[arr.dtype.type], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype", list(_CODES))
@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), (1, 2, 1, 3)])
def test_read_idx_roundtrips_every_dtype_and_rank(tmp_path, dtype, shape):
    arr = (np.arange(np.prod(shape)) * 3 - 7).astype(dtype).reshape(shape)
    (tmp_path / "a.idx").write_bytes(_idx_bytes(arr))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(_idx_bytes(arr)))
    for name in ("a.idx", "a.idx.gz"):
        got = read_idx(tmp_path / name)
        assert got.dtype == np.dtype(dtype) and got.dtype.isnative
        np.testing.assert_array_equal(got, arr)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes(np.zeros((4, 4), np.uint8))[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")
    with pytest.raises(DataNotFoundError):
        read_idx(tmp_path / "missing")


def test_load_mnist_reads_uncompressed_official_names(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    imgs = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], np.uint8)
    (folder / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(imgs))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))
    x, y = load_mnist("test", data_dir=tmp_path, download=False)
    assert x.dtype == torch.uint8 and x.shape == (7, 1, 28, 28) and y.dtype == torch.int64
    assert torch.equal(x[:, 0], torch.from_numpy(imgs)) and y.tolist() == labels.tolist()


def test_missing_mnist_error_names_files_and_urls(tmp_path):
    with pytest.raises(DataNotFoundError, match="train-images-idx3-ubyte.gz.*ossci-datasets"):
        load_mnist("train", data_dir=tmp_path, download=False)
    with pytest.raises(ConfigError, match="split"):
        load_mnist("valid", data_dir=tmp_path)


def test_class_name_constants():
    assert MNIST_CLASSES == tuple("0123456789")
    assert len(FASHION_MNIST_CLASSES) == 10 and FASHION_MNIST_CLASSES[9] == "Ankle boot"


@pytest.mark.data
def test_mnist_train_has_published_class_counts_and_loads_fast(data_root):
    t = time.perf_counter()
    x, y = load_mnist("train", data_dir=data_root, download=False)
    assert time.perf_counter() - t < 2.0  # 60k images: < 1 s on a laptop, margin for CI
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.uint8
    assert y[:5].tolist() == [5, 0, 4, 1, 9]  # the first digits of MNIST
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    xt, yt = load_mnist("test", data_dir=data_root, download=False)
    assert xt.shape == (10000, 1, 28, 28) and torch.bincount(yt).tolist()[:2] == [980, 1135]


@pytest.mark.data
def test_fashion_mnist_is_balanced(data_root):
    x, y = load_fashion_mnist("test", data_dir=data_root, download=False)
    assert x.shape == (10000, 1, 28, 28)
    assert torch.bincount(y).tolist() == [1000] * 10
