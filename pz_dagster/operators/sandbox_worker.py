"""The worker side of the sandbox (``pz_dagster.operators.sandbox``): the process that loads
and calls candidate functions under the process limits, the audit hook and the restricted
builtins. It runs as ``python -I -S -B`` with stub parent packages, so it imports only this
module and the standard library it needs (never ``subprocess``), and speaks JSON lines with
the parent over its stdin and stdout.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import json
import os
import pkgutil
import posix
import resource
import signal
import sys
import time
from typing import Any

# Imported by C code (datetime.strptime) through the caller's, i.e. the candidate's, __import__.
_IMPLICIT = frozenset({"_strptime"})
_CODECS = ("encodings.", "_codecs_", "_multibytecodec", "stringprep")  # str.encode("idna")
_HARMLESS = frozenset({"builtins.id", "marshal.loads", "object.__setattr__", "object.__delattr__"})
_HIDDEN = frozenset(
    {"open", "eval", "exec", "compile", "breakpoint", "input", "globals", "vars", "locals"}
    | {"help", "exit", "quit", "copyright", "credits", "license", "__loader__", "__spec__"}
)
_NOBODY = 65534


# ----------------------------------------------------------------------------- worker side
# A candidate can reach every loaded module through sys.modules (email.utils.os.sys.modules),
# this one and `builtins` included, and rebind their globals. So the audit hook decides only from
# its own closure (immutable data and C functions bound at install time), shares no cell with
# anything a candidate holds (its __import__ has its own), and never looks up a global name.
# The rest of the worker (timer, reporting) is best effort, backed by the parent and the kernel.


class _Forbidden(BaseException):  # BaseException: a candidate's `except Exception` won't eat it
    pass


class _Timeout(BaseException):
    pass


class _NotJson(Exception):
    pass


def _audit_hook(allowed: frozenset[str], gate: list[Any], violations: list[str]) -> Any:
    stdlib = os.path.realpath(os.path.dirname(os.__file__)) + os.sep
    norm = getattr(posix, "_path_normpath", os.path.normpath)  # C here (3.11.7): unpatchable
    kind, text, starts, split, note = type, str, str.startswith, str.split, violations.append
    harmless, codecs, implicit, forbidden = _HARMLESS, _CODECS, _IMPLICIT, _Forbidden
    writes = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

    def deny(reason: str) -> None:
        note(reason)
        raise forbidden(reason)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        # Only identity and exact-str tests on args: an attacker's object may define __eq__.
        if event in harmless or (event == "compile" and gate[0]):
            return  # gate[0]: the worker compiling a candidate's source
        if event == "exec" and (args[0] is gate[1] or starts(norm(args[0].co_filename), stdlib)):
            return  # the worker exec'ing that code, or the lazy import of an allowed module
        if event == "import":
            name, prefix = args[0], ""
            if kind(name) is text and (name in implicit or starts(name, codecs)):
                return
            for part in split(name, ".") if kind(name) is text else ():
                prefix = f"{prefix}.{part}" if prefix else part
                if prefix in allowed:
                    return
            deny(f"forbidden import {name!r}")
        if event == "open":  # mode and flags arrive as exact str/int; the path may be anything
            if "w" in (mode := args[1] or "") or "a" in mode or "x" in mode or "+" in mode:
                deny("forbidden: open for writing")
            if args[2] & writes:
                deny("forbidden: open for writing")
        if event in ("open", "os.listdir"):  # reading the stdlib: lazy imports
            if kind(args[0]) is not text or not starts(norm(args[0]), stdlib):
                deny(f"forbidden: {event} outside the standard library")  # PathLike: TOCTOU
            return
        deny(f"forbidden: {event}")

    return hook


def _guarded_import(allowed: frozenset[str], violations: list[str]) -> Any:
    def guarded_import(name: str, *args: Any) -> Any:  # args: globals, locals, fromlist, level
        parts = str(name).split(".")
        prefixes = {".".join(parts[:n]) for n in range(1, len(parts) + 1)}
        if args[3:] in ((), (0,)) and (prefixes & allowed or name in _IMPLICIT):
            return __import__(name, *args)  # level 0 only: a candidate is no package
        violations.append(f"forbidden import {name!r}")
        raise _Forbidden(violations[-1])

    return guarded_import


def _exception_text(exc: BaseException) -> str:
    if isinstance(exc, _Forbidden | _NotJson):
        return str(exc)
    try:
        text = str(exc)
    except Exception:  # a candidate's exception whose __str__ fails
        text = ""
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


class _Worker:
    """The worker process's side: runs candidates under the timer, replies in JSON lines."""

    def __init__(self, limits: dict[str, Any], out: Any):
        self.limits, self.out, self.dumps = limits, out, json.dumps  # json may be patched later
        self.allowed = frozenset(limits["allowed_imports"])
        self.timeout = limits["call_timeout_s"]
        self.functions: dict[str, Any] = {}
        self.gate: list[Any] = [False, None]  # [compiling, the code object exec may run]
        self.violations: list[str] = []  # what was denied, even if the candidate swallowed it
        self.timer = [False, False]  # [armed, fired]
        self.calls = 0
        self.builtins = {k: v for k, v in vars(builtins).items() if k not in _HIDDEN}

    def guarded(self, function: Any, *args: Any) -> tuple[Any, str | None]:
        self.violations.clear()
        self.timer[:] = [True, False]
        signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            try:
                value, error = function(*args), None
            finally:
                self.timer[0] = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        except BaseException as exc:  # candidates may raise anything, SystemExit included
            value, error = None, _exception_text(exc)
        if self.timer[1]:
            error = f"timeout after {self.timeout}s"
        return value, (self.violations[0] if self.violations else error)

    def run(self, function: Any, arg: Any) -> str:
        value = function(arg)
        try:  # inside the timer: a dict subclass may run candidate code while being encoded
            return self.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise _NotJson(f"returned {type(value).__name__}, not JSON") from None

    def load(self, name: str, source: str, entry: str) -> str | None:
        self.functions.pop(name, None)
        self.gate[0] = True
        try:
            code = compile(source, f"<candidate {name}>", "exec")
        except Exception as exc:  # SyntaxError, ValueError (NUL bytes), RecursionError...
            return f"does not compile: {_exception_text(exc)}"
        finally:
            self.gate[0] = False
        safe = {**self.builtins, "__import__": _guarded_import(self.allowed, self.violations)}
        namespace = {"__builtins__": safe, "__name__": f"candidate_{name}"}  # fresh per candidate
        self.gate[1] = code
        _, error = self.guarded(exec, code, namespace)  # the timer covers top-level code too
        self.gate[1] = None
        if error:
            return error
        if not callable(namespace.get(entry)):
            return f"defines no function {entry!r}"
        self.functions[name] = namespace[entry]
        return None

    def call(self, token: str, name: str, inputs: list[Any]) -> None:
        function, limit = self.functions.get(name), self.limits["max_result_chars"]
        for index, arg in enumerate(inputs):
            if self.calls and time.process_time() > self.limits["cpu_seconds"] / 2:
                self.reply(f'{{"t": "{token}", "i": {index}, "recycle": true}}')
                return
            self.calls += 1
            encoded, error = self.guarded(self.run, function, arg)
            if not error and len(encoded) > limit:
                error = f"returned {len(encoded)} characters of JSON, over {limit}"
            # One flushed reply per input: a hang is then blamed on the input that hangs.
            if error:
                self.reply(self.dumps({"t": token, "i": index, "e": error}))
            else:
                self.reply(f'{{"t": "{token}", "i": {index}, "v": {encoded}}}')

    def reply(self, line: str) -> None:
        self.out.write(line.encode() + b"\n")
        self.out.flush()


def _alarm_handler(timer: list[bool]) -> Any:
    def on_alarm(signum: int, frame: Any) -> None:  # reachable by candidates: holds only `timer`
        if timer[0]:  # only inside a candidate, never in the worker's own code
            timer[:] = [False, True]
            raise _Timeout

    return on_alarm


def _preload(name: str) -> None:
    """Import a module and all its submodules (about 0.1 s for the defaults): once the worker
    has left root it may not be able to read the stdlib, and lazy imports would fail."""
    with contextlib.suppress(Exception):
        path = getattr(importlib.import_module(name), "__path__", [])
        for info in pkgutil.walk_packages(path, f"{name}.", onerror=lambda _: None):
            with contextlib.suppress(Exception):
                importlib.import_module(info.name)


def _drop_root() -> str | None:
    """As root, RLIMIT_NPROC is not enforced and ``_posixsubprocess.fork_exec`` (reachable through
    sys.modules) raises no audit event: only another uid lets the kernel refuse new processes."""
    if os.getuid() and os.geteuid():
        return None
    try:
        os.setgroups([])
        os.setgid(_NOBODY)
        os.setuid(_NOBODY)
    except OSError as exc:
        return f"cannot leave root for uid {_NOBODY} ({exc}); run as non-root or allow setuid"
    return None


def _set_limit(kind: int, soft: int, hard: int) -> None:
    current = resource.getrlimit(kind)[1]
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(kind, (soft, hard))


def serve_worker(limits_json: str) -> None:
    """The worker process's main loop (started by :class:`Sandbox`, not for direct use)."""
    limits, loads = json.loads(limits_json), json.loads
    inp, out = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # print() and stray writes must not corrupt the protocol
        os.dup2(devnull, fd)
    sys.stdin = sys.stdout = sys.stderr = open(os.devnull, "r+")
    for name in ["encodings", *_IMPLICIT, *sorted(limits["allowed_imports"])]:
        _preload(name)
    refusal = _drop_root()  # before RLIMIT_NPROC: old kernels check it in setuid()
    _set_limit(resource.RLIMIT_CPU, limits["cpu_seconds"], limits["cpu_seconds"] + 1)
    _set_limit(resource.RLIMIT_AS, limits["memory_mb"] << 20, limits["memory_mb"] << 20)
    for kind in (resource.RLIMIT_FSIZE, resource.RLIMIT_NPROC, resource.RLIMIT_CORE):
        _set_limit(kind, 0, 0)
    worker = _Worker(limits, out)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past RLIMIT_FSIZE fails, not kills
    signal.signal(signal.SIGALRM, _alarm_handler(worker.timer))
    sys.addaudithook(_audit_hook(worker.allowed, worker.gate, worker.violations))  # last
    worker.reply(worker.dumps({"t": "ready", "e": refusal}))
    if refusal:
        return
    try:
        for line in inp:
            request = loads(line)
            if request["op"] == "load":
                error = worker.load(request["name"], request["source"], request["entry"])
                worker.reply(worker.dumps({"t": request["t"], "e": error}))
            else:
                worker.call(request["t"], request["name"], request["inputs"])
    except BaseException:  # e.g. MemoryError once a candidate hoards memory: start afresh
        os._exit(70)
