"""Redaction of credentials from text that may be logged, stored in an event or shown to a user.

Credentials are kept out of URLs and command lines by construction (see forge/github/auth.py); this is
the net under that: git's stderr, a library's exception text or an API that echoes the request could
still carry one. Two ways, both applied by ``redact``:

- **by value**: every secret the process was given is registered (``register_secret``) where it enters
  the process (a resolved ``secrets:`` entry, a token minted from an App key, the Claude key, the control
  plane token; ``register_environment_secrets`` for whatever the environment holds), and every
  occurrence of it is masked, whatever its shape;
- **by pattern**: anything shaped like a GitHub token (the dotted installation tokens too), an Anthropic
  key, an Authorization header value, a JWT, a PEM private key or URL user-info.

The choke points that call it: ``Event.new`` (the event log, before the hash), ``ArtifactDir`` (every
artifact), ``RedactingFilter`` (log records), ``GitError``; console and Dagster metadata are built from
those. A secret in a hash-chained log could never be scrubbed, so it must never get there.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
# Shorter values would mask ordinary words ("postgres", "leviathan") in every event; real tokens and
# keys are far longer, and a password inside a URL or DSN is masked by the user-info pattern anyway.
MIN_SECRET_LENGTH = 12

_PATTERNS = (
    # GitHub tokens: classic and fine-grained PATs, OAuth, App installation/user/refresh tokens. The new
    # installation tokens (~520 characters) are base64url segments joined by dots: ``ghs_<seg>.<seg>...``.
    re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9_-]{16,}(?:\.[A-Za-z0-9_-]+)*|github_pat_[A-Za-z0-9_]{20,})"),
    # Anthropic API keys (sk-ant-api03-..., sk-ant-admin01-...).
    re.compile(r"\bsk-ant-[A-Za-z0-9_-]{16,}"),
    # JWTs (an App's signed assertion): three base64url segments, the first a JSON header.
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
)
# "Authorization: token X", "Bearer X", "Basic X" (also inside http.extraHeader values). A bare
# "token X" is left alone: it is common English ("token totals"), and real tokens match above.
_AUTH_RE = re.compile(
    r"(?i)(authorization:\s*(?:token\s+|bearer\s+|basic\s+)?|\bbearer\s+|\bbasic\s+)([A-Za-z0-9._~+/=-]{12,})"
)
# x-api-key: <value> (Anthropic's header), as an echoed request would show it.
_API_KEY_HEADER_RE = re.compile(r"(?i)(x-api-key[\"']?\s*[:=]\s*[\"']?)([A-Za-z0-9._~+/=-]{12,})")
# https://user:password@host -> https://***@host
_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@:]+(?::[^/\s@]*)?@")
# A PEM private key, whole.
_PEM_RE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)
# Environment variables whose value is a credential, by name.
_SECRET_NAME_RE = re.compile(r"(?i)(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|PRIVATE_KEY|CREDENTIAL|_DSN$|^DSN$)")

_REFERENCE_SUFFIXES = ("_FILE", "_PATH", "_DIR", "_URL", "_NAME", "_REF", "_ENV", "_HOST", "_PORT")

_registered: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember ``value`` as a secret of this process: ``redact`` masks it from now on, everywhere.
    A PEM key is also registered line by line (a message may quote one line of it)."""
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        _registered.add(value)
        if "-----BEGIN" in value:
            _registered.update(line for line in value.splitlines() if len(line) >= 32)


def register_environment_secrets(environ: Mapping[str, str], names: Iterable[str | None] = ()) -> None:
    """Register the values of ``names`` and of every variable whose name says it holds a credential."""
    wanted = {name for name in names if name}
    for key, value in environ.items():
        if key in wanted or is_secret_name(key):
            register_secret(value)


def is_secret_name(name: str) -> bool:
    """Whether an environment variable called ``name`` holds a credential by its name (``GITHUB_TOKEN``
    does; ``GITHUB_TOKEN_FILE`` names where one is, and ``MAX_TOKENS`` is a number)."""
    return (
        bool(_SECRET_NAME_RE.search(name))
        and not name.upper().endswith(_REFERENCE_SUFFIXES)
        and not (re.search(r"(?i)TOKENS(_|$)", name))
    )


def registered_secrets() -> frozenset[str]:
    with _lock:
        return frozenset(_registered)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every registered or given secret value and every token-shaped string masked."""
    if not text or not isinstance(text, str):
        return text
    known = {s for s in secrets if s and len(s) >= 4} | registered_secrets()
    for secret in sorted(known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return _redact_by_pattern(text)


def looks_like_credential(text: str) -> bool:
    """Whether ``text`` holds something shaped like a credential (a token, a key, an Authorization
    header, user-info in a URL) or assigns a value to a credential-named variable (``GITHUB_TOKEN=...``)."""
    name, sep, value = text.partition("=")
    if sep and value and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and is_secret_name(name):
        return True
    return _redact_by_pattern(text) != text


def _redact_by_pattern(text: str) -> str:
    text = _PEM_RE.sub(MASK, text)
    text = _USERINFO_RE.sub(lambda m: m.group(1) + MASK + "@", text)
    for pattern in _PATTERNS:
        text = pattern.sub(MASK, text)
    text = _API_KEY_HEADER_RE.sub(lambda m: m.group(1) + MASK, text)
    return _AUTH_RE.sub(lambda m: m.group(1) + MASK, text)


def redact_data(data: Any, secrets: Iterable[str | None] = ()) -> Any:
    """``data`` (JSON-like: dicts, lists, strings) with every string redacted, keys included."""
    secrets = tuple(secrets)
    if isinstance(data, str):
        return redact(data, secrets)
    if isinstance(data, Mapping):
        return {redact_data(key, secrets): redact_data(value, secrets) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(redact_data(item, secrets) for item in data)
    return data


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's final message (arguments merged first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redact(message), ()
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
