"""Side by side, in one run: a naive baseline, Palimpzest, LOTUS and pz-dagster (under three
policies, through Dagster) on the Palimpzest demo's legal-discovery query over the shared Enron
emails, all against the same OpenAI-compatible endpoint.

    bash benchmarks/peers/install.sh                              # once: the peers' virtualenvs
    .venv/bin/python -m benchmarks.peer_enron --endpoint sim      # simulator, all 250 emails
    .venv/bin/python -m benchmarks.peer_enron --endpoint local    # bundled SmolLM2, a subset

(from the repository root; it runs each peer the same way, ``<peer venv>/bin/python -m
benchmarks.peers.run_<peer>`` in the repository root, which imports only
``benchmarks.peers.common`` of this project).

The query: keep the emails that refer to a fraudulent scheme (Raptor, Deathstar, Chewco, Fat Boy)
and are not quoting a news article, and extract each kept email's sender and subject.

Split (documented, the same as benchmarks.optimizer_policies_sim): an email is in the tune
half when the first byte of SHA-256 of its file name is even. pz-dagster's optimizer gets the
tune half's labels; the peers get none (their optimizers have no labels to use). Every system
runs on every selected email; precision, recall, F1 and exact match are on the held-out half.
``--emails N`` selects every relevant email plus others spread evenly over the sorted names, up
to N, so that relevant emails arrive throughout the batches as in the whole collection (taking the
first others by name, as before 2026-11-24, put 10 of the 13 relevant emails in the last batch).
The bundled model runs a few seconds per call on 2 cores, so the local endpoint defaults to a
subset.

Endpoints:
- ``sim``: pz_dagster.testing's OpenAI-compatible *simulator* on loopback (it is not a model),
  with three profiles: a GPT-4-class champion (accuracy 0.995, $10/$30 per 1M tokens, slow), a
  mini and a nano. Answers come from the labels, degraded by each profile's accuracy, and are
  rendered in whatever format the asking system's prompt requests (Palimpzest's ``ANSWER:``,
  LOTUS's ``Answer: True``, JSON), so that a wrong answer is well-formed. The peers and the
  baseline use the champion; pz-dagster may choose among the three.
- ``local``: llama-cpp-python's server with the bundled SmolLM2-135M-Instruct (n_ctx 4096,
  2 threads); one model, so dollars are 0 and the cost axis is tokens.

Every system reaches the endpoint through its own counting proxy on loopback (the peers' runners
run theirs): model calls and tokens are counted from the HTTP traffic, the same way for all,
and dollars are those tokens at the profile's prices.

Orchestration overhead (sim only, where latency is controlled): the baseline plan (champion,
direct, one request at a time) through Dagster versus the same operators called in-process on the
same batches; the difference per batch is what Dagster (runs, events, the store) costs.

Results: a table, ``benchmarks/results/peer_enron_<endpoint>.json`` and ``.png`` (cost vs F1,
time vs F1).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.common import (
    LABELS,
    REPO,
    RESULTS,
    SHARED_ENRON_DIR,
    copy_emails,
    email_names,
    in_tune_half,
    load_labels,
    machine,
    prf,
    split_policies,
    table,
    write_json,
    write_tune_labels,
)
from benchmarks.legal_discovery import CHAMPION, PROFILES, run_once, sim_model
from benchmarks.peers.common import CountingProxy
from definitions.enron import (
    FRAUD_PREDICATE,
    NOT_NEWS_PREDICATE,
    legal_discovery_query,
)
from optimizer.quality import ValidationSet
from pz_dagster.models.base import DEFAULT_CPU_PRICE_PER_HOUR
from pz_dagster.models.local_llama import bundled_gguf_path
from pz_dagster.models.openai_compat import OpenAICompatibleClient
from pz_dagster.operators import run_operator
from pz_dagster.orchestration import OpenAICompatibleModel
from pz_dagster.sources import read_file, scan_folder
from pz_dagster.testing import OpenAISimulator, Rendered
from pz_dagster.testing.oracles import LabelOracle

PEERS = REPO / "benchmarks" / "peers"
FIELDS = {"sender": "The email address of the sender", "subject": "The subject of the email"}
LOCAL_MODEL = "smollm2"
EXTRACT_SCHEMA = {
    "type": "object",
    "properties": {f: {"type": "string"} for f in FIELDS},
    "required": list(FIELDS),
}

# --- the simulator's oracle: the right answer, in the asking system's own format -----------------

_PZ_FILE = re.compile(r'"filename":\s*"([^"]+)"')
_LOTUS_DOC = re.compile(r"\[Email\]: «(.*?)»", re.S)


class PeerOracle(LabelOracle):
    """``LabelOracle`` (pz-dagster's and the baseline's JSON-schema prompts) that also finds the
    email in Palimpzest's context (its file name) and in LOTUS's ``[Email]: «...»``, and answers
    in their formats: Palimpzest ``REASONING: ... ANSWER: TRUE|FALSE`` / ``ANSWER: {json}``,
    LOTUS ``Answer: True|False`` / bare JSON."""

    def __init__(self, folder: Path, labels: ValidationSet):
        super().__init__(folder, labels)
        self.texts = {rid: text for text, rid in self.by_text.items()}
        # a peer reads the file itself: match on the words, not on line endings and spacing
        self.by_words = {" ".join(text.split()): rid for text, rid in self.by_text.items()}

    def record_of(self, req):
        m = re.search(r'Document:\n"""\n(.*?)\n"""', req.prompt, re.S)
        return self.by_words.get(" ".join(m.group(1).split())) if m else None

    def _values(self, rid: str) -> dict[str, str]:
        """The labelled sender and subject, else the email's own From: address and Subject:."""
        expected = self.labels.expected.get(rid) or {}
        doc = self.texts.get(rid, "")
        sender = re.search(r"^From:[ \t]*(\S*)", doc, re.M)
        subject = re.search(r"^Subject:[ \t]*(.*?)\s*$", doc, re.M)
        return {
            "sender": expected.get("sender") or (sender.group(1) if sender else ""),
            "subject": expected.get("subject") or (subject.group(1) if subject else ""),
        }

    def __call__(self, req):
        prompt = req.prompt
        if "FILTER CONDITION:" in prompt or "OUTPUT FIELDS:" in prompt:  # Palimpzest
            m = _PZ_FILE.search(prompt.split("CONTEXT:")[-1])
            rid = m.group(1) if m else None
            if "FILTER CONDITION:" in prompt:
                return Rendered(
                    bool(rid and self.labels.relevant(rid)),
                    lambda v: (
                        f"REASONING: read the email.\nANSWER: {'TRUE' if v else 'FALSE'}\n---"
                    ),
                )
            return Rendered(
                self._values(rid) if rid else dict.fromkeys(FIELDS, ""),
                lambda v: f"REASONING: read the headers.\nANSWER: {json.dumps(v)}\n---",
                EXTRACT_SCHEMA,
            )
        if (m := _LOTUS_DOC.search(prompt)) is not None:  # LOTUS
            rid = self.by_words.get(" ".join(m.group(1).split()))
            if "Claim:" in prompt:
                return Rendered(bool(rid and self.labels.relevant(rid)), lambda v: f"Answer: {v}")
            return Rendered(
                self._values(rid) if rid else dict.fromkeys(FIELDS, ""), json.dumps, EXTRACT_SCHEMA
            )
        return super().__call__(req)


# --- the naive baseline -------------------------------------------------------------------------


def naive(base_url: str, model: str, paths: list[Path]) -> dict[str, Any]:
    """One thread, one model, one prompt per record per operator, in the operators' order: the
    two filters (a record failing the first is not asked the second), then the extraction. JSON
    answers by the endpoint's response_format; a failed or unparseable answer drops a filter's
    record and leaves the extraction empty (counted)."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="sk-local", max_retries=2, timeout=600)
    # llama-cpp-python's server takes {"type": "json_object", "schema": ...} (it refuses OpenAI's
    # "json_schema" type with HTTP 500); the simulator reads both
    yes_no = {
        "type": "json_object",
        "schema": {
            "type": "object",
            "properties": {"answer": {"enum": ["YES", "NO"]}},
            "required": ["answer"],
        },
    }
    fields = {"type": "json_object", "schema": EXTRACT_SCHEMA}
    failures: list[str] = []

    def ask(text: str, question: str, fmt: dict, max_tokens: int) -> dict | None:
        prompt = f'Document:\n"""\n{text}\n"""\n\n{question}'
        try:
            resp = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": prompt}],
                response_format=fmt,
                max_tokens=max_tokens,
                temperature=0.0,
            )
            return json.loads(resp.choices[0].message.content or "")
        except Exception as exc:  # a failed call or invalid JSON: counted, the record goes on
            failures.append(f"{type(exc).__name__}: {str(exc)[:120]}")
            return None

    kept, extracted = [], {}
    for path in paths:
        text = path.read_bytes().decode("utf-8", errors="replace")
        passed = True
        for predicate in (FRAUD_PREDICATE, NOT_NEWS_PREDICATE):
            answer = ask(text, f"Condition: {predicate}\nAnswer YES or NO as JSON.", yes_no, 16)
            if not answer or answer.get("answer") != "YES":
                passed = False
                break
        if not passed:
            continue
        kept.append(path.name)
        fields_asked = "; ".join(f"{k}: {v}" for k, v in FIELDS.items())
        got = ask(text, f"Extract as JSON: {fields_asked}.", fields, 128) or {}
        extracted[path.name] = {f: got.get(f) for f in FIELDS}
    return {
        "kept": kept,
        "extracted": extracted,
        "errors": failures[:10],
        "failures": len(failures),
    }


# --- the peers, each in its own virtualenv ------------------------------------------------------


def run_peer(
    system: str,
    base_url: str,
    model: str,
    paths: list[Path],
    work: Path,
    args: argparse.Namespace,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    python = PEERS / f".venv-{system}" / "bin" / "python"
    if not python.exists():
        return {"errors": [f"{python} missing: run `bash benchmarks/peers/install.sh {system}`"]}
    files = work / f"{system}-files.txt"
    files.write_text("".join(f"{p}\n" for p in paths))
    out = work / f"{system}.json"
    cmd = [  # a module of this repository, run in its root: it imports benchmarks.peers.common
        str(python),
        *("-m", f"benchmarks.peers.run_{system}"),
        *("--base-url", base_url, "--model", model, "--files", str(files), "--out", str(out)),
        *("--max-tokens", str(args.max_tokens)),
        *extra,
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.peer_timeout, cwd=REPO
        )
    except subprocess.TimeoutExpired:
        return {"errors": [f"killed after {args.peer_timeout:.0f} s (--peer-timeout)"]}
    if not out.exists():
        return {"errors": [f"exit {proc.returncode}: {proc.stderr[-400:]}"]}
    return json.loads(out.read_text())


# --- endpoints ----------------------------------------------------------------------------------


def start_llama_server(n_ctx: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            *("-m", "pz_dagster.models.llama_server", "--model", str(bundled_gguf_path())),
            *("--model_alias", LOCAL_MODEL, "--host", "127.0.0.1", "--port", str(port)),
            *("--n_ctx", str(n_ctx), "--n_threads", "2"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/models", timeout=1):
                return proc, base
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("llama_cpp.server did not start within 120 s")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dollars_of(by_model: dict[str, list[int]], prices: dict[str, tuple[float, float]]) -> float:
    total = 0.0
    for model, (_, tokens_in, tokens_out) in by_model.items():
        name = model.split("/", 1)[-1]  # the peers send "openai/<model>" through litellm
        p_in, p_out = prices.get(name, (0.0, 0.0))
        total += (tokens_in * p_in + tokens_out * p_out) / 1e6
    return total


# --- overhead -----------------------------------------------------------------------------------


def inprocess_same_plan(base_url: str, folder: Path, names: list[str], batch: int) -> float:
    """Seconds for the baseline plan (champion, direct, one request at a time) called without
    Dagster on the same batches of the same records: the reference for orchestration overhead."""
    client = OpenAICompatibleClient(
        CHAMPION, base_url=base_url, context_tokens=8192, max_concurrency=1
    )
    nodes = legal_discovery_query(folder, batch_size=batch).node.lineage()[1:]  # past the source
    records = []
    for ref in scan_folder(folder):
        records += read_file(folder, ref.path)
    start = time.perf_counter()
    for b in range(0, len(records), batch):
        rows = records[b : b + batch]
        for node in nodes:
            rows = run_operator(node, rows, client, strategy="direct").records
    return time.perf_counter() - start


# --- main ---------------------------------------------------------------------------------------


def select_emails(names: list[str], labels: dict[str, list], n: int) -> list[str]:
    """Every relevant email and ``n`` minus those of the others, taken at even steps through
    the sorted names (the relevant ones keep their place among them).

    >>> select_emails(list("abcdefgh"), {"g": [{}]}, 4)
    ['a', 'c', 'e', 'g']
    """
    if not n or n >= len(names):
        return names
    relevant = [x for x in names if labels.get(x)]
    others = [x for x in names if not labels.get(x)]
    k = max(n - len(relevant), 0)
    return sorted(relevant + [others[i * len(others) // k] for i in range(k)])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--endpoint", choices=["sim", "local"], default="sim")
    ap.add_argument("--emails", type=int, default=None, help="sim: 0 (all 250); local: 100")
    ap.add_argument("--systems", default="naive,palimpzest,lotus,pz-dagster")
    ap.add_argument("--policies", default="MaxQuality,MinCost,MinCostAtQuality(0.8)")
    ap.add_argument(
        "--strategies",
        default=None,
        help="pz-dagster's physical strategies (sim: direct,lexical_proxy; "
        "local: direct,lexical_proxy,code_synthesis)",
    )
    ap.add_argument("--parallel", type=int, default=8, help="pz-dagster's requests in flight")
    ap.add_argument(
        "--batch-size", type=int, default=None, help="emails per partition (sim 25, local 10)"
    )
    ap.add_argument("--max-tokens", type=int, default=256, help="the peers' generation bound")
    ap.add_argument("--peer-timeout", type=float, default=3600.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or RESULTS / f"peer_enron_{args.endpoint}.json"
    console = Console(width=170)

    labels_raw = load_labels()
    all_names = email_names(SHARED_ENRON_DIR)
    n = args.emails if args.emails is not None else (0 if args.endpoint == "sim" else 100)
    if args.strategies is None:
        args.strategies = "direct,lexical_proxy" + (
            ",code_synthesis" if args.endpoint == "local" else ""
        )
    if args.batch_size is None:
        args.batch_size = 25 if args.endpoint == "sim" else 10
    names = select_emails(all_names, labels_raw, n)
    held = {x for x in names if not in_tune_half(x)}
    relevant = {x for x in names if labels_raw.get(x)}
    work = Path(tempfile.mkdtemp(prefix="pz-peers-"))
    folder = work / "emails"
    copy_emails(names, SHARED_ENRON_DIR, folder)
    tune_labels = write_tune_labels(work / "tune-labels.json", labels_raw, names)
    paths = [folder / x for x in names]

    sim = server = None
    if args.endpoint == "sim":
        oracle = PeerOracle(folder, ValidationSet.from_json(LABELS))
        sim = OpenAISimulator({m: s for m, (s, _, _) in PROFILES.items()}, oracle=oracle).start()
        base, champion = sim.base_url, CHAMPION
        prices = {m: p for m, (_, p, _) in PROFILES.items()}
    else:
        server, base = start_llama_server(4096)
        champion, prices = LOCAL_MODEL, {}

    runs: list[dict[str, Any]] = []
    systems = args.systems.split(",")
    try:
        for system in systems:
            plans = split_policies(args.policies) if system == "pz-dagster" else [None]
            for policy in plans:
                label = f"pz-dagster {policy}" if policy else system
                console.print(f"running {label} on {len(names)} emails...")
                proxy = CountingProxy(base).start()
                start = time.perf_counter()
                try:
                    if system == "naive":
                        r = naive(proxy.base_url, champion, paths)
                    elif system == "lotus" and args.endpoint == "sim":
                        # its filter cascade: the nano profile as the helper model, scored by
                        # its answer's log-probabilities, the champion where it is unsure
                        r = run_peer(
                            system,
                            proxy.base_url,
                            champion,
                            paths,
                            work,
                            args,
                            ("--helper-model", "nano"),
                        )
                    elif system in ("palimpzest", "lotus"):
                        r = run_peer(system, proxy.base_url, champion, paths, work, args)
                    else:
                        r = pz_dagster(
                            proxy.base_url,
                            champion,
                            names,
                            folder,
                            tune_labels,
                            policy,
                            args,
                            console,
                        )
                finally:
                    wall = time.perf_counter() - start
                    proxy.stop()
                runs.append(
                    {
                        "system": label,
                        "wall_seconds": round(wall, 2),
                        "model_calls": proxy.calls,
                        "tokens": proxy.input_tokens + proxy.output_tokens,
                        "by_model": proxy.by_model,
                        "dollars": round(dollars_of(proxy.by_model, prices), 5),
                        "filter": prf(set(r.get("kept", [])), relevant, held),
                        "extraction": extraction(r.get("extracted", {}), labels_raw, held),
                        "errors": r.get("errors", [])[:10],
                        **{
                            k: r[k]
                            for k in (
                                "version",
                                "versions",
                                "import_seconds",
                                "notes",
                                "final_plan",
                                "plans_by_partition",
                                "calls_by_partition",
                                "sample_runs_by_partition",
                                "failures",
                                "parse_failures",
                            )
                            if k in r
                        },
                    }
                )
        overhead = None
        if args.endpoint == "sim" and "pz-dagster" in systems:
            overhead = measure_overhead(base, names, folder, tune_labels, args, console)
    finally:
        if sim is not None:
            sim.stop()
        if server is not None:
            server.terminate()
            server.wait(timeout=30)

    report(runs, overhead, args, names, held, relevant, out, console)


def pz_dagster(base_url, champion, names, folder, tune_labels, policy, args, console) -> dict:
    if args.endpoint == "sim":
        model = sim_model(base_url, args.parallel)
    else:
        # A local endpoint costs its compute (model time at a machine price), else every plan
        # costs $0 and MinCost cannot tell them apart.
        model = OpenAICompatibleModel(
            model=champion,
            base_url=base_url,
            context_tokens=4096,
            max_concurrency=1,
            timeout_s=600,
            compute_price_per_hour=DEFAULT_CPU_PRICE_PER_HOUR,
        )
    r = run_once(
        f"pz-dagster {policy}",
        model,
        names,
        folder,
        tune_labels,
        policy=policy,
        strategies=args.strategies.split(","),
        console=console,
        batch_size=args.batch_size,
    )
    return {
        "kept": r["kept"],
        "extracted": r["kept_rows"],
        "final_plan": r["final_plan"],
        "plans_by_partition": r["plans_by_partition"],
        "calls_by_partition": r["calls_by_partition"],
        "sample_runs_by_partition": r["sample_runs_by_partition"],
        "failures": r["failures"],
    }


def extraction(rows: dict[str, dict], labels: dict[str, list], held: set[str]) -> dict[str, Any]:
    """Exact match of sender and subject over the held-out relevant emails (one not kept, or
    not extracted, counts as a miss), and over those the system kept."""
    gold = {x: labels[x][0] for x in held if labels.get(x)}
    out: dict[str, Any] = {
        "relevant": len(gold),
        "kept_relevant": sum(1 for x in gold if x in rows),
    }
    for f in FIELDS:
        hits = sum(
            1
            for x, g in gold.items()
            if x in rows and (rows[x].get(f) or "").strip() == g[f].strip()
        )
        out[f"{f}_exact"] = round(hits / len(gold), 4) if gold else 0.0
        out[f"{f}_exact_of_kept"] = (
            round(hits / out["kept_relevant"], 4) if out["kept_relevant"] else 0.0
        )
    return out


def measure_overhead(base, names, folder, tune_labels, args, console) -> dict[str, Any]:
    """The baseline plan through Dagster, then in-process: seconds per batch outside the model."""
    console.print("measuring orchestration overhead (baseline plan, Dagster vs in-process)...")
    model = OpenAICompatibleModel(model=CHAMPION, base_url=base, max_concurrency=1)
    dag = run_once(
        "overhead",
        model,
        names,
        folder,
        tune_labels,
        policy=None,
        strategies=["direct"],
        console=console,
        batch_size=args.batch_size,
    )
    batches = len(dag["partition_seconds"])
    inproc = inprocess_same_plan(base, folder, names, args.batch_size)
    return {
        "batches": batches,
        "dagster_seconds": dag["wall_seconds"],
        "in_process_seconds": round(inproc, 2),
        "overhead_seconds_per_batch": round((dag["wall_seconds"] - inproc) / max(batches, 1), 3),
        "dagster_seconds_outside_model_calls_per_batch": round(
            (dag["wall_seconds"] - dag["model_seconds"]) / max(batches, 1), 3
        ),
    }


def report(runs, overhead, args, names, held, relevant, out, console) -> None:
    base = next((r for r in runs if r["system"] == "naive"), runs[0])
    shown = table(
        f"legal discovery, {args.endpoint} endpoint, {len(names)} emails "
        f"(scored on {len(held)} held-out, {len(relevant & held)} relevant)",
        (
            "system",
            "wall s",
            "$",
            "calls",
            "tokens",
            "speedup",
            "cost ratio",
            "P",
            "R",
            "F1",
            "sender EM",
            "subject EM",
            "errors",
        ),
        left=("system", "errors"),
    )
    for r in runs:
        r["speedup_vs_naive"] = (
            round(base["wall_seconds"] / r["wall_seconds"], 2) if r["wall_seconds"] else None
        )
        cost_b, cost_r = (
            (base["dollars"], r["dollars"])
            if args.endpoint == "sim"
            else (base["tokens"], r["tokens"])
        )
        r["cost_ratio_vs_naive"] = round(cost_b / cost_r, 2) if cost_r else None
        f, e = r["filter"], r["extraction"]
        shown.add_row(
            r["system"],
            f"{r['wall_seconds']:.1f}",
            f"{r['dollars']:.4f}",
            str(r["model_calls"]),
            str(r["tokens"]),
            f"{r['speedup_vs_naive']}x",
            f"{r['cost_ratio_vs_naive']}x",
            f"{f['precision']:.2f}",
            f"{f['recall']:.2f}",
            f"{f['f1']:.2f}",
            f"{e['sender_exact']:.2f}",
            f"{e['subject_exact']:.2f}",
            # the count where the system reported one: the listed errors stop at 10
            str(max(r.get("failures", 0), r.get("parse_failures", 0), len(r["errors"]))),
        )
    console.print(shown)
    if overhead:
        console.print(f"orchestration overhead: {overhead}")
    result = {
        "benchmark": "peer_enron",
        "endpoint": args.endpoint,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "emails": len(names),
        "heldout": len(held),
        "relevant_heldout": len(relevant & held),
        "split": "sha256(file name)[0] even = tune (labels given to pz-dagster's optimizer)",
        "cost_axis": "dollars at the profiles' prices" if args.endpoint == "sim" else "tokens",
        "runs": runs,
        "orchestration_overhead": overhead,
    }
    write_json(out, result)
    plot(runs, args.endpoint, out.with_suffix(".png"))
    console.print(f"results: {out} and {out.with_suffix('.png')}")


def plot(runs, endpoint, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    cost_key, cost_label = (
        ("dollars", "dollars") if endpoint == "sim" else ("tokens", "tokens sent and received")
    )
    for ax, key, xlabel in (
        (axes[0], cost_key, cost_label),
        (axes[1], "wall_seconds", "wall seconds"),
    ):
        for i, r in enumerate(runs):
            ax.scatter(r[key], r["filter"]["f1"], s=60)
            ax.annotate(
                r["system"],
                (r[key], r["filter"]["f1"]),
                textcoords="offset points",
                xytext=(5, 6 if i % 2 else -12),  # alternate: neighbours' labels do not collide
                fontsize=8,
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("filter F1 (held-out)")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    fig.suptitle(f"legal discovery on the {endpoint} endpoint: cost and time vs quality")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
