"""Run folders that lose nothing: output paths checked before any work, one owning process per folder, unique
default names, and no mixing of two runs' files.

- `check_output_path` refuses, before anything runs, an output path that is a file where a folder is expected
  (or the reverse), lies under a file, is not writable (probed by creating a file, which also holds for root),
  or is too long for the file system; `dlkit run --out/--resume`, `dlkit verify --results` and
  `dlkit status --out` use it.
- `RunLock` makes a run folder owned by one process: a lock file `.dlkit.lock` (pid, host, start time, command)
  held with `fcntl.flock`, so the kernel releases it when the process dies; a lock file left by a dead process
  is taken over with a warning; the file is removed on release.
- `new_run_dir` creates runs/RECIPE/YYYYmmdd-HHMMSS[-smoke] atomically (mkdir), adding -2, -3, ... when two runs
  start in the same second.
- `claim_run_dir` takes a folder for a run: refuses one that holds a previous run unless it is resumed or
  overwritten. `--overwrite` first moves the previous run's files aside (into `.dlkit-replaced/`), so the two
  never mix; they are deleted once the new run has trained its first step (`drop_set_aside`), and put back if it
  fails before that (`restore_set_aside`): a typo in `--data-dir` loses nothing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import warnings
from pathlib import Path

from .errors import ConfigError

LOCK_NAME = ".dlkit.lock"
# the longest relative name dlkit writes under a run folder (checkpoints/step_000000000.safetensors.tmp is 44)
INNER_NAME_RESERVE = 64
# what shows that a folder holds a run that trained (finished or interrupted); a config.json alone is a run that
# stopped before its first step (while loading its data), which a new run may replace: nothing of it is lost
RUN_FILES = ("checkpoints", "metrics.csv", "summary.json", "model.safetensors", "model.json", "report.html",
             "tensorboard", "figures")
# what a run writes, so what --overwrite may delete: known folders and files with these suffixes
SET_ASIDE = ".dlkit-replaced"  # an overwritten run's files while the run replacing it is being built
RUN_FOLDERS = ("checkpoints", "tensorboard", "figures", SET_ASIDE)
RUN_SUFFIXES = (".json", ".csv", ".html", ".txt", ".png", ".safetensors", ".pt2", ".onnx", ".tmp")


def _limits(existing: Path) -> tuple[int, int]:
    try:
        return os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 255, 4096


def check_output_path(path: str | Path, flag: str, *, folder: bool = True, must_exist: bool = False) -> Path:
    """Refuse `path` (given as option `flag`, e.g. '--out') before any work if dlkit could not write there: a file
    where a folder is expected (or a folder where a file is), a path under a file, an unwritable place, a name or
    path too long for the file system. `must_exist`: the folder must already be there (--resume). Returns it."""
    text = os.fspath(path)

    def refuse(what: str, fix: str) -> ConfigError:
        shown = text if len(text) <= 100 else text[:60] + "..." + text[-30:]
        return ConfigError(f"{flag} {shown!r}: {what}; {fix}")

    kind = "folder" if folder else "file"
    if not text or "\0" in text:
        raise refuse("is empty or holds a NUL character", f"pass a {kind} path")
    try:
        full = os.fsencode(os.path.abspath(text))
    except (UnicodeError, ValueError):
        raise refuse("cannot be encoded as a file name on this system", f"pass a {kind} path of plain characters") \
            from None
    target = Path(os.fsdecode(full))
    # the deepest part of the path that exists, and what lies on the way to it
    existing = target
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    name_max, path_max = _limits(existing if existing.is_dir() else existing.parent)
    too_long = [p for p in target.parts if len(os.fsencode(p)) > name_max]
    if too_long:
        raise refuse(f"the name {too_long[0][:40]!r}... is {len(os.fsencode(too_long[0]))} bytes long, more than "
                     f"the {name_max} bytes a file name may have here", "pass a shorter name")
    reserve = INNER_NAME_RESERVE if folder else 0
    if len(full) + reserve > path_max:
        raise refuse(f"the path is {len(full)} bytes long; with the files written under it it must stay under "
                     f"{path_max} bytes", "pass a shorter path")
    if existing == target and os.path.lexists(target):
        if folder and not target.is_dir():
            raise refuse("is a file, not a folder", "pass a run folder written by `dlkit run`" if must_exist else
                         "pass a folder path, or remove the file")
        if not folder and target.is_dir():
            raise refuse("is a folder, not a file", "pass a file path such as docs/STATUS.md")
        if not folder and not target.is_file():  # a FIFO or a device: opening it could block or mean nothing
            raise refuse("is not a regular file", "pass a file path such as docs/STATUS.md")
    elif must_exist:
        raise refuse("does not exist", "pass a run folder written by `dlkit run`")
    elif not existing.is_dir():
        raise refuse(f"lies under {str(existing)!r}, which is a file, so nothing can be created there",
                     "pass a path in a folder")
    if existing != target:
        _probe_writable(existing, refuse)
    elif folder:
        _probe_writable(target, refuse)
    else:
        _probe_writable(target.parent, refuse)
        try:
            open(target, "ab").close()  # opening for append changes nothing in the file
        except OSError as e:
            raise refuse(f"cannot be written ({e.strerror or e})", "fix its permissions or pass another file") \
                from None
    return Path(text)


def _probe_writable(folder: Path, refuse) -> None:
    """Create and delete a file in `folder`: the only test of writability that also holds for root, read-only
    mounts and ACLs."""
    try:
        fd, name = tempfile.mkstemp(prefix=".dlkit-probe-", dir=folder)
    except OSError as e:
        raise refuse(f"cannot write in {str(folder)!r} ({e.strerror or e})",
                     "pass a path in a folder you can write to, or fix its permissions") from None
    os.close(fd)
    os.unlink(name)


def new_run_dir(root: str | Path, name: str, smoke: bool) -> Path:
    """Create and return runs/NAME/YYYYmmdd-HHMMSS[-smoke], with -2, -3, ... when that name is taken: mkdir is
    atomic, so two runs started in the same second never share a folder."""
    parent = Path(root) / name
    parent.mkdir(parents=True, exist_ok=True)
    stem = time.strftime("%Y%m%d-%H%M%S") + ("-smoke" if smoke else "")
    for i in range(1, 10_000):
        path = parent / (stem if i == 1 else f"{stem}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise ConfigError(f"{parent}: 10000 run folders named {stem}-N exist; remove old runs or pass --out")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _describe(owner: dict) -> str:
    return (f"process {owner.get('pid', '?')} on host {owner.get('host', '?')} ({owner.get('command', 'dlkit')}, "
            f"started {owner.get('started', '?')})")


class RunLock:
    """Ownership of a run folder by this process (see the module docstring); a context manager."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _read_owner(self) -> dict:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError, RecursionError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def acquire(self) -> RunLock:
        """Take the folder or raise ConfigError naming the process that holds it."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise ConfigError(f"cannot create the lock file {self.path} ({e.strerror}); pass a run folder you "
                                  "can write to") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked_by_kernel = True
            except BlockingIOError:
                os.close(fd)
                raise ConfigError(f"run folder {self.run_dir} is in use by {_describe(self._read_owner())}; wait for "
                                  "it to finish or stop it, or pass another --out") from None
            except OSError as e:  # a file system without flock: fall back to the pid the file names
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
                locked_by_kernel = False
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its owner released (removed) it between our open and our lock: take the new one
                os.close(fd)
                continue
            break
        owner = self._read_owner()
        if owner and owner.get("pid") != os.getpid():
            here = owner.get("host") == socket.gethostname()
            if not locked_by_kernel and here and isinstance(owner.get("pid"), int) and _alive(owner["pid"]):
                os.close(fd)
                raise ConfigError(f"run folder {self.run_dir} is in use by {_describe(owner)}; wait for it to finish "
                                  "or stop it, or pass another --out")
            warnings.warn(f"run folder {self.run_dir}: taking over the lock of {_describe(owner)}, which no longer "
                          "runs (it was killed or crashed)", stacklevel=2)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(["dlkit", *sys.argv[1:]])[:200]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the folder up: remove the lock file (while still holding it) and unlock. Idempotent."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def previous_run_files(run_dir: str | Path) -> list[str]:
    """The files in `run_dir` that show it holds a run that trained (finished or interrupted); empty for a new or
    empty folder and for one holding only the config.json of a run stopped before its first step."""
    run_dir = Path(run_dir)
    found = [n for n in RUN_FILES if os.path.lexists(run_dir / n)
             and not (n == "figures" and _empty_folder(run_dir / n))]
    return ["config.json", *found] if found and (run_dir / "config.json").exists() else found


def _empty_folder(path: Path) -> bool:
    """An empty real folder (a study refused before it drew anything leaves an empty figures/)."""
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def discard_unstarted_run(run_dir: str | Path) -> None:
    """Remove an automatically named run folder (runs/NAME/TIME) whose run was refused before its first step, so
    bad input leaves no empty runs behind: only a folder holding nothing but that run's config.json goes; one
    with anything else in it (a checkpoint, metrics, a lock) is kept."""
    run_dir = Path(run_dir)
    try:
        if [p.name for p in run_dir.iterdir()] == ["config.json"]:
            (run_dir / "config.json").unlink()
            run_dir.rmdir()
    except OSError:
        pass


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


def set_aside_previous_run(run_dir: str | Path) -> Path:
    """Move the files of the run in `run_dir` into `run_dir/.dlkit-replaced/` (what --overwrite does first) and
    return that folder. Refuses, moving nothing, if the folder holds anything a run does not write (a .git folder,
    sources): --overwrite replaces a run, not a project. A folder set aside by a run that was killed while it was
    started is deleted first (that run's --overwrite was asked for)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"--overwrite {run_dir}: the folder holds no config.json, so it is not a dlkit run folder; "
                          "nothing was deleted. --overwrite replaces a run: pass another --out")
    entries = [p for p in run_dir.iterdir() if p.name != LOCK_NAME and not _nested_run(p)]
    foreign = [p.name for p in entries
               if not ((p.name in RUN_FOLDERS and p.is_dir() and not p.is_symlink()) or p.is_symlink()
                       or (p.is_file() and p.suffix in RUN_SUFFIXES
                           and (p.suffix != ".txt" or p.name.startswith("samples"))))]  # a run's .txt: samples
    if foreign:
        raise ConfigError(f"--overwrite {run_dir}: the folder also holds {', '.join(sorted(foreign)[:5])}, which a "
                          "dlkit run does not write; nothing was deleted. Pass a folder that holds only a run, or "
                          "another --out")
    aside = run_dir / SET_ASIDE
    if aside.exists():
        _remove(aside)
    aside.mkdir()
    for p in entries:
        if p.name != SET_ASIDE:
            p.rename(aside / p.name)
    return aside


def _nested_run(p: Path) -> bool:
    """Another run's folder inside this one (runs/RECIPE/TIME of a default run under `--out runs/RECIPE`): neither
    this run's file nor a stranger's, so --overwrite leaves it where it is."""
    return p.is_dir() and not p.is_symlink() and p.name not in RUN_FOLDERS and (p / "config.json").is_file()


def drop_set_aside(aside: Path) -> None:
    """The replacing run has trained its first step: delete the previous run's files."""
    _remove(aside)


def restore_set_aside(aside: Path) -> None:
    """The replacing run failed before its first step: delete what it wrote and put the previous run back."""
    run_dir = aside.parent
    for p in run_dir.iterdir():
        if p.name not in (LOCK_NAME, SET_ASIDE) and not _nested_run(p):
            _remove(p)
    for p in aside.iterdir():
        p.rename(run_dir / p.name)
    aside.rmdir()


def claim_run_dir(run_dir: str | Path | None, *, recipe: str, smoke: bool, resume: bool = False,
                  overwrite: bool = False, root: str | Path = "runs", resumable: bool = True
                  ) -> tuple[Path, RunLock, Path | None]:
    """Create (or take) the run folder and lock it for this process; return it with its lock, which the caller
    releases, and the folder holding the previous run's files when `overwrite` set them aside (else None; the
    caller drops or restores it). `run_dir` None: a new unique folder under root/RECIPE. A folder holding a
    previous run is refused unless `resume` (continue it) or `overwrite`; the refusal offers --resume only where
    it can help (`resumable`: not a study; an interrupted run, or a finished one trained further)."""
    if run_dir is None:
        run_dir = new_run_dir(root, recipe, smoke)
    else:
        run_dir = Path(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the run folder {run_dir} ({e.strerror or e}); pass another --out") \
                from None
    lock = RunLock(run_dir).acquire()
    aside = None
    try:
        found = previous_run_files(run_dir)
        if found and not resume:
            if not overwrite:
                finished = (run_dir / "summary.json").exists()
                state = "a finished run" if finished else "an interrupted run"
                more = ("" if not resumable else f"--resume {run_dir} with a longer length to train it further, "
                        if finished else f"--resume {run_dir} to continue it, ")
                raise ConfigError(f"--out {run_dir} holds {state} ({', '.join(found)}); pass {more}--overwrite to "
                                  f"replace it, or another --out")
            aside = set_aside_previous_run(run_dir)
    except BaseException:
        lock.release()
        raise
    return run_dir, lock, aside
