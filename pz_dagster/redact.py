"""Keeping secrets out of messages: the one place that decides what of a URL, an environment
variable or an exception may be shown in an error or a log line.

Endpoint URLs may carry credentials (``http://user:secret@host/v1``, ``?api_key=...``), and a
variable meant to hold a key's *name* may hold the key itself; every message that shows a URL or
a variable goes through ``redact_url`` / ``redact_text``.

>>> redact_url("http://user:pw@127.0.0.1:8000/v1?api_key=sk-1&v=2")
'http://***@127.0.0.1:8000/v1?api_key=***&v=***'
>>> redact_text("cannot reach https://tok@example.com/v1 now")
'cannot reach https://***@example.com/v1 now'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Anything scheme://... up to whitespace or a quote: URLs inside free text (exception messages,
# library log lines).
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_PARAM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,40}")  # a query parameter's name, kept
# Prefixes of common API keys and tokens (OpenAI/Stripe, GitHub, Slack, Hugging Face, GitLab),
# which are long; a short value starting so (hf_token) can still be a name.
_KEY_PREFIXES = ("sk-", "sk_", "pk_", "rk_", "ghp_", "gho_", "ghs_", "ghu_", "github_pat_")
_KEY_PREFIXES += ("xoxb-", "xoxp-", "hf_", "glpat-")
_KEY_SHAPES = re.compile(r"(AKIA|ASIA)[A-Z0-9]{16}|AIza[0-9A-Za-z_-]{35}")  # AWS, Google
# An underscore-separated run this long mixing letters and digits is random, not a word.
_RANDOM_RUN = re.compile(r"(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{16,}")
KEY_AS_NAME_REFUSED = (
    "{what} is the name of an environment variable, not a key: it must be a name (letters, "
    "digits, underscore); the value given looks like a key and is not shown"
)
API_KEY_ENV_REFUSED = KEY_AS_NAME_REFUSED.format(what="api_key_env")


def redact_url(url: str | None) -> str:
    """``url`` without its secrets: userinfo becomes ``***@``, every query value and any
    fragment ``***`` (a secret may hide under any parameter name); scheme, host, port and path
    stay, so the message still says which endpoint."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port, like a client would
    except ValueError:
        return f"<a URL that cannot be parsed, not shown ({len(url)} characters)>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = "&".join(_redact_pair(pair) for pair in parts.query.split("&") if pair)
    fragment = REDACTED if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _redact_pair(pair: str) -> str:
    """``name=***``; a bare token (``?sk-123``) or a name that looks random is not kept."""
    name, eq, _ = pair.partition("=")
    if eq and _PARAM_NAME.fullmatch(name) and not _RANDOM_RUN.search(name):
        return f"{name}={REDACTED}"
    return REDACTED


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every URL in it redacted and each of ``secrets`` (values known to be
    secret: a key, a variable's value) replaced by ``***``."""
    out = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    for secret in secrets:
        if secret and len(secret) >= 4:  # a one-letter "secret" would blank every message
            out = out.replace(secret, REDACTED)
    return out


def looks_like_key(value: str) -> bool:
    """Whether ``value``, given where a variable's *name* goes, is rather a key: not a valid
    name, a known key prefix, or a long random run of letters and digits."""
    if not ENV_NAME.fullmatch(value):
        return True
    if (value.startswith(_KEY_PREFIXES) and len(value) >= 20) or _KEY_SHAPES.fullmatch(value):
        return True
    return any(_RANDOM_RUN.fullmatch(part) for part in value.split("_"))


def check_env_name(value: str, what: str = "api_key_env") -> str:
    """``value`` if it can name the variable holding an API key; else a ``ValueError`` whose
    message does not repeat it (it may be the key); ``what`` says where it was given."""
    if looks_like_key(value):
        raise ValueError(KEY_AS_NAME_REFUSED.format(what=what))
    return value


class RedactingFilter(logging.Filter):
    """Rewrites a log record's message with ``redact_text``: the HTTP client libraries log the
    request URL (credentials included) at DEBUG and INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = RedactingFilter()


def redact_library_logs(
    names: Iterable[str] = ("openai", "openai._base_client", "httpx", "httpx2"),
) -> None:
    """Attach the filter to the loggers that print request URLs. A logger's filters see only
    the records logged on it (not on its children), so each logging module is named."""
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
