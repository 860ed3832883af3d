"""The long-document corpus: labels at controlled depths, distractors, the files and labels it
writes."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest

from optimizer.quality import ValidationSet
from pz_dagster.sources import read_file, scan_folder
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


@pytest.fixture(scope="module")
def docs() -> list[LongDocument]:
    return generate(30, 0)


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
        write_corpus(tmp_path, docs[:1], formats=("docx",))
    with pytest.raises(ValueError, match="unknown formats"):
        write_corpus(tmp_path, docs[:1], formats=("odt",))
