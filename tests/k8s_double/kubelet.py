"""The kubelet of the double: how one pod's container is set up and started.

What it hands the container is exactly what the pod spec declares, resolved as the kubelet resolves
it: ``envFrom`` and ``env`` (``value`` with ``$(VAR)`` expansion, ``secretKeyRef``,
``configMapKeyRef``, ``fieldRef``) from objects created through the API, the Service links and
``KUBERNETES_SERVICE_HOST/PORT``, the image's own ``ENV``; volumes (``emptyDir``, ``configMap``,
``secret``, ``persistentVolumeClaim``, the ServiceAccount token); the image pulled only when it
exists and, from a private registry, only with a matching ``imagePullSecrets`` entry. A missing
Secret, ConfigMap or key is ``CreateContainerConfigError`` with the kubelet's message; the kubelet
keeps retrying, so creating the object later starts the pod.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k8s_double.sandbox import Mount, SandboxSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)|\$\$")


class ContainerConfigError(Exception):
    """CreateContainerConfigError: the message is the kubelet's."""


class ImagePullError(Exception):
    """ErrImagePull / ImagePullBackOff."""


class MountError(Exception):
    """The pod stays ContainerCreating (FailedMount)."""


@dataclass(frozen=True)
class Image:
    """A container image as the double runs it: this machine's OS and the project's virtualenv, with
    the Dockerfile's ENV, WORKDIR, USER and the folders it creates (deploy/Dockerfile)."""

    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: tuple[int, int] | None = None
    command: tuple[str, ...] = ()
    dirs: tuple[str, ...] = ()


def project_image() -> Image:
    """deploy/Dockerfile's runtime stage (tini, the entrypoint, is not on this machine: omitted)."""
    venv_bin = str(Path(sys.executable).parent)
    return Image(
        env={
            "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONUNBUFFERED": "1",
            "DAGSTER_HOME": "/opt/dagster/dagster_home",
            "LEVIATHAN_HOME": "/var/lib/leviathan",
            # The image's installed code is this checkout.
            "PYTHONPATH": str(REPO_ROOT),
            "HOME": "/home/leviathan",
        },
        workdir="/opt/dagster/app",
        user=(10001, 10001),
        command=(
            "dagster",
            "code-server",
            "start",
            "-h",
            "0.0.0.0",
            "-p",
            "3030",
            "-m",
            "leviathan_dagster.definitions",
            "-a",
            "defs",
        ),
        dirs=(
            "/opt/dagster/dagster_home",
            "/opt/dagster/app",
            "/var/lib/leviathan",
            "/workspace",
            "/home/leviathan",
        ),
    )


def registry_of(image: str) -> str:
    first = image.split("/", 1)[0]
    return first if "/" in image and ("." in first or ":" in first or first == "localhost") else "docker.io"


def check_pull(
    image: str, known: dict[str, Image], private: dict[str, str], pull_secrets: list[dict]
) -> Image:
    """The image, if the node can pull it; ImagePullError with containerd's words otherwise."""
    ref = image if registry_of(image) != "docker.io" or "/" in image else f"docker.io/library/{image}"
    registry = registry_of(image)
    if registry in private:
        offered = set()
        for secret in pull_secrets:
            raw = secret.get("data", {}).get(".dockerconfigjson")
            if secret.get("type") != "kubernetes.io/dockerconfigjson" or not raw:
                continue
            for host, entry in json.loads(base64.b64decode(raw)).get("auths", {}).items():
                auth = (
                    entry.get("auth")
                    or base64.b64encode(
                        f"{entry.get('username', '')}:{entry.get('password', '')}".encode()
                    ).decode()
                )
                offered.add((host.removeprefix("https://").rstrip("/"), base64.b64decode(auth).decode()))
        if (registry, private[registry]) not in offered:
            raise ImagePullError(
                f'failed to pull and unpack image "{ref}": failed to resolve reference "{ref}": '
                f"failed to authorize: failed to fetch anonymous token: unexpected status from GET request "
                f"to https://{registry}/token: 401 Unauthorized"
            )
    if image not in known:
        raise ImagePullError(
            f'failed to pull and unpack image "{ref}": failed to resolve reference "{ref}": {ref}: not found'
        )
    return known[image]


def _decode(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables are replaced, others left as written."""
    return _VAR_REF.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def resolve_env(
    pod: dict[str, Any], container: dict[str, Any], lookup, service_env: dict[str, str]
) -> dict[str, str]:
    """The container's declared environment; ``lookup(kind, name)`` returns an object or None."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = dict(service_env)
    for source in container.get("envFrom", []):
        kind = "Secret" if "secretRef" in source else "ConfigMap"
        ref = source.get("secretRef") or source.get("configMapRef") or {}
        obj = lookup(kind, ref.get("name"))
        if obj is None:
            if ref.get("optional"):
                continue
            raise ContainerConfigError(f'{kind.lower()} "{ref.get("name")}" not found')
        values = _decode(obj) if kind == "Secret" else dict(obj.get("data") or {})
        env.update({source.get("prefix", "") + k: v for k, v in values.items()})
    for item in container.get("env", []):
        source = item.get("valueFrom")
        if source is None:
            env[item["name"]] = expand(item.get("value", ""), env)
            continue
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            fields = {
                "metadata.name": pod["metadata"]["name"],
                "metadata.namespace": namespace,
                "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
                "status.podIP": "127.0.0.1",
            }
            env[item["name"]] = fields[path]
            continue
        kind = "Secret" if "secretKeyRef" in source else "ConfigMap"
        ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
        obj = lookup(kind, ref["name"])
        values = (_decode(obj) if kind == "Secret" else dict(obj.get("data") or {})) if obj else None
        if values is None or ref["key"] not in values:
            if ref.get("optional"):
                continue
            if values is None:
                raise ContainerConfigError(f'{kind.lower()} "{ref["name"]}" not found')
            raise ContainerConfigError(f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}")
        env[item["name"]] = values[ref["key"]]
    return env


def materialize_volumes(pod: dict, container: dict, folder: Path, lookup, claims: dict[str, str], token_dir):
    """Host folders for the container's volumeMounts: [Mount]. ``token_dir``: the ServiceAccount
    token folder, or None when the pod gets no token."""
    by_name = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    mounts = []
    for mount in container.get("volumeMounts", []):
        volume = by_name.get(mount["name"])
        if volume is None:
            raise ContainerConfigError(f'volume "{mount["name"]}" not found in the pod spec')
        host = folder / "volumes" / mount["name"]
        read_only = bool(mount.get("readOnly"))
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if claim not in claims:
                raise MountError(f'persistentvolumeclaim "{claim}" not found')
            host = Path(claims[claim])
            host.mkdir(parents=True, exist_ok=True)  # a bound claim's volume always exists
        elif "configMap" in volume or "secret" in volume:
            kind = "ConfigMap" if "configMap" in volume else "Secret"
            ref = volume.get("configMap") or volume.get("secret")
            name = ref.get("name") or ref.get("secretName")
            obj = lookup(kind, name)
            if obj is None:
                if not ref.get("optional"):
                    volume_name = mount["name"]
                    raise MountError(
                        f'MountVolume.SetUp failed for volume "{volume_name}" : '
                        f'{kind.lower()} "{name}" not found'
                    )
                obj = {}
            values = _decode(obj) if kind == "Secret" else dict(obj.get("data") or {})
            items = ref.get("items") or [{"key": k, "path": k} for k in values]
            host.mkdir(parents=True, exist_ok=True)
            for item in items:
                (host / item["path"]).write_text(values[item["key"]], encoding="utf-8")
            read_only = True  # configMap and secret volumes are always read-only
        elif "emptyDir" in volume:
            host.mkdir(parents=True, exist_ok=True)
        else:
            raise MountError(f"volume {mount['name']}: this double supports emptyDir, configMap, secret, PVC")
        if mount.get("subPath"):
            host = host / mount["subPath"]
        mounts.append(Mount(host, mount["mountPath"], read_only))
    if token_dir is not None:
        mounts.append(Mount(token_dir, SA_MOUNT, True))
    return mounts


def container_argv(container: dict, image: Image, env: dict[str, str]) -> list[str]:
    """``command`` replaces the image's ENTRYPOINT, ``args`` its CMD (the double's images have no
    ENTRYPOINT, so ``args`` alone run as the command)."""
    if "command" in container:
        argv = [*container["command"], *container.get("args", [])]
    else:
        argv = list(container.get("args") or image.command)
    return [expand(a, env) for a in argv]


def sandbox_for(
    pod: dict, container: dict, image: Image, env: dict[str, str], mounts, etc_files, visible
) -> SandboxSpec:
    pod_security = pod["spec"].get("securityContext") or {}
    security = container.get("securityContext") or {}
    uid = security.get("runAsUser", pod_security.get("runAsUser", image.user[0] if image.user else None))
    gid = security.get("runAsGroup", pod_security.get("runAsGroup", image.user[1] if image.user else uid))
    if security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) and uid in (None, 0):
        raise ContainerConfigError("container has runAsNonRoot and image will run as root")
    full_env = {**image.env, **env}
    return SandboxSpec(
        argv=container_argv(container, image, full_env),
        env=full_env,
        workdir=container.get("workingDir", image.workdir),
        uid=uid,
        gid=gid,
        read_only_root=bool(security.get("readOnlyRootFilesystem")),
        mounts=mounts,
        image_dirs=image.dirs,
        files=etc_files,
        visible=visible,
    )
