"""What YAML Leviathan parses at all: size, encoding, characters, nesting and alias expansion.

A backlog comes from a repository Leviathan does not control, and PyYAML's composer and constructor recurse
once per nesting level (libyaml's composer does not even check), so a hostile file is refused here, with
its line and the fix, before anything is composed. Used by the backlog and the project config.
"""

from __future__ import annotations

import codecs
import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml

from leviathan_dagster.core.errors import ConfigError

# A backlog of 100,000 tasks is about 12 MiB; nobody nests a config or a backlog deeper than a dozen
# levels, while PyYAML's composer and constructor recurse once per level (a few thousand levels overflow
# the stack). Aliases count as what they expand to, so a "billion laughs" document is refused before
# anything walks it.
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
