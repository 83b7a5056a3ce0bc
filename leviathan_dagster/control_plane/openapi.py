"""The control plane's OpenAPI 3.1 document. Routes and error codes are written here; the event schema
is generated from ``core.events.schemas``, the very table the ingest route validates against, so the
published contract and the server cannot drift apart (a Schemathesis test checks them against each
other)."""

from __future__ import annotations

from typing import Any

from leviathan_dagster.core.events.schemas import ID_PATTERN, JSON_VALUE_SCHEMA, MAX_INT, event_json_schema

_ERRORS = {
    400: "Malformed request: invalid JSON, a duplicate key, NaN/Infinity, or a bad query parameter.",
    401: "Missing or wrong bearer token (see the WWW-Authenticate header).",
    404: "Not found.",
    409: "Nothing was written: an event_id already in the log with other content, an event_id twice in "
    "the bundle, an event about another target than the bundle's, or a time more than the configured "
    "limit (a day by default) ahead of the server's clock (`detail` names each).",
    413: "Body larger than the configured limit; nothing was read further or written.",
    403: "The token may not append these events (operator actions, or another attempt's events).",
    408: "The request body did not arrive within the read timeout; nothing was written.",
    422: "Valid JSON that does not match the bundle schema; `detail` lists each bad field by path.",
    503: "The event store is unavailable; retry later.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json(_ref("Error"), _ERRORS[code]) for code in codes}


def _get(summary: str, ok: dict[str, Any], *codes: int, auth: bool = True, **extra: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": ok, **_errors(*((401,) if auth else ()), *codes)},
        **extra,
    }
    if not auth:
        operation["security"] = []
    return {"get": operation}


def _query(name: str, description: str, minimum: int, maximum: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


# What the log holds, as read back: any event type (the log also keeps run.*, log.* and events written
# before validation existed), so this is looser than the ingest schema on purpose.
_STORED_EVENT = {
    "type": "object",
    "required": ["seq", "event_id", "event_type", "timestamp", "actor_id", "payload", "prev_hash", "hash"],
    "properties": {
        "seq": {"type": "integer", "minimum": 1},
        "event_id": {"type": "string"},
        "event_type": {"type": "string"},
        "timestamp": {"type": "string"},
        "actor_id": {"type": "string"},
        "payload": {"type": "object"},
        "prev_hash": {"type": "string"},
        "hash": {"type": "string"},
    },
}
_BUNDLE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["target", "bundle_id", "events"],
    "properties": {
        "target": {"type": "string", "pattern": ID_PATTERN},
        "bundle_id": {"type": "string", "minLength": 1, "maxLength": 200},
        "events": {"type": "array", "minItems": 1, "items": _ref("Event")},
        "artifacts": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "sha256", "bytes"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 200},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "bytes": {"type": "integer", "minimum": 0, "maximum": MAX_INT},
                },
            },
        },
    },
}
_INGESTED = {
    "type": "object",
    "required": ["target", "bundle_id", "seqs", "written", "replayed"],
    "properties": {
        "target": {"type": "string"},
        "bundle_id": {"type": "string"},
        "seqs": {"type": "array", "items": {"type": "integer"}, "description": "One per event, in order."},
        "written": {"type": "integer", "description": "Events newly appended by this request."},
        "replayed": {"type": "integer", "description": "Events already in the log (original seqs)."},
        "artifacts": {"type": "integer"},
    },
}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "detail": {"description": "What exactly was wrong; for 422 a list of `path: problem` strings."},
    },
}
_OBJECT = {"type": "object"}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of every route of :func:`create_app`."""
    page = {
        "type": "object",
        "required": ["events", "next_after", "head_seq"],
        "properties": {
            "events": {"type": "array", "items": _ref("StoredEvent")},
            "next_after": {"type": "integer", "description": "Pass as `after` for the next page."},
            "head_seq": {"type": "integer"},
            "torn": {
                "type": ["object", "null"],
                "description": "Bytes after the log's last newline (NDJSON), reported and left alone.",
            },
        },
    }
    ingest = {
        "summary": "Append one event bundle as one transaction (idempotent by event_id).",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Bundle")}}},
        "responses": {"200": _json(_ref("Ingested")), **_errors(400, 401, 403, 408, 409, 413, 422, 503)},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Leviathan control plane", "version": "1"},
        "security": [{"bearer": []}],
        "paths": {
            "/v1/events/ingest": {"post": ingest},
            "/v1/events": _get(
                "Page through the log in seq order.",
                _json(page),
                400,
                parameters=[
                    _query("after", "Return events with seq greater than this (default 0).", 0, MAX_INT),
                    _query("limit", "Page size (default 100).", 1, 1000),
                ],
            ),
            "/v1/graph/summary": _get("Counts of graph nodes by type and status.", _json(_OBJECT)),
            "/v1/attempts/{attempt_id}": _get(
                "One attempt's record (from the attempt ledger) and its events.",
                _json(_OBJECT),
                404,
                parameters=[
                    {"name": "attempt_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            ),
            "/v1/autonomy/status": _get(
                "Per target: circuit state, open PRs, running attempts, last events.", _json(_OBJECT)
            ),
            "/openapi.json": _get("This document.", _json(_OBJECT)),
            "/healthz": _get(
                "Liveness: the event store's head is readable.", _json(_OBJECT), 503, auth=False
            ),
            "/metrics": _get(
                "Prometheus metrics.",
                {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}},
                auth=False,
            ),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Bundle": _BUNDLE,
                "Event": event_json_schema(),
                "JsonValue": JSON_VALUE_SCHEMA,
                "StoredEvent": _STORED_EVENT,
                "Ingested": _INGESTED,
                "Error": _ERROR,
            },
        },
    }
