"""Where an operator was declared: the file and line of the user's call to a ``Dataset`` method
(or of its entry in a YAML file), so that the Dagster UI can link an asset to its declaration."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path

# Frames inside pz_dagster are the DSL's own; the first frame outside it is the user's call.
_PACKAGE = str(Path(__file__).resolve().parents[1])


@dataclass(frozen=True)
class Declaration:
    """A place in a source file (``line`` counts from 1).

    >>> Declaration("query.py", 12).line
    12
    """

    file: str
    line: int


@functools.lru_cache(maxsize=256)
def _inside_package(filename: str) -> bool:
    try:
        return str(Path(filename).resolve()).startswith(_PACKAGE + "/")
    except (OSError, ValueError):
        return False


def caller_declaration() -> Declaration | None:
    """The file and line of the innermost call from outside pz_dagster on the current stack
    (the user's ``.sem_filter(...)`` line); None when there is none (no frames, or code given
    to ``exec`` without a file).

    >>> caller_declaration().file.startswith("<doctest")  # the doctest's own line
    True
    """
    frame = inspect.currentframe()
    try:
        while frame is not None and _inside_package(frame.f_code.co_filename):
            frame = frame.f_back
        if frame is None:
            return None
        return Declaration(frame.f_code.co_filename, frame.f_lineno)
    finally:
        del frame  # a frame held in a local keeps the whole stack alive
