"""Failure is loud: a partition whose records all failed for a transport reason fails its asset,
a circuit breaker stops asking a dead endpoint, `pz-dagster run` exits non-zero on a failed
partition, and invalid answers are not served from the response cache on a re-run."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from pz_dagster import Dataset, RecordFailure
from pz_dagster.errors import PzError
from pz_dagster.models import OpenAICompatibleClient
from pz_dagster.models.breaker import CircuitBreaker, CircuitOpenError
from pz_dagster.models.cache import CachedChatModel, ResponseCache
from pz_dagster.models.retry import RetryPolicy
from pz_dagster.operators import run_operator
from pz_dagster.orchestration import OpenAICompatibleModel, RecordStore, build_definitions
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.testing import Fault, OpenAISimulator, SimulatedModel

SCRIPT = Path(sys.executable).parent / "pz-dagster"
FAST_RETRY = RetryPolicy(max_retries=3, initial_wait_s=0.01, max_wait_s=0.05, max_total_s=10)
ASK = [{"role": "user", "content": "Is the sky blue?"}]
SENDER = [{"name": "sender", "type": "str", "desc": "The sender's email address"}]


class HangingServer:
    """Accepts TCP connections on 127.0.0.1 and reads what is sent, but never answers: an
    endpoint that hangs on every request. ``requests`` counts the HTTP requests received."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._listener.settimeout(0.1)
        self._lock = threading.Lock()
        self._buffers: list[bytearray] = []
        self._conns: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1"

    @property
    def requests(self) -> int:
        with self._lock:
            return sum(bytes(b).count(b"POST /") for b in self._buffers)

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            buf = bytearray()
            with self._lock:
                self._conns.append(conn)
                self._buffers.append(buf)
            threading.Thread(target=self._read, args=(conn, buf), daemon=True).start()

    def _read(self, conn: socket.socket, buf: bytearray) -> None:
        try:
            while data := conn.recv(65536):
                with self._lock:
                    buf.extend(data)
        except OSError:
            pass

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for c in self._conns:
                c.close()


@pytest.fixture
def hanging():
    server = HangingServer()
    yield server
    server.close()


def email_folder(root: Path, n: int) -> Path:
    folder = root / "emails"
    folder.mkdir()
    for i in range(n):
        (folder / f"m{i:03d}.txt").write_text(
            f"From: person{i}@enron.com\nTo: bob@enron.com\nSubject: note {i}\n\nHello {i}.\n"
        )
    return folder


def sender_query(folder: Path, batch_size: int) -> Dataset:
    return Dataset.from_directory(folder, batch_size=batch_size).sem_map(
        SENDER, depends_on="contents", name="sender"
    )


def run_batch(defs, q, instance, key: str) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(q.job.name).execute_in_process(
        partition_key=key, instance=instance, raise_on_error=False
    )


# --- (a) a hanging endpoint fails the partition, quickly, and the CLI exits non-zero ----------


def test_hanging_endpoint_fails_the_partition_quickly(tmp_path, hanging):
    folder = email_folder(tmp_path, 12)
    model = OpenAICompatibleModel(
        model="sim", base_url=hanging.base_url, timeout_s=0.5, max_concurrency=4
    )
    defs, q = build_definitions(
        sender_query(folder, 12), "hang", model=model, store_root=str(tmp_path / "s")
    )
    with dg.instance_for_test() as instance:
        key = register_partitions(RecordStore(tmp_path / "s"), q, instance)[0].key
        start = time.monotonic()
        result = run_batch(defs, q, instance, key)
        took = time.monotonic() - start
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "hang__sender"
    data = failure.step_failure_data.user_failure_data
    assert data is not None, "a dagster.Failure, not a crash"
    assert "all 12 evaluated record(s) failed" in data.description
    assert hanging.base_url in data.description and "timeout" in data.description
    md = {k: v.value for k, v in data.metadata.items()}
    assert md["transport_failures"] == 12 and md["evaluated"] == 12
    # Nothing stored as if it had worked.
    assert not RecordStore(tmp_path / "s").partition_path(["hang", "sender"], key).exists()
    # The breaker (5 in a row) stopped the asking: at most 4 in flight when it opened, plus
    # the ones that completed the 5 failures; nowhere near 12 records x 5 attempts.
    assert hanging.requests <= 5 + 4
    assert took < 30


HANG_MODULE = """
import os
from pz_dagster import Dataset
from pz_dagster.orchestration import OpenAICompatibleModel, build_definitions

defs, query = build_definitions(
    Dataset.from_directory(os.environ["PZQ_FOLDER"], batch_size=12).sem_map(
        [{"name": "sender", "type": "str", "desc": "The sender"}],
        depends_on="contents",
        name="sender",
    ),
    "hangq",
    model=OpenAICompatibleModel(
        model="sim", base_url=os.environ["PZQ_URL"], timeout_s=1.0, max_concurrency=2
    ),
    store_root=os.environ["PZQ_STORE"],
)
"""


def test_cli_run_exits_non_zero_on_a_hanging_endpoint(tmp_path, hanging):
    folder = email_folder(tmp_path, 24)
    (tmp_path / "hangq.py").write_text(HANG_MODULE)
    url = hanging.base_url.replace("http://", "http://user:hunter2@")
    env = {
        **os.environ,
        "PZQ_FOLDER": str(folder),
        "PZQ_URL": url,
        "PZQ_STORE": str(tmp_path / "store"),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    start = time.monotonic()
    done = subprocess.run(
        [str(SCRIPT), "run", "--module", "hangq", "--partitions", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - start
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "hunter2" not in out
    summary = [line for line in done.stderr.splitlines() if "partition(s) failed" in line]
    assert len(summary) == 1, out
    assert "1 of 2 partition(s) failed" in summary[0] and "sender" in summary[0]
    assert "1 not run: the model endpoint gave no answer" in summary[0]
    # 2 partitions x 12 records x 5 attempts x 1 s would be minutes; the breaker makes it a few
    # requests (2 in flight per try, 5 failures to open), and the second partition is not run.
    assert hanging.requests <= 5 + 2, hanging.requests
    assert took < 90


def test_content_failures_stay_per_record(tmp_path):
    """Invalid JSON for every record is the model's answer, not a dead endpoint: the partition
    is stored with the records flagged, as before."""
    folder = email_folder(tmp_path, 3)
    bad = Fault(text="sender is bob")
    with OpenAISimulator({"sim": SimulatedModel()}, faults=lambda r, c: bad) as sim:
        model = OpenAICompatibleModel(model="sim", base_url=sim.base_url)
        defs, q = build_definitions(
            sender_query(folder, 10), "content", model=model, store_root=str(tmp_path / "s")
        )
        with dg.instance_for_test() as instance:
            key = register_partitions(RecordStore(tmp_path / "s"), q, instance)[0].key
            result = run_batch(defs, q, instance, key)
    assert result.success
    rows = RecordStore(tmp_path / "s").read(["content", "sender"], key).to_pylist()
    assert len(rows) == 3 and all("not valid JSON" in r["error"] for r in rows)


def test_max_failed_fraction_fails_a_partly_dead_partition(tmp_path):
    """Half the records time out (the other half answer): the default (1.0) keeps the
    partition, a stricter ``max_failed_fraction`` fails it."""
    folder = email_folder(tmp_path, 4)

    def slow(req, call):
        return Fault(delay_s=2.0) if "Hello 1." in req.prompt or "Hello 3." in req.prompt else None

    with OpenAISimulator({"sim": SimulatedModel()}, faults=slow) as sim:
        model = OpenAICompatibleModel(
            model="sim", base_url=sim.base_url, timeout_s=0.3, max_retries=0, max_concurrency=1
        )
        defs, q = build_definitions(
            sender_query(folder, 10), "half", model=model, store_root=str(tmp_path / "s")
        )
        with dg.instance_for_test() as instance:
            key = register_partitions(RecordStore(tmp_path / "s"), q, instance)[0].key
            assert run_batch(defs, q, instance, key).success
            strict = {"ops": {"half__sender": {"config": {"max_failed_fraction": 0.5}}}}
            failed = defs.resolve_job_def(q.job.name).execute_in_process(
                partition_key=key, instance=instance, raise_on_error=False, run_config=strict
            )
    assert not failed.success
    failure = next(e for e in failed.all_events if e.is_step_failure)
    assert (
        "2 of 4 evaluated record(s) failed"
        in failure.step_failure_data.user_failure_data.description
    )


# --- (b) the circuit breaker -------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def boom() -> None:
    raise TimeoutError("no answer")


def test_breaker_opens_after_n_consecutive_failures_and_fails_fast():
    clock = FakeClock()
    breaker = CircuitBreaker(failures=3, cooldown_s=10.0, clock=clock)
    for _ in range(2):
        with pytest.raises(TimeoutError):
            breaker.call(boom)
    assert breaker.call(lambda: "ok") == "ok"  # a success resets the count: not in a row
    for _ in range(3):
        with pytest.raises(TimeoutError):
            breaker.call(boom)
    assert breaker.state == "open"
    called = []
    with pytest.raises(CircuitOpenError, match="failed 3 times in a row") as err:
        breaker.call(lambda: called.append(1))
    assert not called and err.value.last_error == "TimeoutError: no answer"


def test_breaker_half_opens_after_the_cooldown_and_closes_on_success():
    clock = FakeClock()
    breaker = CircuitBreaker(failures=2, cooldown_s=10.0, clock=clock)
    for _ in range(2):
        with pytest.raises(TimeoutError):
            breaker.call(boom)
    clock.now += 9.9
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: "ok")
    clock.now += 0.2
    assert breaker.state == "half-open"
    with pytest.raises(TimeoutError):  # the probe fails: open again, for a new cool-down
        breaker.call(boom)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: "ok")
    clock.now += 10.1
    assert breaker.call(lambda: "back") == "back"
    assert breaker.state == "closed" and breaker.consecutive_failures == 0


def test_breaker_ignores_errors_that_are_not_the_endpoints_fault():
    breaker = CircuitBreaker(
        failures=1, cooldown_s=10.0, is_failure=lambda e: isinstance(e, TimeoutError)
    )
    with pytest.raises(ValueError):
        breaker.call(lambda: (_ for _ in ()).throw(ValueError("bad request")))
    assert breaker.state == "closed"


def test_breaker_lets_one_probe_through_under_concurrency():
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, cooldown_s=5.0, clock=clock)
    with pytest.raises(TimeoutError):
        breaker.call(boom)
    clock.now += 6
    probes, rejected, start = [], [], threading.Barrier(16)
    all_turned_away = threading.Event()

    def probe() -> str:
        probes.append(1)
        all_turned_away.wait(10)  # in flight until every other caller has been answered
        return "ok"

    def caller() -> None:
        start.wait()
        try:
            breaker.call(probe)
        except CircuitOpenError:
            rejected.append(1)
            if len(rejected) == 15:
                all_turned_away.set()

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(probes) == 1 and len(rejected) == 15
    assert breaker.state == "closed"


def test_breaker_counts_concurrent_failures_without_losing_any():
    breaker = CircuitBreaker(failures=10**9, cooldown_s=1.0)
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        for _ in range(200):
            with pytest.raises(TimeoutError):
                breaker.call(boom)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert breaker.consecutive_failures == 1600


def test_client_fails_fast_with_a_clear_message_once_the_circuit_opens():
    with OpenAISimulator({"sim": SimulatedModel(error_rate=1.0)}) as sim:
        url = sim.base_url.replace("http://", "http://user:hunter2@")
        c = OpenAICompatibleClient(
            "sim", base_url=url, retry=FAST_RETRY, breaker=CircuitBreaker(5, cooldown_s=60)
        )
        with pytest.raises(RecordFailure, match="HTTP 500 after 4 attempt") as first:
            c.complete(ASK, max_tokens=8)
        assert first.value.transport
        # The 5th failure in a row opens the circuit during the second record's retries.
        with pytest.raises(RecordFailure, match="circuit open") as second:
            c.complete(ASK, max_tokens=8)
        asked = sim.calls["sim"]
        assert asked == 5
        start = time.monotonic()
        with pytest.raises(RecordFailure, match="circuit open") as third:
            c.complete(ASK, max_tokens=8)
        assert time.monotonic() - start < 0.5 and sim.calls["sim"] == asked  # not asked
    message = str(third.value)
    assert "failed 5 times in a row" in message and "hunter2" not in message
    assert sim.base_url.replace("http://", "http://***@") in message
    assert second.value.transport and third.value.transport


def test_a_flapping_endpoint_recovers_after_the_cooldown():
    faults = lambda req, call: Fault(status=503) if call <= 5 else None  # noqa: E731
    clock = FakeClock()  # the cool-down passes when the test says, not when the machine does
    with OpenAISimulator({"sim": SimulatedModel()}, faults=faults) as sim:
        c = OpenAICompatibleClient(
            "sim",
            base_url=sim.base_url,
            retry=RetryPolicy(max_retries=0),
            breaker=CircuitBreaker(5, cooldown_s=30, clock=clock),
        )
        for _ in range(5):
            with pytest.raises(RecordFailure, match="HTTP 503"):
                c.complete(ASK, max_tokens=8)
        with pytest.raises(RecordFailure, match="not asking it again for 30 s"):
            c.complete(ASK, max_tokens=8)
        clock.now += 30
        assert c.complete(ASK, max_tokens=8).usage.calls == 1  # the probe, answered
        assert c.complete(ASK, max_tokens=8).usage.calls == 1  # closed again
    assert sim.calls["sim"] == 7


def test_concurrent_records_stop_asking_a_dead_endpoint(hanging):
    node = Dataset.from_directory("/d").sem_map(SENDER).node
    c = OpenAICompatibleClient(
        "sim", base_url=hanging.base_url, timeout_s=0.3, retry=FAST_RETRY, max_concurrency=4
    )
    records = [
        {"record_id": f"r{i}", "filename": f"r{i}", "contents": f"email {i}", "error": None}
        for i in range(40)
    ]
    start = time.monotonic()
    result = run_operator(node, records, c)
    assert time.monotonic() - start < 10
    assert result.stats.failures == 40 and result.stats.transport_failures == 40
    assert sum("circuit open" in r["error"] for r in result.records) >= 30
    assert hanging.requests <= 5 + 4


# --- (c) invalid answers are not cached as answers ---------------------------------------------


def test_invalid_answer_is_asked_again_on_a_rerun_and_recovers(tmp_path):
    folder = email_folder(tmp_path, 3)
    broken = {"on": True}

    def faults(req, call):
        # Record m001's answer is not JSON on the first run (both the answer and the corrective
        # retry); the model answers properly later.
        if broken["on"] and "Hello 1." in req.prompt:
            return Fault(text="sender is bob")
        return None

    with OpenAISimulator({"sim": SimulatedModel()}, faults=faults) as sim:
        model = OpenAICompatibleModel(model="sim", base_url=sim.base_url)
        defs, q = build_definitions(
            sender_query(folder, 10), "recover", model=model, store_root=str(tmp_path / "s")
        )
        store = RecordStore(tmp_path / "s")
        with dg.instance_for_test() as instance:
            key = register_partitions(store, q, instance)[0].key
            assert run_batch(defs, q, instance, key).success
            first = {r["record_id"]: r for r in store.read(["recover", "sender"], key).to_pylist()}
            failed = [k for k, r in first.items() if r["error"]]
            assert len(failed) == 1 and "not valid JSON" in first[failed[0]]["error"]
            broken["on"] = False
            before = sim.calls["sim"]
            assert run_batch(defs, q, instance, key).success
            again = {r["record_id"]: r for r in store.read(["recover", "sender"], key).to_pylist()}
    assert sim.calls["sim"] - before == 1  # only the failed record is asked again
    assert again[failed[0]]["error"] is None and again[failed[0]]["sender"] == "unknown"


def test_cache_keeps_valid_answers_and_drops_invalid_ones(tmp_path):
    node = Dataset.from_directory("/d").sem_map(SENDER).node
    records = [{"record_id": "r0", "filename": "r0", "contents": "email 0", "error": None}]
    answers = {"text": "sender is bob"}
    with OpenAISimulator(
        {"sim": SimulatedModel()}, faults=lambda r, c: Fault(text=answers["text"])
    ) as sim:
        cache = ResponseCache(tmp_path / "cache")
        cached = CachedChatModel(
            OpenAICompatibleClient("sim", base_url=sim.base_url, retry=FAST_RETRY), cache
        )
        assert run_operator(node, records, cached).stats.failures == 1
        assert len(cache) == 0 and sim.calls["sim"] == 2  # neither invalid answer was stored
        answers["text"] = '{"sender": "bob@enron.com"}'
        assert run_operator(node, records, cached).records[0]["sender"] == "bob@enron.com"
        assert sim.calls["sim"] == 3 and len(cache) == 1
        assert run_operator(node, records, cached).stats.usage.cache_hits == 1
        assert sim.calls["sim"] == 3
        cache.close()


def test_an_endpoint_that_takes_no_connection_fails_in_the_connect_timeout(monkeypatch):
    """A host that is down drops connection attempts: that is found out in CONNECT_TIMEOUT_S,
    not after timeout_s (the time an answer may take)."""
    from pz_dagster.models import openai_compat

    monkeypatch.setattr(openai_compat, "CONNECT_TIMEOUT_S", 1.0)
    full = socket.create_server(("127.0.0.1", 0), backlog=0)  # never accepts
    port = full.getsockname()[1]
    queued = []
    for _ in range(4):  # fill its backlog: further connection attempts go unanswered
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", port))
        queued.append(sock)
    time.sleep(0.2)
    client = OpenAICompatibleClient(
        "sim",
        base_url=f"http://127.0.0.1:{port}/v1",
        timeout_s=60,
        retry=RetryPolicy(max_retries=0),
    )
    start = time.monotonic()
    with pytest.raises(PzError, match="127.0.0.1"):
        client.complete([{"role": "user", "content": "hi"}], max_tokens=5)
    assert time.monotonic() - start < 15  # 60 s if the connect timeout were timeout_s
    for sock in [*queued, full]:
        sock.close()
