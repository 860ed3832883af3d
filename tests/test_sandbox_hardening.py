"""Attacks that got through the sandbox before it ran one candidate per process under a
seccomp filter: signals to outside processes through pidfds, files made with mknod/mkfifo,
probes of the host with stat/access/readlink, one candidate forging another's results, and a
candidate clearing the record of its own violation. Each is tried on the sandbox directly,
the kernel filter on its own, and the signal attack through a ``code_synthesis``
materialization (see docs/threat-model.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from pz_dagster.operators.code_synthesis.sandbox import CallResult, Sandbox, SandboxLimits
from pz_dagster.orchestration import (
    RecordStore,
)
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.testing import OpenAISimulator, SimulatedModel
from tests.test_code_synthesis import GOOD, emails, extraction_defs, truth

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="seccomp: Linux")
FAST = SandboxLimits(call_timeout_s=0.5, kill_grace_s=1.5)
PIDFD_KILL = (
    "import email.utils\n"
    "def extract(text):\n"
    "    os = email.utils.os\n"
    "    fd = os.pidfd_open({pid})\n"
    "    os.sys.modules['signal'].pidfd_send_signal(fd, 9)\n"
    "    return 'killed'\n"
)


@pytest.fixture
def box() -> Iterator[Sandbox]:
    with Sandbox(FAST) as sandbox:
        yield sandbox


class _Victim:
    """Another sandbox's worker: as root all workers used to share uid nobody, so a candidate
    could signal every other sandbox's worker; as non-root it shares the test's own uid."""

    def __init__(self) -> None:
        self.box = Sandbox(FAST)
        assert self.box.load("idle", "def extract(t):\n    return t") is None
        assert self.box.pid is not None
        self.pid = self.box.pid

    def alive(self) -> bool:
        """Its worker answers, and is the same process (a sandbox replaces a dead worker)."""
        answered = self.box.call("idle", ["still here"]) == [CallResult("still here")]
        return answered and self.box.pid == self.pid and self.box.restarts == 0


@pytest.fixture
def victim() -> Iterator[_Victim]:
    target = _Victim()
    yield target
    target.box.close()


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A world-writable, world-readable folder: what any uid could reach."""
    path = Path(tempfile.mkdtemp(prefix="pz-public-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path)


def run(box: Sandbox, source: str, name: str = "candidate") -> CallResult:
    assert box.load(name, source) is None
    return box.call(name, ["doc"])[0]


def body(text: str) -> str:
    return "def extract(text):\n" + "".join(f"    {line}\n" for line in text.splitlines())


def test_a_candidate_cannot_signal_an_outside_process_through_a_pidfd(box, victim) -> None:
    result = run(box, PIDFD_KILL.format(pid=victim.pid))
    time.sleep(0.2)
    assert victim.alive(), "the candidate killed another sandbox's worker"
    assert result.error is not None and result.value is None


def test_a_candidate_cannot_kill_another_sandbox_s_worker(box, victim) -> None:
    result = run(box, body(f"import email.utils\nemail.utils.os.kill({victim.pid}, 9)"))
    assert result.error == "forbidden: os.kill"
    assert victim.alive()


@pytest.mark.parametrize("call", ["mknod('{p}')", "mkfifo('{p}')"])
def test_a_candidate_cannot_make_filesystem_nodes(box, public_dir: Path, call: str) -> None:
    target = public_dir / "node"
    result = run(box, body(f"import email.utils\nemail.utils.os.{call.format(p=target)}"))
    assert result.error is not None
    assert not target.exists()


@pytest.mark.parametrize(
    "probe",
    [
        "return email.utils.os.stat('{p}').st_size",
        "return email.utils.os.lstat('{p}').st_size",
        "return email.utils.os.access('{p}', 0)",
        "return email.utils.os.readlink('{p}')",
        "return email.utils.os.path.exists('{p}')",
        "return email.utils.os.path.getsize('{p}')",
    ],
)
def test_a_candidate_cannot_probe_the_host(box, public_dir: Path, probe: str) -> None:
    secret = public_dir / "secret.txt"
    secret.write_text("x" * 1234)
    secret.chmod(0o644)
    link = public_dir / "link"
    link.symlink_to(secret)
    target = link if "readlink" in probe else secret
    result = run(box, body(f"import email.utils\n{probe.format(p=target)}"))
    assert result.value in (None, False), f"the probe answered {result.value!r}"


def test_one_candidate_cannot_forge_another_s_results(box) -> None:
    forger = "import re\nre.search = lambda *a, **k: None\ndef extract(text):\n    return 1\n"
    assert run(box, forger, "forger") == CallResult(1)
    honest = GOOD["sender"]
    assert box.load("honest", honest) is None
    assert box.call("honest", ["From: a@b.com\n"]) == [CallResult("a@b.com")]
    # A rewrite of the worker's own reply path touches only the forger's process too.
    rewrite = body(
        "import email.utils, json\n"
        "json.dumps = lambda *a, **k: '\"forged\"'\n"
        "email.utils.os.sys.modules['json'].dumps = json.dumps\n"
        "return 2"
    )
    run(box, rewrite, "rewriter")
    assert box.call("honest", ["From: c@d.com\n"]) == [CallResult("c@d.com")]


def test_a_candidate_cannot_clear_the_record_of_its_violation(box) -> None:
    # Before: the violations list sat in the import function's closure, and a candidate that
    # swallowed the refusal and cleared the list came back clean.
    clearing = body(
        "try:\n"
        "    import os\n"
        "except BaseException:\n"
        "    pass\n"
        "for cell in __builtins__['__import__'].__closure__ or ():\n"
        "    if isinstance(cell.cell_contents, list):\n"
        "        cell.cell_contents.clear()\n"
        "return 'clean'"
    )
    assert run(box, clearing) == CallResult(error="forbidden import 'os'")
    # The violation stops the function for good: it is not run again on later inputs.
    assert box.call("candidate", ["again"]) == [
        CallResult(error="not loaded: stopped: forbidden import 'os'")
    ]


KERNEL_PROBE = """
import json, os, signal, socket, sys, types
for name, path in {packages!r}:
    sys.modules[name] = types.ModuleType(name); sys.modules[name].__path__ = [path]
from pz_dagster.operators.code_synthesis import worker
import pyseccomp
victim, folder = int(sys.argv[1]), sys.argv[2]
def refused_if_false(answer):  # os.access answers False instead of raising
    if not answer:
        raise PermissionError
worker._load_seccomp(pyseccomp)
attempts = {{
    "pidfd_open": lambda: os.pidfd_open(victim),
    "kill": lambda: os.kill(victim, signal.SIGKILL),
    "kill_group": lambda: os.kill(0, signal.SIGCONT),
    "mknod": lambda: os.mknod(folder + "/node"),
    "mkfifo": lambda: os.mkfifo(folder + "/fifo"),
    "stat": lambda: os.stat(folder),
    "access": lambda: refused_if_false(os.access(folder, os.F_OK)),
    "readlink": lambda: os.readlink("/proc/self/exe"),
    "open_read": lambda: open("/etc/hostname").read(),
    "open_write": lambda: open(folder + "/written", "w"),
    "socket": lambda: socket.socket(),
    "fork": lambda: os.fork(),
    "uname": lambda: os.uname(),  # the host's name is none of a candidate's business
    "setrlimit_other": lambda: __import__("resource").prlimit(victim, 0, (1, 1)),
}}
result = {{}}
for name, attempt in attempts.items():
    try:
        attempt()
        result[name] = "allowed"
    except PermissionError:
        result[name] = "refused"
    except Exception as exc:
        result[name] = type(exc).__name__
result["own_signal"] = os.kill(os.getpid(), 0) is None
result["fstat_own_fd"] = os.fstat(1).st_mode > 0
os.write(1, json.dumps(result).encode())
"""


def test_the_kernel_filter_alone_refuses_what_the_audit_hook_never_sees(victim, tmp_path) -> None:
    """No Python-level layer here: the raw calls meet the seccomp filter only."""
    from pz_dagster.operators.code_synthesis.sandbox import _PACKAGES

    script = KERNEL_PROBE.format(packages=_PACKAGES)
    out = subprocess.run(
        [sys.executable, "-c", script, str(victim.pid), str(tmp_path)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    result = json.loads(out.stdout)
    refused = {k: v for k, v in result.items() if k not in ("own_signal", "fstat_own_fd")}
    assert refused == dict.fromkeys(refused, "refused"), result
    assert result["own_signal"] and result["fstat_own_fd"]
    assert victim.alive()
    assert list(tmp_path.iterdir()) == []


def test_a_code_synthesis_materialization_cannot_kill_an_outside_process(victim, tmp_path):
    folder = tmp_path / "emails"
    folder.mkdir()
    for r in emails(120):
        (folder / f"{r['record_id']}.txt").write_text(r["contents"])
    hostile = {  # one attack per field: the unaudited pidfd route, and the audited os.kill
        "sender": PIDFD_KILL.format(pid=victim.pid),
        "subject": body(f"import email.utils\nemail.utils.os.kill({victim.pid}, 9)"),
    }

    def answer(req):
        if req.schema is None:  # asked for code: every candidate is an attack
            return hostile["sender" if "returns 'sender'" in req.prompt else "subject"]
        import re

        return truth(re.search(r'Document:\n"""\n(.*?)\n"""', req.prompt, re.S).group(1))

    store = tmp_path / "store"
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=answer) as sim:
        defs, q = extraction_defs(folder, sim, store, "hostile")
        with dg.instance_for_test() as instance:
            (batch,) = register_partitions(RecordStore(store), q, instance)
            res = defs.resolve_job_def(q.job.name).execute_in_process(
                partition_key=batch.key, instance=instance
            )
            assert res.success
            (event,) = instance.fetch_materializations(q.asset_key("extract"), limit=1).records
    metadata = event.asset_materialization.metadata
    time.sleep(0.2)
    assert victim.alive(), "model-written code killed an outside process"
    assert metadata["strategy"].value == "code_synthesis"
    problems = json.dumps(metadata["code/synthesis_problems"].value)
    assert "forbidden: os.kill; dropped" in problems  # stopped, and shown in the UI
    kept = json.dumps(metadata["history/record"].value["functions"])
    assert "pidfd" not in kept and "os.kill" not in kept
    rows = RecordStore(store).read(q.asset_key("extract").path, batch.key).to_pylist()
    assert all(r["sender"] == truth(r["contents"])["sender"] for r in rows)


def test_without_seccomp_the_worker_refuses_to_start_unless_told_otherwise(monkeypatch) -> None:
    from pz_dagster.operators.code_synthesis import sandbox
    from pz_dagster.operators.code_synthesis.sandbox import SandboxError

    monkeypatch.setattr(sandbox, "_seccomp_path", lambda: None)
    with Sandbox(FAST) as unfiltered, pytest.raises(SandboxError, match="pyseccomp"):
        unfiltered.load("subject", GOOD["sender"])
    relaxed = SandboxLimits(call_timeout_s=0.5, require_seccomp=False)
    with Sandbox(relaxed) as box:
        assert box.load("sender", GOOD["sender"]) is None
        assert box.call("sender", ["From: a@b.com\n"]) == [CallResult("a@b.com")]
