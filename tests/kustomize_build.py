"""Render a kustomization the way an operator does: ``kubectl kustomize`` (kustomize v5 built in).

kubectl is a test dependency (``.ci/run`` installs it when missing); without it the deployment tests
fail with one line saying so, never silently skipping what the cluster would build.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize directory`` outputs, in its order."""
    if not Path(KUBECTL).exists():
        raise RuntimeError("kubectl is not installed: run .ci/run, or apt-get install kubectl")
    built = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    if built.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed: {built.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
