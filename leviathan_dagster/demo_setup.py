"""The demo world: two target repositories with backlogs that exercise every path of the loop.

docs-site: a docs task, a task depending on it, a tests task whose generated tests fail until a
"human" fixes a bug in the code (so it fails once and is retried after backoff), a task outside the
allowed prefixes (never attempted) and a task not marked ready. handbook: one docs task, so two
targets are served fairly. Plain Python and git; the CLI drives it through Dagster.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from leviathan_dagster.core.git import commands as gitutil
from leviathan_dagster.core.home import LeviathanHome

DEMO_MARKER = ".leviathan-demo"

TEXTUTIL_BUGGY = '''"""Small text helpers."""


def slugify(text: str) -> str:
    """URL slug of ``text``."""
    return "-".join(text.split())
'''
TEXTUTIL_FIXED = TEXTUTIL_BUGGY.replace('"-".join(text.split())', '"-".join(text.lower().split())')

DOCS_SITE_BACKLOG = """\
# Demo backlog for the docs-site target.
tasks:
  - id: slugify-tests
    title: Cover textutil.slugify with tests
    description: Turn the acceptance criteria into a pytest module.
    ready: true
    priority: 5
    generator: tests
    allowed_paths:
      - tests/
    acceptance_criteria:
      - textutil.slugify("Hello World") == "hello-world"
      - textutil.slugify("  many   spaces ") == "many-spaces"

  - id: getting-started
    title: Write the getting-started guide
    description: Install, configure and run the service for the first time.
    ready: true
    priority: 4
    generator: docs
    allowed_paths:
      - docs/getting-started.md
    acceptance_criteria:
      - Explains how to install
      - Shows the first command

  - id: api-reference
    title: Write the API reference
    description: Every endpoint with an example; builds on the getting-started guide.
    ready: true
    generator: docs
    dependencies: [getting-started]
    allowed_paths:
      - docs/api/
    acceptance_criteria:
      - Lists every endpoint

  - id: deploy-script
    title: Add a deploy script
    description: Outside the target's allowed prefixes, so Leviathan must never attempt it.
    ready: true
    generator: docs
    allowed_paths:
      - scripts/deploy.md

  - id: changelog
    title: Start a changelog
    ready: false
    generator: docs
    allowed_paths:
      - docs/CHANGELOG.md
"""

HANDBOOK_BACKLOG = """\
tasks:
  - id: onboarding
    title: Write the onboarding page
    description: What a new team member does in their first week.
    ready: true
    generator: docs
    allowed_paths:
      - docs/
    acceptance_criteria:
      - Covers the first day
      - Names a buddy
"""

PYTEST_INI = "[pytest]\naddopts = -q -p no:cacheprovider\n"
BASIC_TEST = "import textutil\n\n\ndef test_single_word():\n    assert textutil.slugify('abc') == 'abc'\n"


def prepare_demo_home(home: LeviathanHome) -> None:
    """Start from a clean demo home; refuse to wipe a home the demo did not create."""
    root = home.root
    if root.exists() and any(root.iterdir()) and not (root / DEMO_MARKER).exists():
        raise SystemExit(
            f"{root} holds Leviathan state that the demo did not create; use another --home "
            "(the Makefile uses ./.leviathan)"
        )
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / DEMO_MARKER).write_text("created by `leviathan demo`; re-running the demo wipes this folder\n")


def build_demo(home: LeviathanHome) -> Path:
    """Create the demo repositories and leviathan.yaml; returns the config path."""
    demo = home.root / "demo"
    demo.mkdir(parents=True, exist_ok=True)
    make_repository(
        demo / "docs-site.git",
        {
            ".leviathan/backlog.yaml": DOCS_SITE_BACKLOG,
            "textutil.py": TEXTUTIL_BUGGY,
            "pytest.ini": PYTEST_INI,
            "tests/test_textutil_basic.py": BASIC_TEST,
            "README.md": "# docs-site\n\nDemo target of Leviathan.\n",
        },
    )
    make_repository(
        demo / "handbook.git",
        {".leviathan/backlog.yaml": HANDBOOK_BACKLOG, "README.md": "# handbook\n"},
    )
    python = sys.executable
    config = demo / "leviathan.yaml"
    config.write_text(
        f"""\
# Demo project: two local targets on the embedded forge.
max_concurrent_attempts: 4
targets:
  - id: docs-site
    repo_url: ./docs-site.git
    branch: main
    forge: local
    executor: local
    test_command: ["{python}", "-m", "pytest"]
    policy:
      allowed_path_prefixes: [".leviathan/", "docs/", "tests/"]
      max_open_prs: 3
      max_running_attempts: 1
      max_attempts_per_task: 3
      backoff_seconds: 3
      circuit_breaker_failures: 3
      attempt_timeout_seconds: 300
  - id: handbook
    repo_url: ./handbook.git
    policy:
      allowed_path_prefixes: ["docs/"]
      max_open_prs: 2
      backoff_seconds: 3
""",
        encoding="utf-8",
    )
    return config


def fix_slugify_bug(home: LeviathanHome) -> str:
    """What the human maintainer does after the tests task failed: fix the bug on main."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "docs-site"
        gitutil.clone(str(home.root / "demo" / "docs-site.git"), work, "main")
        (work / "textutil.py").write_text(TEXTUTIL_FIXED, encoding="utf-8")
        sha = gitutil.commit_all(work, "Fix textutil.slugify: lower-case the slug")
        gitutil.push(work, "origin", "HEAD:refs/heads/main")
        return sha


def make_repository(bare: Path, files: dict[str, str]) -> None:
    """A bare repository (the local forge's "remote") whose main branch holds ``files``."""
    gitutil.init_bare(bare, initial_branch="main")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        gitutil.run_git(["init", "-q", "-b", "main", str(work)])
        for name, text in files.items():
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        gitutil.commit_all(work, "Initial commit")
        gitutil.run_git(["remote", "add", "origin", str(bare)], cwd=work)
        gitutil.push(work, "origin", "HEAD:refs/heads/main")
