"""The executor contract (executor_contract.py) run against every backend: the local executor (a
subprocess), the k8s executor (the real ``kubernetes`` client against the API double, whose pods are
sandboxed local processes) and k8s-stub (renders and validates, never runs: its own documented case)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from executor_contract import CANARIES, TARGET_ID, TASK_ID, ExecutorBackend, ExecutorContract
from k8s_double import TEST_IMAGE, running_double
from support import Project, backlog_yaml, docs_task, make_project
from test_k8s_executor import k8s_project

from leviathan_dagster.core.attempts import ledger as at
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.executors.base import Executor
from leviathan_dagster.core.executors.k8s.executor import K8sExecutor
from leviathan_dagster.core.executors.k8s.stub import JOB_ARTIFACT
from leviathan_dagster.core.executors.local import LocalExecutor
from leviathan_dagster.core.executors.registry import get_executor
from leviathan_dagster.core.redaction import is_secret_name


def target_spec(executor: str, policy: dict | None, test_command: list[str] | None) -> dict:
    spec = {
        "files": {".leviathan/backlog.yaml": backlog_yaml(docs_task(TASK_ID))},
        "executor": executor,
        "policy": {"allowed_path_prefixes": [".leviathan/", "docs/"], "backoff_seconds": 0, **(policy or {})},
    }
    if test_command:
        spec["test_command"] = test_command
    return spec


class LocalBackend(ExecutorBackend):
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.grace_seconds = 60

    def make_project(self, *, policy=None, test_command=None, grace_seconds: int = 60) -> Project:
        self.grace_seconds = grace_seconds
        return make_project(self.tmp_path / "p", {TARGET_ID: target_spec("local", policy, test_command)})

    def make_executor(self, project: Project) -> Executor:
        assert isinstance(get_executor("local"), LocalExecutor)
        return LocalExecutor(kill_grace_seconds=self.grace_seconds)


class TestLocalExecutorContract(ExecutorContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[ExecutorBackend]:
        yield LocalBackend(tmp_path)


class K8sBackend(ExecutorBackend):
    def __init__(self, double, kubeconfig: Path, tmp_path: Path) -> None:
        self.double, self.kubeconfig, self.tmp_path = double, kubeconfig, tmp_path

    def make_project(
        self, *, policy=None, test_command=None, grace_seconds: int = 60, **kubernetes
    ) -> Project:
        return k8s_project(
            self.double,
            self.tmp_path,
            self.kubeconfig,
            policy=policy,
            test_command=test_command,
            deadline_grace_seconds=grace_seconds,
            **kubernetes,
        )

    def make_executor(self, project: Project) -> Executor:
        executor = get_executor("k8s", load_project_config(project.config_path))
        assert isinstance(executor, K8sExecutor)
        executor.poll_seconds = 0.05
        return executor

    def unrunnable_project(self) -> Project:
        return self.make_project(namespace="nowhere")  # the API server answers 404


class TestK8sExecutorContract(ExecutorContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[ExecutorBackend]:
        with running_double(tmp_path) as (double, kubeconfig):
            yield K8sBackend(double, kubeconfig, tmp_path)


class K8sStubBackend(ExecutorBackend):
    runs_workers = False

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def make_project(self, *, policy=None, test_command=None, grace_seconds: int = 60) -> Project:
        settings = {"image": TEST_IMAGE, "deadline_grace_seconds": grace_seconds}
        spec = target_spec("k8s-stub", policy, test_command)
        return make_project(self.tmp_path / "p", {TARGET_ID: spec}, kubernetes=settings)

    def make_executor(self, project: Project) -> Executor:
        return get_executor("k8s-stub", load_project_config(project.config_path))


class TestK8sStubExecutorContract(ExecutorContract):
    """k8s-stub's own contract: every attempt ends executor_error, with the rendered Job kept."""

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[ExecutorBackend]:
        yield K8sStubBackend(tmp_path)

    def test_an_attempt_is_rendered_never_run_and_never_a_success(self, backend: ExecutorBackend) -> None:
        project = backend.make_project(test_command=["python", "-c", "print('never run')"])
        record, result = self.run_attempt(backend, project)
        assert (record.status, record.failure_type) == (at.FAILED, at.EXECUTOR_ERROR)
        assert (result.exit_code, result.timed_out, result.failure_type) == (None, False, at.EXECUTOR_ERROR)
        assert "k8s-stub submits nothing" in record.error_summary
        artifacts = project.home.artifacts_dir(record.attempt_id)
        assert (artifacts / JOB_ARTIFACT).is_file() and not (artifacts / "tests.log").exists()
        assert project.branches(TARGET_ID) == ["main"]

    def test_the_rendered_job_names_credentials_only_by_reference(self, backend: ExecutorBackend) -> None:
        project = backend.make_project()
        record, _ = self.run_attempt(backend, project)
        text = (project.home.artifacts_dir(record.attempt_id) / JOB_ARTIFACT).read_text()
        assert not [value for value in CANARIES.values() if value in text]
        [container] = json.loads(text)["spec"]["template"]["spec"]["containers"]
        secret_named = [item for item in container["env"] if is_secret_name(item["name"])]
        assert secret_named and all(
            "value" not in item and "secretKeyRef" in item["valueFrom"] for item in secret_named
        )
