"""A sandbox for untrusted, model-generated extraction functions (Evaporate-style code synthesis).

Model-written code is treated as hostile. Each candidate function runs in a worker process of
its own (``python -I -S -B``, minimal environment, cwd ``/``; its code is ``worker``)
that speaks JSON lines over pipes. Defences, the strongest first (the threat model, and what
each test proves, are in ``docs/threat-model.md``):

- the kernel: a seccomp filter (libseccomp through pyseccomp) that allows only reading and
  writing the worker's own pipes, memory, clocks, timers and signals to itself, and refuses
  every other system call with EPERM: no process or thread, no pidfd, no signal to another
  process, no socket, no file opened, made, linked, probed or removed; ``RLIMIT_CPU``,
  ``RLIMIT_AS``, ``RLIMIT_FSIZE=0``, ``RLIMIT_NPROC=0``, ``RLIMIT_CORE=0``; a worker started
  as root takes a uid no other process has (so neither RLIMIT_NPROC nor signals are shared);
- one process per candidate: a candidate can disturb only its own results, never another's;
- the parent: it kills a worker silent past ``call_timeout_s + kill_grace_s`` (C code that never
  looks at signals), restarts dead workers and reloads their function;
- an audit hook that denies every event not known to be harmless (process creation, sockets,
  ``os.*`` file operations, opening for writing or outside the stdlib, ``ctypes``, frames,
  ``exec``/``compile`` by candidates, imports beyond the allow-list): a violation is reported
  straight to the parent and the worker exits, so a candidate cannot swallow it;
- the unaudited entry points to processes, signals and the filesystem (``pidfd_open``,
  ``mknod``, ``mkfifo``, the ``stat`` family, ``readlink``...) removed from ``os``, ``posix``,
  ``signal`` and ``resource`` before the hook is installed;
- restricted ``__builtins__`` (no ``open``/``eval``/``exec``/``compile``/``input``...) whose
  ``__import__`` enforces the allow-list (``"urllib.parse"`` allows that module, not ``urllib``);
- a ``SIGALRM`` timer around every call in the worker.

Without seccomp (not Linux, or libseccomp missing) the worker refuses to start unless
``SandboxLimits(require_seccomp=False)``: then only the Python-level layers and the limits
stand, which is no boundary against a determined attacker. A Sandbox is not thread-safe; use
one per thread.

>>> with Sandbox() as box:
...     box.load("subject", "import re\\ndef extract(t):\\n    return re.findall('S: (.*)', t)")
...     box.call("subject", ["S: hi", "no subject"])
[CallResult(value=['hi'], error=None), CallResult(value=[], error=None)]
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
import weakref
from collections import OrderedDict
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
MAX_LIVE_WORKERS = 4  # workers kept alive at once; an evicted function reloads on demand
_HERE = os.path.dirname(os.path.abspath(__file__))  # pz_dagster/operators/code_synthesis
_OPERATORS = os.path.dirname(_HERE)
_PACKAGES = [
    ("pz_dagster", os.path.dirname(_OPERATORS)),
    ("pz_dagster.operators", _OPERATORS),
    ("pz_dagster.operators.code_synthesis", _HERE),
]
# Stub packages: the worker imports its module without pz_dagster's heavy __init__ modules.
_BOOTSTRAP = (
    f"import sys, types\nfor name, path in {_PACKAGES!r}:\n"
    "    sys.modules[name] = types.ModuleType(name); sys.modules[name].__path__ = [path]\n"
    "from pz_dagster.operators.code_synthesis.worker import serve_worker\n"
    "serve_worker(sys.argv[1])\n"
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
    # Refuse to run without the kernel's system-call filter (Linux with libseccomp). Off only
    # where no seccomp exists (macOS): then only the audit hook and the limits stand.
    require_seccomp: bool = sys.platform.startswith("linux")

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


class _Stopped(Exception):
    """The candidate attempted a forbidden operation; its worker stopped itself."""


def _seccomp_path() -> str | None:
    """The folder the worker imports pyseccomp from (it runs with ``-I -S``: no site-packages)."""
    spec = importlib.util.find_spec("pyseccomp")
    return os.path.dirname(spec.origin) if spec is not None and spec.origin else None


class _Process:
    """One worker process, holding at most one candidate: started at once, its readiness
    awaited only when it is first used (so that a spare starts while the parent works)."""

    def __init__(self, limits: SandboxLimits, argv_limits: str):
        self.limits = limits
        self.proc = proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", "-c", _BOOTSTRAP, argv_limits],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_WORKER_ENV,
            cwd="/",
            start_new_session=True,  # a terminal's Ctrl-C is the parent's business
        )
        os.set_blocking(proc.stdin.fileno(), False)  # type: ignore[union-attr]
        self._reaper = weakref.finalize(self, _reap, proc)
        self._buf = bytearray()
        self._ready = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ready(self) -> None:
        """Wait for the worker's greeting; SandboxError (worker retired) if it refuses."""
        if self._ready:
            return
        try:
            refusal = self._reply("ready", time.monotonic() + _STARTUP_S).get("e")
        except (_WorkerLost, _Stopped) as lost:
            refusal = str(lost)
        if refusal:
            self.retire()
            raise SandboxError(f"the sandbox worker did not start: {refusal}")
        self._ready = True

    def load(self, name: str, source: str, entry: str) -> str | None:
        self.ready()
        token = secrets.token_hex(8)
        request = {"op": "load", "t": token, "name": name, "source": source, "entry": entry}
        self._send(json.dumps(request) + "\n")
        return self._reply(token, self._deadline()).get("e")

    def call_chunk(self, name: str, chunk: list[str], results: list[CallResult]) -> bool:
        """Append one result per input; False when the worker asked to be recycled first."""
        token = secrets.token_hex(8)  # a candidate cannot forge replies it cannot name
        head = json.dumps({"op": "call", "t": token, "name": name})[:-1]
        self._send(f'{head}, "inputs": [{",".join(chunk)}]}}\n')
        for index in range(len(chunk)):
            reply = self._reply(token, self._deadline())
            if reply.get("i") != index:
                raise self._lose("worker sent a reply out of order (killed)")
            if reply.get("recycle"):  # the worker has spent half its CPU budget
                self.retire()
                return False
            results.append(CallResult(reply.get("v"), reply.get("e")))
        return True

    def _deadline(self) -> float:
        return time.monotonic() + self.limits.call_timeout_s + self.limits.kill_grace_s

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        fd, data, deadline = self.proc.stdin.fileno(), memoryview(line.encode()), self._deadline()
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
        assert self.proc.stdout is not None
        fd, limit = self.proc.stdout.fileno(), self.limits.max_result_chars + 1024
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
            if isinstance(reply, dict) and reply.get("t") == "forbidden":
                self.retire()  # the worker exits by itself; make sure of it
                raise _Stopped(str(reply.get("e")))
        raise self._lose("worker sent a corrupt reply (killed)")

    def _lose(self, reason: str | None) -> _WorkerLost:
        """Kill and reap the worker; ``reason`` None: it closed its pipe, probably dead."""
        if reason is None:
            try:
                reason = f"worker died ({_exit_text(self.proc.wait(_REAP_S))})"
            except subprocess.TimeoutExpired:
                reason = "worker closed its pipe (killed)"
        self.retire()
        return _WorkerLost(reason)

    def retire(self) -> None:
        self._reaper()  # runs _reap once


class Sandbox:
    """Loads candidate functions into sandboxed workers, one process per candidate, and calls
    them on batches of inputs.

    >>> with Sandbox(SandboxLimits(call_timeout_s=0.5)) as box:
    ...     box.load("loop", "def extract(t):\\n    while True: pass")
    ...     box.call("loop", ["x"])
    [CallResult(value=None, error='timeout after 0.5s')]
    """

    def __init__(self, limits: SandboxLimits | None = None):
        self.limits = limits or SandboxLimits()
        self.restarts = 0  # workers started again for a loaded function (deaths, kills, CPU)
        self._argv = json.dumps(
            {
                **asdict(self.limits),
                "allowed_imports": sorted(self.limits.allowed_imports),
                "seccomp_path": _seccomp_path(),
            }
        )
        self._sources: dict[str, tuple[str, str]] = {}  # reloaded into a new worker on demand
        self._load_errors: dict[str, str] = {}
        self._workers: OrderedDict[str, _Process] = OrderedDict()  # the live ones, LRU first
        self._had_worker: set[str] = set()  # a new worker for these counts as a restart
        self._spare: _Process | None = None
        self._last: _Process | None = None
        self._closed = False

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The process id of the worker used last, None when it no longer runs."""
        return self._last.pid if self._last is not None and self._last.alive() else None

    def load(self, name: str, source: str, entry: str = "extract") -> str | None:
        """Exec ``source`` in a fresh worker process; the error message, or None if loaded."""
        self._check_open()
        self._forget(name)
        self._had_worker.discard(name)
        error = self._start(name, source, entry)
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
            worker = self._worker_for(name)  # a new worker may find that it no longer loads
            if worker is None:
                error = CallResult(error=f"not loaded: {self._load_errors[name]}")
                return results + [error] * (len(encoded) - len(results))
            try:
                if not worker.call_chunk(name, _chunk(encoded, len(results)), results):
                    self._workers.pop(name, None)  # recycled: the next round starts another
            except (_WorkerLost, _Stopped) as lost:
                self._workers.pop(name, None)
                results.append(CallResult(error=str(lost)))
                reason = "an earlier input stopped the worker"
                if isinstance(lost, _Stopped):  # hostile: never run again
                    self._forget(name)
                    self._load_errors[name] = f"stopped: {lost}"
                    reason = "the function attempted a forbidden operation"
                rest = CallResult(error=f"not run: {reason}")
                return results + [rest] * (len(encoded) - len(results))
        return results

    def close(self) -> None:
        """Stop every worker. Idempotent; the Sandbox cannot be used afterwards."""
        self._closed = True
        for worker in [*self._workers.values(), *([self._spare] if self._spare else [])]:
            worker.retire()
        self._workers.clear()
        self._spare = None

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError("this Sandbox is closed; open a new one")

    def _forget(self, name: str) -> None:
        if (worker := self._workers.pop(name, None)) is not None:
            worker.retire()
        self._sources.pop(name, None)
        self._load_errors.pop(name, None)

    def _worker_for(self, name: str) -> _Process | None:
        """The live worker holding ``name``, or a new one it is reloaded into (None: it no
        longer loads, and ``_load_errors`` says why)."""
        self._check_open()
        worker = self._workers.get(name)
        if worker is not None and worker.alive():
            self._workers.move_to_end(name)
            self._last = worker
            return worker
        if worker is not None:  # died between calls: don't blame the candidate's next input
            worker.retire()
            del self._workers[name]
        if name not in self._sources:
            return None
        self.restarts += name in self._had_worker
        source, entry = self._sources[name]
        if error := self._start(name, source, entry):
            del self._sources[name]
            self._load_errors[name] = f"reload failed: {error}"
            return None
        return self._workers[name]

    def _start(self, name: str, source: str, entry: str) -> str | None:
        """Load ``name`` into a fresh worker, which then holds it; the error, or None."""
        worker, self._spare = self._spare, None
        if worker is None or not worker.alive():
            worker = _Process(self.limits, self._argv)
        self._last = worker
        try:
            error = worker.load(name, source, entry)  # SandboxError if it cannot start at all
        except (_WorkerLost, _Stopped) as lost:
            error = str(lost)
        finally:
            self._spare = _Process(self.limits, self._argv)  # warms up while this one works
        if error:
            worker.retire()
            return error
        self._workers[name] = worker
        self._had_worker.add(name)
        while len(self._workers) > MAX_LIVE_WORKERS:  # the least recently used makes room
            evicted, oldest = self._workers.popitem(last=False)
            oldest.retire()
            self._had_worker.discard(evicted)
        return None


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
