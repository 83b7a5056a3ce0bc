"""Executors by the seed's names."""

from __future__ import annotations

from collections.abc import Callable

from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.executors.base import Executor
from leviathan_dagster.core.executors.local import LocalExecutor
from leviathan_dagster.core.models import KubernetesSettings, ProjectConfig


def _k8s(project: ProjectConfig | None) -> Executor:
    # Imported here: the kubernetes client is only loaded by deployments that use it.
    from leviathan_dagster.core.executors.k8s.executor import K8sExecutor

    if project is None:
        return K8sExecutor(KubernetesSettings())
    return K8sExecutor(project.kubernetes, worker_key_env=project.control_plane.worker_key_env)


def _k8s_stub(project: ProjectConfig | None) -> Executor:
    from leviathan_dagster.core.executors.k8s.stub import K8sStubExecutor

    return K8sStubExecutor(project.kubernetes if project else KubernetesSettings())


EXECUTORS: dict[str, Callable[[ProjectConfig | None], Executor]] = {
    "local": lambda project: LocalExecutor(),
    "k8s": _k8s,
    "k8s-stub": _k8s_stub,
}


def get_executor(name: str, project: ProjectConfig | None = None) -> Executor:
    """The executor called ``name``, configured from ``project`` (its ``kubernetes:`` section)."""
    if name not in EXECUTORS:
        raise ConfigError(f"executor '{name}' is unknown (available: {', '.join(EXECUTORS)})")
    return EXECUTORS[name](project)
