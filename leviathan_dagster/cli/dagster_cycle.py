"""One scheduler cycle through Dagster, in this process, on the persistent instance.

It evaluates the real ``attempt_sensor`` and executes the real jobs with ``execute_in_process``, so the
runs, materializations and checks land in the same instance the Dagster UI shows (``make ui``). The
daemon does the same thing continuously in production.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import dagster as dg

from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.run_events import record_runs
from leviathan_dagster.definitions import build_definitions
from leviathan_dagster.defs.attempts.jobs import ATTEMPT_JOB
from leviathan_dagster.defs.attempts.sensors import attempt_sensor
from leviathan_dagster.defs.backlogs.jobs import REFRESH_JOB
from leviathan_dagster.defs.backlogs.partitions import targets_partitions
from leviathan_dagster.defs.platform.resources import LeviathanResource
from leviathan_dagster.defs.platform.run_records import leviathan_run_records, run_info

Echo = Callable[[str], None]
# The runs' full event logs (and failures) are in the instance and the UI; the terminal gets our summary.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def prepare_instance(home: LeviathanHome, config_path: Path) -> dg.DagsterInstance:
    """Install the embedded dagster.yaml into ``<home>/dagster`` and open that instance."""
    home.dagster_home.mkdir(parents=True, exist_ok=True)
    packaged = resources.files("leviathan_dagster") / "instance" / "dagster.yaml"
    installed = home.dagster_home / "dagster.yaml"
    text = packaged.read_text(encoding="utf-8")
    if not installed.exists() or installed.read_text(encoding="utf-8") != text:
        installed.write_text(text, encoding="utf-8")
    # The code location reads these (through dg.EnvVar) when it is loaded by the UI or daemon too.
    os.environ["DAGSTER_HOME"] = str(home.dagster_home)
    os.environ["LEVIATHAN_HOME"] = str(home.root)
    os.environ["LEVIATHAN_CONFIG"] = str(config_path)
    return dg.DagsterInstance.get()


@dataclass
class CycleReport:
    refreshed: dict[str, bool] = field(default_factory=dict)
    launched: list[tuple[str, str, bool]] = field(default_factory=list)  # (run_key, run_id, success)
    skipped: str | None = None


def run_cycle(
    instance: dg.DagsterInstance,
    resource: LeviathanResource,
    *,
    executor: str | None = None,
    echo: Echo = print,
) -> CycleReport:
    defs = build_definitions(resource)
    report = CycleReport()
    started = datetime.now(UTC)
    try:
        _run_cycle(defs, instance, resource, report, executor, echo)
    finally:
        # Without a daemon no run-status sensor sees these runs: record them the reconciliation way.
        records = leviathan_run_records(instance, updated_after=started - timedelta(minutes=1))
        record_runs(resource.event_log(), [run_info(instance, r) for r in records])
    return report


def _run_cycle(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    resource: LeviathanResource,
    report: CycleReport,
    executor: str | None,
    echo: Echo,
) -> None:
    targets = [t.id for t in resource.project().targets if resource.only_target in (None, t.id)]
    _ensure_partitions(instance, targets_partitions.name, targets)
    refresh = defs.resolve_job_def(REFRESH_JOB)
    for target_id in targets:
        result = refresh.execute_in_process(
            instance=instance, partition_key=target_id, run_config=QUIET, raise_on_error=False
        )
        report.refreshed[target_id] = result.success
        echo(f"  refreshed backlog and readiness of {target_id}: {'ok' if result.success else 'FAILED'}")

    context = dg.build_sensor_context(
        instance=instance, instance_ref=instance.get_ref(), resources={"leviathan": resource}
    )
    result = attempt_sensor(context)
    for request in result.dynamic_partitions_requests or []:
        _ensure_partitions(instance, request.partitions_def_name, list(request.partition_keys))
    for event in result.asset_events or []:  # what the daemon stores from a tick: task_readiness
        instance.report_runless_asset_event(event)
    if not result.run_requests:
        report.skipped = result.skip_reason.skip_message if result.skip_reason else "no task ready"
        return
    attempt_job = defs.resolve_job_def(ATTEMPT_JOB)
    for request in result.run_requests:
        # The daemon drops a run_key it has seen; do the same so two schedulers never double-launch.
        if instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": request.run_key}), limit=1):
            echo(f"  {request.run_key}: already launched, skipped")
            continue
        echo(f"  attempt {request.run_key} ...")
        run_config = (
            {**QUIET, "ops": {"attempt_outcomes": {"config": {"executor": executor}}}} if executor else QUIET
        )
        run = attempt_job.execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            tags={**request.tags, "dagster/run_key": request.run_key},
            run_config=run_config,
            raise_on_error=False,
        )
        report.launched.append((request.run_key, run.run_id, run.success))


def _ensure_partitions(instance: dg.DagsterInstance, name: str, keys: list[str]) -> None:
    known = set(instance.get_dynamic_partitions(name))
    missing = [k for k in keys if k not in known]
    if missing:
        instance.add_dynamic_partitions(name, missing)


def reset_dagster_home(home: LeviathanHome) -> None:
    shutil.rmtree(home.dagster_home, ignore_errors=True)
