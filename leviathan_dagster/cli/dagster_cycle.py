"""One scheduler cycle through Dagster, on the persistent instance, as the daemon does it.

It ticks the real ``backlog_sensor`` and ``attempt_sensor`` (the one planning API, with this
command's ``--target`` and ``--max-attempts``) from the cursors the last cycle left in the home
(``sensor_ticks.py``), submits the runs they request to the instance's run queue and waits for them
(``run_queue.RunQueue``): the runs, materializations and checks land in the instance the Dagster UI
shows (``make ui``), under the same concurrency limits as the daemon's runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG

from leviathan_dagster.cli.run_queue import RunQueue
from leviathan_dagster.cli.sensor_ticks import SensorCursors, tick
from leviathan_dagster.core.attempts.run_events import record_runs
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.scheduling.cycle import read_backlog
from leviathan_dagster.core.scheduling.planning import RunView
from leviathan_dagster.defs.attempts.jobs import ATTEMPT_JOB
from leviathan_dagster.defs.attempts.sensors import attempt_sensor
from leviathan_dagster.defs.backlogs.partitions import targets_partitions
from leviathan_dagster.defs.backlogs.sensors import backlog_sensor
from leviathan_dagster.defs.platform.resources import LeviathanResource
from leviathan_dagster.defs.platform.run_records import leviathan_run_records, run_info
from leviathan_dagster.defs.platform.run_view import DagsterRunView

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


@contextlib.contextmanager
def home_run_view(home: LeviathanHome) -> Iterator[RunView]:
    """The attempt runs of the instance ``leviathan run`` installed in ``home`` (read, never written
    to). ``leviathan tasks`` judges readiness with it, as the scheduler does with the same runs."""
    instance = dg.DagsterInstance.from_config(str(home.dagster_home))
    try:
        yield DagsterRunView(instance)
    finally:
        instance.dispose()


@dataclass
class CycleReport:
    launched: list[tuple[str, str, bool]] = field(default_factory=list)  # (run_key, run_id, success)
    # Runs of the backlog asset for the backlogs that changed since the last cycle: (run_id, success).
    backlog_runs: list[tuple[str, bool]] = field(default_factory=list)
    skipped: str | None = None
    # Targets whose config or backlog could not be used this cycle (the others proceed): the error.
    broken: dict[str, str] = field(default_factory=dict)


def _never() -> bool:
    return False


def run_cycle(
    instance: dg.DagsterInstance,
    resource: LeviathanResource,
    *,
    executor: str | None = None,
    echo: Echo = print,
    queue: RunQueue | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> CycleReport:
    """One cycle: one attempt run per task the scheduling sensor selects (its readiness reported too).

    ``queue``: the run queue to submit to, kept open across cycles by a caller that runs several (its
    code server then starts once); by default one is opened for this cycle. ``stop_requested`` is asked
    before each submission (a stop by signal starts nothing new; the runs already queued are waited for).
    """
    stop_requested = stop_requested or _never
    report = CycleReport()
    started = datetime.now(UTC)
    with contextlib.ExitStack() as stack:
        if queue is None:
            queue = stack.enter_context(
                RunQueue(instance, config_path=resource.config_path, home=resource.home)
            )
        try:
            _run_cycle(instance, queue, resource, report, executor, echo, stop_requested)
        finally:
            # Without a daemon no run-status sensor sees these runs: record them the reconciliation way.
            records = leviathan_run_records(instance, updated_after=started - timedelta(minutes=1))
            record_runs(resource.event_log(), [run_info(instance, r) for r in records])
    return report


def _run_cycle(
    instance: dg.DagsterInstance,
    queue: RunQueue,
    resource: LeviathanResource,
    report: CycleReport,
    executor: str | None,
    echo: Echo,
    stop_requested: Callable[[], bool],
) -> None:
    project = resource.project()
    targets = [t for t in project.targets if resource.only_target in (None, t.id)]
    _report_broken(project, targets, resource, report, echo)
    _ensure_partitions(instance, targets_partitions.name, [t.id for t in targets])
    # As the daemon's tick: backlog_sensor records a backlog that changed (one run of its asset), and
    # attempt_sensor reports task_readiness when it changed, both judged from the cursors of the last
    # cycle (cli/sensor_ticks.py); all the runs are queued and waited for at once.
    cursors = SensorCursors(resource.leviathan_home())
    submitted: dict[str, str] = {}
    backlog_runs: list[str] = []
    try:
        if not stop_requested():
            backlog_runs = _submit_backlogs(instance, queue, resource, cursors, echo)
            submitted.update(
                _submit_attempts(instance, queue, resource, report, cursors, executor, echo, stop_requested)
            )
        cursors.save()  # only once the runs the ticks asked for are queued
    finally:
        statuses = queue.wait([*backlog_runs, *submitted], echo=echo, stop_requested=stop_requested)
    report.backlog_runs = [
        (run_id, statuses[run_id] == dg.DagsterRunStatus.SUCCESS) for run_id in backlog_runs
    ]
    for run_id, run_key in submitted.items():
        report.launched.append((run_key, run_id, statuses[run_id] == dg.DagsterRunStatus.SUCCESS))


def _submit_backlogs(
    instance: dg.DagsterInstance,
    queue: RunQueue,
    resource: LeviathanResource,
    cursors: SensorCursors,
    echo: Echo,
) -> list[str]:
    """One run of the ``backlog`` asset per target whose backlog changed since the last cycle."""
    result = tick(backlog_sensor, instance, resource, cursors)
    run_ids = []
    for request in result.run_requests:
        echo(f"  backlog {request.partition_key}: changed, recording it")
        run_ids.append(
            queue.submit(
                request.job_name or result.job_name,
                partition_key=request.partition_key,
                tags=request.tags,
                run_config=QUIET,
                asset_selection=request.asset_selection,
            )
        )
    return run_ids


def _submit_attempts(
    instance: dg.DagsterInstance,
    queue: RunQueue,
    resource: LeviathanResource,
    report: CycleReport,
    cursors: SensorCursors,
    executor: str | None,
    echo: Echo,
    stop_requested: Callable[[], bool],
) -> dict[str, str]:
    """Tick the scheduling sensor and queue one attempt run per request; {run_id: run_key}."""
    result = tick(attempt_sensor, instance, resource, cursors)
    if not result.run_requests:
        report.skipped = result.skip_message or "no task ready"
        return {}
    overrides = {
        name: value
        for name, value in (("executor", executor), ("max_attempts_per_task", resource.max_attempts_per_task))
        if value is not None
    }
    run_config = {**QUIET, "ops": {"attempt_outcomes": {"config": overrides}}} if overrides else QUIET
    submitted: dict[str, str] = {}
    for request in result.run_requests:
        if stop_requested():
            break
        # The daemon drops a run_key it has seen; do the same so two schedulers never double-launch.
        if instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: request.run_key}), limit=1):
            echo(f"  {request.run_key}: already launched, skipped")
            continue
        echo(f"  attempt {request.run_key}: queued")
        run_id = queue.submit(
            ATTEMPT_JOB,
            partition_key=request.partition_key,
            tags=request.tags,
            run_key=request.run_key,
            run_config=run_config,
        )
        submitted[run_id] = request.run_key
    return submitted


def _report_broken(project, targets, resource: LeviathanResource, report: CycleReport, echo: Echo) -> None:
    """Targets left out for an invalid config, and those whose backlog cannot be used (read through the
    backlog cache, so the sensor's own read costs nothing more): named, and the others proceed."""
    for target_id, problems in project.broken_targets:
        if resource.only_target in (None, target_id):
            report.broken[target_id] = f"config: {problems}"
    for target in targets:
        snap = read_backlog(target, resource.leviathan_home())
        if snap.backlog is None:
            report.broken[target.id] = snap.error or "backlog unavailable"
    for target_id, error in report.broken.items():
        echo(f"  target {target_id} is broken (the others proceed):")
        for line in error.splitlines():
            echo(f"    {line}")


def _ensure_partitions(instance: dg.DagsterInstance, name: str, keys: list[str]) -> None:
    known = set(instance.get_dynamic_partitions(name))
    missing = [k for k in keys if k not in known]
    if missing:
        instance.add_dynamic_partitions(name, missing)


def reset_dagster_home(home: LeviathanHome) -> None:
    shutil.rmtree(home.dagster_home, ignore_errors=True)
