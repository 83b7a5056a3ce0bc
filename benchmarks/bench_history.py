"""Does Leviathan's cost per tick stay flat as the audit log grows?

    python benchmarks/bench_history.py [--sizes 1000,10000,100000,1000000]

For each size it builds a project with one target (a 20-task backlog) whose NDJSON log holds that many
events of history (attempt lifecycles, PR merges and closes: ``history.py``), followed by
``TAIL`` more, with projection snapshots of the history before the tail, as production has them (the
code server's view writes one every ``SNAPSHOT_EVERY`` events, ``events checkpoint`` one at each
checkpoint: a new process finds one at most that many events behind the head). Then it measures,
each in a fresh process, as production starts them:

- first tick: ``attempt_sensor``'s first evaluation in a new code-server process (imports excluded);
- sensor tick: the same process's later ticks (the long-lived code server's steady state);
- run before executor: what an attempt run does before its executor starts (fold the ledger,
  reconcile, re-check readiness, append ``attempt.created``; imports excluded);
- worker start-up and peak RSS: ``python -m worker`` for one docs task, to its exit;
- ``leviathan tasks``: the CLI, the whole process;
- control-plane start: creating the app and answering its first /v1/graph/summary (with imports);

and the ratio of each to its 1k-event value. Goals (issue 14): every ratio at most 2, the sensor tick
at 1M events under 2 s, the worker's peak RSS under 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import yaml  # noqa: E402

from benchmarks.history import BUNDLE, history_events  # noqa: E402
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog  # noqa: E402
from leviathan_dagster.core.home import LeviathanHome  # noqa: E402
from leviathan_dagster.demo_setup import make_repository  # noqa: E402

SIZES = (1_000, 10_000, 100_000, 1_000_000)
LIVE_TASKS = 20
# Events appended after the snapshots were written: what a cold process still folds from the log.
TAIL = 500
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

RUN_BEFORE_EXECUTOR = textwrap.dedent(
    """
    import json, sys, time
    started = time.perf_counter()
    from pathlib import Path
    from leviathan_dagster.core.attempts.runner import (
        execute_attempt, plan_next_attempt, reconcile_lost_attempts,
    )
    from leviathan_dagster.core.config.project import load_project_config
    from leviathan_dagster.core.events.model import utc_now
    from leviathan_dagster.core.events.registry import open_event_log
    from leviathan_dagster.core.executors.base import ExecutionResult, Executor
    from leviathan_dagster.core.home import LeviathanHome
    from leviathan_dagster.core.projections.log_view import current_ledger
    from leviathan_dagster.core.scheduling.readiness import evaluate_task_alone
    from leviathan_dagster.core.scheduling.cycle import snapshot_target
    config, home, task = Path(sys.argv[1]), LeviathanHome(Path(sys.argv[2])), sys.argv[3]
    imported = time.perf_counter()

    class Stop(Exception):
        pass

    class StopAtRun(Executor):
        name = "bench"
        def run(self, spec):
            raise Stop

    project = load_project_config(config)
    target = project.targets[0]
    events = open_event_log(home, project.event_log)
    reconcile_lost_attempts(current_ledger(events), lambda run_id: True, events)
    ledger = current_ledger(events)
    snap = snapshot_target(target, home, ledger, utc_now())
    verdict = evaluate_task_alone(target, snap.backlog, ledger, snap.open_prs, utc_now(), task_id=task)
    planned = plan_next_attempt(target, task, ledger)
    executor = StopAtRun()
    reached = {}
    def run(spec):
        reached["at"] = time.perf_counter()
        return ExecutionResult(0, False, "bench: stopped where the executor starts", "executor_error")
    executor.run = run
    execute_attempt(planned, home, config, executor, events, run_id="bench")
    seconds, imports = reached["at"] - imported, imported - started
    print(json.dumps({"seconds": seconds, "imports": imports, "ready": verdict.ready}))
    """
)

SENSOR_TICKS = textwrap.dedent(
    """
    import json, sys, time
    import dagster as dg
    from leviathan_dagster.defs.attempts.sensors import attempt_sensor
    from leviathan_dagster.defs.platform.resources import LeviathanResource
    leviathan = LeviathanResource(config_path=sys.argv[1], home=sys.argv[2])
    with dg.instance_for_test() as instance:
        times = []
        for _ in range(3):
            context = dg.build_sensor_context(
                instance=instance, instance_ref=instance.get_ref(), resources={"leviathan": leviathan}
            )
            started = time.perf_counter()
            attempt_sensor(context)
            times.append(time.perf_counter() - started)
    print(json.dumps({"first": times[0], "warm": min(times[1:])}))
    """
)

SNAPSHOT = textwrap.dedent(
    """
    import json, sys
    from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
    from leviathan_dagster.core.projections.log_view import snapshot_projections
    print(json.dumps({"seq": snapshot_projections(NdjsonEventLog(sys.argv[1]))}))
    """
)

CONTROL_PLANE_START = textwrap.dedent(
    """
    import json, sys, time
    started = time.perf_counter()
    from pathlib import Path
    from starlette.testclient import TestClient
    from leviathan_dagster.control_plane import create_app
    from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
    app = create_app(NdjsonEventLog(Path(sys.argv[1])), token="bench-token")
    with TestClient(app) as client:
        answer = client.get("/v1/graph/summary", headers={"Authorization": "Bearer bench-token"})
        assert answer.status_code == 200, answer.text
    print(json.dumps({"seconds": time.perf_counter() - started}))
    """
)


def build_project(root: Path, events: int) -> tuple[Path, LeviathanHome]:
    tasks = [
        {
            "id": f"live-{i}",
            "title": f"Write live-{i}",
            "ready": True,
            "executor": "docs",
            "allowed_paths": [f"docs/live-{i}.md"],
            "acceptance_criteria": ["It exists"],
        }
        for i in range(LIVE_TASKS)
    ]
    make_repository(root / "site.git", {".leviathan/backlog.yaml": yaml.safe_dump({"tasks": tasks})})
    config = root / "leviathan.yaml"
    target = {
        "id": "site",
        "repo_url": "./site.git",
        "policy": {"allowed_path_prefixes": ["docs/", ".leviathan/"], "max_open_prs": 50},
    }
    config.write_text(yaml.safe_dump({"targets": [target]}), encoding="utf-8")
    home = LeviathanHome(root / "home")
    store = NdjsonEventLog(home.events_path)
    history = list(history_events(events, targets=("site",)))
    append_in_bundles(store, history[: len(history) - TAIL])
    snapshot = run_python(SNAPSHOT, str(home.events_path))
    append_in_bundles(store, history[len(history) - TAIL :])
    print(f"# snapshots at seq {snapshot['seq']:,}, head {store.head()[0]:,}", file=sys.stderr, flush=True)
    return config, home


def append_in_bundles(store: NdjsonEventLog, events: list) -> None:
    for start in range(0, len(events), BUNDLE):
        store.append(events[start : start + BUNDLE])


def measure_sensor(config: Path, home: LeviathanHome) -> tuple[float, float]:
    """(first tick, warm tick) of a new process, as a new code server evaluates the sensor."""
    ticks = run_python(SENSOR_TICKS, str(config), str(home.root))
    return ticks["first"], ticks["warm"]


def run_python(script: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", script, *args], env=ENV, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure_worker(config: Path, home: LeviathanHome, task: str) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of ``python -m worker`` for one attempt of ``task``."""
    seq = NdjsonEventLog(home.events_path).head()[0]
    env = {
        **ENV,
        "TARGET_NAME": "site",
        "TARGET_REPO_URL": str(config.parent / "site.git"),
        "TARGET_BRANCH": "main",
        "TASK_ID": task,
        "ATTEMPT_ID": f"attempt-bench-{task}",
        "ATTEMPT_NUMBER": "1",
        "LEVIATHAN_HOME": str(home.root),
        "LEVIATHAN_CONFIG": str(config),
        "LEVIATHAN_EVENT_LOG_AFTER_SEQ": str(seq),
    }
    # Started from a small wrapper process, not from this one: a child's peak RSS counts the pages it
    # shares with its parent until exec, and this process holds the sensor's whole view of the log.
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "code = subprocess.run([sys.executable, '-m', 'worker'], stdout=subprocess.DEVNULL).returncode\n"
        "seconds = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'code': code, 'seconds': seconds, 'mb': peak}))\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["code"] != 0:
        raise SystemExit(f"worker failed ({result['code']}): {out.stderr[-2000:]}")
    return result["seconds"], result["mb"]


def measure_tasks_cli(config: Path, home: LeviathanHome) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "leviathan_dagster.cli",
            "--config",
            str(config),
            "--home",
            str(home.root),
        ]
        + ["tasks", "--json"],
        env=ENV,
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="leviathan-bench-history-") as tmp:
        for size in sizes:
            root = Path(tmp) / str(size)
            started = time.perf_counter()
            config, home = build_project(root, size)
            built = time.perf_counter() - started
            cold, warm = measure_sensor(config, home)
            run = run_python(RUN_BEFORE_EXECUTOR, str(config), str(home.root), "live-0")
            worker_s, worker_mb = measure_worker(config, home, "live-1")
            tasks_s = measure_tasks_cli(config, home)
            control = run_python(CONTROL_PLANE_START, str(home.events_path))
            row = {
                "events": NdjsonEventLog(home.events_path).head()[0],
                "sensor tick": warm,
                "first tick": cold,
                "run before executor": run["seconds"],
                "worker": worker_s,
                "worker RSS MB": worker_mb,
                "leviathan tasks": tasks_s,
                "control-plane start": control["seconds"],
            }
            rows.append(row)
            print(f"# {size:,} events: history built in {built:.1f} s", file=sys.stderr, flush=True)
            print_table(rows)
    goals(rows)


COLUMNS = (
    "sensor tick",
    "first tick",
    "run before executor",
    "worker",
    "worker RSS MB",
    "leviathan tasks",
    "control-plane start",
)


def print_table(rows: list[dict]) -> None:
    base = rows[0]
    print("\n| events | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for row in rows:
        cells = []
        for column in COLUMNS:
            unit = " MB" if column.endswith("MB") else " s"
            ratio = row[column] / base[column] if base[column] else float("nan")
            cells.append(f"{row[column]:.3f}{unit} (x{ratio:.2f})")
        print(f"| {row['events']:,} | " + " | ".join(cells) + " |")
    sys.stdout.flush()


def goals(rows: list[dict]) -> None:
    base, last = rows[0], rows[-1]
    print(f"\nratios at {last['events']:,} events against {base['events']:,}:")
    for column in COLUMNS:
        ratio = last[column] / base[column]
        print(f"  {column:<22} x{ratio:.2f}  {'ok' if ratio <= 2 else 'ABOVE the goal of 2'}")
    big = max(rows, key=lambda r: r["events"])
    print(
        f"sensor tick at {big['events']:,} events: {big['sensor tick']:.3f} s (goal < 2 s); "
        f"worker peak RSS at most {max(r['worker RSS MB'] for r in rows):.0f} MB (goal < 200 MB)"
    )


if __name__ == "__main__":
    main()
