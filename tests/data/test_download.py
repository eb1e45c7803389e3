import gzip
import hashlib
import io
import tarfile

import pytest

from dlkit.data.download import RemoteFile, ensure_archive, ensure_files, sha256_file
from dlkit.errors import DataNotFoundError


def _source(tmp_path, name, data: bytes):
    src = tmp_path / "server" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    return src.as_uri(), hashlib.sha256(data).hexdigest()


def test_download_from_url_writes_verified_file(tmp_path):
    url, digest = _source(tmp_path, "a.bin", b"hello data")
    folder = ensure_files("toy", [RemoteFile("a.bin", url, digest)], data_dir=tmp_path / "root")
    assert folder == tmp_path / "root" / "toy"
    assert (folder / "a.bin").read_bytes() == b"hello data"
    assert sorted(p.name for p in folder.iterdir()) == ["a.bin"]  # no temporary file left


def test_sha256_mismatch_leaves_no_partial_file(tmp_path):
    url, _ = _source(tmp_path, "a.bin", b"tampered")
    with pytest.raises(DataNotFoundError, match="sha256 mismatch"):
        ensure_files("toy", [RemoteFile("a.bin", url, "0" * 64)], data_dir=tmp_path / "root")
    folder = tmp_path / "root" / "toy"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_gzip_file_is_checked_on_uncompressed_content(tmp_path):
    raw = b"\x00\x00\x08\x01\x00\x00\x00\x02\x07\x09"
    url, _ = _source(tmp_path, "x.gz", gzip.compress(raw))
    good = RemoteFile("x.gz", url, None, hashlib.sha256(raw).hexdigest())
    folder = ensure_files("toy", [good], data_dir=tmp_path / "r1")
    assert gzip.decompress((folder / "x.gz").read_bytes()) == raw
    bad = RemoteFile("x.gz", url, None, "f" * 64)
    with pytest.raises(DataNotFoundError, match="uncompressed content mismatch"):
        ensure_files("toy", [bad], data_dir=tmp_path / "r2")
    assert not (tmp_path / "r2" / "toy" / "x.gz").exists()


def test_unreachable_url_error_lists_files_folder_urls_and_options(tmp_path):
    files = [RemoteFile("a.gz", "file:///nonexistent/a.gz", "0" * 64),
             RemoteFile("b.gz", "file:///nonexistent/b.gz", "0" * 64)]
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "b.gz").write_bytes(b"present")
    with pytest.raises(DataNotFoundError) as err:
        ensure_files("toy", files, data_dir=tmp_path)
    msg = str(err.value)
    assert "a.gz" in msg and "missing b.gz" not in msg
    assert str(tmp_path / "toy") in msg and "file:///nonexistent/a.gz" in msg
    assert "--data-dir" in msg and "DLKIT_DATA" in msg
    assert "\n" not in msg


def test_a_failed_download_leaves_no_folder_it_created(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(DataNotFoundError):  # a mistyped --data-dir: nothing may appear there
        ensure_files("toy", [RemoteFile("a.gz", "file:///nonexistent/a.gz", "0" * 64)],
                     data_dir=tmp_path / "kept" / "typo" / "root")
    assert list((tmp_path / "kept").iterdir()) == []


def test_existing_files_are_trusted_without_checksum(tmp_path):
    # Re-compressed .gz (other bytes, same content) must not be rejected or re-downloaded.
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "a.gz").write_bytes(b"other bytes")
    (tmp_path / "toy" / "b").write_bytes(b"uncompressed twin")
    files = [RemoteFile("a.gz", "file:///nonexistent", "0" * 64), RemoteFile("b.gz", "file:///nonexistent", None)]
    assert ensure_files("toy", files, data_dir=tmp_path) == tmp_path / "toy"


def test_download_disabled_raises_with_listing(tmp_path):
    with pytest.raises(DataNotFoundError, match="downloading is disabled.*https://example.org/a"):
        ensure_files("toy", [RemoteFile("a", "https://example.org/a", None)], data_dir=tmp_path, download=False)


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_archive_is_downloaded_verified_extracted_and_removed(tmp_path):
    url, digest = _source(tmp_path, "toy.tar.gz", _tar({"toy/one": b"1", "toy/two": b"22"}))
    root = tmp_path / "root"
    folder = ensure_archive("toy", ["one", "two"], RemoteFile("toy.tar.gz", url, digest), data_dir=root)
    assert (folder / "two").read_bytes() == b"22"
    assert not (root / "toy.tar.gz").exists()
    assert sha256_file(folder / "one") == hashlib.sha256(b"1").hexdigest()


def test_archive_with_path_outside_root_is_refused(tmp_path):
    url, digest = _source(tmp_path, "evil.tar.gz", _tar({"../escaped": b"x", "toy/one": b"1"}))
    with pytest.raises(DataNotFoundError):
        ensure_archive("toy", ["one"], RemoteFile("evil.tar.gz", url, digest), data_dir=tmp_path / "root")
    assert not (tmp_path / "escaped").exists()
