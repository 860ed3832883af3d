"""What both peer runners share (stdlib only: each runner, run as ``python -m
benchmarks.peers.run_<peer>`` from the repository root in the peer's own virtualenv, imports it
as ``benchmarks.peers.common``, and so does the side-by-side benchmark in the project's): the
network guard, the counting proxy in front of the endpoint, log capture, the file list,
versions and the common arguments."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "ip6-localhost"}
BLOCKED: list[str] = []


def _is_loopback(host: Any) -> bool:
    h = str(host).strip("[]").lower()
    return h in _LOOPBACK or h.startswith("127.")


def install_network_guard() -> None:
    """Refuse, and remember, any DNS lookup or socket connection to a non-loopback host."""

    def hook(event: str, args: tuple) -> None:
        if event == "socket.getaddrinfo":
            host = args[0]
            if host is not None and not _is_loopback(
                host.decode() if isinstance(host, bytes) else host
            ):
                BLOCKED.append(f"getaddrinfo {host!r}")
                raise OSError(f"offline run: DNS lookup of {host!r} refused")
        elif event == "socket.connect":
            addr = args[1]
            if isinstance(addr, tuple) and addr and not _is_loopback(addr[0]):
                BLOCKED.append(f"connect {addr!r}")
                raise OSError(f"offline run: connection to {addr!r} refused")

    sys.addaudithook(hook)


class CountingProxy:
    """Loopback HTTP proxy in front of the endpoint: counts calls and tokens, logs requests."""

    def __init__(
        self,
        upstream: str,
        log_path: str | None = None,
        log_limit: int = 20,
        timeout: float = 3600.0,
    ):
        u = urllib.parse.urlsplit(upstream.rstrip("/"))
        self.upstream_root = f"{u.scheme}://{u.netloc}"
        self.path_prefix = u.path
        self.timeout = timeout
        self.log_path, self.log_limit = log_path, log_limit
        self.lock = threading.Lock()
        self.calls = 0  # POSTs to .../chat/completions
        self.requests = 0  # all requests
        self.statuses: dict[int, int] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.by_model: dict[str, list[int]] = {}  # model -> [calls, input tokens, output tokens]
        self.logged = 0
        if log_path:
            Path(log_path).write_text("")
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.path_prefix}"

    def start(self) -> CountingProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _record(self, path: str, body: bytes, status: int, data: bytes, secs: float) -> None:
        is_chat = path.rstrip("/").endswith("/chat/completions")
        try:
            resp = json.loads(data or b"null")
        except ValueError:
            resp = data.decode(errors="replace")
        with self.lock:
            self.requests += 1
            self.calls += is_chat
            self.statuses[status] = self.statuses.get(status, 0) + 1
            usage = resp.get("usage") if isinstance(resp, dict) else None
            if isinstance(usage, dict):
                self.input_tokens += int(usage.get("prompt_tokens") or 0)
                self.output_tokens += int(usage.get("completion_tokens") or 0)
            if is_chat:
                try:
                    model = str(json.loads(body or b"{}").get("model"))
                except (ValueError, AttributeError):
                    model = "?"
                row = self.by_model.setdefault(model, [0, 0, 0])
                row[0] += 1
                if isinstance(usage, dict):
                    row[1] += int(usage.get("prompt_tokens") or 0)
                    row[2] += int(usage.get("completion_tokens") or 0)
            if self.log_path and self.logged < self.log_limit:
                self.logged += 1
                try:
                    req = json.loads(body or b"null")
                except ValueError:
                    req = body.decode(errors="replace")
                with open(self.log_path, "a") as f:
                    f.write(
                        json.dumps(
                            {
                                "path": path,
                                "request": req,
                                "status": status,
                                "seconds": round(secs, 3),
                                "response": resp,
                            }
                        )
                        + "\n"
                    )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("content-type", "authorization", "accept")
                }
                req = urllib.request.Request(
                    proxy.upstream_root + self.path,
                    data=body if method == "POST" else None,
                    headers=headers,
                    method=method,
                )
                t0 = time.perf_counter()
                try:
                    with urllib.request.urlopen(req, timeout=proxy.timeout) as r:
                        status, data, ctype = r.status, r.read(), r.headers.get("Content-Type")
                except urllib.error.HTTPError as e:
                    status, data, ctype = e.code, e.read(), e.headers.get("Content-Type")
                except Exception as e:  # upstream down or timed out: a 502 the client can see
                    status, ctype = 502, "application/json"
                    data = json.dumps({"error": {"message": f"proxy: {e}"}}).encode()
                proxy._record(self.path, body, status, data, time.perf_counter() - t0)
                self.send_response(status)
                self.send_header("Content-Type", ctype or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                self._forward("POST")

            def do_GET(self) -> None:
                self._forward("GET")

        return Handler


class LogCapture(logging.Handler):
    """Keeps WARNING and above from the peer's loggers (parse failures, failed calls)."""

    def __init__(self, limit: int = 200):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.count = 0
        self.limit = limit

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.messages) < self.limit:
            msg = record.getMessage()
            self.messages.append(f"{record.name} {record.levelname}: {msg[:500]}")


def read_file_list(path: str) -> list[Path]:
    """Paths, one a line; a relative one is taken from the working directory, else from the
    list's own directory."""
    base = Path(path).resolve().parent
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            if not p.is_absolute():
                p = Path.cwd() / p if (Path.cwd() / p).exists() else base / p
            out.append(p.resolve())
    return out


def versions(*dists: str) -> dict[str, str]:
    out = {}
    for d in dists:
        try:
            out[d] = importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            out[d] = "not installed"
    return out


def common_args(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument(
        "--base-url",
        required=True,
        help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1",
    )
    ap.add_argument("--model", required=True, help="model name the endpoint serves")
    ap.add_argument("--api-key", default="sk-local", help="API key sent to the endpoint")
    ap.add_argument("--files", required=True, help="text file: one email path per line")
    ap.add_argument("--out", required=True, help="result JSON")
    ap.add_argument("--max-tokens", type=int, default=None, help="bound on each generation")
    ap.add_argument("--usd-per-1m-input", type=float, default=0.0, help="price to give the peer")
    ap.add_argument("--usd-per-1m-output", type=float, default=0.0, help="price to give the peer")
    ap.add_argument(
        "--log-requests", default=None, help="JSONL of the first request/response pairs"
    )
    ap.add_argument("--log-limit", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per upstream request")
    ap.add_argument("--allow-network", action="store_true", help="do not refuse non-loopback hosts")
    return ap


def offline_env() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("DISABLE_TELEMETRY", "1")


def new_result(system: str, records: int) -> dict[str, Any]:
    """The runner's JSON, filled in as the run goes (``errors`` and ``notes`` are lists)."""
    return {
        "system": system,
        "version": None,
        "python": platform.python_version(),
        "wall_seconds": None,
        "import_seconds": None,
        "query_seconds": None,
        "records": records,
        "kept": [],
        "extracted": {},
        "model_calls": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "dollars": None,
        "errors": [],
        "notes": [],
        "peer_stats": {},
    }


def record_traffic(result: dict[str, Any], proxy: CountingProxy, args: argparse.Namespace) -> None:
    """Stop the proxy and put what it counted into ``result`` (and the dollars at the given
    prices, when given)."""
    proxy.stop()
    result["model_calls"] = proxy.calls
    result["http_requests"] = proxy.requests
    result["http_statuses"] = {str(k): v for k, v in sorted(proxy.statuses.items())}
    result["input_tokens"] = proxy.input_tokens
    result["output_tokens"] = proxy.output_tokens
    result["by_model"] = proxy.by_model  # model -> [calls, input, output tokens]
    if args.usd_per_1m_input or args.usd_per_1m_output:
        result["dollars_at_given_prices"] = (
            proxy.input_tokens * args.usd_per_1m_input
            + proxy.output_tokens * args.usd_per_1m_output
        ) / 1e6


def finish(
    result: dict[str, Any],
    capture: LogCapture,
    started: float,
    out_path: Path,
    dists: tuple[str, ...],
) -> int:
    """Add the captured log records, refused network attempts, versions and wall time; write
    the JSON. Exit code 1 when the run failed."""
    errors, notes = result["errors"], result["notes"]
    errors.extend(capture.messages)
    if capture.count > len(capture.messages):
        errors.append(f"... {capture.count - len(capture.messages)} more log records")
    if BLOCKED:
        notes.append(f"refused network attempts: {sorted(set(BLOCKED))}")
    result["versions"] = versions(*dists)
    result["wall_seconds"] = round(time.perf_counter() - started, 3)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0 if not any(e.startswith("run failed") for e in errors) else 1


def begin(
    system: str, args: argparse.Namespace
) -> tuple[list[Path], Path, dict[str, Any], CountingProxy, LogCapture]:
    """What every runner does first: go offline (and guard the network unless allowed), read
    the file list, start the result and the counting proxy, and a log capture for the peer's
    loggers. Returns (files, output path, result, proxy, capture)."""
    offline_env()
    if not args.allow_network:
        install_network_guard()
    files = read_file_list(args.files)
    log_path = str(Path(args.log_requests).resolve()) if args.log_requests else None
    proxy = CountingProxy(args.base_url, log_path, args.log_limit, args.timeout).start()
    return files, Path(args.out).resolve(), new_result(system, len(files)), proxy, LogCapture()
