"""deploy/k8s/base/dagster.yaml through Dagster's own config schema (the instance, then each
configurable class: storage, K8sRunLauncher, run coordinator), and the run Job dagster-k8s would
create from it validated against Kubernetes: the forge credentials by reference, LEVIATHAN_HOME and
/tmp mounted under a read-only root filesystem."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import kubernetes
import pytest
import yaml
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.dagster_run import DagsterRun
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import construct_dagster_k8s_job, get_job_name_from_run_id
from dagster_postgres import DagsterPostgresStorage
from support import REPO_ROOT
from test_deploy_manifests import validate

INSTANCE = REPO_ROOT / "deploy" / "k8s" / "base" / "dagster.yaml"
ENV = {
    "DAGSTER_PG_HOST": "postgres.example.internal",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "not-a-real-password",
    "DAGSTER_K8S_INSTANCE_CONFIG_MAP": "dagster-instance",
    "DAGSTER_K8S_JOB_NAMESPACE": "leviathan",
}


@pytest.fixture
def instance_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def load_instance(tmp_path: Path, text: str | None = None) -> dict:
    """Validated the way DagsterInstance.get() validates DAGSTER_HOME/dagster.yaml, then each
    configurable class's own config (with env vars resolved), as the instance does when it builds it."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    if text is None:
        shutil.copy(INSTANCE, home / "dagster.yaml")
    else:
        (home / "dagster.yaml").write_text(text)
    config, _ = dagster_instance_config(str(home))
    for section in ("run_launcher", "run_coordinator", "compute_logs", "scheduler"):
        entry = config[section]
        klass = getattr(importlib.import_module(entry["module"]), entry["class"])
        result = process_config(klass.config_type(), entry.get("config") or {})
        if not result.success:
            raise DagsterInvalidConfigError(f"{section} config", result.errors, entry)
    result = process_config(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    if not result.success:
        raise DagsterInvalidConfigError("storage.postgres config", result.errors, config["storage"])
    return config


def test_production_instance_is_valid_dagster_config(tmp_path: Path, instance_env: None) -> None:
    config = load_instance(tmp_path)
    db = config["storage"]["postgres"]["postgres_db"]
    assert db["scheme"] == "postgresql+psycopg2"
    assert db["password"] == {"env": "DAGSTER_PG_PASSWORD"}  # never a literal
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    job_spec = launcher["config"]["run_k8s_config"]["job_spec_config"]
    assert job_spec["backoff_limit"] == 0
    assert job_spec["active_deadline_seconds"] > config["run_monitoring"]["max_runtime_seconds"]
    # No limit of the queue's own: the policy (max_concurrent_attempts, max_running_attempts) decides.
    assert config["concurrency"]["runs"] == {"max_concurrent_runs": -1}
    assert config["run_retries"]["retry_on_asset_or_op_failure"] is False
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("start_timeout_seconds: 300", "start_timout_seconds: 300"),  # typo in an instance section
        ("fail_pod_on_run_failure: true", "fail_pod_on_run_falure: true"),  # typo in the launcher
        ("db_name: {env: DAGSTER_PG_DB}", "dbname: {env: DAGSTER_PG_DB}"),  # typo in storage
        ("max_concurrent_runs: -1", "max_concurrent_runs: unlimited"),  # a wrong type in concurrency
    ],
)
def test_a_typo_in_the_instance_fails_validation(
    tmp_path: Path, instance_env: None, old: str, new: str
) -> None:
    text = INSTANCE.read_text()
    assert old in text
    with pytest.raises(DagsterInvalidConfigError):
        load_instance(tmp_path, text.replace(old, new, 1))


def test_missing_secret_env_var_fails(tmp_path: Path, instance_env: None, monkeypatch) -> None:
    monkeypatch.delenv("DAGSTER_K8S_INSTANCE_CONFIG_MAP")
    with pytest.raises(DagsterInvalidConfigError):
        load_instance(tmp_path)


def render_run_job(launcher_config: dict, tmp_path: Path) -> dict:
    """The batch/v1 Job the K8sRunLauncher creates for a run, built by dagster-k8s's own code from the
    production launcher config (its kubeconfig pointed at a file: nothing is contacted)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    processed = process_config(K8sRunLauncher.config_type(), launcher_config).value
    launcher = K8sRunLauncher.from_config_value(
        None, {**processed, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    )
    run = DagsterRun(job_name="attempt_job", run_id="5f1c8e36-0c4e-4a57-9d0e-6f1b2f8a9c11", tags={})
    context = launcher.get_container_context_for_run(run)
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(
            job_image="ghcr.io/example-org/leviathan:0.1.0", run_launcher=launcher
        ),
        args=["dagster", "api", "execute_run", "{}"],
        job_name=get_job_name_from_run_id(run.run_id),
        pod_name=get_job_name_from_run_id(run.run_id),
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/run-id": run.run_id},
    )
    body = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    return {"apiVersion": "batch/v1", "kind": "Job", **body}


def test_run_job_from_the_production_launcher_is_valid_kubernetes(tmp_path: Path, instance_env: None) -> None:
    config = load_instance(tmp_path)
    job = render_run_job(config["run_launcher"]["config"], tmp_path)
    validate(job, "K8sRunLauncher run Job")
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["ttlSecondsAfterFinished"]) == (0, 3600)
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "leviathan-dagster" and pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    assert {"secretRef": {"name": "leviathan-dagster-env"}} in container["envFrom"]
    assert {"configMapRef": {"name": "leviathan-env"}} in container["envFrom"]
    env = {e["name"]: e for e in container["env"]}
    assert env["GITHUB_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "leviathan-secrets",
        "key": "github-token",
        "optional": True,
    }
    assert "value" not in env["GITHUB_TOKEN"]  # a reference, never the token in the Job object
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert {"/var/lib/leviathan", "/tmp", "/etc/leviathan"} <= set(mounts)
    assert container["resources"]["limits"]["memory"] == "1Gi"
    assert job["metadata"]["labels"]["app.kubernetes.io/part-of"] == "leviathan"
