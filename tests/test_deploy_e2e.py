"""The deployment exactly as shipped, end to end: the production overlay rendered by ``kubectl
kustomize`` under an operator's own overlay (their database, their target), applied to the
Kubernetes double, the operator's Secrets created as docs/deploy-kubernetes.md says — then the code
server, the daemon and the control plane run from those manifests, each with only the environment,
volumes, user and ServiceAccount its pod spec gives it (bubblewrap, read-only root filesystems, RBAC
from rbac.yaml). The daemon's sensor requests an attempt, K8sRunLauncher starts the run pod, the run
pod starts the worker Job, the worker pushes to the GitHub double and opens the PR; a reviewer merges
it and the lifecycle sensor records ``pr.merged``. Nothing runs in the test's own process or env."""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest
import yaml
from github import Auth, Github
from github_double import GithubDouble
from k8s_double import Cluster, KubernetesApiDouble, project_image, shipped_node_setup
from kustomize_build import render
from pg_dagster import temporary_database
from psycopg.conninfo import conninfo_to_dict
from support import REPO_ROOT, backlog_yaml, docs_task

from leviathan_dagster.core.events.postgres.store import PostgresEventLog

pytestmark = pytest.mark.dagster

PRODUCTION = REPO_ROOT / "deploy" / "k8s" / "overlays" / "production"
IMAGE = "ghcr.io/example-org/leviathan:0.1.0"
REGISTRY_USER = "deploy-bot"
# The three the attempt needs; the webserver would only add a UI (and hold host port 3000).
RUNNING = ("leviathan-code-server", "dagster-daemon", "leviathan-control-plane")
FAILING = (
    "CreateContainerConfigError",
    "CreateContainerError",
    "ErrImagePull",
    "ImagePullBackOff",
    "CrashLoopBackOff",
    "RunContainerError",
)
STUCK_SECONDS = 5
PR_TIMEOUT_SECONDS = 180
# pr_lifecycle_sensor ticks every 60 s.
MERGE_TIMEOUT_SECONDS = 150


class DeploymentFailed(AssertionError):
    pass


@dataclass
class Deployed:
    double: KubernetesApiDouble
    gh: GithubDouble
    token: str
    dsn: str

    def events(self) -> list:
        store = PostgresEventLog(self.dsn)
        try:
            return list(store.read())
        finally:
            close = getattr(store, "close", None)
            if close:
                close()

    def pods(self) -> list:
        cluster = self.double.cluster
        return list(cluster.deployment_pods.values()) + [
            p for j in list(cluster.jobs.values()) for p in j.pods
        ]

    def logs(self) -> str:
        parts = []
        for pod in self.pods():
            text = pod.log_path.read_text(errors="replace") if pod.log_path and pod.log_path.exists() else ""
            parts.append(f"--- {pod.name} ({pod.phase}, {pod.waiting}):\n{text[-2500:]}")
        return "\n".join(parts)


def operator_overlay(folder: Path, dsn: str, gh: GithubDouble) -> Path:
    """What an operator writes on top of deploy/k8s/overlays/production: their leviathan.yaml (their
    target; everything else as shipped) and where their database is."""
    folder.mkdir(parents=True)
    [config] = [
        o
        for o in render(PRODUCTION)
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "leviathan-config"
    ]
    shipped = yaml.safe_load(config["data"]["leviathan.yaml"])
    shipped["targets"] = [
        {
            "id": "site",
            "repo_url": gh.repo_url("acme", "site"),
            "forge": "github",
            "github": {"api_url": gh.api_url},
            "executor": "k8s",
            "test_command": ["python", "-c", "print('tests pass')"],
            "secrets": {"github_token": {"env": "GITHUB_TOKEN"}},
            "policy": {"allowed_path_prefixes": [".leviathan/", "docs/"], "max_open_prs": 1},
        }
    ]
    their_config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "leviathan-config", "namespace": "leviathan"},
        "data": {"leviathan.yaml": yaml.safe_dump(shipped, sort_keys=False)},
    }
    (folder / "leviathan-config.yaml").write_text(yaml.safe_dump(their_config))
    db = conninfo_to_dict(dsn)
    database = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "leviathan-env", "namespace": "leviathan"},
        "data": {
            "DAGSTER_PG_HOST": str(db.get("host", "127.0.0.1")),
            "DAGSTER_PG_PORT": str(db.get("port", "5432")),
            "DAGSTER_PG_DB": str(db["dbname"]),
            "DAGSTER_PG_USERNAME": str(db.get("user", "postgres")),
        },
    }
    (folder / "database.yaml").write_text(yaml.safe_dump(database))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "leviathan",
        "resources": [os.path.relpath(PRODUCTION, folder)],
        "patches": [{"path": "leviathan-config.yaml"}, {"path": "database.yaml"}],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return folder


def operator_secrets(dsn: str, token: str, registry_password: str) -> list[dict]:
    """The Secrets docs/deploy-kubernetes.md has the operator create."""
    db = conninfo_to_dict(dsn)
    auth = base64.b64encode(f"{REGISTRY_USER}:{registry_password}".encode()).decode()
    return [
        _secret(
            "leviathan-secrets",
            {
                "control-plane-token": secrets.token_hex(16),
                "control-plane-worker-key": secrets.token_hex(32),
                "github-token": token,
            },
        ),
        _secret(
            "leviathan-dagster-env",
            {"DAGSTER_PG_PASSWORD": str(db.get("password", "")), "LEVIATHAN_EVENT_LOG_DSN": dsn},
        ),
        {
            **_secret(
                "leviathan-registry",
                {".dockerconfigjson": json.dumps({"auths": {"ghcr.io": {"auth": auth}}})},
            ),
            "type": "kubernetes.io/dockerconfigjson",
        },
    ]


def _secret(name: str, data: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "leviathan"},
        "stringData": data,
    }


@contextmanager
def deployed(tmp_path: Path, *, drop_key: tuple[str, str] | None = None) -> Iterator[Deployed]:
    token = "ghp_" + secrets.token_hex(18)
    registry_password = secrets.token_hex(12)
    with temporary_database() as dsn, GithubDouble(tmp_path / "github") as gh:
        gh.add_repo(
            "acme",
            "site",
            {".leviathan/backlog.yaml": backlog_yaml(docs_task("intro")), "README.md": "# site\n"},
        )
        gh.add_token(token)
        objects = render(operator_overlay(tmp_path / "my-cluster", dsn, gh))
        cluster = Cluster(
            namespaces=("default",),
            images={IMAGE: project_image()},
            private_registries={"ghcr.io": f"{REGISTRY_USER}:{registry_password}"},
            schedule=RUNNING,
            # The node as deploy/k8s/node-setup leaves it (docs/deploy-kubernetes.md): the worker's
            # seccomp profile under the kubelet's seccomp root, its AppArmor profile loaded.
            **shipped_node_setup(),
        )
        double = KubernetesApiDouble(cluster).start()
        client = kubernetes.config.new_client_from_config(
            str(double.write_kubeconfig(tmp_path / "kubeconfig"))
        )
        try:
            for obj in objects:  # `kubectl apply -k`: kustomize already ordered them (Namespace first)
                kubernetes.utils.create_from_dict(client, obj)
            for secret in operator_secrets(dsn, token, registry_password):
                if drop_key and secret["metadata"]["name"] == drop_key[0]:
                    del secret["stringData"][drop_key[1]]
                kubernetes.utils.create_from_dict(client, secret)
            yield Deployed(double, gh, token, dsn)
        finally:
            client.close()
            double.stop()


def wait_running(deployment: Deployed, names=RUNNING, timeout: float = 60.0) -> None:
    """Every named Deployment's pod is running its container; a pod the kubelet still cannot start
    after its retries (STUCK_SECONDS) fails with the kubelet's reason and message, as ``kubectl
    describe pod`` shows them. (Right after `apply`, a pod may briefly wait for a Secret created next.)"""
    cluster = deployment.double.cluster
    end = time.monotonic() + timeout
    stuck_since: dict[str, float] = {}
    while True:
        pods = {name: cluster.deployment_pods.get(("leviathan", name)) for name in names}
        for name, pod in pods.items():
            if not (pod is not None and pod.waiting and pod.waiting[0] in FAILING):
                stuck_since.pop(name, None)
            elif time.monotonic() - stuck_since.setdefault(name, time.monotonic()) > STUCK_SECONDS:
                reason, message = pod.waiting
                log = pod.log_path.read_text(errors="replace")[-1500:] if pod.log_path else ""
                # (A crash loop's log says why, e.g. the host port already taken by another process.)
                raise DeploymentFailed(f"Deployment {name}: pod {pod.name} is {reason}: {message}\n{log}")
        if all(p is not None and p.phase == "Running" and p.waiting is None for p in pods.values()):
            return
        if time.monotonic() > end:
            raise DeploymentFailed(f"not running after {timeout}s: {pods}\n{deployment.logs()}")
        time.sleep(0.2)


def wait_for(deployment: Deployed, what: str, predicate, timeout: float):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = predicate()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"{what} not seen within {timeout}s\n{deployment.logs()}")


def test_the_shipped_deployment_runs_a_github_attempt_to_a_merged_pr(tmp_path: Path) -> None:
    with deployed(tmp_path) as deployment:
        wait_running(deployment)
        gh = deployment.gh

        def recorded_pr():
            created = [e for e in deployment.events() if e.event_type == "pr.created"]
            return created if created and gh.pulls("acme", "site") else None

        [created] = wait_for(deployment, "a recorded PR", recorded_pr, PR_TIMEOUT_SECONDS)
        [pr] = gh.pulls("acme", "site")
        assert pr.head.startswith("agent/intro-") and created.payload["pr_number"] == pr.number

        # The attempt went the production way: a run Job launched by the daemon, whose pod started
        # the worker Job; both pods pulled the private image with the ServiceAccount's pull secret.
        jobs = {name: job for (_, name), job in deployment.double.cluster.jobs.items()}
        # The attempt's run (the backlog_sensor may have launched a backlog run beside it).
        [run_job] = [
            j
            for n, j in jobs.items()
            if n.startswith("dagster-run-")
            and j.body["metadata"].get("labels", {}).get("dagster/job") == "attempt_job"
        ]
        [worker_job] = [j for n, j in jobs.items() if n.startswith("leviathan-attempt-")]
        assert run_job.pod.body["spec"]["serviceAccountName"] == "leviathan-dagster"
        assert worker_job.pod.body["spec"]["serviceAccountName"] == "leviathan-worker"
        for job in (run_job, worker_job):
            assert job.pod.body["spec"]["imagePullSecrets"] == [{"name": "leviathan-registry"}]

        # A reviewer merges it on the forge; the lifecycle sensor (in the code server) records it.
        github = Github(base_url=gh.api_url, auth=Auth.Token(deployment.token))
        github.get_repo("acme/site").get_pull(pr.number).merge()
        merged = wait_for(
            deployment,
            "pr.merged",
            lambda: [e for e in deployment.events() if e.event_type == "pr.merged"],
            MERGE_TIMEOUT_SECONDS,
        )
        assert merged[0].payload["pr_number"] == pr.number
        # The worker pod posted its events with a token minted for its attempt alone.
        succeeded = [e for e in deployment.events() if e.event_type == "attempt.succeeded"]
        attempt_id = succeeded[0].payload["attempt_id"]
        assert succeeded[0].event.actor_id == f"worker:{attempt_id}", succeeded[0].event.actor_id
        # Every Kubernetes call of every process was allowed by rbac.yaml, and no log holds the token.
        refused = [a for a in deployment.double.audit if a[-1] == 403]
        assert refused == [], refused
        assert deployment.token not in deployment.logs()


def test_a_secret_missing_a_key_fails_naming_the_secret_and_the_key(tmp_path: Path) -> None:
    with (
        deployed(tmp_path, drop_key=("leviathan-secrets", "control-plane-token")) as deployment,
        pytest.raises(DeploymentFailed) as failure,
    ):
        wait_running(deployment)
    assert "CreateContainerConfigError" in str(failure.value)
    assert "couldn't find key control-plane-token in Secret leviathan/leviathan-secrets" in str(failure.value)
