"""Shared fixtures: small document folders, temporary Dagster homes, a loopback llama.cpp server;
the operator tests' four emails (``folder``) and the simulator answering them (``sim``)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pz_dagster.models.local_llama import bundled_gguf_path
from pz_dagster.testing import ChatRequest, OpenAISimulator, SimulatedModel

REPO = Path(__file__).resolve().parents[1]

RAPTOR_EMAIL = (
    "From: jeff.skilling@enron.com\nTo: andrew.fastow@enron.com\nSubject: Raptor hedges\n\n"
    "The Raptor vehicles need more capital before the quarter closes. Keep it quiet.\n"
)
LUNCH_EMAIL = (
    "From: jane.doe@enron.com\nTo: bob@enron.com\nSubject: Lunch\n\nLunch at noon on Friday?\n"
)


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def mini_emails(tmp_path: Path) -> Path:
    """Two short emails, one undecodable file and one empty file."""
    folder = tmp_path / "emails"
    folder.mkdir()
    (folder / "a_raptor.txt").write_text(RAPTOR_EMAIL)
    (folder / "b_lunch.txt").write_text(LUNCH_EMAIL)
    (folder / "c_latin1.txt").write_bytes("Caf\xe9 r\xe9sum\xe9 from 1999".encode("latin-1"))
    (folder / "d_empty.txt").write_bytes(b"")
    return folder


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server() -> str:
    """llama-cpp-python's OpenAI-compatible server with the bundled model on 127.0.0.1."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "pz_dagster.models.llama_server",  # llama_cpp.server, without the AMX buffers
        "--model",
        str(bundled_gguf_path()),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        "2",
    ]
    log = open(os.devnull, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server did not start within 60 s")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server (Debian's postgresql, installed by `make test`) on
    127.0.0.1, with trust authentication and database ``pz``. Skipped, with the reason, where
    no server can be started."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql (Debian's postgresql)")
    # Not under pytest's tmp dir: the postgres user cannot enter root's 0700 folders there.
    root = Path(tempfile.mkdtemp(prefix="pz-postgres-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the postgres user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    port = free_port()

    def pg(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)

    init = pg(
        str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
    )
    if init.returncode:
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off"
    start = pg(
        str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"
    )
    if start.returncode:
        pytest.skip(f"PostgreSQL did not start: {start.stderr.strip()[-300:]}")
    try:
        made = pg(
            str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "pz"
        )
        assert made.returncode == 0, made.stderr
        yield f"postgresql://postgres@127.0.0.1:{port}/pz"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


# --- the operator tests' emails (tests/test_operators_*.py), and the simulator answering them ---

EMAILS = {
    "a.txt": "From: ken@enron.com\nSubject: Raptor\n\nPeople: Andrew Fastow, Ben Glisan\nThe Raptor hedge is underwater.",
    "b.txt": "From: sue@enron.com\nSubject: Picnic\n\nPeople: Sue Smith\nThe company picnic is on Saturday.",
    "c.txt": "From: tim@enron.com\nSubject: Chewco\n\nPeople: Michael Kopper, Andrew Fastow\nChewco needs a new investor.",
    "d.txt": "From: amy@enron.com\nSubject: Lunch\n\nPeople: nobody\nShort note.",
}


def document_of(req: ChatRequest) -> str:
    m = re.search(r'Document:\n"""\n(.*?)\n"""', req.prompt, re.S)
    return m.group(1) if m else ""


def oracle(req: ChatRequest):
    """Correct answers for the tests' emails, read off the document in the prompt."""
    doc = document_of(req)
    props = (req.schema or {}).get("properties", {})
    scheme = any(w in doc for w in ("Raptor", "Chewco"))
    if "answer" in props and "Record B:" in req.prompt:
        scheme_name = re.search(r"Record B:\n(?:.*\n)*?name: (\w+)", req.prompt)
        return {"answer": "YES" if scheme_name and scheme_name.group(1) in doc else "NO"}
    if "quote" in props:  # a long document's YES confirmed: the line naming the scheme
        line = next((ln for ln in doc.splitlines() if "Raptor" in ln or "Chewco" in ln), "")
        return {"quote": line or "nothing", "answer": "YES" if scheme else "NO"}
    if "answer" in props:
        return {"answer": "YES" if scheme else "NO"}
    if "label" in props:
        return {"label": "fraud" if scheme else "other"}
    if "items" in props:
        line = re.search(r"People: (.*)", doc)
        names = [] if not line or line.group(1) == "nobody" else line.group(1).split(", ")
        return {"items": [{"person": n} for n in names]}
    if "sender" in props:
        return {"sender": re.search(r"From: (\S+)", doc).group(1)}
    if "relevance" in props:
        return {"relevance": 10 if "Raptor" in doc else 2}
    if "summary" in props:
        entries = re.findall(r"^\[\d+\] (.*)$", doc, re.M)
        total = sum(
            int(m.group(1)) if (m := re.search(r'"summary": ?"(\d+) subjects', e)) else 1
            for e in entries
        )
        return {"summary": f"{total} subjects"}
    return None


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "emails"
    d.mkdir()
    for name, text in EMAILS.items():
        (d / name).write_text(text)
    return d


@pytest.fixture
def sim():
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle) as s:
        yield s
