"""Always-on snapshot of the Dagster wiring: any change to assets, partitions, jobs, sensors, schedules
or resources shows up as a diff of tests/snapshots/definitions.json in review.

Refresh it deliberately with ``UPDATE_SNAPSHOTS=1 pytest tests/test_definitions_snapshot.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from leviathan_dagster.definitions import build_definitions, defs

pytestmark = pytest.mark.dagster
SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def describe(definitions: dg.Definitions) -> dict:
    graph = definitions.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = node.partitions_def
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": getattr(partitions, "name", None)
            or (type(partitions).__name__ if partitions else None),
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "checks": sorted(c.name for c in node.check_keys),
            "kinds": sorted(node.kinds),
            "retry_policy": node.assets_def.op.retry_policy is not None,
        }
    jobs = {}
    for job in sorted(definitions.jobs or [], key=lambda j: j.name):
        resolved = definitions.resolve_job_def(job.name)
        jobs[job.name] = sorted(k.to_user_string() for k in resolved.asset_layer.executable_asset_keys)
    sensors = {
        s.name: {
            "type": s.sensor_type.value,
            "job": s.job_name if s.has_jobs else None,
            "minimum_interval_seconds": s.minimum_interval_seconds,
            "default_status": s.default_status.value,
        }
        for s in definitions.sensors or []
    }
    schedules = {
        s.name: {"job": s.job_name, "cron": s.cron_schedule, "default_status": s.default_status.value}
        for s in definitions.schedules or []
    }
    return {
        "assets": assets,
        "jobs": jobs,
        "sensors": sensors,
        "schedules": schedules,
        "resources": sorted((definitions.resources or {}).keys()),
    }


@pytest.fixture(autouse=True)
def live_instance():
    # Loading definitions consults the current instance's state storage; a test instance disposed by
    # an earlier test can linger in Dagster's context variable, so give every test a live one.
    with dg.instance_for_test() as instance:
        yield instance


def test_definitions_match_snapshot() -> None:
    current = describe(build_definitions())
    text = json.dumps(current, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(text)
    assert SNAPSHOT.exists(), "no snapshot yet: run with UPDATE_SNAPSHOTS=1"
    assert json.loads(SNAPSHOT.read_text()) == current


def test_code_location_loads_and_validates(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LEVIATHAN_CONFIG", str(tmp_path / "leviathan.yaml"))
    monkeypatch.setenv("LEVIATHAN_HOME", str(tmp_path / "home"))
    dg.Definitions.validate_loadable(defs())
