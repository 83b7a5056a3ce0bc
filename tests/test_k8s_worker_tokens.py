"""The ``k8s`` executor gives each worker pod a control-plane token of its own attempt (minted from
``control_plane.worker_token_key``), never the Secret's shared one: the real ``kubernetes`` client
against the API double, whose pod runs ``python -m worker`` and posts its events to a real control
plane over uvicorn, which accepts them, and refuses that same token for another attempt's events."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from k8s_double import TEST_SECRETS, running_double
from test_control_plane import serving
from test_k8s_executor import k8s_project, run_attempt

from leviathan_dagster.control_plane import create_app
from leviathan_dagster.core.attempts import ledger as at
from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.attempts.recovery import ORCHESTRATOR
from leviathan_dagster.core.errors import LeviathanError
from leviathan_dagster.core.events.access import Principal, mint_worker_token
from leviathan_dagster.core.executors.k8s.job import WORKER_TOKEN_PLACEHOLDER
from leviathan_dagster.core.executors.k8s.stub import JOB_ARTIFACT
from worker.event_sink import ControlPlaneSink

KEY_ENV = "LEVIATHAN_TEST_WORKER_KEY"
KEY = "worker-key-for-tests-" + "k" * 32
SCHEDULER = "scheduler-token-for-tests"


def test_each_worker_pod_posts_with_a_token_of_its_own_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    with running_double(tmp_path) as (double, kubeconfig):
        project = k8s_project(double, tmp_path, kubeconfig)
        store = project.events()  # the orchestrator appends here; the control plane serves the same log
        app = create_app(
            store,
            tokens={SCHEDULER: Principal("scheduler", "orchestrator")},
            worker_key=KEY.encode(),
        )
        with serving(app) as url:
            _configure(project, url)
            planned, record = run_attempt(project)
            assert record.status == at.SUCCEEDED, record.error_summary

            # The pod's token: minted for this attempt, given in the Job's env, not the Secret's.
            (body,) = double.cluster.created_bodies
            env = {e["name"]: e for e in body["spec"]["template"]["spec"]["containers"][0]["env"]}
            token = env["CONTROL_PLANE_TOKEN"]["value"]
            assert token == mint_worker_token(KEY.encode(), planned.attempt_id)
            assert token != TEST_SECRETS["leviathan-secrets"]["control-plane-token"]
            assert "valueFrom" not in env["CONTROL_PLANE_TOKEN"]
            # The artifact of the Job does not keep it.
            artifact = (project.home.artifacts_dir(planned.attempt_id) / JOB_ARTIFACT).read_text()
            assert token not in artifact and WORKER_TOKEN_PLACEHOLDER in artifact

            # The control plane accepted the worker's bundles, as that attempt's worker.
            mine = [e for e in store.read() if e.event.payload.get("attempt_id") == planned.attempt_id]
            actors = {e.event.event_type: e.event.actor_id for e in mine}
            worker = f"worker:{planned.attempt_id}"
            assert actors == {
                "attempt.created": ORCHESTRATOR,  # the orchestrator's own, straight to the log
                "attempt.started": worker,
                "pr.created": worker,
                "attempt.succeeded": worker,
            }
            # The same token cannot speak for another attempt (nor forge what only the scheduler writes).
            before = len(list(store.read()))
            other = ControlPlaneSink(url, token, "site", "attempt-someone-else")
            with pytest.raises(LeviathanError, match="HTTP 403"):
                other.append(
                    [
                        lifecycle.attempt_started(
                            attempt_id="attempt-someone-else", target_id="site", task_id="intro", actor_id="x"
                        )
                    ]
                )
            with pytest.raises(LeviathanError, match="HTTP 403"):
                ControlPlaneSink(url, token, "site", planned.attempt_id).append(
                    [lifecycle.task_escalated(target_id="site", task_id="intro", failures=1, actor_id="x")]
                )
            assert len(list(store.read())) == before and store.verify().ok


def test_a_worker_key_missing_from_the_orchestrator_fails_the_attempt_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with running_double(tmp_path) as (double, kubeconfig):
        project = k8s_project(double, tmp_path, kubeconfig)
        _configure(project, "http://127.0.0.1:9")
        _, record = run_attempt(project)
    assert record.failure_type == at.EXECUTOR_ERROR
    assert f"{KEY_ENV} must hold at least 32 characters" in record.error_summary
    assert double.cluster.created_bodies == []  # nothing was started with the shared token instead


def _configure(project, url: str) -> None:
    """The control plane's URL for the pods, and the worker token key it checks tokens with."""
    config = yaml.safe_load(project.config_path.read_text())
    config["kubernetes"]["control_plane_url"] = url
    config["control_plane"] = {"worker_token_key": {"env": KEY_ENV}}
    project.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
