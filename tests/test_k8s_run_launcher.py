"""Attempt runs on Kubernetes, against the API double: per-attempt resources reach the run pod through
the ``dagster-k8s/config`` tag; dagster-k8s's real ``K8sRunLauncher`` launches an attempt run whose
"pod" (``dagster api execute_run …`` as a subprocess) executes it for real; ``leviathan run --executor
k8s`` runs the worker as a Job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner
from k8s_double import TEST_IMAGE, running_double
from support import REPO_ROOT, backlog_yaml, docs_task, make_project

from leviathan_dagster.cli.main import cli
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.forge.registry import forge_for
from leviathan_dagster.defs.attempts.sensors import attempt_sensor
from leviathan_dagster.defs.platform.resources import LeviathanResource

pytestmark = pytest.mark.dagster
RUN_TIMEOUT_SECONDS = 180


def docs_project(tmp_path: Path, **target):
    tasks = [docs_task("intro"), docs_task("big", resources={"cpu": 2, "memory": "4Gi"})]
    return make_project(
        tmp_path / "p",
        {"site": {"files": {".leviathan/backlog.yaml": backlog_yaml(*tasks)}, **target}},
        defaults={"max_running_attempts": 2, "max_open_prs": 2},
    )


def test_attempt_run_requests_carry_the_resources_as_dagster_k8s_config(tmp_path: Path) -> None:
    project = docs_project(tmp_path, resources={"cpu": "250m", "memory": "1Gi"})
    leviathan = LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            instance=instance, instance_ref=instance.get_ref(), resources={"leviathan": leviathan}
        ) as context,
    ):
        result = attempt_sensor(context)
    tags = {r.tags["leviathan/task"]: json.loads(r.tags["dagster-k8s/config"]) for r in result.run_requests}
    assert tags == {
        "intro": {
            "container_config": {
                "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
            }
        },
        "big": {
            "container_config": {
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}
            }
        },
    }


def write_instance(dagster_home: Path, kubeconfig: Path, project) -> None:
    """A dagster.yaml whose runs are launched as Kubernetes Jobs by dagster-k8s (directly: no queue)."""
    config = {
        # Outside DAGSTER_HOME: the run pod has the instance ConfigMap mounted there, read-only.
        "storage": {"sqlite": {"base_dir": str(dagster_home.parent / "dagster_storage")}},
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": {
                "load_incluster_config": False,
                "kubeconfig_file": str(kubeconfig),
                "job_namespace": "leviathan",
                "job_image": TEST_IMAGE,
                "service_account_name": "dagster-run",
                "instance_config_map": "dagster-instance",
                "dagster_home": str(dagster_home),
                "fail_pod_on_run_failure": True,
                "env_vars": [
                    f"LEVIATHAN_CONFIG={project.config_path}",
                    f"LEVIATHAN_HOME={project.home.root}",
                ],
                "run_k8s_config": {"job_spec_config": {"backoff_limit": 0, "active_deadline_seconds": 600}},
            },
        },
        "telemetry": {"enabled": False},
    }
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


def test_k8s_run_launcher_runs_an_attempt_in_its_pod(tmp_path: Path, monkeypatch) -> None:
    with running_double(tmp_path, service_accounts=("leviathan-worker", "dagster-run")) as (
        double,
        kubeconfig,
    ):
        project = docs_project(tmp_path)
        dagster_home = tmp_path / "dagster_home"
        write_instance(dagster_home, kubeconfig, project)
        # The instance's dagster.yaml is mounted from this ConfigMap in a real cluster.
        double.cluster.create_config_map(
            "dagster-instance", {"dagster.yaml": (dagster_home / "dagster.yaml").read_text()}
        )
        env = {
            **os.environ,
            "DAGSTER_HOME": str(dagster_home),
            "LEVIATHAN_CONFIG": str(project.config_path),
            "LEVIATHAN_HOME": str(project.home.root),
        }
        monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("targets", ["site"])
            instance.add_dynamic_partitions("tasks", ["site/intro"])
            tags = {"dagster/partition": "site/intro", "leviathan/target": "site", "leviathan/task": "intro"}
            launched = subprocess.run(
                [
                    str(Path(sys.executable).parent / "dagster"),
                    "job",
                    "launch",
                    "-m",
                    "leviathan_dagster.definitions",
                    "-j",
                    "attempt_job",
                    "--tags",
                    json.dumps(tags),
                ],
                env=env,
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert launched.returncode == 0, launched.stderr[-3000:]
            (run,) = instance.get_runs()
            deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
            while not instance.get_run_by_id(run.run_id).is_finished and time.monotonic() < deadline:
                time.sleep(0.5)
            run = instance.get_run_by_id(run.run_id)
            (job,) = double.cluster.jobs.values()
            log = job.pod.log_path.read_text() if job.pod.log_path else ""
            assert run.status == dg.DagsterRunStatus.SUCCESS, log[-3000:]
        # The launcher's Job: dagster-k8s's own spec, with our run config applied.
        assert job.body["spec"]["backoffLimit"] == 0 and job.body["spec"]["activeDeadlineSeconds"] == 600
        assert job.body["spec"]["template"]["spec"]["containers"][0]["args"][:3] == [
            "dagster",
            "api",
            "execute_run",
        ]
        double.cluster.wait_until(lambda: job.finished is not None)  # the run ends before its process
        assert (job.pod.exit_code, job.finished[0]) == (0, "Complete")
        target = load_project_config(project.config_path).target("site")
        (pr,) = forge_for(target, project.home).list_pull_requests()
        assert pr.head.startswith("agent/intro-")


def test_leviathan_run_with_the_k8s_executor(tmp_path: Path) -> None:
    with running_double(tmp_path) as (double, kubeconfig):
        project = make_project(
            tmp_path / "p",
            {"site": {"files": {".leviathan/backlog.yaml": backlog_yaml(docs_task("intro"))}}},
            kubernetes={
                "kubeconfig": str(kubeconfig),
                "image": TEST_IMAGE,
                "home_volume_claim": "leviathan-home",
            },
        )
        double.cluster.claims["leviathan-home"] = str(project.home.root)
        result = CliRunner().invoke(
            cli,
            [
                "--config",
                str(project.config_path),
                "--home",
                str(project.home.root),
                "run",
                "--once",
                "--executor",
                "k8s",
            ],
        )
        assert result.exit_code == 0, result.output
        assert len(double.cluster.created_bodies) == 1
        target = load_project_config(project.config_path).target("site")
        (pr,) = forge_for(target, project.home).list_pull_requests()
        assert pr.head.startswith("agent/intro-")
