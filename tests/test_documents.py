"""Document readers on real files written at test time (pz_dagster.testing.documents): PDF
text layers page by page, DOCX, PPTX and HTML with their structure, the error records of
scanned, encrypted, truncated and damaged files, and the provenance of every record."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pytest

from pz_dagster import Dataset, PlanError
from pz_dagster.orchestration.source_assets import _read_batch
from pz_dagster.orchestration.store import RecordStore, to_table
from pz_dagster.query.plan import column_types
from pz_dagster.query.spec import QuerySpec, dataset_from_spec
from pz_dagster.sources import make_batches, read_file, scan_folder
from pz_dagster.sources.markup import html_to_text
from pz_dagster.sources.provenance import locate
from pz_dagster.testing.documents import (
    normalized,
    render,
    write_encrypted_pdf,
    write_pdf,
    write_scanned_pdf,
)

# Three explicit pages, the second long enough to overflow onto a fourth.
SOURCE = "\n".join(
    [
        "# Quarterly report",
        "",
        "Revenue grew in the third quarter. The board met twice.",
        "",
        "## Risks",
        "",
        "- Gas prices",
        "- Counterparty credit",
        "",
        "| desk | amount |",
        "| power | 120 |",
        "| gas | 80 |",
        "\f",
        "# Trading",
        "",
        " ".join(f"Sentence {i} about the trading desk and its limits." for i in range(450)),
        "\f",
        "# Appendix",
        "",
        "The phrase PELICAN-ACCORD appears on this page only.",
    ]
)
PHRASE = "PELICAN-ACCORD"


def prov(rec: dict) -> dict:
    return json.loads(rec["provenance"])


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("docs")
    render(SOURCE, folder, "report", formats=("pdf", "docx", "html", "pptx"))
    return folder


# --- the same text from every format ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "drop_markup"), [("pdf", True), ("docx", False), ("html", False), ("pptx", True)]
)
def test_each_format_reads_back_its_source(docs: Path, fmt: str, drop_markup: bool):
    (rec,) = read_file(docs, f"report.{fmt}")
    assert rec["error"] is None, rec["error"]
    assert normalized(rec["contents"], drop_markup) == normalized(SOURCE, drop_markup=drop_markup)


def test_docx_and_html_keep_headings_lists_and_tables_as_lines(docs: Path):
    for name in ("report.docx", "report.html"):
        lines = read_file(docs, name)[0]["contents"].split("\n")
        for line in ("# Quarterly report", "## Risks", "- Gas prices", "| power | 120 |"):
            assert line in lines, (name, line)
        assert "var hidden" not in "\n".join(lines)


def test_a_long_pdf_overflows_onto_new_pages_and_keeps_page_numbers(docs: Path):
    (rec,) = read_file(docs, "report.pdf")
    meta = prov(rec)
    first, last = meta["pages"]
    assert first == 1 and last >= 4, meta  # three explicit pages, the second overflowing
    starts = meta["page_starts"]
    assert len(starts) == last and starts[0] == 0 and starts == sorted(starts)
    assert meta["chars"] == [0, len(rec["contents"])] and meta["parent"] is None
    assert rec["contents"][starts[1] :].startswith("Trading")  # page 2 starts at its heading


def test_a_phrase_on_the_last_page_is_located_there(docs: Path):
    (rec,) = read_file(docs, "report.pdf")
    at = rec["contents"].index(PHRASE)
    where = locate(rec["provenance"], at, at + len(PHRASE))
    last = prov(rec)["pages"][1]
    assert where == {"file": "report.pdf", "pages": [last, last], "chars": [at, at + len(PHRASE)]}
    (deck,) = read_file(docs, "report.pptx")  # one page per slide: the third
    at = deck["contents"].index(PHRASE)
    assert locate(deck["provenance"], at, at + 3)["pages"] == [3, 3]


# --- a record per page or section ------------------------------------------------------------


def test_page_records_carry_their_parent_and_their_offsets(docs: Path):
    (whole,) = read_file(docs, "report.pdf")
    pages = read_file(docs, "report.pdf", unit="page")
    assert [r["record_id"] for r in pages] == [
        f"report.pdf#page{n}" for n in range(1, 1 + len(pages))
    ]
    assert "\n\n".join(r["contents"] for r in pages) == whole["contents"]
    for n, rec in enumerate(pages, start=1):
        meta = prov(rec)
        assert meta["unit"] == "page" and meta["parent"] == "report.pdf" and rec["error"] is None
        assert meta["pages"] == [n, n] and meta["page_starts"] == [0]
        start, end = meta["chars"]
        assert whole["contents"][start:end] == rec["contents"]
    last = pages[-1]
    at = last["contents"].index(PHRASE)
    found = locate(last["provenance"], at, at + len(PHRASE))
    assert found["pages"] == [len(pages)] * 2
    assert whole["contents"][slice(*found["chars"])] == PHRASE


def test_section_records_split_at_headings(docs: Path, tmp_path: Path):
    (tmp_path / "notes.md").write_text(
        "Intro line.\n\n# One\nbody\n```\n# not a heading\n```\n## Two\nend\n"
    )
    for folder, name in ((docs, "report.docx"), (docs, "report.html"), (tmp_path, "notes.md")):
        (whole,) = read_file(folder, name)
        sections = read_file(folder, name, unit="section")
        for n, rec in enumerate(sections, start=1):
            meta = prov(rec)
            assert rec["record_id"] == f"{name}#section{n}" and meta["parent"] == name
            assert whole["contents"][slice(*meta["chars"])] == rec["contents"]
            assert meta["unit"] == "section" and meta["pages"] is None
    headings = [
        r["contents"].split("\n")[0] for r in read_file(docs, "report.docx", unit="section")
    ]
    assert headings == ["# Quarterly report", "## Risks", "# Trading", "# Appendix"]
    md = [r["contents"] for r in read_file(tmp_path, "notes.md", unit="section")]
    assert md == ["Intro line.", "# One\nbody\n```\n# not a heading\n```", "## Two\nend"]


def test_formats_without_pages_or_headings_fall_back_to_one_record(docs: Path, tmp_path: Path):
    (tmp_path / "a.txt").write_text("# not split\nplain text")
    assert [r["record_id"] for r in read_file(tmp_path, "a.txt", unit="section")] == ["a.txt"]
    assert [r["record_id"] for r in read_file(tmp_path, "a.txt", unit="page")] == ["a.txt"]
    assert [r["record_id"] for r in read_file(docs, "report.docx", unit="page")] == ["report.docx"]
    assert [r["record_id"] for r in read_file(docs, "report.pdf", unit="section")] == ["report.pdf"]
    assert prov(read_file(tmp_path, "a.txt")[0]) == {
        "file": "a.txt",
        "unit": "document",
        "pages": None,
        "page_starts": None,
        "chars": [0, len("# not split\nplain text")],
        "parent": None,
    }


def test_unit_reaches_the_reader_from_the_dsl_and_the_yaml(docs: Path):
    ds = Dataset.from_directory(docs, unit="page")
    assert ds.node.unit == "page" and "unit='page'" in ds.node.describe()
    assert "unit" not in Dataset.from_directory(docs).node.describe()  # the default
    with pytest.raises(PlanError, match="unit must be one of document, page, section"):
        Dataset.from_directory(docs, unit="paragraph")
    spec = QuerySpec.model_validate({"name": "q", "source": {"path": str(docs), "unit": "section"}})
    assert dataset_from_spec(spec).node.unit == "section"
    with pytest.raises(ValueError, match="unit"):
        QuerySpec.model_validate({"name": "q", "source": {"path": str(docs), "unit": "slide"}})
    (batch,) = make_batches(scan_folder(docs), 10)
    records = _read_batch(ds.node, batch)  # what the source asset stores
    assert "report.pdf#page1" in [r["record_id"] for r in records]
    assert "report.docx" in [r["record_id"] for r in records]  # no pages: one record
    to_table(records, column_types(ds.node))


# --- files that cannot be read ---------------------------------------------------------------


def test_scanned_encrypted_truncated_and_damaged_pdfs_are_error_records(tmp_path: Path):
    write_scanned_pdf(tmp_path / "scan.pdf")
    write_encrypted_pdf(tmp_path / "locked.pdf", "a secret text")
    good = write_pdf(tmp_path / "good.pdf", SOURCE).read_bytes()
    (tmp_path / "half.pdf").write_bytes(good[: len(good) // 2])
    (tmp_path / "cut.pdf").write_bytes(good[:-8])  # only the end-of-file marker lost
    (tmp_path / "damaged.pdf").write_bytes(good[:200] + b"\0garbage" * 50 + good[-300:])
    (tmp_path / "notpdf.pdf").write_bytes(b"hello, not a PDF at all")
    expected = {
        "scan.pdf": "PDF has no text layer (scanned?): OCR is not enabled",
        "locked.pdf": "PDF is encrypted (password-protected): not read",
        "half.pdf": "PDF is damaged: no end-of-file marker (truncated?)",
        "cut.pdf": "PDF is damaged: no end-of-file marker (truncated?)",
        "damaged.pdf": "PDF is damaged: ",
        "notpdf.pdf": "PDF is damaged: no %PDF header",
    }
    (batch,) = make_batches(scan_folder(tmp_path), 20)
    records = _read_batch(Dataset.from_directory(tmp_path, unit="page").node, batch)
    by_id = {r["record_id"]: r for r in records}
    for name, why in expected.items():
        rec = by_id[name]
        assert rec["error"].startswith(why), (name, rec["error"])
        assert rec["contents"] == "" and prov(rec)["file"] == name
    assert by_id["good.pdf#page1"]["error"] is None


def test_pages_without_text_are_named_not_an_error_of_the_document(tmp_path: Path):
    write_pdf(tmp_path / "mixed.pdf", SOURCE, image_pages={1})
    (whole,) = read_file(tmp_path, "mixed.pdf")
    assert whole["error"] is None and PHRASE in whole["contents"]
    meta = prov(whole)
    assert meta["pages_without_text"] == [1] and meta["page_starts"][:2] == [0, 2]
    assert "Quarterly report" not in whole["contents"]  # that page is a picture
    first = read_file(tmp_path, "mixed.pdf", unit="page")[0]
    assert first["record_id"] == "mixed.pdf#page1" and first["contents"] == ""
    assert first["error"] == "page 1 has no text layer (scanned?): OCR is not enabled"


def test_damaged_docx_and_pptx_are_error_records(docs: Path, tmp_path: Path):
    raw = (docs / "report.docx").read_bytes()
    (tmp_path / "cut.docx").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "locked.docx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600)
    (tmp_path / "text.pptx").write_text("not a presentation")
    assert read_file(tmp_path, "cut.docx")[0]["error"].startswith("DOCX is damaged")
    assert "encrypted (password-protected)" in read_file(tmp_path, "locked.docx")[0]["error"]
    assert read_file(tmp_path, "text.pptx")[0]["error"].startswith("PPTX is damaged")


def test_size_limit_and_empty_files_still_hold_for_documents(docs: Path, tmp_path: Path):
    assert "over the 1000-byte limit" in read_file(docs, "report.pdf", max_bytes=1000)[0]["error"]
    (tmp_path / "empty.pdf").write_bytes(b"")
    assert read_file(tmp_path, "empty.pdf")[0]["error"] == "empty file: nothing to analyse"
    (tmp_path / "latin.html").write_bytes("<p>caf\xe9</p>".encode("latin-1"))
    assert read_file(tmp_path, "latin.html")[0]["error"].startswith("not valid UTF-8")


@pytest.mark.timeout(300)
def test_mutated_documents_never_crash_the_reader(docs: Path, tmp_path: Path):
    rng = random.Random(7)
    seeds = {f: (docs / f"report.{f}").read_bytes() for f in ("pdf", "docx", "pptx")}
    for i in range(150):
        fmt = rng.choice(sorted(seeds))
        data = bytearray(seeds[fmt])
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        name = f"m{i}.{fmt}"
        (tmp_path / name).write_bytes(bytes(data))
        for unit in ("document", "page"):
            got = read_file(tmp_path, name, unit=unit)
            assert got
            for rec in got:
                assert rec["error"] is None or rec["error"], rec
                assert prov(rec)["file"] == name
                rec["contents"].encode("utf-8")
            to_table(got, column_types(Dataset.from_directory(tmp_path).node))


# --- HTML ------------------------------------------------------------------------------------


def test_html_keeps_headings_lists_and_tables():
    page = """<html><head><title>T</title><style>p{}</style></head><body>
    <script>var x = 1;</script><h1>Q3 report_v2</h1><p>Revenue *up* 5% &amp; costs<br>down</p>
    <ul><li>one</li><li>two<ul><li>nested</li></ul></li></ul>
    <ol><li>first</li><li>second</li></ol>
    <table><tr><th>a</th><th>b|c</th></tr><tr><td>1</td><td><p>2</p></td></tr></table>
    <div>tail</div></body></html>"""
    assert html_to_text(page) == (
        "# Q3 report_v2\n\nRevenue *up* 5% & costs\ndown\n\n- one\n- two\n  - nested\n\n"
        "1. first\n2. second\n\n| a | b\\|c |\n| 1 | 2 |\n\ntail"
    )


def test_html_email_bodies_go_through_the_same_converter(tmp_path: Path):
    (tmp_path / "m.eml").write_bytes(
        b"From: a@enron.com\r\nSubject: hi\r\nContent-Type: text/html\r\n\r\n"
        b"<h2>Agenda</h2><ul><li>Raptor</li></ul>\r\n"
    )
    (rec,) = read_file(tmp_path, "m.eml")
    assert rec["error"] is None and rec["contents"].endswith("## Agenda\n\n- Raptor")


def test_unclosed_head_does_not_hide_the_body():
    assert html_to_text("<html><head><title>x</title><body><p>seen</p>") == "seen"


# --- the store -------------------------------------------------------------------------------


def test_partitions_stored_before_the_provenance_column_still_load(tmp_path: Path):
    store = RecordStore(tmp_path)
    old_cols = [("record_id", str), ("filename", str), ("contents", str), ("error", str)]
    new_cols = column_types(Dataset.from_directory("x").node)
    old = to_table([{"record_id": "a.txt", "filename": "a.txt", "contents": "old"}], old_cols)
    new = to_table(read_file(Path(__file__).parent, Path(__file__).name), new_cols)
    store.write(["q", "documents"], "p1", old)
    store.write(["q", "documents"], "p2", new)
    store.refresh_view(["q", "documents"])
    both = pa.concat_tables(
        [store.read(["q", "documents"], p) for p in ("p1", "p2")], promote_options="default"
    )
    assert both.column("provenance").to_pylist()[0] is None
    with store.connect() as con:
        got = con.execute('select record_id, provenance from "q__documents" order by 1').fetchall()
    assert got[0] == ("a.txt", None) and json.loads(got[1][1])["file"] == Path(__file__).name
