"""A small Kustomize renderer for the subset deploy/k8s uses: resources, namespace, images, replicas
and strategic-merge patches. No kustomize binary is needed to test the overlays.

Any other kustomization key is refused rather than ignored, so an overlay can never use a feature
this renderer would silently skip (and the test would then check something Kustomize never builds).
The subset's semantics follow Kustomize: patches find their object by kind, name and namespace;
lists of named objects (containers, env, volumes) merge by name, every other list is replaced.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_KEYS = {"apiVersion", "kind", "namespace", "resources", "images", "replicas", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


class KustomizeError(Exception):
    pass


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kustomize build directory`` would output (in resource order)."""
    kfile = directory / "kustomization.yaml"
    spec = yaml.safe_load(kfile.read_text(encoding="utf-8"))
    unknown = set(spec) - SUPPORTED_KEYS
    if unknown:
        raise KustomizeError(
            f"{kfile}: unsupported keys {sorted(unknown)} (supported: {sorted(SUPPORTED_KEYS)})"
        )
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        objects.extend(render(path) if path.is_dir() else load_documents(path))
    for patch_entry in spec.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise KustomizeError(
                f"{kfile}: only file patches ({{path: ...}}) are supported, got {patch_entry}"
            )
        for patch in load_documents(directory / patch_entry["path"]):
            _apply_patch(objects, patch, kfile)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        _apply_image(objects, image)
    for replica in spec.get("replicas", []):
        _apply_replicas(objects, replica, kfile)
    return objects


def _key(obj: dict[str, Any]) -> tuple[str, str, str | None]:
    meta = obj.get("metadata", {})
    return obj["kind"], meta["name"], meta.get("namespace")


def _apply_patch(objects: list[dict[str, Any]], patch: dict[str, Any], kfile: Path) -> None:
    kind, name, namespace = _key(patch)
    matches = [
        o
        for o in objects
        if _key(o)[:2] == (kind, name) and namespace in (None, o["metadata"].get("namespace"))
    ]
    if len(matches) != 1:
        raise KustomizeError(f"{kfile}: patch for {kind}/{name} matches {len(matches)} objects, expected 1")
    merged = strategic_merge(matches[0], patch)
    matches[0].clear()
    matches[0].update(merged)


def strategic_merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = strategic_merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        out = copy.deepcopy(base)
        index = {item["name"]: i for i, item in enumerate(out)}
        for item in patch:
            if item["name"] in index:
                out[index[item["name"]]] = strategic_merge(out[index[item["name"]]], item)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] not in POD_TEMPLATE_KINDS:
        return []
    pod = obj["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _apply_image(objects: list[dict[str, Any]], image: dict[str, Any]) -> None:
    for obj in objects:
        for container in _containers(obj):
            ref = container["image"]
            repo = ref.split("@")[0].rsplit(":", 1)[0] if ":" in ref.split("/")[-1] else ref.split("@")[0]
            if repo != image["name"]:
                continue
            new_repo = image.get("newName", repo)
            if "digest" in image:
                container["image"] = f"{new_repo}@{image['digest']}"
            else:
                old_tag = ref[len(repo) + 1 :] if ref.startswith(repo + ":") else None
                tag = image.get("newTag", old_tag)
                container["image"] = f"{new_repo}:{tag}" if tag else new_repo


def _apply_replicas(objects: list[dict[str, Any]], replica: dict[str, Any], kfile: Path) -> None:
    targets = [
        o for o in objects if o["metadata"]["name"] == replica["name"] and "replicas" in o.get("spec", {})
    ]
    if not targets:
        raise KustomizeError(f"{kfile}: replicas for {replica['name']!r} match no object")
    for obj in targets:
        obj["spec"]["replicas"] = replica["count"]
