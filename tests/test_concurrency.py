"""Two processes at once on one Dagster home and record store: registrations that interleave
never put a file in two batches."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from pz_dagster import Dataset
from pz_dagster.orchestration import RecordStore

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
