"""The hidden marker that ties a pull request to its task, used to detect duplicate PRs."""

from __future__ import annotations

import re

_MARKER_RE = re.compile(r"<!--\s*leviathan-task:\s*([A-Za-z0-9._-]+/[A-Za-z0-9._-]+)\s*-->")


def render_task_marker(target_id: str, task_id: str) -> str:
    return f"<!-- leviathan-task: {target_id}/{task_id} -->"


def parse_task_marker(body: str) -> str | None:
    match = _MARKER_RE.search(body or "")
    return match.group(1) if match else None
