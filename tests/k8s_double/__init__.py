"""A Kubernetes API server double (HTTPS on 127.0.0.1, RBAC) whose pods run under bubblewrap."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from k8s_double.cluster import Cluster
from k8s_double.kubelet import Image, project_image
from k8s_double.server import KubernetesApiDouble

TEST_IMAGE = "leviathan-worker:test"
NODE_SETUP = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "node-setup"
# The seed's Secret keys (seed 001), with test values.
TEST_SECRETS = {
    "leviathan-secrets": {
        "control-plane-token": "cp-token-for-tests",
        "github-token": "ghp_test_token_never_used",
        "claude-api-key": "sk-ant-test-never-used",
        "claude-model": "claude-test",
    }
}


def shipped_node_setup() -> dict:
    """The node as deploy/k8s/node-setup leaves it: the worker's seccomp profile under the kubelet's
    seccomp root, its AppArmor profile loaded (Cluster options)."""
    return {
        "seccomp_profiles": {"leviathan/worker-sandbox.json": NODE_SETUP / "worker-sandbox.json"},
        "apparmor_profiles": (NODE_SETUP / "leviathan-worker-sandbox.apparmor",),
    }


@contextmanager
def running_double(
    tmp_path: Path, *, secrets_=None, service_accounts=("leviathan-worker",), **cluster_options
) -> Iterator[tuple[KubernetesApiDouble, Path]]:
    """Start the double; yields it and a kubeconfig file (the admin's) for the real ``kubernetes``
    client. Pods may read ``tmp_path`` (the test's git remotes and files stand in for the network)."""
    cluster_options.setdefault("images", {TEST_IMAGE: project_image()})
    cluster_options.setdefault("visible", (tmp_path,))
    for key, value in shipped_node_setup().items():
        cluster_options.setdefault(key, value)
    double = KubernetesApiDouble(Cluster(**cluster_options)).start()
    for name, data in (TEST_SECRETS if secrets_ is None else secrets_).items():
        double.cluster.create_secret(name, data)
    for account in service_accounts:
        double.cluster.create_service_account(account)
    try:
        yield double, double.write_kubeconfig(tmp_path / "kubeconfig.yaml")
    finally:
        double.stop()


__all__ = [
    "TEST_IMAGE",
    "TEST_SECRETS",
    "Cluster",
    "Image",
    "KubernetesApiDouble",
    "project_image",
    "running_double",
    "shipped_node_setup",
]
