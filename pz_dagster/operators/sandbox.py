"""A sandbox for untrusted, model-generated extraction functions (Evaporate-style code synthesis).

Candidates run in a worker process (``python -I -S -B``, minimal environment, cwd ``/``; its code
is ``sandbox_worker``) that speaks JSON lines over pipes. Defences, the strongest first:

- the kernel: ``RLIMIT_CPU``, ``RLIMIT_AS``, ``RLIMIT_FSIZE=0``, ``RLIMIT_NPROC=0``,
  ``RLIMIT_CORE=0``; a worker started as root becomes ``nobody`` first (root ignores
  ``RLIMIT_NPROC``), so no process or thread can be created by any route;
- the parent: it kills a worker silent past ``call_timeout_s + kill_grace_s`` (C code that never
  looks at signals), restarts dead workers and reloads their functions;
- an audit hook that denies every event not known to be harmless: process creation, sockets,
  ``os.*`` file operations, opening for writing or outside the stdlib, ``ctypes``, frames,
  ``exec``/``compile`` by candidates, imports beyond the allow-list;
- restricted ``__builtins__`` (no ``open``/``eval``/``exec``/``compile``/``input``...) whose
  ``__import__`` enforces the allow-list (``"urllib.parse"`` allows that module, not ``urllib``);
- a ``SIGALRM`` timer around every call in the worker.

CPython-level restrictions are not a security boundary against a determined attacker: only the
kernel-enforced limits are. For hostile code, also run the worker in a container or under
seccomp/nsjail without network (``os.mkfifo``/``os.mknod`` have no audit event, for instance,
and can create empty entries in world-writable directories). Functions loaded in one Sandbox
share an interpreter: one candidate can disturb another's results, never the parent. A Sandbox
is not thread-safe; use one per thread.

>>> with Sandbox() as box:
...     box.load("subject", "import re\\ndef extract(t):\\n    return re.findall('S: (.*)', t)")
...     box.call("subject", ["S: hi", "no subject"])
[CallResult(value=['hi'], error=None), CallResult(value=[], error=None)]
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pz_dagster.errors import PzError

DEFAULT_IMPORTS = frozenset(
    {"re", "json", "datetime", "html", "email", "string", "math", "collections", "itertools"}
    | {"functools", "unicodedata", "textwrap", "operator", "decimal", "fractions", "statistics"}
    | {"difflib", "calendar", "typing", "urllib.parse"}
)
_WORKER_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # none of the parent's secrets
_CHUNK_ITEMS, _CHUNK_BYTES = 2000, 4 << 20  # inputs per request, so that RLIMIT_AS holds one
_STARTUP_S, _REAP_S = 15.0, 1.0
_HERE = os.path.dirname(os.path.abspath(__file__))
_PACKAGES = [("pz_dagster", os.path.dirname(_HERE)), ("pz_dagster.operators", _HERE)]
# Stub packages: the worker imports sandbox_worker without pz_dagster's heavy __init__ modules.
_BOOTSTRAP = (
    f"import sys, types\nfor name, path in {_PACKAGES!r}:\n"
    "    sys.modules[name] = types.ModuleType(name); sys.modules[name].__path__ = [path]\n"
    "from pz_dagster.operators.sandbox_worker import serve_worker\nserve_worker(sys.argv[1])\n"
)


class SandboxError(PzError):
    """The sandbox was misused (bad limits, unknown function, closed) or its worker cannot start."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of a sandbox worker. ``cpu_seconds`` covers the worker's whole life: it is recycled
    (transparently) once half is spent, and killed by the kernel at the limit.

    >>> SandboxLimits(call_timeout_s=0.5).memory_mb
    512
    """

    cpu_seconds: int = 30
    memory_mb: int = 512
    call_timeout_s: float = 1.0
    kill_grace_s: float = 2.0  # the parent's patience beyond call_timeout_s (busy machines)
    max_result_chars: int = 100_000  # of one returned value's JSON
    allowed_imports: frozenset[str] = DEFAULT_IMPORTS

    def __post_init__(self) -> None:
        if not (self.cpu_seconds >= 1 and self.memory_mb >= 64 and self.call_timeout_s > 0) or (
            self.kill_grace_s < 0 or self.max_result_chars < 1
        ):
            raise SandboxError(
                "SandboxLimits needs cpu_seconds >= 1, memory_mb >= 64 (the interpreter alone "
                f"takes ~30 MB), call_timeout_s > 0, kill_grace_s >= 0, max_result_chars >= 1; "
                f"got {self}"
            )


@dataclass(frozen=True)
class CallResult:
    """One call's outcome: a JSON-compatible ``value``, or an ``error`` (a failed candidate)."""

    value: Any = None
    error: str | None = None


class _WorkerLost(Exception):
    """The worker died, went silent or sent garbage; it has been killed and reaped."""


class Sandbox:
    """Loads candidate functions into a sandboxed worker and calls them on batches of inputs.

    >>> with Sandbox(SandboxLimits(call_timeout_s=0.5)) as box:
    ...     box.load("loop", "def extract(t):\\n    while True: pass")
    ...     box.call("loop", ["x"])
    [CallResult(value=None, error='timeout after 0.5s')]
    """

    def __init__(self, limits: SandboxLimits | None = None):
        self.limits = limits or SandboxLimits()
        self.restarts = 0  # workers started after the first (deaths, kills, CPU recycling)
        self._sources: dict[str, tuple[str, str]] = {}  # reloaded into every new worker
        self._load_errors: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._reaper: weakref.finalize | None = None  # kills the worker if we are collected
        self._buf = bytearray()
        self._started = self._closed = False

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The worker's process id, None when no worker runs."""
        return self._proc.pid if self._proc else None

    def load(self, name: str, source: str, entry: str = "extract") -> str | None:
        """Exec ``source`` in a fresh restricted namespace; the error message, or None if loaded."""
        self._ensure_worker()
        self._sources.pop(name, None)  # a load that kills the worker must not be replayed
        self._load_errors.pop(name, None)
        try:
            error = self._load_in_worker(name, source, entry)
        except _WorkerLost as lost:
            error = str(lost)
        if error:
            self._load_errors[name] = error
        else:
            self._sources[name] = (source, entry)
        return error

    def call(self, name: str, inputs: Sequence[Any]) -> list[CallResult]:
        """Call the loaded function on each JSON-compatible input, one result per input."""
        if name not in self._sources and name not in self._load_errors:
            raise SandboxError(f"no function {name!r} is loaded; call load({name!r}, source) first")
        try:
            encoded = [json.dumps(item) for item in inputs]
        except (TypeError, ValueError) as exc:
            raise SandboxError(f"inputs of {name!r} must be JSON-compatible: {exc}") from None
        results: list[CallResult] = []
        while len(results) < len(encoded):
            self._ensure_worker()  # a new worker may find that the function no longer loads
            if name not in self._sources:
                error = CallResult(error=f"not loaded: {self._load_errors[name]}")
                return results + [error] * (len(encoded) - len(results))
            try:
                self._call_chunk(name, _chunk(encoded, len(results)), results)
            except _WorkerLost as lost:
                results.append(CallResult(error=str(lost)))
                rest = CallResult(error="not run: an earlier input stopped the worker")
                return results + [rest] * (len(encoded) - len(results))
        return results

    def close(self) -> None:
        """Stop the worker. Idempotent; the Sandbox cannot be used afterwards."""
        self._closed = True
        self._retire()

    def _ensure_worker(self) -> None:
        if self._closed:
            raise SandboxError("this Sandbox is closed; open a new one")
        if self._proc is not None and self._proc.poll() is not None:
            self._retire()  # died between calls: don't blame the next candidate
        while self._proc is None:
            self._spawn()
            for name, (source, entry) in list(self._sources.items()):
                try:
                    error = self._load_in_worker(name, source, entry)
                except _WorkerLost as lost:
                    error = str(lost)
                if error:
                    del self._sources[name]
                    self._load_errors[name] = f"reload failed: {error}"
                if self._proc is None:
                    break

    def _spawn(self) -> None:
        limits = {**asdict(self.limits), "allowed_imports": sorted(self.limits.allowed_imports)}
        self._proc = proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", "-c", _BOOTSTRAP, json.dumps(limits)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_WORKER_ENV,
            cwd="/",
            start_new_session=True,  # a terminal's Ctrl-C is the parent's business
        )
        os.set_blocking(proc.stdin.fileno(), False)  # type: ignore[union-attr]
        self._reaper = weakref.finalize(self, _reap, proc)
        self._buf.clear()
        self.restarts += self._started
        self._started = True
        try:
            refusal = self._reply("ready", time.monotonic() + _STARTUP_S).get("e")
        except _WorkerLost as lost:
            refusal = str(lost)
        if refusal:
            self._retire()
            raise SandboxError(f"the sandbox worker did not start: {refusal}")

    def _load_in_worker(self, name: str, source: str, entry: str) -> str | None:
        token = secrets.token_hex(8)
        request = {"op": "load", "t": token, "name": name, "source": source, "entry": entry}
        self._send(json.dumps(request) + "\n")
        return self._reply(token, self._deadline()).get("e")

    def _call_chunk(self, name: str, chunk: list[str], results: list[CallResult]) -> None:
        token = secrets.token_hex(8)  # a candidate cannot forge replies it cannot name
        head = json.dumps({"op": "call", "t": token, "name": name})[:-1]
        self._send(f'{head}, "inputs": [{",".join(chunk)}]}}\n')
        for index in range(len(chunk)):
            reply = self._reply(token, self._deadline())
            if reply.get("i") != index:
                raise self._lose("worker sent a reply out of order (killed)")
            if reply.get("recycle"):  # the worker has spent half its CPU budget
                self._retire()
                return
            results.append(CallResult(reply.get("v"), reply.get("e")))

    def _deadline(self) -> float:
        return time.monotonic() + self.limits.call_timeout_s + self.limits.kill_grace_s

    def _send(self, line: str) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        fd, data, deadline = self._proc.stdin.fileno(), memoryview(line.encode()), self._deadline()
        while data:
            if not select.select([], [fd], [], max(0.0, deadline - time.monotonic()))[1]:
                raise self._lose(f"timeout after {self.limits.call_timeout_s}s (worker killed)")
            try:
                data = data[os.write(fd, data[: 1 << 16]) :]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise self._lose(None) from None

    def _reply(self, token: str, deadline: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        fd, limit = self._proc.stdout.fileno(), self.limits.max_result_chars + 1024
        while (end := self._buf.find(b"\n")) < 0:
            if len(self._buf) > limit:
                raise self._lose("worker sent an oversized reply (killed)")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise self._lose(f"timeout after {self.limits.call_timeout_s}s (worker killed)")
            if not (chunk := os.read(fd, 1 << 16)):
                raise self._lose(None)
            self._buf += chunk
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        with contextlib.suppress(ValueError):
            if isinstance(reply := json.loads(line), dict) and reply.get("t") == token:
                return reply
        raise self._lose("worker sent a corrupt reply (killed)")

    def _lose(self, reason: str | None) -> _WorkerLost:
        """Kill and reap the worker; ``reason`` None: it closed its pipe, probably dead."""
        if reason is None and self._proc is not None:
            try:
                reason = f"worker died ({_exit_text(self._proc.wait(_REAP_S))})"
            except subprocess.TimeoutExpired:
                reason = "worker closed its pipe (killed)"
        self._retire()
        return _WorkerLost(reason)

    def _retire(self) -> None:
        if self._reaper is not None:
            self._reaper()  # runs _reap once
        self._proc = None


def _chunk(encoded: list[str], start: int) -> list[str]:
    end, size = start, 0
    while end < len(encoded) and end - start < _CHUNK_ITEMS and size < _CHUNK_BYTES:
        size += len(encoded[end])
        end += 1
    return encoded[start:end]


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def _exit_text(code: int) -> str:
    if code >= 0:
        return f"exit status {code}"
    name = signal.Signals(-code).name
    hint = {"SIGXCPU": ": CPU limit", "SIGKILL": ": CPU hard limit or out of memory"}
    return f"signal {name}{hint.get(name, '')}"
