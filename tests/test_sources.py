"""Reading folders into records, and batching them with content-derived keys."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pz_dagster import SourceError
from pz_dagster.sources import changed_files, make_batches, read_file, scan_folder


def test_text_like_formats(tmp_path: Path):
    (tmp_path / "note.md").write_text("# Title\nbody")
    (tmp_path / "page.html").write_text(
        "<html><head><style>x{}</style></head><body><p>Hello</p><p>World &amp; co</p></body></html>"
    )
    (tmp_path / "mail.eml").write_bytes(
        b"From: a@enron.com\r\nTo: b@enron.com\r\nSubject: Chewco\r\nContent-Type: text/plain\r\n\r\nBody text\r\n"
    )
    (tmp_path / "rows.csv").write_text("name,role\nKen,CEO\nJeff,COO,extra\n")
    (tmp_path / "lines.jsonl").write_text('{"a": 1}\n\nnot json\n"plain"\n')
    (tmp_path / "doc.json").write_text('{"k": [1, 2]}')
    (tmp_path / "broken.json").write_text('{"k": ')

    assert read_file(tmp_path, "note.md")[0]["contents"] == "# Title\nbody"
    assert read_file(tmp_path, "page.html")[0]["contents"] == "Hello\n\nWorld & co"
    eml = read_file(tmp_path, "mail.eml")[0]
    assert (
        "Subject: Chewco" in eml["contents"]
        and "Body text" in eml["contents"]
        and eml["error"] is None
    )
    rows = read_file(tmp_path, "rows.csv")
    assert [r["record_id"] for r in rows] == ["rows.csv#row1", "rows.csv#row2"]
    assert rows[0]["contents"] == "name: Ken\nrole: CEO" and rows[0]["error"] is None
    assert "more value" in rows[1]["error"]
    lines = read_file(tmp_path, "lines.jsonl")
    assert [r["record_id"] for r in lines] == [
        "lines.jsonl#line1",
        "lines.jsonl#line3",
        "lines.jsonl#line4",
    ]
    assert (
        lines[1]["error"].startswith("malformed JSON on line 3") and lines[2]["contents"] == "plain"
    )
    assert read_file(tmp_path, "doc.json")[0]["error"] is None
    broken = read_file(tmp_path, "broken.json")[0]
    assert broken["error"].startswith("malformed JSON") and broken["contents"] == '{"k": '


def test_bad_files_become_error_records(tmp_path: Path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("  \n\t")
    (tmp_path / "big.txt").write_text("x" * 2000)
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfhello")
    bad = read_file(tmp_path, "latin1.txt")[0]
    assert bad["error"] == "not valid UTF-8 (byte 0xe9 at offset 3); re-encode the file as UTF-8"
    assert read_file(tmp_path, "empty.txt")[0]["error"] == "empty file: nothing to analyse"
    assert read_file(tmp_path, "blank.txt")[0]["error"] == "empty file: nothing to analyse"
    assert "over the 1000-byte limit" in read_file(tmp_path, "big.txt", max_bytes=1000)[0]["error"]
    assert read_file(tmp_path, "bom.txt")[0] == {
        "record_id": "bom.txt",
        "filename": "bom.txt",
        "contents": "hello",
        "provenance": '{"file": "bom.txt", "unit": "document", "pages": null, '
        '"page_starts": null, "chars": [0, 5], "parent": null}',
        "error": None,
    }
    assert read_file(tmp_path, "missing.txt")[0]["error"].startswith("cannot read file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path):
    p = tmp_path / "secret.txt"
    p.write_text("x")
    p.chmod(0)
    assert read_file(tmp_path, "secret.txt")[0]["error"].startswith("cannot read file")


def test_scan_skips_hidden_and_unsupported(tmp_path: Path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / ".hidden.txt").write_text("h")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.eml").write_text("b")
    assert [f.path for f in scan_folder(tmp_path)] == ["a.txt", "sub/b.eml"]
    with pytest.raises(SourceError, match="does not exist"):
        scan_folder(tmp_path / "nope")


def test_batches_are_content_keyed_and_idempotent(tmp_path: Path):
    for i in range(5):
        (tmp_path / f"{i}.txt").write_text(f"doc {i}")
    files = scan_folder(tmp_path)
    first = make_batches(files, batch_size=2)
    assert [len(b.files) for b in first] == [2, 2, 1]
    assert [b.key for b in make_batches(files, batch_size=2)] == [b.key for b in first]
    seen = [f for b in first for f in b.files]
    assert make_batches(scan_folder(tmp_path), 2, seen=seen) == []
    # A new file and a changed file make exactly one new batch; unchanged files are not re-batched.
    (tmp_path / "5.txt").write_text("doc 5")
    (tmp_path / "0.txt").write_text("doc 0, edited")
    again = make_batches(scan_folder(tmp_path), 10, seen=seen)
    assert len(again) == 1 and [f.path for f in again[0].files] == ["0.txt", "5.txt"]
    assert changed_files(tmp_path, first[0]) == {"0.txt"}
    json.dumps(first[0].model_dump())  # manifests are plain JSON
