"""Project config: both forms, policy validation, secrets by environment reference only."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from leviathan_dagster.core.config.project import load_project_config, parse_project_config, resolve_secret
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.models import Policy

SRC = "leviathan.yaml"

FULL = """\
max_concurrent_attempts: 3          # global limit
defaults:
  max_open_prs: 2
targets:
  - id: docs-site
    repo_url: ./repos/docs-site.git
    branch: trunk
    forge: local
    executor: k8s-stub
    test_command: ["python", "-m", "pytest", "-q"]
    secrets:
      github_token: {env: GITHUB_TOKEN}
    policy:
      allowed_path_prefixes: [".leviathan/", "./docs/"]
      max_running_attempts: 1
      max_attempts_per_task: 3
      backoff_seconds: 0
      circuit_breaker_failures: 2
      attempt_timeout_seconds: 600
      escalation_after: 3
  - id: api
    repo_url: https://github.com/example/api.git
    forge: github
    secrets: {github_token: {env: GITHUB_TOKEN}}
    test_command: "make test ARGS='-k smoke'"
    max_open_prs: 1                  # seed style: policy key directly on the target
"""

# The seed's single-target autonomy config (ops/autonomy/dev.yaml), verbatim.
SEED = """\
target_id: radix
target_repo_url: https://github.com/iangreen74/radix.git
target_branch: main

# Scope restrictions
allowed_path_prefixes:
  - .leviathan/
  - docs/

# Concurrency limits
max_open_prs: 1
max_running_attempts: 1

# Retry policy
max_attempts_per_task: 2

# Circuit breaker
circuit_breaker_failures: 2

# Scheduler
schedule_cron: "*/5 * * * *"
attempt_timeout_seconds: 900

# Control plane
control_plane_url: http://leviathan-control-plane:8000

# Worker
worker_image: leviathan-worker:local
worker_namespace: leviathan
workspace_dir: /workspace
"""


def parse(text: str, base_dir: Path = Path("/srv/project")):
    return parse_project_config(text, SRC, base_dir=base_dir)


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value).splitlines()


def target(body: str) -> str:
    """A config with one target 't' whose extra lines are ``body`` (indented like the target's keys)."""
    return "targets:\n  - id: t\n    repo_url: /repos/t.git\n" + textwrap.indent(
        textwrap.dedent(body), "    "
    )


def test_full_config() -> None:
    config = parse(FULL)
    docs, api = config.targets
    assert config.source == SRC
    assert config.max_concurrent_attempts == 3
    assert config.warnings == ()
    assert docs.repo_url == "/srv/project/repos/docs-site.git"
    assert (docs.branch, docs.forge, docs.executor) == ("trunk", "local", "k8s-stub")
    assert docs.test_command == ("python", "-m", "pytest", "-q")
    assert dict(docs.secret_env) == {"github_token": "GITHUB_TOKEN"}
    assert docs.policy == Policy(
        allowed_path_prefixes=(".leviathan/", "docs/"),
        max_open_prs=2,  # from defaults
        max_running_attempts=1,
        max_attempts_per_task=3,
        backoff_seconds=0,
        circuit_breaker_failures=2,
        attempt_timeout_seconds=600,
        escalation_after=3,
    )
    assert api.repo_url == "https://github.com/example/api.git"
    assert (api.branch, api.forge, api.executor) == ("main", "github", "local")
    assert api.test_command == ("make", "test", "ARGS=-k smoke")
    assert api.policy == Policy(max_open_prs=1)
    assert config.target("api") is api
    assert config.target("nope") is None


def test_seed_flat_form_becomes_one_target() -> None:
    config = parse(SEED)
    [radix] = config.targets
    assert config.warnings == ()
    assert config.max_concurrent_attempts == 4
    assert radix.id == "radix"
    assert radix.repo_url == "https://github.com/iangreen74/radix.git"
    assert radix.branch == "main"
    assert radix.policy == Policy(
        allowed_path_prefixes=(".leviathan/", "docs/"),
        max_open_prs=1,
        max_running_attempts=1,
        max_attempts_per_task=2,
        circuit_breaker_failures=2,
        attempt_timeout_seconds=900,
    )


def test_seed_flat_form_errors_name_the_seed_key() -> None:
    problems = problems_of(SEED.replace("target_repo_url: https", "target_repo_url: ftp"))
    assert problems == [
        f"{SRC}:2: target 'radix': field 'target_repo_url': URL scheme 'ftp' is not supported "
        "(available: https, file, ssh). Fix: use a local path, a file:// URL or an https:// URL."
    ]


def test_load_resolves_relative_repo_url_against_the_config_folder(tmp_path: Path) -> None:
    path = tmp_path / "proj" / "leviathan.yaml"
    path.parent.mkdir()
    path.write_text(
        "targets:\n  - id: a\n    repo_url: ../repos/a.git\n  - id: b\n    repo_url: file:///r/b.git\n"
    )
    config = load_project_config(path)
    assert config.source == str(path)
    assert config.targets[0].repo_url == str(tmp_path / "repos" / "a.git")
    assert config.targets[1].repo_url == "file:///r/b.git"


def test_missing_file_suggests_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"leviathan.yaml: no such file.*leviathan init"):
        load_project_config(tmp_path / "leviathan.yaml")


def test_policy_integer_message() -> None:
    text = target("policy:\n  max_open_prs: 0\n")
    assert problems_of(text) == [
        f"{SRC}:5: target 't': policy 'max_open_prs' must be an integer from 1 to 1,000, got 0. "
        "Fix: write e.g. 'max_open_prs: 1'."
    ]


@pytest.mark.parametrize(
    ("body", "line", "expected"),
    [
        ("backoff_seconds: -1", 4, "policy 'backoff_seconds' must be an integer from 0 to 604,800, got -1"),
        (
            "max_attempts_per_task: true",
            4,
            "policy 'max_attempts_per_task' must be an integer from 1 to 1,000, got true",
        ),
        (
            "attempt_timeout_seconds: '900'",
            4,
            "policy 'attempt_timeout_seconds' must be an integer from 1 to 86,400, got '900'",
        ),
        ("escalation_after: 0", 4, "policy 'escalation_after' must be an integer from 1 to 1,000, got 0"),
        (
            "allowed_path_prefixes: []",
            4,
            "policy 'allowed_path_prefixes' must be a non-empty list, got a list",
        ),
        (
            "allowed_path_prefixes: [/abs/]",
            4,
            "policy 'allowed_path_prefixes' has a bad entry: '/abs/': absolute",
        ),
        (
            "allowed_path_prefixes: [docs/../x]",
            4,
            "policy 'allowed_path_prefixes' has a bad entry: 'docs/../x'",
        ),
        ("forge: gitlab", 4, "forge 'gitlab' is unknown (available: local, github)"),
        ("executor: docker", 4, "executor 'docker' is unknown (available: local, k8s, k8s-stub)"),
        (
            "branch: 'a b'",
            4,
            "field 'branch' must be a branch name (letters, digits, '.', '_', '-', '/'; no spaces or newl",
        ),
        ("test_command: [1, 2]", 4, "field 'test_command' must be a list of strings, got a list"),
        ('test_command: "pytest \'unclosed"', 4, "field 'test_command' cannot be split"),
        ("secrets: {gh: {env: 'not valid'}}", 4, "secret 'gh' must be {env: NAME} with NAME an environment"),
    ],
)
def test_target_errors_name_line_target_and_field(body: str, line: int, expected: str) -> None:
    [problem] = problems_of(target(body + "\n"))
    assert problem.startswith(f"{SRC}:{line}: target 't': {expected}")
    assert ". Fix: " in problem or "must be" in problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", f"{SRC}:1: expected a mapping with 'targets:', got an empty file"),
        ("other: 1\n", f"{SRC}:1: no targets. Fix: add a 'targets:' list"),
        ("targets: []\n", f"{SRC}:1: 'targets' must be a non-empty list, got a list"),
        ("targets:\n  - repo_url: /x\n", f"{SRC}:2: required field 'id' is missing"),
        ("targets:\n  - id: a\n", f"{SRC}:2: target 'a': required field 'repo_url' is missing"),
        ("targets:\n  - id: 'a b'\n    repo_url: /x\n", f"{SRC}:2: target 'a b': field 'id' must match"),
        (
            "max_concurrent_attempts: 0\ntargets:\n  - {id: a, repo_url: /x}\n",
            f"{SRC}:1: 'max_concurrent_attempts'",
        ),
    ],
)
def test_file_level_errors(text: str, expected: str) -> None:
    [problem] = problems_of(text)
    assert problem.startswith(expected)


def test_yaml_syntax_error_names_line_and_column() -> None:
    # The '[' left open on line 3 is named, not the end of the file (a line 4 of a 3-line file).
    [problem] = problems_of("targets:\n  - id: a\n    repo_url: [x\n")
    assert problem.startswith(f"{SRC}:3:15: invalid YAML")
    assert "the file ends before it is closed" in problem


def test_duplicate_target_ids() -> None:
    text = "targets:\n  - id: a\n    repo_url: /x\n  - id: a\n    repo_url: /y\n"
    assert problems_of(text) == [
        f"{SRC}:4: target 'a': id 'a' is used twice (lines 2 and 4). Fix: give every target a unique id."
    ]


def test_policy_given_twice_is_an_error() -> None:
    [problem] = problems_of(target("max_open_prs: 1\npolicy:\n  max_open_prs: 2\n"))
    assert problem.startswith(f"{SRC}:6: target 't': policy 'max_open_prs' is given both")


def test_all_problems_are_reported_together() -> None:
    problems = problems_of(target("forge: nope\nexecutor: nope\npolicy:\n  max_open_prs: 0\n"))
    assert [p.split(": ", 1)[0] for p in problems] == [f"{SRC}:4", f"{SRC}:5", f"{SRC}:7"]


def test_unknown_keys_are_warnings() -> None:
    text = "colour: blue\ndefaults:\n  max_prs: 3\n" + target("labels: [x]\npolicy:\n  max_open: 1\n")
    config = parse(text)
    assert config.warnings == (
        f"{SRC}:1: unknown top-level key 'colour' is ignored",
        f"{SRC}:3: defaults: unknown policy 'max_prs' is ignored",
        f"{SRC}:7: target 't': unknown field 'labels' is ignored",
        f"{SRC}:9: target 't': unknown policy 'max_open' is ignored (known: allowed_path_prefixes, "
        "max_open_prs, max_running_attempts, max_attempts_per_task, backoff_seconds, "
        "circuit_breaker_failures, attempt_timeout_seconds, escalation_after, max_repair_rounds, "
        "max_tokens_per_attempt, max_usd_per_attempt, daily_token_budget, allow_draft_on_failing_tests, "
        "infrastructure_streak_limit)",
    )


LITERAL = (
    "secrets are referenced by environment variable, never written literally: use `{key}: {{env: {env}}}`"
)


@pytest.mark.parametrize(
    ("body", "line", "key", "env"),
    [
        ("secrets:\n  github_token: ghp_abc123", 5, "github_token", "GITHUB_TOKEN"),
        ("api_key: sk-123", 4, "api_key", "API_KEY"),
        ("policy:\n  db_password: hunter2", 5, "db_password", "DB_PASSWORD"),
        ("forge_settings:\n  private_key: '-----BEGIN'", 5, "private_key", "PRIVATE_KEY"),
        ("hooks:\n  - {name: x, webhook_secret: s3}", 5, "webhook_secret", "WEBHOOK_SECRET"),
    ],
)
def test_literal_secrets_are_rejected(body: str, line: int, key: str, env: str) -> None:
    problems = problems_of(target(body + "\n"))
    assert any(
        p.startswith(f"{SRC}:{line}: target 't': ")
        and p.endswith(f"Fix: {LITERAL.format(key=key, env=env)}.")
        for p in problems
    ), problems


def test_literal_secret_in_the_flat_form_and_defaults() -> None:
    [problem] = problems_of(SEED + "github_token: ghp_abc\n")
    assert problem.startswith(f"{SRC}:31: target 'radix': field 'github_token' holds a literal secret")
    [problem] = problems_of("defaults:\n  token: abc\n" + target(""))
    assert problem.startswith(f"{SRC}:2: field 'token' holds a literal secret")


def test_secret_like_keys_without_literal_strings_are_fine() -> None:
    config = parse(target("max_tokens: 5\nsecrets:\n  api_key: {env: API_KEY}\n"))
    assert dict(config.targets[0].secret_env) == {"api_key": "API_KEY"}


def test_resolve_secret() -> None:
    [t] = parse(target("secrets:\n  github_token: {env: GH_TOKEN}\n")).targets
    assert resolve_secret(t, "github_token", {"GH_TOKEN": "ghp_x"}) == "ghp_x"
    assert resolve_secret(t, "github_token", {"GH_TOKEN": ""}) is None
    assert resolve_secret(t, "github_token", {}) is None
    assert resolve_secret(t, "other", {"GH_TOKEN": "ghp_x"}) is None


def test_keys_that_name_a_secret_are_not_literal_secrets(tmp_path) -> None:
    text = (
        "kubernetes:\n  secret_name: leviathan-secrets\n"
        "targets:\n  - id: t\n    repo_url: ./r.git\n    api_token: abc\n"
    )
    with pytest.raises(ConfigError) as err:
        parse_project_config(text, "leviathan.yaml", base_dir=tmp_path)
    assert "api_token" in str(err.value) and "secret_name" not in str(err.value)
