"""Code synthesis (Evaporate) as a strategy of a semantic map, against the simulator: kept
functions answer every record they can, the model answers the rest (counted), broken or
malicious candidates are contained and dropped, and kept functions are reused."""

from __future__ import annotations

import json
import os
import re

import dagster as dg
import pytest

from pz_dagster import Dataset
from pz_dagster.operators import run_operator
from pz_dagster.operators.code_synthesis.functions import sample_indices, score, select, vote
from pz_dagster.operators.code_synthesis.pool import Pool
from pz_dagster.operators.code_synthesis.run import first_round
from pz_dagster.operators.code_synthesis.sandbox import Sandbox
from pz_dagster.operators.prompts import field_chunks, line_chunks
from pz_dagster.orchestration import (
    ModelPrice,
    OpenAICompatibleModel,
    OptimizerResource,
    RecordStore,
    build_definitions,
)
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.testing import OpenAISimulator, SimulatedModel
from pz_dagster.tuning.history import HistoryRecord
from tests.test_model_faults import client

FIELDS = [
    {"name": "sender", "type": "str", "desc": "The email address of the sender"},
    {"name": "subject", "type": "str", "desc": "The subject of the email"},
]
GOOD = {
    "sender": 'import re\ndef extract(text):\n    m = re.search(r"^From:\\s*(\\S+)", text, re.M)\n'
    "    return m.group(1) if m else None\n",
    "subject": "```python\nimport re\n\ndef extract(text):\n"
    '    m = re.search(r"^Subject:\\s*(.+)$", text, re.M)\n    return m.group(1).strip() if m else None\n```',
}
BAD = [
    "import os\ndef extract(text):\n    os.system('touch /tmp/pz-pwned')\n    return 'x'\n",
    "def extract(text):\n    while True:\n        pass\n",
    "def extract(text):\n    return open('/tmp/pz-pwned', 'w').write(text)\n",
    "I cannot write code.",
]


def emails(n: int, start: int = 0, subject_every: int = 1, headers: bool = True) -> list[dict]:
    """Emails with header lines (``From: ...``), or the same facts in running text."""
    out = []
    for i in range(start, start + n):
        if headers:
            subject = f"Subject: Raptor update {i}\n" if i % subject_every == 0 else ""
            text = f"From: person{i}@enron.com\nTo: team@enron.com\n{subject}\nBody {i}.\n"
        else:
            text = f"Sent by person{i}@enron.com to team@enron.com about Raptor update {i}.\n"
        out.append({"record_id": f"m{i}", "contents": text, "error": None})
    return out


def truth(text: str) -> dict:
    sender = re.search(r"[\w.]+@enron\.com", text)
    subject = re.search(r"^Subject:\s*(.+)$|about (.+)\.$", text, re.M)
    return {
        "sender": sender.group(0) if sender else "unknown",
        "subject": (subject.group(1) or subject.group(2)).strip() if subject else "none",
    }


def oracle(code: dict | list):
    def answer(req):
        if req.schema is None:  # the synthesis prompt asks for code, not JSON
            field = re.search(r"returns '(\w+)'", req.prompt).group(1)
            return code[field] if isinstance(code, dict) else code[len(req.prompt) % len(code)]
        doc = re.search(r'Document:\n"""\n(.*?)\n"""', req.prompt, re.S).group(1)
        return truth(doc)

    return answer


def node():
    return (
        Dataset.from_directory("unused")
        .sem_add_columns(FIELDS, depends_on="contents", name="extract")
        .node
    )


def test_good_functions_answer_every_record_without_the_model():
    records = emails(40)
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle(GOOD)) as sim:
        result = run_operator(node(), records, client(sim), strategy="code_synthesis")
        calls = sim.calls["sim"]
    assert calls == 8 + 2 * 2  # the sample's reference answers, 2 candidates per field
    assert result.extras["fallback"] == 0 and result.extras["sample"] == 8
    assert [r["sender"] for r in result.records] == [f"person{i}@enron.com" for i in range(40)]
    assert all(r["subject"] == f"Raptor update {i}" for i, r in enumerate(result.records))
    kept = result.extras["functions"]
    assert set(kept) == {"sender", "subject"}
    assert kept["sender"][0]["accuracy"] == 1.0 and "re.search" in kept["sender"][0]["source"]
    assert result.stats.usage.calls == calls and result.stats.failures == 0

    # The next batch reuses the functions: no model call at all.
    more = emails(25, start=100)
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle(GOOD)) as sim:
        again = run_operator(
            node(), more, client(sim), strategy="code_synthesis", params={"functions": kept}
        )
        assert sim.calls["sim"] == 0
    assert again.extras["reused_functions"] is True and again.extras["fallback"] == 0
    assert again.records[0]["sender"] == "person100@enron.com"


def test_a_field_the_sample_shows_absent_is_left_empty_without_asking_the_model():
    records = emails(30, subject_every=3)  # 20 emails have no Subject line
    sampled = set(sample_indices([r["record_id"] for r in records], 8))
    no_subject = {i for i in range(30) if i % 3}
    absent_in_sample = len(no_subject & sampled)
    # The model said "none" on those sampled emails and the subject function abstained: with
    # three or more such agreements, abstaining is trusted to mean "absent".
    assert absent_in_sample >= 3
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle(GOOD)) as sim:
        result = run_operator(node(), records, client(sim), strategy="code_synthesis")
        calls = sim.calls["sim"]
    assert result.extras["fallback"] == 0 and calls == 8 + 2 * 2
    subject = result.extras["functions"]["subject"][0]
    assert subject["abstained_empty"] == absent_in_sample
    # Every email without a Subject line gets the same answer, the sampled ones too: the
    # functions' "absent" (None) replaces the model's "none" there.
    assert all(result.records[i]["subject"] is None for i in no_subject)
    assert result.extras["overruled"] == absent_in_sample
    assert all(result.records[i]["subject"] == f"Raptor update {i}" for i in range(0, 30, 3))


def test_a_line_stating_the_field_empty_decides_it_without_asking_the_model():
    """``Subject:`` with nothing after it: the document says there is no subject. The function
    read off that line states it empty and the record is decided (None), although the model,
    asked about such an email, makes a subject up from the body."""
    records = emails(40)
    for r in records[::4]:
        r["contents"] = re.sub(r"^Subject:.*$", "Subject:", r["contents"], flags=re.M)
    sampled = set(sample_indices([r["record_id"] for r in records], 8))
    empty = set(range(0, 40, 4))
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle(BAD)) as sim:
        result = run_operator(node(), records, client(sim), strategy="code_synthesis")
        calls = sim.calls["sim"]
    assert empty & sampled and empty - sampled  # the sample saw such emails, and not all
    assert result.extras["fallback"] == 0 and calls == 8 + 2 * 2
    # The model made a subject up from the body on the sampled ones; the line says there is
    # none, and the functions' vote replaces its answer there too.
    assert all(result.records[i]["subject"] is None for i in empty)
    assert result.extras["overruled"] == len(empty & sampled)
    assert all(result.records[i]["subject"] == f"Raptor update {i}" for i in set(range(40)) - empty)
    subject = result.extras["functions"]["subject"][0]
    assert "^Subject:" in subject["source"]
    # Scored an answer, and a miss, where the model made a subject up.
    assert subject["answered"] == 8 and subject["right"] == 8 - len(empty & sampled)


def test_broken_and_malicious_candidates_are_dropped_and_induced_ones_kept():
    records = emails(20)
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle(BAD)) as sim:
        result = run_operator(node(), records, client(sim), strategy="code_synthesis")
    assert not os.path.exists("/tmp/pz-pwned")
    kept = [f["source"] for fs in result.extras["functions"].values() for f in fs]
    # What the model wrote is gone; what was induced from its sample answers remains.
    assert kept and not any(bad in src for src in kept for bad in ("os.", "while True", "open("))
    assert all("^From:" in f["source"] for f in result.extras["functions"]["sender"])
    assert result.extras["fallback"] == 0 and result.extras["synthesis_problems"]
    assert [r["sender"] for r in result.records] == [f"person{i}@enron.com" for i in range(20)]


def test_when_no_function_works_the_model_answers_every_record():
    records = emails(20, headers=False)  # nothing to induce from, and the model's code is bad
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle(BAD)) as sim:
        result = run_operator(node(), records, client(sim), strategy="code_synthesis")
    assert result.extras["functions"] == {"sender": [], "subject": []}
    assert result.extras["fallback"] == 20 - 8  # all but the sample
    assert [r["sender"] for r in result.records] == [f"person{i}@enron.com" for i in range(20)]


def test_scoring_and_voting_are_deterministic():
    outs = [["a", "b", None, "d"], ["a", "x", "c", None]]
    ref = ["a", "b", "c", "d"]
    first = [score("f", f"src{k}", "extract", o, ref) for k, o in enumerate(outs)]
    second = [score("f", f"src{k}", "extract", o, ref) for k, o in enumerate(outs)]
    assert first == second
    kept = select(first, min_precision=0.4)
    assert [s.source for s in kept] == ["src0", "src1"]  # accuracy 0.75 before 0.5
    assert [round(s.weight, 2) for s in kept] == [0.8, 0.6]  # (right + 1) / (answered + 2)
    assert vote(["a", "a"], kept) == ("a", True)
    # Both abstain, and neither has shown that abstaining means "absent": undecided.
    assert vote([None, None], kept) == (None, False)
    # src0 outweighs src1, but not by two thirds of the votes: undecided, the model answers.
    assert vote(["b", "x"], kept) == (None, False)
    assert vote(["b", "x", "b"], [kept[0], kept[1], kept[1]]) == ("b", True)


def test_the_model_s_fallback_answers_teach_the_functions_when_a_field_is_absent():
    # Six emails in seven have no subject: at first the model is asked about each, then the
    # function's abstaining has matched the model's "none" often enough to be trusted.
    records = emails(140, subject_every=7)
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle(GOOD)) as sim:
        result = run_operator(node(), records, client(sim), strategy="code_synthesis")
    no_subject = sum(1 for i in range(140) if i % 7)
    assert result.extras["fallback"] < no_subject / 4
    subject = result.extras["functions"]["subject"][0]
    assert subject["abstained_empty"] >= 3 and subject["abstained"] >= subject["abstained_empty"]
    assert all(result.records[i]["subject"] in (None, "none") for i in range(140) if i % 7)
    assert all(result.records[i]["subject"] == f"Raptor update {i}" for i in range(0, 140, 7))


def chosen(instance, key) -> list[dict]:
    recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=50).records
    return [r.asset_materialization.metadata for r in sorted(recs, key=lambda r: r.timestamp)]


def extraction_defs(folder, sim: OpenAISimulator, store, name: str):
    """A query extracting FIELDS from 120-email batches of ``folder`` on the priced simulator,
    where the optimizer may choose code synthesis."""
    model = OpenAICompatibleModel(
        model="sim",
        base_url=sim.base_url,
        prices={"sim": ModelPrice(input_per_mtok=1.0, output_per_mtok=2.0)},
    )
    return build_definitions(
        Dataset.from_directory(folder, batch_size=120).sem_add_columns(
            FIELDS, depends_on="contents", name="extract"
        ),
        name,
        model=model,
        store_root=str(store),
        optimizer=OptimizerResource(
            policy="MinCostAtQuality(0.7)", strategies=["direct", "code_synthesis"]
        ),
    )


@pytest.mark.parametrize("code", ["good", "bad"])
def test_the_optimizer_picks_code_synthesis_for_large_batches_while_it_works(code, tmp_path):
    folder = tmp_path / "emails"
    folder.mkdir()
    for r in emails(240, headers=code == "good"):
        (folder / f"{r['record_id']}.txt").write_text(r["contents"])
    store = tmp_path / "store"
    with OpenAISimulator(
        {"sim": SimulatedModel()}, oracle=oracle(GOOD if code == "good" else BAD)
    ) as sim:
        defs, q = extraction_defs(folder, sim, store, "evap")
        with dg.instance_for_test() as instance:
            batches = register_partitions(RecordStore(store), q, instance)
            assert len(batches) == 2
            for b in batches:
                res = defs.resolve_job_def(q.job.name).execute_in_process(
                    partition_key=b.key, instance=instance
                )
                assert res.success
            runs = chosen(instance, q.asset_key("extract"))
    strategies = [md["strategy"].value for md in runs]
    assert strategies[0] == "code_synthesis"  # 120 records pay for writing the functions
    first = runs[0]
    if code == "good":
        assert first["code/fallback"].value == 0 and "re.search" in first["code/functions"].value
        assert strategies[1] == "code_synthesis" and runs[1]["code/reused_functions"].value
        assert runs[1]["usage/model_calls"].value == 0  # the functions answered every record
    else:
        assert first["code/fallback"].value == 120 - 8  # nothing kept: the model answered the rest
        assert strategies[1] == "direct"  # observed: dearer than asking directly
    rows = RecordStore(store).read(q.asset_key("extract").path, batches[1].key).to_pylist()
    assert all(r["sender"] == truth(r["contents"])["sender"] for r in rows)


RAPTOR_CHECK = {
    "keep": 'def extract(text):\n    return "raptor" in text.lower()\n',
}


def filter_oracle(code: str):
    def answer(req):
        if req.schema is None:
            return code
        doc = re.search(r'Document:\n"""\n(.*?)\n"""', req.prompt, re.S).group(1)
        return {"answer": "YES" if "raptor" in doc.lower() else "NO"}

    return answer


def mixed(n: int) -> list[dict]:
    return [
        {
            "record_id": f"m{i}",
            "contents": f"From: p{i}@enron.com\n\n" + ("Raptor hedge" if i % 4 == 0 else "Lunch"),
            "error": None,
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("code", ["good", "bad"])
def test_a_filter_predicate_decided_by_code(code):
    records = mixed(40)
    node = Dataset.from_directory("x").sem_filter("The email mentions Raptor", name="f").node
    source = RAPTOR_CHECK["keep"] if code == "good" else BAD[1]  # an infinite loop
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=filter_oracle(source)) as sim:
        result = run_operator(node, records, client(sim), strategy="code_synthesis")
        calls = sim.calls["sim"]
    assert [r["record_id"] for r in result.records] == [f"m{i}" for i in range(0, 40, 4)]
    if code == "good":
        assert result.extras["fallback"] == 0 and calls == 8 + 2
        assert "raptor" in result.extras["functions"]["keep"][0]["source"]
    else:
        assert result.extras["functions"] == {"keep": []}
        assert result.extras["fallback"] == 40 - 8 and calls == 8 + 2 + 32


@pytest.mark.parametrize(("concurrency", "fallbacks"), [(8, 8), (1, 3)])
def test_functions_are_found_from_the_fallback_answers_when_the_sample_answers_point_nowhere(
    concurrency, fallbacks
):
    """A weak model: on the sample it answers nothing usable, so nothing is induced and what it
    writes is broken. Its answers on the first fallbacks sit on the header lines: the
    functions induced from them decide the rest of the batch, and the fallbacks stop there.
    The first round is as many records as the model answers at once; one at a time, the
    functions learn after each round (1, then 2): 3 right answers outweigh the 8 wrong ones."""
    records = emails(200)
    sampled = {
        records[i]["contents"].strip() for i in sample_indices([r["record_id"] for r in records], 8)
    }
    right = oracle(BAD)

    def weak(req):
        doc = re.search(r'Document:\n"""\n(.*?)\n"""', req.prompt, re.S)
        if req.schema is not None and doc and doc.group(1).strip() in sampled:
            return {"sender": "the sender", "subject": "an update"}
        return right(req)

    with OpenAISimulator({"sim": SimulatedModel()}, oracle=weak) as sim:
        model = client(sim, max_concurrency=concurrency)
        assert first_round(model) == concurrency
        result = run_operator(node(), records, model, strategy="code_synthesis")
        calls = sim.calls["sim"]
    # The first rounds of fallbacks, then the functions decide.
    assert result.extras["fallback"] == fallbacks
    assert calls == 8 + 2 * 2 + fallbacks
    kept = result.extras["functions"]
    assert "^From:" in kept["sender"][0]["source"] and "^Subject:" in kept["subject"][0]["source"]
    # Scored on every answer: wrong against the 8 useless sample answers, right on the rest.
    assert kept["sender"][0]["seen"] == 8 + fallbacks
    assert kept["sender"][0]["right"] == fallbacks
    off_sample = [r for r in result.records if r["contents"].strip() not in sampled]
    assert all(r["sender"] == truth(r["contents"])["sender"] for r in off_sample)
    assert all(r["subject"] == truth(r["contents"])["subject"] for r in off_sample)


def test_a_rival_reading_another_line_does_not_vote_beside_the_better_function():
    """Against a weak model's answers a To: reader can score well enough to vote; beside the
    From: reader it would only split every vote. A sloppier From: reader agrees and votes."""
    texts = [r["contents"] for r in emails(20)]
    line = 'import re\ndef extract(text):\n    m = re.search(r"^{}:\\s*(\\S+)", text, re.M)\n    return m.group(1) if m else None\n'
    sloppy = 'def extract(text):\n    return text.split("From:")[1].split()[0]\n'
    # The model named the sender on 12 emails, the recipient on the other 8.
    answers = {
        k: {"sender": f"person{k}@enron.com" if k < 12 else "team@enron.com"} for k in range(20)
    }
    with Sandbox() as box:
        pool = Pool({"sender": ("str", "the sender")}, texts, box, min_precision=0.3)
        for source in (line.format("To"), sloppy, line.format("From")):
            pool.add_scored("sender", source, "extract", answers)
        kept, outputs = pool.chosen()
    assert {f.source for f in kept["sender"]} == {line.format("From"), sloppy}
    assert pool.functions["sender"][0].weight >= 0.3  # the To: reader was good enough alone
    assert all(o == [f"person{k}@enron.com" for k in range(20)] for o in outputs["sender"])


def test_a_candidate_that_loops_is_dropped_after_a_few_timeouts_not_run_on_every_text():
    texts = [r["contents"] for r in emails(300)]
    with Sandbox() as box:
        pool = Pool({"sender": ("str", "the sender")}, texts, box, min_precision=0.3)
        pool.add_scored(
            "sender", "def extract(text):\n    while True:\n        pass\n", "extract", {}
        )
        restarts = box.restarts  # each timeout is caught in the worker, which lives on
    assert pool.functions["sender"] == [] and restarts == 0
    assert any("stalled" in p for p in pool.problems)
    with Sandbox() as box:  # dropped for good: not loaded and run again when induced again
        pool.box = box
        pool.add_scored(
            "sender", "def extract(text):\n    while True:\n        pass\n", "extract", {}
        )
    assert sum("stalled" in p for p in pool.problems) == 1


def test_a_weak_model_s_verbose_answers_still_point_at_the_right_line():
    """SmolLM2 runs on past the subject ("... (Non-Privileged) (Non-Privileged)"): the Subject:
    line never matches its answers exactly, yet agrees with them by words far more than any
    other line, so it is kept, and the line that never agrees is not."""
    subjects = [f"Raptor update {i}" for i in range(10)]
    answers = [s + " (Non-Privileged) (Non-Privileged)" for s in subjects]
    line = score("subject", "subject-line", "extract", subjects, answers)
    other = score("subject", "to-line", "extract", ["team@enron.com"] * 10, answers)
    assert line.precision == pytest.approx(2 * 0.6 / 1.6)  # word F1: precision 1, recall 3/5
    assert [f.source for f in select([other, line])] == ["subject-line"]


def test_the_view_of_a_long_document_is_the_chunks_naming_its_fields():
    body = "".join(f"Line {k} of a long body about the quarterly numbers.\n" for k in range(60))
    text = "From: a@enron.com\nSubject: Raptor\n\n" + body + "Sent from the desk.\n"
    view = field_chunks(text, ["subject"], size=200, keep=2)
    assert view.startswith("From: a@enron.com\nSubject: Raptor\n") and view.endswith("[...]\n")
    assert "Line 40" not in view and len(view) < 300
    # A field named nowhere adds no chunk; the union keeps document order.
    tail = field_chunks(text, ["sender", "desk_sent"], size=200, keep=1)
    assert tail.startswith("[...]\n") and "Sent from the desk." in tail and "Raptor" not in tail
    # When no field is named in the document, nothing says where to look: all of it.
    assert field_chunks(text, ["sender"], size=200) == text
    # A line longer than a chunk is cut at spaces, never lost.
    long_line = "word " * 100
    assert "".join(line_chunks(long_line, 120)) == long_line
    assert max(map(len, line_chunks(long_line, 120))) <= 120


def test_the_model_reads_only_the_chunks_naming_the_fields_of_a_long_email():
    filler = "".join(f"Paragraph {k}: the desk's positions and the weather.\n" for k in range(80))
    records = [
        {**r, "contents": r["contents"].replace("\nBody", "\n" + filler + "Body")}
        for r in emails(30)
    ]
    shown: list[str] = []

    def reading(req):
        if req.schema is not None:
            shown.append(re.search(r'Document:\n"""\n(.*?)\n"""', req.prompt, re.S).group(1))
        return oracle(BAD)(req)  # the model writes no usable code: functions are induced

    with OpenAISimulator({"sim": SimulatedModel()}, oracle=reading) as sim:
        result = run_operator(node(), records, client(sim), strategy="code_synthesis")
    assert len(shown) == 8 and result.extras["fallback"] == 0
    assert all(s.startswith("From: person") and "Paragraph 70" not in s for s in shown)
    assert [r["sender"] for r in result.records] == [f"person{i}@enron.com" for i in range(30)]
    assert all(r["subject"] == f"Raptor update {i}" for i, r in enumerate(result.records))
    assert all("Paragraph 70" in r["contents"] for r in result.records)  # the record is whole

    with OpenAISimulator({"sim": SimulatedModel()}, oracle=reading) as sim:
        whole = run_operator(
            node(), records, client(sim), strategy="code_synthesis", params={"chunk_chars": None}
        )
    # the code prompts show 1,000 characters either way; the answers read 4x more here
    assert whole.extras["synthesis_tokens"] > 2 * result.extras["synthesis_tokens"]


def test_a_sample_record_the_model_fails_on_is_decided_by_the_functions():
    def flaky(req):
        if req.schema is not None and "person3@" in req.prompt:
            return "Sure! The sender is person3."  # not JSON, also on the corrective retry
        return oracle(GOOD)(req)

    records = emails(12)
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=flaky) as sim:
        result = run_operator(
            node(), records, client(sim), strategy="code_synthesis", params={"sample_size": 12}
        )
    assert result.extras["recovered"] == 1 and result.stats.failures == 0
    assert not result.stats.failure_examples
    assert not any(r.get("error") for r in result.records)
    assert result.records[3]["sender"] == "person3@enron.com"
    assert result.records[3]["subject"] == "Raptor update 3"


def test_a_batch_with_no_records_asks_the_model_nothing():
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle(GOOD)) as sim:
        result = run_operator(node(), [], client(sim), strategy="code_synthesis")
        assert sim.calls["sim"] == 0  # no document to write functions from
    assert result.records == [] and result.extras["sample"] == 0


def test_code_synthesis_is_explored_and_judged_on_a_small_labelled_sample(tmp_path):
    """A map after selective filters sees a few records per batch: code synthesis is still
    tried on them, and its functions' output is judged against the labels."""
    folder = tmp_path / "emails"
    folder.mkdir()
    records = emails(3)
    for r in records:
        (folder / f"{r['record_id']}.txt").write_text(r["contents"])
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({f"{r['record_id']}.txt": truth(r["contents"]) for r in records}))
    store = tmp_path / "store"
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle(GOOD)) as sim:
        defs, q = build_definitions(
            Dataset.from_directory(folder, batch_size=10).sem_add_columns(
                FIELDS, depends_on="contents", name="extract"
            ),
            "small",
            model=OpenAICompatibleModel(model="sim", base_url=sim.base_url),
            store_root=str(store),
            optimizer=OptimizerResource(
                strategies=["direct", "code_synthesis"], labels_path=str(labels)
            ),
        )
        with dg.instance_for_test() as instance:
            (batch,) = register_partitions(RecordStore(store), q, instance)
            res = defs.resolve_job_def(q.job.name).execute_in_process(
                partition_key=batch.key, instance=instance
            )
            assert res.success
            (md,) = chosen(instance, q.asset_key("extract"))
    record = HistoryRecord.from_metadata(md)
    runs = {r.config.strategy: r for r in record.sample_runs or []}
    assert "code_synthesis" in runs, runs
    assert runs["code_synthesis"].quality_source == "labels"
