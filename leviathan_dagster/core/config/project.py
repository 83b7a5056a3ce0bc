"""The project config ``leviathan.yaml``: the targets Leviathan works on and each target's policy.

Two forms are read: the ``targets:`` list, and the seed's single-target "autonomy config" (``target_id``,
``target_repo_url``, policy keys at the top level). What each key may hold is declared once, by the typed
models (``config_models`` and the section modules); this module turns the YAML node tree into their
input, remembering the node each value came from, so that every problem names file, line, target, field
and fix (``config_errors``), and all of them are reported at once. The secret checks live in
``config_secrets``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from leviathan_dagster.core.backlog.rules import id_label, id_problem
from leviathan_dagster.core.config.errors import Where, validate_from_file
from leviathan_dagster.core.config.event_log import warn_unused_event_log_keys
from leviathan_dagster.core.config.fields import FileContext
from leviathan_dagster.core.config.models import (
    EXECUTORS,
    FORGES,
    POLICY_KEYS,
    Policy,
    ProjectConfig,
    TargetConfig,
    branch_problem,
)
from leviathan_dagster.core.config.secrets import check_literal_secrets
from leviathan_dagster.core.config.secrets import resolve_secret as resolve_secret
from leviathan_dagster.core.config.yaml_nodes import Reporter, YamlDocument, describe
from leviathan_dagster.core.config.yaml_safety import check_yaml_text, decode_yaml_bytes, parsing_paused_gc
from leviathan_dagster.core.errors import ConfigError

__all__ = [
    "EXECUTORS",
    "FORGES",
    "POLICY_KEYS",
    "branch_problem",
    "load_project_config",
    "parse_project_config",
    "resolve_secret",
]

# The seed's flat form names some target keys differently and carries deployment keys that the
# Dagster deployment configures elsewhere; those are accepted and ignored so a seed config loads as is.
_FLAT_RENAMES = {"target_id": "id", "target_repo_url": "repo_url", "target_branch": "branch"}
_FLAT_IGNORED = ("schedule_cron", "control_plane_url", "worker_image", "worker_namespace", "workspace_dir")
# The top-level keys the file sets on ProjectConfig; its other fields are the loader's results.
PROJECT_KEYS = ("max_concurrent_attempts", "event_log", "kubernetes", "control_plane")
_RESULT_FIELDS = ("source", "warnings", "broken_targets")

Items = dict[str, tuple[yaml.Node, yaml.Node]]


class _Input:
    """Turns YAML nodes into a model's input, recording in ``where`` the nodes of every ``loc``."""

    def __init__(self, doc: YamlDocument, report: Reporter, who: str, root: yaml.Node) -> None:
        self.doc, self.report, self.who = doc, report, who
        self.where: Where = {(): (None, root)}

    def add(self, loc: tuple, key: yaml.Node | None, node: yaml.Node) -> Any:
        self.where[loc] = (key, node)
        if isinstance(node, yaml.MappingNode):
            items = self.report.items(node, self.who)
            return {name: self.add((*loc, name), k, v) for name, (k, v) in items.items()}
        if isinstance(node, yaml.SequenceNode):
            return [self.add((*loc, index), None, child) for index, child in enumerate(node.value)]
        return self.doc.value(node)


def _parse_defaults(
    doc: YamlDocument, top: Items, context: FileContext, report: Reporter
) -> tuple[dict[str, Any], Where]:
    """The ``defaults:`` policy keys, checked once for the file (their problems stop everything)."""
    if "defaults" not in top:
        return {}, {}
    key, node = top["defaults"]
    if not isinstance(node, yaml.MappingNode):
        report.error(
            node,
            "",
            f"'defaults' must be a mapping of policy keys, got {describe(node)}",
            "write e.g. 'defaults: {max_open_prs: 1}'",
        )
        return {}, {}
    source = _Input(doc, report, "defaults: ", node)
    values = source.add((), key, node)
    if validate_from_file(Policy, values, source.where, context, report, "defaults: ", "defaults") is None:
        return {}, {}  # reported once, as the file's problem: not again for every target
    # Unknown keys only warned about were dropped from ``values`` by the validation.
    return values, source.where


def _parse_target(
    doc: YamlDocument,
    node: yaml.MappingNode,
    items: Items,
    defaults: tuple[dict[str, Any], Where],
    context: FileContext,
    report: Reporter,
) -> TargetConfig | None:
    """One TargetConfig (None if it has problems). ``items`` uses the canonical key names."""
    problem_count = len(report.problems)
    id_node = items.get("id", (None, None))[1]
    target_id = doc.value(id_node) if id_node is not None else None
    who = f"target {id_label(target_id)}: " if isinstance(target_id, str) else ""
    check_literal_secrets(items.values(), doc, who, report)
    source = _Input(doc, report, who, node)
    default_values, default_where = defaults
    policy: dict[str, Any] = dict(default_values)
    source.where.update({("policy", *loc): entry for loc, entry in default_where.items() if loc})
    data: dict[str, Any] = {}
    for name, (key, value_node) in items.items():
        if name in POLICY_KEYS:  # the seed's style: policy keys directly on the target
            policy[name] = source.add(("policy", name), key, value_node)
        elif name != "policy":
            data[name] = source.add((name,), key, value_node)
    if "policy" in items:
        key, policy_node = items["policy"]
        if isinstance(policy_node, yaml.MappingNode):
            source.where[("policy",)] = (key, policy_node)
            for name, (inner_key, value_node) in report.items(policy_node, who).items():
                if name in POLICY_KEYS and name in items:
                    report.error(
                        inner_key,
                        who,
                        f"policy {name!r} is given both on the target and under 'policy:'",
                        "keep only one of them",
                    )
                policy[name] = source.add(("policy", name), inner_key, value_node)
        else:
            policy = source.add(("policy",), key, policy_node)  # not a mapping: the model says so
    data["policy"] = policy
    known = (*POLICY_KEYS, *_FLAT_RENAMES, *_FLAT_IGNORED)
    target = validate_from_file(TargetConfig, data, source.where, context, report, who, "target", known)
    if target is None or len(report.problems) > problem_count:
        return None
    _check_forge_settings(target, items.get("forge", (None, node))[1], who, report)
    if len(report.problems) > problem_count:
        return None
    return target


def _check_forge_settings(target: TargetConfig, at: yaml.Node, who: str, report: Reporter) -> None:
    """What a github target needs that the file alone decides: an https repository it can name, and a
    credential referenced under ``secrets:`` (its value is read from the environment at run time)."""
    if target.forge != "github":
        return
    # Imported here: PyGithub is only loaded for configs that name a github target.
    from leviathan_dagster.core.forge.github.forge import derive_location

    try:
        derive_location(target)
    except ConfigError as exc:
        message, _, fix = str(exc).removeprefix(f"target '{target.id}': ").partition(". Fix: ")
        report.error(at, who, message, fix or None)
    if target.github.app_id is not None:
        if "github_app_private_key" not in target.secret_env:
            fix = "add 'github_app_private_key: {env: GITHUB_APP_PRIVATE_KEY}' under secrets:"
            report.error(
                at, who, "github.app_id is set but no secret github_app_private_key is referenced", fix
            )
    elif "github_token" not in target.secret_env:
        report.error(
            at,
            who,
            "forge 'github' needs a credential, and none is referenced",
            "add 'secrets: {github_token: {env: GITHUB_TOKEN}}', or github.app_id and github_app_private_key",
        )


def parse_project_config(
    text: str, source: str, *, base_dir: Path, isolate_targets: bool = False
) -> ProjectConfig:
    """Parse and validate a project config. Relative local ``repo_url`` values are resolved against
    ``base_dir`` (the config file's folder). Raises ConfigError with every problem, one per line.

    With ``isolate_targets``, the problems of a target that has a valid, unique id do not stop the
    others: that target is left out of ``targets`` and its problems are kept in ``broken_targets`` (for
    the scheduler and the commands to report). Problems of the file itself still raise.
    """
    with parsing_paused_gc():
        return _parse_project_config(text, source, base_dir, isolate_targets)


def _parse_project_config(text: str, source: str, base_dir: Path, isolate_targets: bool) -> ProjectConfig:
    check_yaml_text(text, source)
    doc = YamlDocument(text, source)
    report = Reporter(source)
    if not isinstance(doc.root, yaml.MappingNode):
        got = "an empty file" if doc.root is None else describe(doc.root)
        raise ConfigError(
            report.format(
                doc.root or 1,
                "",
                f"expected a mapping with 'targets:', got {got}",
                "see the example written by `leviathan init`",
            )
        )
    context = FileContext(Path(base_dir))
    top = report.items(doc.root, "")
    flat = "targets" not in top and any(name in top for name in _FLAT_RENAMES)
    project = _parse_project_keys(doc, top, flat, context, report)
    targets: list[TargetConfig | None] = []
    broken: dict[str, list[str]] = {}
    if "targets" in top:
        check_literal_secrets([entry for name, entry in top.items() if name != "targets"], doc, "", report)
        defaults = _parse_defaults(doc, top, context, report)
        targets = _parse_target_list(doc, top, defaults, context, report, broken if isolate_targets else None)
    elif flat:
        items = {_FLAT_RENAMES.get(name, name): entry for name, entry in top.items()}
        for name in (*PROJECT_KEYS, *_FLAT_IGNORED):
            items.pop(name, None)
        targets = [_parse_target(doc, doc.root, items, ({}, {}), context, report)]
    else:
        report.error(doc.root, "", "no targets", "add a 'targets:' list (see `leviathan init`)")
    if report.problems or project is None:
        # The file itself is broken: every problem is reported, the isolated targets' ones too (in the
        # file's order), so that one run of `leviathan validate` shows all there is to fix.
        isolated = [problem for problems in broken.values() for problem in problems]
        raise ConfigError("\n".join(sorted(report.problems + isolated, key=lambda p: _line_of(p, source))))
    return dataclasses.replace(
        project,
        targets=tuple(t for t in targets if t is not None),
        warnings=tuple(report.warnings),
        broken_targets=tuple((tid, "\n".join(problems)) for tid, problems in broken.items()),
    )


def _line_of(problem: str, source: str) -> int:
    """The line a formatted problem (``file:line: ...``) names."""
    line = problem.removeprefix(f"{source}:").split(":", 1)[0]
    return int(line) if line.isdigit() else 0


def _parse_project_keys(
    doc: YamlDocument, top: Items, flat: bool, context: FileContext, report: Reporter
) -> ProjectConfig | None:
    """ProjectConfig from the top-level keys (without its targets yet); None when they have problems."""
    source = _Input(doc, report, "", doc.root)
    data: dict[str, Any] = {"source": report.source, "targets": ()}
    file_keys = ("targets", "defaults", *PROJECT_KEYS, *_FLAT_IGNORED)
    for name, (key, node) in top.items():
        if name in ("targets", "defaults", *_FLAT_IGNORED) or (flat and name not in PROJECT_KEYS):
            continue
        if name in _RESULT_FIELDS:  # fields the loader fills in are not keys of the file
            report.unknown_key(key, "", f"top-level key {name!r}", file_keys, top)
            continue
        data[name] = source.add((name,), key, node)
    project = validate_from_file(
        ProjectConfig,
        data,
        source.where,
        context,
        report,
        "",
        "project",
        ("targets", "defaults", *_FLAT_IGNORED),
    )
    if project is not None and "event_log" in data:
        items = {
            loc[1]: entry for loc, entry in source.where.items() if len(loc) == 2 and loc[0] == "event_log"
        }
        warn_unused_event_log_keys(project.event_log, items, report)
    return project


def _parse_target_list(
    doc: YamlDocument,
    top: Items,
    defaults: tuple[dict[str, Any], Where],
    context: FileContext,
    report: Reporter,
    broken: dict[str, list[str]] | None,
) -> list[TargetConfig | None]:
    """The targets; with ``broken`` (isolation), a target's own problems move there by its id."""
    targets_node = top["targets"][1]
    if not isinstance(targets_node, yaml.SequenceNode) or not targets_node.value:
        report.error(
            targets_node,
            "",
            f"'targets' must be a non-empty list, got {describe(targets_node)}",
            "add '- id: ...' entries under 'targets:'",
        )
        return []
    targets, first_line = [], {}
    for node in targets_node.value:
        if not isinstance(node, yaml.MappingNode):
            report.error(
                node,
                "",
                f"each target must be a mapping, got {describe(node)}",
                "start each target with '- id: ...' and indent its fields",
            )
            continue
        problem_count = len(report.problems)
        target = _parse_target(doc, node, report.items(node, ""), defaults, context, report)
        id_node = next((v for k, v in node.value if k.value == "id"), None)
        target_id = doc.value(id_node) if id_node is not None else None
        isolable = id_problem(target_id) is None and target_id not in first_line
        if broken is not None and isolable and len(report.problems) > problem_count:
            # Only this target is unusable: report it as such and let the others run.
            broken[target_id] = report.problems[problem_count:]
            del report.problems[problem_count:]
            first_line[target_id] = node.start_mark.line + 1  # a later target with this id is a duplicate
            continue
        if isinstance(target_id, str) and target_id in first_line:
            report.error(
                node,
                f"target {target_id!r}: ",
                f"id {target_id!r} is used twice (lines "
                f"{first_line[target_id]} and {node.start_mark.line + 1})",
                "give every target a unique id",
            )
        elif isinstance(target_id, str):
            first_line[target_id] = node.start_mark.line + 1
        targets.append(target)
    return targets


def load_project_config(path: Path, *, isolate_targets: bool = False) -> ProjectConfig:
    """Read and parse the project config at ``path`` (``isolate_targets``: see ``parse_project_config``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file. Fix: run `leviathan init` to write an example config."
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}). Fix: check the path") from None
    text = decode_yaml_bytes(data, str(path))
    return parse_project_config(text, str(path), base_dir=path.parent, isolate_targets=isolate_targets)
