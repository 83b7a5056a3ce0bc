"""The target's backlog (``.leviathan/backlog.yaml``): parse and validate it, and write a completion back.

Parsing works on PyYAML's node tree rather than on plain dicts, so every problem can name the file, the
line, the task and the field. All problems are collected before anything is raised: a user fixing a
backlog should see the whole list at once, not one error per run. The node and reporting helpers live in
``yamlnodes``, the rules across fields (ids, generators, write-back, dependencies) in ``backlog_rules``,
the write-back in ``backlog_writeback`` (re-exported here).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from leviathan_dagster.core.attempts.path_policy import check_policy_path
from leviathan_dagster.core.backlog.rules import ID_FIX, check_dependencies, check_task_usable, id_label
from leviathan_dagster.core.backlog.rules import ID_RE as ID_RE
from leviathan_dagster.core.backlog.rules import MAX_ID_LENGTH as MAX_ID_LENGTH
from leviathan_dagster.core.backlog.rules import id_problem as id_problem
from leviathan_dagster.core.backlog.writeback import write_back_completion as write_back_completion
from leviathan_dagster.core.config.secrets import looks_like_secret_key
from leviathan_dagster.core.config.yaml_nodes import Reporter, YamlDocument, close_key, describe, line_of
from leviathan_dagster.core.config.yaml_safety import check_yaml_text, decode_yaml_bytes, parsing_paused_gc
from leviathan_dagster.core.errors import BacklogError, ConfigError, PolicyViolation
from leviathan_dagster.core.models import BACKLOG_PATH, TASK_STATUSES, Backlog, Task

_KNOWN_FIELDS = (
    "id",
    "title",
    "ready",
    "allowed_paths",
    "status",
    "description",
    "scope",
    "acceptance_criteria",
    "dependencies",
    "priority",
    "generator",
)
# The former name of ``generator``: still read, with a warning.
_OLD_GENERATOR_KEY = "executor"
# Written by write_back_completion, so they are expected and never warned about.
_WRITE_BACK_FIELDS = ("attempt_id", "branch_name", "completed_at")
# Read from Task.extra by the feature that owns them (config_kubernetes.task_resources, forge.reviewers),
# never warned about.
_EXTENSION_FIELDS = ("resources", "owner")


class _Invalid(Exception):
    """One bad field value: message and fix, located at ``node`` (default: the field's value).

    ``also`` carries further problems of the same field (one per bad list item), so all are reported.
    """

    def __init__(self, message: str, fix: str, node: yaml.Node | None = None) -> None:
        super().__init__(message)
        self.message, self.fix, self.node = message, fix, node
        self.also: list[_Invalid] = []


def _text(doc: YamlDocument, node: yaml.Node, name: str, *, required: bool) -> str | None:
    value = doc.value(node)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise _Invalid(f"must be a non-empty string, got {describe(node)}", f"write e.g. '{name}: some text'")
    return value


def _text_list(doc: YamlDocument, node: yaml.Node, name: str) -> list[tuple[str, yaml.Node]]:
    if doc.value(node) is None:
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise _Invalid(
            f"must be a list of strings, got {describe(node)}", f"write one '- item' per line under '{name}:'"
        )
    for item in node.value:
        if not isinstance(doc.value(item), str):
            raise _Invalid(f"items must be strings, got {describe(item)}", "quote the item", item)
    return [(doc.value(item), item) for item in node.value]


def _allowed_paths(doc: YamlDocument, node: yaml.Node) -> tuple[str, ...]:
    items = _text_list(doc, node, "allowed_paths")
    if not items:
        raise _Invalid("must list at least one path", "add e.g. '- docs/' under 'allowed_paths:'")
    paths, bad = [], []
    for path, item in items:
        try:
            paths.append(check_policy_path(path))
        except PolicyViolation as exc:
            fix = "use a path relative to the repository root, e.g. 'docs/guide.md' or 'docs/'"
            bad.append(_Invalid(f"has a bad path: {exc}", fix, item))
    if bad:
        bad[0].also = bad[1:]
        raise bad[0]
    return tuple(paths)


def _validate_field(doc: YamlDocument, name: str, node: yaml.Node) -> Any:
    """The field's value in Task form, or _Invalid."""
    if name == "id":
        value = doc.value(node)
        problem = id_problem(value)
        if problem is not None:
            raise _Invalid(f"{problem}, got {_shown(node)}", ID_FIX)
        return value
    if name == "title":
        return _text(doc, node, name, required=True)
    if name == "ready":
        value = doc.value(node)
        if not isinstance(value, bool):
            raise _Invalid(
                f"must be true or false, got {describe(node)}", "write 'ready: true' without quotes"
            )
        return value
    if name == "allowed_paths":
        return _allowed_paths(doc, node)
    if name == "status":
        value = doc.value(node)
        if value not in TASK_STATUSES:
            raise _Invalid(
                f"must be one of {', '.join(TASK_STATUSES)}, got {describe(node)}", "write 'status: pending'"
            )
        return value
    if name == "generator":
        value = doc.value(node)
        if not isinstance(value, str) or not value.strip():
            raise _Invalid(f"must name a generator, got {describe(node)}", "write e.g. 'generator: docs'")
        return value
    if name in ("description", "scope"):
        value = _text(doc, node, name, required=False)
        return "" if value is None and name == "description" else value
    if name in ("acceptance_criteria", "dependencies"):
        return tuple(value for value, _ in _text_list(doc, node, name))
    if name == "priority":
        value = doc.value(node)
        # bool is an int in Python; 'priority: yes' is not a priority.
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            raise _Invalid(
                f"must be an integer from 1 (lowest) to 5 (highest), got {describe(node)}",
                "write e.g. 'priority: 4'",
            )
        return value
    raise AssertionError(name)


def _shown(node: yaml.Node) -> str:
    """``describe`` cut to a readable length: a 300-character id is not repeated in full."""
    text = describe(node)
    return text if len(text) <= 80 else text[:60] + f"... ({len(text)} characters)"


def _parse_task(
    doc: YamlDocument, node: yaml.Node, index: int, report: Reporter
) -> tuple[Task | None, dict[str, Any]]:
    """The task (None if it has problems, which are reported) and the fields that were valid."""
    if not isinstance(node, yaml.MappingNode):
        report.error(
            node,
            "",
            f"task #{index + 1} must be a mapping, got {describe(node)}",
            "start each task with '- id: ...' and indent its fields",
        )
        return None, {}
    problem_count = len(report.problems)
    id_node = next((v for k, v in node.value if k.value == "id"), None)
    task_id = doc.value(id_node) if id_node is not None else None
    who = f"task {id_label(task_id)}: " if isinstance(task_id, str) else f"task #{index + 1}: "
    items = report.items(node, who)
    if _OLD_GENERATOR_KEY in items:
        key = items[_OLD_GENERATOR_KEY][0]
        if "generator" in items:
            report.error(
                key, who, "both 'generator' and its old name 'executor' are given", "keep 'generator'"
            )
        else:
            report.warn(key, who, "field 'executor' is now called 'generator'", "rename it to 'generator:'")
            items = {("generator" if k == _OLD_GENERATOR_KEY else k): v for k, v in items.items()}
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, (key, value_node) in items.items():
        if name in _KNOWN_FIELDS:
            try:
                values[name] = _validate_field(doc, name, value_node)
            except _Invalid as bad:
                for issue in [bad, *bad.also]:
                    report.error(issue.node or value_node, who, f"field {name!r} {issue.message}", issue.fix)
            continue
        if name == _OLD_GENERATOR_KEY:
            continue  # reported above, next to 'generator'
        # Unknown keys are kept, not dropped: a newer Leviathan (or a human) may rely on them. One that is
        # a typo of a known field is an error: 'dependecies:' would otherwise drop the dependencies.
        extra[name] = doc.value(value_node)
        if looks_like_secret_key(name) and isinstance(extra[name], str) and extra[name]:
            # The backlog is committed, shown in the UI and copied into attempt branches: never a secret.
            fix = "remove it and rotate it; secrets go in leviathan.yaml as {env: NAME} references"
            report.error(key, who, f"field {name!r} holds what looks like a secret", fix)
            continue
        if name not in _WRITE_BACK_FIELDS + _EXTENSION_FIELDS:
            close = close_key(name, _KNOWN_FIELDS)
            if close is not None and close not in items:
                report.error(
                    key, who, f"unknown field {name!r} (did you mean {close!r}?)", f"rename it to {close!r}"
                )
            else:
                close = difflib.get_close_matches(name, _KNOWN_FIELDS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                report.warn(key, who, f"unknown field {name!r} is kept but not used{hint}")
    for name in ("id", "title", "ready", "allowed_paths"):
        if name not in items:
            report.error(node, who, f"required field {name!r} is missing", f"add '{name}:' to this task")
    if len(report.problems) > problem_count:
        return None, values
    task = Task(line=line_of(node), extra=MappingProxyType(extra), **values)
    check_task_usable(doc, node, items, task, who, report)
    if len(report.problems) > problem_count:
        return None, values
    return task, values


def parse_backlog(text: str, source: str = BACKLOG_PATH) -> Backlog:
    """Parse and validate a backlog. Raises BacklogError listing every problem (file:line: task: field).

    Nothing in here recurses per task or per dependency, and the text is checked for size, characters
    and nesting (``check_yaml_text``) before it is composed, so a hostile backlog is a located error.
    """
    with parsing_paused_gc():
        return _parse_backlog(text, source)


def _parse_backlog(text: str, source: str) -> Backlog:
    try:
        check_yaml_text(text, source)
        doc = YamlDocument(text, source)
    except ConfigError as exc:
        raise BacklogError([str(exc)]) from None
    report = Reporter(source)
    fix = "start the file with 'tasks:' followed by '- id: ...' entries"
    if not isinstance(doc.root, yaml.MappingNode):
        got = "an empty file" if doc.root is None else describe(doc.root)
        report.error(doc.root or 1, "", f"expected a mapping with a 'tasks' list, got {got}", fix)
        raise BacklogError(report.problems)
    top = report.items(doc.root, "")
    for name, (key, _) in top.items():
        if name != "tasks":
            report.warn(key, "", f"unknown top-level key {name!r} is ignored")
    tasks_node = top.get("tasks", (None, None))[1]
    if not isinstance(tasks_node, yaml.SequenceNode):
        got = "no 'tasks' key" if tasks_node is None else f"'tasks' holding {describe(tasks_node)}"
        report.error(tasks_node or doc.root, "", f"expected a 'tasks' list, got {got}", fix)
        raise BacklogError(report.problems)
    parsed: list[Task] = []
    # Every task with a valid id takes part in the dependency checks, even if another field is bad,
    # so that one run reports all problems.
    graph_entries: list[tuple[str, yaml.MappingNode, tuple[str, ...]]] = []
    first_line: dict[str, int] = {}
    for index, node in enumerate(tasks_node.value):
        task, values = _parse_task(doc, node, index, report)
        task_id = values.get("id")
        if task_id in first_line:
            report.error(
                node,
                f"task {task_id!r}: ",
                f"id {task_id!r} is used twice (lines {first_line[task_id]} and {line_of(node)})",
                "give every task a unique id",
            )
            continue
        if task_id is not None:
            first_line[task_id] = line_of(node)
            graph_entries.append((task_id, node, values.get("dependencies", ())))
        if task is not None:
            parsed.append(task)
    check_dependencies(graph_entries, report)
    if report.problems:
        raise BacklogError(report.problems)
    return Backlog(source=source, tasks=tuple(parsed), warnings=tuple(report.warnings))


def load_backlog(path: Path) -> Backlog:
    """Read and parse the backlog file at ``path`` (messages name ``path``)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise BacklogError([f"{path}: no backlog file. Fix: create it with a 'tasks:' list."]) from None
    except OSError as exc:
        raise BacklogError([f"{path}: cannot be read ({exc.strerror}). Fix: check the file"]) from None
    try:
        text = decode_yaml_bytes(data, str(path))
    except ConfigError as exc:
        raise BacklogError([str(exc)]) from None
    return parse_backlog(text, str(path))
