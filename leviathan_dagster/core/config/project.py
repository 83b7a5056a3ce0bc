"""The project config ``leviathan.yaml``: the targets Leviathan works on and each target's policy.

Two forms are read: the ``targets:`` list, and the seed's single-target "autonomy config" (``target_id``,
``target_repo_url``, policy keys at the top level). Like the backlog, every problem names file, line,
target and field, and all of them are reported at once. The secret checks live in ``config_secrets``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from leviathan_dagster.core.attempts.path_policy import check_policy_path
from leviathan_dagster.core.backlog.rules import ID_FIX, id_label, id_problem
from leviathan_dagster.core.config.event_log import parse_event_log
from leviathan_dagster.core.config.secrets import check_literal_secrets, parse_secrets
from leviathan_dagster.core.config.secrets import resolve_secret as resolve_secret
from leviathan_dagster.core.config.sections import PROJECT_SECTIONS, TARGET_SECTIONS, load_sections
from leviathan_dagster.core.config.yaml_nodes import Reporter, YamlDocument, describe
from leviathan_dagster.core.config.yaml_safety import check_yaml_text, decode_yaml_bytes, parsing_paused_gc
from leviathan_dagster.core.errors import ConfigError, PolicyViolation
from leviathan_dagster.core.models import EventLogSettings, Policy, ProjectConfig, TargetConfig
from leviathan_dagster.core.redaction import looks_like_credential

FORGES = ("local", "github")
EXECUTORS = ("local", "k8s", "k8s-stub")
POLICY_KEYS = tuple(f.name for f in dataclasses.fields(Policy))
# Policy keys whose ``null`` means "no limit" rather than a mistake.
_NULLABLE_POLICY_KEYS = ("escalation_after", "max_usd_per_attempt", "daily_token_budget")
_BOOL_POLICY_KEYS = ("allow_draft_on_failing_tests",)
# The seed's flat form names some target keys differently and carries deployment keys that the
# Dagster deployment configures elsewhere; those are accepted and ignored so a seed config loads as is.
_FLAT_RENAMES = {"target_id": "id", "target_repo_url": "repo_url", "target_branch": "branch"}
_FLAT_IGNORED = ("schedule_cron", "control_plane_url", "worker_image", "worker_namespace", "workspace_dir")
_BRANCH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_MAX_BRANCH_LENGTH = 200
_URL_SCHEMES = ("https", "file", "ssh")
# Inclusive bounds of every numeric policy value (docs/configuration.md lists them). A value outside can
# never work (a timeout of 1e20 seconds overflows the Job spec and the worker's clock) or is certainly a
# typo; the upper bounds are far above any sensible setting.
POLICY_BOUNDS: dict[str, tuple[float, float]] = {
    "max_open_prs": (1, 1_000),
    "max_running_attempts": (1, 1_000),
    "max_attempts_per_task": (1, 1_000),
    "backoff_seconds": (0, 7 * 86_400),
    "circuit_breaker_failures": (1, 1_000),
    "attempt_timeout_seconds": (1, 86_400),
    "escalation_after": (1, 1_000),
    "max_repair_rounds": (0, 20),
    "max_tokens_per_attempt": (1, 100_000_000),
    "max_usd_per_attempt": (0.01, 10_000),
    "daily_token_budget": (1, 10_000_000_000),
    "infrastructure_streak_limit": (1, 1_000),
}
MAX_CONCURRENT_BOUNDS = (1, 1_000)

Items = dict[str, tuple[yaml.Node, yaml.Node]]
# The keys a target may carry besides the policy keys and the sections (github:, resources:, ...).
_TARGET_FIELDS = ("id", "repo_url", "branch", "forge", "executor", "test_command", "secrets", "policy")


def _int(doc: YamlDocument, node: yaml.Node, minimum: float, maximum: float) -> int | None:
    value = doc.value(node)
    # bool is an int in Python, but 'max_open_prs: yes' is a mistake, not 1.
    ok = isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= maximum
    return value if ok else None


def branch_problem(value: object) -> str | None:
    """Why ``value`` is not a branch name git accepts (``git check-ref-format --branch``), or None."""
    if not isinstance(value, str) or not _BRANCH_RE.fullmatch(value) or len(value) > _MAX_BRANCH_LENGTH:
        return "must be a branch name (letters, digits, '.', '_', '-', '/'; no spaces or newlines)"
    parts = value.split("/")
    if (
        ".." in value
        or value.endswith(("/", "."))
        or any(not part or part.startswith(".") or part.endswith(".lock") for part in parts)
    ):
        return "is not a valid git branch name (no '..', '//', '.lock', or '.' or '/' at the end)"
    return None


def _parse_policy(doc: YamlDocument, sources: list[Items], who: str, report: Reporter) -> Policy:
    """A Policy from the defaults, overridden by each mapping of ``sources`` in turn."""
    values: dict[str, Any] = {}
    for items in sources:
        for name, (_, node) in items.items():
            if name not in POLICY_KEYS:
                continue
            if name == "allowed_path_prefixes":
                values[name] = _path_prefixes(doc, node, who, report)
                continue
            if name in _NULLABLE_POLICY_KEYS and doc.value(node) is None:
                values[name] = None
                continue
            if name == "max_usd_per_attempt":
                values[name] = _positive_number(doc, node, name, who, report)
                continue
            if name in _BOOL_POLICY_KEYS:
                values[name] = _bool(doc, node, name, who, report)
                continue
            minimum, maximum = POLICY_BOUNDS[name]
            value = _int(doc, node, minimum, maximum)
            if value is None:
                report.error(
                    node,
                    who,
                    f"policy {name!r} must be an integer from {minimum:,} to {maximum:,}, "
                    f"got {describe(node)}",
                    f"write e.g. '{name}: {getattr(Policy(), name) or 3}'",
                )
            values[name] = value
    return Policy(**{k: v for k, v in values.items() if v is not None or k in _NULLABLE_POLICY_KEYS})


def _bool(doc: YamlDocument, node: yaml.Node, name: str, who: str, report: Reporter) -> bool | None:
    value = doc.value(node)
    if isinstance(value, bool):
        return value
    # Only YAML booleans: a quoted "false" is a truthy string, and 0/1 say nothing about intent.
    report.error(
        node, who, f"policy {name!r} must be true or false, got {describe(node)}", f"write '{name}: true'"
    )
    return None


def _positive_number(
    doc: YamlDocument, node: yaml.Node, name: str, who: str, report: Reporter
) -> float | None:
    value = doc.value(node)
    minimum, maximum = POLICY_BOUNDS[name]
    if isinstance(value, int | float) and not isinstance(value, bool) and minimum <= value <= maximum:
        return float(value)
    report.error(
        node,
        who,
        f"policy {name!r} must be a number from {minimum:g} to {maximum:g}, got {describe(node)}",
        f"write e.g. '{name}: 2.5'",
    )
    return None


def _path_prefixes(doc: YamlDocument, node: yaml.Node, who: str, report: Reporter) -> tuple[str, ...] | None:
    fix = "list repository-relative directories, e.g. allowed_path_prefixes: ['docs/', '.leviathan/']"
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        report.error(
            node, who, f"policy 'allowed_path_prefixes' must be a non-empty list, got {describe(node)}", fix
        )
        return None
    prefixes = []
    for item in node.value:
        try:
            if not isinstance(doc.value(item), str):
                raise PolicyViolation(f"got {describe(item)}, not a path")
            prefixes.append(check_policy_path(doc.value(item)))
        except PolicyViolation as exc:
            report.error(item, who, f"policy 'allowed_path_prefixes' has a bad entry: {exc}", fix)
    return tuple(prefixes) if len(prefixes) == len(node.value) else None


def _repo_url(value: str, base_dir: Path) -> str:
    """URLs stay as written; local paths are made absolute against the config file's folder."""
    if any(ord(char) < 32 or ord(char) == 127 for char in value) or value != value.strip():
        raise ValueError("contains spaces or control characters (a newline?) at its ends or inside")
    if re.match(r"^[a-z][a-z0-9+.-]*://[^/@]*:[^/@]*@", value, re.IGNORECASE):
        raise ValueError(
            "carries a password or token (user:secret@); credentials are never written in a URL, "
            "they are referenced under 'secrets:' (e.g. github_token: {env: GITHUB_TOKEN})"
        )
    if "://" in value:
        scheme = value.split("://", 1)[0]
        # Plain http only to this machine (a local GitHub Enterprise or test double): never over a network.
        loopback = re.match(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?/", value) is not None
        if scheme not in _URL_SCHEMES and not loopback:
            raise ValueError(f"URL scheme {scheme!r} is not supported (available: {', '.join(_URL_SCHEMES)})")
        return value
    if re.match(r"^[\w.-]+@[\w.-]+:", value):  # scp-like ssh: git@github.com:owner/repo.git
        return value
    return os.path.normpath(Path(base_dir).expanduser().absolute() / Path(value).expanduser())


def _parse_target(
    doc: YamlDocument, items: Items, line: int, defaults: Items, base_dir: Path, report: Reporter
) -> TargetConfig | None:
    """One TargetConfig (None if it has problems). ``items`` uses the canonical key names."""
    problem_count = len(report.problems)
    id_node = items.get("id", (None, None))[1]
    target_id = doc.value(id_node) if id_node is not None else None
    who = f"target {id_label(target_id)}: " if isinstance(target_id, str) else ""
    fields: dict[str, Any] = {}
    check_literal_secrets(items.values(), doc, who, report)
    for name in ("id", "repo_url"):
        if name not in items:
            report.error(line, who, f"required field {name!r} is missing", f"add '{name}:' to this target")
    for name, (key, node) in items.items():
        value = doc.value(node)
        shown = key.value  # the key as written (flat form: target_repo_url, ...)
        if name == "id":
            problem = id_problem(value)
            if problem is not None:
                report.error(node, who, f"field {shown!r} {problem}, got {describe(node)}", ID_FIX)
            fields["id"] = value
        elif name == "repo_url":
            try:
                if not isinstance(value, str) or not value.strip():
                    raise ValueError(f"must be a path or URL, got {describe(node)}")
                fields["repo_url"] = _repo_url(value, base_dir)
            except ValueError as exc:
                report.error(
                    node, who, f"field {shown!r}: {exc}", "use a local path, a file:// URL or an https:// URL"
                )
        elif name == "branch":
            problem = branch_problem(value)
            if problem is not None:
                report.error(
                    node, who, f"field {shown!r} {problem}, got {describe(node)}", "write e.g. 'branch: main'"
                )
            fields["branch"] = value
        elif name in ("forge", "executor"):
            names = FORGES if name == "forge" else EXECUTORS
            if value not in names:
                report.error(
                    node,
                    who,
                    f"{name} {describe(node)} is unknown (available: {', '.join(names)})",
                    f"write e.g. '{name}: local'",
                )
            fields[name] = value
        elif name == "test_command":
            fields["test_command"] = _test_command(value, node, who, report)
        elif name == "secrets":
            fields["secret_env"] = MappingProxyType(parse_secrets(doc, node, who, report))
        elif name == "policy":
            if not isinstance(node, yaml.MappingNode):
                report.error(
                    node,
                    who,
                    f"field 'policy' must be a mapping, got {describe(node)}",
                    "write e.g. 'policy: {max_open_prs: 1}'",
                )
        elif name in TARGET_SECTIONS:
            fields[name] = TARGET_SECTIONS[name](doc, node, who, report, base_dir)
        elif name not in POLICY_KEYS:
            known = [*_TARGET_FIELDS, *TARGET_SECTIONS, *POLICY_KEYS, *_FLAT_RENAMES, *_FLAT_IGNORED]
            report.unknown_key(key, who, f"field {shown!r}", known, set(items))
    policy_node = items.get("policy", (None, None))[1]
    policy_items = report.items(policy_node, who) if isinstance(policy_node, yaml.MappingNode) else {}
    for name, (key, _) in policy_items.items():
        if name not in POLICY_KEYS:
            known = f" (known: {', '.join(POLICY_KEYS)})"
            report.unknown_key(key, who, f"policy {name!r}", POLICY_KEYS, set(policy_items), known)
        elif name in items:
            report.error(
                key,
                who,
                f"policy {name!r} is given both on the target and under 'policy:'",
                "keep only one of them",
            )
    policy = _parse_policy(doc, [defaults, items, policy_items], who, report)
    if len(report.problems) > problem_count:
        return None
    target = TargetConfig(policy=policy, **fields)
    _check_forge_settings(target, items.get("forge", (None, line))[1], who, report)
    if len(report.problems) > problem_count:
        return None
    return target


def _check_forge_settings(target: TargetConfig, at: yaml.Node | int, who: str, report: Reporter) -> None:
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


def _test_command(value: Any, node: yaml.Node, who: str, report: Reporter) -> tuple[str, ...]:
    command = _parse_test_command(value, node, who, report)
    # The command runs sandboxed and without credentials; one written into it would be in every log.
    for number, part in enumerate(command, start=1):
        if looks_like_credential(part):
            report.error(
                node,
                who,
                f"field 'test_command' holds a literal credential (argument {number})",
                "remove it: test commands run in the sandbox without credentials or network; "
                "tests that need a service should use a local double",
            )
            return ()
    return command


def _parse_test_command(value: Any, node: yaml.Node, who: str, report: Reporter) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            report.error(node, who, f"field 'test_command' cannot be split: {exc}", "check its quotes")
            return ()
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        # What the worker could never run: an empty program name, or NUL (no argv can carry one).
        if value and (not value[0].strip() or any("\x00" in part for part in value)):
            report.error(
                node,
                who,
                "field 'test_command' names no program (empty first item) or holds a NUL byte",
                "write e.g. test_command: ['python', '-m', 'pytest', '-q']",
            )
            return ()
        return tuple(value)
    report.error(
        node,
        who,
        f"field 'test_command' must be a list of strings, got {describe(node)}",
        "write e.g. test_command: ['python', '-m', 'pytest', '-q']",
    )
    return ()


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
    load_sections()
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
    top = report.items(doc.root, "")
    max_concurrent = 4
    if "max_concurrent_attempts" in top:
        node = top["max_concurrent_attempts"][1]
        low, high = MAX_CONCURRENT_BOUNDS
        max_concurrent = _int(doc, node, low, high) or max_concurrent
        if _int(doc, node, low, high) is None:
            report.error(
                node,
                "",
                f"'max_concurrent_attempts' must be an integer from {low} to {high:,}, got {describe(node)}",
                "write e.g. 'max_concurrent_attempts: 4'",
            )
    event_log = EventLogSettings()
    if "event_log" in top:
        event_log = parse_event_log(doc, top["event_log"][1], base_dir, report)
    sections = {
        name: PROJECT_SECTIONS[name](doc, top[name][1], "", report, base_dir)
        for name in PROJECT_SECTIONS
        if name in top
    }
    targets: list[TargetConfig | None] = []
    broken: dict[str, list[str]] = {}
    if "targets" in top:
        targets = _parse_target_list(doc, top, base_dir, report, broken if isolate_targets else None)
    elif any(name in top for name in _FLAT_RENAMES):
        flat = {_FLAT_RENAMES.get(name, name): entry for name, entry in top.items()}
        for name in ("max_concurrent_attempts", "event_log", *PROJECT_SECTIONS, *_FLAT_IGNORED):
            flat.pop(name, None)
        targets = [_parse_target(doc, flat, 1, {}, base_dir, report)]
    else:
        report.error(doc.root, "", "no targets", "add a 'targets:' list (see `leviathan init`)")
    if report.problems:
        raise ConfigError("\n".join(report.problems))
    return ProjectConfig(
        source=source,
        targets=tuple(t for t in targets if t is not None),
        max_concurrent_attempts=max_concurrent,
        warnings=tuple(report.warnings),
        broken_targets=tuple((tid, "\n".join(problems)) for tid, problems in broken.items()),
        event_log=event_log,
        **sections,
    )


def _parse_target_list(
    doc: YamlDocument, top: Items, base_dir: Path, report: Reporter, broken: dict[str, list[str]] | None
) -> list[TargetConfig | None]:
    """The targets; with ``broken`` (isolation), a target's own problems move there by its id."""
    check_literal_secrets([entry for name, entry in top.items() if name != "targets"], doc, "", report)
    for name, (key, _) in top.items():
        known = (
            "targets",
            "defaults",
            "max_concurrent_attempts",
            "event_log",
            *PROJECT_SECTIONS,
            *_FLAT_IGNORED,
        )
        if name not in known:
            report.unknown_key(key, "", f"top-level key {name!r}", known, set(top))
    defaults: Items = {}
    defaults_node = top.get("defaults", (None, None))[1]
    if isinstance(defaults_node, yaml.MappingNode):
        defaults = report.items(defaults_node, "defaults: ")
        for name, (key, _) in defaults.items():
            if name not in POLICY_KEYS:
                report.unknown_key(key, "defaults: ", f"policy {name!r}", POLICY_KEYS, set(defaults))
    elif defaults_node is not None:
        report.error(
            defaults_node,
            "",
            f"'defaults' must be a mapping of policy keys, got {describe(defaults_node)}",
            "write e.g. 'defaults: {max_open_prs: 1}'",
        )
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
        target = _parse_target(
            doc, report.items(node, ""), node.start_mark.line + 1, defaults, base_dir, report
        )
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
