"""The contract every Executor backend passes: how an attempt that it ran ends, as the attempt asset
sees it (``execute_attempt``) and as the result says it.

A backend's test class subclasses ``ExecutorContract`` (no ``Test`` prefix: collected only through
subclasses) and fills in the ``backend`` fixture with an ``ExecutorBackend``: a project whose target
uses the backend, and the executor. Each case runs a real worker (``python -m worker``) the way the
backend runs it and asserts what a caller observes: the attempt's record, the ``ExecutionResult``, the
artifacts, and the worker's own process (its environment, whether it is still alive).

``k8s-stub`` has a different, documented contract: it renders and validates the worker Job, writes it
as an artifact and submits nothing, so every attempt ends ``executor_error`` and nothing ever runs.
Its class sets ``runs_workers = False``: the cases that need a running worker (tests failing, a
timeout, cancellation, the running worker's environment) are then skipped with that reason, and
``test_success_is_a_recorded_pull_request`` is replaced by the stub's own case. Outside the contract
(each backend's own module): what only Kubernetes can do (a pod OOM-killed or never scheduled, an API
server outage, ``K8sExecutor.cancel`` from a fresh process) and what only the local executor has (the
process-group kill of a worker's children is covered here through ``cleanup``).
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Project

from leviathan_dagster.core.attempts import ledger as at
from leviathan_dagster.core.attempts.ledger import AttemptLedger, AttemptRecord
from leviathan_dagster.core.attempts.runner import execute_attempt, plan_next_attempt
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.executors.base import (
    LOG_TAIL_CHARS,
    LOG_TAIL_LINES,
    AttemptSpec,
    ExecutionResult,
    Executor,
)
from leviathan_dagster.core.executors.k8s.job import SECRET_ENV
from leviathan_dagster.core.failures import EXIT_CODES
from leviathan_dagster.core.forge.registry import forge_for
from leviathan_dagster.core.redaction import is_secret_name

TARGET_ID, TASK_ID = "site", "intro"
PYTHON = sys.executable  # test commands run sandboxed, where PATH holds no virtualenv
# Credentials the orchestrator holds that no worker may inherit: another system's key, another
# target's token (a name that says "secret" without the target referencing it).
CANARIES = {
    "AWS_SECRET_ACCESS_KEY": "canary-aws-secret-7f3a91",
    "OTHER_TARGET_GITHUB_TOKEN": "canary-other-target-token-52c0e4",
}
# Waits in these cases are bounds on something that should happen at once, never measurements.
WORKER_APPEARS_SECONDS = 60
WORKER_ENDS_SECONDS = 30


class ExecutorBackend(ABC):
    """One executor backend under test."""

    runs_workers = True

    @abstractmethod
    def make_project(
        self, *, policy: dict | None = None, test_command: list[str] | None = None, grace_seconds: int = 60
    ) -> Project:
        """A project with target ``site`` (task ``intro``, a docs task) run by this backend;
        ``grace_seconds``: how long past attempt_timeout_seconds the executor lets a worker run."""

    @abstractmethod
    def make_executor(self, project: Project) -> Executor:
        """The executor, as the registry builds it for ``project`` (test-speed polling allowed)."""

    def unrunnable_project(self) -> Project | None:
        """A project this backend refuses to run as configured; None when it has no settings of its own."""
        return None


class Recorded(Executor):
    """The backend's executor, keeping every result it returned (``execute_attempt`` keeps none)."""

    def __init__(self, inner: Executor) -> None:
        self.inner, self.name, self.results = inner, inner.name, []

    def run(self, spec: AttemptSpec) -> ExecutionResult:
        result = self.inner.run(spec)
        self.results.append(result)
        return result

    def cleanup(self, attempt_id: str) -> None:
        self.inner.cleanup(attempt_id)


def assert_bounded(result: ExecutionResult) -> None:
    assert len(result.log_tail.splitlines()) <= LOG_TAIL_LINES
    assert len(result.log_tail) <= LOG_TAIL_CHARS


def processes_with(needle: str) -> list[int]:
    """Live processes whose command line holds ``needle`` (zombies are dead: they do not count)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            alive = entry.name.isdigit() and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            if alive and needle.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def worker_environment(project: Project, attempt_id: str) -> dict[str, str] | None:
    """The environment of the running ``python -m worker`` of ``attempt_id`` in ``project``, read from
    /proc: what the process really holds, whatever launched it (a subprocess, a pod). Attempt ids
    derive from target, task and number, so the project's home tells apart tests running at once."""
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or (entry / "cmdline").read_bytes().split(b"\0")[1:3] != [
                b"-m",
                b"worker",
            ]:
                continue
            items = (entry / "environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        environ = dict(item.split("=", 1) for item in items if "=" in item)
        if environ.get("ATTEMPT_ID") == attempt_id and environ.get("LEVIATHAN_HOME") == str(
            project.home.root
        ):
            return environ
    return None


class ExecutorContract:
    # -- hooks -------------------------------------------------------------------------------------

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[ExecutorBackend]:
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _orchestrator_credentials(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name, value in CANARIES.items():
            monkeypatch.setenv(name, value)

    # -- helpers -----------------------------------------------------------------------------------

    def run_attempt(
        self, backend: ExecutorBackend, project: Project
    ) -> tuple[AttemptRecord, ExecutionResult]:
        config = load_project_config(project.config_path)
        events = project.events()
        planned = plan_next_attempt(
            config.target(TARGET_ID), TASK_ID, AttemptLedger.from_events(events.read())
        )
        executor = Recorded(backend.make_executor(project))
        record = execute_attempt(planned, project.home, project.config_path, executor, events)
        # No result: ``run`` raised (one of Leviathan's errors, recorded by execute_attempt).
        [result] = executor.results or [None]
        if result is not None:
            assert_bounded(result)
        return record, result

    def attempt_id(self, project: Project) -> str:
        target = load_project_config(project.config_path).target(TARGET_ID)
        return plan_next_attempt(target, TASK_ID, AttemptLedger.from_events([])).attempt_id

    def needs_workers(self, backend: ExecutorBackend) -> None:
        if not backend.runs_workers:
            pytest.skip("this executor runs no worker (k8s-stub renders and validates, submits nothing)")

    def start_in_background(self, backend: ExecutorBackend, project: Project, executor: Executor):
        """Run the attempt on another thread; returns (thread, outcome dict filled when it ends)."""
        config = load_project_config(project.config_path)
        planned = plan_next_attempt(config.target(TARGET_ID), TASK_ID, AttemptLedger.from_events([]))
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["record"] = execute_attempt(
                    planned, project.home, project.config_path, executor, project.events()
                )
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread, outcome

    def wait_for_worker(self, project: Project, attempt_id: str, thread: threading.Thread) -> dict[str, str]:
        deadline = time.monotonic() + WORKER_APPEARS_SECONDS
        while time.monotonic() < deadline and thread.is_alive():
            environ = worker_environment(project, attempt_id)
            if environ is not None:
                return environ
            time.sleep(0.05)
        raise AssertionError(f"no running worker of {attempt_id} appeared")

    # -- how an attempt ends -----------------------------------------------------------------------

    def test_success_is_a_recorded_pull_request(self, backend: ExecutorBackend) -> None:
        self.needs_workers(backend)
        project = backend.make_project(test_command=[PYTHON, "-c", "print('all green')"])
        record, result = self.run_attempt(backend, project)
        assert record.status == at.SUCCEEDED, record.error_summary
        assert (result.exit_code, result.timed_out, result.failure_type) == (0, False, None)
        [pr] = forge_for(project.target(TARGET_ID), project.home).list_pull_requests("open")
        assert pr.head == at.branch_name_for(TASK_ID, record.attempt_id)
        assert (record.pr_number, pr.task_marker()) == (pr.number, f"{TARGET_ID}/{TASK_ID}")
        artifacts = project.home.artifacts_dir(record.attempt_id)
        for name in ("result.json", "generator.json", "tests.log"):
            assert (artifacts / name).is_file(), name
        assert "all green" in (artifacts / "tests.log").read_text()

    def test_failing_tests_end_as_tests_failed(self, backend: ExecutorBackend) -> None:
        self.needs_workers(backend)
        project = backend.make_project(
            test_command=[PYTHON, "-c", "import sys; print('3 failed'); sys.exit(1)"]
        )
        record, result = self.run_attempt(backend, project)
        assert (record.status, record.failure_type) == (at.FAILED, at.TESTS_FAILED)
        assert record.counts_against_task
        assert "3 failed" in record.error_summary
        assert (result.exit_code, result.failure_type) == (EXIT_CODES[at.TESTS_FAILED], None)
        assert forge_for(project.target(TARGET_ID), project.home).list_pull_requests("all") == []

    def test_tests_past_the_attempt_timeout_end_as_timeout(self, backend: ExecutorBackend) -> None:
        # The worker enforces attempt_timeout_seconds itself and records the timeout: the task's fault.
        self.needs_workers(backend)
        project = backend.make_project(
            policy={"attempt_timeout_seconds": 2},
            test_command=[PYTHON, "-c", "import time; time.sleep(60)"],
        )
        record, result = self.run_attempt(backend, project)
        assert (record.status, record.failure_type) == (at.FAILED, at.TIMEOUT)
        assert record.counts_against_task
        assert result.exit_code == EXIT_CODES[at.TIMEOUT]

    def test_a_worker_killed_at_the_executors_deadline_is_infrastructure(
        self, backend: ExecutorBackend
    ) -> None:
        # No grace past attempt_timeout_seconds: the executor's deadline comes before the worker's own,
        # so the worker is killed before it can record anything. Not the task's fault: tried again.
        self.needs_workers(backend)
        project = backend.make_project(
            policy={"attempt_timeout_seconds": 2},
            test_command=[PYTHON, "-c", "import time; time.sleep(60)"],
            grace_seconds=0,
        )
        record, result = self.run_attempt(backend, project)
        assert (record.status, record.failure_type) == (at.FAILED, at.INFRASTRUCTURE)
        assert not record.counts_against_task
        assert (result.exit_code, result.timed_out, result.failure_type) == (None, True, at.INFRASTRUCTURE)
        assert "attempt_timeout_seconds" in record.error_summary

    def test_cleanup_ends_a_running_worker_and_everything_it_started(self, backend: ExecutorBackend) -> None:
        # What a run cancelled in Dagster does: the attempt asset's interrupt calls cleanup.
        self.needs_workers(backend)
        marker = f"contract-{uuid.uuid4().hex}"
        project = backend.make_project(
            test_command=[PYTHON, "-c", "import time; time.sleep(120)", marker],
        )
        executor = backend.make_executor(project)
        attempt_id = self.attempt_id(project)
        thread, outcome = self.start_in_background(backend, project, executor)
        self.wait_for_worker(project, attempt_id, thread)
        deadline = time.monotonic() + WORKER_APPEARS_SECONDS
        while not processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)  # the test command is running: the worker has children to end
        assert processes_with(marker)
        executor.cleanup(attempt_id)
        thread.join(WORKER_ENDS_SECONDS)
        assert not thread.is_alive() and "error" not in outcome, outcome
        record = outcome["record"]
        assert (record.status, record.failure_type) == (at.FAILED, at.INFRASTRUCTURE), record
        assert not record.counts_against_task
        end = time.monotonic() + WORKER_ENDS_SECONDS
        while (processes_with(marker) or worker_environment(project, attempt_id)) and time.monotonic() < end:
            time.sleep(0.05)
        assert processes_with(marker) == [] and worker_environment(project, attempt_id) is None
        executor.cleanup(attempt_id)  # again, once it has ended: nothing to do, nothing raised

    def test_the_running_worker_holds_no_credential_beyond_the_contract(
        self, backend: ExecutorBackend
    ) -> None:
        self.needs_workers(backend)
        project = backend.make_project(test_command=[PYTHON, "-c", "import time; time.sleep(120)"])
        executor = backend.make_executor(project)
        attempt_id = self.attempt_id(project)
        thread, _ = self.start_in_background(backend, project, executor)
        try:
            environ = self.wait_for_worker(project, attempt_id, thread)
        finally:
            executor.cleanup(attempt_id)
            thread.join(WORKER_ENDS_SECONDS)
        target = project.target(TARGET_ID)
        allowed = set(SECRET_ENV) | set(target.secret_env.values())
        assert not [
            value for value in CANARIES.values() if value in "\0".join(f"{k}={v}" for k, v in environ.items())
        ]
        assert {name for name in environ if is_secret_name(name)} <= allowed
        # The worker contract (docs/worker.md) is what it was given.
        assert (environ["TARGET_NAME"], environ["TASK_ID"], environ["ATTEMPT_ID"]) == (
            TARGET_ID,
            TASK_ID,
            attempt_id,
        )
        assert environ["TARGET_BRANCH"] == "main" and environ["ATTEMPT_NUMBER"] == "1"

    def test_the_log_tail_is_bounded(self, backend: ExecutorBackend) -> None:
        # The worker logs the test command on one line: one of 20,000 characters, then many lines.
        self.needs_workers(backend)
        script = "import sys\nfor i in range(500): print('noise', i)\nsys.exit(1)  # " + "x" * 20_000
        project = backend.make_project(test_command=[PYTHON, "-c", script])
        record, result = self.run_attempt(backend, project)  # asserts the bound on the result
        assert (record.status, record.failure_type) == (at.FAILED, at.TESTS_FAILED)
        assert result.log_tail  # bounded, not dropped: the end of what the worker said

    # -- errors --------------------------------------------------------------------------------------

    def test_a_configuration_the_backend_refuses_is_executor_error(self, backend: ExecutorBackend) -> None:
        project = backend.unrunnable_project()
        if project is None:
            pytest.skip("this executor has no settings of its own to get wrong")
        record, result = self.run_attempt(backend, project)
        assert (record.status, record.failure_type) == (at.FAILED, at.EXECUTOR_ERROR)
        assert "Traceback" not in record.error_summary and record.error_summary
        # Refused by raising ConfigError (execute_attempt records it) or by saying so in the result.
        assert result is None or result.failure_type == at.EXECUTOR_ERROR

    def test_cleanup_of_an_attempt_it_never_ran_does_nothing(self, backend: ExecutorBackend) -> None:
        project = backend.make_project()
        backend.make_executor(project).cleanup("site-intro-never-ran")
