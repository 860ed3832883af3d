"""What `pz-dagster run` shows while a batch runs: per operator the records done of its total,
model calls and tokens, live in a terminal and as plain lines when piped; the operators report
it (filters, a chain of filters in one op, maps, code synthesis, where the records its
functions decide count as done), and nothing is reported where no reporter is installed."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from pz_dagster.cli.progress import showing_progress
from pz_dagster.models.base import Usage
from pz_dagster.operators import run_operator
from pz_dagster.operators.progress import current_reporter
from pz_dagster.testing import OpenAISimulator, SimulatedModel
from tests.test_code_synthesis import GOOD, emails, node, oracle
from tests.test_model_faults import client

SCRIPT = Path(sys.executable).parent / "pz-dagster"

QUERY = """
import os
from pz_dagster import Dataset
from pz_dagster.orchestration import OpenAICompatibleModel, build_definitions

defs, query = build_definitions(
    Dataset.from_directory(os.environ["PZQ_FOLDER"], batch_size=8)
    .sem_filter("The email mentions Raptor", depends_on="contents", name="raptor")
    .sem_filter("The email is not a newsletter", depends_on="contents", name="personal")
    .sem_add_columns(
        [{"name": "sender", "type": "str", "desc": "The sender's email address"}],
        depends_on="contents",
        name="sender",
    ),
    "progq",
    model=OpenAICompatibleModel(model="sim", base_url=os.environ["PZQ_SIM"]),
    store_root=os.environ["PZQ_STORE"],
)
"""


def test_a_piped_run_prints_each_operator_s_records_calls_and_tokens(tmp_path: Path) -> None:
    folder = tmp_path / "emails"
    folder.mkdir()
    for i in range(8):
        (folder / f"m{i}.txt").write_text(f"From: p{i}@enron.com\nSubject: Raptor {i}\n\nHi.")
    (tmp_path / "progq.py").write_text(QUERY)
    with OpenAISimulator({"sim": SimulatedModel()}) as sim:
        done = subprocess.run(
            [str(SCRIPT), "run", "--module", "progq"],
            cwd=tmp_path,
            env={
                **os.environ,
                "PZQ_FOLDER": str(folder),
                "PZQ_SIM": sim.base_url,
                "PZQ_STORE": str(tmp_path / "store"),
                "DAGSTER_HOME": str(tmp_path / "home"),
            },
            capture_output=True,  # a pipe: no terminal
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "\x1b" not in out and "\r" not in out  # no cursor movement nor colour in a pipe
    for op in ("raptor", "personal", "sender"):  # both filters of the chain, then the map
        lines = re.findall(
            rf"^  {op}: (\d+)/(\d+) records, (\d+) model calls, (\d+) tokens", out, re.M
        )
        assert lines, out
        assert [int(d) for d, *_ in lines] == sorted(int(d) for d, *_ in lines)  # it advances
        last_done, total, calls, tokens = (int(v) for v in lines[-1])
        assert last_done == total == 8 and calls == 8 and tokens > 0, lines
        assert len(lines) <= 4  # at a quarter of the records each, not one line per record
    # the lines come while the batch runs, before its end is reported
    assert out.index("  sender: 8/8 records") < out.index(": ok in")


def test_records_the_functions_decide_count_as_done() -> None:
    ticks: list[tuple[int, int, Usage | None]] = []

    def progress(done: int, total: int, usage: Usage | None = None, /) -> None:
        ticks.append((done, total, usage))

    records = emails(40)
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle(GOOD)) as sim:
        result = run_operator(
            node(), records, client(sim), strategy="code_synthesis", progress=progress
        )
        calls = sim.calls["sim"]
    assert result.extras["fallback"] == 0 and result.extras["sample"] == 8
    assert ticks[0][:2] == (0, 40) and ticks[-1][:2] == (40, 40)
    assert ticks[-1][2] is not None and ticks[-1][2].calls == calls  # every call counted
    # after the sample the functions decide the rest, one by one, without a model call
    after_sample = [(d, u.calls) for d, _, u in ticks if u is not None and 8 < d < 40]
    assert after_sample and {c for _, c in after_sample} == {calls}

    kept = result.extras["functions"]
    ticks.clear()
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle(GOOD)) as sim:
        run_operator(
            node(),
            emails(25, start=100),
            client(sim),
            strategy="code_synthesis",
            progress=progress,
            params={"functions": kept},
        )
        assert sim.calls["sim"] == 0
    assert ticks[-1][:2] == (25, 25) and ticks[-1][2] == Usage()


def test_a_terminal_gets_a_live_display_and_a_pipe_gets_lines() -> None:
    usage = Usage(input_tokens=300, output_tokens=12, calls=3)
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=150)
    with showing_progress(terminal) as reporter:
        assert current_reporter() is reporter
        for done in range(4):
            reporter.update("sender", done, 3, usage if done else Usage())
        reporter.close("sender")
    assert current_reporter() is None  # installed only around the run
    drawn = screen.getvalue()
    assert "\x1b[" in drawn  # redrawn in place
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn)
    assert re.search(r"sender .*3/3 records · 3 model calls · 312 tokens", plain), plain

    piped = io.StringIO()
    with showing_progress(Console(file=piped, width=10_000)) as reporter:
        for done in range(9):
            reporter.update("raptor", done, 8, Usage(calls=done, cache_hits=1))
    lines = piped.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        f"  raptor: {n}/8 records" for n in (2, 4, 6, 8)
    ]
    assert lines[-1].startswith("  raptor: 8/8 records, 8 model calls, 1 answered from the cache")
    assert "left" in lines[0] and "left" not in lines[-1]
