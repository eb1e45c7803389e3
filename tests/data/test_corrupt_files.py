"""Damaged data files: every reader names the file, says what is wrong and how to repair it, in one line (also
from a DataLoader worker process and through `dlkit run`). The damaged files are copies of the real ones."""

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dlkit.cli import main
from dlkit.data.camvid import CAMVID_URL, load_camvid
from dlkit.data.files import decode_image, read_bytes, read_image, read_text
from dlkit.data.image_folder import ImageFolder, load_image_folder
from dlkit.data.mnist import load_fashion_mnist, load_mnist
from dlkit.data.shapes_folder import write_shapes_folder
from dlkit.data.text import load_tiny_shakespeare
from dlkit.data.voc import read_voc_xml
from dlkit.errors import DataError, DlkitError


def require_dataset(root: Path, name: str) -> Path:
    if not (root / name).is_dir():
        pytest.skip(f"data set '{name}' not found under {root}")
    return root / name

MNIST_TEST = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MNIST_TRAIN = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")


def _copy_tree(src: Path, dst: Path, names, damaged: str, damage) -> Path:
    """dst/NAME linked to src/NAME for each name, except `damaged`, a copy of its bytes passed through `damage`."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name == damaged:
            (dst / name).write_bytes(damage((src / name).read_bytes()))
        else:
            (dst / name).symlink_to(src / name)
    return dst / damaged


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _bad_crc(data: bytes) -> bytes:  # the gzip trailer is CRC-32 (4 bytes) then the length (4 bytes)
    return data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:]


def _flip_payload(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 2] ^= 0x10
    return bytes(b)


def _one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err  # `dlkit run` first says where its run folder is, then the error
    assert code == 2, err
    lines = err.splitlines()
    assert lines[-1].startswith("dlkit: error: ") and "Traceback" not in err, err
    assert sum(line.startswith("dlkit: error:") for line in lines) == 1, err
    for needle in needles:
        assert needle in lines[-1], (needle, err)
    return lines[-1]


# ----------------------------------------------------------------------------- gzip (MNIST, Fashion-MNIST)

@pytest.mark.parametrize("damage, problem", [(_truncate, "truncated: the gzip stream ends early"),
                                             (_bad_crc, "bad CRC"),
                                             (lambda d: b"", "empty file"),
                                             (lambda d: gzip.decompress(d)[:100], "truncated: the IDX header")])
@pytest.mark.parametrize("dataset, loader", [("mnist", load_mnist), ("fashion-mnist", load_fashion_mnist)])
def test_damaged_gz_files_name_the_file_and_the_repair(data_root, tmp_path, dataset, loader, damage, problem):
    src = require_dataset(data_root, dataset)
    bad = _copy_tree(src, tmp_path / dataset, MNIST_TEST, MNIST_TEST[1], damage)
    with pytest.raises(DataError) as err:
        loader("test", data_dir=tmp_path, download=False)
    msg = str(err.value)
    assert msg.startswith(f"{bad}: {problem}") and "\n" not in msg
    assert "Delete it: the next run downloads it again from http" in msg and str(tmp_path / dataset) in msg
    assert "DLKIT_DATA" in msg


def test_a_flipped_compressed_byte_is_caught_by_the_whole_stream_check(data_root, tmp_path):
    bad = _copy_tree(require_dataset(data_root, "mnist"), tmp_path / "mnist", MNIST_TEST, MNIST_TEST[1], _flip_payload)
    with pytest.raises(DataError, match=r"(bad CRC|corrupted gzip data)") as err:
        load_mnist("test", data_dir=tmp_path, download=False)
    assert str(err.value).startswith(f"{bad}: ")
    with pytest.raises(gzip.BadGzipFile):  # the reference: Python's gzip refuses the same bytes
        gzip.decompress(bad.read_bytes())


def test_intact_gz_reads_as_gzip_does(data_root, tmp_path):
    path = require_dataset(data_root, "mnist") / MNIST_TEST[1]
    raw = gzip.decompress(path.read_bytes())
    assert read_bytes(path) == raw
    (tmp_path / path.name).write_bytes(raw)  # saved uncompressed under the .gz name, as browsers may do
    assert read_bytes(tmp_path / path.name) == raw


def test_dlkit_run_on_a_damaged_mnist_file_prints_one_line(data_root, tmp_path, capsys):
    src = require_dataset(data_root, "mnist")
    bad = _copy_tree(src, tmp_path / "data" / "mnist", MNIST_TEST + MNIST_TRAIN, MNIST_TRAIN[1], _truncate)
    code = main(["run", "lenet5-mnist", "--smoke", "--data-dir", str(tmp_path / "data"), "--out",
                 str(tmp_path / "run")])
    _one_line_error(capsys, code, str(bad), "truncated", "Delete it")


# ----------------------------------------------------------------------------- images (CamVid, Raccoon, folders)

def _camvid_tree(src: Path, dst: Path, per_split: int = 2) -> dict[str, list[str]]:
    names = {}
    for split in ("train", "val", "test"):
        stems = sorted(p.stem for p in (src / split).iterdir())[:per_split]
        names[split] = stems
        for folder, ext in ((split, ".jpg"), (f"{split}annot", ".png")):
            (dst / folder).mkdir(parents=True)
            for stem in stems:
                (dst / folder / f"{stem}{ext}").symlink_to(src / folder / f"{stem}{ext}")
    return names


@pytest.mark.parametrize("folder, ext, damage, problem", [
    ("valannot", ".png", _truncate, "truncated image"),
    ("valannot", ".png", _flip_payload, "bad CRC"),
    ("val", ".jpg", _truncate, "truncated image"),
    ("val", ".jpg", lambda d: b"this is not a JPEG\n", "not an image PIL can read"),
])
def test_damaged_camvid_images_name_the_file_and_the_source(data_root, tmp_path, folder, ext, damage, problem):
    src = require_dataset(data_root, "camvid")
    stems = _camvid_tree(src, tmp_path / "camvid")
    bad = tmp_path / "camvid" / folder / f"{stems['val'][1]}{ext}"
    bad.unlink()
    bad.write_bytes(damage((src / folder / bad.name).read_bytes()))
    with pytest.raises(DataError) as err:
        load_camvid("val", data_dir=tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"{bad}: {problem}") and "\n" not in msg
    assert f"Delete it and copy it again from {CAMVID_URL} into {bad.parent}" in msg


def test_dlkit_run_on_a_damaged_camvid_frame_prints_one_line(data_root, tmp_path, capsys):
    src = require_dataset(data_root, "camvid")
    stems = _camvid_tree(src, tmp_path / "data" / "camvid")
    bad = tmp_path / "data" / "camvid" / "train" / f"{stems['train'][0]}.jpg"
    bad.unlink()
    bad.write_text("hello")
    code = main(["run", "unet-camvid", "--smoke", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "r")])
    _one_line_error(capsys, code, str(bad), "not an image PIL can read", CAMVID_URL)


def test_damaged_raccoon_photo_and_annotation(data_root, tmp_path):
    src = require_dataset(data_root, "raccoon")
    photo = tmp_path / "raccoon-1.jpg"
    photo.write_bytes(_truncate((src / "JPEGImages" / "raccoon-1.jpg").read_bytes()))
    with pytest.raises(DataError, match=r"truncated image.*Replace it with an intact copy") as err:
        read_image(photo)
    assert str(err.value).startswith(f"{photo}: ")
    intact = read_image(src / "JPEGImages" / "raccoon-1.jpg")
    with Image.open(src / "JPEGImages" / "raccoon-1.jpg") as im:  # the reference: PIL directly
        assert torch.equal(intact, torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1))
    xml = tmp_path / "raccoon-1.xml"
    xml.write_bytes(_truncate((src / "Annotations" / "raccoon-1.xml").read_bytes()))
    with pytest.raises(DataError, match=r"not valid XML, the file is truncated or damaged"):
        read_voc_xml(xml, fix="copy it again")
    assert read_voc_xml(src / "Annotations" / "raccoon-1.xml")["labels"] == ["raccoon"]


def _shapes_with_damage(root: Path, per_class: int = 8) -> list[Path]:
    """A generated image folder in which every 'square' image is replaced by text."""
    write_shapes_folder(root, per_class=per_class, size=16, seed=0)
    bad = sorted((root / "square").iterdir())
    for p in bad:
        p.write_text("not a PNG")
    return bad


def test_image_folder_names_the_damaged_file_eagerly_and_lazily(tmp_path):
    bad = _shapes_with_damage(tmp_path / "shapes")
    with pytest.raises(DataError, match="not an image PIL can read.*Delete it or replace it") as err:
        load_image_folder(tmp_path / "shapes")
    assert str(err.value).split(": ")[0] in map(str, bad)
    ds = ImageFolder(tmp_path / "shapes")
    with pytest.raises(DataError) as err:
        ds[ds.targets.index(ds.class_to_idx["square"])]
    assert str(err.value).startswith(f"{bad[0]}: not an image PIL can read")


def test_a_worker_process_raises_the_same_one_line_error(tmp_path):
    bad = _shapes_with_damage(tmp_path / "shapes")
    ds = ImageFolder(tmp_path / "shapes")
    first = ds.targets.index(ds.class_to_idx["square"])
    loader = DataLoader(torch.utils.data.Subset(ds, [first]), batch_size=1, num_workers=1)
    with pytest.raises(DataError) as err:
        next(iter(loader))
    msg = str(err.value)
    assert msg.startswith(f"{bad[0]}: not an image PIL can read") and "\n" not in msg and "Traceback" not in msg
    assert "Caught DataError in DataLoader worker process 0" in err.value.worker_traceback
    again = pickle.loads(pickle.dumps(err.value))  # the error also survives pickling as it is
    assert type(again) is DataError and str(again) == msg


def test_dlkit_run_image_folder_with_a_worker_prints_one_line(tmp_path, capsys):
    bad = _shapes_with_damage(tmp_path / "shapes")
    code = main(["run", "image-folder", "--smoke", "--data-dir", str(tmp_path / "shapes"), "--out",
                 str(tmp_path / "run"), "--set", "num_workers=1", "threads=1"])
    err = _one_line_error(capsys, code, "not an image PIL can read", "Delete it or replace it")
    assert any(str(p) in err for p in bad)


def test_decode_image_keeps_label_ids(data_root):
    path = require_dataset(data_root, "camvid") / "valannot"
    path = sorted(path.iterdir())[0]
    with Image.open(path) as im:
        want = np.asarray(im)
    assert np.array_equal(decode_image(path, None), want)


# ----------------------------------------------------------------------------- text

def test_tiny_shakespeare_with_undecodable_bytes(data_root, tmp_path):
    src = require_dataset(data_root, "tinyshakespeare") / "input.txt"
    text = src.read_bytes()
    (tmp_path / "tinyshakespeare").mkdir()
    bad = tmp_path / "tinyshakespeare" / "input.txt"
    bad.write_bytes(text[:1000] + b"\xff\xfe" + text[1002:])
    with pytest.raises(DataError, match="not utf-8 text: byte 0xff at offset 1000.*Delete it: the next run "
                                        "downloads it again from https://raw.githubusercontent.com"):
        load_tiny_shakespeare(tmp_path, download=False)
    bad.write_bytes(text[:1000] + b"XY" + text[1002:])  # decodable, yet not the official text
    with pytest.raises(DataError, match=r"not the official Tiny Shakespeare file \(sha256 expected 86c4e6"):
        load_tiny_shakespeare(tmp_path, download=False)
    bad.write_bytes(text[:5000])
    with pytest.raises(DataError, match=r"not the official Tiny Shakespeare file \(5,000 bytes, expected 1,115,394"):
        load_tiny_shakespeare(tmp_path, download=False)
    bad.write_bytes(text[:1000] + b"\xff\xfe" + text[1002:])
    with pytest.raises(DataError, match=r"not utf-8 text: byte 0xff at offset 1000") as err:
        read_text(bad)
    assert str(err.value).startswith(f"{bad}: ")
    assert load_tiny_shakespeare(data_root, download=False) == src.read_text(encoding="utf-8")


def test_data_error_is_a_dlkit_error_and_an_os_error():
    assert issubclass(DataError, DlkitError) and issubclass(DataError, OSError)
