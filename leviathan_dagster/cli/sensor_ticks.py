"""The daemon's sensors ticked by ``leviathan run``, with cursors that outlive the command.

``run --once`` is one daemon tick of Leviathan's own sensors: ``backlog_sensor`` (records a backlog
when it changed) and ``attempt_sensor`` (requests attempts, reports ``task_readiness`` when it
changed). Each compares what it sees with its cursor; the daemon keeps that cursor in the instance's
sensor state, and a command that kept none reported every readiness anew on every cycle. Here each
sensor's cursor is a file in the home, next to the instance it describes (``<home>/dagster``, so
``reset_dagster_home`` forgets both together), and the change rule is the sensors' own code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.defs.platform.resources import LeviathanResource

CURSORS_FILE = "leviathan-cli-sensor-cursors.json"


class SensorCursors:
    """Every sensor's cursor as ``leviathan run`` last left it (nothing: as a daemon's first tick)."""

    def __init__(self, home: LeviathanHome) -> None:
        self.path: Path = home.dagster_home / CURSORS_FILE
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            loaded = {}  # none yet, or torn: each sensor starts over, as after a cursor reset
        self._cursors: dict[str, str] = {
            k: v for k, v in (loaded.items() if isinstance(loaded, dict) else ()) if isinstance(v, str)
        }

    def get(self, sensor_name: str) -> str | None:
        return self._cursors.get(sensor_name)

    def advance(self, sensor_name: str, cursor: str | None) -> None:
        if cursor is not None:
            self._cursors[sensor_name] = cursor

    def save(self) -> None:
        """Written whole and renamed into place: a killed command leaves the old cursors, never half."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(self._cursors, sort_keys=True, indent=1), encoding="utf-8")
        os.replace(partial, self.path)


@dataclass(frozen=True)
class Tick:
    """What a tick asks of its caller: runs of ``job_name`` to submit, or why there are none."""

    run_requests: list[dg.RunRequest]
    job_name: str
    skip_message: str | None


def tick(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    resource: LeviathanResource,
    cursors: SensorCursors,
) -> Tick:
    """One tick of ``sensor`` from its saved cursor, with what the daemon stores from a tick applied
    here (partitions added and deleted, run-less asset events); its runs are the caller's to submit.
    The cursor advances in ``cursors``; the caller saves it once those runs are submitted."""
    context = dg.build_sensor_context(
        instance=instance,
        instance_ref=instance.get_ref(),
        resources={"leviathan": resource},
        cursor=cursors.get(sensor.name),
    )
    # The sensor's function itself (what the daemon evaluates): evaluate_tick would need the whole
    # repository definition to resolve asset selections, which the code location holds, not us.
    result = sensor(context)
    if isinstance(result, dg.SkipReason):
        cursors.advance(sensor.name, context.cursor)
        return Tick([], sensor.job_name, result.skip_message)
    for request in result.dynamic_partitions_requests or []:
        apply_partitions_request(instance, request)
    for event in result.asset_events or []:
        instance.report_runless_asset_event(event)
    cursors.advance(sensor.name, result.cursor if result.cursor is not None else context.cursor)
    skip = result.skip_reason.skip_message if result.skip_reason else None
    return Tick(list(result.run_requests or []), sensor.job_name, skip)


def apply_partitions_request(
    instance: dg.DagsterInstance, request: dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest
) -> None:
    name, keys = request.partitions_def_name, list(request.partition_keys)
    if isinstance(request, dg.DeleteDynamicPartitionsRequest):
        for key in keys:
            if instance.has_dynamic_partition(name, key):
                instance.delete_dynamic_partition(name, key)
        return
    missing = [k for k in keys if not instance.has_dynamic_partition(name, k)]
    if missing:
        instance.add_dynamic_partitions(name, missing)
