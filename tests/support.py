"""Builders for real temporary projects: bare target repositories, leviathan.yaml, a Leviathan home."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import TargetConfig
from leviathan_dagster.demo_setup import make_repository

REPO_ROOT = Path(__file__).resolve().parents[1]


def backlog_yaml(*tasks: dict) -> str:
    return yaml.safe_dump({"tasks": list(tasks)}, sort_keys=False)


def docs_task(task_id: str, **fields) -> dict:
    return {
        "id": task_id,
        "title": f"Write {task_id}",
        "ready": True,
        "generator": "docs",
        "allowed_paths": [f"docs/{task_id}.md"],
        "acceptance_criteria": ["It exists"],
        **fields,
    }


@dataclass
class Project:
    root: Path
    home: LeviathanHome
    config_path: Path

    def repo(self, target_id: str) -> Path:
        return self.root / f"{target_id}.git"

    def events(self) -> NdjsonEventLog:
        return NdjsonEventLog(self.home.events_path)

    def target(self, target_id: str) -> TargetConfig:
        return next(t for t in load_project_config(self.config_path).targets if t.id == target_id)

    def branches(self, target_id: str) -> list[str]:
        out = subprocess.run(
            ["git", "for-each-ref", "--format=%(refname:short)", "refs/heads"],
            cwd=self.repo(target_id),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.split()

    def show(self, target_id: str, ref: str, path: str) -> str:
        return subprocess.run(
            ["git", "show", f"{ref}:{path}"],
            cwd=self.repo(target_id),
            capture_output=True,
            text=True,
            check=True,
        ).stdout


def make_project(root: Path, targets: dict[str, dict], **top) -> Project:
    """``targets``: id -> {"files": {...}, "policy": {...}, other target keys}."""
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for target_id, spec in targets.items():
        spec = dict(spec)
        files = spec.pop("files", None)
        if files is not None:
            make_repository(root / f"{target_id}.git", files)
        entries.append({"id": target_id, "repo_url": f"./{target_id}.git", **spec})
    config = root / "leviathan.yaml"
    config.write_text(yaml.safe_dump({**top, "targets": entries}, sort_keys=False), encoding="utf-8")
    return Project(root=root, home=LeviathanHome(root / "home"), config_path=config)


def run_worker(project: Project, target_id: str, task_id: str, attempt_id: str, number: int = 1, **extra_env):
    """``python -m worker`` as the local executor runs it, with the seed's environment contract."""
    env = {
        **os.environ,
        "TARGET_NAME": target_id,
        "TARGET_REPO_URL": str(project.repo(target_id)),
        "TARGET_BRANCH": "main",
        "TASK_ID": task_id,
        "ATTEMPT_ID": attempt_id,
        "ATTEMPT_NUMBER": str(number),
        "LEVIATHAN_HOME": str(project.home.root),
        "LEVIATHAN_CONFIG": str(project.config_path),
        **extra_env,
    }
    return subprocess.run(
        [sys.executable, "-m", "worker"], env=env, capture_output=True, text=True, timeout=120
    )
