"""The AT&T (ORL) face database: 40 people x 10 grey images, `att_faces/s1..s40/1..10.pgm`.

A face-recognition toy set (Notes: 002 §7). Images are PGM (Netpbm grey maps), read here without
any image library: header `P5` (binary) or `P2` (ASCII), width, height, maxval, `#` comments.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataNotFoundError
from .files import DEFAULT_FIX, damaged, read_bytes, repair_hint
from .root import ENV_VAR, dataset_dir

ORL_URL = "https://cam-orl.co.uk/facedatabase.html"
_TOKEN = re.compile(rb"(?:\s|#[^\n\r]*)*(\S+)")  # skip whitespace and comments, then one token


def read_pgm(path: str | os.PathLike, fix: str = DEFAULT_FIX) -> np.ndarray:
    """Read a PGM file (binary P5 or ASCII P2, maxval <= 65535, with comments) as [H, W] uint8/uint16.

    Values are returned as stored (0..maxval); uint16 when maxval > 255. A damaged file raises DataError naming
    it, with `fix` saying how to repair it.
    """
    return _parse_pgm(Path(path), fix)[0]


def _parse_pgm(path: Path, fix: str = DEFAULT_FIX) -> tuple[np.ndarray, int]:
    if not path.is_file():
        raise DataNotFoundError(f"PGM file not found: {path}")
    buf = read_bytes(path, fix)
    tokens, pos = [], 0
    for _ in range(4):
        m = _TOKEN.match(buf, pos)
        if m is None:
            raise damaged(path, "truncated PGM header (expected magic, width, height, maxval)", fix)
        tokens.append(m.group(1))
        pos = m.end()
    magic = tokens[0]
    if magic not in (b"P5", b"P2"):
        raise damaged(path, f"not a grey PGM: expected magic P5 or P2, got {magic[:8]!r}", fix)
    try:
        w, h, maxval = (int(t) for t in tokens[1:])
    except ValueError:
        raise damaged(path, f"bad PGM header {b' '.join(tokens)[:60]!r}", fix) from None
    if w < 1 or h < 1 or not 0 < maxval <= 65535:
        raise damaged(path, f"bad PGM header: expected width, height >= 1 and 0 < maxval <= 65535; got {w}, {h}, "
                            f"{maxval}", fix)
    dtype = np.dtype("u1") if maxval < 256 else np.dtype(">u2")
    data = None
    if magic == b"P5":
        start = pos + 1  # exactly one whitespace byte ends the header
        if len(buf) >= start + w * h * dtype.itemsize:
            data = np.frombuffer(buf, dtype, count=w * h, offset=start)
    else:
        values = re.sub(rb"#[^\n\r]*", b" ", buf[pos:]).split()
        try:
            data = np.array([int(v) for v in values[: w * h]], dtype=np.int64) if len(values) >= w * h else None
        except ValueError:
            raise damaged(path, "corrupted: the ASCII PGM pixels hold a value that is not an integer", fix) from None
    if data is None:
        raise damaged(path, f"truncated: the PGM pixel data is shorter than {w}x{h}", fix)
    if data.max(initial=0) > maxval:
        raise damaged(path, f"corrupted: pixel values exceed the header's maxval {maxval}", fix)
    return data.astype(np.uint8 if maxval < 256 else np.uint16).reshape(h, w), maxval


def load_orl_faces(data_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All ORL faces: (images uint8 [400, 1, H, W], labels int64 [400]); label k is person s{k+1}."""
    folder = dataset_dir("att_faces", data_dir)
    people = sorted((p for p in folder.glob("s*") if p.is_dir() and p.name[1:].isdigit()),
                    key=lambda p: int(p.name[1:])) if folder.is_dir() else []
    if not people:
        raise DataNotFoundError(f"ORL faces not found: expected folders s1..s40 of .pgm files in {folder}. "
                                f"Get att_faces from {ORL_URL} and unpack it there, or point dlkit at a data "
                                f"root holding 'att_faces/' with --data-dir DIR or {ENV_VAR}=DIR.")
    fix = repair_hint(ORL_URL, folder)
    images, labels = [], []
    for person in people:
        files = sorted(person.glob("*.pgm"), key=lambda p: (len(p.stem), p.stem))
        for f in files:
            img, maxval = _parse_pgm(f, fix)
            if maxval != 255:  # rescale to the full 8-bit range
                img = (img.astype(np.float64) * (255 / maxval)).round().astype(np.uint8)
            images.append(img)
            labels.append(int(person.name[1:]) - 1)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ConfigError(f"ORL faces in {folder} differ in size: {sorted(shapes)[:3]}")
    return torch.from_numpy(np.stack(images)).unsqueeze(1), torch.tensor(labels, dtype=torch.int64)
