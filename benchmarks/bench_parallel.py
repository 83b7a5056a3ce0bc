"""Do attempts of different targets really run in parallel under the daemon?

    python benchmarks/bench_parallel.py [--attempts 8] [--seconds 6]

Runs the real ``dagster-daemon`` (queued run coordinator, embedded instance) over 4 targets whose test
command takes ``--seconds`` (so an attempt is mostly waiting, as real test suites are), first with
``max_concurrent_attempts: 1`` and then with ``4`` (``max_running_attempts: 1`` per target), and
prints attempts completed per minute for each, from the daemon's start to the last counted attempt's
end. Goal (issue 14): 4 concurrent attempts complete at least 3 times as many attempts per minute as
one. Peak concurrency (attempts running at once, from the event log) is printed as well.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import yaml  # noqa: E402

from leviathan_dagster.core.attempts.ledger import AttemptLedger  # noqa: E402
from leviathan_dagster.core.events.model import parse_timestamp  # noqa: E402
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog  # noqa: E402
from leviathan_dagster.core.home import LeviathanHome  # noqa: E402
from leviathan_dagster.demo_setup import make_repository  # noqa: E402

TARGETS = 4
DEADLINE_SECONDS = 600


def build_project(root: Path, tasks_per_target: int, concurrency: int, seconds: float) -> Path:
    targets = []
    for n in range(TARGETS):
        tasks = [
            {
                "id": f"t{i}",
                "title": f"Write t{i}",
                "ready": True,
                "executor": "docs",
                "allowed_paths": [f"docs/t{i}.md"],
                "acceptance_criteria": ["It exists"],
            }
            for i in range(tasks_per_target)
        ]
        make_repository(root / f"site{n}.git", {".leviathan/backlog.yaml": yaml.safe_dump({"tasks": tasks})})
        targets.append(
            {
                "id": f"site{n}",
                "repo_url": f"./site{n}.git",
                "test_command": ["sleep", str(seconds)],
                "policy": {
                    "allowed_path_prefixes": ["docs/", ".leviathan/"],
                    "max_open_prs": 100,
                    "max_running_attempts": 1,
                },
            }
        )
    config = root / "leviathan.yaml"
    config.write_text(
        yaml.safe_dump({"max_concurrent_attempts": concurrency, "targets": targets}), encoding="utf-8"
    )
    return config


def run_daemon(root: Path, config: Path, wanted: int) -> tuple[float, int, int]:
    """(attempts per minute, attempts succeeded, peak attempts running at once)."""
    dagster_home = root / "dagster"
    dagster_home.mkdir()
    shutil.copy(REPO_ROOT / "leviathan_dagster" / "instance" / "dagster.yaml", dagster_home / "dagster.yaml")
    home = root / "home"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DAGSTER_HOME": str(dagster_home),
        "LEVIATHAN_CONFIG": str(config),
        "LEVIATHAN_HOME": str(home),
    }
    daemon_bin = Path(sys.executable).parent / "dagster-daemon"
    started = time.time()
    daemon = subprocess.Popen(
        [str(daemon_bin), "run", "-w", str(REPO_ROOT / "workspace.yaml")],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    events_path = LeviathanHome(home).events_path
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            if events_path.exists():
                ledger = AttemptLedger.from_events(NdjsonEventLog(events_path).read())
                if sum(a.status == "succeeded" for a in ledger.attempts()) >= wanted:
                    break
            time.sleep(1)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
    attempts = AttemptLedger.from_events(NdjsonEventLog(events_path).read()).attempts()
    done = sorted((a for a in attempts if a.status == "succeeded"), key=lambda a: a.completed_at or "")
    counted = done[:wanted]
    if not counted:
        return 0.0, 0, 0
    last_end = parse_timestamp(counted[-1].completed_at).timestamp()
    rate = len(counted) / (last_end - started) * 60
    return rate, len(done), peak_running(attempts)


def peak_running(attempts) -> int:
    moments = []
    for a in attempts:
        if a.started_at and a.completed_at:
            moments += [(a.started_at, 1), (a.completed_at, -1)]
    running = peak = 0
    for _, step in sorted(moments, key=lambda m: (m[0], m[1])):
        running += step
        peak = max(peak, running)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=8, help="attempts counted with concurrency 4")
    parser.add_argument("--seconds", type=float, default=6.0, help="duration of each attempt's tests")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="leviathan-bench-parallel-") as tmp:
        for concurrency, wanted in ((1, max(2, args.attempts // 2)), (4, args.attempts)):
            root = Path(tmp) / f"c{concurrency}"
            root.mkdir()
            config = build_project(
                root, tasks_per_target=args.attempts, concurrency=concurrency, seconds=args.seconds
            )
            rate, done, peak = run_daemon(root, config, wanted)
            results[concurrency] = rate
            print(
                f"max_concurrent_attempts={concurrency}: {rate:.2f} attempts/min "
                f"({done} succeeded, at most {peak} running at once)",
                flush=True,
            )
    ratio = results[4] / results[1] if results[1] else float("inf")
    print(f"4 concurrent / 1: x{ratio:.2f} ({'ok' if ratio >= 3 else 'BELOW the goal of 3'})")


if __name__ == "__main__":
    main()
