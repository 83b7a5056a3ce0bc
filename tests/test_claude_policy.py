"""The Claude generator's guardrails in isolation: scope of every tool call, the budget arithmetic, settings,
task-text hygiene, strict templates, the policy keys, the daily budget in readiness, and the double itself."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import anthropic
import jinja2
import pytest
from anthropic_double import AnthropicDouble, reply, text

from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.config.project import parse_project_config
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.generators.claude import prompts as claude_prompts
from leviathan_dagster.core.generators.claude.budget import Budget
from leviathan_dagster.core.generators.claude.client import ClaudeSettings
from leviathan_dagster.core.generators.claude.stops import BudgetExhausted
from leviathan_dagster.core.generators.claude.tools import (
    OutOfScope,
    OutOfWorkspace,
    ScopedWorkspace,
    ToolError,
)
from leviathan_dagster.core.generators.usage import CallUsage, UsageRecorder
from leviathan_dagster.core.models import Backlog, Policy, TargetConfig, Task
from leviathan_dagster.core.scheduling.readiness import evaluate_target


@pytest.fixture
def scoped(tmp_path: Path) -> ScopedWorkspace:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/a.py").write_text("A = 1\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src/core.py").write_text("def core():\n    return 1\n")
    (tmp_path / "outside.txt").write_text("secret\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git/config").write_text("[core]\n")
    os.symlink(tmp_path / "outside.txt", tmp_path / "lib/link.py")
    os.symlink("/etc", tmp_path / "lib/etc")
    os.symlink(tmp_path / ".git", tmp_path / "lib/gitdir")
    return ScopedWorkspace(tmp_path, ("lib/", ".leviathan/backlog.yaml"), ("lib/", ".leviathan/"))


@pytest.mark.parametrize(
    "path",
    ["outside.txt", "src/core.py", "lib2/a.py", "lib/link.py", "/repo/src/core.py", "lib/../outside.txt"],
)
def test_every_write_outside_the_scope_is_refused_and_touches_nothing(
    scoped: ScopedWorkspace, path: str
) -> None:
    before = {p: p.read_bytes() for p in scoped.root.rglob("*") if p.is_file() and not p.is_symlink()}
    for call in (
        lambda: scoped.editor("create", path=path, file_text="x"),
        lambda: scoped.editor("str_replace", path=path, old_str="1", new_str="2"),
        lambda: scoped.editor("insert", path=path, insert_line=0, insert_text="x"),
        lambda: scoped.delete_file(path),
    ):
        with pytest.raises(OutOfScope, match="write refused"):
            call()
    assert scoped.written == set()
    assert before == {p: p.read_bytes() for p in scoped.root.rglob("*") if p.is_file() and not p.is_symlink()}


def test_reads_reach_the_whole_checkout_but_not_git_or_a_symlink_out(scoped: ScopedWorkspace) -> None:
    assert "def core" in scoped.view("src/core.py") and "def core" in scoped.view("/repo/src/core.py")
    assert scoped.view("outside.txt") == "     1\tsecret"
    assert scoped.view("src/core.py", view_range=[2, -1]) == "     2\t    return 1"
    for path in ("../x", "/etc/passwd", ".git/config", "lib/etc/passwd", "lib/gitdir/config", "LIB/../../x"):
        with pytest.raises(OutOfWorkspace):
            scoped.view(path)
    with pytest.raises(ToolError, match="view_range"):
        scoped.view("src/core.py", view_range=[5, 9])


def test_scope_allows_its_paths_and_never_the_backlog(scoped: ScopedWorkspace) -> None:
    assert (
        scoped.editor("create", path="./lib/new/b.py", file_text="B = 2\n") == "wrote lib/new/b.py (6 bytes)"
    )
    assert scoped.editor("insert", path="lib/a.py", insert_line=1, insert_text="C = 3") == (
        "edited lib/a.py: inserted after line 1"
    )
    assert (scoped.root / "lib/a.py").read_text() == "A = 1\nC = 3\n"
    with pytest.raises(OutOfScope, match="backlog"):
        scoped.editor("create", path=".leviathan/backlog.yaml", file_text="tasks: []\n")
    with pytest.raises(ToolError, match="exactly once"):
        scoped.editor("str_replace", path="lib/a.py", old_str="missing", new_str="x")
    with pytest.raises(ToolError, match="unknown command"):
        scoped.editor("undo_edit", path="lib/a.py")
    assert scoped.written == {"lib/new/b.py", "lib/a.py"}


def call(tokens_in: int, tokens_out: int, cache_write: int = 0, cache_read: int = 0) -> CallUsage:
    return CallUsage("m", tokens_in, tokens_out, cache_write, cache_read, 0.1, "tool_use", "0" * 64)


def spend(usage: UsageRecorder, budget: Budget, made: CallUsage, chars: int) -> None:
    """What the loop does after a call."""
    usage.record(made, usd=budget.observe(made, chars), billed_tokens=budget.billed_tokens(made))


def test_budget_lowers_max_tokens_then_stops_before_a_call_that_could_exceed_it() -> None:
    usage = UsageRecorder()
    budget = Budget(Policy(max_tokens_per_attempt=10_000), usage, "claude-sonnet-4-6", max_output_tokens=4096)
    assert budget.allowance(3_000) == 4096  # ~1,000 input tokens: the full max_tokens fits
    first = call(1_000, 2_000)
    spend(usage, budget, first, 9_000)
    # 3,000 spent; the next input is the 3,000 known + 300 new chars / 3 = 3,100: 3,900 left for output.
    assert budget.allowance(9_300) == 3_900
    second = call(3_100, 3_000)
    spend(usage, budget, second, 30_000)
    with pytest.raises(BudgetExhausted, match="before call 3"):
        budget.allowance(30_000)


def test_token_budget_counts_cache_reads_and_writes_at_the_models_rates() -> None:
    usage = UsageRecorder()
    budget = Budget(
        Policy(max_tokens_per_attempt=300_000), usage, "claude-sonnet-4-6", max_output_tokens=4096
    )
    cached = call(100, 1_000, cache_write=2_000, cache_read=200_000)  # 200k read at 0.1x: 20k
    spend(usage, budget, cached, 30_000)
    assert usage.summary()["billed_tokens"] == 100 + 1_000 + 2_500 + 20_000
    assert usage.total_tokens == 203_100  # every token processed, as before
    # 23,600 billed + the next call's whole prompt at full price (the cache may have expired) fits;
    # counting the 200k cache reads as spent would not.
    assert budget.allowance(30_000) == 4096
    fable = Budget(Policy(max_tokens_per_attempt=10**6), UsageRecorder(), "claude-fable-5-1", 4096)
    assert fable.billed_tokens(call(0, 0, cache_read=1_000)) == pytest.approx(25.0)  # 0.025x
    unpriced = Budget(Policy(), UsageRecorder(), "some-gateway-model", 4096)
    assert unpriced.billed_tokens(call(0, 0, cache_write=100, cache_read=1_000)) == pytest.approx(225.0)


def test_usd_budget_needs_a_priced_model_and_stops_on_dollars() -> None:
    with pytest.raises(ConfigError, match="no price"):
        Budget(Policy(max_usd_per_attempt=1.0), UsageRecorder(), "gpt-4", max_output_tokens=4096)
    usage = UsageRecorder()
    budget = Budget(Policy(max_usd_per_attempt=0.05), usage, "claude-sonnet-4-6", max_output_tokens=4096)
    first = call(10_000, 1_000)  # $0.03 + $0.015 = $0.045
    spend(usage, budget, first, 30_000)
    assert usage.usd == pytest.approx(0.045)
    with pytest.raises(BudgetExhausted, match="max_usd_per_attempt"):
        budget.allowance(30_000)


def test_settings_come_from_the_environment_and_never_show_the_key() -> None:
    with pytest.raises(ConfigError, match="LEVIATHAN_CLAUDE_API_KEY, LEVIATHAN_CLAUDE_MODEL"):
        ClaudeSettings.from_environ({})
    env = {"LEVIATHAN_CLAUDE_API_KEY": "sk-ant-secret", "LEVIATHAN_CLAUDE_MODEL": "claude-sonnet-4-6"}
    settings = ClaudeSettings.from_environ({**env, "LEVIATHAN_CLAUDE_MAX_TURNS": "7"})
    assert settings.max_turns == 7 and "sk-ant-secret" not in repr(settings)
    with pytest.raises(ConfigError, match="LEVIATHAN_CLAUDE_MAX_RETRIES must be"):
        ClaudeSettings.from_environ({**env, "LEVIATHAN_CLAUDE_MAX_RETRIES": "many"})
    with pytest.raises(ConfigError, match="BASE_URL"):
        ClaudeSettings.from_environ({**env, "LEVIATHAN_CLAUDE_BASE_URL": "ftp://x"})
    assert ClaudeSettings.from_environ(env).thinking is None
    for raw, parsed in (("adaptive", "adaptive"), ("OFF", "off"), ("4096", 4096)):
        assert (
            ClaudeSettings.from_environ({**env, "LEVIATHAN_CLAUDE_THINKING_BUDGET": raw}).thinking == parsed
        )
    with pytest.raises(
        ConfigError, match="THINKING_BUDGET must be 'adaptive', 'off' or a number of tokens >= 1024"
    ):
        ClaudeSettings.from_environ({**env, "LEVIATHAN_CLAUDE_THINKING_BUDGET": "512"})


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("a\u200bb\u200c\u200d\u2060\ufeffc", "abc"),
        ("keep <!-- hidden --> this", "keep  this"),
        ("<!-<!-- x -->- nested -->ok", "ok"),
        ("<!\u200b-- zero-width opener -->ok", "ok"),
        ("tail <!-- never closed", "tail "),
        ("tags \U000e0049\U000e0047\U000e004e", "tags "),
        ("\u202eevil bidi\u202c", "evil bidi"),
    ],
)
def test_task_text_is_cleaned(raw: str, clean: str) -> None:
    assert claude_prompts.clean_task_text(raw) == clean


def test_templates_refuse_undefined_variables_and_carry_a_version() -> None:
    with pytest.raises(jinja2.UndefinedError):
        claude_prompts.render("system.txt", allowed_paths=["lib/"])
    assert claude_prompts.template_version().startswith("claude-rewrite/")


def test_policy_keys_parse_with_their_defaults_and_errors(tmp_path: Path) -> None:
    def parse(policy: str):
        text = f"targets:\n  - id: t\n    repo_url: ./t.git\n    policy:\n{policy}"
        return parse_project_config(text, "leviathan.yaml", base_dir=tmp_path).targets[0].policy

    default = parse("      max_open_prs: 1\n")
    assert (default.max_repair_rounds, default.max_tokens_per_attempt) == (2, 500_000)
    assert default.max_usd_per_attempt is None and default.daily_token_budget is None
    policy = parse(
        "      max_repair_rounds: 0\n      max_tokens_per_attempt: 20000\n"
        "      max_usd_per_attempt: 1.5\n      daily_token_budget: 100000\n"
    )
    assert (policy.max_repair_rounds, policy.max_tokens_per_attempt) == (0, 20_000)
    assert (policy.max_usd_per_attempt, policy.daily_token_budget) == (1.5, 100_000)
    with pytest.raises(
        ConfigError, match=r"leviathan.yaml:5: .*'max_usd_per_attempt' must be a number from 0.01"
    ):
        parse("      max_usd_per_attempt: free\n")


def test_daily_token_budget_holds_back_model_tasks_only(tmp_path: Path) -> None:
    ids = {"target_id": "t", "task_id": "old"}
    spent = [
        lifecycle.attempt_created(
            attempt_id="a1", attempt_number=1, branch_name="b", executor="local", actor_id="x", **ids
        ),
        lifecycle.attempt_failed(
            attempt_id="a1",
            failure_type="tests_failed",
            error_summary="",
            actor_id="x",
            usage={"total_tokens": 70_000},
            **ids,
        ),
    ]
    log = NdjsonEventLog(tmp_path / "events.ndjson")
    log.append(spent)
    ledger = AttemptLedger.from_events(log.read())
    today = datetime.now(UTC)
    assert ledger.tokens_on("t", today.date()) == 70_000
    tasks = (
        Task(id="model", title="m", ready=True, allowed_paths=("docs/x.md",), generator="claude"),
        Task(id="doc", title="d", ready=True, allowed_paths=("docs/y.md",), generator="docs"),
    )
    policy = Policy(max_tokens_per_attempt=40_000, daily_token_budget=100_000, max_open_prs=5)
    target = TargetConfig(id="t", repo_url="x", policy=policy)
    by_task = {r.task_id: r for r in evaluate_target(target, Backlog("b", tasks), ledger, [], today)}
    assert by_task["model"].reason == "daily_budget" and "70000 tokens spent today" in by_task["model"].detail
    assert by_task["doc"].ready
    roomy = TargetConfig(
        id="t", repo_url="x", policy=Policy(max_tokens_per_attempt=30_000, **_limits(policy))
    )
    assert all(r.ready for r in evaluate_target(roomy, Backlog("b", tasks), ledger, [], today))


def _limits(policy: Policy) -> dict:
    return {"daily_token_budget": policy.daily_token_budget, "max_open_prs": 5, "max_running_attempts": 2}


def test_the_double_rejects_what_the_real_api_rejects() -> None:
    with (
        AnthropicDouble([reply(text("unused"))]) as api,
        # Closed with the test: an SDK client keeps its connections open until it is.
        anthropic.Anthropic(api_key=api.api_key, base_url=api.base_url, max_retries=0) as client,
        anthropic.Anthropic(api_key="sk-wrong", base_url=api.base_url, max_retries=0) as wrong_key,
    ):
        orphan = {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "r"}],
        }
        with pytest.raises(anthropic.BadRequestError, match="tool_use_id"):
            client.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=[orphan])
        with pytest.raises(anthropic.BadRequestError, match="alternate"):
            client.messages.create(
                model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "assistant", "content": "x"}]
            )
        with pytest.raises(anthropic.AuthenticationError):
            wrong_key.messages.create(
                model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )
        message = client.messages.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert message.content[0].text == "unused" and message.stop_reason == "end_turn"
    assert message._request_id.startswith("req_double_") and message.usage.input_tokens > 0


def test_the_double_answers_size_limits_and_account_errors_like_the_real_api() -> None:
    from anthropic_double import Status

    ask = [{"role": "user", "content": "x" * 4_000}]
    script = [reply(text("unused")), Status(402, message="Your credit balance is too low.")]
    with AnthropicDouble(script, context_window=500, max_request_bytes=3_000) as api:
        client = anthropic.Anthropic(api_key=api.api_key, base_url=api.base_url, max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as too_big:
            client.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=ask)
        assert too_big.value.status_code == 413 and too_big.value.type == "request_too_large"
        long = [{"role": "user", "content": "y" * 2_400}]  # ~600 tokens > a 500-token window
        with pytest.raises(anthropic.BadRequestError, match=r"prompt is too long: \d+ tokens > 500 maximum"):
            client.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=long)
        with pytest.raises(anthropic.PaymentRequiredError) as billing:
            client.messages.create(
                model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
        client.close()
    error = billing.value
    assert error.type == "billing_error" and error.request_id.startswith("req_double_")
    assert (
        error.body["request_id"] == error.request_id
        and error.api_message == "Your credit balance is too low."
    )


def test_find_files_and_grep_search_the_whole_checkout_with_caps(tmp_path: Path) -> None:
    import subprocess

    from leviathan_dagster.core.generators.claude.search import find_files, grep

    files = {
        "src/pkg/core.py": "import os\n\n\ndef core():\n    return os.sep\n",
        "src/pkg/util.py": "".join(f"def helper_{i}():\n    return {i}\n" for i in range(30)),
        "docs/core.md": "# core\n",
        "build/out.py": "def core():\n    pass\n",  # ignored by .gitignore: not searched
        ".gitignore": "build/\n",
    }
    for path, content in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(content)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".git/HEAD.py").write_text("def core(): pass\n")  # inside .git: never searched
    workspace = ScopedWorkspace(tmp_path, ("docs/core.md",), ("docs/",))
    assert find_files(workspace, "*.py") == "src/pkg/core.py\nsrc/pkg/util.py"
    assert find_files(workspace, "src/**/*.md") == "no files match 'src/**/*.md'"
    assert grep(workspace, r"def core", context_lines=1) == (
        "src/pkg/core.py-3-\nsrc/pkg/core.py:4:def core():\nsrc/pkg/core.py-5-    return os.sep"
    )
    capped = grep(workspace, r"def helper_\d+", glob="src/**", max_results=3).splitlines()
    assert len(capped) == 4 and capped[-1].startswith("[... stopped at max_results=3")
    assert grep(workspace, "CORE", glob="*.md", ignore_case=True) == "docs/core.md:1:# core"
    with pytest.raises(ToolError, match="not a valid regular expression"):
        grep(workspace, "def (")
    with pytest.raises(ToolError, match="context_lines"):
        grep(workspace, "x", context_lines=99)
