"""Retries, validation retries, dead endpoints, concurrency and rate limits, against the loopback
simulator (controlled behaviour) and the real llama.cpp server."""

from __future__ import annotations

import threading
import time

import pytest

from pz_dagster import ModelError, RecordFailure
from pz_dagster.models import OpenAICompatibleClient
from pz_dagster.models.limits import RateLimiter
from pz_dagster.models.retry import RetryPolicy
from pz_dagster.operators import run_operator
from pz_dagster.query import Dataset
from pz_dagster.testing import Fault, OpenAISimulator, SimulatedModel
from tests.conftest import free_port

FAST_RETRY = RetryPolicy(max_retries=3, initial_wait_s=0.01, max_wait_s=0.05, max_total_s=10)
ASK = [{"role": "user", "content": "Is the sky blue?"}]
YES_NO = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["YES", "NO"]}},
    "required": ["answer"],
    "additionalProperties": False,
}


def client(sim: OpenAISimulator, **kw) -> OpenAICompatibleClient:
    kw.setdefault("retry", FAST_RETRY)
    return OpenAICompatibleClient("sim", base_url=sim.base_url, **kw)


def first_n(n: int, fault: Fault):
    return lambda req, call: fault if call <= n else None


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_http_errors_are_retried(status):
    with OpenAISimulator({"sim": SimulatedModel()}, faults=first_n(2, Fault(status=status))) as sim:
        done = client(sim).complete(ASK, json_schema=YES_NO, max_tokens=8)
    assert done.text == '{"answer": "YES"}' and done.usage.retries == 2 and done.usage.calls == 1
    assert sim.statuses[status] == 2 and sim.statuses[200] == 1


def test_timeouts_are_retried():
    with OpenAISimulator({"sim": SimulatedModel()}, faults=first_n(1, Fault(delay_s=1.0))) as sim:
        done = client(sim, timeout_s=0.3).complete(ASK, max_tokens=8)
    assert done.usage.retries == 1 and sim.calls["sim"] == 2


def test_persistent_errors_are_bounded_and_become_a_record_failure():
    with OpenAISimulator({"sim": SimulatedModel(error_rate=1.0)}) as sim:
        start = time.monotonic()
        with pytest.raises(RecordFailure, match="HTTP 500 after 4 attempt") as err:
            client(sim).complete(ASK, max_tokens=8)
    assert time.monotonic() - start < 5
    assert err.value.usage.retries == 3 and sim.calls["sim"] == 4


def test_dead_endpoint_fails_clearly_without_hanging():
    dead = OpenAICompatibleClient(
        "sim", base_url=f"http://127.0.0.1:{free_port()}/v1", retry=FAST_RETRY
    )
    start = time.monotonic()
    with pytest.raises(ModelError, match=r"cannot reach the model endpoint .* after 4 attempt"):
        dead.complete(ASK, max_tokens=8)
    assert time.monotonic() - start < 10


def test_unknown_model_is_a_whole_asset_error():
    with (
        OpenAISimulator({"other": SimulatedModel()}) as sim,
        pytest.raises(ModelError, match="HTTP 404"),
    ):
        client(sim).complete(ASK, max_tokens=8)


def emails_with(n: int) -> list[dict]:
    return [
        {"record_id": f"r{i}", "filename": f"r{i}", "contents": f"email {i}", "error": None}
        for i in range(n)
    ]


SENDER = [{"name": "sender", "type": "str", "desc": "sender address"}]


def test_invalid_json_is_retried_once_with_the_error_then_recorded():
    node = Dataset.from_directory("/d").sem_map(SENDER).node
    bad = Fault(text="sender is bob")
    with OpenAISimulator({"sim": SimulatedModel()}, faults=lambda req, call: bad) as sim:
        result = run_operator(node, emails_with(3), client(sim))
    assert sim.calls["sim"] == 6  # one corrective retry per record, no more
    assert [r["sender"] for r in result.records] == [None, None, None]
    assert all(
        "not valid JSON" in r["error"] and "after one retry" in r["error"] for r in result.records
    )
    assert (
        result.stats.failures == 3
        and result.stats.usage.calls == 6
        and result.stats.usage.retries == 3
    )
    corrective = [r.messages for r in sim.requests if len(r.messages) == 4]
    assert len(corrective) == 3
    assert all(m[2] == {"role": "assistant", "content": "sender is bob"} for m in corrective)
    assert all("That answer is invalid" in m[3]["content"] for m in corrective)


def test_invalid_then_valid_answer_recovers():
    node = Dataset.from_directory("/d").sem_map(SENDER).node
    faults = lambda req, call: Fault(text='{"sender": 42}') if call == 1 else None  # noqa: E731
    with OpenAISimulator({"sim": SimulatedModel()}, faults=faults) as sim:
        result = run_operator(node, emails_with(1), client(sim))
    assert result.records[0]["sender"] == "unknown" and result.records[0]["error"] is None
    assert result.stats.failures == 0 and result.stats.usage.retries == 1


def test_cut_off_answer_is_a_recorded_failure():
    node = Dataset.from_directory("/d").sem_filter("is it spam").node
    cut = Fault(text='{"answer": "YE' + " " * 200)
    with OpenAISimulator({"sim": SimulatedModel()}, faults=lambda r, c: cut) as sim:
        result = run_operator(node, emails_with(2), client(sim))
    assert [r["record_id"] for r in result.records] == ["r0", "r1"]  # kept, flagged, not dropped
    assert all(r["error"].startswith("sem_filter_1: answer cut off") for r in result.records)


def test_requests_run_concurrently_up_to_the_limit():
    node = Dataset.from_directory("/d").sem_filter("is it spam").node
    # Calls long enough that all 8 workers overlap: at 0.2 s the peak read 7 in 3 of 12 runs.
    with OpenAISimulator({"sim": SimulatedModel(latency_s=0.6)}) as sim:
        result = run_operator(node, emails_with(24), client(sim, max_concurrency=8))
    # What the simulator saw at once, not a wall-clock bound (that failed on a loaded machine;
    # speed is benchmarks/throughput.py's business).
    assert sim.max_in_flight == 8 and len(result.records) == 24


def test_dead_endpoint_fails_the_operator_under_concurrency():
    node = Dataset.from_directory("/d").sem_filter("is it spam").node
    dead = OpenAICompatibleClient(
        "sim", base_url=f"http://127.0.0.1:{free_port()}/v1", retry=FAST_RETRY, max_concurrency=4
    )
    with pytest.raises(ModelError, match="cannot reach"):
        run_operator(node, emails_with(8), dead)


def test_rate_limiter_blocks_past_the_budget():
    limiter = RateLimiter(rpm=2)
    assert limiter.acquire() == 0.0 and limiter.acquire() == 0.0
    third = threading.Thread(target=limiter.acquire, daemon=True)
    third.start()
    third.join(0.5)
    assert third.is_alive(), "a third request within the minute must wait"
    tokens = RateLimiter(tpm=1000)
    assert tokens.acquire(600) == 0.0
    blocked = threading.Thread(target=tokens.acquire, args=(600,), daemon=True)
    blocked.start()
    blocked.join(0.5)
    assert blocked.is_alive()


def test_simulator_rate_limit_is_retried_by_the_client():
    with OpenAISimulator({"sim": SimulatedModel(rpm_limit=1)}) as sim:
        c = client(sim, retry=RetryPolicy(max_retries=2, initial_wait_s=0.01, max_wait_s=0.02))
        c.complete(ASK, max_tokens=8)
        with pytest.raises(RecordFailure, match="HTTP 429"):
            c.complete(ASK, max_tokens=8)
    assert sim.statuses[429] == 3


@pytest.mark.slow
def test_real_llama_server_timeouts_are_retried_then_recorded(llama_server):
    c = OpenAICompatibleClient(
        "smollm2",
        base_url=llama_server,
        timeout_s=0.001,
        retry=RetryPolicy(max_retries=2, initial_wait_s=0.01, max_wait_s=0.05),
    )
    with pytest.raises(RecordFailure, match=r"timed out 3 time\(s\)") as err:
        c.complete([{"role": "user", "content": "hi"}], max_tokens=1)
    assert err.value.usage.retries == 2


@pytest.mark.slow
def test_real_llama_server_structured_output(llama_server):
    c = OpenAICompatibleClient("smollm2", base_url=llama_server, context_tokens=2048)
    done = c.complete(
        [{"role": "user", "content": "Is the sky blue? Answer YES or NO."}],
        json_schema=YES_NO,
        max_tokens=16,
    )
    assert done.text.replace(" ", "") in ('{"answer":"YES"}', '{"answer":"NO"}')
    assert done.usage.input_tokens > 5 and done.usage.dollars == 0.0


@pytest.mark.slow
def test_real_llama_server_http_500_is_retried_then_recorded(llama_server):
    # llama-cpp-python's server answers OpenAI's json_schema response_format with HTTP 500; forcing
    # that form (no auto-fallback) gives a real server error to retry.
    c = OpenAICompatibleClient(
        "smollm2",
        base_url=llama_server,
        structured_output="json_schema",
        retry=RetryPolicy(max_retries=2, initial_wait_s=0.01, max_wait_s=0.05),
    )
    with pytest.raises(RecordFailure, match="HTTP 500 after 3 attempt") as err:
        c.complete(ASK, json_schema=YES_NO, max_tokens=8)
    assert err.value.usage.retries == 2


def test_the_simulator_renders_free_text_answers_and_degrades_the_value_not_the_format():
    """Another system's prompt contract (``Answer: True``): a wrong answer is still well-formed,
    and log-probabilities come back when asked (a cascade's helper model scores with them)."""
    import json
    import math
    import urllib.request

    from pz_dagster.testing import Rendered

    def oracle(req):
        return Rendered("about Raptor" in req.prompt, lambda v: f"Answer: {v}")

    models = {"right": SimulatedModel(accuracy=1.0), "wrong": SimulatedModel(accuracy=0.0)}
    with OpenAISimulator(models, oracle=oracle) as sim:

        def ask(model: str, text: str) -> dict:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": text}],
                "logprobs": True,
                "top_logprobs": 2,
            }
            req = urllib.request.Request(
                f"{sim.base_url}/chat/completions",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())["choices"][0]

        right, wrong = ask("right", "about Raptor"), ask("wrong", "about Raptor")
        assert right["message"]["content"] == "Answer: True"
        assert wrong["message"]["content"] == "Answer: False"
        token = right["logprobs"]["content"][1]
        assert token["token"] == "True" and math.exp(token["logprob"]) > 0.99
        assert [t["token"] for t in token["top_logprobs"]] == ["True", "False"]
        assert ask("right", "about lunch")["message"]["content"] == "Answer: False"
