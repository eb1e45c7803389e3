"""MNIST and Fashion-MNIST from their original IDX files (Notes: 000 §3, images as [C, H, W] tensors).

IDX format: two zero bytes, a dtype code, the number of dimensions, then each dimension as a
big-endian int32, then the data in C order, big-endian. The files may be gzipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataNotFoundError
from .download import RemoteFile, ensure_files, find_file
from .files import DEFAULT_FIX, damaged, read_bytes, repair_hint

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}

# The official MNIST .gz bytes vary between mirrors; their uncompressed content does not.
_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://yann.lecun.com/exdb/mnist/")
_MNIST_SHA256_RAW = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_FILES = tuple(RemoteFile(n, _MNIST_URLS[0] + n, None, h, (_MNIST_URLS[1] + n,))
                    for n, h in _MNIST_SHA256_RAW.items())

_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION_SHA256 = {  # (gz bytes, uncompressed content)
    "train-images-idx3-ubyte.gz": ("b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
                                   "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train-labels-idx1-ubyte.gz": ("0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
                                   "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "t10k-images-idx3-ubyte.gz": ("cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
                                  "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "t10k-labels-idx1-ubyte.gz": ("8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
                                  "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
FASHION_MNIST_FILES = tuple(RemoteFile(n, _FASHION_URL + n, a, b) for n, (a, b) in _FASHION_SHA256.items())


def read_idx(path: str | os.PathLike, fix: str = DEFAULT_FIX) -> np.ndarray:
    """Read an IDX file (optionally gzipped; any dtype code and rank) into a native-endian numpy array.

    A damaged file (truncated, bad gzip CRC, not IDX) raises DataError naming it, with `fix` saying how to repair
    it."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"IDX file not found: {path}")
    buf = read_bytes(path, fix)  # gunzipped and CRC-checked to the end
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] not in _IDX_DTYPES:
        raise damaged(path, f"not an IDX file: expected the magic bytes 00 00 <dtype code in "
                            f"{sorted(hex(k) for k in _IDX_DTYPES)}> <ndim>, got {buf[:4].hex(' ') or 'nothing'}", fix)
    dtype, ndim = _IDX_DTYPES[buf[2]], buf[3]
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise damaged(path, f"truncated IDX header: {ndim} dimensions need {header} bytes, the file holds "
                            f"{len(buf)}", fix)
    shape = tuple(int(d) for d in np.frombuffer(buf, ">u4", count=ndim, offset=4)) if ndim else ()
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(buf) != expected:
        what = "truncated" if len(buf) < expected else "corrupted (longer than its header says)"
        raise damaged(path, f"{what}: the IDX header says shape {shape} of {dtype} ({expected} bytes in all), but "
                            f"the file holds {len(buf)} bytes", fix)
    arr = np.frombuffer(buf, dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False) if dtype.byteorder == ">" else arr


def _check_split(split: str) -> None:
    if split not in _FILES:
        raise ConfigError(f"split must be one of {sorted(_FILES)}; got {split!r}")


def _load(dataset: str, files: tuple[RemoteFile, ...], split: str, data_dir, download: bool):
    _check_split(split)
    wanted = [r for r in files if r.name in _FILES[split]]
    folder = ensure_files(dataset, wanted, data_dir, download)
    img_name, lab_name = _FILES[split]
    source = wanted[0].url.rsplit("/", 1)[0] + "/"
    fix = repair_hint(source, folder, downloads=True)
    images = read_idx(find_file(folder, img_name), fix)
    labels = read_idx(find_file(folder, lab_name), fix)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise damaged(folder, f"expected {split} images [N, H, W] and labels [N]; got {images.shape} and "
                              f"{labels.shape}",
                      f"delete {img_name} and {lab_name}: the next run downloads them again from {source}")
    x = torch.from_numpy(images.copy()).unsqueeze(1)  # copy: frombuffer arrays are read-only
    return x.to(torch.uint8), torch.from_numpy(labels.astype(np.int64))


def load_mnist(split: str = "train", data_dir: str | os.PathLike | None = None, download: bool = True):
    """MNIST digits: (images uint8 [N, 1, 28, 28], labels int64 [N]); N = 60,000 train / 10,000 test."""
    return _load("mnist", MNIST_FILES, split, data_dir, download)


def load_fashion_mnist(split: str = "train", data_dir: str | os.PathLike | None = None,
                       download: bool = True):
    """Fashion-MNIST clothes (names in FASHION_MNIST_CLASSES): (uint8 [N, 1, 28, 28], int64 [N])."""
    return _load("fashion-mnist", FASHION_MNIST_FILES, split, data_dir, download)
