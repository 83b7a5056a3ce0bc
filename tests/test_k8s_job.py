"""The worker Job spec (golden file + the real Kubernetes schema), the k8s-stub executor, the
``kubernetes:`` and ``resources:`` config sections, and the ``dagster-k8s/config`` tag of attempt runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import kubernetes_validate
import pytest
from support import backlog_yaml, docs_task, make_project

from leviathan_dagster.core.attempts import ledger as at
from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.attempts.runner import execute_attempt, plan_next_attempt
from leviathan_dagster.core.config.project import load_project_config, parse_project_config
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.executors.base import AttemptSpec
from leviathan_dagster.core.executors.k8s.job import job_name, label_value, render_job
from leviathan_dagster.core.executors.k8s.stub import JOB_ARTIFACT
from leviathan_dagster.core.executors.registry import get_executor
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import KubernetesSettings, Policy, ResourceRequests, TargetConfig

GOLDEN = Path(__file__).parent / "snapshots" / "k8s_worker_job.json"
K8S_VERSION = "1.33.0"


def spec(target_id: str = "radix", task_id: str = "task-001", **target) -> AttemptSpec:
    target_config = TargetConfig(
        id=target_id,
        repo_url="https://github.com/acme/radix.git",
        policy=Policy(attempt_timeout_seconds=900),
        **target,
    )
    return AttemptSpec(
        target_config,
        task_id,
        "attempt-abc123def456",
        2,
        Path("/srv/leviathan/leviathan.yaml"),
        LeviathanHome(Path("/srv/leviathan/home")),
    )


def validate(body: dict) -> None:
    kubernetes_validate.validate(body, K8S_VERSION, strict=True)


def test_job_spec_matches_the_golden_file_and_the_kubernetes_schema() -> None:
    settings = KubernetesSettings(
        control_plane_url="http://leviathan-control-plane:8000",
        home_volume_claim="leviathan-home",
        config_map="leviathan-config",
    )
    body = render_job(spec(), settings, ResourceRequests(cpu="500m", memory="1Gi"))
    validate(body)
    text = json.dumps(body, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "settings",
    [
        KubernetesSettings(),
        KubernetesSettings(control_plane_url="https://cp.example", ttl_seconds_after_finished=0),
    ],
)
@pytest.mark.parametrize("resources", [None, ResourceRequests(cpu="2"), ResourceRequests(memory="512Mi")])
def test_every_variant_is_a_valid_job(settings, resources) -> None:
    body = render_job(spec("a_target.with-dots", "T" * 80), settings, resources)
    validate(body)
    meta, pod = body["metadata"], body["spec"]["template"]["spec"]
    assert meta["labels"]["app"] == "leviathan" and len(meta["labels"]["task"]) <= 63
    assert (body["spec"]["backoffLimit"], pod["restartPolicy"]) == (0, "Never")
    assert body["spec"]["activeDeadlineSeconds"] == 900 + settings.deadline_grace_seconds
    assert pod["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    # Secrets only by reference: no value of any secret is in the spec.
    for name in ("CONTROL_PLANE_TOKEN", "GITHUB_TOKEN", "LEVIATHAN_CLAUDE_API_KEY", "LEVIATHAN_CLAUDE_MODEL"):
        assert (
            "value" not in env[name]
            and env[name]["valueFrom"]["secretKeyRef"]["name"] == settings.secret_name
        )
    assert env["CONTROL_PLANE_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is not bool(
        settings.control_plane_url
    )


@pytest.mark.parametrize(
    ("settings", "container_security", "host_users"),
    [
        (
            KubernetesSettings(),
            {
                "seccompProfile": {"type": "Localhost", "localhostProfile": "leviathan/worker-sandbox.json"},
                "appArmorProfile": {"type": "Localhost", "localhostProfile": "leviathan-worker-sandbox"},
            },
            None,
        ),
        (
            KubernetesSettings(
                worker_seccomp_profile="Unconfined", worker_apparmor_profile="none", worker_host_users=False
            ),
            {"seccompProfile": {"type": "Unconfined"}},
            False,
        ),
        (
            KubernetesSettings(
                worker_seccomp_profile="RuntimeDefault", worker_apparmor_profile="RuntimeDefault"
            ),
            {"seccompProfile": {"type": "RuntimeDefault"}, "appArmorProfile": {"type": "RuntimeDefault"}},
            None,
        ),
    ],
)
def test_the_worker_containers_confinement_is_configured(settings, container_security, host_users) -> None:
    """The profiles go on the worker container (the pod keeps RuntimeDefault for anything else);
    capabilities stay dropped and the root read-only whatever is chosen."""
    body = render_job(spec(), settings)
    validate(body)
    pod = body["spec"]["template"]["spec"]
    security = pod["containers"][0]["securityContext"]
    assert {k: security.get(k) for k in container_security} == container_security
    assert ("appArmorProfile" in security) is ("appArmorProfile" in container_security)
    assert security["capabilities"] == {"drop": ["ALL"]} and security["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod.get("hostUsers") is host_users
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["LEVIATHAN_WORKER_CONFINEMENT"].startswith(f"seccomp {settings.worker_seccomp_profile}, ")


def test_names_and_labels_are_dns_safe() -> None:
    assert job_name("attempt-abc123") == "leviathan-attempt-abc123"
    long = job_name("attempt-" + "X_" * 40)
    assert len(long) <= 63 and long == long.lower() and long[0].isalnum() and long[-1].isalnum()
    assert job_name("attempt-" + "X_" * 40) != job_name("attempt-" + "X_" * 39 + "Y_")
    assert label_value("-a/b-") == "a-b"


def test_k8s_stub_writes_the_job_and_ends_as_executor_error(tmp_path: Path) -> None:
    project = make_project(
        tmp_path,
        {
            "site": {
                "files": {
                    ".leviathan/backlog.yaml": backlog_yaml(docs_task("intro", resources={"memory": "3Gi"}))
                },
                "executor": "k8s-stub",
                "resources": {"cpu": "250m", "memory": "1Gi"},
            }
        },
        kubernetes={"namespace": "agents", "image": "ghcr.io/acme/leviathan:1.0"},
    )
    config = load_project_config(project.config_path)
    target = config.target("site")
    planned = plan_next_attempt(target, "intro", AttemptLedger.from_events([]))
    record = execute_attempt(
        planned, project.home, project.config_path, get_executor("k8s-stub", config), project.events()
    )
    assert (record.status, record.failure_type) == (at.FAILED, at.EXECUTOR_ERROR)
    assert record.error_summary.startswith("k8s-stub submits nothing")
    body = json.loads((project.home.artifacts_dir(planned.attempt_id) / JOB_ARTIFACT).read_text())
    validate(body)
    assert body["metadata"]["namespace"] == "agents"
    container = body["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/acme/leviathan:1.0"
    # The task's own resources replace the target's.
    assert container["resources"] == {"requests": {"memory": "3Gi"}, "limits": {"memory": "3Gi"}}
    assert record.counts_against_task  # never a fake success, and never an endless free retry


def parse(text: str):
    return parse_project_config(text, "leviathan.yaml", base_dir=Path("/cfg"))


def test_kubernetes_and_resources_sections_parse() -> None:
    config = parse(
        "kubernetes:\n  namespace: agents\n  kubeconfig: ./kube.yaml\n  start_timeout_seconds: 30\n"
        "targets:\n  - id: a\n    repo_url: /r.git\n    resources: {cpu: 1, memory: 2Gi}\n"
    )
    assert config.kubernetes.namespace == "agents" and config.kubernetes.kubeconfig == "/cfg/kube.yaml"
    assert config.kubernetes.start_timeout_seconds == 30
    assert config.target("a").resources == ResourceRequests(cpu="1", memory="2Gi")
    assert parse("targets:\n  - id: a\n    repo_url: /r.git\n").kubernetes == KubernetesSettings()


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "kubernetes:\n  namespace: Bad_NS\n",
            "leviathan.yaml:2: kubernetes.namespace must be a DNS-1123 label",
        ),
        (
            "kubernetes:\n  control_plane_url: ftp://x\n",
            "kubernetes.control_plane_url must be an http(s):// URL",
        ),
        ("kubernetes:\n  ttl_seconds_after_finished: -1\n", "must be an integer from 0 to 2,592,000"),
        ("kubernetes: [1]\n", "'kubernetes' must be a mapping"),
    ],
)
def test_bad_kubernetes_section_names_line_and_fix(yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(yaml_text + "targets:\n  - id: a\n    repo_url: /r.git\n")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ("{cpu: lots}", "cpu 'lots' is not a Kubernetes quantity"),
        ("{gpu: 1}", "unknown key(s) gpu"),
        ("4", "mapping"),
    ],
)
def test_bad_resources_name_the_target_and_line(resources: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(f"targets:\n  - id: a\n    repo_url: /r.git\n    resources: {resources}\n")
    assert "leviathan.yaml:4: target 'a': field 'resources'" in str(err.value)
    assert message in str(err.value)


def test_without_a_claim_leviathan_home_is_the_pods_own_volume_and_the_app_key_is_mapped() -> None:
    body = render_job(spec(), KubernetesSettings())
    pod = body["spec"]["template"]["spec"]
    [container] = pod["containers"]
    home = next(m for m in container["volumeMounts"] if m["name"] == "home")
    env = {e["name"]: e for e in container["env"]}
    assert home["mountPath"] == env["LEVIATHAN_HOME"]["value"]
    assert {"name": "home", "emptyDir": {}} in pod["volumes"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert env["GITHUB_APP_PRIVATE_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "leviathan-secrets",
        "key": "github-app-private-key",
        "optional": True,
    }
