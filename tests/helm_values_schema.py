"""The Dagster Helm chart's values structure, as far as deploy/helm/values.yaml uses it.

Transcribed from the chart's published schema (helm/dagster/values.schema.json, generated from the
pydantic models in helm/dagster/schema/ of dagster-io/dagster, 1.13 line). The chart rejects unknown
keys in these sections (`additionalProperties: false` / `extra="forbid"`), so a misspelt key here
would fail `helm install`; this check finds it without the chart. ``FREE`` marks a section the chart
passes through as-is (Kubernetes objects, instance config), which Kubernetes or Dagster validate.
"""

from __future__ import annotations

from typing import Any

FREE = None
PULL_POLICY = ("enum", ("Always", "IfNotPresent", "Never"))
IMAGE = {"repository": FREE, "tag": FREE, "pullPolicy": PULL_POLICY}
SERVICE = {"type": FREE, "port": FREE, "annotations": FREE}
POD_KEYS = {
    k: FREE
    for k in [
        "env",
        "envConfigMaps",
        "envSecrets",
        "annotations",
        "nodeSelector",
        "affinity",
        "tolerations",
        "podSecurityContext",
        "securityContext",
        "resources",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "labels",
        "deploymentLabels",
        "volumeMounts",
        "volumes",
        "schedulerName",
        "initContainerResources",
    ]
}
WEBSERVER = {
    **POD_KEYS,
    "replicaCount": FREE,
    "image": IMAGE,
    "nameOverride": FREE,
    "pathPrefix": FREE,
    "service": SERVICE,
    "workspace": FREE,
    "enableReadOnly": FREE,
    "dbStatementTimeout": FREE,
    "dbPoolRecycle": FREE,
    "logLevel": FREE,
}
USER_DEPLOYMENT = {
    **POD_KEYS,
    "name": FREE,
    "image": IMAGE,
    "dagsterApiGrpcArgs": FREE,
    "codeServerArgs": FREE,
    "includeConfigInLaunchedRuns": {"enabled": FREE},
    "deploymentNamespace": FREE,
    "port": FREE,
    "initContainers": FREE,
    "sidecarContainers": FREE,
}
K8S_RUN_LAUNCHER = {
    "image": IMAGE,
    "imagePullPolicy": PULL_POLICY,
    "jobNamespace": FREE,
    "loadInclusterConfig": FREE,
    "kubeconfigFile": FREE,
    "envConfigMaps": FREE,
    "envSecrets": FREE,
    "envVars": FREE,
    "volumeMounts": FREE,
    "volumes": FREE,
    "labels": FREE,
    "failPodOnRunFailure": FREE,
    "resources": FREE,
    "schedulerName": FREE,
    "securityContext": FREE,
    "runK8sConfig": {
        k: FREE
        for k in (
            "containerConfig",
            "podSpecConfig",
            "podTemplateSpecMetadata",
            "jobSpecConfig",
            "jobMetadata",
        )
    },
}
QUEUED_RUN_COORDINATOR = {
    k: FREE
    for k in [
        "maxConcurrentRuns",
        "tagConcurrencyLimits",
        "dequeueIntervalSeconds",
        "dequeueNumWorkers",
        "dequeueUseThreads",
        "blockOpConcurrencyLimitedRuns",
    ]
}
DAEMON = {
    **POD_KEYS,
    "enabled": FREE,
    "image": IMAGE,
    "runCoordinator": {
        "enabled": FREE,
        "type": ("enum", ("QueuedRunCoordinator", "CustomRunCoordinator")),
        "config": {"queuedRunCoordinator": QUEUED_RUN_COORDINATOR, "customRunCoordinator": FREE},
    },
    "heartbeatTolerance": FREE,
    "checkDbReadyInitContainer": FREE,
    "runMonitoring": FREE,
    "runRetries": {"enabled": FREE, "maxRetries": FREE, "retryOnAssetOrOpFailure": FREE},
    "sensors": FREE,
    "schedules": FREE,
    "backfills": FREE,
    "logFormat": FREE,
    "extraContainers": FREE,
    "extraPrependedInitContainers": FREE,
}
VALUES: dict[str, Any] = {
    "dagsterWebserver": WEBSERVER,
    "dagster-user-deployments": {
        "enabled": FREE,
        "enableSubchart": FREE,
        "imagePullSecrets": FREE,
        "deployments": ("list", USER_DEPLOYMENT),
    },
    "postgresql": {
        "image": IMAGE,
        "enabled": FREE,
        "postgresqlHost": FREE,
        "postgresqlUsername": FREE,
        "postgresqlPassword": FREE,
        "postgresqlDatabase": FREE,
        "postgresqlParams": FREE,
        "postgresqlScheme": FREE,
        "service": {"port": FREE},
    },
    "generatePostgresqlPasswordSecret": FREE,
    "generateCeleryConfigSecret": FREE,
    "rabbitmq": FREE,
    "redis": FREE,
    "flower": FREE,
    "ingress": FREE,
    "imagePullSecrets": FREE,
    "computeLogManager": {
        "type": (
            "enum",
            (
                "NoOpComputeLogManager",
                "AzureBlobComputeLogManager",
                "GCSComputeLogManager",
                "S3ComputeLogManager",
                "CustomComputeLogManager",
            ),
        ),
        "config": FREE,
    },
    "scheduler": FREE,
    "runLauncher": {
        "type": ("enum", ("CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher")),
        "config": {
            "celeryK8sRunLauncher": FREE,
            "k8sRunLauncher": K8S_RUN_LAUNCHER,
            "customRunLauncher": FREE,
        },
    },
    "pythonLogs": FREE,
    "dagsterDaemon": DAEMON,
    "busybox": FREE,
    "migrate": {"enabled": FREE},
    "telemetry": {"enabled": FREE},
    "serviceAccount": {"create": FREE, "name": FREE, "annotations": FREE},
    "global": {
        "postgresqlSecretName": FREE,
        "dagsterHome": FREE,
        "serviceAccountName": FREE,
        "celeryConfigSecretName": FREE,
    },
    "retention": FREE,
    "concurrency": {
        "enabled": FREE,
        "pools": {"defaultLimit": FREE, "granularity": FREE, "opGranularityRunBuffer": FREE},
        "runs": {"maxConcurrentRuns": FREE, "tagConcurrencyLimits": FREE},
    },
    "additionalInstanceConfig": FREE,
}


def check_values(values: Any, spec: Any = VALUES, path: str = "") -> list[str]:
    """Every problem as "<dotted.path>: <what>"; [] when the values fit the chart's structure."""
    if spec is FREE:
        return []
    if isinstance(spec, tuple) and spec[0] == "enum":
        return [] if values in spec[1] else [f"{path}: {values!r} is not one of {list(spec[1])}"]
    if isinstance(spec, tuple) and spec[0] == "list":
        if not isinstance(values, list):
            return [f"{path}: expected a list"]
        return [p for i, item in enumerate(values) for p in check_values(item, spec[1], f"{path}[{i}]")]
    if not isinstance(values, dict):
        return [f"{path}: expected a mapping"]
    problems = []
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if key not in spec:
            problems.append(f"{where}: not a key of the chart's values")
        else:
            problems.extend(check_values(value, spec[key], where))
    return problems
