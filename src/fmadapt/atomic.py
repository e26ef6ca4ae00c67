"""Crash-safe writes. A file is either its old or its new content; a set of files committed together (a model
directory) is either the old or the new set; what a killed writer leaves behind is finished or removed by
the next reader or writer of that directory (`recover`).

Why a journal and not one rename per file: a model directory is several files (weights, labels, config).
Replacing them one by one, a kill between two renames leaves new weights beside old labels: a model that
loads and predicts the wrong classes, or does not load at all."""

from __future__ import annotations

import errno
import json
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from .errors import ArtifactError

#: temporary files are ".<name>.fmadapt-tmp-<pid>-<random>", beside their target (same filesystem: renames
#: are atomic)
TMP_MARK = ".fmadapt-tmp-"
#: the commit record of a multi-file save: present = the staged files are complete and must replace the old
JOURNAL = ".fmadapt-commit.json"

Content = bytes | str | Callable[[BinaryIO], None]


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory; the renames are still atomic
    finally:
        os.close(fd)


def _write_tmp(path: Path, content: Content) -> Path:
    """The content in a new temporary file beside `path`, flushed to disk; removed again on any failure."""
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _write_error(path, e) from e
        raise
    return tmp


def _write_error(path: Path, e: OSError) -> ArtifactError:
    hint = {errno.ENOSPC: "the disk is full: free space or write elsewhere",
            errno.EDQUOT: "the disk quota is exceeded: free space or write elsewhere",
            errno.EFBIG: "the file is larger than this system allows",
            errno.EROFS: "the filesystem is read-only",
            errno.EACCES: "permission denied"}.get(e.errno or 0, "")
    return ArtifactError(f"{path}: could not write ({e.strerror or e}){'; ' + hint if hint else ''}. "
                         f"The previous {path.name}, if any, is unchanged.")


def write_file(path: str | os.PathLike[str], content: Content) -> None:
    """Replace one file atomically (temporary file, fsync, rename)."""
    path = Path(path)
    tmp = _write_tmp(path, content)
    try:
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _write_error(path, e) from e
    _fsync_dir(path.parent)


def commit(directory: str | os.PathLike[str], files: Mapping[str, Content], remove: Sequence[str] = ()) -> None:
    """Replace several files of `directory` (plain names) together: after a crash at any moment the
    directory holds all of the old files or, once the journal is written, all of the new ones."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    recover(d)
    staged: dict[str, str] = {}
    try:
        for name in files:
            if "/" in name or name.startswith("."):
                raise ValueError(f"commit() takes plain file names, got {name!r}")
            staged[name] = _write_tmp(d / name, files[name]).name
        # the commit point: one atomic file naming the staged files
        write_file(d / JOURNAL, json.dumps({"files": staged, "remove": [r for r in remove if r not in files]}))
    except BaseException:
        for tmp in staged.values():
            (d / tmp).unlink(missing_ok=True)
        raise
    _apply(d)


def _apply(d: Path) -> None:
    """Finish a committed save: move the staged files into place, drop what it removes, drop the journal."""
    try:
        record = json.loads((d / JOURNAL).read_text(encoding="utf-8"))
        files, remove = dict(record["files"]), list(record["remove"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        (d / JOURNAL).unlink(missing_ok=True)  # not ours or unreadable: nothing was committed by it
        return
    for name, tmp in files.items():
        if not _plain(name) or not _plain(tmp) or TMP_MARK not in tmp:
            continue  # a journal names only plain files of this directory
        if (d / tmp).is_file():
            os.replace(d / tmp, d / name)
    for name in remove:
        if _plain(name) and not name.startswith(".") and (d / name).is_file():
            (d / name).unlink()
    _fsync_dir(d)
    (d / JOURNAL).unlink(missing_ok=True)
    _fsync_dir(d)


def _plain(name: object) -> bool:
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def temporary_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Leftovers of interrupted writes in `directory` (temporary files and an unfinished journal)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if TMP_MARK in p.name or p.name == JOURNAL)


def recover(directory: str | os.PathLike[str]) -> list[str]:
    """Finish a save that was committed but interrupted, and delete the temporary files of writers that
    died. Returns what was done (for messages). A read-only directory is left as it is."""
    d = Path(directory)
    done: list[str] = []
    if not d.is_dir() or not os.access(d, os.W_OK):
        return done
    if (d / JOURNAL).is_file():
        _apply(d)
        done.append("finished an interrupted save")
    for p in d.iterdir():
        if TMP_MARK not in p.name or not p.is_file():
            continue
        try:
            pid = int(p.name.split(TMP_MARK, 1)[1].split("-", 1)[0])
        except ValueError:
            pid = -1
        if pid != os.getpid() and (pid < 0 or not _pid_alive(pid)):
            p.unlink(missing_ok=True)
            done.append(f"removed {p.name}")
    return done
