"""The Kubernetes double is not kinder than a cluster: pods get only the environment, files and rights
their specs and RBAC give them, and Jobs end the way the 1.31+ Job controller ends them."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import kubernetes
import kubernetes_validate
import pytest
from k8s_double import TEST_IMAGE, project_image, running_double
from k8s_double.server import K8S_VERSION

from leviathan_dagster.core.executors.k8s.api import KubernetesApi
from leviathan_dagster.core.models import KubernetesSettings

PRIVATE_IMAGE = "ghcr.io/acme/app:1.0"


def job(name: str, script: str, *, image: str = TEST_IMAGE, container: dict | None = None, **spec) -> dict:
    pod = spec.pop("pod", {})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            **spec,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "c",
                            "image": image,
                            "command": ["python", "-c", script],
                            **(container or {}),
                        }
                    ],
                    **pod,
                }
            },
        },
    }


@pytest.fixture
def cluster(tmp_path: Path):
    # Pods here see nothing of the host beyond the image: no test folder stands in for the network.
    images = {TEST_IMAGE: project_image(), PRIVATE_IMAGE: project_image()}
    with running_double(
        tmp_path, visible=(), images=images, private_registries={"ghcr.io": "bot:s3cret"}
    ) as (
        double,
        kubeconfig,
    ):
        client = kubernetes.config.new_client_from_config(str(kubeconfig))
        yield double, client
        client.close()


def wait_pod(double, job_name: str, predicate, timeout: float = 30.0):
    found = {}

    def check() -> bool:
        j = double.cluster.jobs.get(("leviathan", job_name))
        found["pod"] = j.pod if j else None
        return found["pod"] is not None and predicate(found["pod"])

    double.cluster.wait_until(check, timeout)
    return found["pod"]


def finished(double, name: str, timeout: float = 30.0):
    double.cluster.wait_until(lambda: double.cluster.jobs[("leviathan", name)].finished is not None, timeout)
    j = double.cluster.jobs[("leviathan", name)]
    return j, j.pod.log_path.read_text() if j.pod and j.pod.log_path else ""


def test_a_missing_secret_key_is_create_container_config_error_until_it_exists(cluster) -> None:
    double, client = cluster
    batch = kubernetes.client.BatchV1Api(client)
    ref = {"secretKeyRef": {"name": "app", "key": "token"}}
    body = job(
        "needs-key",
        "import os; print('got', os.environ['TOKEN'])",
        container={"env": [{"name": "TOKEN", "valueFrom": ref}]},
    )
    batch.create_namespaced_job("leviathan", body)
    pod = wait_pod(double, "needs-key", lambda p: p.waiting and p.waiting[0] == "CreateContainerConfigError")
    assert pod.waiting[1] == 'secret "app" not found'
    double.cluster.create_secret("app", {"other": "x"})
    wait_pod(double, "needs-key", lambda p: p.waiting and "couldn't find key" in p.waiting[1])
    assert pod.waiting[1] == "couldn't find key token in Secret leviathan/app"
    api_pod = kubernetes.client.CoreV1Api(client).read_namespaced_pod(pod.name, "leviathan")
    assert api_pod.status.container_statuses[0].state.waiting.reason == "CreateContainerConfigError"
    # The operator fixes the Secret (delete and re-create it); the kubelet's retry starts the pod.
    core = kubernetes.client.CoreV1Api(client)
    core.delete_namespaced_secret("app", "leviathan")
    core.create_namespaced_secret("leviathan", {"metadata": {"name": "app"}, "stringData": {"token": "t0k"}})
    j, log = finished(double, "needs-key")
    assert j.finished[0] == "Complete" and "got t0k" in log


def test_a_pod_sees_only_its_declared_env_volumes_and_user(cluster, monkeypatch) -> None:
    double, client = cluster
    monkeypatch.setenv("LEAKED_FROM_THE_TEST", "1")
    double.cluster.create_config_map("settings", {"MODE": "prod", "file.txt": "hello"})
    script = "\n".join(
        [
            "import os, json, pathlib",
            "def writable(p):",
            "    try:",
            "        pathlib.Path(p, 'probe').write_text('x'); return True",
            "    except OSError: return False",
            "env = os.environ",
            "paths = ['/data', '/tmp', '/var/lib/leviathan', '/etc/settings', '/']",
            "print(json.dumps({'uid': os.getuid(), 'env': sorted(env), 'mode': env.get('MODE'),",
            "  'greeting': env.get('GREETING'), 'file': pathlib.Path('/etc/settings/file.txt').read_text(),",
            "  'w': {p: writable(p) for p in paths}}))",
        ]
    )
    container = {
        "envFrom": [{"configMapRef": {"name": "settings"}}],
        "env": [{"name": "WHO", "value": "world"}, {"name": "GREETING", "value": "hello $(WHO)"}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "s", "mountPath": "/etc/settings"}],
        "securityContext": {"readOnlyRootFilesystem": True, "runAsUser": 4242},
    }
    pod = {"volumes": [{"name": "data", "emptyDir": {}}, {"name": "s", "configMap": {"name": "settings"}}]}
    kubernetes.client.BatchV1Api(client).create_namespaced_job(
        "leviathan", job("probe", script, container=container, pod=pod)
    )
    j, log = finished(double, "probe")
    assert j.finished[0] == "Complete", log
    seen = json.loads(log.strip().splitlines()[-1])
    assert seen["uid"] == 4242
    assert "LEAKED_FROM_THE_TEST" not in seen["env"] and "KUBERNETES_SERVICE_HOST" in seen["env"]
    assert (seen["mode"], seen["greeting"], seen["file"]) == ("prod", "hello world", "hello")
    assert seen["w"] == {
        "/data": True,
        "/tmp": False,
        "/var/lib/leviathan": False,
        "/etc/settings": False,
        "/": False,
    }


def test_service_account_calls_are_authorised_by_the_applied_rbac(cluster) -> None:
    double, client = cluster
    rbac = kubernetes.client.RbacAuthorizationV1Api(client)
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespaced_service_account("leviathan", {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(
        "leviathan",
        {
            "metadata": {"name": "reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        "leviathan",
        {
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "leviathan"}],
        },
    )
    script = "\n".join(
        [
            "import kubernetes, json",
            "kubernetes.config.load_incluster_config()",
            "core, batch = kubernetes.client.CoreV1Api(), kubernetes.client.BatchV1Api()",
            "print('pods', len(core.list_namespaced_pod('leviathan').items))",
            "try:",
            "    batch.delete_namespaced_job('anything', 'leviathan')",
            "except kubernetes.client.ApiException as e:",
            "    print('REFUSED', e.status, e.body)",
        ]
    )
    body = job("caller", script, pod={"serviceAccountName": "reader"})
    kubernetes.client.BatchV1Api(client).create_namespaced_job("leviathan", body)
    j, log = finished(double, "caller")
    assert "pods 1" in log, log
    status = json.loads(log.split("REFUSED 403 ", 1)[1].strip().splitlines()[0])
    assert status == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'jobs.batch "anything" is forbidden: User "system:serviceaccount:leviathan:reader" cannot '
        'delete resource "jobs" in API group "batch" in the namespace "leviathan"',
        "reason": "Forbidden",
        "details": {"name": "anything", "group": "batch", "kind": "jobs"},
        "code": 403,
    }


def test_a_job_past_its_deadline_is_failure_target_then_failed_then_expires(cluster) -> None:
    double, client = cluster
    body = job("slow", "import time; time.sleep(60)", activeDeadlineSeconds=1, ttlSecondsAfterFinished=1)
    kubernetes.client.BatchV1Api(client).create_namespaced_job("leviathan", body)
    j, _ = finished(double, "slow")
    batch = kubernetes.client.BatchV1Api(client)
    conditions = batch.read_namespaced_job_status("slow", "leviathan").status.conditions
    assert [(c.type, c.reason) for c in conditions] == [
        ("FailureTarget", "DeadlineExceeded"),
        ("Failed", "DeadlineExceeded"),
    ]
    assert j.pod.process.poll() is not None and j.pod.deleted  # the controller deleted the pod
    # What the double serves has the API's own field names (status included).
    for obj in (j.to_api(), j.pod.to_api()):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    api = KubernetesApi(KubernetesSettings(), client)
    double.cluster.wait_until(lambda: api.read_job("slow") is None, 10)  # the TTL controller


def test_a_private_image_needs_a_matching_pull_secret(cluster) -> None:
    double, client = cluster
    kubernetes.client.BatchV1Api(client).create_namespaced_job(
        "leviathan", job("private", "print('ran')", image=PRIVATE_IMAGE)
    )
    pod = wait_pod(
        double, "private", lambda p: p.waiting and p.waiting[0] in ("ErrImagePull", "ImagePullBackOff")
    )
    assert "401 Unauthorized" in pod.waiting[1] or "Back-off pulling image" in pod.waiting[1]
    auth = base64.b64encode(b"bot:s3cret").decode()
    config = json.dumps({"auths": {"ghcr.io": {"auth": auth}}})
    double.cluster.create_secret("pull", {".dockerconfigjson": config}, type="kubernetes.io/dockerconfigjson")
    account = double.cluster.get("ServiceAccount", "leviathan", "default")
    account["imagePullSecrets"] = [{"name": "pull"}]  # applies to pods created from now on
    kubernetes.client.BatchV1Api(client).create_namespaced_job(
        "leviathan", job("private2", "print('ran')", image=PRIVATE_IMAGE)
    )
    j, log = finished(double, "private2")
    assert j.finished[0] == "Complete" and "ran" in log
    assert j.pod.body["spec"]["imagePullSecrets"] == [{"name": "pull"}]
