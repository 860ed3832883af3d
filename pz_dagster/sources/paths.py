"""Open a file of a source folder without ever leaving the folder.

Whoever can write to a watched folder must not be able to make the Dagster process read any
other file it can read (its environment, its API keys, /etc/shadow). So a path of the folder is
opened one component at a time from a descriptor of the folder with ``O_NOFOLLOW``: a component
swapped for a link after the scan fails to open instead of being followed. A link as the last
component is read only when its real path is a regular, non-hidden file inside the folder, and
then that real path is opened the same way, so what is read is what was checked. Links to
folders are never followed. FIFOs, sockets and devices are never opened (``lstat`` first, and
``O_NONBLOCK`` for the race where one is swapped in after it). A file with more than one hard
link is refused: a hard link is a second name of a file, perhaps outside the folder, and no path
check can tell. See docs/threat-model-sources.md. POSIX only (``dir_fd`` and ``O_NOFOLLOW``).
"""

from __future__ import annotations

import errno
import os
import stat
import unicodedata
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
# What a record id with escaped characters looks like (see ``shown``).
ESCAPE_HINT = (
    "a file name with bytes that are not UTF-8 or with control characters is listed with them "
    "escaped as \\xNN and is not read: rename the file"
)


class Refused(Exception):
    """A path of the folder that is not read; the message says why (it goes into ``error``)."""


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a record id, or None. Undecodable bytes arrive from ``os.fsdecode``
    as lone surrogates, which the UTF-8 store cannot hold; control characters (a newline) would
    forge lines in logs, prompts and the UI."""
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        return "file name has bytes that are not UTF-8 or control characters"
    return None


def shown(name: str) -> str:
    """``name`` as valid, printable UTF-8: undecodable bytes and control characters as \\xNN."""
    out = []
    for c in name:
        o = ord(c)
        if 0xDC80 <= o <= 0xDCFF:  # surrogateescape of the byte o - 0xDC00
            out.append(f"\\x{o - 0xDC00:02x}")
        elif unicodedata.category(c) in ("Cc", "Cs"):
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
        else:
            out.append(c)
    return "".join(out)


def split_relpath(relpath: str) -> list[str]:
    """The components of a path relative to the folder; refused when it could leave the folder
    (absolute, ``..``), names a hidden file, or has a name no record id can carry. Paths come
    from scans, but also from batch manifests on disk, which are checked here again."""
    parts = relpath.split("/")
    if relpath.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise Refused(f"path {shown(relpath)!r} is outside the source folder: not read")
    if any(p.startswith(".") for p in parts):
        raise Refused("hidden files are not read")
    problem = name_problem(relpath)
    if problem:
        raise Refused(f"{problem}: rename it")
    return parts


def inside(root_real: str, target: str) -> bool:
    return os.path.commonpath([root_real, target]) == root_real


def open_dir(root_fd: int, parts: list[str]) -> int:
    """A descriptor of the folder ``parts`` below ``root_fd``, no component followed as a link."""
    fd = os.dup(root_fd)
    for i, name in enumerate(parts):
        try:
            nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            is_link = exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(name, fd)
            os.close(fd)
            if is_link:
                where = "/".join(parts[: i + 1])
                raise Refused(f"{shown(where)} is a link to a folder: not followed") from None
            raise
        os.close(fd)
        fd = nxt
    return fd


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "of an unknown kind"


def _open_leaf(dir_fd: int, name: str, via_link: bool) -> int | None:
    """A descriptor of the regular file ``name`` in ``dir_fd``; None when it is a link (the
    caller resolves it). Only a regular file is ever opened."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        if via_link:  # the checked real path has no links: one now is a swap
            raise Refused("file changed while it was being opened: not read")
        return None
    if stat.S_ISDIR(st.st_mode):
        if via_link:
            raise Refused("link to a folder: not followed")
        raise Refused(
            "is a folder whose files could not be listed when the source folder was scanned "
            "(check its permissions)"
        )
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"not a regular file ({_kind(st.st_mode)}): never opened")
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused("file changed while it was being opened: not read") from None
        raise
    fst = os.fstat(fd)
    if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(fst.st_mode):
        os.close(fd)
        raise Refused("file changed while it was being opened: not read")
    if fst.st_nlink > 1:
        os.close(fd)
        raise Refused(
            f"file has {fst.st_nlink} hard links: a hard link may be a second name of a file "
            "outside the source folder, so such files are not read (copy the file instead)"
        )
    return fd


def _resolve_link(root_real: str, parts: list[str]) -> list[str]:
    """The components, below the folder, of the real path of the link ``parts``; refused when
    it is dangling, a loop, outside the folder or hidden. The link text (chosen by whoever made
    the link) is quoted; the real path is not, as it could tell where /proc links lead."""
    path = os.path.join(root_real, *parts)
    try:
        text = shown(os.readlink(path))
    except OSError:  # no longer a link: it was swapped since the lstat
        raise Refused("file changed while it was being opened: not read") from None
    try:
        target = os.path.realpath(path, strict=True)
    except FileNotFoundError:
        raise Refused(f"dangling link (to {text!r}): its target does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(f"link loop (to {text!r}): links lead back to themselves") from None
        raise Refused(f"cannot follow link: {exc.strerror or exc}") from None
    if os.path.isdir(target):
        raise Refused(f"link to a folder (to {text!r}): links to folders are not followed")
    if not inside(root_real, target):
        raise Refused(f"link points outside the source folder (to {text!r}): not read")
    rel = os.path.relpath(target, root_real)
    out = rel.split(os.sep)
    if any(p.startswith(".") for p in out):
        raise Refused(f"link to a hidden file (to {text!r}): hidden files are not read")
    return out


def _open_parts(root_fd: int, parts: list[str], via_link: bool) -> int | None:
    parent = open_dir(root_fd, parts[:-1])
    try:
        return _open_leaf(parent, parts[-1], via_link)
    finally:
        os.close(parent)


def open_in_folder(root: str | Path, relpath: str) -> tuple[int, os.stat_result]:
    """An open descriptor (the caller closes it) and the ``fstat`` of the regular file
    ``relpath`` of the folder ``root``. Raises ``Refused`` (with the reason) or ``OSError``."""
    parts = split_relpath(relpath)
    # The folder itself is configuration, trusted: a link there is followed.
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _open_parts(root_fd, parts, via_link=False)
        if fd is None:  # a link: open its checked real path, again without following links
            real = _resolve_link(os.path.realpath(root), parts)
            fd = _open_parts(root_fd, real, via_link=True)
            assert fd is not None  # via_link refuses a link
    finally:
        os.close(root_fd)
    return fd, os.fstat(fd)


def link_is_reportable(root: Path, relpath: str) -> bool:
    """Whether the scan lists a link whose name has no supported suffix: one to a folder (never
    followed, so say so) or one that cannot be followed (it may have been a folder)."""
    try:
        return stat.S_ISDIR(os.stat(root / relpath).st_mode)
    except OSError:
        return True
