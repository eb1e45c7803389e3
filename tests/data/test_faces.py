import numpy as np
import pytest
import torch
from PIL import Image

from dlkit.data.faces import load_orl_faces, read_pgm
from dlkit.errors import DataError, DataNotFoundError


def test_binary_pgm_with_comments_matches_pil(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (5, 7), dtype=np.uint8)
    (tmp_path / "a.pgm").write_bytes(b"P5\n# a comment\n7 5\n# another\n255\n" + img.tobytes())
    got = read_pgm(tmp_path / "a.pgm")
    np.testing.assert_array_equal(got, np.asarray(Image.open(tmp_path / "a.pgm")))
    np.testing.assert_array_equal(got, img)


def test_sixteen_bit_pgm_is_big_endian(tmp_path):
    img = np.random.default_rng(1).integers(0, 60000, (4, 3)).astype(np.uint16)
    (tmp_path / "b.pgm").write_bytes(b"P5 3 4 65535\n" + img.astype(">u2").tobytes())
    got = read_pgm(tmp_path / "b.pgm")
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, np.asarray(Image.open(tmp_path / "b.pgm")).astype(np.uint16))


def test_ascii_pgm_matches_pil(tmp_path):
    img = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    body = "\n".join(" ".join(str(v) for v in row) for row in img)
    (tmp_path / "c.pgm").write_text(f"P2\n# comment\n4 3\n255\n{body}\n")
    np.testing.assert_array_equal(read_pgm(tmp_path / "c.pgm"), np.asarray(Image.open(tmp_path / "c.pgm")))


def test_bad_pgm_files_are_reported(tmp_path):
    (tmp_path / "x.pgm").write_bytes(b"P6\n2 2\n255\n" + bytes(12))
    with pytest.raises(DataError, match="P5 or P2"):
        read_pgm(tmp_path / "x.pgm")
    (tmp_path / "y.pgm").write_bytes(b"P5\n4 4\n255\n" + bytes(5))
    with pytest.raises(DataError, match="truncated"):
        read_pgm(tmp_path / "y.pgm")
    with pytest.raises(DataNotFoundError, match="s1..s40"):
        load_orl_faces(tmp_path)


def test_orl_layout_labels_people_from_zero(tmp_path):
    for person in (1, 2, 10):
        d = tmp_path / "att_faces" / f"s{person}"
        d.mkdir(parents=True)
        for k in (1, 2, 10):
            (d / f"{k}.pgm").write_bytes(b"P5 2 3 255\n" + bytes([person * 10 + k] * 6))
    x, y = load_orl_faces(tmp_path)
    assert x.shape == (9, 1, 3, 2) and y.tolist() == [0, 0, 0, 1, 1, 1, 9, 9, 9]
    assert x[:, 0, 0, 0].tolist() == [11, 12, 20, 21, 22, 30, 101, 102, 110]


@pytest.mark.data
def test_real_orl_faces_have_40_people_of_10_images(data_root):
    x, y = load_orl_faces(data_root)
    assert x.shape[:2] == (400, 1) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [10] * 40
    ref = np.asarray(Image.open(data_root / "att_faces" / "s40" / "10.pgm"))
    np.testing.assert_array_equal(x[-1, 0].numpy(), ref)
