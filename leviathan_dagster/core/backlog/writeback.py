"""Write a task's completion back into the backlog text, in place (see ``write_back_completion``)."""

from __future__ import annotations

import re

import yaml

from leviathan_dagster.core.config.yaml_nodes import YamlDocument, line_of
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.models import BACKLOG_PATH

# libyaml's loader when PyYAML has it: the checks below only need the values, which both loaders read
# alike (see yamlnodes), and the pure-Python one took most of a write-back's time.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load(text: str):
    return yaml.load(text, Loader=_LOADER)  # a safe loader either way


def _render_scalar(value: str | bool) -> str:
    """A one-line YAML scalar that reads back as exactly ``value``: plain when that is safe, else quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    # Plain only when it starts with a letter: '1e5' or '0x10' read back as numbers in YAML 1.2 parsers.
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9._/+-]*", value) and _load(value) == value:
        return value
    return yaml.safe_dump(value, default_style='"', width=float("inf"), allow_unicode=True).rstrip("\n")


# The keys write_back_completion sets on a completed task.
WRITE_BACK_KEYS = ("status", "ready", "attempt_id", "branch_name", "completed_at")


def replaceable_in_place(text: str, key: yaml.Node, node: yaml.Node) -> bool:
    """Whether the value ``node`` of ``key`` can be replaced by a line edit of ``text``.

    Only a one-line plain or quoted scalar right after "key:" is replaced in place. Anything else (an
    alias, a tag, a block scalar, a value on the next line) would need a YAML rewrite to change safely.
    Backlog validation asks the same question, so a task write-back cannot edit is refused up front.
    """
    between = text[key.end_mark.index : node.start_mark.index]
    one_line = isinstance(node, yaml.ScalarNode) and node.style in (None, "", "'", '"')
    return (
        one_line
        and re.fullmatch(r"[ \t]*:[ \t]*", between) is not None
        and node.end_mark.line == key.start_mark.line
    )


def _find_task_node(doc: YamlDocument, task_id: str) -> yaml.MappingNode:
    root = doc.root
    tasks = None
    if isinstance(root, yaml.MappingNode):
        tasks = next(
            (v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "tasks"), None
        )
    found = []
    for node in tasks.value if isinstance(tasks, yaml.SequenceNode) else []:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == "id" and doc.value(value) == task_id:
                    found.append(node)
    if len(found) != 1:
        state = "not in the backlog" if not found else "in the backlog more than once"
        raise ConfigError(f"cannot write back task {task_id!r}: it is {state}")
    if found[0].flow_style:
        raise ConfigError(
            f"{BACKLOG_PATH}:{line_of(found[0])}: task {task_id!r} is written in flow style ({{...}}); "
            "write it in block style (one 'key: value' per line) so it can be updated in place"
        )
    return found[0]


def write_back_completion(
    text: str, task_id: str, *, attempt_id: str, branch_name: str, completed_at: str
) -> str:
    """Return ``text`` with task ``task_id`` marked completed (status, ready and the attempt keys set).

    The edit is line-based on purpose: only the values of these keys change, and missing keys are inserted
    as new lines inside the task. Comments, quoting, key order and every other task's lines stay
    byte-identical, so two attempt branches that each completed a different task merge cleanly in git.
    Re-dumping the YAML would rewrite the whole file and make every such pair of branches conflict.
    """
    doc = YamlDocument(text, BACKLOG_PATH)
    task = _find_task_node(doc, task_id)
    keys = {k.value: (k, v) for k, v in task.value if isinstance(k, yaml.ScalarNode)}
    updates: dict[str, str | bool] = {
        "status": "completed",
        "ready": False,
        "attempt_id": attempt_id,
        "branch_name": branch_name,
        "completed_at": completed_at,
    }
    edits: list[tuple[int, int, str]] = []
    missing: list[str] = []
    for name, value in updates.items():
        if name not in keys:
            missing.append(f"{name}: {_render_scalar(value)}")
            continue
        key, node = keys[name]
        if not replaceable_in_place(text, key, node):
            raise ConfigError(
                f"{BACKLOG_PATH}:{line_of(key)}: task {task_id!r}: field {name!r} must be a plain one-line "
                f"value to be written back. Fix: write it as '{name}: {_render_scalar(value)}'."
            )
        rendered = _render_scalar(value)
        if node.start_mark.index == node.end_mark.index:  # empty value: "ready:" -> "ready: false"
            rendered = " " + rendered
        edits.append((node.start_mark.index, node.end_mark.index, rendered))
    if missing:
        # Insert inside the task, after its status/ready/id line, rather than at its end: the end of one
        # task touches the start of the next, and git refuses to merge changes on touching lines.
        anchor = next(keys[name][1] for name in ("status", "ready", "id") if name in keys)
        newline = "\r\n" if "\r\n" in text else "\n"
        end = text.find("\n", anchor.end_mark.index)
        indent = " " * task.value[0][0].start_mark.column
        block = "".join(f"{indent}{line}{newline}" for line in missing)
        edits.append(
            (len(text), len(text), newline + block.rstrip("\r\n")) if end < 0 else (end + 1, end + 1, block)
        )
    for start, stop, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[stop:]
    # A text edit of YAML can go wrong in ways the checks above did not foresee; never hand back a backlog
    # that does not read as intended.
    try:
        tasks_after = _load(text)["tasks"]
    except yaml.YAMLError:
        tasks_after = []
    task_after = next((t for t in tasks_after if isinstance(t, dict) and t.get("id") == task_id), {})
    if any(task_after.get(name) != value for name, value in updates.items()):
        raise ConfigError(f"could not write back task {task_id!r} in place; write it in plain block style")
    return text
