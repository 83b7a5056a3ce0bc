"""The bad-input suite: every malformed backlog and config an operator's worst day brings is answered
CLEAR — each problem names file, line, field and fix — with no traceback, and nothing that can never work
is accepted. And one broken target never stops a healthy one: for every bad backlog, a project with one
healthy and one broken target still judges the healthy one's tasks (core and ``leviathan tasks``).
"""

from __future__ import annotations

import codecs
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from leviathan_dagster.cli.main import cli
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import BACKLOG_PATH
from leviathan_dagster.core.scheduling.cycle import plan_cycle

# A task that is valid on its own; cases change one thing of it.
TASK = "  - id: t1\n    title: T\n    ready: true\n    generator: docs\n    allowed_paths: [docs/]\n"


def task(**fields: str | None) -> str:
    """A backlog of one task: ``fields`` override (or, with None, drop) the fields of TASK."""
    base = {"id": "t1", "title": "T", "ready": "true", "generator": "docs", "allowed_paths": "[docs/]"}
    base.update(fields)
    lines = [f"    {k}: {v}" for k, v in base.items() if v is not None]
    return "tasks:\n" + "\n".join(lines).replace("    ", "  - ", 1) + "\n"


def criteria_task(*criteria: str, paths: str = "[tests/]") -> str:
    items = "".join(f"      - {c}\n" for c in criteria)
    return task(generator="tests", allowed_paths=paths) + (
        "    acceptance_criteria:\n" + items if criteria else ""
    )


def chain(n: int, *, cycle: bool) -> str:
    lines = ["tasks:"]
    for i in range(n):
        dep = f"t{i - 1}" if i else (f"t{n - 1}" if cycle else None)
        lines += [f"  - id: t{i}", "    title: T", "    ready: false", "    allowed_paths: [docs/]"]
        lines += [f"    dependencies: [{dep}]"] if dep else []
    return "\n".join(lines) + "\n"


def laughs() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\ntasks: *a8\n"


# (case id, backlog file content, text the report must contain: it names the field or the problem).
BACKLOG_CASES: list[tuple[str, str | bytes, str]] = [
    # The file's shape.
    ("empty-file", "", "expected a mapping with a 'tasks' list, got an empty file"),
    ("only-a-comment", "# nothing yet\n", "got an empty file"),
    ("top-level-list", "- id: a\n", "got a list"),
    ("top-level-scalar", "hello\n", "got 'hello'"),
    ("no-tasks-key", "todo: []\n", "got no 'tasks' key"),
    ("tasks-a-number", "tasks: 3\n", "'tasks' holding 3"),
    ("tasks-null", "tasks:\n", "'tasks' holding nothing"),
    ("tasks-a-mapping", "tasks:\n  a: 1\n", "'tasks' holding a mapping"),
    ("tasks-twice", "tasks: []\ntasks: []\n", "field 'tasks' is given twice"),
    ("task-a-string", "tasks:\n  - just a string\n", "task #1 must be a mapping"),
    ("task-a-list", "tasks:\n  - [a, b]\n", "task #1 must be a mapping, got a list"),
    ("key-not-a-string", "tasks:\n" + TASK + "    1: one\n", "key 1 is not a field name"),
    # YAML syntax: the line named exists and is where the fix goes.
    ("unterminated-quote", 'tasks:\n  - id: t1\n    title: "open\n    ready: true\n', ":3:12: invalid YAML"),
    ("unclosed-flow-list", "tasks:\n  - id: t1\n    allowed_paths: [docs/\n", ":3:20: invalid YAML"),
    ("unclosed-flow-map", "tasks:\n  - {id: t1\n\n\n", ":2:5: invalid YAML"),
    ("bad-indentation", "tasks:\n  - id: t1\n   title: T\n", ":3:"),
    ("tab-indentation", "tasks:\n  - id: t1\n\ttitle: T\n", "indent with spaces"),
    ("python-tag", "tasks: !!python/object:os.system x\n", "remove the '!' tag"),
    ("undefined-alias", "tasks: *nothing\n", "found undefined alias"),
    ("two-documents", "tasks: []\n---\ntasks: []\n", "expected a single document"),
    ("key-without-colon", "tasks:\n  - id: t1\n    title T\n    ready\n", "invalid YAML"),
    # Encoding and size: refused before anything is parsed.
    ("nul-byte", TASK.replace("title: T", "title: T\x00").encode(), "NUL byte"),
    ("utf16-le", ("tasks: []\n").encode("utf-16"), "UTF-16"),
    ("utf16-be", codecs.BOM_UTF16_BE + "tasks: []\n".encode("utf-16-be"), "UTF-16"),
    ("utf32", ("tasks: []\n").encode("utf-32"), "UTF-32"),
    (
        "latin1-byte",
        ("tasks:\n" + TASK[0:0] + "  - id: t1\n    title: caf\xe9\n").encode("latin-1"),
        "not UTF-8",
    ),
    ("control-character", "tasks:\n  - id: t1\n    title: a\x07b\n", "control character"),
    ("too-large", "tasks: []\n" + "#" * (33 * 1024 * 1024) + "\n", "more than"),
    ("flow-nesting-400", "tasks: " + "[" * 400 + "]" * 400 + "\n", "nested more than 64 levels"),
    # libyaml gives up at 1,000 levels with an error of its own; PyYAML's composer would then recurse.
    ("flow-nesting-100000", "tasks: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested more than 64 levels"),
    ("block-nesting-100", "tasks:\n" + "".join("  " * i + "- \n" for i in range(1, 100)), "nested more than"),
    ("billion-laughs", laughs(), "expands to more than"),
    ("cycle-of-1000", chain(1000, cycle=True), "dependency cycle t0 -> t999 -> t998"),
    # Ids: they become branch names and partition keys.
    ("id-missing", task(id=None), "required field 'id' is missing"),
    ("id-number", task(id="42"), "field 'id' must be a string"),
    ("id-with-space", task(id="'a b'"), "field 'id' must match"),
    ("id-double-dot", task(id="a..b"), "field 'id' is not valid in a git branch name"),
    ("id-leading-dash", task(id="'-a'"), "field 'id' must match"),
    ("id-trailing-newline", task(id='"t1\\n"'), "field 'id' must match [A-Za-z0-9][A-Za-z0-9._-]* in full"),
    ("id-300-chars", task(id="a" * 300), "field 'id' is 300 characters long"),
    ("id-dot-lock", task(id="t1.lock"), "field 'id' is not valid in a git branch name"),
    ("id-trailing-dot", task(id="t1."), "field 'id' is not valid in a git branch name"),
    ("id-with-slash", task(id="a/b"), "field 'id' must match"),
    ("id-non-ascii", task(id="tâche"), "field 'id' must match"),
    ("id-empty", task(id="''"), "field 'id' must match"),
    ("id-a-list", task(id="[a]"), "field 'id' must be a string"),
    ("id-duplicate", "tasks:\n" + task()[7:] + task()[7:], "id 't1' is used twice"),
    # Other required fields.
    ("title-missing", task(title=None), "required field 'title' is missing"),
    ("title-empty", task(title="''"), "field 'title' must be a non-empty string"),
    ("title-a-list", task(title="[a]"), "field 'title' must be a non-empty string"),
    ("ready-missing", task(ready=None), "required field 'ready' is missing"),
    ("ready-quoted", task(ready="'true'"), "field 'ready' must be true or false"),
    ("ready-a-number", task(ready="1"), "field 'ready' must be true or false"),
    # allowed_paths: never outside the repository, never into .git.
    ("paths-missing", task(allowed_paths=None), "required field 'allowed_paths' is missing"),
    ("paths-empty", task(allowed_paths="[]"), "field 'allowed_paths' must list at least one path"),
    ("paths-a-string", task(allowed_paths="docs/"), "field 'allowed_paths' must be a list of strings"),
    ("paths-absolute", task(allowed_paths="[/etc/passwd]"), "absolute paths are not allowed"),
    ("paths-dotdot", task(allowed_paths="[docs/../src]"), "'..' components are not allowed"),
    ("paths-backslash", task(allowed_paths="['docs\\x.md']"), "backslashes are not allowed"),
    ("paths-dot-git", task(allowed_paths="[.git/config]"), "is a .git directory"),
    ("paths-dot-git-dot", task(allowed_paths="[docs/.git./x.md]"), "is a .git directory"),
    ("paths-dot-git-case", task(allowed_paths="[.GIT/hooks/]"), "is a .git directory"),
    ("paths-dot-git-space", task(allowed_paths="['docs/.git /x']"), "is a .git directory"),
    ("paths-git-8dot3", task(allowed_paths="[git~1/x]"), "is a .git directory"),
    ("paths-git-ntfs-stream", task(allowed_paths="['.git::$INDEX_ALLOCATION/x']"), "is a .git directory"),
    ("paths-nul", task(allowed_paths='["docs/\\0x"]'), "NUL bytes are not allowed"),
    ("paths-root", task(allowed_paths="[./]"), "names the repository root"),
    ("paths-item-number", task(allowed_paths="[1]"), "field 'allowed_paths' items must be strings"),
    # Status, priority, dependencies.
    ("status-unknown", task(status="done"), "field 'status' must be one of"),
    ("priority-9", task(priority="9"), "field 'priority' must be an integer from 1"),
    ("priority-word", task(priority="high"), "field 'priority' must be an integer"),
    ("priority-bool", task(priority="true"), "field 'priority' must be an integer"),
    ("dependency-unknown", task(dependencies="[ghost]"), "field 'dependencies' names unknown task 'ghost'"),
    ("dependency-self", task(dependencies="[t1]"), "depends on itself"),
    (
        "dependency-cycle",
        task(dependencies="[t2]") + task(id="t2", dependencies="[t1]")[7:],
        "dependency cycle",
    ),
    ("dependencies-a-string", task(dependencies="t0"), "field 'dependencies' must be a list of strings"),
    ("description-a-list", task(description="[a]"), "field 'description' must be a non-empty string"),
    ("criteria-a-string", task(acceptance_criteria="done"), "field 'acceptance_criteria' must be a list"),
    # Generators: known, present on a ready task, and able to serve the task.
    ("generator-unknown", task(generator="claud"), "unknown generator 'claud' (did you mean 'claude'?)"),
    ("generator-missing", task(generator=None), "field 'generator' is missing"),
    ("generator-a-list", task(generator="[docs]"), "field 'generator' must name a generator, got a list"),
    ("generator-and-executor", task(executor="docs"), "both 'generator' and its old name 'executor'"),
    ("executor-unknown", task(generator=None, executor="llm"), "unknown generator 'llm'"),
    ("scope-names-no-generator", task(generator=None, scope="backend"), "its scope 'backend' names none"),
    ("tests-no-criteria", criteria_task(), "field 'acceptance_criteria' is empty"),
    ("criterion-sentence", criteria_task("All links return 200"), "is not a Python expression"),
    ("criterion-true", criteria_task("'True'"), "is a literal value"),
    ("criterion-string", criteria_task("'\"some sentence\"'"), "is a literal value"),
    ("criterion-lambda", criteria_task('\'lambda: textutil.slugify("a") == "a"\''), "is a lambda"),
    ("criterion-literal-comparison", criteria_task("1 < 2"), "refers to no code under test"),
    ("criterion-builtins-only", criteria_task("len([1, 2]) == 2"), "refers to no code under test"),
    ("criterion-tuple", criteria_task("'textutil.slugify(\"a\"), 1'"), "is a tuple"),
    ("criterion-or-true", criteria_task("'textutil.ok() or True'"), "always-true operand"),
    (
        "criterion-self-comparison",
        criteria_task("'textutil.f() == textutil.f()'"),
        "compares a value with itself",
    ),
    (
        "tests-no-test-file",
        criteria_task("'m.f() == 1'", paths="[tests/helper.py]"),
        "gives the tests generator",
    ),
    (
        "resources-bad",
        task(resources="{cpu: lots}"),
        "field 'resources' cpu 'lots' is not a Kubernetes quantity",
    ),
    # What write-back could not edit is refused before an attempt is spent on it.
    (
        "flow-style-task",
        "tasks:\n  - {id: t1, title: T, ready: true, generator: docs, allowed_paths: [d/]}\n",
        "flow",
    ),
    ("status-block-scalar", task(status=">-\n      pending"), "field 'status' is not a plain one-line value"),
    ("ready-on-next-line", task(ready="\n      true"), "field 'ready' is not a plain one-line value"),
    # Typos of known fields are errors: ignoring them changes what runs.
    (
        "typo-dependecies",
        task(dependecies="[t0]"),
        "unknown field 'dependecies' (did you mean 'dependencies'?)",
    ),
    ("typo-allowed-path", task(allowed_paths=None, allowed_path="[docs/]"), "did you mean 'allowed_paths'?"),
    ("typo-generater", task(generator=None, generater="docs"), "did you mean 'generator'?"),
    ("secret-in-backlog", task(api_token="ghp_abc123"), "field 'api_token' holds what looks like a secret"),
    ("field-twice", task() + "    title: again\n", "field 'title' is given twice"),
]

CLEAR_LINE = re.compile(r"^\S+?:\d+(:\d+)?: .+ Fix: .+\.$")


def assert_clear(problems: list[str], expected: str, output: str) -> None:
    """Every problem names file and line and says the fix; the expected one is among them."""
    assert "Traceback" not in output
    assert problems, output
    for problem in problems:
        assert CLEAR_LINE.match(problem), problem
    assert any(expected in problem for problem in problems), problems


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


@pytest.mark.parametrize(
    ("content", "expected"), [c[1:] for c in BACKLOG_CASES], ids=[c[0] for c in BACKLOG_CASES]
)
def test_bad_backlog_is_answered_clear(tmp_path: Path, content: str | bytes, expected: str) -> None:
    backlog = write(tmp_path / BACKLOG_PATH, content)
    result = CliRunner().invoke(cli, ["validate", "--backlog", str(backlog)])
    assert result.exit_code == 1, result.output
    problems = [line.strip() for line in result.output.splitlines()[1:] if line.strip()]
    assert_clear(problems, expected, result.output)
    assert all(problem.startswith(str(backlog)) for problem in problems)


def test_the_suite_keeps_the_issue_counts() -> None:
    # Issue 11 counted 73 malformed backlogs and 47 configs; this suite holds at least as many.
    assert len(BACKLOG_CASES) >= 73 and len({c[0] for c in BACKLOG_CASES}) == len(BACKLOG_CASES)
    assert len(CONFIG_CASES) >= 47 and len({c[0] for c in CONFIG_CASES}) == len(CONFIG_CASES)


# Backlogs that look odd but work: accepted, never refused.
GOOD_BACKLOGS: list[tuple[str, str | bytes]] = [
    ("utf8-bom", codecs.BOM_UTF8 + TASK.join(["tasks:\n", ""]).encode()),
    ("chain-of-1000", chain(1000, cycle=False)),
    ("crlf", TASK.join(["tasks:\n", ""]).replace("\n", "\r\n")),
    ("executor-old-name", task(generator=None, executor="docs")),
    ("draft-without-generator", task(generator=None, ready="false")),
    (
        "flow-style-completed",
        "tasks:\n  - {id: t1, title: T, ready: false, status: completed, allowed_paths: [d/]}\n",
    ),
    (
        "good-criteria",
        criteria_task('\'textutil.slugify("A b") == "a-b"\'', "'all(textutil.ok(x) for x in \"ab\")'"),
    ),
]


@pytest.mark.parametrize("content", [c[1] for c in GOOD_BACKLOGS], ids=[c[0] for c in GOOD_BACKLOGS])
def test_odd_but_working_backlogs_are_accepted(tmp_path: Path, content: str | bytes) -> None:
    backlog = write(tmp_path / BACKLOG_PATH, content)
    result = CliRunner().invoke(cli, ["validate", "--backlog", str(backlog)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


TARGET = "targets:\n  - id: t\n    repo_url: ./t.git\n"


def target(extra: str) -> str:
    """A config with one target and ``extra`` (target keys, indented by the caller's 4 spaces)."""
    return TARGET + "".join(f"    {line}\n" for line in extra.splitlines())


GITHUB_TARGET = "targets:\n  - id: t\n    repo_url: https://github.com/a/b.git\n    forge: github\n"


def deep_config() -> str:
    return TARGET + "    policy: " + "{a: " * 200 + "1" + "}" * 200 + "\n"


# (case id, leviathan.yaml content, text the report must contain).
CONFIG_CASES: list[tuple[str, str | bytes, str]] = [
    ("empty-file", "", "expected a mapping with 'targets:', got an empty file"),
    ("top-level-list", "- a\n", "got a list"),
    ("no-targets", "max_concurrent_attempts: 2\n", "no targets"),
    ("targets-empty", "targets: []\n", "'targets' must be a non-empty list"),
    ("targets-a-scalar", "targets: docs\n", "'targets' must be a non-empty list"),
    ("target-a-string", "targets:\n  - docs\n", "each target must be a mapping"),
    ("id-missing", "targets:\n  - repo_url: ./t.git\n", "required field 'id' is missing"),
    ("repo-url-missing", "targets:\n  - id: t\n", "required field 'repo_url' is missing"),
    ("id-with-space", "targets:\n  - id: 'a b'\n    repo_url: ./t.git\n", "field 'id' must match"),
    ("id-trailing-newline", 'targets:\n  - id: "t\\n"\n    repo_url: ./t.git\n', "in full"),
    ("id-300-chars", f"targets:\n  - id: {'a' * 300}\n    repo_url: ./t.git\n", "300 characters long"),
    ("id-dot-lock", "targets:\n  - id: t.lock\n    repo_url: ./t.git\n", "not valid in a git branch name"),
    ("id-duplicate", TARGET + TARGET[9:], "id 't' is used twice"),
    ("repo-url-empty", "targets:\n  - id: t\n    repo_url: ''\n", "field 'repo_url': must be a path or URL"),
    ("repo-url-number", "targets:\n  - id: t\n    repo_url: 3\n", "field 'repo_url': must be a path or URL"),
    (
        "repo-url-http",
        "targets:\n  - id: t\n    repo_url: http://example.com/r.git\n",
        "'http' is not supported",
    ),
    (
        "repo-url-credentials",
        "targets:\n  - id: t\n    repo_url: https://me:ghp_x@github.com/a/b.git\n",
        "token",
    ),
    ("repo-url-newline", 'targets:\n  - id: t\n    repo_url: "./t.git\\n"\n', "control characters"),
    ("branch-trailing-newline", target('branch: "main\\n"'), "field 'branch' must be a branch name"),
    ("branch-double-dot", target("branch: a..b"), "not a valid git branch name"),
    ("branch-hidden-component", target("branch: feature/.x"), "not a valid git branch name"),
    ("branch-dot-lock", target("branch: main.lock"), "not a valid git branch name"),
    ("branch-space", target("branch: 'a b'"), "field 'branch' must be a branch name"),
    ("forge-unknown", target("forge: gitlab"), "forge 'gitlab' is unknown"),
    ("executor-unknown", target("executor: docker"), "executor 'docker' is unknown"),
    ("test-command-ints", target("test_command: [1, 2]"), "field 'test_command' must be a list of strings"),
    ("test-command-quote", target('test_command: "pytest \'x"'), "field 'test_command' cannot be split"),
    ("test-command-empty-program", target("test_command: ['', '-q']"), "names no program"),
    ("policy-a-list", target("policy: [1]"), "field 'policy' must be a mapping"),
    ("typo-test-commnd", target("test_commnd: [pytest]"), "did you mean test_command?"),
    ("typo-policy-key", target("policy:\n  max_open_pr: 1"), "did you mean max_open_prs?"),
    ("typo-top-level", "max_concurent_attempts: 2\n" + TARGET, "did you mean max_concurrent_attempts?"),
    ("typo-defaults", "defaults:\n  backof_seconds: 5\n" + TARGET, "did you mean backoff_seconds?"),
    ("max-open-prs-0", target("max_open_prs: 0"), "policy 'max_open_prs' must be an integer from 1"),
    ("timeout-1e20-int", target("attempt_timeout_seconds: 100000000000000000000"), "from 1 to 86,400"),
    ("timeout-1e20-float", target("attempt_timeout_seconds: 1.0e+20"), "'attempt_timeout_seconds' must be"),
    ("timeout-1e20-text", target("attempt_timeout_seconds: 1e20"), "got '1e20'"),
    ("backoff-negative", target("backoff_seconds: -1"), "policy 'backoff_seconds' must be an integer from 0"),
    ("attempts-bool", target("max_attempts_per_task: true"), "policy 'max_attempts_per_task' must be"),
    ("usd-zero", target("max_usd_per_attempt: 0"), "policy 'max_usd_per_attempt' must be a number"),
    ("tokens-huge", target("max_tokens_per_attempt: 10000000000000"), "policy 'max_tokens_per_attempt'"),
    ("draft-flag-string", target("allow_draft_on_failing_tests: 'yes'"), "must be true or false"),
    ("max-concurrent-0", "max_concurrent_attempts: 0\n" + TARGET, "'max_concurrent_attempts' must be"),
    ("max-concurrent-huge", "max_concurrent_attempts: 1000000000\n" + TARGET, "from 1 to 1,000"),
    (
        "prefixes-empty",
        target("allowed_path_prefixes: []"),
        "'allowed_path_prefixes' must be a non-empty list",
    ),
    ("prefixes-dot-git", target("allowed_path_prefixes: [.git/]"), "is a .git directory"),
    ("prefixes-dot-git-dot", target("allowed_path_prefixes: [docs/.git./]"), "is a .git directory"),
    ("prefixes-absolute", target("allowed_path_prefixes: [/etc/]"), "absolute paths are not allowed"),
    ("policy-twice", target("max_open_prs: 1\npolicy:\n  max_open_prs: 2"), "given both on the target and"),
    (
        "secret-literal",
        target("secrets:\n  github_token: ghp_abc"),
        "secret 'github_token' is written literally",
    ),
    ("secret-bad-env", target("secrets:\n  github_token: {env: 'not valid'}"), "must be {env: NAME}"),
    ("token-on-target", target("github_token: ghp_abc"), "holds a literal secret"),
    ("token-in-defaults", "defaults:\n  api_key: sk-abc\n" + TARGET, "holds a literal secret"),
    ("event-log-backend", "event_log: {backend: pgsql}\n" + TARGET, "event_log.backend 'pgsql' is unknown"),
    (
        "event-log-dsn-literal",
        "event_log: {backend: postgres, dsn: 'postgres://u:p@h/db'}\n" + TARGET,
        "literally",
    ),
    ("event-log-typo", "event_log: {backnd: postgres}\n" + TARGET, "did you mean backend?"),
    ("kubernetes-namespace", "kubernetes: {namespace: Bad_NS}\n" + TARGET, "kubernetes.namespace must be"),
    ("kubernetes-typo", "kubernetes: {namspace: x}\n" + TARGET, "did you mean namespace?"),
    (
        "kubernetes-seccomp-unknown",
        "kubernetes: {worker_seccomp_profile: Privileged}\n" + TARGET,
        "kubernetes.worker_seccomp_profile must be 'localhost/<path below the kubelet's seccomp root>'",
    ),
    (
        "kubernetes-seccomp-ascending",
        "kubernetes: {worker_seccomp_profile: localhost/../etc/x.json}\n" + TARGET,
        "names a path that is not descending below the kubelet's seccomp root",
    ),
    (
        "kubernetes-apparmor-unknown",
        "kubernetes: {worker_apparmor_profile: unconfined}\n" + TARGET,
        "kubernetes.worker_apparmor_profile must be 'localhost/<loaded profile name>'",
    ),
    ("kubernetes-host-users", "kubernetes: {worker_host_users: 'no'}\n" + TARGET, "must be true or false"),
    ("github-api-url", target("github: {api_url: 'ftp://x'}"), "github.api_url must be an http(s) URL"),
    ("github-timeout-huge", target("github: {timeout_seconds: 100000}"), "github.timeout_seconds must be"),
    (
        "kubernetes-ttl-huge",
        "kubernetes: {ttl_seconds_after_finished: 1e20}\n" + TARGET,
        "kubernetes.ttl_seconds",
    ),
    ("github-typo", target("github: {app_idd: 1}"), "did you mean app_id?"),
    ("resources-bad", target("resources: {cpu: lots}"), "field 'resources' cpu 'lots'"),
    (
        "github-no-credential",
        GITHUB_TARGET,
        "needs a credential",
    ),
    (
        "github-app-without-key",
        GITHUB_TARGET + "    github: {app_id: 1}\n",
        "no secret github_app_private_key is referenced",
    ),
    (
        "github-local-repo",
        target("forge: github\nsecrets: {github_token: {env: T}}"),
        "needs an https repo_url",
    ),
    ("invalid-yaml", "targets:\n  - id: t\n    repo_url: [x\n", ":3:15: invalid YAML"),
    ("duplicate-key", TARGET + "    branch: a\n    branch: b\n", "field 'branch' is given twice"),
    ("nul-byte", TARGET.encode() + b"    branch: ma\x00in\n", "NUL byte"),
    ("not-utf8", TARGET.encode() + b"    branch: caf\xe9\n", "not UTF-8"),
    ("utf16", TARGET.encode("utf-16"), "UTF-16"),
    ("deeply-nested", deep_config(), "nested more than 64 levels"),
]


@pytest.mark.parametrize(
    ("content", "expected"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_bad_config_is_answered_clear(tmp_path: Path, content: str | bytes, expected: str) -> None:
    config = write(tmp_path / "leviathan.yaml", content)
    result = CliRunner().invoke(cli, ["--config", str(config), "--home", str(tmp_path / "home"), "validate"])
    assert_clear(config_problems(result), expected, result.output)
    assert all(problem.startswith(str(config)) for problem in config_problems(result))


def config_problems(result) -> list[str]:
    """The problems a command printed for a bad config: a broken file is exit 2 with ``error:`` lines; a
    target whose own config is broken is exit 1 with that target's problems (the others were served)."""
    assert result.exit_code in (1, 2), result.output  # never 0: nothing invalid is accepted
    if result.exit_code == 2:
        assert result.output.startswith("error: "), result.output
        return result.output.removeprefix("error: ").strip().splitlines()
    return [line.strip() for line in result.output.splitlines() if line.startswith("  ") and ": " in line]


@pytest.mark.parametrize("command", [["tasks"], ["run", "--once"], ["prs", "list"], ["events", "verify"]])
def test_every_command_that_loads_the_config_reports_a_typo(tmp_path: Path, command: list[str]) -> None:
    config = write(tmp_path / "leviathan.yaml", target("test_commnd: [pytest]"))
    result = CliRunner().invoke(cli, ["--config", str(config), "--home", str(tmp_path / "home"), *command])
    # Commands that serve targets exit 1 for the broken one; `events` commands are about the log.
    assert result.exit_code in ((0, 1, 2) if command[0] == "events" else (1, 2)), result.output
    assert "did you mean test_command?" in result.output and "Traceback" not in result.output


# ---- one healthy and one broken target, for every bad backlog ---------------------------------------


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def commit_backlog(repo: Path, content: str | bytes) -> None:
    git(repo.parent, "init", "-q", "-b", "main", repo.name)
    write(repo / BACKLOG_PATH, content)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "backlog")


@pytest.fixture(scope="module")
def healthy_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("healthy") / "healthy"
    commit_backlog(repo, task(id="h1") + task(id="h2", dependencies="[h1]")[7:])
    return repo


def two_targets(root: Path, healthy: Path, broken_url: str) -> Path:
    targets = [{"id": "healthy", "repo_url": str(healthy)}, {"id": "broken", "repo_url": broken_url}]
    return write(root / "leviathan.yaml", yaml.safe_dump({"targets": targets}))


@pytest.mark.parametrize(
    ("content", "expected"), [c[1:] for c in BACKLOG_CASES], ids=[c[0] for c in BACKLOG_CASES]
)
def test_a_broken_backlog_never_stops_a_healthy_target(
    tmp_path: Path, healthy_repo: Path, content: str | bytes, expected: str
) -> None:
    commit_backlog(tmp_path / "broken", content)
    config = load_project_config(two_targets(tmp_path, healthy_repo, str(tmp_path / "broken")))
    home = LeviathanHome(tmp_path / "home")
    plan = plan_cycle(config, home, NdjsonEventLog(home.events_path), utc_now())
    healthy = plan.snapshots["healthy"]
    assert healthy.ok and [r.task_id for r in healthy.readiness] == ["h1", "h2"]
    assert [r.task_id for r in plan.selected] == ["h1"]
    assert set(plan.errors) == {"broken"}
    problems = plan.errors["broken"].splitlines()
    assert_clear(problems, expected, plan.errors["broken"])
    assert all(problem.startswith(f"broken:{BACKLOG_PATH}:") for problem in problems)


BROKEN_REPOSITORIES = [
    ("missing-repository", lambda root: str(root / "nope.git"), "repository .* does not exist"),
    ("not-a-repository", lambda root: str(root), "is not a git repository"),
    ("no-backlog-file", lambda root: _empty_repo(root), "no .leviathan/backlog.yaml"),
]


def _empty_repo(root: Path) -> str:
    repo = root / "empty"
    git(root, "init", "-q", "-b", "main", "empty")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "empty")
    return str(repo)


@pytest.mark.parametrize(
    ("make_url", "expected"), [c[1:] for c in BROKEN_REPOSITORIES], ids=[c[0] for c in BROKEN_REPOSITORIES]
)
def test_a_broken_repository_is_named_and_never_stops_a_healthy_target(
    tmp_path: Path, healthy_repo: Path, make_url, expected: str
) -> None:
    (tmp_path / "broken").mkdir()
    config_path = two_targets(tmp_path, healthy_repo, make_url(tmp_path / "broken"))
    result = CliRunner().invoke(
        cli, ["--config", str(config_path), "--home", str(tmp_path / "home"), "tasks"]
    )
    assert result.exit_code == 1, result.output
    assert re.search(expected, result.output), result.output
    assert "ref 'main' does not exist" not in result.output
    assert re.search(r"h1\s+ready", result.output), result.output


@pytest.mark.parametrize("name", ["id-trailing-newline", "nul-byte", "cycle-of-1000", "generator-unknown"])
def test_cli_commands_report_the_broken_target_and_serve_the_healthy_one(
    tmp_path: Path, healthy_repo: Path, name: str
) -> None:
    content, expected = next(c[1:] for c in BACKLOG_CASES if c[0] == name)
    commit_backlog(tmp_path / "broken", content)
    config = two_targets(tmp_path, healthy_repo, str(tmp_path / "broken"))
    base = ["--config", str(config), "--home", str(tmp_path / "home")]
    tasks = CliRunner().invoke(cli, [*base, "tasks"])
    assert tasks.exit_code == 1 and "Traceback" not in tasks.output
    assert re.search(r"h1\s+ready", tasks.output) and "broken:" in tasks.output
    validate = CliRunner().invoke(cli, [*base, "validate"])
    assert validate.exit_code == 1 and "healthy: valid, 2 tasks" in validate.output
    assert "broken: INVALID" in validate.output and expected in validate.output


def test_unknown_target_option_is_a_usage_error(tmp_path: Path, healthy_repo: Path) -> None:
    config = two_targets(tmp_path, healthy_repo, str(healthy_repo))
    for command in (["tasks", "--target", "nosuch"], ["run", "--once", "--target", "nosuch"]):
        result = CliRunner().invoke(
            cli, ["--config", str(config), "--home", str(tmp_path / "home"), *command]
        )
        assert result.exit_code == 2, result.output
        assert "no target 'nosuch'" in result.output and "targets: healthy, broken" in result.output


SENSOR_CASES = ["cycle-of-1000", "flow-nesting-100000", "nul-byte", "utf16-le", "id-trailing-newline"]


@pytest.mark.dagster
@pytest.mark.parametrize("name", [*SENSOR_CASES, "missing-repository"])
def test_the_scheduling_sensor_serves_the_healthy_target_beside_a_broken_one(
    tmp_path: Path, healthy_repo: Path, name: str
) -> None:
    import dagster as dg

    from leviathan_dagster.defs.attempts.sensors import attempt_sensor
    from leviathan_dagster.defs.platform.resources import LeviathanResource

    broken = tmp_path / "broken"
    if name != "missing-repository":
        commit_backlog(broken, next(c[1] for c in BACKLOG_CASES if c[0] == name))
    config = two_targets(tmp_path, healthy_repo, str(broken))
    leviathan = LeviathanResource(config_path=str(config), home=str(tmp_path / "home"))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, instance_ref=instance.get_ref(), resources={"leviathan": leviathan}
        )
        result = attempt_sensor(context)
    assert [r.run_key for r in result.run_requests] == ["healthy/h1:1"]


def test_prs_list_lists_the_healthy_target_beside_a_broken_forge(
    tmp_path: Path, healthy_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    targets = [
        {"id": "healthy", "repo_url": str(healthy_repo)},
        {
            "id": "hub",
            "repo_url": "https://github.com/acme/service.git",
            "forge": "github",
            "secrets": {"github_token": {"env": "GITHUB_TOKEN"}},
        },
    ]
    config = write(tmp_path / "leviathan.yaml", yaml.safe_dump({"targets": targets}))
    result = CliRunner().invoke(
        cli, ["--config", str(config), "--home", str(tmp_path / "home"), "prs", "list"]
    )
    assert result.exit_code == 1, result.output
    assert "hub: broken:" in result.output and "no pull requests" in result.output
    assert "Traceback" not in result.output


def test_a_1000_task_dependency_chain_is_judged_without_recursion(tmp_path: Path) -> None:
    commit_backlog(
        tmp_path / "long",
        chain(1000, cycle=False).replace("ready: false", "ready: true\n    generator: docs"),
    )
    targets = [{"id": "long", "repo_url": str(tmp_path / "long")}]
    config = load_project_config(write(tmp_path / "leviathan.yaml", yaml.safe_dump({"targets": targets})))
    home = LeviathanHome(tmp_path / "home")
    plan = plan_cycle(config, home, NdjsonEventLog(home.events_path), utc_now())
    assert not plan.errors
    readiness = plan.snapshots["long"].readiness
    assert len(readiness) == 1000 and [r.task_id for r in readiness if r.ready] == ["t0"]
    assert {r.reason for r in readiness if not r.ready} == {"dependency"}


@pytest.mark.dagster
def test_run_once_runs_the_healthy_target_and_exits_1_for_the_broken_one(tmp_path: Path) -> None:
    healthy = tmp_path / "healthy"
    commit_backlog(healthy, task(id="h1", allowed_paths="[docs/h1.md]"))
    commit_backlog(tmp_path / "broken", next(c[1] for c in BACKLOG_CASES if c[0] == "nul-byte"))
    config = two_targets(tmp_path, healthy, str(tmp_path / "broken"))
    base = ["--config", str(config), "--home", str(tmp_path / "home")]
    result = CliRunner().invoke(cli, [*base, "run", "--once"])
    assert result.exit_code == 1, result.output
    assert "target broken is broken" in result.output and "NUL byte" in result.output
    assert re.search(r"ok\s+healthy/h1 #1: PR ", result.output), result.output
    assert "Traceback" not in result.output


def with_healthy_target(content: str | bytes, healthy: Path) -> str | bytes:
    """``content`` with a healthy target appended to its targets list, where the file has one at its end."""
    last = content.rstrip().splitlines()[-1] if isinstance(content, str) and content.strip() else ""
    if not (last.startswith("    ") or last.startswith("  - ")) or "targets:" not in content:
        return content
    try:
        yaml.safe_load(content)
    except yaml.YAMLError:
        return content  # a syntax error stays the file's error
    return content.rstrip("\n") + f"\n  - id: healthy\n    repo_url: {healthy}\n"


@pytest.mark.parametrize(
    ("content", "expected"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_a_broken_target_config_never_stops_a_healthy_target(
    tmp_path: Path, healthy_repo: Path, content: str | bytes, expected: str
) -> None:
    config = write(tmp_path / "leviathan.yaml", with_healthy_target(content, healthy_repo))
    base = ["--config", str(config), "--home", str(tmp_path / "home")]
    validate = CliRunner().invoke(cli, [*base, "validate"])
    result = CliRunner().invoke(cli, [*base, "tasks"])
    assert "Traceback" not in result.output
    if (
        validate.exit_code == 2
    ):  # the file itself is broken (or the target cannot be told apart): nothing runs
        assert result.exit_code == 2
        assert_clear(config_problems(result), expected, result.output)
        return
    assert "healthy: valid, 2 tasks" in validate.output
    assert result.exit_code == 1, result.output
    assert re.search(r"h1\s+ready", result.output), result.output
    assert expected in result.output


@pytest.mark.dagster
def test_the_scheduling_sensor_serves_the_healthy_target_beside_a_broken_target_config(
    tmp_path: Path, healthy_repo: Path
) -> None:
    import dagster as dg

    from leviathan_dagster.defs.attempts.sensors import attempt_sensor
    from leviathan_dagster.defs.platform.resources import LeviathanResource

    content = with_healthy_target(target("test_commnd: [pytest]\nbranch: 'main\\n'"), healthy_repo)
    config = write(tmp_path / "leviathan.yaml", content)
    leviathan = LeviathanResource(config_path=str(config), home=str(tmp_path / "home"))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, instance_ref=instance.get_ref(), resources={"leviathan": leviathan}
        )
        result = attempt_sensor(context)
    assert [r.run_key for r in result.run_requests] == ["healthy/h1:1"]
    with pytest.raises(ConfigError, match="(?s)target 't' has an invalid config:.*did you mean test_command"):
        leviathan.target("t")


@pytest.mark.dagster
def test_run_once_opens_the_healthy_targets_pr_beside_a_broken_target_config(tmp_path: Path) -> None:
    healthy = tmp_path / "healthy"
    commit_backlog(healthy, task(id="h1", allowed_paths="[docs/h1.md]"))
    config = write(tmp_path / "leviathan.yaml", with_healthy_target(target("test_commnd: [pytest]"), healthy))
    result = CliRunner().invoke(
        cli, ["--config", str(config), "--home", str(tmp_path / "home"), "run", "--once"]
    )
    assert result.exit_code == 1, result.output
    assert "target t is broken" in result.output and "did you mean test_command?" in result.output
    # The worker reads the same config: another target's problem must not fail this attempt.
    assert re.search(r"ok\s+healthy/h1 #1: PR ", result.output), result.output
