"""Group the files of a folder into document batches with content-derived keys.

A batch key is a hash of the files' paths and contents, so the same files always give the same
key and a file already placed in a batch is never placed in a second one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

from pz_dagster.errors import SourceError
from pz_dagster.sources.files import SUPPORTED_SUFFIXES
from pz_dagster.sources.paths import (
    Refused,
    link_is_reportable,
    name_problem,
    open_dir,
    open_in_folder,
    shown,
)

# The hash of a file listed but not readable now (the reader reports why as an error record).
UNREADABLE = "unreadable"


class FileRef(BaseModel, frozen=True):
    path: str  # relative to the source folder, POSIX separators
    sha256: str
    size: int


class Batch(BaseModel, frozen=True):
    key: str
    files: tuple[FileRef, ...]
    registered_at: float = 0.0  # set when its manifest is saved; orders versions of a file


def _sha256_fd(fd: int) -> str:
    h = hashlib.sha256()
    while chunk := os.read(fd, 1 << 20):
        h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """Hash of the regular file ``path``: a link or a FIFO there raises OSError (never followed,
    never opened for reading)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return _sha256_fd(fd)
    finally:
        os.close(fd)


def _hash_in_folder(root: Path, relpath: str) -> tuple[str, int]:
    """Hash and size of a file of the folder, opened as the reader opens it (never outside)."""
    fd, st = open_in_folder(root, relpath)
    try:
        return _sha256_fd(fd), st.st_size
    finally:
        os.close(fd)


def _entries(root_fd: int, rel_dir: str) -> list[tuple[str, str]]:
    """(name, kind) of a folder's entries; kind is link, dir, file or other (by ``lstat``: the
    scan follows no link and opens no FIFO)."""
    fd = open_dir(root_fd, rel_dir.split("/") if rel_dir else [])
    try:
        with os.scandir(fd) as it:
            out = []
            for e in it:
                if e.is_symlink():
                    kind = "link"
                elif e.is_dir(follow_symlinks=False):
                    kind = "dir"
                else:
                    kind = "file" if e.is_file(follow_symlinks=False) else "other"
                out.append((e.name, kind))
            return out
    finally:
        os.close(fd)


def _ref(root: Path, rel: str) -> FileRef:
    if name_problem(rel):  # its record id is the escaped name; the reader says what to do
        return FileRef(path=shown(rel), sha256=UNREADABLE, size=-1)
    try:
        sha, size = _hash_in_folder(root, rel)
        return FileRef(path=rel, sha256=sha, size=size)
    except (OSError, Refused):
        # Refused or unreadable now: still listed, so the source asset reports it as an error
        # record (the reader checks again and says why). Never a silent skip.
        return FileRef(path=rel, sha256=UNREADABLE, size=-1)


def scan_folder(root: str | Path) -> list[FileRef]:
    """Supported files under ``root``, sorted by relative path. Hidden files are skipped. Links
    to folders are not followed; they, links that cannot be read (dangling, loops, outside the
    folder) and folders that cannot be listed are listed as unreadable, so each becomes an error
    record. Walks with descriptors and ``O_NOFOLLOW`` (no recursion: deep trees are fine)."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"source folder {str(root)!r} does not exist or is not a directory")
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise SourceError(f"cannot open source folder {str(root)!r}: {exc.strerror}") from exc
    refs: list[FileRef] = []
    pending = [""]
    try:
        while pending:
            rel_dir = pending.pop()
            try:
                entries = _entries(root_fd, rel_dir)
            except (OSError, Refused) as exc:
                if not rel_dir:
                    raise SourceError(f"cannot list source folder {str(root)!r}: {exc}") from exc
                refs.append(FileRef(path=rel_dir, sha256=UNREADABLE, size=-1))
                continue
            for name, kind in entries:
                if name.startswith("."):
                    continue
                rel = f"{rel_dir}/{name}" if rel_dir else name
                supported = Path(name).suffix.lower() in SUPPORTED_SUFFIXES
                if kind == "dir" and name_problem(name):
                    refs.append(_ref(root, rel))  # its files would all have unusable ids
                elif kind == "dir":
                    pending.append(rel)
                elif supported or (kind == "link" and link_is_reportable(root, rel)):
                    refs.append(_ref(root, rel))
    finally:
        os.close(root_fd)
    return sorted(refs, key=lambda r: r.path.split("/"))


def batch_key(files: Iterable[FileRef]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.sha256}\n".encode())
    return "b-" + h.hexdigest()[:16]


def make_batches(
    files: Iterable[FileRef], batch_size: int, seen: Iterable[FileRef] = ()
) -> list[Batch]:
    """Batches of at most ``batch_size`` of the files not in ``seen``, in path order."""
    if batch_size < 1:
        raise SourceError(f"batch_size must be positive, got {batch_size}")
    seen_set = set(seen)
    fresh = sorted((f for f in set(files) if f not in seen_set), key=lambda f: f.path)
    groups = [tuple(fresh[i : i + batch_size]) for i in range(0, len(fresh), batch_size)]
    return [Batch(key=batch_key(g), files=g) for g in groups]


def changed_files(root: str | Path, batch: Batch) -> set[str]:
    """Paths of the batch whose size or content differ from its manifest now."""
    changed = set()
    for ref in batch.files:
        try:
            fd, st = open_in_folder(root, ref.path)
        except (OSError, Refused):
            continue  # unreadable or refused: the reader reports it as an error record
        try:
            if st.st_size != ref.size or _sha256_fd(fd) != ref.sha256:
                changed.add(ref.path)
        finally:
            os.close(fd)
    return changed
