"""Prompt templates (``templates/*.txt``, Jinja with strict undefined variables) and task-text hygiene.

The template version is the SHA-256 of the template files themselves, so any edit to a prompt changes
the version recorded with every attempt, without anyone having to remember to bump a number.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import cache
from pathlib import Path

import jinja2

from leviathan_dagster.core.models import Task

PROMPTS_DIR = Path(__file__).with_name("templates")
TEMPLATES = ("system.txt", "task.txt", "tests_failed.txt")
_HTML_COMMENT = re.compile(r"<!--.*?(-->|\Z)", re.DOTALL)


@cache
def _environment() -> jinja2.Environment:
    # StrictUndefined: a misspelt variable is an error at render time, never an empty string in a prompt.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(PROMPTS_DIR),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )


@cache
def template_version() -> str:
    digest = hashlib.sha256()
    for name in TEMPLATES:
        digest.update(name.encode() + b"\0" + (PROMPTS_DIR / name).read_bytes() + b"\0")
    return f"claude-rewrite/{digest.hexdigest()[:12]}"


def render(name: str, **variables: object) -> str:
    return _environment().get_template(name).render(**variables)


def clean_task_text(text: str) -> str:
    """``text`` without invisible format characters and HTML comments: what a human reviewer of the
    backlog cannot see must not reach the model (hidden instructions in zero-width or tag characters,
    or in ``<!-- -->`` that Markdown renders as nothing).

    Every Unicode "Cf" (format) character goes: zero-width space/joiners, BOM, bidi overrides and the
    U+E0000 tag block used for ASCII smuggling. They go first, so ``<!\u200b--`` cannot hide a comment
    opener, and comments are removed until none is left, so a comment built out of two can't survive.
    """
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    while True:
        stripped = _HTML_COMMENT.sub("", text)
        if stripped == text:
            return text
        text = stripped


def render_task(task: Task, *, allowed_paths: list[str]) -> str:
    return render(
        "task.txt",
        task_id=task.id,
        title=clean_task_text(task.title),
        description=clean_task_text(task.description).strip(),
        acceptance_criteria=[clean_task_text(c).strip() for c in task.acceptance_criteria if c.strip()],
        allowed_paths=allowed_paths,
    )
