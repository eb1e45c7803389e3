"""Reading data files whole, with one clear error for a damaged one (Notes: 000 §3, data as tensors).

Every data-set reader opens its files through these helpers: `read_bytes` (gzip verified to its end: CRC and
length), `decode_image` / `read_image` (PIL decodes every pixel, and a PNG's chunk checksums are checked) and
`read_text`. A truncated, corrupted or mislabelled file raises `DataError` naming the file, what is wrong with
it and how to repair it (the `fix` argument: each data set says where its intact copy comes from), so that
`dlkit` prints one line instead of a traceback, also from a DataLoader worker process.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, DataError
from .root import ENV_VAR

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_FIX = "replace it with an intact copy (delete it, then copy or download it again)"


def repair_hint(source: str, folder: str | os.PathLike | None = None, downloads: bool = False) -> str:
    """How to repair a damaged file of a data set whose intact copy comes from `source` (a URL or a name):
    'delete it and copy it again from SOURCE into FOLDER ...'; `downloads` when dlkit fetches missing files itself."""
    into = f" into {folder}" if folder is not None else ""
    if downloads:
        return (f"delete it: the next run downloads it again from {source} (or copy the official file{into} "
                f"yourself; the data root is --data-dir or ${ENV_VAR})")
    return f"delete it and copy it again from {source}{into} (the data root is --data-dir or ${ENV_VAR})"


def damaged(path: str | os.PathLike, problem: str, fix: str = DEFAULT_FIX) -> DataError:
    """The one-line DataError for a damaged file: 'PATH: PROBLEM. FIX'."""
    problem = " ".join(str(problem).split())
    return DataError(f"{path}: {problem}. {fix[:1].upper()}{fix[1:]}")


def _unreadable(path: Path, e: OSError, fix: str) -> DataError:
    if isinstance(e, FileNotFoundError):  # nothing to delete: put the file there (or fix the listing naming it)
        return damaged(path, "file not found", "put the file there (copy or download it again)" if fix == DEFAULT_FIX
                       else fix)
    if isinstance(e, PermissionError):
        return damaged(path, "cannot be read (permission denied)", "make it readable (chmod u+r), or " + fix)
    if isinstance(e, IsADirectoryError):
        return damaged(path, "is a folder, expected a file", "remove or rename the folder, then " + fix)
    return damaged(path, f"cannot be read ({e.strerror or e})", fix)


def _read_raw(path: Path, fix: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise _unreadable(path, e, fix) from None


def gunzip(data: bytes, path: str | os.PathLike, fix: str = DEFAULT_FIX) -> bytes:
    """Decompress a whole gzip stream (every member), verified: its CRC-32 and length trailer must match.

    DataError for a truncated stream, a bad CRC or length, corrupt deflate data or a missing gzip signature."""
    if not data:
        raise damaged(path, "empty file (0 bytes), expected gzip data", fix)
    if data[:2] != GZIP_MAGIC:
        raise damaged(path, f"not a gzip file: expected the signature 1f 8b, got {data[:2].hex(' ')}", fix)
    try:
        return gzip.decompress(data)
    except EOFError:
        raise damaged(path, f"truncated: the gzip stream ends early ({len(data)} bytes, no end-of-stream "
                            "marker)", fix) from None
    except gzip.BadGzipFile as e:
        what = ("bad CRC: the decompressed data does not match the gzip checksum, the file is corrupted"
                if "CRC" in str(e) else f"corrupted gzip data ({e})")
        raise damaged(path, what, fix) from None
    except zlib.error as e:
        raise damaged(path, f"corrupted gzip data, the compressed stream cannot be decoded ({e})", fix) from None


def read_bytes(path: str | os.PathLike, fix: str = DEFAULT_FIX) -> bytes:
    """All bytes of a file, decompressed (and verified, see `gunzip`) when it starts with the gzip signature (a
    `.gz` name holding the uncompressed content, as a browser may save it, is read as it is). DataError naming the
    file for an unreadable, empty or damaged one."""
    path = Path(path)
    data = _read_raw(path, fix)
    if not data:
        raise damaged(path, "empty file (0 bytes)", fix)
    return gunzip(data, path, fix) if data[:2] == GZIP_MAGIC else data


_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF"}


def _image_problem(e: BaseException, data: bytes) -> str:
    msg = " ".join(str(e).split())
    if isinstance(e, UnidentifiedImageError):
        fmt = next((f for sig, f in _SIGNATURES.items() if data.startswith(sig)), None)
        if fmt:  # the signature is there, the header is not
            return f"truncated or damaged {fmt} file: it starts as a {fmt} but its header cannot be read"
        return "not an image PIL can read: its format is not recognised (expected PNG, JPEG, ...)"
    if isinstance(e, EOFError) or "truncated" in msg.lower() or "truncated" in type(e).__name__.lower():
        return f"truncated image: the file ends before all its pixels ({msg})"
    if "checksum" in msg.lower() or "crc" in msg.lower():
        return f"bad CRC: the image data does not match its checksum, the file is corrupted ({msg})"
    if isinstance(e, Image.DecompressionBombError):
        return f"refused as too large to decode safely ({msg})"
    return f"corrupted image that PIL cannot decode ({type(e).__name__}: {msg})"


def decode_image(path: str | os.PathLike, mode: str | None = "RGB", fix: str = DEFAULT_FIX) -> np.ndarray:
    """Decode every pixel of an image file: [H, W] or [H, W, C] array in PIL `mode` ('RGB', 'L', ...; None keeps the
    stored mode, e.g. a palette label map's class ids). PNG chunk checksums are verified first.

    DataError naming the file for a truncated file, a bad checksum, a file that is not an image or any other
    decoding failure."""
    path = Path(path)
    data = _read_raw(path, fix)
    if not data:
        raise damaged(path, "empty file (0 bytes), expected an image", fix)
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "PNG":
                im.verify()  # checks every chunk's CRC, which decoding alone skips for the pixel data
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if mode is not None and im.mode.startswith("I") and mode in ("L", "RGB"):
                im = _eight_bit(np.asarray(im), path)
            elif mode is not None and im.mode == "F" and mode in ("L", "RGB"):
                raise ConfigError(f"{path}: 32-bit floating-point pixels (PIL mode F), which have no fixed range to "
                                  "map to 0..255 (PIL would clip them, a [0, 1] image to black); convert the image to "
                                  "8 or 16 bits")
            return np.asarray(im if mode is None or im.mode == mode else im.convert(mode))
    except ConfigError:  # a readable image this reader refuses, said as such (ConfigError is a ValueError too)
        raise
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError) as e:
        raise damaged(path, _image_problem(e, data), fix) from None


def _eight_bit(pixels: np.ndarray, path: Path) -> Image.Image:
    """A 16-bit grey image (PIL mode I;16 or I) as 8-bit grey, scaled as torchvision's `to_dtype` scales uint16 to
    uint8 (the high byte), where PIL's own conversion clips every value above 255 to 255."""
    if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        raise ConfigError(f"{path}: 32-bit integer pixels in {int(pixels.min())}..{int(pixels.max())}, outside the "
                          "16-bit range 0..65535 this reader scales to 8 bits; convert the image to 8 or 16 bits")
    return Image.fromarray((pixels.astype(np.uint32) >> 8).astype(np.uint8))


def read_image(path: str | os.PathLike, mode: str = "RGB", fix: str = DEFAULT_FIX) -> torch.Tensor:
    """Decode an image file into a uint8 tensor [C, H, W] (PIL `mode`: 'RGB' -> C=3, 'L' -> C=1); a damaged file
    raises DataError (see `decode_image`)."""
    arr = decode_image(path, mode, fix)
    if arr.dtype != np.uint8:
        raise ConfigError(f"{path}: mode {mode!r} gives {arr.dtype} pixels; use 'RGB' or 'L' for uint8")
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def read_text(path: str | os.PathLike, fix: str = DEFAULT_FIX, encoding: str = "utf-8") -> str:
    """The text of a file (gzipped or not, see `read_bytes`); bytes that are not valid `encoding` raise DataError
    naming the file and the offset of the first bad byte."""
    return decode_text(read_bytes(path, fix), path, fix, encoding)


def decode_text(data: bytes, path: str | os.PathLike, fix: str = DEFAULT_FIX, encoding: str = "utf-8") -> str:
    """`data` (the bytes of file `path`) as text; bytes that are not valid `encoding` raise DataError naming the file
    and the offset of the first bad byte."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise damaged(path, f"not {encoding} text: byte 0x{data[e.start]:02x} at offset {e.start} cannot be "
                            f"decoded ({e.reason})", fix) from None
