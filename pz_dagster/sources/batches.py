"""Group the files of a folder into document batches with content-derived keys.

A batch key is a hash of the files' paths and contents, so the same files always give the same
key and a file already placed in a batch is never placed in a second one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

from pz_dagster.errors import SourceError
from pz_dagster.sources.files import SUPPORTED_SUFFIXES


class FileRef(BaseModel, frozen=True):
    path: str  # relative to the source folder, POSIX separators
    sha256: str
    size: int


class Batch(BaseModel, frozen=True):
    key: str
    files: tuple[FileRef, ...]
    registered_at: float = 0.0  # set when its manifest is saved; orders versions of a file


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def scan_folder(root: str | Path) -> list[FileRef]:
    """Supported files under ``root``, sorted by relative path. Hidden files are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"source folder {str(root)!r} does not exist or is not a directory")
    refs = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES:
            try:
                refs.append(
                    FileRef(path=rel.as_posix(), sha256=file_sha256(p), size=p.stat().st_size)
                )
            except OSError:
                # Unreadable now: still listed, so the source asset reports it as an error record.
                refs.append(FileRef(path=rel.as_posix(), sha256="unreadable", size=-1))
    return refs


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
        p = Path(root) / ref.path
        try:
            if p.stat().st_size != ref.size or file_sha256(p) != ref.sha256:
                changed.add(ref.path)
        except OSError:
            pass  # unreadable: the reader reports it as an error record
    return changed
