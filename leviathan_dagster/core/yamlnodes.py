"""YAML read as PyYAML's node tree, so every problem can name file and line; and the problem collector.

Shared by the backlog and the project config: both report ``file:line: who: message. Fix: ...`` and
collect every problem before raising.
"""

from __future__ import annotations

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
            mark = exc.problem_mark or exc.context_mark
            where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
            reason = " ".join(part for part in (exc.context, exc.problem) if part)
            raise ConfigError(
                f"{where}: invalid YAML: {reason}. Fix: check the indentation and quoting on this line."
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: invalid YAML: {exc}") from None

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

    def items(self, node: yaml.MappingNode, who: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """The mapping's entries by key. Duplicate keys are errors: YAML would silently keep the last."""
        items: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag != "tag:yaml.org,2002:str":
                self.error(key, who, f"key {describe(key)} is not a field name")
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
