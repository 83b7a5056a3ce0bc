"""The tools offered to Claude and the dispatch of one ``tool_use`` block to its ``tool_result``.

Anthropic's own client tools where they exist: the text editor (``text_editor_20250728``, name
``str_replace_based_edit_tool``) and, when the sandbox can be created here, bash (``bash_20250124``).
Ours for the rest: ``find_files``, ``grep``, ``delete_file`` and ``run_tests`` (the harness's verdict).
Every refusal (a write out of scope, a read out of the workspace) goes back to the model as an error
result it can correct, and is counted in ``refusals`` for the attempt's record.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from leviathan_dagster.core.generators.claude import search as claude_search
from leviathan_dagster.core.generators.claude.tools import (
    MAX_VIEW_CHARS,
    OutOfScope,
    OutOfWorkspace,
    ScopedWorkspace,
    ToolError,
)

log = logging.getLogger("leviathan.claude")

EDITOR_TOOL = {
    "type": "text_editor_20250728",
    "name": "str_replace_based_edit_tool",
    "max_characters": MAX_VIEW_CHARS,
}
BASH_TOOL = {"type": "bash_20250124", "name": "bash"}
_GLOB = {"type": "string", "description": "a glob: '*.py' matches anywhere, 'src/**/*.py' under src/"}
CUSTOM_TOOLS = [
    {
        "name": "find_files",
        "description": "List the repository's files (git-visible, .git excluded) whose path matches a glob.",
        "input_schema": {"type": "object", "properties": {"pattern": _GLOB}},
    },
    {
        "name": "grep",
        "description": (
            "Search every file of the repository for a Python regular expression; prints path:line:text, "
            "with context lines around each match, capped at max_results matches."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "a Python regular expression"},
                "glob": _GLOB,
                "context_lines": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": claude_search.MAX_CONTEXT_LINES,
                },
                "ignore_case": {"type": "boolean"},
                "max_results": {"type": "integer", "minimum": 1, "maximum": claude_search.MAX_MATCHES},
            },
            "required": ["pattern"],
        },
    },
    {
        "name": "delete_file",
        "description": "Delete a file inside the paths this task may change.",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string", "description": "repository-relative path"}},
            "required": ["path"],
        },
    },
    {
        "name": "run_tests",
        "description": "Run the repository's configured test command and return its exit code and output.",
        "input_schema": {"type": "object", "properties": {}},
    },
]
# The loop stops the attempt after this many refused writes: a model that keeps trying to leave its
# scope after being told each time is not going to produce a mergeable change.
MAX_REFUSED_WRITES = 8


def tool_definitions(*, bash: bool) -> list[dict]:
    return [EDITOR_TOOL, *([BASH_TOOL] if bash else []), *CUSTOM_TOOLS]


class Toolbox:
    """Runs the tools of one attempt. ``run_tests`` and ``bash`` are given by the loop, which owns the
    clock; ``bash`` is None when the sandbox is unavailable (the tool is then never offered)."""

    def __init__(
        self,
        workspace: ScopedWorkspace,
        run_tests: Callable[[], str],
        bash: Callable[[dict], str] | None = None,
    ) -> None:
        self.workspace, self.run_tests, self.bash = workspace, run_tests, bash
        self.calls: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()

    def definitions(self) -> list[dict]:
        return tool_definitions(bash=self.bash is not None)

    def use(self, block: dict) -> dict:
        name, args = block.get("name"), block.get("input")
        args = args if isinstance(args, dict) else {}
        self.calls[str(name)] += 1
        log.info("tool %s %s", name, args.get("command", "") if name != "bash" else "(command)")
        try:
            output = self._dispatch(str(name), args)
        except OutOfScope as exc:
            self.refusals["write_out_of_scope"] += 1
            return _result(block, str(exc), error=True)
        except OutOfWorkspace as exc:
            self.refusals["read_out_of_workspace"] += 1
            return _result(block, str(exc), error=True)
        except (ToolError, TypeError) as exc:  # TypeError: missing or unexpected arguments
            return _result(block, str(exc), error=True)
        return _result(block, output)

    def _dispatch(self, name: str, args: dict) -> str:
        if name == "str_replace_based_edit_tool":
            return self.workspace.editor(**args)
        if name == "bash" and self.bash is not None:
            return self.bash(args)
        if name == "find_files":
            return claude_search.find_files(self.workspace, **args)
        if name == "grep":
            return claude_search.grep(self.workspace, **args)
        if name == "delete_file":
            return self.workspace.delete_file(**args)
        if name == "run_tests":
            return self.run_tests()
        raise ToolError(f"unknown tool {name!r}")

    @property
    def refused_writes(self) -> int:
        return self.refusals["write_out_of_scope"]


def _result(block: dict, content: str, *, error: bool = False) -> dict:
    result = {"type": "tool_result", "tool_use_id": block["id"], "content": content or "(no output)"}
    if error:
        result["is_error"] = True
    return result
