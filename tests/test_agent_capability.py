"""Can the coding agent do the job? Scripted trajectories like a competent agent's, through the real SDK
and the Messages double, on a realistic repository (a package of several modules, its tests, docs and a
README), each ending in a PR by ``python -m worker``; and every escape refused with nothing pushed.

The bash tests need the sandbox (bubblewrap with user namespaces), which ``make test`` machines have; a
machine without it fails them with what is missing, as the sandbox's own tests do.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from anthropic_double import AnthropicDouble, reply, text, tool_use
from support import Project, backlog_yaml, make_project, run_worker
from test_claude_generator import MODEL, edit, ended

from leviathan_dagster.core.forge.local import LocalForge

MODULES = {
    "inventory/__init__.py": '"""Stock keeping for a small shop."""\n',
    "inventory/models.py": (
        "from dataclasses import dataclass\n\n\n@dataclass(frozen=True)\nclass Item:\n"
        "    sku: str\n    price_cents: int\n    quantity: int\n"
    ),
    "inventory/pricing.py": (
        "from inventory.models import Item\n\n\n"
        "def apply_discount(item: Item, percent: int) -> int:\n"
        '    """The price of ``item`` in cents after ``percent`` off, rounded down."""\n'
        "    return item.price_cents * percent // 100\n\n\n"
        "def stock_value(items: list[Item]) -> int:\n"
        "    return sum(i.price_cents * i.quantity for i in items)\n"
    ),
    "inventory/storage.py": (
        "import json\n\nfrom inventory.models import Item\n\n\n"
        "def load(text: str) -> list[Item]:\n    return [Item(**row) for row in json.loads(text)]\n"
    ),
    "tests/__init__.py": "",
    "tests/test_pricing.py": (
        "from inventory.models import Item\nfrom inventory.pricing import stock_value\n\n\n"
        "def test_stock_value():\n    assert stock_value([Item('a', 100, 3), Item('b', 50, 2)]) == 400\n"
    ),
    "tests/test_storage.py": (
        "from inventory.storage import load\n\n\n"
        "def test_load():\n"
        '    assert load(\'[{"sku": "a", "price_cents": 1, "quantity": 2}]\')[0].sku == "a"\n'
    ),
    "docs/pricing.md": "# Pricing\n\nTODO: document the pricing functions.\n",
    "docs/storage.md": "# Storage\n\nItems are loaded from JSON.\n",
    "README.md": "# inventory\n\nStock keeping. See docs/.\n",
    "pyproject.toml": '[project]\nname = "inventory"\nversion = "0.1.0"\n\n[tool.ruff.lint]\nselect = ["F"]\n'
    "",
}
FIXED = "    return item.price_cents * (100 - percent) // 100\n"
BUGGY = "    return item.price_cents * percent // 100\n"
OUTSIDE_SECRET = "host secret 7f3a\n"
IMPORT_LINE = "from inventory.pricing import stock_value\n"
TEST_DISCOUNT = (
    "from inventory.pricing import apply_discount\n\n\n"
    "def test_discount():\n    assert apply_discount(Item('a', 1000, 1), 25) == 750\n"
)


def task(task_id: str, allowed: list[str], title: str) -> dict:
    return {"id": task_id, "title": title, "ready": True, "executor": "claude", "allowed_paths": allowed}


TASKS = [
    task("doc-pricing", ["docs/pricing.md"], "Document the pricing module"),
    task("fix-discount", ["inventory/pricing.py", "tests/test_pricing.py"], "apply_discount must subtract"),
    task("meta", [".leviathan/", "docs/new.md"], "Tidy the docs index"),
]


def shop(tmp_path: Path) -> Project:
    files = {".leviathan/backlog.yaml": backlog_yaml(*TASKS), **MODULES}
    project = make_project(
        tmp_path,
        {
            "shop": {
                "files": files,
                "test_command": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                "policy": {"allowed_path_prefixes": [".leviathan/", "docs/", "inventory/", "tests/"]},
            }
        },
    )
    # A symlink committed into docs/ that leads out of the checkout (a hostile repository can do that).
    (tmp_path / "secret.txt").write_text(OUTSIDE_SECRET)
    clone = tmp_path / "clone"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "clone", "-q", str(project.repo("shop")), str(clone)], check=True)
    (clone / "docs/outside.md").symlink_to(tmp_path / "secret.txt")
    subprocess.run(["git", "add", "-A"], cwd=clone, check=True)
    subprocess.run([*git, "commit", "-qm", "link"], cwd=clone, check=True)
    subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=clone, check=True)
    return project


def run_agent(project: Project, api: AnthropicDouble, task_id: str, attempt_id: str):
    return run_worker(
        project,
        "shop",
        task_id,
        attempt_id,
        LEVIATHAN_CLAUDE_API_KEY=api.api_key,
        LEVIATHAN_CLAUDE_MODEL=MODEL,
        LEVIATHAN_CLAUDE_BASE_URL=api.base_url,
        LEVIATHAN_CLAUDE_RETRY_INITIAL_SECONDS="0.01",
    )


def results(body: dict) -> list[dict]:
    return [b for b in body["messages"][-1]["content"] if b.get("type") == "tool_result"]


def the_pr(project: Project):
    [pr] = LocalForge("shop", str(project.repo("shop")), project.home.root).list_pull_requests("open")
    return pr


def changed_files(project: Project, branch: str) -> list[str]:
    out = subprocess.run(
        ["git", "diff", "--name-only", "main", branch],
        cwd=project.repo("shop"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def test_documenting_a_module_reads_outside_the_allowed_paths_and_ends_in_a_pr(tmp_path: Path) -> None:
    project = shop(tmp_path)

    def found(body: dict):
        [hit] = results(body)
        assert "inventory/pricing.py:4:def apply_discount" in hit["content"], hit
        return reply(edit("view", path="inventory/pricing.py"), edit("view", path="docs/pricing.md"))

    def read_both(body: dict):
        source, doc = results(body)
        assert "rounded down" in source["content"] and "TODO" in doc["content"], (source, doc)
        new = "`apply_discount(item, percent)`: the price in cents after `percent` off, rounded down.\n"
        return reply(
            edit(
                "str_replace",
                path="docs/pricing.md",
                old_str="TODO: document the pricing functions.\n",
                new_str=new,
            )
        )

    script = [
        reply(tool_use("grep", pattern=r"def apply_discount", glob="*.py", context_lines=1)),
        found,
        read_both,
        reply(text("Documented apply_discount.")),
    ]
    with AnthropicDouble(script) as api:
        proc = run_agent(project, api, "doc-pricing", "attempt-doc")
    assert api.errors == [], api.errors
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pr = the_pr(project)
    assert changed_files(project, pr.head) == [".leviathan/backlog.yaml", "docs/pricing.md"]
    assert "rounded down" in project.show("shop", pr.head, "docs/pricing.md")


def test_fixing_a_bug_searches_edits_lints_through_bash_repairs_and_ends_in_a_pr(tmp_path: Path) -> None:
    project = shop(tmp_path)
    lint = f"{sys.executable} -m ruff check --no-cache inventory/pricing.py"

    def listed(body: dict):
        [files] = results(body)
        assert "inventory/storage.py" in files["content"] and "tests/test_pricing.py" in files["content"]
        return reply(edit("view", path="inventory/pricing.py", view_range=[4, 6]))

    def viewed(body: dict):
        [source] = results(body)
        assert "percent // 100" in source["content"], source
        # A careless first edit: right fix, plus an unused import the linter will catch.
        return reply(
            edit("str_replace", path="inventory/pricing.py", old_str=BUGGY, new_str=FIXED),
            edit("insert", path="inventory/pricing.py", insert_line=0, insert_text="import math"),
        )

    def lints(body: dict):
        assert all("is_error" not in r for r in results(body)), results(body)
        return reply(tool_use("bash", command=lint))

    def linted(body: dict):
        [out] = results(body)
        assert "F401" in out["content"] and "exit code 1" in out["content"], out
        assert "fresh sandboxed shell" in out["content"]
        wrong = TEST_DISCOUNT.replace("750", "250")  # a wrong expectation: the tests will say so
        return reply(
            edit("str_replace", path="inventory/pricing.py", old_str="import math\n", new_str=""),
            edit(
                "str_replace", path="tests/test_pricing.py", old_str=IMPORT_LINE, new_str=IMPORT_LINE + wrong
            ),
            tool_use("run_tests"),
        )

    def failed(body: dict):
        *_, out = results(body)
        assert out["content"].startswith("exit code 1") and "250" in out["content"], out
        return reply(edit("str_replace", path="tests/test_pricing.py", old_str="== 250", new_str="== 750"))

    def tested(body: dict):
        [out] = results(body)
        assert out["content"].startswith("exit code 0") and "3 passed" in out["content"], out
        return reply(text("Fixed apply_discount and tested it."))

    script = [
        reply(tool_use("find_files", pattern="*.py")),
        listed,
        viewed,
        lints,
        linted,
        failed,
        reply(tool_use("run_tests")),
        tested,
    ]
    with AnthropicDouble(script) as api:
        proc = run_agent(project, api, "fix-discount", "attempt-fix")
    assert api.errors == [], api.errors
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pr = the_pr(project)
    touched = ["inventory/pricing.py", "tests/test_pricing.py"]
    assert changed_files(project, pr.head) == [".leviathan/backlog.yaml", *touched]
    fixed = project.show("shop", pr.head, "inventory/pricing.py")
    assert FIXED in fixed and "import math" not in fixed
    assert "== 750" in project.show("shop", pr.head, "tests/test_pricing.py")
    record = json.loads((project.home.artifacts_dir("attempt-fix") / "generator.json").read_text())
    assert record["files"] == touched
    usage = ended(project, "attempt-fix")["usage"]
    assert usage["calls"] == 8 and usage["cache_read_input_tokens"] > usage["input_tokens"]


ESCAPES = {
    # name: (the escape, what a refusal says)
    "editor-write-out-of-scope": (
        edit("create", path="inventory/storage.py", file_text="HACKED\n"),
        "write refused",
    ),
    "editor-symlink-out": (edit("create", path="docs/outside.md", file_text="HACKED\n"), "outside"),
    "editor-read-symlink-out": (edit("view", path="docs/outside.md"), "resolves outside the repository"),
    "editor-git-hooks": (edit("create", path=".git/hooks/pre-commit", file_text="#!/bin/sh\n"), "git"),
    "editor-backlog": (
        edit("str_replace", path=".leviathan/backlog.yaml", old_str="ready: true", new_str="ready: false"),
        "backlog",
    ),
    "bash-write-out-of-scope": (tool_use("bash", command="echo HACKED > inventory/storage.py"), "Read-only"),
    "bash-new-file-beside-scope": (tool_use("bash", command="echo HACKED > docs/other.md"), "reverted"),
    "bash-git-hooks": (tool_use("bash", command="echo HACKED > .git/hooks/pre-commit"), "Read-only"),
    "bash-backlog": (tool_use("bash", command="echo HACKED >> .leviathan/backlog.yaml"), "reverted"),
    # The link's target is not in the sandbox: nothing to read, and a write lands in its private /tmp.
    "bash-symlink-out": (
        tool_use("bash", command="cat docs/outside.md; echo HACKED > docs/outside.md"),
        "No such file or directory",
    ),
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_every_escape_is_refused_and_nothing_is_pushed(tmp_path: Path, name: str) -> None:
    project = shop(tmp_path)
    escape, refusal = ESCAPES[name]

    def refused(body: dict):
        [result] = results(body)
        assert refusal in result["content"], result
        assert OUTSIDE_SECRET.strip() not in result["content"]  # not even read through the symlink
        return reply(text("I may not do that."))

    with AnthropicDouble([reply(escape), refused]) as api:
        proc = run_agent(project, api, "meta", f"attempt-{name}")
    assert api.errors == [], api.errors
    outcome = ended(project, f"attempt-{name}")
    assert outcome["failure_type"] == "no_changes", outcome
    agent = outcome["usage"]["agent"]  # the attempt's record, in its terminal event
    assert agent["bash"] == "sandboxed" and agent["stop"] == "NoChanges"
    if name.startswith("editor-"):
        kind = "read_out_of_workspace" if "-read-" in name else "write_out_of_scope"
        assert agent["refused"] == {kind: 1}, agent
    assert_nothing_pushed_to(project)
    assert (tmp_path / "secret.txt").read_text() == OUTSIDE_SECRET
    assert proc.returncode != 0


def assert_nothing_pushed_to(project: Project) -> None:
    assert project.branches("shop") == ["main"]
    assert LocalForge("shop", str(project.repo("shop")), project.home.root).list_pull_requests("all") == []


def test_an_escape_next_to_a_real_change_never_reaches_the_commit(tmp_path: Path) -> None:
    project = shop(tmp_path)
    script = [
        reply(
            tool_use("bash", command="echo HACKED > docs/other.md; echo HACKED >> .leviathan/backlog.yaml"),
            edit("create", path="docs/new.md", file_text="# Index\n\n- pricing\n- storage\n"),
        ),
        reply(text("Added the index.")),
    ]
    with AnthropicDouble(script) as api:
        proc = run_agent(project, api, "meta", "attempt-mixed")
    assert api.errors == [] and proc.returncode == 0, proc.stdout + proc.stderr
    pr = the_pr(project)
    assert changed_files(project, pr.head) == [".leviathan/backlog.yaml", "docs/new.md"]
    assert "HACKED" not in project.show("shop", pr.head, ".leviathan/backlog.yaml")


# -- bash in the sandbox, in process ---------------------------------------------------------------------
def bash_run(tmp_path: Path, command: str) -> str:
    """The result the model gets for one bash command in a workspace of the shop."""
    from leviathan_dagster.core.generators.base import GenerationContext
    from leviathan_dagster.core.generators.claude.bash import SandboxedBash
    from leviathan_dagster.core.generators.claude.settings import ClaudeSettings
    from leviathan_dagster.core.generators.claude.tools import ScopedWorkspace

    root = tmp_path / "ws"
    for path, content in MODULES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=root, check=True)
    workspace = ScopedWorkspace(root, ("docs/pricing.md",), ("docs/",))
    settings = ClaudeSettings(api_key="sk-ant-test", model=MODEL, bash_timeout_seconds=2)
    bash = SandboxedBash(workspace, GenerationContext(), settings)
    return bash.run({"command": command}), workspace


def test_bash_sees_no_credential(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LEVIATHAN_CLAUDE_API_KEY", "sk-ant-do-not-leak")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_do_not_leak")
    output, _ = bash_run(tmp_path, "env; cat ~/.git-credentials 2>&1; echo done")
    assert "do_not_leak" not in output and "do-not-leak" not in output and "done" in output


def test_bash_cannot_open_a_socket(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        output, _ = bash_run(
            tmp_path,
            f"{sys.executable} -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 2)\"",
        )
    finally:
        server.close()
    assert "exit code 1" in output and ("Connection refused" in output or "unreachable" in output), output


def test_bash_times_out_kills_the_command_and_accepts_restart(tmp_path: Path) -> None:
    output, workspace = bash_run(tmp_path, "echo begun; sleep 30")
    assert "begun" in output and "timed out after 2s (killed)" in output
    from leviathan_dagster.core.generators.base import GenerationContext
    from leviathan_dagster.core.generators.claude.bash import SandboxedBash
    from leviathan_dagster.core.generators.claude.settings import ClaudeSettings

    bash = SandboxedBash(workspace, GenerationContext(), ClaudeSettings(api_key="k", model=MODEL))
    assert bash.run({"restart": True}).startswith("shell restarted (each command runs in a fresh")


def test_bash_leaves_no_background_process_and_its_late_write_never_lands(tmp_path: Path) -> None:
    output, workspace = bash_run(
        tmp_path, "(sleep 1; echo LATE >> docs/pricing.md) >/dev/null 2>&1 & echo started"
    )
    assert "started" in output and "exit code 0" in output
    time.sleep(2)
    assert "LATE" not in (workspace.root / "docs/pricing.md").read_text()


def test_bash_writes_in_scope_count_as_the_models_edits(tmp_path: Path) -> None:
    output, workspace = bash_run(
        tmp_path, "echo '- apply_discount' >> docs/pricing.md && echo x > docs/storage.md"
    )
    assert "exit code 1" in output or "Read-only" in output  # docs/storage.md is not the task's
    assert workspace.written == {"docs/pricing.md"}
    assert (workspace.root / "docs/storage.md").read_text() == MODULES["docs/storage.md"]
