"""Per-attempt artifacts (worker log, diff, generator summary, test output) with their SHA-256."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from leviathan_dagster.core.redaction import redact
from leviathan_dagster.core.sandbox import files as workspace_files

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Artifact:
    name: str
    sha256: str
    bytes: int

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "sha256": self.sha256, "bytes": self.bytes}


class ArtifactDir:
    """One attempt's artifact folder. ``seal`` writes a manifest of every file's SHA-256."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / name

    def write_text(self, name: str, text: str) -> Path:
        # No-follow: nothing the attempt ran may turn an artifact into a write elsewhere on the host.
        workspace_files.write_text(self.root, name, redact(text))  # redacted: a secret never lands here
        return self.path(name)

    def write_json(self, name: str, data: object) -> Path:
        return self.write_text(name, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def seal(self) -> list[Artifact]:
        artifacts = [
            _describe(path)
            for path in sorted(self.root.iterdir())
            if path.is_file() and path.name != MANIFEST
        ]
        self.write_json(MANIFEST, [a.as_dict() for a in artifacts])
        return artifacts


def read_manifest(root: Path) -> list[Artifact]:
    manifest = root / MANIFEST
    if not manifest.exists():
        return []
    return [Artifact(**entry) for entry in json.loads(manifest.read_text(encoding="utf-8"))]


def _describe(path: Path) -> Artifact:
    data = path.read_bytes()
    return Artifact(name=path.name, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
