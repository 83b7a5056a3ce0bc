"""Schemathesis (a property-based API fuzzer) against the control plane's served /openapi.json: schema-valid
requests must be accepted, schema-invalid ones rejected, and every response must match the document.

Runs the app under a real uvicorn with a real NDJSON log; a bounded number of examples per operation
keeps it to seconds. A failure prints the exact request (curl) that broke the contract.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from test_control_plane import AUTH, TOKEN, serving

from leviathan_dagster.control_plane import create_app
from leviathan_dagster.core.events.access import Principal
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog

EXAMPLES = int(os.environ.get("LEVIATHAN_FUZZ_EXAMPLES", "40"))
DERANDOMIZE = "LEVIATHAN_FUZZ_EXAMPLES" not in os.environ
MODES = {"positive": schemathesis.GenerationMode.POSITIVE, "negative": schemathesis.GenerationMode.NEGATIVE}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_the_served_openapi_document_holds_under_fuzzing(tmp_path: Path, mode: str) -> None:
    store = NdjsonEventLog(tmp_path / "events.ndjson")
    app = create_app(store, token=TOKEN, tokens={"operator-secret": Principal("alice", "operator")})
    failures: list[str] = []
    tried: list[str] = []
    with serving(app) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=AUTH)
        for result in schema.get_all_operations():
            operation = result.ok()
            if mode == "negative" and operation.path in ("/healthz", "/metrics", "/openapi.json"):
                continue  # no parameters or body: there is no invalid request to make
            tried.append(operation.label)

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                # The same examples on every run: CI judges the code, not the luck of a draw (a deeper
                # random search: LEVIATHAN_FUZZ_EXAMPLES=500 picks random examples).
                derandomize=DERANDOMIZE,
                suppress_health_check=list(HealthCheck),
            )
            @given(operation.as_strategy(generation_mode=MODES[mode]))
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=AUTH)

            try:
                check()
            except Exception as exc:  # every operation is tried; all failures are reported at once
                failures.append(f"{operation.label}: {exc}")
    assert "POST /v1/events/ingest" in tried and len(tried) >= 5
    assert not failures, "\n\n".join(failures)
