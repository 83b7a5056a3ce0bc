"""A backlog is parsed once per version of its file: results cached by git blob id, in memory and on disk.

Every scheduler tick, run-time re-check and ``leviathan`` command reads every target's backlog, and
almost always the file has not changed since the last read. Git names each version of a file by the
hash of its bytes (the blob id), so ``(blob id, source)`` identifies the parse result exactly: the
same bytes always give the same tasks, warnings or problems. The in-memory cache serves a long-lived
process (the daemon's code server); the disk cache, under ``<home>/cache/backlogs/``, serves the short
ones (each ``leviathan`` command, each run worker).

The disk cache sits in a folder named after a fingerprint of the parser's own source files, so a
Leviathan upgrade that changes the validation rules never reads results of the old rules. A cache file
that cannot be read (truncated, edited, from another version) is a miss: the backlog is parsed again
and the file rewritten. Only results that JSON carries exactly are written to disk (an exotic YAML
value in a task's extra keys, such as a date, keeps that backlog in memory only).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import fields
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from leviathan_dagster.core import models
from leviathan_dagster.core.attempts import path_policy as paths
from leviathan_dagster.core.backlog import document as backlog
from leviathan_dagster.core.config import yaml_nodes as yamlnodes
from leviathan_dagster.core.errors import BacklogError
from leviathan_dagster.core.models import Backlog, Task

# Backlogs kept parsed in one process: more than the targets of a large fleet, each in a few versions.
MEMORY_ENTRIES = 512
_FORMAT = 1
_TUPLE_FIELDS = {f.name for f in fields(Task) if str(f.type).startswith("tuple")}

_memory: OrderedDict[tuple[str, str], Backlog | BacklogError] = OrderedDict()


def parse_backlog_cached(
    blob_id: str, source: str, read_text: Callable[[], str], *, cache_dir: Path | None = None
) -> Backlog:
    """The parsed backlog of the file whose git blob id is ``blob_id`` (``read_text`` gives its text on a
    miss). Raises the same BacklogError ``parse_backlog`` raises, from the cache when it was seen."""
    key = (blob_id, source)
    result = _memory.get(key)
    if result is None:
        result = _read_disk(cache_dir, blob_id, source)
        if result is None:
            try:
                result = backlog.parse_backlog(read_text(), source=source)
            except BacklogError as exc:
                result = exc
            _write_disk(cache_dir, blob_id, source, result)
        _memory[key] = result
        if len(_memory) > MEMORY_ENTRIES:
            _memory.popitem(last=False)
    else:
        _memory.move_to_end(key)
    if isinstance(result, BacklogError):
        raise BacklogError(result.problems)
    return result


def clear_memory() -> None:
    """Forget the in-memory results (tests; the disk cache stays)."""
    _memory.clear()


@cache
def parser_fingerprint() -> str:
    """A hash of the modules whose code decides a parse result: a new rule means a new cache folder."""
    digest = hashlib.sha256(str(_FORMAT).encode())
    for module in (backlog, models, paths, yamlnodes):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def _path(cache_dir: Path, blob_id: str, source: str) -> Path:
    name = hashlib.sha256(f"{blob_id}\0{source}".encode()).hexdigest()[:32]
    return cache_dir / parser_fingerprint() / f"{name}.json"


def _read_disk(cache_dir: Path | None, blob_id: str, source: str) -> Backlog | BacklogError | None:
    if cache_dir is None:
        return None
    try:
        data = json.loads(_path(cache_dir, blob_id, source).read_text(encoding="utf-8"))
        if data["blob"] != blob_id or data["source"] != source:
            return None
        if "problems" in data:
            return BacklogError([str(p) for p in data["problems"]])
        return Backlog(
            source=source,
            tasks=tuple(_task(entry) for entry in data["tasks"]),
            warnings=tuple(data["warnings"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: parse again


def _task(entry: dict[str, Any]) -> Task:
    values = {
        name: tuple(value) if name in _TUPLE_FIELDS else value
        for name, value in entry.items()
        if name != "extra"
    }
    return Task(**values, extra=MappingProxyType(entry["extra"]))


def _write_disk(cache_dir: Path | None, blob_id: str, source: str, result: Backlog | BacklogError) -> None:
    if cache_dir is None:
        return
    data: dict[str, Any] = {"blob": blob_id, "source": source}
    if isinstance(result, BacklogError):
        data["problems"] = result.problems
    else:
        tasks = [{f.name: _plain(getattr(task, f.name)) for f in fields(Task)} for task in result.tasks]
        data["tasks"], data["warnings"] = tasks, list(result.warnings)
    if not _exact(data):
        return  # a value JSON would change (a date, a set): memory only
    text = json.dumps(data, ensure_ascii=False)
    path = _path(cache_dir, blob_id, source)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: a reader never sees half a file, two writers never mix theirs.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only or full home only costs the next process a parse


def _plain(value: Any) -> Any:
    if isinstance(value, MappingProxyType):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _exact(value: Any) -> bool:
    """Whether JSON gives ``value`` back unchanged (tuples come back through ``_TUPLE_FIELDS``)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return not isinstance(value, float) or value == value  # NaN never compares equal
    if isinstance(value, (list, tuple)):
        return all(_exact(item) for item in value)
    if isinstance(value, (dict, MappingProxyType)):
        return all(isinstance(k, str) and _exact(v) for k, v in value.items())
    return False
