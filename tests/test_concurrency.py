"""Two processes at once on one Dagster home and record store: registrations that interleave
never put a file in two batches, two `pz-dagster run` pay for each batch once, and a run whose
process was killed is marked failed by the next command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pz_dagster import Dataset
from pz_dagster.orchestration import RecordStore
from pz_dagster.testing import OpenAISimulator, SimulatedModel

REGISTER = """
import sys, time
from pz_dagster import Dataset
from pz_dagster.orchestration import RecordStore, batches
folder, store, pause, batch_size = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
save = RecordStore.save_batch
paused = []

def slow_save(self, *args, **kwargs):  # batches made; a slow disk before the first manifest
    if not paused:
        paused.append(True)
        print("batched", flush=True)
        time.sleep(pause)
    return save(self, *args, **kwargs)

RecordStore.save_batch = slow_save
source = Dataset.from_directory(folder, batch_size=batch_size).node
print("ready", flush=True)
sys.stdin.readline()  # imports done: register when told, so the two runs overlap for sure
saved = batches.register_new_batches(RecordStore(store), "q", source)
print(len(saved), flush=True)
"""


def _register(folder: Path, store: Path, pause: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", REGISTER, str(folder), str(store), str(pause), "5"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def test_interleaved_registrations_put_every_file_in_exactly_one_batch(tmp_path: Path) -> None:
    folder, store = tmp_path / "docs", tmp_path / "store"
    folder.mkdir()
    for i in range(8):
        (folder / f"d{i}.txt").write_text(f"document {i}")
    first, second = _register(folder, store, pause=2.0), _register(folder, store, pause=0.0)
    _go(first)
    assert first.stdout is not None and first.stdout.readline().strip() == "batched"
    (folder / "d8.txt").write_text("document 8")  # arrives before the first one saves
    _go(second)
    assert first.wait(60) == 0 and second.wait(60) == 0
    manifests = RecordStore(store).batches("q")
    placed = Counter(f.path for b in manifests for f in b.files)
    assert sorted(placed) == [f"d{i}.txt" for i in range(9)]
    assert set(placed.values()) == {1}, f"files in more than one batch: {placed}"


def test_a_registration_lock_held_by_a_dead_process_is_released(tmp_path: Path) -> None:
    folder, store = tmp_path / "docs", tmp_path / "store"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    holder = _register(folder, store, pause=30.0)
    _go(holder)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "batched"
    holder.kill()  # SIGKILL while it holds the lock: flock goes with the process
    holder.wait()
    started = time.monotonic()
    from pz_dagster.orchestration.batches import register_new_batches

    source = Dataset.from_directory(folder, batch_size=5).node
    assert len(register_new_batches(RecordStore(store), "q", source)) == 1
    assert time.monotonic() - started < 30


CLI = Path(sys.executable).parent / "pz-dagster"
QUERY = """
import os
from pz_dagster import Dataset
from pz_dagster.orchestration import OpenAICompatibleModel, build_definitions

defs, query = build_definitions(
    Dataset.from_directory(os.environ["PZQ_FOLDER"], batch_size=3)
    .sem_filter("The email mentions Raptor", depends_on="contents", name="raptor")
    .sem_add_columns(
        [{"name": "sender", "type": "str", "desc": "The sender's email address"}],
        depends_on="contents",
        name="sender",
    ),
    "conc",
    model=OpenAICompatibleModel(model="sim", base_url=os.environ["PZQ_SIM"], max_concurrency=2),
    store_root=os.environ["PZQ_STORE"],
)
"""


def _project(tmp_path: Path, sim_url: str, name: str) -> dict[str, str]:
    folder = tmp_path / "emails"
    if not folder.exists():
        folder.mkdir()
        for i in range(9):
            topic = "the Raptor hedge" if i % 2 else "lunch"
            (folder / f"m{i}.txt").write_text(
                f"From: p{i}@enron.com\nSubject: {topic}\n\nOn {topic}."
            )
    (tmp_path / "pzq.py").write_text(QUERY)
    return {
        **os.environ,
        "PZQ_FOLDER": str(folder),
        "PZQ_SIM": sim_url,
        "PZQ_STORE": str(tmp_path / f"store-{name}"),
        "DAGSTER_HOME": str(tmp_path / f"home-{name}"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }


def _cli(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(CLI), *args, "--module", "pzq"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _materializations(env: dict[str, str]) -> dict[str, int]:
    import dagster as dg

    counts: dict[str, int] = {}
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        for key in instance.get_asset_keys():
            records = instance.fetch_materializations(key, limit=1000).records
            counts["/".join(key.path)] = len(records)
    return counts


@pytest.mark.slow
def test_two_runs_of_one_home_at_once_pay_for_each_batch_once(tmp_path) -> None:
    with OpenAISimulator({"sim": SimulatedModel(latency_s=0.05)}) as sim:
        alone = _project(tmp_path, sim.base_url, "alone")
        single = _cli(tmp_path, alone, "run", "--partitions", "0")
        assert single.wait(300) == 0, single.communicate()[0]
        calls_alone = sim.calls["sim"]
        once = _materializations(alone)

        shared = _project(tmp_path, sim.base_url, "shared")
        runs = [_cli(tmp_path, shared, "run", "--partitions", "0") for _ in range(2)]
        outputs = [r.communicate(timeout=300)[0] for r in runs]
        assert [r.returncode for r in runs] == [0, 0], outputs
        calls_shared = sim.calls["sim"] - calls_alone
    assert calls_shared == calls_alone, outputs
    assert _materializations(shared) == once  # each batch materialized once, not twice
    assert any("materialized meanwhile" in out for out in outputs), outputs
    import dagster as dg

    # Runs the daemon launches (sensor, backfill, UI) queue one per batch at a time.
    with dg.DagsterInstance.from_config(shared["DAGSTER_HOME"]) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert {
        "key": "dagster/partition",
        "value": {"applyLimitPerUniqueValue": True},
        "limit": 1,
    } in limits


@pytest.mark.slow
def test_a_run_killed_with_sigkill_is_marked_failed_by_the_next_command(tmp_path):
    import dagster as dg

    with OpenAISimulator({"sim": SimulatedModel(latency_s=2.0)}) as sim:
        env = _project(tmp_path, sim.base_url, "killed")
        doomed = _cli(tmp_path, env, "run", "--partitions", "0")
        deadline = time.monotonic() + 120
        while sim.calls["sim"] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)  # its first model call: the run is STARTED
        assert sim.calls["sim"] > 0
        doomed.kill()
        doomed.wait()
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            (run,) = instance.get_runs()
            assert run.status == dg.DagsterRunStatus.STARTED  # nobody else will end it
        history = subprocess.run(
            [str(CLI), "history", "--module", "pzq"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert history.returncode == 0, history.stdout + history.stderr
        assert "marked failed" in history.stdout + history.stderr
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            (run,) = instance.get_runs()
            assert run.status == dg.DagsterRunStatus.FAILURE


NEW_HOME = """
import sys, time
import dagster as dg
from pz_dagster.cli.common import prepare_home
start = float(sys.argv[1])
while time.time() < start:  # all at once, after the imports
    pass
prepare_home(sys.argv[2])
with dg.DagsterInstance.get() as instance:
    instance.get_runs()
"""


def test_commands_started_at_once_on_a_new_home_leave_it_usable(tmp_path: Path) -> None:
    # Each used to create Dagster's SQLite storage at the same moment; two stamps of its schema
    # version made a home that no later command could open.
    import dagster as dg

    home = tmp_path / "home"
    start = str(time.time() + 8)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", NEW_HOME, start, str(home)],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "DAGSTER_DISABLE_TELEMETRY": "1"},
        )
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs() == []
