"""Run the Palimpzest demo's legal-discovery query over a list of Enron emails (issue 9).

Runs in its own virtualenv (benchmarks/peers/install.sh), from the repository root:

    benchmarks/peers/.venv-palimpzest/bin/python -m benchmarks.peers.run_palimpzest \\
        --base-url http://127.0.0.1:8080/v1 --model smollm2 --files files.txt --out pz.json

The query is written with Palimpzest's own API, as in its enron demo: a root ``IterDataset`` of
``TextFile`` records (filename, contents), two ``sem_filter``s and a ``sem_map`` adding ``sender``
and ``subject``, run with ``QueryProcessorConfig(policy=MaxQuality())`` and Palimpzest's default
optimizer ("pareto") and execution strategy ("parallel", 64 workers), with ``available_models``
narrowed to the one endpoint model.

How the endpoint model is given to Palimpzest (least invasive way found)
    Palimpzest only accepts model ids it has metrics for, EXCEPT a ``pz.Model`` built with
    ``api_base`` (its vLLM path, see its demos/vllm-demo.py): ``pz.Model("openai/<model>",
    api_base=<url>, max_tokens=N)``. Such a model gets predicted specs (quality from a name lookup,
    $0 per token, ``is_vllm_model``), and every call goes through
    ``litellm.completion(model="openai/<model>", api_base=<url>, api_key=$VLLM_API_KEY, **kwargs)``,
    where the extra Model kwargs (here ``max_tokens``) are passed on. No Palimpzest code is patched.
    ``--usd-per-1m-input/--usd-per-1m-output`` write prices into that Model's specs, so that its
    cost model and ``total_execution_cost`` see the price of a simulated paid model.

Offline
    * ``import palimpzest`` registers its built-in models, and the first one makes
      ``ModelMetricsManager`` GET https://palimpzest-research.s3.us-east-1.amazonaws.com/
      pz_models_information.json; offline that fails, the cache stays empty and the import dies with
      "Palimpzest currently does not contain information about this model". This runner pre-seeds
      that request without network: ``requests.get`` is wrapped, for the duration of the import
      only, to answer that one URL from ``--model-info FILE`` (a copy of that JSON) or, by
      default, from placeholder specs for any built-in model (never used: ``available_models``
      holds only the endpoint model).
    * ``sentence_transformers`` (and so torch) is not installed in the venv (no CPU torch wheel for
      Python 3.12 here); palimpzest's topk.py and join.py import it at module level, so a stub
      module stands in for it (its classes raise if instantiated; this query uses no embeddings).
    * ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (litellm's bundled cost map), ``ANONYMIZED_TELEMETRY=
      False`` (chromadb), ``HF_HUB_OFFLINE=1``; and an audit hook refuses (and reports in
      ``notes``) any socket connection or DNS lookup to a non-loopback host.

Counting
    Calls go through a loopback counting proxy in this process: ``model_calls``, ``input_tokens``
    and ``output_tokens`` are counted there from the HTTP traffic (every request, retries
    included; tokens from the responses' ``usage``). Palimpzest's own execution stats are reported
    under ``peer_stats`` (it reports no input tokens for api_base models, and $0 unless prices are
    given). ``--log-requests FILE`` writes the first ``--log-limit`` request/response pairs as JSON
    lines.

Palimpzest writes ``parse-answer-errors/`` into its working directory when it cannot parse an
answer (and then drops the record for a filter): the runner works in a scratch directory and
reports how many such files appeared, plus every ERROR/WARNING Palimpzest logged, in ``errors``.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from benchmarks.peers.common import (  # stdlib only: this runs in the peer's virtualenv
    begin,
    common_args,
    finish,
    record_traffic,
)

SYSTEM = "palimpzest"
FILTERS = [
    'The email refers to a fraudulent scheme (i.e., "Raptor", "Deathstar", "Chewco", and/or "Fat Boy")',
    "The email is not quoting from a news article or an article written by someone outside of Enron",
]
FIELDS = [
    {"name": "sender", "type": str, "desc": "The email address of the sender"},
    {"name": "subject", "type": str, "desc": "The subject of the email"},
]
PZ_MODEL_DATA_URL = (
    "https://palimpzest-research.s3.us-east-1.amazonaws.com/pz_models_information.json"
)

# --- Palimpzest -------------------------------------------------------------------------------


class _PlaceholderMetrics(dict):
    """Stands in for pz_models_information.json: any built-in model id gets neutral specs."""

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self:
            return dict.__getitem__(self, key)
        provider = str(key).split("/")[0] if "/" in str(key) else None
        return {
            "provider": provider,
            "is_text_model": True,
            "MMLU_Pro_score": 0.0,
            "usd_per_input_token": 0.0,
            "usd_per_output_token": 0.0,
            "seconds_per_output_token": 0.0,
        }


class _SeedResponse:
    status_code = 200

    def __init__(self, data: Any):
        self._data = data

    def json(self) -> Any:
        return self._data

    def raise_for_status(self) -> None:
        pass


def import_palimpzest(model_info: str | None, notes: list[str]) -> types.ModuleType:
    """``import palimpzest`` with its model-metrics download answered locally (see docstring)."""
    import importlib.util

    if importlib.util.find_spec("sentence_transformers") is None:
        stub = types.ModuleType("sentence_transformers")

        class _NoTorch:
            def __init__(self, *a: Any, **k: Any):
                raise RuntimeError("sentence-transformers is not installed in this venv (no torch)")

        stub.SentenceTransformer = _NoTorch  # type: ignore[attr-defined]
        stub.CrossEncoder = _NoTorch  # type: ignore[attr-defined]
        sys.modules["sentence_transformers"] = stub
        notes.append(
            "sentence_transformers is a stub module (not installed: it needs torch); "
            "embedding operators unavailable, none used by this query"
        )

    import requests

    seed: Any = json.loads(Path(model_info).read_text()) if model_info else _PlaceholderMetrics()
    notes.append(
        "pz_models_information.json pre-seeded from "
        + (model_info if model_info else "placeholder specs (built-in models unused)")
    )
    real_get = requests.get

    def get(url: Any, *a: Any, **k: Any) -> Any:
        if str(url) == PZ_MODEL_DATA_URL:
            return _SeedResponse(seed)
        return real_get(url, *a, **k)

    requests.get = get  # type: ignore[assignment]
    try:
        import palimpzest as pz
    finally:
        requests.get = real_get  # type: ignore[assignment]
    return pz


def main(argv: list[str] | None = None) -> int:
    ap = common_args(__doc__.splitlines()[0])
    ap.add_argument(
        "--model-info",
        default=None,
        help="local copy of pz_models_information.json (default: placeholders)",
    )
    ap.add_argument(
        "--policy",
        default="MaxQuality",
        help="Palimpzest policy class (MaxQuality, MinCost, MinTime)",
    )
    ap.add_argument(
        "--max-workers",
        type=int,
        default=None,
        help="Palimpzest's max_workers (default: its own, 64)",
    )
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    files, out_path, result, proxy, capture = begin(SYSTEM, args)
    errors, notes = result["errors"], result["notes"]
    model_info = str(Path(args.model_info).resolve()) if args.model_info else None
    for name in ("palimpzest", "LiteLLM", "litellm"):
        logging.getLogger(name).addHandler(capture)
    workdir = Path(tempfile.mkdtemp(prefix="pz-run-"))
    os.chdir(workdir)  # palimpzest writes parse-answer-errors/ into the working directory
    os.environ["VLLM_API_KEY"] = args.api_key  # what palimpzest sends to an api_base model
    try:
        t0 = time.perf_counter()
        pz = import_palimpzest(model_info, notes)
        result["import_seconds"] = round(time.perf_counter() - t0, 3)
        result["version"] = importlib.metadata.version("palimpzest")
        from palimpzest.core.lib.schemas import TextFile

        class EmailFiles(pz.IterDataset):
            """The given email files as TextFile records (as the demo's EnronReader)."""

            def __init__(self, paths: list[Path]):
                self.paths = paths
                super().__init__(id="enron-emails", schema=TextFile)

            def __len__(self) -> int:
                return len(self.paths)

            def __getitem__(self, idx: int) -> dict:
                p = self.paths[idx]
                return {
                    "filename": p.name,
                    "contents": p.read_text(encoding="utf-8", errors="replace"),
                }

        model_kwargs = {"max_tokens": args.max_tokens} if args.max_tokens else {}
        model = pz.Model(f"openai/{args.model}", api_base=proxy.base_url, **model_kwargs)
        if args.usd_per_1m_input or args.usd_per_1m_output:
            model.model_specs["usd_per_input_token"] = args.usd_per_1m_input / 1e6
            model.model_specs["usd_per_output_token"] = args.usd_per_1m_output / 1e6
        notes.append(
            f"model specs Palimpzest assumed: {json.dumps(model.model_specs, sort_keys=True)}"
        )

        plan = EmailFiles(files)
        for f in FILTERS:
            plan = plan.sem_filter(f)
        plan = plan.sem_map(FIELDS)
        policy = getattr(pz, args.policy)()
        cfg: dict[str, Any] = dict(policy=policy, available_models=[model], progress=False)
        if args.max_workers:
            cfg["max_workers"] = args.max_workers
        config = pz.QueryProcessorConfig(**cfg)

        t0 = time.perf_counter()
        output = plan.run(config)
        result["query_seconds"] = round(time.perf_counter() - t0, 3)

        for rec in output:
            fields = rec.to_dict()
            name = fields["filename"]
            result["kept"].append(name)
            result["extracted"][name] = {k: fields.get(k) for k in ("sender", "subject")}
        stats = output.execution_stats
        if stats is not None:
            result["dollars"] = stats.total_execution_cost
            result["peer_stats"] = {
                "total_execution_time": stats.total_execution_time,
                "optimization_time": stats.optimization_time,
                "total_execution_cost": stats.total_execution_cost,
                "input_text_tokens": stats.input_text_tokens,
                "output_text_tokens": stats.output_text_tokens,
                "plan_strs": stats.plan_strs,
            }
            llm_calls = 0
            for ps in stats.plan_stats.values():
                for op in getattr(ps, "operator_stats", {}).values():
                    for rs in getattr(op, "record_op_stats_lst", []):
                        llm_calls += int(getattr(rs, "total_llm_calls", 0) or 0)
            result["peer_stats"]["total_llm_calls"] = llm_calls
    except BaseException as e:  # noqa: BLE001 - a failed run still writes its JSON
        errors.append(f"run failed: {type(e).__name__}: {e}")
        if isinstance(e, KeyboardInterrupt):
            raise
    finally:
        record_traffic(result, proxy, args)
        parse_dir = workdir / "parse-answer-errors"
        n_parse = len(list(parse_dir.iterdir())) if parse_dir.is_dir() else 0
        result["parse_failures"] = n_parse
        if not n_parse:
            os.chdir(tempfile.gettempdir())
            shutil.rmtree(workdir, ignore_errors=True)
        if n_parse:
            errors.append(
                f"{n_parse} unparseable answers (palimpzest dropped/nulled them; "
                f"texts in {parse_dir})"
            )
        code = finish(
            result,
            capture,
            t_start,
            out_path,
            (
                "palimpzest",
                "litellm",
                "openai",
                "pydantic",
                "numpy",
                "chromadb",
                "sentence-transformers",
                "torch",
            ),
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
