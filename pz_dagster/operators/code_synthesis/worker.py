"""The worker side of the sandbox (``pz_dagster.operators.code_synthesis.sandbox``): the
process that loads and calls ONE candidate function under the process limits, a seccomp filter,
the audit hook and the restricted builtins. It runs as ``python -I -S -B`` with stub parent
packages, so it imports only this module and the standard library it needs, and speaks JSON
lines with the parent over its stdin and stdout. The layers, and why each is there, are in
``docs/threat-model.md``.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import importlib
import json
import json.encoder
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
_UIDS = (1 << 30, 1 << 30)  # as root, each worker takes a uid of its own from [2^30, 2^31)
_FORBIDDEN_EXIT = 77  # the exit status of a worker whose candidate attempted a forbidden thing
# Entry points with no audit event that affect or probe processes, signals or the filesystem:
# removed from the modules a candidate can reach before the hook is installed. The seccomp
# filter refuses the system calls behind them anyway; this keeps the refusal loud in Python.
_PRUNED = {
    "posix": (  # noqa: SIM905 (a list of 60 names reads better as words)
        "access chroot copy_file_range dup dup2 eventfd eventfd_read eventfd_write fchdir "
        "fdatasync fstatvfs fsync getpgid getsid initgroups lockf login_tty lstat memfd_create "
        "mkfifo mknod nice openpty pathconf pidfd_open pipe pipe2 posix_fadvise posix_fallocate "
        "pwrite pwritev readlink register_at_fork sched_setaffinity sched_setparam "
        "sched_setscheduler sendfile setegid seteuid setgid setgroups setpgid setpgrp "
        "setpriority setregid setresgid setresuid setreuid setsid setuid splice stat statvfs "
        "sync tcsetpgrp umask wait wait3 wait4 waitid waitpid"
    ).split(),
    "signal": ["pidfd_send_signal", "pthread_kill", "pthread_sigmask", "siginterrupt"],
    "resource": ["prlimit", "setrlimit"],
}
# What the worker may ask of the kernel once a candidate runs; everything else fails with
# EPERM. Reading and writing its own pipes, memory, signals to itself, timers and clocks.
_SYSCALLS = (  # noqa: SIM905
    "read readv write writev close fstat lseek brk mmap munmap mremap mprotect madvise "
    "rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending sigaltstack setitimer getitimer "
    "alarm clock_gettime clock_getres clock_nanosleep nanosleep gettimeofday time getrusage "
    "times futex sched_yield restart_syscall getpid gettid getppid getuid geteuid getgid "
    "getegid getresuid getresgid getgroups getrandom getcwd select pselect6 poll ppoll "
    "exit exit_group"
).split()
_AT_EMPTY_PATH = 0x1000
_F_GETFD, _F_SETFD, _F_GETFL = 1, 2, 3


# ----------------------------------------------------------------------------- worker side
# A candidate can reach every loaded module through sys.modules (email.utils.os.sys.modules),
# this one and `builtins` included, and rebind their globals. So the audit hook decides only from
# its own closure (immutable data and C functions bound at install time), shares no cell with
# anything a candidate holds (its __import__ has its own), and never looks up a global name.
# The rest of the worker (timer, reporting) is best effort, backed by the parent and the kernel.


class _Timeout(BaseException):  # BaseException: a candidate's `except Exception` won't eat it
    pass


class _NotJson(Exception):
    pass


def _stopper(out_fd: int) -> Any:
    """What a violation does: the reason goes straight to the parent on the protocol pipe and
    the worker exits at once. Nothing is left for the candidate to catch, swallow or clear,
    and the worker holds no other candidate whose results it could disturb afterwards."""
    write, leave, quote = os.write, os._exit, json.encoder.encode_basestring_ascii  # C functions

    def stop(reason: str) -> None:
        write(out_fd, b'{"t": "forbidden", "e": ' + quote(reason[:300]).encode() + b"}\n")
        leave(_FORBIDDEN_EXIT)

    return stop


def _audit_hook(allowed: frozenset[str], gate: list[Any], stop: Any) -> Any:
    stdlib = os.path.realpath(os.path.dirname(os.__file__)) + os.sep
    norm = getattr(posix, "_path_normpath", os.path.normpath)  # C here (3.11.7): unpatchable
    kind, text, starts, split = type, str, str.startswith, str.split
    harmless, codecs, implicit = _HARMLESS, _CODECS, _IMPLICIT
    writes = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

    def hook(event: str, args: tuple[Any, ...]) -> None:
        # Only identity and exact-str tests on args: an attacker's object may define __eq__.
        if event in harmless or (gate[0] and (event == "compile" or event == "open")):
            return  # gate[0]: the worker compiling (a SyntaxError looks for the source file)
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
            stop(f"forbidden import {name!r}")
        if event == "open":  # mode and flags arrive as exact str/int; the path may be anything
            if "w" in (mode := args[1] or "") or "a" in mode or "x" in mode or "+" in mode:
                stop("forbidden: open for writing")
            if args[2] & writes:
                stop("forbidden: open for writing")
        if event in ("open", "os.listdir"):  # reading the stdlib: lazy imports
            if kind(args[0]) is not text or not starts(norm(args[0]), stdlib):
                stop(f"forbidden: {event} outside the standard library")  # PathLike: TOCTOU
            return
        stop(f"forbidden: {event}")

    return hook


def _guarded_import(allowed: frozenset[str], stop: Any) -> Any:
    def guarded_import(name: str, *args: Any) -> Any:  # args: globals, locals, fromlist, level
        parts = str(name).split(".")
        prefixes = {".".join(parts[:n]) for n in range(1, len(parts) + 1)}
        if args[3:] in ((), (0,)) and (prefixes & allowed or name in _IMPLICIT):
            return __import__(name, *args)  # level 0 only: a candidate is no package
        stop(f"forbidden import {name!r}")

    return guarded_import


def _exception_text(exc: BaseException) -> str:
    if isinstance(exc, _NotJson):
        return str(exc)
    try:
        text = str(exc)
    except Exception:  # a candidate's exception whose __str__ fails
        text = ""
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


class _Worker:
    """The worker process's side: runs candidates under the timer, replies in JSON lines."""

    def __init__(self, limits: dict[str, Any], out: Any, stop: Any):
        self.limits, self.out, self.dumps = limits, out, json.dumps  # json may be patched later
        self.stop = stop
        self.allowed = frozenset(limits["allowed_imports"])
        self.timeout = limits["call_timeout_s"]
        self.functions: dict[str, Any] = {}
        self.gate: list[Any] = [False, None]  # [compiling, the code object exec may run]
        self.timer = [False, False]  # [armed, fired]
        self.calls = 0
        self.builtins = {k: v for k, v in vars(builtins).items() if k not in _HIDDEN}

    def guarded(self, function: Any, *args: Any) -> tuple[Any, str | None]:
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
        return value, error

    def run(self, function: Any, arg: Any) -> str:
        value = function(arg)
        try:  # inside the timer: a dict subclass may run candidate code while being encoded
            return self.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise _NotJson(f"returned {type(value).__name__}, not JSON") from None

    def load(self, name: str, source: str, entry: str) -> str | None:
        if self.functions:  # one candidate per process: none can touch another's state
            return "this worker holds a candidate already"
        self.gate[0] = True
        try:
            code = compile(source, f"<candidate {name}>", "exec")
        except Exception as exc:  # SyntaxError, ValueError (NUL bytes), RecursionError...
            return f"does not compile: {_exception_text(exc)}"
        finally:
            self.gate[0] = False
        safe = {**self.builtins, "__import__": _guarded_import(self.allowed, self.stop)}
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
    sys.modules) raises no audit event: only another uid lets the kernel refuse new processes.
    Each worker takes a uid no other process has, so that no two workers, and no other process
    of the host, share one: signals, ``/proc`` and ptrace between them need that uid."""
    if os.getuid() and os.geteuid():
        return None
    uid = _UIDS[0] + int.from_bytes(os.urandom(4), "big") % _UIDS[1]
    try:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    except OSError as exc:
        return f"cannot leave root for uid {uid} ({exc}); run as non-root or allow setuid"
    return None


def _seccomp_module(path: str | None) -> tuple[Any, str | None, set[str]]:
    """pyseccomp (ctypes over libseccomp), imported from the parent's site-packages ``path``,
    before the limits: its import runs ``ldconfig`` to find the library. Also the modules
    that import brought in (ctypes, subprocess...), to be dropped once the filter is loaded."""
    if path is None:
        return None, "pyseccomp is not installed", set()
    before = set(sys.modules)
    sys.path.insert(0, path)
    try:
        import pyseccomp
    except Exception as exc:  # e.g. RuntimeError: Unable to find libseccomp
        return None, f"libseccomp cannot be loaded ({_exception_text(exc)})", set()
    finally:
        sys.path.remove(path)
    return pyseccomp, None, set(sys.modules) - before


def _load_seccomp(sc: Any) -> None:
    """The kernel's allow-list of system calls (``_SYSCALLS``), EPERM for the rest. Signals go
    to the worker itself only; ``fstat``-family calls on its own descriptors only (no path
    probes); no process, socket, file opening, link, node or namespace call at all."""
    me, eq, masked = os.getpid(), sc.EQ, sc.MASKED_EQ
    flt = sc.SyscallFilter(sc.ERRNO(errno.EPERM))
    for name in _SYSCALLS:
        with contextlib.suppress(Exception):  # a call this architecture lacks (e.g. `time`)
            flt.add_rule(sc.ALLOW, name)
    flt.add_rule(sc.ALLOW, "newfstatat", sc.Arg(3, masked, _AT_EMPTY_PATH, _AT_EMPTY_PATH))
    for name in ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        flt.add_rule(sc.ALLOW, name, sc.Arg(0, eq, me))  # single-threaded: its tid is its pid
    flt.add_rule(sc.ALLOW, "prlimit64", sc.Arg(0, eq, 0))  # its own limits: getrlimit
    for cmd in (_F_GETFD, _F_SETFD, _F_GETFL):  # not F_SETOWN: SIGIO to another process
        flt.add_rule(sc.ALLOW, "fcntl", sc.Arg(1, eq, cmd))
    flt.load()  # also sets no_new_privs


def _prune_modules(loaded_for_seccomp: set[str]) -> None:
    for module, names in _PRUNED.items():
        for name in names:
            for holder in (sys.modules.get(module), os if module == "posix" else None):
                if holder is not None and hasattr(holder, name):
                    delattr(holder, name)
    for name in loaded_for_seccomp:
        sys.modules.pop(name, None)  # what loaded the filter is of no further use


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
    time.localtime()  # glibc reads the zone file once; later opens are refused
    seccomp, refusal, loaded_for_seccomp = _seccomp_module(limits["seccomp_path"])
    if not limits["require_seccomp"]:
        refusal = None
    refusal = refusal or _drop_root()  # before RLIMIT_NPROC: old kernels check it in setuid()
    _set_limit(resource.RLIMIT_CPU, limits["cpu_seconds"], limits["cpu_seconds"] + 1)
    _set_limit(resource.RLIMIT_AS, limits["memory_mb"] << 20, limits["memory_mb"] << 20)
    for kind in (resource.RLIMIT_FSIZE, resource.RLIMIT_NPROC, resource.RLIMIT_CORE):
        _set_limit(kind, 0, 0)
    stop = _stopper(out.fileno())
    worker = _Worker(limits, out, stop)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past RLIMIT_FSIZE fails, not kills
    signal.signal(signal.SIGALRM, _alarm_handler(worker.timer))
    hook = _audit_hook(worker.allowed, worker.gate, stop)  # resolves paths: before the filter
    if seccomp is not None and not refusal:
        try:
            _load_seccomp(seccomp)
        except Exception as exc:
            refusal = f"the seccomp filter did not load ({_exception_text(exc)})"
    del seccomp
    _prune_modules(loaded_for_seccomp)
    sys.addaudithook(hook)  # last
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
