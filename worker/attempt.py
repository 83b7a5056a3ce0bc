"""One attempt, start to finish: clone, generate, check policy on the actual diff, test, write back the
backlog, commit, push, open the PR, record events and artifacts.

Every way an attempt can end is an ``AttemptFailure`` with its failure type (or success); the record is
written in ``finally`` so a failing worker always leaves consistent events and artifacts.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from leviathan_dagster.core import failures as ft
from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.attempts.artifacts import ArtifactDir
from leviathan_dagster.core.attempts.path_policy import ChangedPath, check_changed_paths, list_changed_paths
from leviathan_dagster.core.backlog.document import parse_backlog, write_back_completion
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.errors import (
    ConfigError,
    GeneratorError,
    LeviathanError,
    PolicyViolation,
    TransientError,
)
from leviathan_dagster.core.events.model import format_timestamp, utc_now
from leviathan_dagster.core.failures import EXIT_CODES
from leviathan_dagster.core.forge.base import Forge
from leviathan_dagster.core.forge.registry import forge_for
from leviathan_dagster.core.forge.reviewers import reviewers_from_task
from leviathan_dagster.core.generators.base import GenerationContext, GenerationStopped
from leviathan_dagster.core.generators.registry import generator_name_for, get_generator
from leviathan_dagster.core.generators.usage import UsageRecorder
from leviathan_dagster.core.git import commands as gitutil
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import BACKLOG_PATH, ProjectConfig, TargetConfig, Task, branch_name_for
from leviathan_dagster.core.redaction import RedactingFilter, redact, register_environment_secrets
from leviathan_dagster.core.sandbox import SandboxUnavailable, run_sandboxed
from leviathan_dagster.core.sandbox import files as workspace_files
from worker import checked_commit, pull_request
from worker.environment import WorkerEnv, sanitized_environment
from worker.event_sink import local_log_config, sink_for
from worker.sandbox_probe import probe_sandbox

log = logging.getLogger("leviathan.worker")

RESULT_FILE = "result.json"
DIFF_FILE = "diff.patch"


class AttemptFailure(Exception):
    def __init__(self, failure_type: str, summary: str) -> None:
        super().__init__(summary)
        self.failure_type = failure_type
        self.summary = summary


@dataclass
class Outcome:
    status: str = "failed"
    failure_type: str | None = None
    summary: str = ""
    details: dict = field(default_factory=dict)
    # Model token totals (generator, calls, tokens, model, template version, prompt hash, usd).
    usage: dict | None = None


def main() -> int:
    # Every credential this process holds is redacted by value from here on (events, artifacts, logs).
    register_environment_secrets(os.environ)
    try:
        env = WorkerEnv.from_environ()
        home = LeviathanHome(env.home)
        # Read once: the local event log's settings and the target both come from it.
        project = local_log_config(env)
        events = sink_for(env, home, project)
    except ConfigError as exc:
        print(f"worker: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    actor = f"worker-{env.attempt_id}"
    ids = {"attempt_id": env.attempt_id, "target_id": env.target_id, "task_id": env.task_id}
    try:
        events.append([lifecycle.attempt_started(actor_id=actor, **ids)])
    except LeviathanError as exc:
        # Nothing has been done yet; the orchestrator records the attempt as an infrastructure failure.
        print(f"worker: cannot record attempt.started, not starting: {exc}", file=sys.stderr)
        return EXIT_CODES[ft.INFRASTRUCTURE]
    artifacts = ArtifactDir(home.artifacts_dir(env.attempt_id))
    outcome, duration = _run_recorded(env, home, artifacts, project)
    try:
        _record(env, events, artifacts, outcome, duration, actor, ids)
    except LeviathanError as exc:
        # The outcome is in result.json; without its events the orchestrator fails the attempt as
        # infrastructure (never a silent success: a PR without its events is not a success).
        print(f"worker: cannot record the outcome: {exc}", file=sys.stderr)
        return EXIT_CODES[ft.INFRASTRUCTURE]
    return 0 if outcome.status == "succeeded" else EXIT_CODES[outcome.failure_type or ft.EXECUTOR_ERROR]


def _run_recorded(
    env: WorkerEnv, home: LeviathanHome, artifacts: ArtifactDir, project: ProjectConfig | None = None
) -> tuple[Outcome, float]:
    """Run the attempt, turning every way it can end into an Outcome; the log goes to worker.log."""
    handler = _attach_log(artifacts.path("worker.log"))
    outcome = Outcome()
    usage = UsageRecorder(artifacts.path("usage.json"))
    started = time.monotonic()
    try:
        outcome.details = run_attempt(env, home, artifacts, usage, project)
        outcome.status = "succeeded"
    except AttemptFailure as failure:
        outcome.failure_type, outcome.summary = failure.failure_type, failure.summary
    except PolicyViolation as exc:  # e.g. a write refused because the target committed a symlink
        outcome.failure_type, outcome.summary = ft.POLICY_VIOLATION, str(exc)
    except SandboxUnavailable as exc:
        outcome.failure_type, outcome.summary = ft.EXECUTOR_ERROR, f"no sandbox for the test command: {exc}"
    except TransientError as exc:
        outcome.failure_type, outcome.summary = ft.INFRASTRUCTURE, str(exc)
    except (ConfigError, GeneratorError) as exc:
        outcome.failure_type, outcome.summary = ft.EXECUTOR_ERROR, str(exc)
    except GenerationStopped as stop:  # budget, scope, repair rounds: the generator's own stop
        outcome.failure_type, outcome.summary = stop.failure_type, stop.summary
    except Exception as exc:  # the record must be written whatever happened
        log.exception("unexpected error")
        outcome.failure_type, outcome.summary = ft.EXECUTOR_ERROR, f"{type(exc).__name__}: {exc}"
    finally:
        # Always, zero calls included: the log then tells a deterministic generator's zero cost
        # from an attempt whose usage was never recorded (a worker that died).
        outcome.usage = usage.summary()
        log.info("attempt %s ended: %s %s", env.attempt_id, outcome.status, outcome.failure_type or "")
        logging.getLogger().removeHandler(handler)
        handler.close()
    return outcome, round(time.monotonic() - started, 3)


def run_attempt(
    env: WorkerEnv,
    home: LeviathanHome,
    artifacts: ArtifactDir,
    usage: UsageRecorder | None = None,
    project: ProjectConfig | None = None,
) -> dict:
    """``project``: the project config when the caller already read it (else read here)."""
    target = _load_target(env, project)
    register_environment_secrets(os.environ, target.secret_env.values())
    # Before anything is cloned or generated (a model call costs money): the tests need the sandbox.
    probe_sandbox(required=bool(target.test_command))
    workspace = env.workspace_root / env.attempt_id
    shutil.rmtree(workspace, ignore_errors=True)
    deadline = time.monotonic() + target.policy.attempt_timeout_seconds
    try:
        # The forge hands git its credential per command (never in the URL or .git/config).
        forge = forge_for(target, home)
        log.info("cloning %s@%s", env.repo_url, env.branch)
        gitutil.clone(env.repo_url, workspace, env.branch, env=forge.git_auth_env(), shallow=True)
        task = _load_task(workspace, env.task_id)
        generator_name = generator_name_for(task)
        usage = usage or UsageRecorder()
        usage.for_generator(generator_name)
        context = GenerationContext(
            test_command=target.test_command,
            test_environment=sanitized_environment(workspace),
            policy=target.policy,
            deadline=deadline,
            usage=usage,
        )
        change = get_generator(generator_name).generate(task, workspace, context)
        artifacts.write_json(
            "generator.json",
            {"generator": generator_name, "files": list(change.files), "summary": change.summary},
        )
        log.info("generator %s: %s", generator_name, change.summary)
        changes = _checked_changes(workspace, task, target, artifacts)
        checked_tree = checked_commit.write_tree(workspace)
        checked_index = checked_commit.index_digest(workspace)
        tests = _run_tests(target, task, workspace, artifacts, deadline)
        left = checked_commit.discard_unchecked(workspace, checked_tree, checked_index=checked_index)
        if left.paths:
            artifacts.write_json("discarded.json", {"after_policy_check": left.paths})
        branch = branch_name_for(task.id, env.attempt_id)
        commit_sha = _commit(workspace, task, env, branch, changes, checked_tree, left.head)
        # Asked again: an App's installation token may have been refreshed since the clone.
        _push(workspace, env.repo_url, branch, commit_sha, forge)
        pr = forge.open_pull_request(
            head=branch,
            base=env.branch,
            title=pull_request.render_title(task),
            body=pull_request.render_body(
                target_id=env.target_id,
                task=task,
                attempt_id=env.attempt_id,
                attempt_number=env.attempt_number,
                changes=changes,
                generator=generator_name,
                tests=tests,
                usage=usage.summary() if usage.calls else None,
            ),
            reviewers=reviewers_from_task(task),
            draft=tests.failed,  # only reached failing when the policy allows a draft
        )
        log.info("opened PR #%s %s", pr.number, pr.url)
        return {
            "branch_name": branch,
            "commit_sha": commit_sha,
            "pr_number": pr.number,
            "pr_url": pr.url,
            "touched_paths": [c.path for c in changes],
            "generator": generator_name,
            "tests": tests.status,
        }
    finally:
        if (workspace / ".git").is_dir() and not artifacts.path(DIFF_FILE).exists():
            # The generator stopped or failed before the policy check: what it changed is still evidence.
            _write_diff_of_worktree(workspace, artifacts)
        shutil.rmtree(workspace, ignore_errors=True)


def _write_diff_of_worktree(workspace: Path, artifacts: ArtifactDir) -> None:
    try:
        if list_changed_paths(workspace):  # stages the whole worktree, as the policy check does
            _write_diff(workspace, artifacts)
    except (LeviathanError, OSError) as exc:  # the attempt's own failure is what the record must say
        log.warning("could not record the diff of the unfinished change: %s", exc)


def _write_diff(workspace: Path, artifacts: ArtifactDir) -> None:
    """``diff.patch``: the staged change against HEAD, exactly what the policy check judges."""
    diff = gitutil.run_git(
        ["diff", "--cached", "--no-ext-diff", "--no-textconv", "--binary", "HEAD"], cwd=workspace
    )
    artifacts.write_text(DIFF_FILE, diff)


def _load_target(env: WorkerEnv, project: ProjectConfig | None = None) -> TargetConfig:
    # Another target's broken config must not fail this one's attempt (the scheduler serves it too).
    if project is None:
        project = load_project_config(env.config_path, isolate_targets=True)
    target = project.target(env.target_id)
    if target is None and project.broken_target(env.target_id):
        raise ConfigError(
            f"target '{env.target_id}' has an invalid config:\n{project.broken_target(env.target_id)}"
        )
    if target is None:
        raise ConfigError(f"{env.config_path}: no target '{env.target_id}' (TARGET_NAME)")
    return target


def _load_task(workspace: Path, task_id: str) -> Task:
    # Read without following a symlink: a committed `.leviathan -> /somewhere` is refused, not read.
    text = workspace_files.read_text(workspace, BACKLOG_PATH)
    if text is None:
        raise AttemptFailure(ft.EXECUTOR_ERROR, f"{BACKLOG_PATH} is missing on the base branch")
    backlog = parse_backlog(text)
    task = backlog.get(task_id)
    if task is None:
        raise AttemptFailure(
            ft.EXECUTOR_ERROR, f"task '{task_id}' is not in {BACKLOG_PATH} on the base branch"
        )
    return task


def _checked_changes(
    workspace: Path, task: Task, target: TargetConfig, artifacts: ArtifactDir
) -> list[ChangedPath]:
    """Policy on the *actual* diff: the task's allowed paths, inside the target's prefixes. The diff is
    recorded first (``diff.patch``), so a refused or later failing change is there to be read too."""
    changes = list_changed_paths(workspace)
    if not changes:
        raise AttemptFailure(ft.NO_CHANGES, "the generator changed nothing; an empty diff is never a success")
    _write_diff(workspace, artifacts)
    violations = check_changed_paths(workspace, changes, task.allowed_paths)
    violations += check_changed_paths(workspace, changes, target.policy.allowed_path_prefixes)
    if violations:
        unique = sorted(set(violations))
        raise AttemptFailure(ft.POLICY_VIOLATION, "; ".join(unique))
    return changes


def _run_tests(
    target: TargetConfig, task: Task, workspace: Path, artifacts: ArtifactDir, deadline: float
) -> pull_request.TestReport:
    """The target's test command, in the sandbox: no credential, no network, no host file beyond the
    system's, the checkout read-only but for the task's allowed paths (whatever it writes there is
    discarded afterwards anyway). SandboxUnavailable ends the attempt: never an unsandboxed run."""
    if not target.test_command:
        return pull_request.TestReport("no test command configured")
    remaining = max(1.0, deadline - time.monotonic())
    log.info("running tests (sandboxed): %s", " ".join(target.test_command))
    result = run_sandboxed(
        target.test_command, workspace=workspace, writable=task.allowed_paths, timeout=remaining
    )
    output = result.output + ("\n...(output truncated)\n" if result.truncated else "")
    artifacts.write_text("tests.log", output)
    if result.timed_out:
        raise AttemptFailure(ft.TIMEOUT, f"test command exceeded the attempt timeout ({remaining:.0f}s)")
    if result.returncode == 1 and output.startswith("bwrap: execvp "):
        raise AttemptFailure(ft.EXECUTOR_ERROR, f"test command could not start: {output.strip()[:500]}")
    summary = pull_request.last_summary_line(output)
    if result.returncode != 0 and not target.policy.allow_draft_on_failing_tests:
        tail = " | ".join(line for line in output.strip().splitlines()[-6:])
        raise AttemptFailure(ft.TESTS_FAILED, f"test command exited {result.returncode}: {tail}"[:2000])
    status = "passed" if result.returncode == 0 else "failed (draft)"
    return pull_request.TestReport(status, tuple(target.test_command), result.returncode, summary)


def _commit(
    workspace: Path,
    task: Task,
    env: WorkerEnv,
    branch: str,
    changes: list[ChangedPath],
    checked_tree: str,
    base: str | None,
) -> str:
    """The attempt's commit: the checked tree plus the backlog write-back, on ``base`` (the commit the
    policy check diffed against). No branch is checked out: the push names the commit itself."""
    # diff.patch was written at the policy check: the index holds that checked tree again now.
    # Read and written as bytes-exact text (a CRLF backlog keeps its line ends) and never through a symlink.
    original = workspace_files.read_text(workspace, BACKLOG_PATH)
    if original is None:
        raise AttemptFailure(ft.EXECUTOR_ERROR, f"{BACKLOG_PATH} disappeared before the write-back")
    updated = write_back_completion(
        original,
        task.id,
        attempt_id=env.attempt_id,
        branch_name=branch,
        completed_at=format_timestamp(utc_now()),
    )
    workspace_files.write_text(workspace, BACKLOG_PATH, updated)
    gitutil.run_git(["add", "--", BACKLOG_PATH], cwd=workspace)
    tree = checked_commit.verify_commit_scope(workspace, checked_tree, extra=[BACKLOG_PATH])
    message = (
        f"{task.title}\n\n"
        f"Leviathan attempt {env.attempt_number} for task {task.id} on target {env.target_id}.\n"
        f"Touched: {', '.join(c.path for c in changes)}\n\n"
        f"Leviathan-Task: {task.id}\nLeviathan-Attempt: {env.attempt_id}\n"
    )
    return checked_commit.commit_tree(workspace, tree, base, message)


def _push(workspace: Path, repo_url: str, branch: str, commit_sha: str, forge: Forge) -> None:
    """Push the attempt's branch to the URL the worker was given, not "origin": nothing in the
    workspace decides where it goes (a relative local path was relative to the worker's directory,
    not the workspace's). A refusal the forge means for good (a missing permission, a ruleset, push
    protection) fails the attempt as ``push_rejected`` with the forge's words; retrying it would only
    pay for the model again. A credential the forge revoked is renewed once; anything else is
    infrastructure."""
    local = gitutil.local_path(repo_url)
    if local is not None and not repo_url.startswith("file://"):
        repo_url = str(local.resolve())
    for renewed in (False, True):
        try:
            gitutil.push(workspace, repo_url, f"{commit_sha}:refs/heads/{branch}", env=forge.git_auth_env())
            return
        except gitutil.GitError as exc:
            if not renewed and forge.renew_credentials_after(exc.stderr):
                log.info("the forge refused the credential for the push: renewed it, pushing once more")
                continue
            refusal = forge.permanent_push_refusal(exc.stderr)
            if refusal:
                raise AttemptFailure(ft.PUSH_REJECTED, f"push of {branch} refused: {refusal}"[:2000]) from exc
            raise TransientError(f"push of {branch} failed: {exc}") from exc


def _record(
    env, events, artifacts: ArtifactDir, outcome: Outcome, duration: float, actor: str, ids: dict
) -> None:
    artifacts.write_json(
        RESULT_FILE,
        {
            "status": outcome.status,
            "failure_type": outcome.failure_type,
            "summary": outcome.summary,
            "duration_seconds": duration,
            **outcome.details,
        },
    )
    sealed = [a.as_dict() for a in artifacts.seal()]
    common = {"attempt_number": env.attempt_number, "duration_seconds": duration, "artifacts": sealed}
    if outcome.usage:
        common["usage"] = outcome.usage
    if outcome.status == "succeeded":
        details = outcome.details
        events.append(
            [
                lifecycle.pr_created(
                    pr_number=details["pr_number"],
                    pr_url=details["pr_url"],
                    branch_name=details["branch_name"],
                    actor_id=actor,
                    **ids,
                ),
                lifecycle.attempt_succeeded(actor_id=actor, **ids, **common, **details),
            ]
        )
    else:
        events.append(
            [
                lifecycle.attempt_failed(
                    failure_type=outcome.failure_type or ft.EXECUTOR_ERROR,
                    error_summary=outcome.summary,
                    actor_id=actor,
                    **ids,
                    **common,
                )
            ]
        )


def _attach_log(path: Path) -> logging.Handler:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    for each in root.handlers:  # worker.log and stderr (which the executor shows) alike
        if not any(isinstance(f, RedactingFilter) for f in each.filters):
            each.addFilter(RedactingFilter())
    return handler
