"""Found defects of the folder sources: links out of the folder (issue item 1) and readers that
lost or corrupted rows silently (item 5). Each test reproduced its defect on the old code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from pz_dagster import Dataset
from pz_dagster.orchestration import RecordStore, build_definitions
from pz_dagster.orchestration.batches import register_partitions
from pz_dagster.orchestration.source_assets import _read_batch
from pz_dagster.query import plan
from pz_dagster.sources import batches, changed_files, make_batches, read_file, scan_folder
from pz_dagster.sources.batches import file_sha256

SECRET = "TOP-SECRET-3f9a1c"  # content of files outside the folder: must never reach a record


def records(folder: Path) -> list[dict]:
    return [rec for ref in scan_folder(folder) for rec in read_file(folder, ref.path)]


def by_id(recs: list[dict]) -> dict[str, dict]:
    return {r["record_id"]: r for r in recs}


def no_secret(recs: list[dict]) -> bool:
    return SECRET not in json.dumps(recs)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "good.txt").write_text("a good document")
    return tmp_path / "docs"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file next to the folder, as secret as /etc/shadow or the process's environment."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "key.txt").write_text(SECRET)
    return tmp_path / "secrets" / "key.txt"


# --- 1. Links out of the folder --------------------------------------------------------------


def test_link_to_a_file_outside_is_an_error_record(folder: Path, outside: Path):
    (folder / "leak.txt").symlink_to(outside)
    (folder / "rel.txt").symlink_to(Path("..") / "secrets" / "key.txt")  # relative target
    recs = by_id(records(folder))
    assert set(recs) == {"good.txt", "leak.txt", "rel.txt"}
    for rid in ("leak.txt", "rel.txt"):
        assert "link points outside the source folder" in recs[rid]["error"]
        assert recs[rid]["contents"] == ""
    assert recs["good.txt"]["error"] is None and no_secret(list(recs.values()))


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_link_to_the_process_environment_is_refused(folder: Path, monkeypatch):
    monkeypatch.setenv("PZ_TEST_API_KEY", SECRET)
    (folder / "env.txt").symlink_to("/proc/self/environ")
    (folder / "passwd.txt").symlink_to("/etc/passwd")
    recs = by_id(records(folder))
    assert "outside the source folder" in recs["env.txt"]["error"]
    assert "outside the source folder" in recs["passwd.txt"]["error"]
    assert no_secret(list(recs.values())) and "root:" not in json.dumps(list(recs.values()))


def test_link_to_a_folder_is_reported_not_followed(folder: Path, outside: Path):
    (folder / "ext").symlink_to(outside.parent, target_is_directory=True)
    (folder / "sub").mkdir()
    (folder / "sub" / "in.txt").write_text("inside")
    (folder / "alias").symlink_to(folder / "sub", target_is_directory=True)
    recs = by_id(records(folder))
    assert set(recs) == {"good.txt", "sub/in.txt", "ext", "alias"}
    assert "link to a folder" in recs["ext"]["error"] and "not followed" in recs["ext"]["error"]
    assert "link to a folder" in recs["alias"]["error"]  # never followed: no duplicate records
    assert no_secret(list(recs.values()))


def test_link_inside_the_folder_is_read_through_its_target(folder: Path):
    (folder / "sub").mkdir()
    (folder / "sub" / "v3.md").write_text("version 3")
    (folder / "latest.txt").symlink_to(Path("sub") / "v3.md")
    (folder / ".env").write_text(SECRET)  # hidden files are never read, not even through a link
    (folder / "env.txt").symlink_to(".env")
    recs = by_id(records(folder))
    assert recs["latest.txt"]["contents"] == "version 3" and recs["latest.txt"]["error"] is None
    assert recs["sub/v3.md"]["contents"] == "version 3"
    assert "hidden" in recs["env.txt"]["error"] and no_secret(list(recs.values()))


def test_dangling_link_and_loop_are_error_records(folder: Path):
    (folder / "gone.txt").symlink_to(folder / "deleted.txt")
    (folder / "a.txt").symlink_to("b.txt")
    (folder / "b.txt").symlink_to("a.txt")
    (folder / "gone_dir").symlink_to(folder / "no_such_dir")
    recs = by_id(records(folder))
    assert "dangling link" in recs["gone.txt"]["error"]
    assert "link loop" in recs["a.txt"]["error"] and "link loop" in recs["b.txt"]["error"]
    assert "dangling link" in recs["gone_dir"]["error"]  # may have been a folder: reported too


def test_swap_for_a_link_between_scan_and_read_is_refused(folder: Path, outside: Path):
    (folder / "doc.txt").write_text("harmless")
    (folder / "sub").mkdir()
    (folder / "sub" / "key.txt").write_text("harmless too")
    refs = scan_folder(folder)
    (batch,) = make_batches(refs, 10)
    # The writer swaps a file and a folder for links once the batch is registered.
    (folder / "doc.txt").unlink()
    (folder / "doc.txt").symlink_to(outside)
    (folder / "sub" / "key.txt").unlink()
    (folder / "sub").rmdir()
    (folder / "sub").symlink_to(outside.parent, target_is_directory=True)
    recs = by_id([r for ref in batch.files for r in read_file(folder, ref.path)])
    assert "outside the source folder" in recs["doc.txt"]["error"]
    assert "link to a folder" in recs["sub/key.txt"]["error"]
    assert no_secret(list(recs.values()))
    assert changed_files(folder, batch) == set()  # never hashes through the links either


@pytest.mark.parametrize("path", ["../secrets/key.txt", "/etc/passwd", "sub/../../secrets/key.txt"])
def test_a_manifest_path_cannot_leave_the_folder(folder: Path, outside: Path, path: str):
    (rec,) = read_file(folder, path)
    assert "outside the source folder" in rec["error"] and rec["contents"] == ""


@pytest.mark.timeout(20)
def test_fifo_and_devices_are_never_opened(folder: Path):
    os.mkfifo(folder / "pipe.txt")  # opening it for reading would block the run forever
    (folder / "zero.txt").symlink_to("/dev/zero")  # reading it would never end
    recs = by_id(records(folder))
    assert "not a regular file" in recs["pipe.txt"]["error"]
    assert "outside the source folder" in recs["zero.txt"]["error"]
    assert "not a regular file" in read_file(folder, "pipe.txt")[0]["error"]


def test_hard_link_is_refused(folder: Path, outside: Path):
    os.link(outside, folder / "hard.txt")  # same file as the secret: no path gives it away
    recs = by_id(records(folder))
    assert "hard link" in recs["hard.txt"]["error"] and no_secret(list(recs.values()))


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists folders whatever their mode")
def test_unreadable_folder_is_an_error_record(folder: Path):
    (folder / "locked").mkdir()
    (folder / "locked" / "a.txt").write_text("x")
    (folder / "locked").chmod(0)
    try:
        recs = by_id(records(folder))
    finally:
        (folder / "locked").chmod(0o755)
    assert "could not be listed" in recs["locked"]["error"]


def test_unlistable_folder_is_an_error_record_even_as_root(folder: Path, monkeypatch):
    (folder / "locked").mkdir()
    (folder / "locked" / "a.txt").write_text("x")
    real = batches._entries

    def entries(root_fd: int, rel_dir: str):  # what chmod 0 does for a user other than root
        if rel_dir == "locked":
            raise PermissionError(13, "Permission denied")
        return real(root_fd, rel_dir)

    monkeypatch.setattr(batches, "_entries", entries)
    recs = by_id(records(folder))
    assert set(recs) == {"good.txt", "locked"}
    assert "could not be listed" in recs["locked"]["error"]


def test_deep_folders_do_not_exhaust_the_stack(folder: Path):
    # A guard, not a reproduction: the walk is a loop holding two descriptors at most.
    deep = folder.joinpath(*["d"] * 600)
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_text("found")
    recs = records(folder)
    assert [r["contents"] for r in recs if r["record_id"].endswith("bottom.txt")] == ["found"]


def test_odd_file_names_give_valid_record_ids(folder: Path):
    (folder / "with\nnewline.txt").write_text("x")
    fd = os.open(os.fsencode(folder) + b"/latin\xe9.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"y")
    os.close(fd)
    (folder / "ça va #1.txt").write_text("unicode and spaces are fine")
    refs = scan_folder(folder)
    json.dumps([r.model_dump() for r in refs]).encode("utf-8")  # manifests stay valid JSON
    make_batches(refs, 10)  # the batch key hashed the name as UTF-8: the whole scan crashed
    recs = by_id([r for ref in refs for r in read_file(folder, ref.path)])
    assert recs["ça va #1.txt"]["error"] is None
    odd = [r for rid, r in recs.items() if rid not in {"good.txt", "ça va #1.txt"}]
    assert len(odd) == 2 and all("file name" in r["error"] for r in odd)
    for rid in recs:
        rid.encode("utf-8")  # no lone surrogates: the store writes UTF-8
        assert "\n" not in rid


def test_file_changed_between_hash_and_read_is_flagged(folder: Path):
    sha = file_sha256(folder / "good.txt")
    assert read_file(folder, "good.txt", expected_sha256=sha)[0]["error"] is None
    (folder / "good.txt").write_text("edited after the batch was registered")
    (rec,) = read_file(folder, "good.txt", expected_sha256=sha)
    assert rec["error"].startswith("file changed since its batch was registered")


def test_source_batch_flags_a_file_edited_after_registration(folder: Path):
    node = plan.DirectorySource(name="docs", path=str(folder), batch_size=10)
    (batch,) = make_batches(scan_folder(folder), 10)
    (folder / "good.txt").write_text("edited")
    (rec,) = _read_batch(node, batch)
    assert rec["contents"] == "edited" and rec["error"].startswith("file changed since")


def test_source_asset_stores_an_error_record_for_an_outside_link(
    folder: Path, outside: Path, tmp_path: Path
):
    """Through the real source asset and store: the link's record is an error, and the secret
    is in no stored file and no materialization metadata."""
    (folder / "leak.txt").symlink_to(outside)
    (folder / "loop.txt").symlink_to("loop.txt")
    store_root = tmp_path / "store"
    ds = Dataset.from_directory(folder, name="docs").sem_filter("mentions fraud", name="fraud")
    defs, query = build_definitions(ds, "hard", store_root=str(store_root))
    source_key = query.asset_key("docs")
    with dg.instance_for_test() as instance:
        (batch,) = register_partitions(RecordStore(store_root), query, instance)
        result = defs.resolve_job_def(query.job.name).execute_in_process(
            partition_key=batch.key, instance=instance, asset_selection=[source_key]
        )
        assert result.success
        md = (
            instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=source_key), limit=1)
            .records[0]
            .asset_materialization.metadata
        )
    assert md["records/read_errors"].value == 2 and SECRET not in str(md)
    with RecordStore(store_root).connect() as con:
        rows = con.execute(
            'select record_id, contents, error from "hard__docs" order by record_id'
        ).fetchall()
    got = {r[0]: r for r in rows}
    assert set(got) == {"good.txt", "leak.txt", "loop.txt"}
    assert "outside the source folder" in got["leak.txt"][2] and not got["leak.txt"][1]
    assert "link loop" in got["loop.txt"][2] and got["good.txt"][2] is None
    for p in store_root.rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p


# --- 5. Readers that lost or corrupted rows silently -----------------------------------------


def test_csv_unbalanced_quote_keeps_the_rows_after_it(folder: Path):
    (folder / "t.csv").write_text('name,role\nKen,"CEO\nJeff,COO\nAndy,CFO\n')
    recs = read_file(folder, "t.csv")
    assert [r["record_id"] for r in recs] == ["t.csv#row1", "t.csv#row2", "t.csv#row3"]
    assert "row 1 (line 2)" in recs[0]["error"] and "quote" in recs[0]["error"]
    assert recs[0]["contents"] == 'Ken,"CEO'
    assert recs[1] == {
        "record_id": "t.csv#row2",
        "filename": "t.csv",
        "contents": "name: Jeff\nrole: COO",
        "provenance": '{"file": "t.csv", "unit": "row", "pages": null, "page_starts": null, '
        '"chars": null, "parent": null}',
        "error": None,
    }
    assert recs[2]["contents"] == "name: Andy\nrole: CFO" and recs[2]["error"] is None


def test_csv_stray_quote_closed_by_a_later_one_is_reported(folder: Path):
    (folder / "t.csv").write_text('a,b\n1,"oops\n2,fine\n3,"quoted"x\n4,ok\n')
    recs = read_file(folder, "t.csv")
    errors = [r["error"] for r in recs]
    assert errors[0] and "row 1 (line 2)" in errors[0]
    assert recs[1]["contents"] == "a: 2\nb: fine" and errors[1] is None
    assert errors[2] and "row 3 (line 4)" in errors[2]
    assert recs[3]["contents"] == "a: 4\nb: ok" and errors[3] is None


def test_csv_multiline_quoted_cell_is_fine(folder: Path):
    (folder / "t.csv").write_text('a,b\r\n1,"two\r\nlines"\r\n2,x\r\n')
    recs = read_file(folder, "t.csv")
    assert [r["error"] for r in recs] == [None, None]
    assert recs[0]["contents"] == "a: 1\nb: two\r\nlines"


def test_csv_row_with_too_few_or_too_many_values_is_an_error(folder: Path):
    (folder / "t.csv").write_text("a,b,c\n1,2\n\n4,5,6\n7,8,9,10\n")
    recs = read_file(folder, "t.csv")
    assert [r["record_id"] for r in recs] == ["t.csv#row1", "t.csv#row2", "t.csv#row3"]
    assert "row 1 (line 2) has 2 value(s), the header has 3" in recs[0]["error"]
    assert "None" not in recs[0]["contents"] and recs[0]["contents"] == "a: 1\nb: 2"
    assert recs[1]["error"] is None and recs[1]["contents"] == "a: 4\nb: 5\nc: 6"
    assert "row 3 (line 5) has 4 value(s)" in recs[2]["error"]


def test_csv_repeated_header_keeps_every_value(folder: Path):
    (folder / "t.csv").write_text("name,name\nKen,Lay\n")
    assert read_file(folder, "t.csv")[0]["contents"] == "name: Ken\nname: Lay"


def test_jsonl_splits_on_newline_only(folder: Path):
    (folder / "t.jsonl").write_text(
        '{"t": "a\u2028b"}\n{"t": "c\u2029d"}\r\n{"t": "e\x85f"}\n"last"\n', newline=""
    )
    recs = read_file(folder, "t.jsonl")
    assert [r["record_id"] for r in recs] == [f"t.jsonl#line{i}" for i in (1, 2, 3, 4)]
    assert all(r["error"] is None for r in recs), recs
    assert json.loads(recs[1]["contents"]) == {"t": "c\u2029d"} and recs[3]["contents"] == "last"


def test_json_nested_too_deeply_is_an_error_not_a_crash(folder: Path):
    (folder / "deep.json").write_text("[" * 100_000)
    (folder / "deep.jsonl").write_text('{"ok": 1}\n' + "[" * 100_000 + "\n")
    assert "malformed JSON" in read_file(folder, "deep.json")[0]["error"]
    lines = read_file(folder, "deep.jsonl")
    assert lines[0]["error"] is None and "malformed JSON on line 2" in lines[1]["error"]


def test_html_the_parser_gives_up_on_is_an_error_not_a_crash(folder: Path):
    (folder / "p.html").write_text("<p>kept?</p><![foo[x]]>")  # html.parser raised AssertionError
    (rec,) = read_file(folder, "p.html")
    assert rec["error"].startswith("malformed HTML") and rec["contents"] == ""


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"hello world\nthis is not an email\n", "no blank line"),
        (b"\x00\xff\xfe random bytes", "no blank line"),
        (b"X-Tool: y\n\nno usual header", "no From, To, Date or Subject"),
        (b"From: a@b\nContent-Type: text/plain; charset=utf-8\n\ncaf\xe9", "not valid utf-8"),
        (b"From: a@b\nContent-Type: text/plain; charset=x-nope\n\ncafe", "unknown charset"),
        (b"From: a@b\nSubject: =?utf-8?q?caf=C3?=\n\nbody", "Subject header"),
        (
            b"From: a@b\nContent-Type: multipart/mixed; boundary=XX\n\n--XX\n"
            b"Content-Type: text/plain\n\ntruncated",
            "closing boundary",
        ),
        (b"From: a@b\nContent-Type: multipart/mixed\n\nhi\n", "boundary"),
        (
            b"Subject: hi\nContent-Type: multipart/mixed; boundary=a\n\n--a\n"
            b"Content-Type: application/pdf\n\nxx\n--a--\n",
            "no text/plain or text/html part",
        ),
    ],
)
def test_malformed_email_is_an_error_record(folder: Path, raw: bytes, why: str):
    (folder / "m.eml").write_bytes(raw)
    (rec,) = read_file(folder, "m.eml")
    assert rec["error"] and rec["error"].startswith("malformed email"), rec
    assert why in rec["error"], rec["error"]
    assert "\ufffd" not in rec["contents"]


def test_well_formed_email_in_a_declared_charset_decodes(folder: Path):
    (folder / "m.eml").write_bytes(
        b"From: a@b\nSubject: =?iso-8859-1?q?caf=E9?=\n"
        b"Content-Type: text/plain; charset=iso-8859-1\n\nr\xe9sum\xe9\n"
    )
    (rec,) = read_file(folder, "m.eml")
    assert rec["error"] is None and "Subject: café" in rec["contents"]
    assert "résumé" in rec["contents"]
