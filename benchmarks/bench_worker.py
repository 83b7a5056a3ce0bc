"""How much does one trivial attempt's worker cost next to plain git doing the same work?

    python benchmarks/bench_worker.py

Builds a bare repository with a docs task, then times, REPEATS times each:

- baseline: ``git clone`` + write the file + ``git add``/``commit`` + ``git push`` of a new branch;
- worker: ``python -m worker`` for one attempt at that task (clone, generate, check the diff against
  policy, run the test command ``true``, write the backlog back, commit, push, open a PR on the local
  forge, append its events), exactly as the local executor starts it;
- worker start-up: ``python -c "import worker.attempt"`` (what every attempt pays before its first
  git command), and the number of modules it loads.

Prints wall and CPU seconds (CPU: the child processes, git included; on a shared machine the wall
clock also counts other people's work) and the worker / baseline ratio. Goal: at most 3x.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

# Run as a plain script from a checkout: make the package importable without installing it.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from leviathan_dagster.demo_setup import make_repository  # noqa: E402

REPEATS = 5
GOAL_RATIO = 3.0
BACKLOG = {
    "tasks": [
        {
            "id": f"page-{i}",
            "title": f"Write page {i}",
            "ready": True,
            "executor": "docs",
            "allowed_paths": [f"docs/page-{i}.md"],
            "acceptance_criteria": ["It exists"],
        }
        for i in range(REPEATS)
    ]
}


def timed(run: Callable[[], None]) -> tuple[float, float]:
    """(wall, CPU of finished children) seconds of ``run``."""
    before, start = os.times(), time.perf_counter()
    run()
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return time.perf_counter() - start, cpu


def git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def baseline(repo: Path, scratch: Path, i: int) -> None:
    work = scratch / f"raw-{i}"
    git("clone", "--quiet", "--branch", "main", str(repo), str(work))
    (work / "docs").mkdir(exist_ok=True)
    (work / "docs" / f"raw-{i}.md").write_text(f"# Raw {i}\n", encoding="utf-8")
    git("add", "--all", cwd=work)
    git("-c", "user.name=b", "-c", "user.email=b@b", "commit", "--quiet", "-m", "raw", cwd=work)
    git("push", "--quiet", "origin", f"HEAD:refs/heads/raw-{i}", cwd=work)


def worker(root: Path, i: int) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "TARGET_NAME": "site",
        "TARGET_REPO_URL": str(root / "site.git"),
        "TARGET_BRANCH": "main",
        "TASK_ID": f"page-{i}",
        "ATTEMPT_ID": f"attempt-{i}",
        "ATTEMPT_NUMBER": "1",
        "LEVIATHAN_HOME": str(root / "home"),
        "LEVIATHAN_CONFIG": str(root / "leviathan.yaml"),
    }
    done = subprocess.run([sys.executable, "-m", "worker"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"worker failed ({done.returncode}): {done.stderr[-2000:]}")


def startup() -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    code = "import sys, worker.attempt; print(len(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout)


def report(name: str, samples: list[tuple[float, float]]) -> tuple[float, float]:
    wall = statistics.median(w for w, _ in samples)
    cpu = statistics.median(c for _, c in samples)
    print(f"{name:<22} median {wall:.3f} s wall, {cpu:.3f} s CPU (best {min(w for w, _ in samples):.3f} s)")
    return wall, cpu


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        root = Path(tmp)
        make_repository(
            root / "site.git", {".leviathan/backlog.yaml": yaml.safe_dump(BACKLOG, sort_keys=False)}
        )
        target = {"id": "site", "repo_url": "./site.git", "forge": "local", "test_command": ["true"]}
        (root / "leviathan.yaml").write_text(yaml.safe_dump({"targets": [target]}), encoding="utf-8")
        raw = [timed(lambda i=i: baseline(root / "site.git", root, i)) for i in range(REPEATS)]
        attempts = [timed(lambda i=i: worker(root, i)) for i in range(REPEATS)]
        modules = 0

        def count() -> None:
            nonlocal modules
            modules = startup()

        starts = [timed(count) for _ in range(REPEATS)]
    raw_wall, raw_cpu = report("raw git baseline", raw)
    wall, cpu = report("worker attempt", attempts)
    report(f"worker start-up ({modules} modules)", starts)
    ratio = wall / raw_wall
    print(f"ratio               {ratio:.1f}x wall, {cpu / raw_cpu:.1f}x CPU (goal: at most {GOAL_RATIO:g}x)")


if __name__ == "__main__":
    main()
