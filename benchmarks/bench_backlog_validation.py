"""How long backlog validation takes: a 100,000-task backlog, a 1,000-task dependency chain, and the
hostile inputs of issue 11 (each must be a clear error in well under a second).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_backlog_validation.py [--tasks 100000]

Prints one line per case: wall-clock and CPU seconds (best of ``--repeat``; on a shared machine the CPU
time is the figure to compare) and the outcome (tasks, or the first problem).
"""

from __future__ import annotations

import argparse
import time

from leviathan_dagster.core.backlog.document import parse_backlog
from leviathan_dagster.core.errors import BacklogError


def backlog(n: int, *, chain: bool = False, cycle: bool = False) -> str:
    lines = ["tasks:"]
    for i in range(n):
        lines += [f"  - id: t{i}", f"    title: Task {i}", "    ready: true", "    generator: docs"]
        lines += ["    allowed_paths:", f"      - docs/t{i}.md"]
        if chain and (i or cycle):
            lines += ["    dependencies:", f"      - t{(i - 1) % n}"]
    return "\n".join(lines) + "\n"


def hostile() -> dict[str, str]:
    laughs = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    laughs += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return {
        "flow nesting 400 deep": "tasks: " + "[" * 400 + "]" * 400 + "\n",
        "flow nesting 100,000 deep": "tasks: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "NUL byte": "tasks:\n  - id: a\x00\n",
        "UTF-16 read as text": "\ufffd\ufffdt\x00a\x00s\x00k\x00s\x00",
        "billion laughs": "\n".join(laughs) + "\ntasks: *a8\n",
        "1,000-task cycle": backlog(1_000, chain=True, cycle=True),
        "over the size cap": "tasks: []\n" + "#" * (33 * 1024 * 1024),
    }


def measure(text: str, repeat: int) -> tuple[float, float, str]:
    best, best_cpu, outcome = float("inf"), float("inf"), ""
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            outcome = f"{len(parse_backlog(text).tasks)} tasks"
        except BacklogError as exc:
            outcome = f"error: {exc.problems[0][:90]}"
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    return best, best_cpu, outcome


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    cases = {
        f"{args.tasks:,} tasks": backlog(args.tasks),
        "1,000-task chain": backlog(1_000, chain=True),
        **hostile(),
    }
    for name, text in cases.items():
        seconds, cpu, outcome = measure(text, args.repeat)
        print(f"{name:<26} {seconds:7.3f} s wall {cpu:7.3f} s cpu  {outcome}")


if __name__ == "__main__":
    main()
