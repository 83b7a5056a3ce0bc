"""How much does one trivial attempt's worker cost next to plain git doing the same work?

    python benchmarks/bench_worker.py

Builds a bare repository with a docs task, then times, REPEATS times each:

- baseline: ``git clone`` + write the file + ``git add``/``commit`` + ``git push`` of a new branch;
- worker: ``python -m worker`` for one attempt at that task, everything included: interpreter start-up
  and imports, clone, generate, check the diff against policy, run the test command ``true`` in the
  sandbox, write the backlog back, commit, push, open a PR on the local forge, append its events and
  write its artifacts, exactly as the local executor starts it;
- sandbox: the sandboxed ``true`` alone (one bubblewrap run, part of the worker's time above);
- worker start-up: ``python -c "import worker.attempt"`` (what every attempt pays before its first
  git command), and the number of modules it loads.

The worker runs byte-compiled, as the image's ``pip install`` leaves it (one untimed attempt first
compiles into a private ``PYTHONPYCACHEPREFIX``, whatever PYTHONDONTWRITEBYTECODE the shell sets);
the start-up is also shown without bytecode (a source checkout that may not write ``__pycache__``).
Baseline and worker samples alternate, so that each pair meets the same load. Prints wall and CPU
seconds (CPU: the child processes, git included; on a shared machine the wall clock also counts other
people's work), the git commands each side starts, and the worker / baseline ratio: of the medians
(wall, CPU) and the median of the pairs. Goal: at most 3x.
"""

from __future__ import annotations

import os
import resource
import shutil
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

from leviathan_dagster.core.sandbox import run_sandboxed  # noqa: E402
from leviathan_dagster.demo_setup import make_repository  # noqa: E402

REPEATS = 9
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
        for i in range(REPEATS + 2)  # + the warm-up attempt and the counted one
    ]
}
# Logs the subcommand of every git command a process starts (git's own helpers, upload-pack and the
# like, are not counted), then runs the real git. Only for the counting runs, never for the timed ones.
GIT_COUNTER = """#!/bin/sh
skip=""
for arg in "$@"; do
  if [ -n "$skip" ]; then skip=""; continue; fi
  case "$arg" in
    -c|-C) skip=1 ;;
    -*) ;;
    *) echo "$arg" >> "{log}"; break ;;
  esac
done
exec {git} "$@"
"""


def timed(run: Callable[[], None]) -> tuple[float, float]:
    """(wall, CPU of finished children) seconds of ``run`` (getrusage: microseconds, where os.times()
    counts 10 ms clock ticks, as coarse as the whole baseline)."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - start, cpu


def git(*args: str, cwd: Path | None = None, env: dict | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


def baseline(repo: Path, scratch: Path, name: str, env: dict | None = None) -> None:
    work = scratch / f"raw-{name}"
    git("clone", "--quiet", "--branch", "main", str(repo), str(work), env=env)
    (work / "docs").mkdir(exist_ok=True)
    (work / "docs" / f"raw-{name}.md").write_text(f"# Raw {name}\n", encoding="utf-8")
    git("add", "--all", cwd=work, env=env)
    git("-c", "user.name=b", "-c", "user.email=b@b", "commit", "--quiet", "-m", "raw", cwd=work, env=env)
    git("push", "--quiet", "origin", f"HEAD:refs/heads/raw-{name}", cwd=work, env=env)


def python_env(root: Path, bytecode: bool = True) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if bytecode:
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPYCACHEPREFIX"] = str(root / "no-pycache")  # empty: nothing compiled is found
    return env


def worker(root: Path, i: int, env: dict | None = None) -> None:
    env = {
        **(env or python_env(root)),
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


def sandboxed_true(workspace: Path) -> None:
    result = run_sandboxed(["true"], workspace=workspace, writable=["docs/page-0.md"], timeout=60)
    if result.returncode != 0:
        raise SystemExit(f"sandboxed true failed: {result.output}")


def startup(env: dict[str, str]) -> int:
    code = "import sys, worker.attempt; print(len(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout)


def git_commands(root: Path, run: Callable[[dict], None]) -> list[str]:
    """The git commands ``run(env)`` starts, in order (through a counting ``git`` first on PATH)."""
    bin_dir, log = root / "counting-bin", root / "git-commands.log"
    bin_dir.mkdir(exist_ok=True)
    log.write_text("")
    counter = bin_dir / "git"
    counter.write_text(GIT_COUNTER.format(log=log, git=shutil.which("git")))
    counter.chmod(0o755)
    env = {**python_env(root), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    run(env)
    return log.read_text().split()


def report(name: str, samples: list[tuple[float, float]]) -> tuple[float, float]:
    wall = statistics.median(w for w, _ in samples)
    cpu = statistics.median(c for _, c in samples)
    best = min(w for w, _ in samples)
    print(f"{name:<34} median {wall:.3f} s wall, {cpu:.3f} s CPU (best {best:.3f} s)")
    return wall, cpu


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        root = Path(tmp)
        make_repository(
            root / "site.git", {".leviathan/backlog.yaml": yaml.safe_dump(BACKLOG, sort_keys=False)}
        )
        target = {"id": "site", "repo_url": "./site.git", "forge": "local", "test_command": ["true"]}
        (root / "leviathan.yaml").write_text(yaml.safe_dump({"targets": [target]}), encoding="utf-8")
        worker(root, REPEATS)  # untimed: compiles the bytecode
        # Interleaved, so that each pair of samples meets the same load on a shared machine.
        raw, attempts = [], []
        for i in range(REPEATS):
            raw.append(timed(lambda i=i: baseline(root / "site.git", root, str(i))))
            attempts.append(timed(lambda i=i: worker(root, i)))
        git("clone", "--quiet", str(root / "site.git"), str(root / "sandbox-ws"))
        sandbox = [timed(lambda: sandboxed_true(root / "sandbox-ws")) for _ in range(REPEATS)]
        # getrusage counts the children of this process: bwrap ran as one.
        modules = startup(python_env(root))
        starts = [timed(lambda: startup(python_env(root))) for _ in range(REPEATS)]
        cold = [timed(lambda: startup(python_env(root, bytecode=False))) for _ in range(REPEATS)]
        raw_git = git_commands(root, lambda env: baseline(root / "site.git", root, "counted", env))
        worker_git = git_commands(root, lambda env: worker(root, REPEATS + 1, env))
    raw_wall, raw_cpu = report("raw git baseline", raw)
    wall, cpu = report("worker attempt (all included)", attempts)
    sandbox_wall, _ = report("  of which the sandboxed `true`", sandbox)
    report(f"worker start-up ({modules} modules)", starts)
    report("worker start-up without bytecode", cold)
    print(f"git commands: baseline {len(raw_git)}, worker {len(worker_git)} ({' '.join(worker_git)})")
    pairs = statistics.median(w / r for (w, _), (r, _) in zip(attempts, raw, strict=True))
    print(
        f"ratio {wall / raw_wall:.1f}x wall, {cpu / raw_cpu:.1f}x CPU, {pairs:.1f}x median of the "
        f"interleaved pairs (goal: at most {GOAL_RATIO:g}x); without the sandbox "
        f"{(wall - sandbox_wall) / raw_wall:.1f}x wall"
    )


if __name__ == "__main__":
    main()
