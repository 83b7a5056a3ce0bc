"""deploy/: every Kubernetes object (base and both overlays, rendered by ``kubectl kustomize``) against
the real Kubernetes schemas (kubernetes-validate, strict: unknown fields fail); RBAC against every call
dagster-k8s and the k8s executor make (read from their source); the forge credentials reaching every
process that builds a forge; secrets, control plane, the worker NetworkPolicy against the labels the
k8s executor really puts on worker pods, and the Dockerfile's hygiene (non-root, pinned, no secrets).
The deployment running end to end is tests/test_deploy_e2e.py."""

from __future__ import annotations

import re
from pathlib import Path

import dagster_k8s
import kubernetes_validate
import pytest
import yaml
from k8s_double import rbac
from kustomize_build import load_documents, render
from support import REPO_ROOT

from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.executors.base import AttemptSpec
from leviathan_dagster.core.executors.k8s.job import render_job
from leviathan_dagster.core.home import LeviathanHome

K8S = REPO_ROOT / "deploy" / "k8s"
# A release kubernetes-validate ships schemas for, and the oldest Kubernetes we document support for.
K8S_VERSION = "1.30"
OVERLAYS = ["base", "overlays/kind", "overlays/production"]


def validate(obj: dict, source: str) -> None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{source}: {obj['kind']}/{obj['metadata']['name']} invalid at {path}: {exc.message}")


def by_kind(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_is_valid_kubernetes(overlay: str) -> None:
    objects = render(K8S / overlay)
    assert len(objects) >= 8
    for obj in objects:
        validate(obj, f"deploy/k8s/{overlay}")
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "leviathan", obj["metadata"]["name"]


def test_every_manifest_file_is_valid_and_used() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    referenced: set[Path] = set()
    for kfile in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kfile.read_text())
        generated = [f for g in spec.get("configMapGenerator", []) for f in g.get("files", [])]
        for entry in spec.get("resources", []) + [p["path"] for p in spec.get("patches", [])] + generated:
            referenced.add((kfile.parent / entry).resolve())
    for path in files:
        if path.name == "kustomization.yaml":
            continue
        is_patch = any(path == (K8S / o / p).resolve() for o in OVERLAYS for p in _patch_paths(K8S / o))
        is_file = path.name in ("dagster.yaml", "leviathan.yaml")  # ConfigMap contents, not objects
        for doc in [] if is_file else load_documents(path):
            if not is_patch:  # patches are partial objects; they are validated once applied
                validate(doc, str(path.relative_to(REPO_ROOT)))
        # Nothing in deploy/k8s is dead weight, except the example Secret, which must never be applied.
        assert path.resolve() in referenced or path.name == "secrets.example.yaml", path


def _patch_paths(directory: Path) -> list[str]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return [p["path"] for p in spec.get("patches", [])]


def kubernetes_calls() -> set[tuple[str, str, str]]:
    """(verb, API group, resource) of every Kubernetes API call in dagster-k8s's launcher and client
    and in the k8s executor, read from their source (``create_namespaced_job`` -> create batch jobs)."""
    sources = [
        Path(dagster_k8s.__file__).parent / "launcher.py",
        Path(dagster_k8s.__file__).parent / "client.py",
        REPO_ROOT / "leviathan_dagster" / "core" / "executors" / "k8s" / "api.py",
    ]
    calls = set()
    for source in sources:
        for verb, kind, sub in CALL.findall(source.read_text()):
            group = "batch" if kind == "job" else ""
            calls.add(({"read": "get"}.get(verb, verb), group, f"{kind}s" + (f"/{sub}" if sub else "")))
    return calls


CALL = re.compile(r"\.(create|read|list|delete|patch|replace)_namespaced_(job|pod|event)(?:_(status|log))?\(")


def test_rbac_grants_every_call_dagster_k8s_and_the_executor_make_and_nothing_more() -> None:
    objects = by_kind(render(K8S / "overlays" / "production"))
    rules = objects[("Role", "leviathan-dagster")]["rules"]
    calls = kubernetes_calls()
    # The reading found the calls the issue names (terminate deletes pods; logs; job status).
    assert {("delete", "", "pods"), ("get", "", "pods/log"), ("get", "batch", "jobs/status")} <= calls
    assert {("create", "batch", "jobs"), ("list", "", "events"), ("delete", "batch", "jobs")} <= calls
    for verb, group, resource in sorted(calls):
        assert any(rbac.rule_allows(r, verb, group, resource, None) for r in rules), (verb, group, resource)
    granted = {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    # Nothing that could touch Secrets, escalate, or reach past the namespace.
    assert not any(r in ("secrets", "roles", "rolebindings", "*") for _, r, _ in granted)
    assert not any(
        v in ("*", "escalate", "bind", "impersonate", "create") and r != "jobs" for _, r, v in granted
    )
    binding = objects[("RoleBinding", "leviathan-dagster")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "leviathan-dagster", "namespace": "leviathan"}
    ]
    assert objects[("ServiceAccount", "leviathan-worker")]["automountServiceAccountToken"] is False
    # The private image reaches every pod through its account (a pod without one runs as "default").
    for (kind, name), obj in objects.items():
        if kind == "Deployment":
            assert obj["spec"]["template"]["spec"].get("serviceAccountName"), name
    for account in ("leviathan-dagster", "leviathan-worker", "leviathan-control-plane"):
        assert objects[("ServiceAccount", account)]["imagePullSecrets"] == [{"name": "leviathan-registry"}]


def test_every_process_that_builds_a_forge_gets_the_forge_credentials() -> None:
    objects = by_kind(render(K8S / "overlays" / "production"))
    wanted = {
        "GITHUB_TOKEN": {"name": "leviathan-secrets", "key": "github-token", "optional": True},
        "GITHUB_APP_PRIVATE_KEY": {
            "name": "leviathan-secrets",
            "key": "github-app-private-key",
            "optional": True,
        },
    }
    [code] = objects[("Deployment", "leviathan-code-server")]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in code["env"]}
    assert {k: env[k] for k in wanted} == wanted
    instance = yaml.safe_load(objects[("ConfigMap", "dagster-instance")]["data"]["dagster.yaml"])
    run_env = instance["run_launcher"]["config"]["run_k8s_config"]["container_config"]["env"]
    run_refs = {e["name"]: e["value_from"]["secret_key_ref"] for e in run_env}
    assert {k: run_refs[k] for k in wanted} == wanted
    # The daemon and webserver load no code (gRPC workspace), so they get no forge credential.
    for name in ("dagster-daemon", "dagster-webserver"):
        [container] = objects[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
        assert "GITHUB_TOKEN" not in {e["name"] for e in container.get("env", [])}
        assert "/opt/dagster/workspace/workspace.yaml" in container["command"]
    workspace = yaml.safe_load(objects[("ConfigMap", "dagster-workspace")]["data"]["workspace.yaml"])
    assert workspace["load_from"][0]["grpc_server"]["host"] == "leviathan-code-server"


def test_every_read_only_root_filesystem_has_its_writable_places_mounted() -> None:
    objects = by_kind(render(K8S / "overlays" / "production"))
    for (kind, name), obj in objects.items():
        if kind != "Deployment":
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            paths = {m["mountPath"] for m in container.get("volumeMounts", []) if not m.get("readOnly")}
            assert "/tmp" in paths, name
    instance = yaml.safe_load(objects[("ConfigMap", "dagster-instance")]["data"]["dagster.yaml"])
    launcher = instance["run_launcher"]["config"]
    assert launcher["security_context"]["readOnlyRootFilesystem"] is True
    env = objects[("ConfigMap", "leviathan-env")]["data"]
    mounted = {m["mountPath"] for m in launcher["volume_mounts"] if not m.get("readOnly")}
    assert {env["LEVIATHAN_HOME"], "/tmp"} <= mounted


def test_the_worker_image_is_the_deployed_image_in_every_overlay() -> None:
    for overlay in ("overlays/kind", "overlays/production"):
        objects = by_kind(render(K8S / overlay))
        [code] = objects[("Deployment", "leviathan-code-server")]["spec"]["template"]["spec"]["containers"]
        config = yaml.safe_load(objects[("ConfigMap", "leviathan-config")]["data"]["leviathan.yaml"])
        env = {e["name"]: e.get("value") for e in code["env"]}
        assert config["kubernetes"]["image"] == code["image"] == env["DAGSTER_CURRENT_IMAGE"], overlay


def test_control_plane_serves_with_token_from_secret() -> None:
    objects = by_kind(render(K8S / "overlays" / "production"))
    deployment = objects[("Deployment", "leviathan-control-plane")]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["leviathan", "control-plane", "serve"]
    env = {e["name"]: e for e in container["env"]}
    token = env["LEVIATHAN_CONTROL_PLANE_TOKEN"]
    assert "value" not in token
    assert token["valueFrom"]["secretKeyRef"] == {"name": "leviathan-secrets", "key": "control-plane-token"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    service = objects[("Service", "leviathan-control-plane")]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == 8000


def test_secret_example_has_the_seed_keys_and_only_placeholders() -> None:
    secrets = by_kind(load_documents(K8S / "base" / "secrets.example.yaml"))
    seed = secrets[("Secret", "leviathan-secrets")]["stringData"]
    assert {"control-plane-token", "github-token", "claude-api-key", "claude-model"} <= set(seed)
    assert "github-app-private-key" in seed
    for secret in secrets.values():
        for key, value in secret["stringData"].items():
            assert "REPLACE_ME" in value, f"{key} holds something that is not a marked placeholder"


def test_worker_network_policy_selects_the_executors_worker_pods() -> None:
    objects = by_kind(render(K8S / "overlays" / "production"))
    config_map = objects[("ConfigMap", "leviathan-config")]
    project = _cluster_project(config_map["data"]["leviathan.yaml"])
    target = project.targets[0]
    spec = AttemptSpec(
        target,
        "t1",
        "attempt-0123456789ab",
        1,
        Path("/etc/leviathan/leviathan.yaml"),
        LeviathanHome(Path("/var/lib/leviathan")),
    )
    job = render_job(spec, project.kubernetes, target.resources)
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    selector = objects[("NetworkPolicy", "leviathan-worker-egress")]["spec"]["podSelector"]
    assert _selects(selector, pod_labels)
    # ...and never the control plane or Dagster's own pods.
    control_plane = objects[("Deployment", "leviathan-control-plane")]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert not _selects(selector, control_plane)
    assert not _selects(selector, {"app.kubernetes.io/component": "dagster-run", "app": "dagster"})
    # The worker Job runs under the account the manifests create, with the seed's Secret.
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "leviathan-worker"
    validate(job, "k8s executor Job for the cluster's leviathan.yaml")


def _cluster_project(text: str):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "leviathan.yaml"
        path.write_text(text)
        return load_project_config(path)


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        present, value = expr["key"] in labels, labels.get(expr["key"])
        ok = {
            "Exists": present,
            "DoesNotExist": not present,
            "In": value in expr.get("values", []),
            "NotIn": value not in expr.get("values", []),
        }[expr["operator"]]
        if not ok:
            return False
    return True


def test_overlays_differ_where_they_should() -> None:
    kind = by_kind(render(K8S / "overlays" / "kind"))
    prod = by_kind(render(K8S / "overlays" / "production"))
    [kind_api] = kind[("Deployment", "leviathan-control-plane")]["spec"]["template"]["spec"]["containers"]
    [prod_api] = prod[("Deployment", "leviathan-control-plane")]["spec"]["template"]["spec"]["containers"]
    assert (kind_api["image"], kind_api["imagePullPolicy"]) == ("leviathan:dev", "Never")
    assert re.fullmatch(r"ghcr\.io/[\w.-]+/leviathan:\d+\.\d+\.\d+", prod_api["image"])
    assert prod[("Deployment", "leviathan-control-plane")]["spec"]["replicas"] == 2
    assert ("PodDisruptionBudget", "leviathan-control-plane") in prod
    # The patch kept the env (merged by container name), not replaced it.
    assert [e["name"] for e in prod_api["env"]] == [e["name"] for e in kind_api["env"]]


DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|API_KEY|PRIVATE_KEY|DSN)", re.IGNORECASE)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_non_root_pinned_and_secret_free() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    bases = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    assert bases, "no FROM"
    for base in bases:
        # A version tag (digits) or a digest, never latest or a bare name.
        assert "@sha256:" in base or re.search(r":\d+\.\d+(\.\d+)?[-\w.]*$", base), f"unpinned base {base}"
    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    for word, rest in instructions:
        if word in ("ENV", "ARG", "LABEL"):
            assert not SECRET_NAME.search(rest), f"{word} {rest} looks like a baked-in secret"
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.env\b|\.pem\b|id_rsa|\.kube|credentials", rest), f"{word} {rest}"
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "pip install ." in runs
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env", ".leviathan"} <= set(ignored)


NODE_SETUP = K8S / "node-setup"


def test_node_setup_installs_the_profiles_the_worker_job_names() -> None:
    """deploy/k8s/node-setup puts the seccomp profile where the kubelet resolves the worker's default
    ``localhost/leviathan/worker-sandbox.json`` and the AppArmor profile the default names."""
    from leviathan_dagster.core.executors.k8s.security import KUBELET_SECCOMP_ROOT
    from leviathan_dagster.core.models import KubernetesSettings

    objects = by_kind(render(NODE_SETUP))
    for obj in objects.values():
        validate(obj, "deploy/k8s/node-setup")
    defaults = KubernetesSettings()
    seccomp_path = defaults.worker_seccomp_profile.removeprefix("localhost/")
    apparmor_name = defaults.worker_apparmor_profile.removeprefix("localhost/")
    pod = objects[("DaemonSet", "leviathan-node-setup")]["spec"]["template"]["spec"]
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    (install,) = pod["initContainers"]
    script = install["command"][-1]
    folder, name = seccomp_path.rsplit("/", 1)
    assert host["seccomp"] == f"{KUBELET_SECCOMP_ROOT}/{folder}" and f"/seccomp/{name}" in script
    assert host["apparmor"] == "/etc/apparmor.d" and f"/apparmor/{apparmor_name} " in script
    (profiles,) = [o for (kind, _), o in objects.items() if kind == "ConfigMap"]
    assert profiles["data"]["worker-sandbox.json"] == (NODE_SETUP / "worker-sandbox.json").read_text()
    apparmor = profiles["data"]["leviathan-worker-sandbox.apparmor"]
    assert re.search(rf"^profile {re.escape(apparmor_name)} ", apparmor, re.MULTILINE)
    for container in [install, *pod["containers"]]:
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_shipped_apparmor_profile_is_valid_for_apparmor_parser() -> None:
    import shutil
    import subprocess

    parser = shutil.which("apparmor_parser") or "/sbin/apparmor_parser"
    assert Path(parser).exists(), "apparmor_parser is missing: apt-get install apparmor (make test does)"
    profile = NODE_SETUP / "leviathan-worker-sandbox.apparmor"
    # -Q: compile only, never load into the kernel; -K: no cache.
    checked = subprocess.run([parser, "-Q", "-K", str(profile)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr


def test_the_worker_job_meets_the_namespaces_pod_security_levels() -> None:
    """baseline (enforced) and restricted (warned): Localhost profiles only, never Unconfined;
    no capabilities, non-root, no privilege escalation, a read-only root."""
    [namespace] = [o for o in render(K8S / "overlays" / "production") if o["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    config = load_project_config(K8S / "overlays" / "production" / "leviathan.yaml")
    target = config.targets[0]
    home = LeviathanHome(Path("/var/lib/leviathan"))
    spec = AttemptSpec(target, "t", "attempt-1", 1, Path("/etc/leviathan/leviathan.yaml"), home)
    pod = render_job(spec, config.kubernetes)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["seccompProfile"]["type"] == "Localhost"
    assert security["appArmorProfile"]["type"] == "Localhost"
    assert security["capabilities"] == {"drop": ["ALL"]} and security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"] is True


def test_the_worker_token_key_reaches_exactly_the_control_plane_and_the_run_pods() -> None:
    """Per-attempt worker tokens: the shipped config names the key, the control plane (which checks
    the tokens) and the run pods (whose k8s executor mints them) read it from the Secret, required;
    no other process, and never a worker pod, holds it."""
    objects = by_kind(render(K8S / "overlays" / "production"))
    shipped = yaml.safe_load(objects[("ConfigMap", "leviathan-config")]["data"]["leviathan.yaml"])
    assert shipped["control_plane"]["worker_token_key"] == {"env": "LEVIATHAN_CP_WORKER_KEY"}
    key_ref = {"name": "leviathan-secrets", "key": "control-plane-worker-key"}
    [api] = objects[("Deployment", "leviathan-control-plane")]["spec"]["template"]["spec"]["containers"]
    api_env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in api["env"]}
    assert api_env["LEVIATHAN_CP_WORKER_KEY"] == key_ref
    instance = yaml.safe_load(objects[("ConfigMap", "dagster-instance")]["data"]["dagster.yaml"])
    run_env = instance["run_launcher"]["config"]["run_k8s_config"]["container_config"]["env"]
    assert {e["name"]: e["value_from"]["secret_key_ref"] for e in run_env}[
        "LEVIATHAN_CP_WORKER_KEY"
    ] == key_ref
    holders = {
        name
        for (kind, name), obj in objects.items()
        if kind == "Deployment"
        for container in obj["spec"]["template"]["spec"]["containers"]
        if "control-plane-worker-key" in yaml.safe_dump(container)
    }
    assert holders == {"leviathan-control-plane"}
