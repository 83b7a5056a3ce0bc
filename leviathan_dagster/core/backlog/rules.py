"""The backlog's rules beyond one field's type: ids, whether a task can ever be served (generator,
write-back, resources) and the dependency graph. Found at validation, none of them costs an attempt.
"""

from __future__ import annotations

import re

import yaml

from leviathan_dagster.core.backlog.writeback import WRITE_BACK_KEYS, replaceable_in_place
from leviathan_dagster.core.config.kubernetes import resource_requests
from leviathan_dagster.core.config.yaml_nodes import Reporter, YamlDocument
from leviathan_dagster.core.generators.registry import check_task_generator
from leviathan_dagster.core.models import Task

# Ids end up in git branch names (``agent/<task>-<attempt>``) and Dagster partition keys, so they are kept
# to a conservative alphabet, matched in full (``$`` would let a trailing newline through), short enough
# for a branch name and a file name, and valid as a git ref component.
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_ID_LENGTH = 100
ID_FIX = "use letters, digits, '.', '_' and '-' (at most 100), e.g. 'add-docs'; quote numeric ids"
# Statuses of a task that can still be attempted, hence written back.
_OPEN_STATUSES = ("pending", "in_progress", "blocked")


def id_problem(value: object) -> str | None:
    """Why ``value`` is not a valid task or target id (see ID_RE), or None when it is."""
    if not isinstance(value, str):
        return f"must be a string matching {ID_RE.pattern}"
    if len(value) > MAX_ID_LENGTH:
        return f"is {len(value)} characters long, more than {MAX_ID_LENGTH}"
    if not ID_RE.fullmatch(value):
        return f"must match {ID_RE.pattern} in full (letters, digits, '.', '_', '-'; no spaces or newlines)"
    # git check-ref-format: no '..' anywhere, no component ending in '.lock' or '.'.
    if ".." in value or value.endswith((".lock", ".")):
        return "is not valid in a git branch name (no '..', and no '.lock' or '.' at the end)"
    return None


def id_label(task_id: str) -> str:
    """The id as messages name the task: quoted, and cut when it is absurdly long (it is then invalid)."""
    return (
        repr(task_id) if len(task_id) <= MAX_ID_LENGTH else repr(task_id[:40]) + f"... ({len(task_id)} chars)"
    )


def check_task_usable(
    doc: YamlDocument,
    node: yaml.MappingNode,
    items: dict[str, tuple[yaml.Node, yaml.Node]],
    task: Task,
    who: str,
    report: Reporter,
) -> None:
    """Problems that would make every attempt of a valid-looking task fail: its generator (unknown,
    missing, or refusing the task, e.g. tests criteria that cannot fail) and a write-back that could not
    edit it. Found here, they cost no attempt (and can never open the circuit breaker)."""
    if "resources" in items:
        try:
            resource_requests(doc.value(items["resources"][1]))
        except ValueError as exc:
            fix = "write e.g. 'resources: {cpu: 500m, memory: 1Gi}'"
            report.error(items["resources"][1], who, f"field 'resources' {exc}", fix)
    for problem in check_task_generator(task):
        at: yaml.Node = items[problem.field][1] if problem.field in items else node
        if problem.item is not None and isinstance(at, yaml.SequenceNode) and problem.item < len(at.value):
            at = at.value[problem.item]
        report.error(at, who, f"field {problem.field!r} {problem.message}", problem.fix)
    if task.status not in _OPEN_STATUSES:
        return
    fix = "write the task in block style: '- id: ...' with one 'key: value' per line"
    if node.flow_style:
        report.error(node, who, "is written in flow style ({...}), which write-back cannot update", fix)
        return
    for name in WRITE_BACK_KEYS:
        if name in items and not replaceable_in_place(doc.text, *items[name]):
            report.error(
                items[name][0],
                who,
                f"field {name!r} is not a plain one-line value, so write-back cannot update it",
                f"write it as '{name}: value' on one line",
            )


def check_dependencies(tasks: list[tuple[str, yaml.MappingNode, tuple[str, ...]]], report: Reporter) -> None:
    """Self-dependencies, unknown ids and cycles; ``tasks`` holds (id, node, dependencies) in file order."""
    order = {task_id: i for i, (task_id, _, _) in enumerate(tasks)}
    graph: dict[str, list[str]] = {}
    for task_id, node, deps in tasks:
        deps_node = next(v for k, v in node.value if k.value == "dependencies") if deps else None
        graph[task_id] = []
        for dep, dep_node in zip(deps, deps_node.value if deps_node else [], strict=True):
            who = f"task {task_id!r}: "
            if dep == task_id:
                report.error(dep_node, who, "depends on itself", f"remove '{dep}' from its dependencies")
            elif dep not in order:
                report.error(
                    dep_node,
                    who,
                    f"field 'dependencies' names unknown task {dep!r}",
                    "use an id of this backlog or remove it",
                )
            else:
                graph[task_id].append(dep)
    # Depth-first search without recursion (a 1,000-task chain is a normal backlog, not a stack overflow):
    # a dependency on a task still on the path closes a cycle. Each cycle is reported once, rotated to
    # start at the task that comes first in the file, so the message is deterministic.
    state: dict[str, str] = {}
    seen: set[frozenset[str]] = set()
    for start_id, _, _ in tasks:
        if start_id in state:
            continue
        path: list[str] = [start_id]
        position = {start_id: 0}
        pending = [iter(graph[start_id])]
        state[start_id] = "open"
        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                pending.pop()
                state[path.pop()] = "done"
                continue
            if state.get(dep) == "open":
                cycle = path[position[dep] :]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    first = min(range(len(cycle)), key=lambda i: order[cycle[i]])
                    cycle = cycle[first:] + cycle[:first]
                    shown = (
                        " -> ".join([*cycle, cycle[0]])
                        if len(cycle) <= 20
                        else (" -> ".join(cycle[:10]) + f" -> ... ({len(cycle)} tasks) -> {cycle[0]}")
                    )
                    report.error(
                        tasks[order[cycle[0]]][1],
                        f"task {cycle[0]!r}: ",
                        "dependency cycle " + shown,
                        "remove one of these dependencies",
                    )
            elif dep not in state:
                state[dep] = "open"
                position[dep] = len(path)
                path.append(dep)
                pending.append(iter(graph[dep]))
