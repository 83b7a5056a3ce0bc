"""A Kubernetes API server double (wire protocol on 127.0.0.1) whose Jobs run as local subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from k8s_double.cluster import Cluster
from k8s_double.server import KubernetesApiDouble

TEST_IMAGE = "leviathan-worker:test"
# The seed's Secret keys (seed 001), with test values.
TEST_SECRETS = {
    "leviathan-secrets": {
        "control-plane-token": "cp-token-for-tests",
        "github-token": "ghp_test_token_never_used",
        "claude-api-key": "sk-ant-test-never-used",
        "claude-model": "claude-test",
    }
}


@contextmanager
def running_double(tmp_path: Path, **cluster_options) -> Iterator[tuple[KubernetesApiDouble, Path]]:
    """Start the double; yields it and a kubeconfig file for the real ``kubernetes`` client."""
    cluster_options.setdefault("images", (TEST_IMAGE,))
    cluster_options.setdefault("secrets_", TEST_SECRETS)
    double = KubernetesApiDouble(Cluster(**cluster_options)).start()
    try:
        yield double, double.write_kubeconfig(tmp_path / "kubeconfig.yaml")
    finally:
        double.stop()


__all__ = ["TEST_IMAGE", "TEST_SECRETS", "Cluster", "KubernetesApiDouble", "running_double"]
