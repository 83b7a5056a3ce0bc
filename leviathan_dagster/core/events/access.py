"""Who may append which events through the control plane: named tokens with a role, and worker tokens
bound to one attempt.

Roles:

- ``operator``: every event type, operator actions included (``target.paused``, ``circuit.reset``, …);
- ``orchestrator``: every event type except operator actions (the scheduler, the PR sensors);
- ``worker``: only the worker's own events (``attempt.started/succeeded/failed``, ``pr.created``) of the
  one attempt its token was minted for, so a worker can neither speak for another attempt nor forge an
  ``attempt.created``.

A worker token is ``wk1.<attempt_id>.<hex HMAC-SHA256(key, "wk1." + attempt_id)>``: the orchestrator
mints one per attempt from the control plane's worker key (:func:`mint_worker_token`) and hands it to
that attempt's worker only; the control plane recomputes the MAC, so it needs no list of attempts.
Every accepted event is recorded with the token's name as ``actor_id``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.events.model import Event
from leviathan_dagster.core.events.schemas import OPERATOR_EVENTS, WORKER_EVENTS, is_id

ROLES = ("operator", "orchestrator", "worker")
_WORKER_PREFIX = "wk1."
MIN_WORKER_KEY_CHARS = 32


@dataclass(frozen=True)
class Principal:
    """Who presented a token: the name recorded as ``actor_id``, the role, and for a worker its attempt."""

    name: str
    role: str
    attempt_id: str | None = None


def worker_key_from(env_name: str | None, environ: Mapping[str, str]) -> bytes | None:
    """The worker token key held in ``env_name`` (``control_plane.worker_token_key``), or None when
    none is configured. The control plane checks tokens with it and the ``k8s`` executor mints them, so
    both read it here and refuse the same too-short or missing key."""
    if not env_name:
        return None
    raw = environ.get(env_name, "").strip()
    if len(raw) < MIN_WORKER_KEY_CHARS:
        raise ConfigError(
            f"control_plane.worker_token_key: {env_name} must hold at least {MIN_WORKER_KEY_CHARS} "
            f"characters. Fix: export {env_name}=$(openssl rand -hex 32)"
        )
    return raw.encode("utf-8")


def mint_worker_token(key: bytes, attempt_id: str) -> str:
    """The token that lets one attempt's worker append that attempt's events, and nothing else."""
    if not is_id(attempt_id):
        raise ConfigError(f"cannot mint a worker token for attempt id {attempt_id!r}: not an id")
    return f"{_WORKER_PREFIX}{attempt_id}.{_mac(key, attempt_id)}"


def worker_principal(key: bytes | None, token: str) -> Principal | None:
    """The worker a token was minted for, or None if it is not a valid worker token under ``key``."""
    if key is None or not token.startswith(_WORKER_PREFIX):
        return None
    attempt_id, _, mac = token[len(_WORKER_PREFIX) :].rpartition(".")
    if not is_id(attempt_id) or not hmac.compare_digest(mac, _mac(key, attempt_id)):
        return None
    return Principal(f"worker:{attempt_id}", "worker", attempt_id)


def refusal(principal: Principal, event: Event) -> str | None:
    """Why ``principal`` may not append ``event`` (None: it may)."""
    if principal.role == "operator":
        return None
    if event.event_type in OPERATOR_EVENTS:
        return f"{event.event_type} is an operator action: it needs an operator token"
    if principal.role == "worker":
        if event.event_type not in WORKER_EVENTS:
            return f"a worker token may append only {', '.join(sorted(WORKER_EVENTS))}"
        if event.payload.get("attempt_id") != principal.attempt_id:
            return f"this worker token speaks for attempt {principal.attempt_id!r} only"
    return None


def _mac(key: bytes, attempt_id: str) -> str:
    return hmac.new(key, f"{_WORKER_PREFIX}{attempt_id}".encode(), hashlib.sha256).hexdigest()
