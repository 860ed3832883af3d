"""Group the files of a folder into document batches with keys a person can read.

A batch key is its ordinal in its source's registration order and a slug of its first item's
name (``0001-allen-p-inbox-42``): ordered, and telling which files it holds. Its manifest keeps
the hash of its files' paths and contents (``Batch.digest``). Registration (under a lock, see
``orchestration.batches``) leaves out every file already in a batch, so a file is never placed in
two batches and registering again adds nothing. Keys of older stores (``b-`` and the hash) stay
valid: a manifest's key is whatever it was saved under.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, computed_field

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
SLUG_CHARS = 40  # of a batch key's name part
_ORDINAL = re.compile(r"^(\d+)(?:-|$)")


class FileRef(BaseModel, frozen=True):
    path: str  # relative to the source folder, POSIX separators
    sha256: str
    size: int


class Batch(BaseModel, frozen=True):
    key: str
    files: tuple[FileRef, ...]
    registered_at: float = 0.0  # set when its manifest is saved; orders versions of a file

    @computed_field  # type: ignore[prop-decorator]
    @property
    def digest(self) -> str:
        """Hash of the batch's paths and contents (saved in its manifest, derived on load)."""
        return content_digest(self.files)

    @property
    def ordinal(self) -> int:
        """Its place in its source's registration order; 0 for a key of an older store."""
        return key_ordinal(self.key)


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


def content_digest(files: Iterable[FileRef]) -> str:
    """Hash of the files' paths and contents, in path order (an older store's key, less b-)."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.sha256}\n".encode())
    return h.hexdigest()[:16]


def slug(name: str, limit: int = SLUG_CHARS) -> str:
    """``name`` as lower-case ASCII letters and digits between dashes, without the file's
    suffix, at most ``limit`` characters: a part of a partition key.

    >>> slug("allen-p/inbox/42.txt"), slug("Ünïcode Mail (2).EML"), slug("..")
    ('allen-p-inbox-42', 'unicode-mail-2', '')
    """
    stem = str(PurePosixPath(name).with_suffix("")) if PurePosixPath(name).suffix else name
    ascii_ = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")
    return words[:limit].rstrip("-")


def key_ordinal(key: str) -> int:
    """The ordinal a batch key starts with; 0 for a key of an older store (``b-`` hash).

    >>> key_ordinal("0012-allen-p-inbox-42"), key_ordinal("b-b8a1e6a277f17fff")
    (12, 0)
    """
    m = _ORDINAL.match(key)
    return int(m.group(1)) if m else 0


def batch_key(ordinal: int, first_item: str, label: str = "") -> str:
    """The key of the ``ordinal``-th batch of a source whose first item is ``first_item``
    (``label``: what the item is, e.g. a table's id column).

    >>> batch_key(1, "allen-p-inbox-42.txt"), batch_key(3, "17", label="msg_id")
    ('0001-allen-p-inbox-42', '0003-msg-id-17')
    """
    name = slug(f"{label}-{first_item}" if label else first_item)
    return f"{ordinal:04d}-{name}" if name else f"{ordinal:04d}"


def next_ordinal(batches: Sequence[Batch]) -> int:
    """The ordinal of a source's next batch: after every batch it has (an older store's
    batches count too, so the new keys follow them)."""
    return max([len(batches), *(b.ordinal for b in batches)]) + 1


def in_order(batches: Iterable[Batch]) -> list[Batch]:
    """Batches in registration order: an older store's (by first file) before the numbered.

    >>> [b.key for b in in_order([Batch(key="0002-b", files=()), Batch(key="0001-z", files=())])]
    ['0001-z', '0002-b']
    """
    return sorted(batches, key=lambda b: (b.ordinal, b.files[0].path if b.files else "", b.key))


def make_batches(
    files: Iterable[FileRef],
    batch_size: int,
    seen: Iterable[FileRef] = (),
    *,
    first: int = 1,
    label: str = "",
) -> list[Batch]:
    """Batches of at most ``batch_size`` of the files not in ``seen``, in path order, numbered
    from ``first`` (``label``: what an item is, in the keys; see ``batch_key``)."""
    if batch_size < 1:
        raise SourceError(f"batch_size must be positive, got {batch_size}")
    seen_set = set(seen)
    fresh = sorted((f for f in set(files) if f not in seen_set), key=lambda f: f.path)
    groups = [tuple(fresh[i : i + batch_size]) for i in range(0, len(fresh), batch_size)]
    return [
        Batch(key=batch_key(first + i, g[0].path, label), files=g) for i, g in enumerate(groups)
    ]


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
