"""Fuzz the folder scanner and the readers: a few thousand generated files (random bytes,
truncated and mutated CSV/JSONL/JSON/HTML/EML, odd names, links of every kind, FIFOs, hard
links, files swapped or edited between scan and read), fixed seed. Every listed file must give at
least one record, no exception may escape, no byte of a file outside the folder may reach a
record, and every batch must be storable (valid UTF-8 record ids).

Figures are printed (run with -s) and recorded as junit properties::

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/test_reader_fuzz.py -q -s
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from pz_dagster.orchestration.store import to_table
from pz_dagster.sources import make_batches, read_file, scan_folder
from pz_dagster.sources.batches import changed_files
from pz_dagster.sources.paths import shown

SEED = 20240611
N_FILES = 5000
SECRET = "OUTSIDE-SECRET-5d2e"
COLUMNS = [
    ("record_id", str),
    ("filename", str),
    ("contents", str),
    ("provenance", str),
    ("error", str),
]
SUFFIXES = [".txt", ".md", ".eml", ".html", ".htm", ".json", ".jsonl", ".csv", ".text"]

SEEDS: dict[str, bytes] = {
    ".csv": b'name,role,note\r\nKen,CEO,"multi\r\nline"\r\nJeff,COO,plain\r\n"Andy",CFO,"say ""hi"""\n',
    ".jsonl": '{"t": "a\u2028b"}\n{"n": [1, 2, {"x": null}]}\r\n"str"\n\n{"u": "\x85"}\n'.encode(),
    ".json": b'{"k": [1, 2.5, "three", {"deep": [true, false, null]}], "e": "\\u00e9"}',
    ".html": b"<html><head><script>x<y</script><style>p{}</style></head><body><p>Hi &amp; "
    b"bye</p><!-- c --><![CDATA[x]]><div>caf&eacute;<br>end</body></html>",
    ".eml": b"From: a@enron.com\r\nTo: b@enron.com\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="zz"\r\n\r\n'
    b"--zz\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nr=E9sum=E9\r\n"
    b"--zz\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
    b"\r\nPHA+SGk8L3A+\r\n--zz--\r\n",
    ".txt": "Plain text, caf\u00e9, \u2028 line sep, tab\t.\n".encode(),
}
TOKENS = [
    b'"',
    b'""',
    b"\n",
    b"\r",
    b"\r\n",
    "\u2028".encode(),
    "\u2029".encode(),
    b"\xc2\x85",
    b"\x00",
    b",",
    b"{",
    b"[" * 200,
    b"<",
    b"<!",
    b"</",
    b"&#",
    b"--zz",
    b"=?utf-8?q?",
    b"=?x-bad?b?",
    b"\xff",
    b"\xe9",
    b"\xed\xa0\x80",  # an encoded surrogate: not UTF-8
    b"Content-Type: multipart/mixed; boundary=q\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"charset=x-unknown",
    b"\xef\xbb\xbf",
]
ODD_NAMES = [
    b"new\nline",
    b"tab\there",
    b"latin\xe9",
    b"\xff\xfe",
    b"hash#row1",
    b"pipe|x",
    b"sp ace",
    "ça-va".encode(),
    b"-dash",
    b"x" * 200,
    b"cr\r",
    b"del\x7f",
    "\u202eevil".encode(),
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        i = rng.randint(0, len(data))
        if op == 0:
            data = data[:i]  # truncated
        elif op == 1 and data:
            j = rng.randrange(len(data))
            data = data[:j] + bytes([rng.randrange(256)]) + data[j + 1 :]
        elif op == 2:
            data = data[:i] + rng.choice(TOKENS) + data[i:]
        elif op == 3:
            data = data[:i] + data[rng.randint(i, len(data)) :]
        else:
            data = data[:i] + data[i : rng.randint(i, len(data))] * rng.randint(1, 5) + data[i:]
    return data


def content(rng: random.Random, suffix: str) -> bytes:
    roll = rng.random()
    if roll < 0.15:
        return rng.randbytes(rng.randint(0, 3000))
    if roll < 0.2:
        return rng.choice([b"", b"  \n", b"[" * 60000, b'a,b\n1,"' + b"x" * 200_000])
    seed = SEEDS.get(suffix, SEEDS[".txt"])
    return seed if roll < 0.3 else mutate(rng, seed * rng.randint(1, 3))


class Tree:
    """The generated folder, and which of its paths the scan must list."""

    def __init__(self, root: Path, outside: Path):
        self.root, self.outside = root, outside
        self.expected: set[str] = set()  # relative paths (as ``shown``) that must be listed
        self.regular: list[str] = []  # plain files, candidates for swaps after the scan

    def write(self, rel: bytes, data: bytes, listed: bool = True) -> None:
        path = os.fsencode(self.root) + b"/" + rel
        with open(path, "wb") as f:
            f.write(data)
        if listed:
            name = shown(os.fsdecode(rel))
            self.expected.add(name)
            if name == os.fsdecode(rel):
                self.regular.append(name)

    def link(self, rel: str, target: str | Path, listed: bool = True) -> None:
        os.symlink(target, self.root / rel)
        if listed:
            self.expected.add(rel)


def build(rng: random.Random, tmp: Path) -> Tree:
    outside = tmp / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text(SECRET)
    (outside / "dir" / "inner.txt").write_text(SECRET)
    root = tmp / "folder"
    dirs = [b""]
    for d in (b"a", b"a/b", b"a/b/c", b"a/b/c/d", b"e", b".hidden", b"sp ace"):
        os.makedirs(os.fsencode(root) + b"/" + d)
        dirs.append(d + b"/")
    tree = Tree(root, outside)
    for i in range(N_FILES):
        d = rng.choice(dirs)
        suffix = rng.choice(SUFFIXES)
        stem = rng.choice(ODD_NAMES) if rng.random() < 0.05 else f"f{i}".encode()
        rel = d + stem + b"_" + str(i).encode() + suffix.encode()
        hidden = d.startswith(b".hidden") or rng.random() < 0.02
        if hidden and not d.startswith(b".hidden"):
            rel = d + b"." + rel[len(d) :]
        tree.write(rel, content(rng, suffix), listed=not hidden)
    tree.write(b"e/skip.png", b"\x89PNG", listed=False)
    add_links(tree)
    return tree


def add_links(tree: Tree) -> None:
    out = tree.outside
    tree.link("l_out_abs.txt", out / "secret.txt")
    tree.link("l_out_rel.csv", "../outside/secret.txt")
    tree.link("a/b/l_out_deep.jsonl", "../../../outside/secret.txt")
    tree.link("l_out_dir", out / "dir")
    tree.link("a/l_out_dir.txt", out / "dir")
    tree.link("l_dangling.eml", "nowhere.eml")
    tree.link("l_dangling_dir", "no_such_dir")
    tree.link("l_self.json", "l_self.json")
    tree.link("l_loop1.txt", "l_loop2.txt")
    tree.link("l_loop2.txt", "l_loop1.txt")
    tree.link("l_in.md", "a/b/c")  # a folder inside: not followed either
    tree.link("l_in_file.txt", tree.regular[0])
    tree.link("l_chain.txt", "l_out_abs.txt")  # inside link to an outside link
    tree.link("l_hidden.txt", ".hidden")
    tree.link("l_zero.txt", "/dev/zero")
    tree.link("l_environ.txt", "/proc/self/environ")
    tree.link("l_etc", "/etc")
    tree.link("l_unsupported.png", out / "secret.txt", listed=False)
    os.mkfifo(tree.root / "fifo.txt")
    tree.expected.add("fifo.txt")
    os.link(out / "secret.txt", tree.root / "hard.txt")
    tree.expected.add("hard.txt")


def swap_after_scan(rng: random.Random, tree: Tree, listed: list[str]) -> set[str]:
    """Between scan and read, as a racing writer would: files become outside links, FIFOs,
    folder links, hard links or are edited. Returns the edited ones (must be flagged)."""
    edited = set()
    for rel in rng.sample([r for r in tree.regular if r in listed], 60):
        path = tree.root / rel
        path.unlink()
        kind = rng.randrange(5)
        if kind == 0:
            path.symlink_to(tree.outside / "secret.txt")
        elif kind == 1:
            os.mkfifo(path)
        elif kind == 2:
            path.symlink_to(tree.outside / "dir")
        elif kind == 3:
            os.link(tree.outside / "secret.txt", path)
        else:
            path.write_text(f"edited {rng.random()}")
            edited.add(rel)
    return edited


def check_record(rec: dict) -> None:
    assert set(rec) == {"record_id", "filename", "contents", "provenance", "error"}, rec
    assert json.loads(rec["provenance"])["file"] == rec["filename"], rec
    assert isinstance(rec["contents"], str) and (rec["error"] is None or rec["error"])
    rec["record_id"].encode("utf-8")
    assert not any(ord(c) < 32 or ord(c) == 127 for c in rec["record_id"]), rec["record_id"]


@pytest.mark.timeout(300)
def test_readers_survive_generated_folders(tmp_path: Path, monkeypatch, record_property):
    monkeypatch.setenv("PZ_FUZZ_SECRET", SECRET)  # what /proc/self/environ would give away
    rng = random.Random(SEED)
    start = time.perf_counter()
    tree = build(rng, tmp_path)
    refs = scan_folder(tree.root)
    listed = [r.path for r in refs]
    assert len(listed) == len(set(listed))
    missing = tree.expected - set(listed)
    assert not missing, sorted(missing)[:20]
    edited = swap_after_scan(rng, tree, listed)
    batches = make_batches(refs, 200)
    figures = {"files": len(refs), "records": 0, "error_records": 0, "crashes": 0}
    crashes = []
    for batch in batches:
        recs = []
        for ref in batch.files:
            try:
                got = read_file(tree.root, ref.path, expected_sha256=ref.sha256)
            except Exception as exc:  # counted, then failed below with the first few
                crashes.append((ref.path, repr(exc)))
                continue
            assert got, ref.path
            for rec in got:
                check_record(rec)
            if ref.path in edited:
                assert all(r["error"] for r in got), got
            recs += got
        changed_files(tree.root, batch)  # must not raise, block or follow links either
        to_table(recs, COLUMNS)  # storable: what the source asset writes
        dumped = json.dumps(recs, ensure_ascii=False)
        assert SECRET not in dumped, [r["record_id"] for r in recs if SECRET in json.dumps(r)]
        figures["records"] += len(recs)
        figures["error_records"] += sum(1 for r in recs if r["error"])
    figures["crashes"] = len(crashes)
    figures["seconds"] = round(time.perf_counter() - start, 1)
    print(f"\nreader fuzz (seed {SEED}): {figures}")
    for k, v in figures.items():
        record_property(k, v)
    assert not crashes, crashes[:10]
    assert figures["records"] > figures["error_records"] > 0
