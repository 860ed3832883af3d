"""A loopback OpenAI-compatible *simulator* for tests and benchmarks.

It is not a model. It speaks the chat-completions API on 127.0.0.1 with per-model latency,
HTTP error rate, requests-per-minute limit and answer accuracy, so that tests can exercise
retries, rate limits, validation failures and concurrency deterministically, and benchmarks can
measure the client and the engine rather than a real model.

Answers come from an *oracle*: a function of the request that returns the correct JSON answer
(for example from a labeled dataset). With probability ``1 - accuracy`` the simulator returns a
deliberately wrong but schema-valid answer instead. Without an oracle it returns a schema-valid
placeholder. A *fault script* can force a given answer per request (HTTP status, delay, raw text).

    >>> with OpenAISimulator({"sim-small": SimulatedModel(latency_s=0.01)}) as sim:
    ...     sim.base_url.startswith("http://127.0.0.1:")
    True
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class SimulatedModel:
    """Behaviour profile of one simulated model."""

    latency_s: float = 0.0  # fixed time per call
    seconds_per_output_token: float = 0.0
    error_rate: float = 0.0  # fraction of calls answered with HTTP 500
    rpm_limit: int | None = None  # requests per rolling minute before HTTP 429
    accuracy: float = 1.0  # probability of the oracle's answer
    # a confidence that tells right answers from wrong ones, imperfectly (a calibrated small
    # model): a "confidence" field of the answer and the log-probabilities are drawn per
    # request, higher on average when the answer is right (see ``calibrated_confidence``);
    # off: the log-probabilities say ``accuracy`` and the oracle's confidence stands
    calibrated: bool = False


@dataclass(frozen=True)
class Fault:
    """A forced answer for one request: an HTTP status, a delay before answering, raw text."""

    status: int = 200
    delay_s: float = 0.0
    text: str | None = None


@dataclass(frozen=True)
class Rendered:
    """An oracle's answer in a free-text format of its own (another system's prompt contract,
    such as ``ANSWER: TRUE``): the simulator degrades ``value`` (by ``schema``, when given,
    else by its type: a bool flips) and sends ``render(value)``, so that a wrong answer is
    still well-formed, as a real model's wrong answer usually is.

    >>> r = Rendered(True, lambda v: f"Answer: {v}")
    >>> r.render(wrong_answer(r.value, r.schema, random.Random(0)))
    'Answer: False'
    """

    value: Any
    render: Callable[[Any], str]
    schema: dict[str, Any] | None = None


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    schema: dict[str, Any] | None
    max_tokens: int | None
    body: dict[str, Any] = field(repr=False, default_factory=dict)
    authorization: str | None = field(repr=False, default=None)
    confidence: float | None = field(repr=False, default=None)  # a calibrated model's, if drawn

    @property
    def prompt(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.messages)


Oracle = Callable[[ChatRequest], Any]
FaultScript = Callable[[ChatRequest, int], Fault | None]  # (request, call number) -> fault


def placeholder(schema: dict[str, Any] | None) -> Any:
    """A schema-valid value: first enum value, zero, false, "unknown", empty list, objects filled;
    null where the schema allows it (a union with a null branch, a list of types with "null"),
    else a union's first branch.

    >>> placeholder({"anyOf": [{"type": "string"}, {"type": "null"}]}), placeholder({"type": ["integer", "null"]})
    (None, None)
    >>> placeholder({"anyOf": [{"type": "integer"}, {"type": "string"}]})
    0
    """
    if not schema:
        return "ok"
    if "enum" in schema:
        return schema["enum"][0]
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        if any(b.get("type") == "null" for b in branches):
            return None
        return placeholder(branches[0])
    t = schema.get("type")
    if isinstance(t, list):
        return None if "null" in t else placeholder(dict(schema, type=t[0]))
    if t == "object":
        return {k: placeholder(v) for k, v in schema.get("properties", {}).items()}
    if t == "array":
        return []
    if t in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        return int(low) if t == "integer" else float(low)
    return {"string": "unknown", "boolean": False}.get(t)


def complete(answer: Any, schema: dict[str, Any] | None) -> Any:
    """The oracle's answer with the properties it left out filled with placeholders, so that
    it stays schema-valid when a strategy asks for more (a chain of thought's reasoning).

    >>> complete({"answer": "YES"}, {"type": "object", "properties": {"reasoning": {"type": "string"}, "answer": {"enum": ["YES", "NO"]}}})
    {'reasoning': 'unknown', 'answer': 'YES'}
    """
    if not isinstance(answer, dict) or not schema or schema.get("type") != "object":
        return answer
    props = schema.get("properties", {})
    return {k: answer[k] if k in answer else placeholder(v) for k, v in props.items()} | {
        k: v for k, v in answer.items() if k not in props
    }


def wrong_answer(correct: Any, schema: dict[str, Any] | None, rng: random.Random) -> Any:
    """A schema-valid answer that differs from ``correct`` where the schema allows it."""
    if isinstance(correct, dict) and schema and schema.get("type") == "object":
        props = schema.get("properties", {})
        out = dict(correct)
        if props:
            k = rng.choice(sorted(props))
            out[k] = wrong_answer(correct.get(k), props[k], rng)
        return out
    if schema and "enum" in schema:
        others = [v for v in schema["enum"] if v != correct]
        return rng.choice(others) if others else correct
    if isinstance(correct, bool):
        return not correct
    if isinstance(correct, str):
        return correct[::-1] + "?" if correct else "wrong"
    if isinstance(correct, (int, float)):
        return correct + 1
    return correct


def _less_confidence(
    answer: Any, schema: dict[str, Any] | None
) -> tuple[Any, dict[str, Any] | None]:
    """What a wrong answer alters, and its schema: everything but a confidence (which a
    calibrated model sets apart, and an uncalibrated one keeps)."""
    props = (schema or {}).get("properties") or {}
    if not isinstance(answer, dict) or "confidence" not in answer or len(props) < 2:
        return answer, schema
    rest = {k: v for k, v in props.items() if k != "confidence"}
    return {k: v for k, v in answer.items() if k != "confidence"}, {
        **(schema or {}),
        "properties": rest,
    }


def _schema_of(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema")
    if fmt.get("type") == "json_object":
        return fmt.get("schema")
    return None


_OPPOSITE = {"True": "False", "False": "True", "TRUE": "FALSE", "FALSE": "TRUE", "YES": "NO"}
_OPPOSITE |= {v: k for k, v in _OPPOSITE.items()} | {"true": "false", "false": "true"}


def calibrated_confidence(draw: float, right: bool) -> float:
    """The probability a calibrated model gives its own answer, from a uniform ``draw``: in
    [0.5, 1], 0.83 on average when the answer is right and 0.67 when it is wrong, so a high
    confidence makes a right answer likelier without making it sure.

    >>> calibrated_confidence(0.25, True), calibrated_confidence(0.25, False)
    (0.75, 0.53125)
    """
    return 0.5 + 0.5 * (draw**0.5 if right else draw**2)


def _with_confidence(answer: Any, schema: dict[str, Any] | None, p: float) -> Any:
    """``answer`` with its integer ``confidence`` field (if the schema has one) set from the
    probability ``p`` (0.5 -> its minimum, 1 -> its maximum)."""
    prop = ((schema or {}).get("properties") or {}).get("confidence")
    if not isinstance(answer, dict) or not prop or prop.get("type") != "integer":
        return answer
    low, high = int(prop.get("minimum", 1)), int(prop.get("maximum", 5))
    return answer | {"confidence": low + round((high - low) * (2 * p - 1))}


def simulated_logprobs(text: str, confidence: float, top: int) -> dict[str, Any]:
    """``choices[0].logprobs`` for ``text``: one entry per word, the word at the model's
    ``confidence`` (its accuracy: a calibrated model) and, among its ``top`` alternatives, the
    opposite answer word (True/False, YES/NO) or a variant with the rest. For systems that turn
    answer-token probabilities into a score (a cascade's helper model).

    >>> lp = simulated_logprobs("Answer: True", 0.9, 2)["content"][1]
    >>> lp["token"], round(math.exp(lp["logprob"]), 2), lp["top_logprobs"][1]["token"]
    ('True', 0.9, 'False')
    """
    p = min(max(confidence, 1e-6), 1 - 1e-6)
    content = []
    for word in text.split():
        alt = _OPPOSITE.get(word.strip(".,:;\"'"), word + "?")
        pairs = [(word, math.log(p)), (alt, math.log(1 - p))][: max(top, 0) or 1]
        content.append(
            {
                "token": word,
                "logprob": math.log(p),
                "bytes": list(word.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in pairs
                ],
            }
        )
    return {"content": content}


def simulated_embeddings(body: dict[str, Any], dims: int = 16) -> dict[str, Any]:
    """Deterministic bag-of-words vectors: texts sharing words get similar vectors."""
    texts = body.get("input") or []
    texts = [texts] if isinstance(texts, str) else texts
    data = []
    for i, text in enumerate(texts):
        vec = [0.0] * dims
        for word in str(text).lower().split():
            vec[int(hashlib.sha256(word.encode()).hexdigest(), 16) % dims] += 1.0
        data.append({"object": "embedding", "index": i, "embedding": vec})
    tokens = sum(approx_tokens(str(t)) for t in texts)
    return {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


class OpenAISimulator:
    """Threaded HTTP server on 127.0.0.1 speaking ``/v1/chat/completions`` and ``/v1/models``."""

    def __init__(
        self,
        models: dict[str, SimulatedModel],
        *,
        oracle: Oracle | None = None,
        faults: FaultScript | None = None,
        seed: int = 0,
        port: int = 0,
    ):
        self.models = dict(models)
        self.oracle = oracle
        self.faults = faults
        self._rng = random.Random(seed)
        self._seed = seed
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {m: deque() for m in self.models}
        self.calls: Counter[str] = Counter()  # by model
        self.statuses: Counter[int] = Counter()
        self.requests: list[ChatRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> OpenAISimulator:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OpenAISimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- behaviour ---------------------------------------------------------------------

    def _draw(self, req: ChatRequest, what: str = "") -> float:
        """A uniform number in [0, 1) fixed by the seed, the model and the messages (and
        ``what`` it is drawn for, so that two draws of one request are independent)."""
        key = [self._seed, req.model, req.messages] + ([what] if what else [])
        key = json.dumps(key, sort_keys=True, default=str)
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64

    def _decide(self, req: ChatRequest) -> tuple[int, float, str | None]:
        """(status, delay, body text) for one request; all randomness under one lock."""
        profile = self.models.get(req.model)
        with self._lock:
            self.calls[req.model] += 1
            self.requests.append(req)
            n = self.calls[req.model]
            if profile is None:
                return 404, 0.0, None
            fault = self.faults(req, n) if self.faults else None
            if fault is not None:
                return fault.status, fault.delay_s, fault.text
            if profile.rpm_limit is not None:
                now, window = time.monotonic(), self._windows[req.model]
                while window and now - window[0] > 60:
                    window.popleft()
                if len(window) >= profile.rpm_limit:
                    return 429, 0.0, None
                window.append(now)
            if profile.error_rate and self._rng.random() < profile.error_rate:
                return 500, profile.latency_s, None
            correct = complete(
                self.oracle(req) if self.oracle else placeholder(req.schema), req.schema
            )
            # Like a model at temperature 0: the same prompt to the same model gets the same
            # answer, whatever the order requests arrive in (so runs are reproducible).
            draw = self._draw(req)
            right = draw < profile.accuracy
            if profile.calibrated:
                req.confidence = calibrated_confidence(self._draw(req, "confidence"), right)
            if isinstance(correct, Rendered):
                value = correct.value
                if not right:
                    value = wrong_answer(value, correct.schema, random.Random(draw))
                answer = correct.render(value)
            elif right:
                answer = correct
            else:
                answer = wrong_answer(*_less_confidence(correct, req.schema), random.Random(draw))
                if isinstance(correct, dict) and "confidence" in correct:
                    answer["confidence"] = correct["confidence"]
            if req.confidence is not None:
                answer = _with_confidence(answer, req.schema, req.confidence)
        text = answer if isinstance(answer, str) and req.schema is None else json.dumps(answer)
        delay = profile.latency_s + profile.seconds_per_output_token * approx_tokens(text)
        return 200, delay, text

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return type("Handler", (_Handler,), {"sim": self})


_ERRORS = {404: "model {model!r} not found", 429: "rate limited", 500: "simulated error"}


class _Handler(BaseHTTPRequestHandler):
    """The simulator's HTTP side; ``sim`` is set on a subclass per simulator."""

    protocol_version = "HTTP/1.1"
    sim: OpenAISimulator

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(data)
        with self.sim._lock:
            self.sim.statuses[status] += 1

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            models = [{"id": m, "object": "model"} for m in self.sim.models]
            self._send(200, {"object": "list", "data": models})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._send(400, {"error": {"message": "body is not JSON"}})
            return
        # servers route on the path; a query string (api-version, a key) is not part of it
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/embeddings":
            self._send(200, simulated_embeddings(body))
        elif path == "/v1/chat/completions":
            self._chat(body)
        else:
            self._send(404, {"error": {"message": "not found"}})

    def _chat(self, body: dict[str, Any]) -> None:
        sim = self.sim
        req = ChatRequest(
            model=str(body.get("model")),
            messages=list(body.get("messages") or []),
            schema=_schema_of(body),
            max_tokens=body.get("max_tokens"),
            body=body,
            authorization=self.headers.get("Authorization"),
        )
        with sim._lock:
            sim.in_flight += 1
            sim.max_in_flight = max(sim.max_in_flight, sim.in_flight)
        try:
            status, delay, text = sim._decide(req)
            if delay:
                time.sleep(delay)
        finally:
            with sim._lock:
                sim.in_flight -= 1
        if status != 200:
            message = _ERRORS.get(status, "simulated failure").format(model=req.model)
            self._send(status, {"error": {"message": message}})
            return
        self._send(200, self._completion(req, text))

    def _completion(self, req: ChatRequest, text: str | None) -> dict[str, Any]:
        """The chat-completion payload answering ``req`` with ``text`` (cut at max_tokens)."""
        out_tokens = approx_tokens(text or "")
        finish = "stop"
        if req.max_tokens is not None and out_tokens > req.max_tokens:
            text, finish = (text or "")[: req.max_tokens * 4], "length"
            out_tokens = req.max_tokens
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": finish,
            "message": {"role": "assistant", "content": text},
        }
        if req.body.get("logprobs"):
            top = int(req.body.get("top_logprobs") or 1)
            p = (
                req.confidence
                if req.confidence is not None
                else self.sim.models[req.model].accuracy
            )
            choice["logprobs"] = simulated_logprobs(text or "", p, top)
        return {
            "id": f"chatcmpl-sim-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [choice],
            "usage": {
                "prompt_tokens": approx_tokens(req.prompt),
                "completion_tokens": out_tokens,
                "total_tokens": approx_tokens(req.prompt) + out_tokens,
            },
        }


def main(argv: list[str] | None = None) -> None:
    """Serve the simulator from the command line (so benchmarks can run it in its own process):
    ``python -m pz_dagster.testing --model sim --latency 0.5 --port 8001``."""
    import argparse

    ap = argparse.ArgumentParser(
        description="OpenAI-compatible simulator on 127.0.0.1 (not a model)"
    )
    ap.add_argument("--model", action="append", default=None, help="model name (repeatable)")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds per call")
    ap.add_argument("--error-rate", type=float, default=0.0)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    profile = SimulatedModel(latency_s=args.latency, error_rate=args.error_rate)
    sim = OpenAISimulator({m: profile for m in args.model or ["sim"]}, port=args.port)
    print(sim.base_url, flush=True)
    sim._server.serve_forever()


if __name__ == "__main__":
    main()
