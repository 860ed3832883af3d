"""The long-document corpus (labels at controlled depths, distractors, the files and labels it
writes) and the chunk-aware oracle that answers the simulator from it."""

from __future__ import annotations

import json
import re
import sys
import textwrap
import types
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import Field, create_model

from optimizer.quality import ValidationSet
from pz_dagster.models.openai_compat import OpenAICompatibleClient
from pz_dagster.operators.prompts import Question, document_prompt, field_chunks, split_to_context
from pz_dagster.sources import read_file, scan_folder
from pz_dagster.testing import ChatRequest, OpenAISimulator, SimulatedModel
from pz_dagster.testing.long_documents import (
    DOMAINS,
    FIELDS,
    LongDocument,
    corpus_stats,
    generate,
    main,
    problems,
    words,
    write_corpus,
    write_domains,
)
from pz_dagster.testing.oracles import ChunkOracle
from pz_dagster.testing.simulator import placeholder


@pytest.fixture(scope="module")
def docs() -> list[LongDocument]:
    return generate(30, 0)


NULLABLE = {"anyOf": [{"type": "string"}, {"type": "null"}]}


def schema_of(doc: LongDocument, evidence: bool = True, prop: Any = NULLABLE) -> dict[str, Any]:
    props = {f["name"]: dict(prop) for f in FIELDS[doc.domain]}
    if evidence:
        props |= {f["name"] + "_evidence": {"type": ["string", "null"]} for f in FIELDS[doc.domain]}
    return {"type": "object", "properties": props, "required": list(props)}


def ask(oracle: ChunkOracle, shown: str, schema: dict[str, Any]) -> Any:
    prompt = document_prompt(shown, "From the document above, extract these fields.")
    return oracle(ChatRequest("sim", prompt, schema, 200))


# --- the corpus ----------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_documents_and_a_longer_run_extends_a_shorter_one():
    a, b = generate(6, seed=3), generate(6, seed=3)
    assert [d.text for d in a] == [d.text for d in b] and a == b
    assert [d.text for d in generate(6, seed=4)] != [d.text for d in a]
    assert generate(3, seed=3) == a[:3]
    assert [d.doc_id for d in a] == [f"{d}-000" for d in DOMAINS] + ["lease-001"]


def test_each_domain_declares_three_described_string_fields(docs):
    assert len(DOMAINS) == 5 and set(FIELDS) == set(DOMAINS)
    for domain, fields in FIELDS.items():
        assert len(fields) == 3
        assert all(set(f) == {"name", "type", "desc"} and f["type"] == "str" for f in fields)
        assert all(len(f["desc"]) > 30 for f in fields), domain
    for doc in docs:
        assert set(doc.labels) == {f["name"] for f in FIELDS[doc.domain]}


def test_documents_are_long_paged_and_structured(docs):
    for doc in docs:
        pages = doc.page_texts()
        assert 8 <= doc.pages <= 40 and len(pages) == doc.pages, doc.doc_id
        assert all(2_400 <= len(p.strip()) <= 3_800 for p in pages), [len(p) for p in pages]
        lines = doc.text.split("\n")  # not splitlines(): it breaks lines at "\f" too
        assert "\f" in lines and lines.count("\f") == doc.pages - 1
        assert lines[0].startswith("# ") and sum(x.startswith("# ") for x in lines) > doc.pages
        assert any(x.startswith("- ") for x in lines), doc.doc_id
        assert any(re.fullmatch(r"\| .+ \| .+ \|", x) for x in lines), doc.doc_id
        assert not problems(doc)
    # chunks are not copies of each other: paragraphs repeat rarely
    paragraphs = [p for d in docs for p in d.text.split("\n\n") if len(p) > 200]
    assert len(set(paragraphs)) > 0.99 * len(paragraphs)


def test_each_answer_is_verbatim_once_in_its_sentence_on_its_page(docs):
    for doc in docs:
        pages = doc.page_texts()
        for name, value in doc.labels.items():
            evidence, page = doc.evidence[name], doc.answer_pages[name]
            assert value in evidence and evidence in pages[page - 1], (doc.doc_id, name)
            assert doc.text.count(evidence) == 1
            assert words(doc.text).count(words(value)) == 1, (doc.doc_id, name, value)
            assert [i + 1 for i, p in enumerate(pages) if words(value) in words(p)] == [page]


def test_one_field_of_every_document_is_only_on_its_last_page(docs):
    for doc in docs:
        last = [k for k, p in doc.answer_pages.items() if p == doc.pages]
        assert last, doc.doc_id
        before = words("\f".join(doc.page_texts()[:-1]))
        assert all(words(doc.labels[k]) not in before for k in last)


def test_most_answers_lie_past_the_first_4000_characters_and_some_on_the_first_page(docs):
    stats = corpus_stats(docs)
    assert stats["docs"] == 30 and stats["answers"] == 90
    assert stats["past_4000_chars"] >= 0.75, stats
    assert 0.1 <= stats["on_first_page"] < 0.25 and stats["on_last_page"] >= 0.33
    for doc in docs:
        assert sum(doc.offset(k) >= 4_000 for k in doc.labels) >= 2, doc.doc_id


def test_every_field_has_a_distractor_elsewhere_that_naive_merging_can_fall_for(docs):
    kinds, before = set(), 0
    for doc in docs:
        pages = doc.page_texts()
        for name, value in doc.labels.items():
            (d,) = doc.distractors[name]
            kinds.add(d["kind"])
            assert words(d["value"]) not in words(doc.evidence[name]) + words(value)
            assert d["sentence"] in pages[d["page"] - 1] and d["page"] != doc.answer_pages[name]
            assert words(doc.text).count(words(d["value"])) == 1
            before += d["page"] < doc.answer_pages[name]
    assert kinds == {"superseded", "other_entity", "near_miss"}
    assert before >= 30  # first-non-null merging picks the distractor in these


def test_write_corpus_writes_files_and_labels_keyed_by_file_name(tmp_path, docs):
    summary = write_corpus(tmp_path, docs[:10], formats=("md", "txt"))
    folder = tmp_path / "documents"
    refs = [r.path for r in scan_folder(folder)]
    assert refs == sorted(f"{d.doc_id}.{x}" for d in docs[:10] for x in ("md", "txt"))
    labels = ValidationSet.from_json(tmp_path / "labels.json")
    assert sorted(labels.expected) == refs and summary["files"] == 20
    assert labels.expected["manual-001.txt"] == docs[7].labels
    (rec,) = read_file(folder, "minutes-000.md")
    assert not rec["error"] and words(rec["contents"]) == words(docs[4].text)
    corpus = json.loads((tmp_path / "corpus.json").read_text())
    entry = corpus["documents"]["lease-001"]
    assert entry["files"] == ["lease-001.md", "lease-001.txt"]
    assert entry["answer_pages"] == docs[5].answer_pages and entry["pages"] == docs[5].pages
    assert entry["evidence"] == docs[5].evidence and corpus["fields"]["lease"] == FIELDS["lease"]
    assert entry["distractors"] == docs[5].distractors


def test_write_corpus_of_one_domain_and_one_folder_per_domain(tmp_path, docs):
    write_corpus(tmp_path / "one", docs, domain="protocol")
    assert sorted(json.loads((tmp_path / "one" / "labels.json").read_text())) == [
        f"protocol-{i:03d}.md" for i in range(6)
    ]
    out = write_domains(tmp_path / "all", docs[:10])
    assert sorted(out) == sorted(DOMAINS)
    for domain in DOMAINS:
        names = [r.path for r in scan_folder(tmp_path / "all" / domain / "documents")]
        assert names == [f"{domain}-000.md", f"{domain}-001.md"]


def test_the_command_line_writes_the_corpus(tmp_path, capsys):
    main(["--out", str(tmp_path), "--docs", "5", "--seed", "1", "--formats", "md,txt"])
    assert json.loads(capsys.readouterr().out)["stats"]["docs"] == 5
    labels = json.loads((tmp_path / "report" / "labels.json").read_text())
    assert sorted(labels) == ["report-000.md", "report-000.txt"]
    assert labels["report-000.md"] == generate(5, 1)[1].labels


def test_pdf_docx_and_html_go_through_the_document_writer(tmp_path, docs, monkeypatch):
    calls = []

    def render(text, folder, stem, formats=("pdf", "docx", "html")):
        calls.append((text, formats))
        out = {}
        for fmt in formats:
            out[fmt] = Path(folder) / f"{stem}.{fmt}"
            out[fmt].write_text(text)
        return out

    fake = types.ModuleType("pz_dagster.testing.documents")
    fake.render = render  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pz_dagster.testing.documents", fake)
    write_corpus(tmp_path, docs[:2], formats=["md", "pdf", "html"])
    assert calls == [(docs[0].text, ("pdf", "html")), (docs[1].text, ("pdf", "html"))]
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert sorted(labels) == sorted(
        f"{d.doc_id}.{x}" for d in docs[:2] for x in ("md", "pdf", "html")
    )


def test_rendered_formats_without_the_writer_say_what_is_missing(tmp_path, docs, monkeypatch):
    monkeypatch.setitem(sys.modules, "pz_dagster.testing.documents", None)
    with pytest.raises(RuntimeError, match="documents.render"):
        write_corpus(tmp_path, docs[:1], formats=("md", "docx"))
    assert not list((tmp_path / "documents").glob("*"))  # nothing written half-way
    with pytest.raises(SystemExit, match="error: .*documents.render"):
        main(["--out", str(tmp_path), "--docs", "1", "--formats", "md,pdf"])
    with pytest.raises(ValueError, match="unknown formats"):
        write_corpus(tmp_path, docs[:1], formats=("odt",))


# --- the oracle ----------------------------------------------------------------------------


def test_the_oracle_answers_a_field_only_from_the_page_that_holds_it(docs):
    oracle = ChunkOracle(docs)
    for doc in docs[:10]:
        for style in (NULLABLE, {"type": ["string", "null"]}):
            schema = schema_of(doc, prop=style)
            for i, page in enumerate(doc.page_texts(), 1):
                answer = ask(oracle, page, schema)
                for name, value in doc.labels.items():
                    here = doc.answer_pages[name] == i
                    assert answer[name] == (value if here else None), (doc.doc_id, i, name)
                    assert answer[name + "_evidence"] == (doc.evidence[name] if here else None)


def test_on_context_sized_chunks_each_value_comes_from_the_chunks_that_show_it(docs):
    oracle = ChunkOracle(docs)
    model = SimpleNamespace(context_tokens=1_400)  # ~4,000 characters a chunk
    for doc in docs[:10]:
        chunks = split_to_context(doc.text, model, 200)  # type: ignore[arg-type]
        assert len(chunks) > 5
        found: dict[str, set[Any]] = {k: set() for k in doc.labels}
        for chunk in chunks:
            answer = ask(oracle, chunk, schema_of(doc))
            for name, value in doc.labels.items():
                shown = words(value) in words(chunk)
                assert answer[name] == (value if shown else None), (doc.doc_id, name)
                found[name].add(answer[name])
        assert all(v - {None} == {doc.labels[k]} for k, v in found.items())
        # the first chunk alone (what a map reads today) misses the answers past it
        first = ask(oracle, chunks[0], schema_of(doc))
        assert [k for k in doc.labels if first[k] is None] == [
            k for k in doc.labels if doc.offset(k) >= len(chunks[0])
        ]


def test_the_oracle_places_reflowed_text_and_parts_joined_by_an_omission(docs):
    oracle = ChunkOracle(docs)
    doc = docs[2]
    name = next(k for k in doc.labels if doc.answer_pages[k] < doc.pages)  # not the last page
    page = doc.page_texts()[doc.answer_pages[name] - 1]
    plain = re.sub(r"^(# |- |\| )", "", page, flags=re.M).replace(" | ", "  ")
    reflowed = "\n".join(textwrap.wrap(" ".join(plain.split()), 57))
    assert ask(oracle, reflowed, schema_of(doc))[name] == doc.labels[name]
    view = field_chunks(doc.text, ["the", *doc.labels])
    assert "[...]" in view
    answer = ask(oracle, view, schema_of(doc))
    for k, value in doc.labels.items():
        assert answer[k] == (value if words(doc.evidence[k]) in words(view) else None)
    # the value shown without the rest of its sentence is still read
    cut = doc.text[: doc.text.index(doc.labels[name]) + len(doc.labels[name])][-3_000:]
    assert ask(oracle, cut, schema_of(doc))[name] == doc.labels[name]


def test_without_null_in_the_schema_a_missing_field_gets_the_placeholder(docs):
    oracle = ChunkOracle(docs)
    doc = docs[0]
    page = doc.page_texts()[doc.answer_pages["notice_period_days"] - 1]
    answer = ask(oracle, page, schema_of(doc, evidence=False, prop={"type": "string"}))
    assert answer["notice_period_days"] == doc.labels["notice_period_days"]
    others = [
        k for k in doc.labels if doc.answer_pages[k] != doc.answer_pages["notice_period_days"]
    ]
    assert all(answer[k] == "unknown" for k in others)
    number = {"type": "object", "properties": {"notice_period_days": {"type": "integer"}}}
    assert ask(oracle, page, number) == {
        "notice_period_days": int(doc.labels["notice_period_days"])
    }


def test_hallucinated_answers_are_wrong_ungrounded_and_reproducible(docs):
    oracle, again = ChunkOracle(docs, hallucination=1.0), ChunkOracle(docs, hallucination=1.0)
    other_seed = ChunkOracle(docs, hallucination=1.0, seed=1)
    changed = made_up = 0
    for doc in docs[:10]:
        for i, page in enumerate(doc.page_texts(), 1):
            answer = ask(oracle, page, schema_of(doc))
            assert answer == ask(again, page, schema_of(doc))
            changed += answer != ask(other_seed, page, schema_of(doc))
            for name, value in doc.labels.items():
                if doc.answer_pages[name] == i:
                    continue
                made_up += 1
                assert answer[name] and words(answer[name]) != words(value)
                assert words(answer[name + "_evidence"]) not in words(doc.text)
    assert made_up > 300 and changed > 0
    half, n = ChunkOracle(docs, hallucination=0.5), 0
    for doc in docs[:10]:
        for i, page in enumerate(doc.page_texts(), 1):
            answer = ask(half, page, schema_of(doc))
            n += sum(answer[k] is not None for k in doc.labels if doc.answer_pages[k] != i)
    assert 0.4 < n / made_up < 0.6


def test_a_confused_oracle_gives_the_distractor_with_its_real_sentence(docs):
    oracle, calm_oracle = ChunkOracle(docs, confusion=1.0), ChunkOracle(docs)
    for doc in docs[:10]:
        for name in doc.labels:
            (d,) = doc.distractors[name]
            page = doc.page_texts()[d["page"] - 1]
            answer = ask(oracle, page, schema_of(doc))
            assert answer[name] == d["value"] and answer[name + "_evidence"] == d["sentence"]
            assert d["sentence"] in doc.text
            calm = ask(calm_oracle, page, schema_of(doc))
            assert calm[name] in (None, doc.labels[name])


def test_filters_and_requests_the_oracle_cannot_place(docs):
    oracle = ChunkOracle(docs)
    doc = docs[1]
    yes_no = {"type": "object", "properties": {"answer": {"enum": ["YES", "NO"]}}}
    with_answer = {doc.answer_pages[k] for k in doc.labels}
    for i, page in enumerate(doc.page_texts(), 1):
        assert ask(oracle, page, yes_no) == {"answer": "YES" if i in with_answer else "NO"}
    schema = schema_of(doc)
    assert ask(oracle, "Lorem ipsum dolor sit amet, " * 40, schema) == placeholder(schema)
    plain = oracle(ChatRequest("sim", [{"role": "user", "content": "hello"}], schema, 10))
    assert plain == placeholder(schema)


def test_a_merge_request_gets_the_labelled_value_among_its_candidates(docs):
    oracle = ChunkOracle(docs)
    doc = docs[0]
    schema = schema_of(doc)
    candidates = {k: [doc.distractors[k][0]["value"], v] for k, v in doc.labels.items()}
    prompt = f"Record {doc.doc_id}.pdf. Choose the right value of each field among: " + json.dumps(
        candidates
    )
    answer = oracle(ChatRequest("sim", [{"role": "user", "content": prompt}], schema, 100))
    assert {k: answer[k] for k in doc.labels} == doc.labels
    wrong = {k: [doc.distractors[k][0]["value"]] for k in doc.labels}
    quoted = f"Candidates: {json.dumps(wrong)}. Evidence: {doc.distractors['tenant_name'][0]['sentence']}"
    answer = oracle(ChatRequest("sim", [{"role": "user", "content": quoted}], schema, 100))
    assert all(answer[k] is None for k in doc.labels)


def test_the_oracle_takes_plain_dicts(docs):
    doc = docs[3]
    oracle = ChunkOracle(
        {doc.doc_id: {"text": doc.text, "labels": doc.labels, "evidence": doc.evidence}}
    )
    name = next(iter(doc.labels))
    page = doc.page_texts()[doc.answer_pages[name] - 1]
    assert ask(oracle, page, schema_of(doc))[name] == doc.labels[name]


def test_the_oracle_answers_behind_the_simulator_over_http(docs):
    doc = docs[0]
    name = "monthly_rent"
    page = doc.page_texts()[doc.answer_pages[name] - 1]
    body = {
        "model": "sim",
        "messages": document_prompt(page, "Extract the fields."),
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "Output", "strict": True, "schema": schema_of(doc)},
        },
    }
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=ChunkOracle(docs)) as sim:
        req = urllib.request.Request(
            sim.base_url + "/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            reply = json.loads(resp.read())
    answer = json.loads(reply["choices"][0]["message"]["content"])
    assert answer[name] == doc.labels[name] and answer[name + "_evidence"] == doc.evidence[name]
    assert all(
        answer[k] is None for k in doc.labels if doc.answer_pages[k] != doc.answer_pages[name]
    )


def test_a_chunked_map_through_the_client_finds_every_field_in_some_chunk(docs):
    doc = docs[8]  # protocol-001
    output = create_model(
        "Output",
        **{f["name"]: (str | None, Field(description=f["desc"])) for f in FIELDS[doc.domain]},
    )
    question = Question("Extract these fields; null when the text does not say.", output, 200)
    with OpenAISimulator({"sim": SimulatedModel()}, oracle=ChunkOracle(docs)) as sim:
        client = OpenAICompatibleClient(
            "sim", base_url=sim.base_url, api_key="x", context_tokens=2_000
        )
        answers, _, n = question.on_each_chunk(doc.text, client)
    assert n > 3
    for name, value in doc.labels.items():
        got = [getattr(a, name) for a in answers]
        assert value in got and set(got) <= {value, None}, (name, got)
        assert got.index(value) > 0 or doc.answer_pages[name] == 1
