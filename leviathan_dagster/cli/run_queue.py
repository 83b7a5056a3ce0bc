"""The instance's run queue, seen from the CLI: submit runs to it, and see them through to the end.

``leviathan run --once`` is not a scheduler of its own: its runs are created from the code location
the way the daemon's sensor creates them, submitted to the instance's run coordinator, and launched
by the instance's run launcher, so the same ``concurrency:`` limits, run retries, run monitoring and
UI apply to them as to the daemon's.

Who takes runs off the queue? The QueuedRunCoordinator only marks a run QUEUED; in production the
daemon's queued-run coordinator dequeues it. The embedded default instance of ``make demo`` has no
daemon, so when no live queued-run-coordinator heartbeat is in the instance, this process runs that
daemon's own dequeue step (``QueuedRunCoordinatorDaemon.run_iteration``) while it waits. That is the
daemon's code, with the instance's limits, rather than a re-implementation of them; and with a live
daemon the CLI leaves the queue to it, so two dequeuers never race past a limit. Running a whole
``dagster-daemon`` for the duration was the alternative: it would also tick every sensor and schedule
(a second scheduler again) and leave a process to clean up if the CLI is killed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.remote_representation.code_location import CodeLocation
from dagster._core.remote_representation.grpc_server_registry import GrpcServerRegistry
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.tags import PARTITION_NAME_TAG, RUN_KEY_TAG
from dagster._core.workspace.context import WEBSERVER_GRPC_SERVER_HEARTBEAT_TTL, WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.controller import get_daemon_statuses
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster._grpc.constants import GrpcServerCommand

from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.home import CONFIG_ENV, HOME_ENV

Echo = Callable[[str], None]
LOCATION = "leviathan"
POLL_SECONDS = 0.5
ENDED = frozenset({dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED})


class RunQueue:
    """Runs of Leviathan's code location, through ``instance``'s queue. A context manager: it starts
    the code location's server (as the daemon and the UI do) with ``config_path`` and ``home``."""

    def __init__(self, instance: dg.DagsterInstance, *, config_path: str, home: str) -> None:
        self.instance = instance
        self._env = {CONFIG_ENV: config_path, HOME_ENV: home}
        self._stack = contextlib.ExitStack()
        self._dequeuer: QueuedRunCoordinatorDaemon | None = None

    def __enter__(self) -> RunQueue:
        # The code server and the run workers it starts inherit these: the runs read the same
        # leviathan.yaml and home as this command, and write to our stderr, never to the stdout a
        # `--json` caller parses.
        with _environment(self._env), _stdout_to_stderr():
            servers = self._stack.enter_context(
                GrpcServerRegistry(
                    instance_ref=self.instance.get_ref(),
                    server_command=GrpcServerCommand.API_GRPC,
                    heartbeat_ttl=WEBSERVER_GRPC_SERVER_HEARTBEAT_TTL,
                    startup_timeout=self.instance.code_server_process_startup_timeout,
                    # A command that returns leaves no server process behind it.
                    wait_for_processes_on_shutdown=True,
                    log_level="WARNING",
                )
            )
            self._context = self._stack.enter_context(
                WorkspaceProcessContext(
                    self.instance,
                    ModuleTarget("leviathan_dagster.definitions", "defs", None, LOCATION),
                    grpc_server_registry=servers,
                )
            )
        self._dequeuer = self._stack.enter_context(QueuedRunCoordinatorDaemon(interval_seconds=1))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def submit(
        self,
        job_name: str,
        *,
        partition_key: str | None = None,
        tags: Mapping[str, str] | None = None,
        run_key: str | None = None,
        run_config: Mapping[str, Any] | None = None,
        asset_selection: Sequence[dg.AssetKey] | None = None,
    ) -> str:
        """Create a run of ``job_name`` (only ``asset_selection`` of it, when given, as a sensor's
        ``RunRequest`` may ask) as the daemon's sensor would, submit it; return its run id."""
        workspace = self._context.create_request_context()
        location = self._location(workspace)
        [repository] = location.get_repositories().values()
        if asset_selection is None:
            remote_job = repository.get_full_job(job_name)
        else:
            remote_job = location.get_job(
                JobSubsetSelector(
                    location_name=location.name,
                    repository_name=repository.name,
                    job_name=job_name,
                    op_selection=None,
                    asset_selection=asset_selection,
                )
            )
        run_config = dict(run_config or {})
        plan = location.get_execution_plan(
            remote_job, run_config, step_keys_to_execute=None, known_state=None, instance=self.instance
        )
        run_tags = {**(remote_job.run_tags or {}), **(tags or {})}
        if partition_key is not None:
            run_tags[PARTITION_NAME_TAG] = partition_key
        if run_key is not None:
            run_tags[RUN_KEY_TAG] = run_key
        run = self.instance.create_run(
            job_name=job_name,
            run_id=None,
            run_config=run_config,
            resolved_op_selection=remote_job.resolved_op_selection,
            step_keys_to_execute=None,
            status=dg.DagsterRunStatus.NOT_STARTED,
            op_selection=None,
            root_run_id=None,
            parent_run_id=None,
            tags=run_tags,
            job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=plan.execution_plan_snapshot,
            parent_job_snapshot=remote_job.parent_job_snapshot,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
            asset_selection=frozenset(asset_selection) if asset_selection is not None else None,
            asset_check_selection=None,
            asset_graph=repository.asset_graph,
        )
        self.instance.submit_run(run.run_id, workspace)
        return run.run_id

    def wait(
        self,
        run_ids: list[str],
        echo: Echo | None = None,
        stop_requested: Callable[[], bool] | None = None,
    ) -> dict[str, dg.DagsterRunStatus]:
        """Drive the queue (if no daemon does) until every run in ``run_ids`` has ended; ``echo`` each
        status change. Once ``stop_requested`` says so, the runs still waiting are cancelled and those
        in flight terminated (their attempt is recorded as canceled by the run itself), then waited for."""
        statuses: dict[str, dg.DagsterRunStatus] = {}
        pending = list(run_ids)
        stopping = False
        while pending:
            if not stopping and stop_requested is not None and stop_requested():
                stopping = True
                self._stop(pending)
            if not stopping:
                self._dequeue()
            for run_id in list(pending):
                run = self.instance.get_run_by_id(run_id)
                status = run.status if run is not None else dg.DagsterRunStatus.CANCELED
                if status != statuses.get(run_id) and echo is not None:
                    echo(f"  run {run_id[:8]} {_describe(run)}: {status.value.lower()}")
                statuses[run_id] = status
                if status in ENDED:
                    pending.remove(run_id)
            if pending:
                time.sleep(POLL_SECONDS)
        return statuses

    def _stop(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            run = self.instance.get_run_by_id(run_id)
            if run is None or run.status in ENDED:
                continue
            if run.status == dg.DagsterRunStatus.QUEUED:
                self.instance.report_run_canceled(run, message="leviathan run was stopped before it started")
            else:
                self.instance.run_launcher.terminate(run_id)

    def _dequeue(self) -> None:
        if not isinstance(self.instance.run_coordinator, QueuedRunCoordinator):
            return  # a coordinator that launches on submit: nothing waits in a queue
        if self.daemon_dequeues():
            return
        assert self._dequeuer is not None
        for _ in self._dequeuer.run_iteration(self._context):
            pass

    def daemon_dequeues(self) -> bool:
        """Whether a live daemon's queued-run coordinator serves this instance's queue."""
        daemon = QueuedRunCoordinatorDaemon.daemon_type()
        if daemon not in self.instance.get_required_daemon_types():
            return False
        status = get_daemon_statuses(self.instance, [daemon], ignore_errors=True)[daemon]
        return bool(status.healthy)

    def _location(self, workspace) -> CodeLocation:
        if workspace.has_code_location_error(LOCATION):
            error = workspace.get_code_location_error(LOCATION)
            raise ConfigError(f"the Leviathan code location failed to load: {error.message.strip()}")
        return workspace.get_code_location(LOCATION)


def _describe(run: dg.DagsterRun | None) -> str:
    if run is None:
        return "(deleted)"
    what = run.tags.get(PARTITION_NAME_TAG) or ""
    return f"{run.job_name}[{what}]" if what else run.job_name


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr while child processes are started, so they inherit that."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real stdout (an embedding host): nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
