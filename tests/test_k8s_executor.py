"""The ``k8s`` executor end to end: the real ``kubernetes`` client against the API double, whose pods run
``python -m worker`` as local subprocesses. Success is a real PR in the local forge; a deadline, a killed
pod, a pod that never starts and a cancelled Job end as ``infrastructure`` and do not count."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from k8s_double import TEST_IMAGE, running_double
from support import backlog_yaml, docs_task, make_project

from leviathan_dagster.core.attempts import ledger as at
from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.attempts.runner import execute_attempt, plan_next_attempt
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.executors.k8s.executor import POD_LOG_ARTIFACT, K8sExecutor
from leviathan_dagster.core.executors.k8s.job import job_name
from leviathan_dagster.core.executors.registry import get_executor
from leviathan_dagster.core.forge.registry import forge_for
from leviathan_dagster.core.scheduling.cycle import plan_cycle

SLOW_TESTS = ["python", "-c", "import time; time.sleep(60)"]


def k8s_project(double, tmp_path: Path, kubeconfig: Path, *, policy=None, test_command=None, **kubernetes):
    target = {
        "files": {".leviathan/backlog.yaml": backlog_yaml(docs_task("intro"))},
        "executor": "k8s",
        "policy": {"allowed_path_prefixes": [".leviathan/", "docs/"], "backoff_seconds": 0, **(policy or {})},
    }
    if test_command:
        target["test_command"] = test_command
    settings = {
        "kubeconfig": str(kubeconfig),
        "image": TEST_IMAGE,
        "start_timeout_seconds": 20,
        # The Leviathan home (local forge, artifacts, event log) shared with the pod through a PVC.
        "home_volume_claim": "leviathan-home",
        **kubernetes,
    }
    project = make_project(tmp_path / "p", {"site": target}, kubernetes=settings)
    double.cluster.claims["leviathan-home"] = str(project.home.root)
    return project


def run_attempt(project, executor=None):
    config = load_project_config(project.config_path)
    target = config.target("site")
    events = project.events()
    planned = plan_next_attempt(target, "intro", AttemptLedger.from_events(events.read()))
    executor = executor or get_executor("k8s", config)
    if isinstance(executor, K8sExecutor):
        executor.poll_seconds = 0.05
    return planned, execute_attempt(planned, project.home, project.config_path, executor, events)


def test_worker_job_opens_a_pr_in_the_local_forge(tmp_path: Path) -> None:
    with running_double(tmp_path) as (double, kubeconfig):
        project = k8s_project(double, tmp_path, kubeconfig)
        planned, record = run_attempt(project)
        assert record.status == at.SUCCEEDED, record.error_summary
        prs = forge_for(
            load_project_config(project.config_path).target("site"), project.home
        ).list_pull_requests()
        assert [pr.head for pr in prs] == [f"agent/intro-{planned.attempt_id}"]
        assert f"agent/intro-{planned.attempt_id}" in project.branches("site")
        # What was created and how: exactly one Job, the seed's name, the worker contract in its env.
        (body,) = double.cluster.created_bodies
        assert body["metadata"]["name"] == job_name(planned.attempt_id)
        env = {e["name"]: e for e in body["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["TASK_ID"]["value"] == "intro"
        assert env["GITHUB_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "github-token"
        # The pod log is kept as an artifact: it is the worker's own output.
        log = (project.home.artifacts_dir(planned.attempt_id) / POD_LOG_ARTIFACT).read_text()
        assert planned.attempt_id in log or "intro" in log
        assert "ghp_test_token_never_used" not in log


def _retried_next_cycle(project) -> None:
    """The failure did not count: the next scheduler cycle selects the task again, as attempt 2."""
    config = load_project_config(project.config_path)
    plan = plan_cycle(config, project.home, project.events(), utc_now() + timedelta(seconds=1))
    assert [(r.task_id, r.next_attempt_number) for r in plan.selected] == [("intro", 2)]
    assert plan.ledger.task("site", "intro").counted_attempts == 0


def test_job_over_its_deadline_is_infrastructure_and_retried(tmp_path: Path) -> None:
    with running_double(tmp_path) as (double, kubeconfig):
        project = k8s_project(
            double,
            tmp_path,
            kubeconfig,
            policy={"attempt_timeout_seconds": 1},
            test_command=SLOW_TESTS,
            deadline_grace_seconds=0,
        )
        planned, record = run_attempt(project)
        assert (record.status, record.failure_type) == (at.FAILED, at.INFRASTRUCTURE)
        assert "activeDeadlineSeconds=1" in record.error_summary
        assert not record.counts_against_task
        pod = double.cluster.jobs[("leviathan", job_name(planned.attempt_id))].pod
        assert pod.process.poll() is not None  # the double really killed it
        _retried_next_cycle(project)


def test_killed_pod_is_infrastructure_and_retried(tmp_path: Path) -> None:
    with running_double(tmp_path) as (double, kubeconfig):
        project = k8s_project(double, tmp_path, kubeconfig, test_command=SLOW_TESTS)
        name = job_name(
            plan_next_attempt(
                load_project_config(project.config_path).target("site"),
                "intro",
                AttemptLedger.from_events([]),
            ).attempt_id
        )

        def kill_when_running() -> None:
            double.cluster.wait_until(
                lambda: (
                    ("leviathan", name) in double.cluster.jobs
                    and double.cluster.jobs[("leviathan", name)].pod.phase == "Running"
                )
            )
            double.cluster.kill_pod(name, "OOMKilled")

        killer = threading.Thread(target=kill_when_running)
        killer.start()
        _, record = run_attempt(project)
        killer.join()
        assert (record.status, record.failure_type) == (at.FAILED, at.INFRASTRUCTURE)
        assert "OOMKilled" in record.error_summary
        _retried_next_cycle(project)


def test_pod_that_never_starts_is_infrastructure_and_its_job_deleted(tmp_path: Path) -> None:
    with running_double(tmp_path, secrets_={}) as (double, kubeconfig):
        # A control plane makes its token required; the Secret does not exist: the pod never starts.
        project = k8s_project(
            double, tmp_path, kubeconfig, start_timeout_seconds=1, control_plane_url="http://127.0.0.1:9"
        )
        _, record = run_attempt(project)
        assert (record.status, record.failure_type) == (at.FAILED, at.INFRASTRUCTURE)
        assert "CreateContainerConfigError" in record.error_summary
        assert double.cluster.jobs == {}


def test_cancel_deletes_the_job_and_kills_the_worker(tmp_path: Path) -> None:
    with running_double(tmp_path) as (double, kubeconfig):
        project = k8s_project(double, tmp_path, kubeconfig, test_command=SLOW_TESTS)
        config = load_project_config(project.config_path)
        executor = get_executor("k8s", config)
        attempt_id = plan_next_attempt(
            config.target("site"), "intro", AttemptLedger.from_events([])
        ).attempt_id
        name = job_name(attempt_id)
        seen = {}

        def cancel_when_running() -> None:
            double.cluster.wait_until(
                lambda: (
                    ("leviathan", name) in double.cluster.jobs
                    and double.cluster.jobs[("leviathan", name)].pod.phase == "Running"
                )
            )
            seen["pod"] = double.cluster.jobs[("leviathan", name)].pod
            # A fresh executor, as the operator's cancel op builds one: the Job is found by name.
            assert get_executor("k8s", config).cancel(attempt_id) is True

        canceller = threading.Thread(target=cancel_when_running)
        canceller.start()
        _, record = run_attempt(project, executor)
        canceller.join()
        assert (record.status, record.failure_type) == (at.FAILED, at.INFRASTRUCTURE)
        assert "deleted before it finished" in record.error_summary
        assert double.cluster.jobs == {}
        assert seen["pod"].process.poll() is not None
        assert ("DELETE", f"/apis/batch/v1/namespaces/leviathan/jobs/{name}") in [
            (m, p.split("?")[0]) for m, p in double.requests
        ]


def test_cleanup_deletes_a_job_still_running(tmp_path: Path) -> None:
    with running_double(tmp_path) as (double, kubeconfig):
        project = k8s_project(double, tmp_path, kubeconfig, test_command=SLOW_TESTS)
        config = load_project_config(project.config_path)
        executor = get_executor("k8s", config)
        spec_id = plan_next_attempt(config.target("site"), "intro", AttemptLedger.from_events([])).attempt_id
        from leviathan_dagster.core.executors.base import AttemptSpec
        from leviathan_dagster.core.executors.k8s.job import render_job

        spec = AttemptSpec(config.target("site"), "intro", spec_id, 1, project.config_path, project.home)
        executor._make_api(config.kubernetes).create_job(render_job(spec, config.kubernetes))
        assert ("leviathan", job_name(spec_id)) in double.cluster.jobs
        executor.cleanup(spec_id)
        assert double.cluster.jobs == {}


@pytest.mark.parametrize(
    ("setting", "expected"),
    [({"namespace": "nowhere"}, "HTTP 404"), ({"image": "leviathan-worker:test"}, None)],
)
def test_api_refusals_are_translated_once(tmp_path: Path, setting, expected) -> None:
    with running_double(tmp_path) as (double, kubeconfig):
        project = k8s_project(double, tmp_path, kubeconfig, **setting)
        if expected is None:
            double.refuse_next = [403]  # RBAC refuses creating the Job: a config problem, not a retry
            expected = "HTTP 403"
        _, record = run_attempt(project)
        assert (record.status, record.failure_type) == (at.FAILED, at.EXECUTOR_ERROR)
        assert expected in record.error_summary


def test_unreachable_api_server_is_infrastructure(tmp_path: Path) -> None:
    with running_double(tmp_path) as (double, kubeconfig):
        project = k8s_project(double, tmp_path, kubeconfig)
    # The double is stopped now: connection refused.
    config = load_project_config(project.config_path)
    executor = K8sExecutor(replace(config.kubernetes), poll_seconds=0.05)
    _, record = run_attempt(project, executor)
    assert (record.status, record.failure_type) == (at.FAILED, at.INFRASTRUCTURE)


def test_an_api_server_outage_never_ends_a_running_job(tmp_path: Path) -> None:
    """An outage longer than the client's own retries (about 3.5 s) is waited out: the Job is never
    deleted and the attempt ends as the worker recorded it."""
    with running_double(tmp_path) as (double, kubeconfig):
        project = k8s_project(
            double, tmp_path, kubeconfig, test_command=["python", "-c", "import time; time.sleep(9)"]
        )
        name = job_name(
            plan_next_attempt(
                load_project_config(project.config_path).target("site"),
                "intro",
                AttemptLedger.from_events([]),
            ).attempt_id
        )

        def outage_when_running() -> None:
            double.cluster.wait_until(
                lambda: (
                    ("leviathan", name) in double.cluster.jobs
                    and double.cluster.jobs[("leviathan", name)].pod.phase == "Running"
                )
            )
            double.outage(6.0)

        blip = threading.Thread(target=outage_when_running)
        blip.start()
        _, record = run_attempt(project)
        blip.join()
        assert record.status == at.SUCCEEDED, record.error_summary
        assert not [p for m, p in double.requests if m == "DELETE"]


def test_the_pod_log_artifact_is_the_end_of_a_long_log(tmp_path: Path) -> None:
    from leviathan_dagster.core.executors.k8s.api import LOG_LIMIT_BYTES, KubernetesApi

    with running_double(tmp_path) as (double, kubeconfig):
        config = load_project_config(k8s_project(double, tmp_path, kubeconfig).config_path)
        api = KubernetesApi(config.kubernetes)
        script = "import sys\nfor i in range(90000): print(f'line {i:06d} ' + 'x' * 50)\nprint('THE-END')"
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "chatty", "namespace": "leviathan"},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "c", "image": TEST_IMAGE, "command": ["python", "-c", script]}
                        ],
                    }
                },
            },
        }
        try:
            api.create_job(body)
            double.cluster.wait_until(
                lambda: (api.read_job("chatty") or None) and api.read_job("chatty").finished
            )
            (pod,) = api.job_pods("chatty")
            log = api.pod_log(pod.name)
        finally:
            api.close()
    first, rest = log.split("\n", 1)
    assert first.startswith("[first ") and first.endswith(" bytes of the log not kept]")
    assert rest.endswith("THE-END\n") and rest.startswith("line ")
    assert LOG_LIMIT_BYTES - 100 < len(rest.encode()) <= LOG_LIMIT_BYTES


@pytest.mark.parametrize(
    ("settings", "refused"),
    [
        ({"worker_seccomp_profile": "RuntimeDefault"}, "seccomp RuntimeDefault"),
        ({"worker_apparmor_profile": "RuntimeDefault"}, "AppArmor RuntimeDefault"),
    ],
)
def test_a_worker_whose_node_refuses_namespaces_fails_executor_error_naming_the_fix(
    tmp_path: Path, settings, refused
) -> None:
    """The runtime's default profiles refuse user namespaces and mounts to a container without
    capabilities: the sandbox cannot start, the attempt ends executor_error before anything is cloned,
    and the message names the securityContext fix. Never an unsandboxed test run."""
    with running_double(tmp_path) as (double, kubeconfig):
        project = k8s_project(double, tmp_path, kubeconfig, test_command=["true"], **settings)
        planned, record = run_attempt(project)
        pod = double.cluster.jobs[("leviathan", job_name(planned.attempt_id))].pod
        assert refused in (pod.confinement_refusal or "")
    assert record.status == at.FAILED and record.failure_type == at.EXECUTOR_ERROR
    summary = record.error_summary
    assert "no sandbox for the test command: user namespaces are disabled" in summary
    assert "seccompProfile Localhost leviathan/worker-sandbox.json" in summary
    assert "appArmorProfile Localhost leviathan-worker-sandbox" in summary
    assert "deploy/k8s/node-setup" in summary
    assert project.branches("site") == ["main"]  # nothing pushed
    log = (project.home.artifacts_dir(planned.attempt_id) / POD_LOG_ARTIFACT).read_text()
    assert "sandbox probe: FAILED" in log


def test_a_seccomp_profile_missing_on_the_node_keeps_the_pod_from_starting(tmp_path: Path) -> None:
    with running_double(tmp_path, seccomp_profiles={}) as (double, kubeconfig):
        project = k8s_project(double, tmp_path, kubeconfig, start_timeout_seconds=3)
        _planned, record = run_attempt(project)
    assert record.failure_type == at.INFRASTRUCTURE
    assert "CreateContainerError: failed to create containerd container: cannot load seccomp profile" in (
        record.error_summary
    )
    assert "leviathan/worker-sandbox.json: no such file or directory" in record.error_summary


def test_the_worker_logs_its_sandbox_probe_under_the_shipped_profiles(tmp_path: Path) -> None:
    with running_double(tmp_path) as (double, kubeconfig):
        project = k8s_project(double, tmp_path, kubeconfig, test_command=["true"])
        planned, record = run_attempt(project)
        pod = double.cluster.jobs[("leviathan", job_name(planned.attempt_id))].pod
        assert pod.confinement_refusal is None
    assert record.status == at.SUCCEEDED, record.error_summary
    log = (project.home.artifacts_dir(planned.attempt_id) / POD_LOG_ARTIFACT).read_text()
    assert "sandbox probe: ok" in log


def test_a_pod_the_kubelet_refuses_is_infrastructure_with_its_reason(tmp_path: Path) -> None:
    with running_double(tmp_path, apparmor_profiles=()) as (double, kubeconfig):
        project = k8s_project(double, tmp_path, kubeconfig)
        _planned, record = run_attempt(project)
    assert record.failure_type == at.INFRASTRUCTURE
    refused = 'the node refused the worker pod (AppArmor: Cannot enforce AppArmor: profile "leviathan-worker'
    assert refused in record.error_summary
