"""Long documents: a semantic map reads every part of a document past its model's context
(split and gather), answers carry evidence checked against the document, and a filter's YES on
one part of a long document must point to its reason."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pz_dagster import Dataset
from pz_dagster.models.openai_compat import OpenAICompatibleClient
from pz_dagster.operators import filter as filter_ops
from pz_dagster.operators import gather
from pz_dagster.operators.map import chunk_select_map, direct_map
from pz_dagster.orchestration import OpenAICompatibleModel
from pz_dagster.query import plan
from pz_dagster.testing import OpenAISimulator, SimulatedModel
from pz_dagster.testing.simulator import ChatRequest, placeholder
from tests.operators_common import materialize

DOCUMENT = re.compile(r'Document:\n"""\n(.*?)\n"""', re.S)
ANSWER = "QX-5521-B"
SENTENCE = f"The inspection certificate number is {ANSWER}."
FIELDS = [
    {"name": "certificate_number", "type": "str", "desc": "the inspection certificate number"}
]
FILLER = (
    "The maintenance crew reviewed the pumps, valves and the cooling circuit of hall {p}, "
    "and wrote down the readings of every gauge on the floor in the logbook. "
)


def long_text(pages: int = 12, answer_page: int | None = None, sentence: str = SENTENCE) -> str:
    """``pages`` pages of about 1,600 characters; ``sentence`` only on ``answer_page`` (the
    last by default)."""
    answer_page = answer_page or pages
    out = []
    for p in range(1, pages + 1):
        body = (FILLER.format(p=p) * 10).strip()
        if p == answer_page:
            body += " " + sentence
        out.append(f"Page {p}\n{body}\n")
    return "\n".join(out)


def long_pdf(path: Path, pages: int = 10, sentence: str = SENTENCE) -> Path:
    """``long_text`` as a PDF of ``pages`` pages, ``sentence`` on the last."""
    from pz_dagster.testing.documents import write_pdf

    text = long_text(pages=pages, sentence=sentence)
    return write_pdf(path, "\n\f\n".join(re.split(r"\n(?=Page \d+\n)", text)))


def shown(req: ChatRequest) -> str:
    """The document part of the prompt, with runs of whitespace as one space (a PDF's lines
    wrap a sentence anywhere)."""
    m = DOCUMENT.search(req.prompt)
    return " ".join(m.group(1).split()) if m else ""


def chunk_oracle(values: dict[str, tuple[str, str]]):
    """Answers a field with its value (and quote) only when the quote is in the prompt's
    document part: an honest model with a short context. ``values``: field -> (value, quote)."""

    def oracle(req: ChatRequest):
        props = (req.schema or {}).get("properties", {})
        if set(props) == {"choice"}:
            return {"choice": 1}
        text = shown(req)
        out = placeholder(req.schema)
        for name, (value, quote) in values.items():
            if name in props and quote in text:
                out[name] = value
                if f"{name}_evidence" in props:
                    out[f"{name}_evidence"] = quote
        return out

    return oracle


def small_context_model(sim: OpenAISimulator, context_tokens: int = 900) -> OpenAICompatibleClient:
    return OpenAICompatibleClient("sim", base_url=sim.base_url, context_tokens=context_tokens)


def node(evidence: bool = True) -> plan.SemanticMap:
    ds = Dataset.from_directory("/d").sem_map(FIELDS, evidence=evidence)
    assert isinstance(ds.node, plan.SemanticMap)
    return ds.node


def record(text: str, rid: str = "report.txt") -> dict:
    return {"record_id": rid, "filename": rid, "contents": text, "error": None}


def test_a_field_only_on_the_last_page_is_read_and_located():
    text = long_text()
    oracle = chunk_oracle({"certificate_number": (ANSWER, SENTENCE)})
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle) as sim:
        model = small_context_model(sim)
        gathered = direct_map(node(), [record(text)], model)
        first = direct_map(node(), [record(text)], model, reading=gather.Reading("first"))
    (row,) = gathered.records
    assert row["certificate_number"] == ANSWER
    where = json.loads(row["certificate_number_evidence_at"])
    start, end = where["chars"]
    assert text[start:end] == SENTENCE and where["match"] == "exact" and where["names_value"]
    assert gathered.stats.chunked == 1 and gathered.stats.truncated == 0
    assert gathered.stats.chunks_total == gathered.stats.chunks_read > 3
    assert gathered.stats.grounded == {"certificate_number": 1}
    # the old way: only the first part is read; the answer is missing and the record says cut
    assert first.records[0]["certificate_number"] != ANSWER
    assert first.stats.truncated == 1 and first.stats.truncated_ids == ["report.txt"]


def test_chunk_selection_reads_only_the_parts_that_name_the_field():
    text = long_text(pages=20, answer_page=14)
    oracle = chunk_oracle({"certificate_number": (ANSWER, SENTENCE)})
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle) as sim:
        model = small_context_model(sim)
        selected = chunk_select_map(node(), [record(text)], model)
        everything = direct_map(node(), [record(text)], model)
    assert selected.records[0]["certificate_number"] == ANSWER
    s, e = selected.stats, everything.stats
    assert s.chunks_read < s.chunks_total and e.chunks_read == e.chunks_total
    assert s.usage.input_tokens < e.usage.input_tokens / 2
    assert selected.strategy == "chunk_select" and selected.extras["reading"].startswith("select")


def test_parts_that_disagree_are_settled_by_the_model_among_their_answers():
    old = "The previous inspection certificate number was AB-1000."
    text = long_text(pages=10, answer_page=2, sentence=old)
    text = text.replace("Page 9\n", f"Page 9\n{SENTENCE} ")
    calls = []

    def oracle(req: ChatRequest):
        props = (req.schema or {}).get("properties", {})
        if set(props) == {"choice"}:
            calls.append(req.prompt)
            return {"choice": 1 if req.prompt.index(ANSWER) < req.prompt.index("AB-1000") else 2}
        part = shown(req)
        out = placeholder(req.schema)
        for value, quote in (("AB-1000", old), (ANSWER, SENTENCE)):
            if quote in part:
                out |= {"certificate_number": value, "certificate_number_evidence": quote}
        return out

    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle) as sim:
        result = direct_map(node(), [record(text)], small_context_model(sim))
    assert len(calls) == 1 and "AB-1000" in calls[0] and ANSWER in calls[0]
    assert result.records[0]["certificate_number"] == ANSWER
    assert result.stats.model_merges == 1


def test_a_grounded_answer_outvotes_made_up_ones():
    text = long_text(pages=8)

    def oracle(req: ChatRequest):
        part = shown(req)
        if SENTENCE in part:
            return {"certificate_number": ANSWER, "certificate_number_evidence": SENTENCE}
        return {"certificate_number": "ZZ-0000", "certificate_number_evidence": "Cert ZZ-0000."}

    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle) as sim:
        result = direct_map(node(), [record(text)], small_context_model(sim))
    assert result.records[0]["certificate_number"] == ANSWER
    assert result.stats.model_merges == 0


def test_pages_of_the_evidence_come_from_the_provenance():
    text = long_text(pages=3)
    starts = [m.start() for m in re.finditer(r"^Page \d+$", text, re.M)]
    provenance = json.dumps(
        {
            "file": "report.pdf",
            "unit": "document",
            "pages": [1, 3],
            "page_starts": starts,
            "chars": [0, len(text)],
            "parent": None,
        }
    )
    oracle = chunk_oracle({"certificate_number": (ANSWER, SENTENCE)})
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle) as sim:
        result = direct_map(
            node(), [record(text) | {"provenance": provenance}], small_context_model(sim, 128_000)
        )
    where = json.loads(result.records[0]["certificate_number_evidence_at"])
    assert where["pages"] == [3, 3] and where["file"] == "report.pdf"


def write_long_folder(folder: Path) -> None:
    folder.mkdir()
    long_pdf(folder / "plant-report.pdf", pages=12)
    (folder / "short-note.txt").write_text(f"Note\n{SENTENCE}\n")
    (folder / "made-up.txt").write_text(long_text(pages=2, sentence="Nothing was certified."))


def dagster_oracle(req: ChatRequest):
    props = (req.schema or {}).get("properties", {})
    part = shown(req)
    if SENTENCE in part:
        return {"certificate_number": ANSWER, "certificate_number_evidence": SENTENCE}
    if "Nothing was certified." in part:  # a made-up answer, with a quote the text lacks
        return {"certificate_number": "ZZ-0000", "certificate_number_evidence": "Cert ZZ-0000."}
    return placeholder({"type": "object", "properties": props})


@pytest.fixture
def long_run(tmp_path):
    """The folder of ``write_long_folder`` through Dagster (one partition) on the simulator:
    the map's metadata, its records and its asset checks' evaluations."""
    import dagster as dg

    from pz_dagster.orchestration import RecordStore, build_definitions
    from pz_dagster.orchestration.batches import register_partitions

    folder = tmp_path / "reports"
    write_long_folder(folder)
    ds = Dataset.from_directory(folder, batch_size=10).sem_map(
        FIELDS, evidence=True, name="certificates"
    )
    store = tmp_path / "store"
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=dagster_oracle) as sim:
        model = OpenAICompatibleModel(model="sim", base_url=sim.base_url, context_tokens=900)
        defs, q = build_definitions(ds, "long", model=model, store_root=str(store))
        with dg.instance_for_test() as instance:
            key = register_partitions(RecordStore(store), q, instance)[0].key
            result = defs.resolve_job_def(q.job.name).execute_in_process(
                partition_key=key, instance=instance, raise_on_error=False
            )
            mat = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=q.asset_key("certificates")), limit=1
            ).records[0]
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.asset_key == q.asset_key("certificates")
    }
    md = {k: v.value for k, v in mat.asset_materialization.metadata.items()}
    rows = RecordStore(store).read(q.output_key.path, key).to_pylist()
    return md, rows, checks


def test_through_dagster_the_last_page_answer_is_extracted_and_located(long_run):
    md, rows, _ = long_run
    by_id = {r["record_id"]: r for r in rows}
    report = by_id["plant-report.pdf"]
    assert report["certificate_number"] == ANSWER
    where = json.loads(report["certificate_number_evidence_at"])
    assert where["pages"] == [12, 12] and where["file"] == "plant-report.pdf"
    start, end = where["chars"]
    assert " ".join(report["contents"][start:end].split()) == SENTENCE
    assert by_id["short-note.txt"]["certificate_number"] == ANSWER
    assert by_id["made-up.txt"]["certificate_number_evidence_at"] is None
    assert md["records/chunked"] >= 1 and md["records/truncated"] == 0
    assert md["quality/ungrounded/certificate_number"] == 1
    assert md["reading"].startswith("all")


def test_ungrounded_evidence_fails_the_grounding_check(long_run):
    check = long_run[2]["evidence_grounded"]
    assert not check.passed
    meta = {k: v.value for k, v in check.metadata.items()}
    assert meta["ungrounded"] == 1 and meta["answers_with_evidence"] == 3
    assert meta["ungrounded/certificate_number"] == 1


def test_a_long_documents_yes_counts_only_with_a_quote_the_document_holds():
    text = long_text(pages=8)
    predicate = "The document gives an inspection certificate number."

    def oracle(req: ChatRequest):
        props = (req.schema or {}).get("properties", {})
        if "quote" in props:  # the confirmation: only the real part can quote its reason
            part = shown(req)
            quote = SENTENCE if SENTENCE in part else "A certificate was issued."
            return {"quote": quote, "answer": "YES"}
        return {"answer": "YES"}  # a weak model: every part says yes

    f = Dataset.from_directory("/d").sem_filter(predicate).node
    assert isinstance(f, plan.SemanticFilter)
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle) as sim:
        model = small_context_model(sim)
        kept = filter_ops.direct_filter(f, [record(text)], model)
        dropped = filter_ops.direct_filter(
            f, [record(long_text(pages=8, sentence="No certificate."))], model
        )
    assert [r["record_id"] for r in kept.records] == ["report.txt"]
    assert dropped.records == []


def test_evidence_must_name_fields_of_the_map():
    from pz_dagster.errors import PlanError

    with pytest.raises(PlanError, match="not its fields"):
        Dataset.from_directory("/d").sem_map(FIELDS, evidence=["sender"])
    assert node().adds == (
        "certificate_number",
        "certificate_number_evidence",
        "certificate_number_evidence_at",
    )


def certified(i: int) -> dict:
    """A long plant report whose certificate is stated only on its last page, in words that
    do not name the field (so code synthesis's chunk view cannot narrow the document)."""
    sentence = f"Inspector's note: permit QX-{1000 + i} was issued."
    return record(long_text(pages=8, sentence=sentence), rid=f"plant-{i}.txt")


CERT_CODE = (
    "import re\ndef extract(text):\n"
    '    m = re.search(r"permit (QX-\\d+) was issued", text)\n'
    "    return m.group(1) if m else None\n"
)


def test_code_synthesis_answers_its_sample_by_split_and_gather_and_finds_deep_fields():
    from pz_dagster.operators import run_operator

    parts: list[str] = []

    def oracle(req: ChatRequest):
        if req.schema is None:  # a code prompt
            return CERT_CODE
        part = shown(req)
        if "one part of a longer document" in req.prompt:
            parts.append(part)
        m = re.search(r"(Inspector's note: permit (QX-\d+) was issued\.)", part)
        out = placeholder(req.schema)
        if m:
            out |= {"certificate_number": m.group(2)}
        return out

    records = [certified(i) for i in range(12)]
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle) as sim:
        result = run_operator(
            node(evidence=False), records, small_context_model(sim), strategy="code_synthesis"
        )
    assert parts  # the sample's answers read the documents part by part
    assert [r["certificate_number"] for r in result.records] == [
        f"QX-{1000 + i}" for i in range(12)
    ]
    assert result.extras["fallback"] == 0


def test_evidence_in_yaml_and_functions_quote_the_line_they_read():
    from pz_dagster.operators.code_synthesis.map import function_evidence
    from pz_dagster.query.spec import QuerySpec, dataset_from_spec

    spec = QuerySpec.model_validate(
        {
            "name": "q",
            "source": {"path": "/d"},
            "operators": [{"type": "sem_map", "fields": FIELDS, "evidence": True}],
        }
    )
    m = dataset_from_spec(spec).node
    assert isinstance(m, plan.SemanticMap) and m.evidence == ("certificate_number",)
    rec = certified(3)
    got = function_evidence(m, rec, {"certificate_number": "QX-1003"})
    assert got["certificate_number_evidence"].endswith("permit QX-1003 was issued.")
    where = json.loads(got["certificate_number_evidence_at"])
    start, end = where["chars"]
    assert rec["contents"][start:end] == got["certificate_number_evidence"]


@pytest.mark.slow
def test_the_bundled_model_extracts_a_last_page_answer_through_dagster(tmp_path):
    """SmolLM2 (2,048-token context) on a PDF report of 10 pages whose certificate number is
    stated only on the last: read part by part, every part read. The answer is the document's,
    grounded and located on page 10, or it is flagged ungrounded: never a made-up value passed
    off as the document's. (Which of the two depends on the machine: SmolLM2-135M's greedy answer
    on the last part differs between CPUs, e.g. with and without AMX.)"""
    from pz_dagster.orchestration import LocalLlamaModel

    folder = tmp_path / "reports"
    folder.mkdir()
    long_pdf(folder / "plant-report.pdf", pages=10)
    ds = Dataset.from_directory(folder).sem_map(
        FIELDS, evidence=True, depends_on="contents", name="certificates"
    )
    md, rows = materialize(ds, "long_local", LocalLlamaModel(n_ctx=2048), tmp_path)
    (row,) = rows
    meta = md["certificates"]
    assert meta["records/chunked"] == 1 and meta["records/chunks"] >= 3
    assert meta["records/chunks_read"] == meta["records/chunks"]
    assert meta["records/truncated"] == 0
    if row["certificate_number"] == ANSWER:
        where = json.loads(row["certificate_number_evidence_at"])
        assert where["match"] in ("exact", "normalized") and where["names_value"]
        assert where["pages"] == [10, 10]
    else:
        assert row["certificate_number_evidence_at"] is None
        assert meta["quality/ungrounded/certificate_number"] == 1


def test_the_optimizer_reads_long_documents_by_chunk_selection_once_history_shows_it_holds(
    tmp_path,
):
    import dagster as dg

    from pz_dagster.orchestration import (
        ModelPrice,
        OptimizerResource,
        RecordStore,
        build_definitions,
    )
    from pz_dagster.orchestration.batches import register_partitions

    folder = tmp_path / "reports"
    folder.mkdir()
    labels = {}
    for i in range(12):
        sentence = f"The inspection certificate number is QX-{2000 + i}."
        (folder / f"plant-{i:02}.txt").write_text(
            long_text(pages=12, answer_page=3 + i % 9, sentence=sentence)
        )
        labels[f"plant-{i:02}.txt"] = {"certificate_number": f"QX-{2000 + i}"}
    (tmp_path / "labels.json").write_text(json.dumps(labels))

    def oracle(req: ChatRequest):
        m = re.search(r"The inspection certificate number is (QX-\d+)\.", shown(req))
        out = placeholder(req.schema)
        if m:
            out |= {"certificate_number": m.group(1), "certificate_number_evidence": m.group(0)}
        return out

    ds = Dataset.from_directory(folder, batch_size=6).sem_map(
        FIELDS, evidence=True, depends_on="contents", name="certificates"
    )
    store = tmp_path / "store"
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=oracle) as sim:
        model = OpenAICompatibleModel(
            model="sim",
            base_url=sim.base_url,
            context_tokens=4000,  # two parts of ~10,000 characters per report
            prices={"sim": ModelPrice(input_per_mtok=1.0, output_per_mtok=2.0)},
        )
        optimizer = OptimizerResource(
            policy="MinCostAtQuality(0.8)",
            strategies=["direct", "chunk_select"],
            sample_size=3,
            labels_path=str(tmp_path / "labels.json"),
        )
        defs, q = build_definitions(
            ds, "certs", model=model, store_root=str(store), optimizer=optimizer
        )
        with dg.instance_for_test() as instance:
            batches = register_partitions(RecordStore(store), q, instance)
            for b in batches:
                job = defs.resolve_job_def(q.job.name)
                assert job.execute_in_process(partition_key=b.key, instance=instance).success
            recs = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=q.asset_key("certificates")), limit=10
            ).records
    runs = [r.asset_materialization.metadata for r in sorted(recs, key=lambda r: r.timestamp)]
    assert len(runs) == 2
    assert runs[-1]["strategy"].value == "chunk_select"
    assert runs[-1]["records/chunks_read"].value < runs[-1]["records/chunks"].value
    assert "chunk_select" in runs[-1]["decision"].value
    rows = RecordStore(store).read(q.asset_key("certificates").path, batches[-1].key).to_pylist()
    assert all(
        r["certificate_number"] == labels[r["record_id"]]["certificate_number"] for r in rows
    )


def test_a_part_whose_answer_stays_invalid_abstains_and_the_record_fails_only_when_all_do():
    text = long_text(pages=8)
    base = chunk_oracle({"certificate_number": (ANSWER, SENTENCE)})

    def flaky(req: ChatRequest):
        if "Page 1 " in shown(req):
            return "Sure! The certificate is somewhere."  # not the object asked for, twice
        return base(req)

    with OpenAISimulator({"sim": SimulatedModel()}, oracle=flaky) as sim:
        model = small_context_model(sim)
        result = direct_map(node(), [record(text)], model)
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=lambda req: "no") as sim:
        broken = direct_map(node(), [record(text)], small_context_model(sim))
    assert result.records[0]["certificate_number"] == ANSWER and not result.records[0]["error"]
    assert result.stats.chunks_abstained >= 1 and result.stats.failures == 0
    assert broken.stats.failures == 1
    assert "every part of the document failed" in broken.records[0]["error"]
    assert broken.records[0]["certificate_number"] is None
