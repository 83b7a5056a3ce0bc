"""What does one Claude attempt cost, against what it must cost?

    python benchmarks/bench_agent_cost.py

Builds a realistic repository (a package of 16 modules, their tests, docs, a README) in a temporary
directory and runs the real ClaudeGenerator, through the real anthropic SDK, against the Messages
double with a scripted 30-turn trajectory like a competent agent's: find the files, grep for a symbol,
view a dozen modules (each ~1,300 tokens), edit the files in scope, view again, lint, finish.

Printed per attempt, for the model's own cache multipliers (claude-sonnet-4-6: 5-minute write 1.25x,
read 0.1x):

- billed input-token equivalents: sum over calls of input + 1.25 x cache writes + 0.1 x cache reads;
- the floor: every distinct prompt token billed once at full price (the union of all blocks sent);
- the same attempt without caching or context clearing (every call re-billing its whole prompt);
- the harness's overhead per tool call: wall time between a reply and the next request, less the
  client's latency, divided by the tool calls answered (ms).

Goal: billed at most 1.5 x the floor.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a plain script from a checkout: the package and the test double importable without installing.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from anthropic_double import AnthropicDouble, reply, text, tool_use  # noqa: E402
from anthropic_double.validation import cacheable_blocks  # noqa: E402

from leviathan_dagster.core.generators.base import GenerationContext  # noqa: E402
from leviathan_dagster.core.generators.claude.generator import ClaudeGenerator  # noqa: E402
from leviathan_dagster.core.generators.claude.prices import price_for  # noqa: E402
from leviathan_dagster.core.generators.claude.settings import ClaudeSettings  # noqa: E402
from leviathan_dagster.core.models import Policy, Task  # noqa: E402

MODEL = "claude-sonnet-4-6"
# The same token counts billed at each model's cache-read multiplier: 0.1x, 0.05x, 0.025x.
MODELS = ("claude-sonnet-4-6", "claude-sonnet-5-5", "claude-fable-5-1")
AGGRESSIVE_CLEAR_TOKENS = 12_000
MODULES = 16
TURNS = 30


def module_source(index: int) -> str:
    lines = [f'"""Module {index} of the ledger package: accounts, postings and their checks."""', ""]
    lines += ["from __future__ import annotations", "", "import dataclasses", "import decimal", ""]
    for fn in range(12):
        lines += [
            "",
            f"def reconcile_{index}_{fn}(postings: list[dict], tolerance: decimal.Decimal) -> dict:",
            f'    """Sum the postings of batch {fn} and report the ones outside ``tolerance``."""',
            "    total = sum(decimal.Decimal(p['amount']) for p in postings)",
            "    outliers = [p for p in postings if abs(decimal.Decimal(p['amount'])) > tolerance]",
            f"    return {{'batch': {fn}, 'total': str(total), 'outliers': len(outliers)}}",
        ]
    return "\n".join(lines) + "\n"


def build_repository(root: Path) -> None:
    files = {f"ledger/module_{i:02d}.py": module_source(i) for i in range(MODULES)}
    files["ledger/__init__.py"] = '"""A small double-entry ledger."""\n'
    files |= {f"tests/test_module_{i:02d}.py": f"import ledger.module_{i:02d}\n" for i in range(MODULES)}
    files["docs/reconcile.md"] = "# Reconciliation\n\nTODO\n"
    files["README.md"] = "# ledger\n\nA small double-entry ledger. See docs/.\n"
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=root, check=True)


def edit(command: str, **arguments) -> dict:
    return tool_use("str_replace_based_edit_tool", command=command, **arguments)


def trajectory() -> list[dict]:
    turns = [
        reply(text("Let me look around."), tool_use("find_files", pattern="*.py")),
        reply(tool_use("grep", pattern=r"def reconcile_3_\d", context_lines=2)),
    ]
    turns += [reply(edit("view", path=f"ledger/module_{i:02d}.py")) for i in range(12)]
    turns.append(reply(edit("create", path="docs/reconcile.md", file_text="# Reconciliation\n\n")))
    for step in range(11):
        new = f"- `reconcile_{step}_0` sums batch 0 of module {step} and counts its outliers."
        turns.append(reply(edit("insert", path="docs/reconcile.md", insert_line=2 + step, insert_text=new)))
    turns += [reply(edit("view", path="docs/reconcile.md"))]
    turns += [reply(tool_use("grep", pattern="TODO", glob="docs/*"))]
    turns += [reply(edit("view", path="ledger/module_03.py", view_range=[1, 20]))]
    turns.append(reply(text("Documented the reconcile functions.")))
    assert len(turns) == TURNS, len(turns)
    return turns


def token_count(block: dict) -> int:
    plain = {k: v for k, v in block.items() if k != "cache_control"}
    return math.ceil(len(json.dumps(plain, sort_keys=True, separators=(",", ":"))) / 4)


def billed(calls, model: str) -> float:
    """Input-token equivalents at ``model``'s own cache multipliers."""
    price = price_for(model)
    return sum(
        c.input_tokens
        + c.cache_creation_input_tokens * price.cache_write / price.input
        + c.cache_read_input_tokens * price.cache_read / price.input
        for c in calls
    )


def run_attempt(workdir: Path, name: str, *, caching: bool = True, clear_tokens: int | None = None) -> dict:
    repo = workdir / name
    repo.mkdir()
    build_repository(repo)
    task = Task(
        id="doc",
        title="Document the reconcile functions",
        ready=True,
        allowed_paths=("docs/reconcile.md",),
        executor="claude",
    )
    with AnthropicDouble(trajectory(), api_key="sk-ant-bench") as api:
        settings = ClaudeSettings(
            api_key=api.api_key, model=MODEL, base_url=api.base_url, max_turns=TURNS + 5
        )
        if clear_tokens is not None:
            settings = dataclasses.replace(settings, context_clear_tokens=clear_tokens)
        generator = ClaudeGenerator(settings)
        context = GenerationContext(
            policy=Policy(allowed_path_prefixes=("docs/",), max_tokens_per_attempt=10**7)
        )
        if not caching:
            _strip_cache_control(generator)
        change = generator.generate(task, repo, context)
        assert api.errors == [], api.errors
        requests, responses = api.requests, api.responses
    calls = context.usage.calls
    distinct: dict[str, int] = {}
    for recorded in requests:
        for _, block in cacheable_blocks(recorded.body):
            plain = json.dumps({k: v for k, v in block.items() if k != "cache_control"}, sort_keys=True)
            distinct[plain] = token_count(block)
    tool_calls = [sum(1 for b in r["content"] if b["type"] == "tool_use") for r in responses]
    overhead = []
    for i in range(len(requests) - 1):
        gap = requests[i + 1].at - requests[i].at - calls[i].latency_seconds
        if tool_calls[i]:
            overhead.append(gap / tool_calls[i])
    return {
        "calls": len(calls),
        "billed": {model: billed(calls, model) for model in MODELS},
        "floor": sum(distinct.values()),
        "prompt_tokens": sum(
            c.input_tokens + c.cache_creation_input_tokens + c.cache_read_input_tokens for c in calls
        ),
        "overhead_ms": 1000 * statistics.median(overhead),
        "clears": change.details["context_clears"],
        "parts": {
            name: sum(getattr(c, name) for c in calls)
            for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        },
    }


def _strip_cache_control(generator: ClaudeGenerator) -> None:
    """The no-caching baseline: the same requests with every cache_control breakpoint removed."""
    create = generator.client._client.messages.create

    def without_breakpoints(**request):
        for tool in request.get("tools", []):
            tool.pop("cache_control", None)
        for block in request.get("system", []):
            block.pop("cache_control", None)
        for message in request.get("messages", []):
            for block in message["content"]:
                block.pop("cache_control", None)
        return create(**request)

    generator.client._client.messages.create = without_breakpoints


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        default = run_attempt(Path(tmp), "default")
        aggressive = run_attempt(Path(tmp), "aggressive", clear_tokens=AGGRESSIVE_CLEAR_TOKENS)
        plain = run_attempt(Path(tmp), "plain", caching=False, clear_tokens=10**9)
        elapsed = time.perf_counter() - started
    floor = default["floor"]
    print(f"agent cost: one scripted {default['calls']}-call attempt on a {MODULES}-module repository")
    print(f"  floor (every distinct prompt token once, at full price): {floor:,} tokens")
    print("  billed input-token equivalents per attempt (goal <= 1.5x the floor):")
    for model in MODELS:
        line = f"    {model:<20} {default['billed'][model]:>9,.0f} = {default['billed'][model] / floor:.2f}x"
        line += f"   clearing past {AGGRESSIVE_CLEAR_TOKENS:,} tokens: "
        line += f"{aggressive['billed'][model] / aggressive['floor']:.2f}x"
        print(line)
    parts = default["parts"]
    print(
        f"    ({MODEL}: {parts['input_tokens'] / floor:.2f}x uncached input, "
        f"{1.25 * parts['cache_creation_input_tokens'] / floor:.2f}x cache writes at 1.25, "
        f"{0.1 * parts['cache_read_input_tokens'] / floor:.2f}x cache reads at 0.1: a 30-call attempt reads "
        "its growing prefix 30 times, so caching alone cannot reach 1.5x)"
    )
    no_cache = plain["billed"][MODEL] / plain["floor"]
    print(f"    without caching:     {plain['billed'][MODEL]:>9,.0f} = {no_cache:.2f}x")
    print(f"  context clears: {default['clears']} by default, {aggressive['clears']} aggressive")
    print(f"  harness overhead per tool call (median): {default['overhead_ms']:.1f} ms")
    print(f"  ({elapsed:.1f}s for three attempts)")


if __name__ == "__main__":
    main()
