"""Redaction of credentials from text that may be logged, stored in an event or shown to a user.

Credentials are kept out of URLs and command lines by construction (see forge/github_auth.py); this is
the net under that: git's stderr, a library's exception text or an echoed request could still carry
one. ``redact`` removes known secret values and anything shaped like a GitHub token, an Authorization
header value, a JWT or URL user-info.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

_PATTERNS = (
    # GitHub tokens: classic and fine-grained PATs, OAuth, App installation/user/refresh tokens.
    re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9_]{16,}|github_pat_[A-Za-z0-9_]{20,})"),
    # JWTs (an App's signed assertion): three base64url segments, the first a JSON header.
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
)
# "Authorization: token X", "Bearer X", "Basic X" (also inside http.extraHeader values). A bare
# "token X" is left alone: it is common English ("token totals"), and real tokens match above.
_AUTH_RE = re.compile(
    r"(?i)(authorization:\s*(?:token\s+|bearer\s+|basic\s+)?|\bbearer\s+|\bbasic\s+)([A-Za-z0-9._~+/=-]{12,})"
)
# https://user:password@host -> https://***@host
_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@:]+(?::[^/\s@]*)?@")
# A PEM private key, whole.
_PEM_RE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every known secret value and every token-shaped string replaced by ``***``."""
    if not text:
        return text
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _PEM_RE.sub(MASK, text)
    text = _USERINFO_RE.sub(lambda m: m.group(1) + MASK + "@", text)
    for pattern in _PATTERNS:
        text = pattern.sub(MASK, text)
    return _AUTH_RE.sub(lambda m: m.group(1) + MASK, text)
