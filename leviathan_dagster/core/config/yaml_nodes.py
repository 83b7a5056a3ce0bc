"""YAML read as PyYAML's node tree, so every problem can name file and line; and the problem collector.

Shared by the backlog and the project config: both report ``file:line: who: message. Fix: ...`` and
collect every problem before raising.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from leviathan_dagster.core.errors import ConfigError

# libyaml's loader composes the same node tree with the same marks (line, column) more than ten times
# faster than pure Python (a 1,000-task backlog: 1.3 s -> 0.1 s), so it is used whenever PyYAML was
# built with it. Its error messages are terser ("did not find expected ','" where pure Python says
# "expected ',' or ']', but got ':'"), so a document that fails is composed again by the pure-Python
# loader, which then raises the error the user sees: the error path stays exactly as it was and costs
# only when the file is broken. The two trees were compared node by node (tag, value, marks' line,
# column and index, with CRLF and non-BMP text; tests/test_yamlnodes.py): they differ only in a plain
# scalar's style, '' for libyaml and None for pure Python, which ``_plain_style_as_none`` evens out.
_FAST_LOADER = getattr(yaml, "CSafeLoader", None)


class YamlDocument:
    """A composed YAML document: nodes keep their marks (line numbers); values are built on demand.

    Raises ConfigError naming file, line and column if the text is not valid YAML.
    """

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        if _FAST_LOADER is not None:
            try:
                self._compose(_FAST_LOADER, text)
                _plain_style_as_none(self.root)
                return
            except yaml.YAMLError:
                pass  # composed again below, for the pure-Python loader's (clearer) message
        try:
            self._compose(yaml.SafeLoader, text)
        except yaml.MarkedYAMLError as exc:
            raise ConfigError(yaml_error_message(exc, text, source)) from None
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"{source}:1: invalid YAML: {exc}. Fix: save the file as UTF-8 YAML text."
            ) from None

    def _compose(self, loader_class: type, text: str) -> None:
        self._loader = loader_class(text)
        try:
            self.root: yaml.Node | None = self._loader.get_single_node()
            if self.root is not None:
                # Construct once up front so unknown tags fail here, as a located error, not later.
                self._loader.construct_document(self.root)
        finally:
            self._loader.dispose()

    def value(self, node: yaml.Node) -> Any:
        return self._loader.construct_object(node, deep=True)


def _line_count(text: str) -> int:
    return max(1, text.count("\n") + (0 if text.endswith("\n") else 1))


def _yaml_fix(problem: str) -> str:
    if "'\\t'" in problem or "tab" in problem:
        return "indent with spaces: YAML does not allow tabs in indentation"
    if "constructor for the tag" in problem:
        return "remove the '!' tag: only plain YAML values are read"
    if "end of stream" in problem and "quoted" in problem:
        return "close the quote that starts here"
    if "found duplicate anchor" in problem or "undefined alias" in problem:
        return "define each '&anchor' once, before any '*alias' to it"
    return "check the indentation and quoting on this line"


def yaml_error_message(exc: yaml.MarkedYAMLError, text: str, source: str) -> str:
    """``file:line:column: invalid YAML: ... Fix: ...`` for a PyYAML error, with a line that exists.

    PyYAML marks a construct left open (a quote, a '[', a key without ':') at the end of the stream: one
    line past the last one of a file ending in a newline. The line where the open construct started (the
    error's context mark) is what the reader has to fix, so that one is named, with where it ran out.
    """
    problem, context = exc.problem or "", exc.context or ""
    mark, last = exc.problem_mark or exc.context_mark, _line_count(text)
    at_end = mark is not None and (mark.index >= len(text.rstrip()) or mark.line + 1 > last)
    if at_end and exc.context_mark is not None and exc.context_mark is not mark:
        mark = exc.context_mark
        problem = f"{problem} (the file ends before it is closed)".replace(
            "<stream end>", "the end of the file"
        )
    if mark is None:
        where = source
    else:
        where = f"{source}:{min(mark.line + 1, last)}:{mark.column + 1}"
    reason = " ".join(part for part in (context, problem) if part)
    return f"{where}: invalid YAML: {reason}. Fix: {_yaml_fix(reason)}."


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance with adjacent transpositions (``titel`` is one edit from ``title``)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            cost = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, previous2[j - 2] + 1)
            current.append(cost)
        previous2, previous = previous, current
    return previous[-1]


def close_key(name: str, known: Iterable[str]) -> str | None:
    """The known key ``name`` is most likely a typo of (one or two edits away, by length), or None.

    Such a key is an error, not an ignored unknown one: ``test_commnd:`` would otherwise run no tests.
    """
    folded = name.lower()
    allowed = 1 if len(name) < 6 else 2
    best = min(((_edit_distance(folded, k.lower()), k) for k in known if k != name), default=None)
    return best[1] if best is not None and best[0] <= allowed else None


def _plain_style_as_none(root: yaml.Node | None) -> None:
    """Give libyaml's plain scalars the style pure Python gives them (None), so no reader can tell."""
    stack, seen = [root] if root is not None else [], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:  # an alias shares its anchor's node; anchors may even be recursive
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            if node.style == "":
                node.style = None
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def describe(node: yaml.Node) -> str:
    """How a value is shown after "got" in messages: as written in the file."""
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if node.tag == "tag:yaml.org,2002:null":
        return "nothing"
    if node.tag == "tag:yaml.org,2002:str":
        return repr(node.value)
    return node.value


@dataclass
class Reporter:
    """Collects the problems and warnings of one file, each as ``file:line: who: message. Fix: ...``."""

    source: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def format(self, at: yaml.Node | int, who: str, message: str, fix: str | None = None) -> str:
        line = at if isinstance(at, int) else line_of(at)
        return f"{self.source}:{line}: {who}{message}" + (f". Fix: {fix.rstrip('.')}." if fix else "")

    def error(self, at: yaml.Node | int, who: str, message: str, fix: str | None = None) -> None:
        self.problems.append(self.format(at, who, message, fix))

    def warn(self, at: yaml.Node | int, who: str, message: str, fix: str | None = None) -> None:
        self.warnings.append(self.format(at, who, message, fix))

    def unknown_key(
        self,
        key: yaml.Node,
        who: str,
        what: str,
        known: Iterable[str],
        present: Iterable[str] = (),
        known_note: str = "",
    ) -> None:
        """Report an unknown key: a warning (a newer Leviathan may know it), unless it is a typo of a
        known key that is not given too, which is an error: ``test_commnd:`` ignored would run no tests."""
        close = close_key(str(key.value), known)
        if close is not None and close not in set(present):
            self.error(key, who, f"{what} is unknown (did you mean {close}?)", f"rename it to '{close}:'")
        else:
            self.warn(key, who, f"unknown {what} is ignored{known_note}")

    def items(self, node: yaml.MappingNode, who: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """The mapping's entries by key. Duplicate keys are errors: YAML would silently keep the last."""
        items: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag != "tag:yaml.org,2002:str":
                self.error(
                    key, who, f"key {describe(key)} is not a field name", "write the key as a plain word"
                )
            elif key.value in items:
                first = line_of(items[key.value][0])
                self.error(
                    key,
                    who,
                    f"field {key.value!r} is given twice (lines {first} and {line_of(key)})",
                    "keep only one of them",
                )
            else:
                items[key.value] = (key, value)
        return items
