"""``find_files`` (glob) and ``grep`` (regex with context lines) over the whole checkout, results capped.

Both see what ``ScopedWorkspace.files`` sees: tracked and untracked files that git does not ignore,
never ``.git`` internals, never a symlink that leads out of the workspace.
"""

from __future__ import annotations

import fnmatch
import re

from leviathan_dagster.core.generators.claude.tools import ScopedWorkspace, ToolError

MAX_FILES = 500
MAX_MATCHES = 200
MAX_CONTEXT_LINES = 10
MAX_FILE_BYTES = 2_000_000
MAX_LINE_CHARS = 400


def _matcher(pattern: object) -> re.Pattern[str] | None:
    """``**`` spans directories, ``*`` and ``?`` stay inside one; a pattern without ``/`` matches a
    file name anywhere (``*.py``), like ripgrep's ``--glob``."""
    if pattern is None or pattern == "":
        return None
    if not isinstance(pattern, str):
        raise ToolError("a glob pattern must be a string, e.g. 'src/**/*.py'")
    segments = [
        ".*"
        if seg == "**"
        else fnmatch.translate(seg).removeprefix("(?s:").removesuffix(r")\Z").replace(".*", "[^/]*")
        for seg in (pattern if "/" in pattern else "**/" + pattern).split("/")
    ]
    regex = ""
    for index, seg in enumerate(segments):
        if seg == ".*":
            regex += "(?:.*/)?" if index < len(segments) - 1 else ".*"
        else:
            regex += seg + ("/" if index < len(segments) - 1 else "")
    return re.compile(rf"(?s:{regex})\Z")


def find_files(workspace: ScopedWorkspace, pattern: object = None) -> str:
    matcher = _matcher(pattern)
    names = [n for n in workspace.files() if matcher is None or matcher.match(n)]
    if not names:
        return f"no files match {pattern!r}"
    shown = names[:MAX_FILES]
    more = f"\n[... {len(names) - MAX_FILES} more; narrow the pattern]" if len(names) > MAX_FILES else ""
    return "\n".join(shown) + more


def grep(
    workspace: ScopedWorkspace,
    pattern: object,
    glob: object = None,
    context_lines: object = 0,
    ignore_case: object = False,
    max_results: object = 50,
) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise ToolError("'pattern' must be a non-empty regular expression")
    if not isinstance(context_lines, int) or not 0 <= context_lines <= MAX_CONTEXT_LINES:
        raise ToolError(f"'context_lines' must be 0..{MAX_CONTEXT_LINES}")
    if not isinstance(max_results, int) or not 1 <= max_results <= MAX_MATCHES:
        raise ToolError(f"'max_results' must be 1..{MAX_MATCHES}")
    try:
        regex = re.compile(pattern, re.IGNORECASE if ignore_case is True else 0)
    except re.error as exc:
        raise ToolError(f"'pattern' is not a valid regular expression: {exc}") from None
    matcher = _matcher(glob)
    out: list[str] = []
    matches = 0
    for name in workspace.files():
        if matcher is not None and not matcher.match(name):
            continue
        full = workspace.root / name
        if full.stat().st_size > MAX_FILE_BYTES:
            continue
        data = full.read_bytes()
        if b"\0" in data[:8192]:
            continue
        lines = data.decode("utf-8", errors="replace").splitlines()
        hits = [i for i, line in enumerate(lines) if regex.search(line)]
        if not hits:
            continue
        shown: set[int] = set()
        for i in hits:
            if matches >= max_results:
                break
            matches += 1
            for j in range(max(0, i - context_lines), min(len(lines), i + context_lines + 1)):
                shown.add(j)
        previous = None
        for j in sorted(shown):
            if context_lines and previous is not None and j > previous + 1:
                out.append("--")
            mark = ":" if regex.search(lines[j]) else "-"
            out.append(f"{name}{mark}{j + 1}{mark}{lines[j][:MAX_LINE_CHARS]}")
            previous = j
        if matches >= max_results:
            out.append(f"[... stopped at max_results={max_results}; narrow the pattern or the glob]")
            break
    return "\n".join(out) if out else f"no match for {pattern!r}"
