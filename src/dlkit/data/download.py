"""Fetching data set files from their official sources, with sha256 checks and atomic writes.

Files already in the data set's folder are trusted as they are (their compressed bytes may
differ from the official ones, e.g. re-gzipped MNIST); what is downloaded is checked against
the sha256 of its bytes and, for `.gz` files, of its uncompressed content. A download goes to a
temporary file that is fsynced and renamed, so an interrupted or corrupted download leaves
nothing behind. Without network the error says which files to put where.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataNotFoundError
from .root import ENV_VAR, data_root, dataset_dir

TIMEOUT_S = 20.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One official file of a data set: its name in the folder, URL and checksums.

    `sha256` is the hash of the bytes served at `url` (None when unknown); `sha256_uncompressed`
    the hash of the gunzipped content of a `.gz` file. `mirrors` are tried after `url`.
    """

    name: str
    url: str
    sha256: str | None
    sha256_uncompressed: str | None = None
    mirrors: tuple[str, ...] = ()

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.mirrors)


def sha256_file(path: str | os.PathLike, gunzip: bool = False) -> str:
    """Hex sha256 of a file's bytes, or of its uncompressed content when `gunzip`."""
    opener = gzip.open if gunzip else open
    h = hashlib.sha256()
    with opener(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def find_file(folder: Path, name: str) -> Path | None:
    """The file `name` in `folder`, or its uncompressed twin (`x` for `x.gz`), or None."""
    for cand in (name, name[:-3] if name.endswith(".gz") else None):
        if cand and (folder / cand).is_file():
            return folder / cand
    return None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def download_file(remote: RemoteFile, dest: Path, timeout: float = TIMEOUT_S) -> Path:
    """Download `remote` to `dest` atomically (temp file, fsync, rename), verifying its sha256.

    Tries `remote.urls` in order; raises OSError (with every URL's reason) when none gives a file
    with the right checksums. On any failure no file (partial or temporary) is left behind.
    """
    created = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]  # removed again on failure
    dest.parent.mkdir(parents=True, exist_ok=True)
    reasons = []
    for url in remote.urls:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            req = urllib.request.Request(url, headers={"User-Agent": "dlkit"})
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:
                while chunk := resp.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            got = digest.hexdigest()
            if remote.sha256 and got != remote.sha256:
                raise OSError(f"sha256 mismatch: expected {remote.sha256}, got {got}")
            if remote.sha256_uncompressed:
                got = sha256_file(tmp, gunzip=True)
                if got != remote.sha256_uncompressed:
                    raise OSError(f"sha256 of uncompressed content mismatch: expected "
                                  f"{remote.sha256_uncompressed}, got {got}")
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)
            return dest
        except (OSError, ValueError, EOFError, zlib.error) as e:  # URLError is an OSError; bad gzip: OSError, EOF, zlib
            reasons.append(f"{url}: {getattr(e, 'reason', None) or e}")
        finally:  # after os.replace the temporary name is gone; otherwise remove the partial file
            tmp.unlink(missing_ok=True)
    for d in created:  # a wrong --data-dir leaves no folders behind (innermost first; only if still empty)
        try:
            d.rmdir()
        except OSError:
            break
    raise OSError("; ".join(reasons))


def _missing_error(dataset: str, folder: Path, missing: Sequence[RemoteFile], why: str,
                   extract_hint: str = "") -> DataNotFoundError:
    names = ", ".join(r.name for r in missing)
    urls = " ".join(u for r in missing for u in r.urls[:1])
    return DataNotFoundError(
        f"data set '{dataset}' is incomplete: missing {names} in {folder} ({why}). "
        f"Download {urls} and put the file(s) in {folder}{extract_hint}, "
        f"or point dlkit at a data root that holds '{dataset}/' with --data-dir DIR or {ENV_VAR}=DIR.")


def ensure_files(dataset: str, files: Sequence[RemoteFile], data_dir: str | os.PathLike | None = None,
                 download: bool = True, timeout: float = TIMEOUT_S) -> Path:
    """Return the folder of `dataset` once every file of `files` is there, downloading the missing ones.

    A file counts as present under its name or, for `x.gz`, as the uncompressed `x`. Raises
    DataNotFoundError listing the missing files, their folder and official URLs when the download is
    disabled or fails.
    """
    folder = dataset_dir(dataset, data_dir)
    missing = [r for r in files if find_file(folder, r.name) is None]
    if not missing:
        return folder
    if not download:
        raise _missing_error(dataset, folder, missing, "downloading is disabled")
    failures = []
    for r in missing:
        try:
            download_file(r, folder / r.name, timeout)
        except OSError as e:
            failures.append(f"{r.name}: {e}")
    still = [r for r in missing if find_file(folder, r.name) is None]
    if still:
        raise _missing_error(dataset, folder, still, "download failed: " + " | ".join(failures))
    return folder


def ensure_archive(dataset: str, members: Sequence[str], archive: RemoteFile,
                   data_dir: str | os.PathLike | None = None, download: bool = True,
                   timeout: float = TIMEOUT_S) -> Path:
    """Like `ensure_files` for data sets shipped as one tar archive whose top folder is `dataset`.

    When a member is missing, downloads `archive` into the data root, checks its sha256, extracts it
    there (tarfile's safe 'data' filter: no absolute paths, links out of the root or devices) and
    deletes it.
    """
    root = data_root(data_dir)
    folder = dataset_dir(dataset, data_dir)
    missing = [m for m in members if not (folder / m).is_file()]
    if not missing:
        return folder
    hint = f" (extract it in {root}; it unpacks into '{dataset}/')"
    as_remote = [RemoteFile(m, archive.url, None) for m in missing]
    if not download:
        raise _missing_error(dataset, folder, as_remote, "downloading is disabled", hint)
    tar_path = root / archive.name
    try:
        if not tar_path.is_file():
            download_file(archive, tar_path, timeout)
        with tarfile.open(tar_path) as tar:
            tar.extractall(root, filter="data")
        tar_path.unlink()
    except (OSError, tarfile.TarError) as e:
        raise _missing_error(dataset, folder, as_remote, f"download failed: {e}", hint) from e
    still = [m for m in members if not (folder / m).is_file()]
    if still:
        raise _missing_error(dataset, folder, [RemoteFile(m, archive.url, None) for m in still],
                             f"not in the archive {archive.name}", hint)
    return folder
