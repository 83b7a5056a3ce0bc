"""YAML read as PyYAML's node tree, so every problem can name file and line; and the problem collector.

Shared by the backlog and the project config: both report ``file:line: who: message. Fix: ...`` and
collect every problem before raising.
"""

from __future__ import annotations

import codecs
import gc
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import yaml

from leviathan_dagster.core.errors import ConfigError

# Limits of what is parsed at all. A backlog of 100,000 tasks is about 12 MiB; nobody writes a config or a
# backlog nested deeper than a dozen levels, while PyYAML's composer and constructor recurse once per
# level (a few thousand levels overflow the stack, and libyaml's composer does not even check). Aliases
# are counted by what they expand to, so a "billion laughs" document is refused before anything walks it.
MAX_YAML_BYTES = 32 * 1024 * 1024
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 5_000_000
# The characters YAML 1.1 allows in a stream (PyYAML's Reader refuses the others, without a line number).
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_UTF_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
_SAVE_AS_UTF8 = "save the file as UTF-8 text (no BOM), e.g. `iconv -t UTF-8`"


class YamlDocument:
    """A composed YAML document: nodes keep their marks (line numbers); values are built on demand.

    Raises ConfigError naming file, line and column if the text is not valid YAML.
    """

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self._loader = yaml.SafeLoader(text)
        try:
            self.root: yaml.Node | None = self._loader.get_single_node()
            if self.root is not None:
                # Construct once up front so unknown tags fail here, as a located error, not later.
                self._loader.construct_document(self.root)
        except yaml.MarkedYAMLError as exc:
            raise ConfigError(yaml_error_message(exc, text, source)) from None
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"{source}:1: invalid YAML: {exc}. Fix: save the file as UTF-8 YAML text."
            ) from None
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


def decode_yaml_bytes(data: bytes, source: str) -> str:
    """The text of a YAML file read as bytes; ConfigError (line, fix) when it is not UTF-8 or too big.

    A UTF-8 byte-order mark is dropped (editors on Windows write one); UTF-16 and UTF-32 are refused by
    name rather than shown as a page of "unacceptable character" errors.
    """
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(
            f"{source}:1: the file is {len(data):,} bytes, more than the {MAX_YAML_BYTES:,} bytes Leviathan "
            "reads. Fix: split it or remove what is not needed."
        )
    for bom, name in _UTF_BOMS:
        if data.startswith(bom):
            raise ConfigError(f"{source}:1: the file is {name}-encoded. Fix: {_SAVE_AS_UTF8}.")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{source}:{line}: byte 0x{data[exc.start]:02x} is not UTF-8 (offset {exc.start}). "
            f"Fix: {_SAVE_AS_UTF8}."
        ) from None


@contextmanager
def parsing_paused_gc() -> Iterator[None]:
    # Composing a large document allocates millions of objects that all stay alive; the cyclic collector
    # would walk them again and again (two thirds of the time for 100k tasks) to find nothing to free.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def check_yaml_text(text: str, source: str) -> None:
    """Refuse, as a located ConfigError, a text that cannot be parsed safely: too large, characters YAML
    does not allow (NUL: a binary or UTF-16 file), nesting deeper than MAX_YAML_DEPTH, or aliases that
    expand past MAX_YAML_NODES. Syntax errors are left to ``YamlDocument``, which locates them better.

    One pass over the parser's events, iterative (no recursion), before anything is composed.
    """
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(
            f"{source}:1: the file has {len(text):,} characters, more than the {MAX_YAML_BYTES:,} Leviathan "
            "reads. Fix: split it or remove what is not needed."
        )
    text = text.removeprefix("\ufeff")
    bad = _NON_PRINTABLE.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        char = bad.group()
        if char == "\x00":
            hint = "a NUL byte: the file is binary or UTF-16/UTF-32-encoded"
            fix = _SAVE_AS_UTF8
        else:
            hint = f"the control character {char!r}, which YAML does not allow"
            fix = "remove it (or write it as an escape inside a double-quoted string)"
        raise ConfigError(f"{source}:{line}:{column}: the file contains {hint}. Fix: {fix}.")
    if "\ufffd" in text:
        index = text.index("\ufffd")
        line = text.count("\n", 0, index) + 1
        raise ConfigError(
            f"{source}:{line}: the file contains bytes that are not UTF-8 (shown as U+FFFD). "
            f"Fix: {_SAVE_AS_UTF8}."
        )
    _check_structure(text, source)


def _check_structure(text: str, source: str) -> None:
    # libyaml is ten times faster, but stops at 1,000 levels with an error of its own ("exceeded maximum
    # nesting depth") before our limit is reached, which would leave the document to PyYAML's recursive
    # composer: then the pure-Python parser (a state machine, no recursion) makes the same pass instead.
    # Any other error is a syntax error, which YamlDocument locates and explains.
    # Without an anchor ('&') there is no alias to expand, and the size cap bounds the values.
    count_aliases = "&" in text
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            _walk_events(fast(text), source, count_aliases=count_aliases)
            return
        except yaml.YAMLError as exc:
            if "nesting depth" not in str(exc):
                return
    try:
        _walk_events(yaml.SafeLoader(text), source, count_aliases=count_aliases)
    except yaml.YAMLError:
        return  # reported by YamlDocument, with its line and fix


def _walk_events(loader: Any, source: str, *, count_aliases: bool) -> None:
    """Raise ConfigError at the first collection nested deeper than MAX_YAML_DEPTH, or (with
    ``count_aliases``) once the values, aliases expanded, pass MAX_YAML_NODES. Dispatches on the event's
    exact type: this runs over every event of a 100,000-task backlog."""
    depth = 0
    # With anchors: one [expanded size so far, anchor] per open collection, and each anchor's size.
    stack: list[list[Any]] = []
    sizes: dict[str, int] = {}
    total = 0
    get_event = loader.get_event
    try:
        with parsing_paused_gc():
            while True:
                event = get_event()
                kind = type(event)
                if kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                    depth += 1
                    if depth > MAX_YAML_DEPTH:
                        raise ConfigError(
                            f"{source}:{event.start_mark.line + 1}: values are nested more than "
                            f"{MAX_YAML_DEPTH} levels deep. Fix: flatten the structure."
                        )
                    if count_aliases:
                        stack.append([1, event.anchor])
                        total += 1
                    continue
                if kind is yaml.StreamEndEvent:
                    return
                if not count_aliases:
                    if kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                        depth -= 1
                    continue
                if kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                    depth -= 1
                    count, anchor = stack.pop()
                elif kind is yaml.ScalarEvent:
                    count, anchor = 1, event.anchor
                    total += 1
                elif kind is yaml.AliasEvent:
                    count, anchor = sizes.get(event.anchor, 1), None
                    total += count
                else:
                    continue
                if anchor is not None:
                    sizes[anchor] = count
                if stack:
                    stack[-1][0] += count
                if total > MAX_YAML_NODES:
                    raise ConfigError(
                        f"{source}:{event.start_mark.line + 1}: the document expands to more than "
                        f"{MAX_YAML_NODES:,} values (aliases count as what they repeat). "
                        "Fix: write the values out instead of nesting aliases."
                    )
    finally:
        loader.dispose()


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
