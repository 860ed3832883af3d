"""Run the Palimpzest demo's legal-discovery query over a list of Enron emails with LOTUS (issue 9).

Runs in its own virtualenv (benchmarks/peers/install.sh), from the repository root:

    benchmarks/peers/.venv-lotus/bin/python -m benchmarks.peers.run_lotus \\
        --base-url http://127.0.0.1:8080/v1 --model smollm2 --files files.txt --out lotus.json

The query is written with LOTUS's own pandas API: a DataFrame with one row per email (``filename``,
``email``), two chained ``df.sem_filter("The {email} ...")`` with the demo's two predicates, then
``df.sem_extract(["email"], {"sender": ..., "subject": ...})``. LOTUS's defaults are kept:
no operator cache, ``default=True`` for a filter answer it cannot parse (it keeps the record),
LM(max_batch_size=64) concurrency, a 512-token completion budget unless ``--max-tokens``.

Cascade
    LOTUS's ``sem_filter`` cascade needs a proxy scorer besides the main model: a helper LM (whose
    answer log-probabilities it calibrates on a sample labelled by the main LM) or an embedding
    retriever. With one endpoint model neither exists, so the cascade is off by default. With
    ``--helper-model NAME`` (a second model on the same endpoint) the filters run with
    ``CascadeArgs(proxy_model=HELPER_LM, recall_target, precision_target, sampling_percentage,
    failure_probability)``; that needs the endpoint to return ``logprobs``/``top_logprobs``.

Endpoint
    ``LM(model="openai/<model>", api_base=<url>, api_key=<key>)``: litellm's OpenAI-compatible
    route (the "openai/" prefix is stripped from the model name sent). LOTUS sends its bound as
    ``max_completion_tokens``; llama.cpp's server ignores that field, so with ``--max-tokens`` the
    runner also puts ``max_tokens`` into the LM's request kwargs (``lm.kwargs``), which litellm
    passes on. ``--usd-per-1m-input/--usd-per-1m-output`` register prices for the model with
    ``litellm.register_model`` so that LOTUS's own cost accounting (litellm's completion_cost)
    reports dollars; otherwise it has no price for a custom model and reports $0.

Offline
    ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (litellm's bundled cost map instead of fetching it),
    ``HF_HUB_OFFLINE=1``; torch and sentence-transformers are installed (CPU) but never used by
    this query. An audit hook refuses (and reports in ``notes``) any socket connection or DNS
    lookup to a non-loopback host.

Counting
    Calls go through a loopback counting proxy in this process: ``model_calls``, ``input_tokens``
    and ``output_tokens`` are counted there from the HTTP traffic (every request, retries
    included). LOTUS's own ``lm.stats`` are reported under ``peer_stats``. Answers LOTUS could not
    parse (filter: kept by default; extract: empty) are counted in ``parse_failures`` and listed in
    ``errors``. ``--log-requests FILE`` writes the first ``--log-limit`` request/response pairs.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import sys
import time
from typing import Any

from benchmarks.peers.common import (  # stdlib only: this runs in the peer's virtualenv
    begin,
    common_args,
    finish,
    record_traffic,
)

SYSTEM = "lotus"
FILTERS = [
    'The {email} refers to a fraudulent scheme (i.e., "Raptor", "Deathstar", "Chewco", and/or "Fat Boy")',
    "The {email} is not quoting from a news article or an article written by someone outside of Enron",
]
FIELDS = {
    "sender": "The email address of the sender",
    "subject": "The subject of the email",
}

# --- LOTUS ------------------------------------------------------------------------------------


class ParseFailures(logging.Handler):
    """LOTUS reports unparseable answers at INFO ("Failed to parse ..."): count and keep them."""

    def __init__(self, limit: int = 50):
        super().__init__(logging.INFO)
        self.messages: list[str] = []
        self.count = 0
        self.limit = limit

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "Failed to parse" in msg:
            self.count += 1
            if len(self.messages) < self.limit:
                self.messages.append(f"lotus: {msg.strip()[:300]}")


def main(argv: list[str] | None = None) -> int:
    ap = common_args(__doc__.splitlines()[0])
    ap.add_argument(
        "--helper-model",
        default=None,
        help="second endpoint model: enables LOTUS's helper-LM filter cascade",
    )
    ap.add_argument("--recall-target", type=float, default=0.9)
    ap.add_argument("--precision-target", type=float, default=0.9)
    ap.add_argument("--sampling-percentage", type=float, default=0.5)
    ap.add_argument("--failure-probability", type=float, default=0.2)
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    files, out_path, result, proxy, capture = begin(SYSTEM, args)
    errors, notes = result["errors"], result["notes"]
    parse_failures = ParseFailures()
    lms: list[Any] = []
    try:
        t0 = time.perf_counter()
        import litellm
        import lotus
        import pandas as pd
        from lotus.models import LM
        from lotus.types import CascadeArgs, ProxyModel

        result["import_seconds"] = round(time.perf_counter() - t0, 3)
        result["version"] = importlib.metadata.version("lotus-ai")
        for name in ("lotus", "LiteLLM", "litellm"):
            logging.getLogger(name).addHandler(capture)
        logging.getLogger("lotus").addHandler(parse_failures)

        def make_lm(name: str) -> Any:
            model_id = f"openai/{name}"
            if args.usd_per_1m_input or args.usd_per_1m_output:
                litellm.register_model(
                    {
                        model_id: {
                            "input_cost_per_token": args.usd_per_1m_input / 1e6,
                            "output_cost_per_token": args.usd_per_1m_output / 1e6,
                            "litellm_provider": "openai",
                            "mode": "chat",
                        }
                    }
                )
            kw: dict[str, Any] = {"api_base": proxy.base_url, "api_key": args.api_key}
            if args.max_tokens:
                kw["max_tokens"] = args.max_tokens
            lm = LM(model=model_id, **kw)
            if args.max_tokens:
                lm.kwargs["max_tokens"] = args.max_tokens  # llama.cpp ignores max_completion_tokens
            lms.append(lm)
            return lm

        lm = make_lm(args.model)
        cascade = None
        if args.helper_model:
            lotus.settings.configure(lm=lm, helper_lm=make_lm(args.helper_model))
            cascade = CascadeArgs(
                proxy_model=ProxyModel.HELPER_LM,
                recall_target=args.recall_target,
                precision_target=args.precision_target,
                sampling_percentage=args.sampling_percentage,
                failure_probability=args.failure_probability,
            )
            notes.append(
                f"filter cascade: helper LM {args.helper_model}, "
                + ", ".join(
                    f"{k}={getattr(cascade, k)}"
                    for k in (
                        "recall_target",
                        "precision_target",
                        "sampling_percentage",
                        "failure_probability",
                    )
                )
            )
        else:
            lotus.settings.configure(lm=lm)
            notes.append("filter cascade off: it needs a helper LM or an embedding model")
        shown = {k: ("***" if k == "api_key" else v) for k, v in lm.kwargs.items()}
        notes.append(f"LM request kwargs: {json.dumps(shown, default=str, sort_keys=True)}")

        df = pd.DataFrame(
            {
                "filename": [p.name for p in files],
                "email": [p.read_text(encoding="utf-8", errors="replace") for p in files],
            }
        )
        t0 = time.perf_counter()
        for instruction in FILTERS:
            if len(df) == 0:
                break
            if cascade is not None:
                # LOTUS 1.2.4's cascade samples positions and reads them with .loc: after a first
                # filter the index has gaps (KeyError '[1, 5, 0] not in index'); renumber first
                df = df.reset_index(drop=True)
                df, stats = df.sem_filter(instruction, cascade_args=cascade, return_stats=True)
                result["peer_stats"].setdefault("filter_cascade_stats", []).append(
                    {k: v for k, v in stats.items() if k != "cascade_args"}
                )
            else:
                df = df.sem_filter(instruction)
        if len(df):
            df = df.sem_extract(["email"], FIELDS)
        result["query_seconds"] = round(time.perf_counter() - t0, 3)

        result["kept"] = df["filename"].tolist()
        missing = {k: 0 for k in FIELDS}
        for _, row in df.iterrows():
            values = {}
            for k in FIELDS:
                v = row.get(k) if k in df.columns else None
                v = None if v is None or (isinstance(v, float) and v != v) else v
                missing[k] += v is None
                values[k] = v
            result["extracted"][row["filename"]] = values
        for k, n in missing.items():
            if n:
                errors.append(f"sem_extract gave no {k!r} for {n} of {len(df)} kept emails")
    except BaseException as e:  # noqa: BLE001 - a failed run still writes its JSON
        errors.append(f"run failed: {type(e).__name__}: {e}")
        if isinstance(e, KeyboardInterrupt):
            raise
    finally:
        record_traffic(result, proxy, args)
        if lms:
            usage = [lm_.stats.physical_usage for lm_ in lms]
            result["dollars"] = sum(u.total_cost for u in usage)
            result["peer_stats"].update(
                {
                    "prompt_tokens": sum(u.prompt_tokens for u in usage),
                    "completion_tokens": sum(u.completion_tokens for u in usage),
                    "total_cost": result["dollars"],
                    "cache_hits": sum(lm_.stats.cache_hits for lm_ in lms),
                }
            )
        result["parse_failures"] = parse_failures.count
        errors.extend(parse_failures.messages)
        code = finish(
            result,
            capture,
            t_start,
            out_path,
            (
                "lotus-ai",
                "litellm",
                "openai",
                "pandas",
                "numpy",
                "sentence-transformers",
                "torch",
            ),
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
