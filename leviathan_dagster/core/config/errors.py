"""Pydantic's validation errors told as Leviathan tells every problem: ``file:line: who: message. Fix:``.

The loader builds each model's input from the YAML node tree and records, for every ``loc`` it builds, the
key and value nodes it came from (``Where``). An error's ``loc`` then names its line; the field's
declaration (type, bounds, examples, found by walking the model's fields along the ``loc``) says the
message and the fix. Unknown keys (``extra="forbid"``) follow the documented rule: a typo of a known key
that is not also given is an error with "did you mean"; any other unknown key is a warning, and the loader
validates again without it.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import yaml
from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from leviathan_dagster.core.config.fields import LEVIATHAN_ERROR, FileContext
from leviathan_dagster.core.config.yaml_nodes import Reporter, close_key, describe, line_of

Loc = tuple[str | int, ...]
# loc -> (key node, value node) of the YAML that the input at that loc was built from.
Where = dict[Loc, tuple[yaml.Node | None, yaml.Node]]
Scope = Literal["project", "target", "defaults"]
_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden")
_NUMBER = ("int_type", "int_parsing", "int_from_float", "float_type", "float_parsing")
_BOUND = ("greater_than_equal", "less_than_equal", "greater_than", "less_than")
_MAPPING = ("dataclass_type", "dataclass_args_type", "dict_type", "model_type", "mapping_type")


def field_at(model: type, loc: Loc) -> tuple[str, FieldInfo] | None:
    """The deepest declared field along ``loc`` (names or aliases; list indexes and map keys skipped)."""
    found, current = None, model
    for part in loc:
        fields = getattr(current, "__pydantic_fields__", None)
        if not isinstance(part, str) or fields is None:
            continue
        name = next((n for n, f in fields.items() if part in (n, f.validation_alias)), None)
        if name is None:
            return found
        found = (name, fields[name])
        current = _model_in(fields[name].annotation)
    return found


def _model_in(annotation: Any) -> Any:
    """The dataclass a field holds (itself, optional, or as the items of a tuple), else None."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        if (inner := _model_in(arg)) is not None:
            return inner
    return None


def _choices(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return tuple(c for arg in typing.get_args(annotation) for c in _choices(arg))


def _kind(annotation: Any) -> type | None:
    """int, float or bool for a (possibly optional) number or flag field."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return annotation if annotation in (int, float, bool) else None


def _bounds(info: FieldInfo) -> tuple[Any, Any]:
    low = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in info.metadata if hasattr(m, "le")), None)
    return low, high


def example_of(info: FieldInfo) -> Any:
    if info.examples:
        return info.examples[0]
    if info.is_required():
        return None
    default = info.get_default(call_default_factory=True)
    return None if default in (None, (), {}) or dataclasses.is_dataclass(default) else default


def as_yaml(value: Any) -> str:
    """A value as one would write it in the file (flow style for collections)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip().removesuffix("...").strip()


def label_of(scope: Scope, loc: Loc, shown: str) -> str:
    """How messages name the field at ``loc``: ``field 'branch'``, ``policy 'max_open_prs'``, ..."""
    if scope == "defaults" and loc:
        return f"policy {loc[0]!r}"
    if scope == "target" and len(loc) > 1 and loc[0] == "policy":
        return f"policy {loc[1]!r}"
    if scope == "target" and len(loc) == 2 and loc[0] == "secrets":
        return f"secret {loc[1]!r}"
    if len(loc) == 1:
        return f"field {shown!r}" if scope == "target" else repr(shown)
    return dotted(loc)


def dotted(loc: Loc) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


@functools.cache
def _adapter(model: type) -> TypeAdapter:
    return TypeAdapter(model)


def validate_from_file(
    model: type,
    data: dict[str, Any],
    where: Where,
    context: FileContext,
    report: Reporter,
    who: str,
    scope: Scope,
    known_extra: Iterable[str] = (),
) -> Any:
    """``data`` validated as ``model``; None when it has problems, which go to ``report`` (all of them,
    in the file's order). ``known_extra``: keys the loader reads itself that count as known for typos."""
    for _ in range(2):
        try:
            return _adapter(model).validate_python(data, context=context)
        except ValidationError as exc:
            mapper = _ErrorMapper(model, data, where, scope, tuple(known_extra))
            problems, ignored = mapper.map(exc.errors())
            for _, message, fix, node in sorted(problems, key=lambda p: p[0]):
                report.error(node, who, message, fix)
            for _, message, node in sorted(mapper.warnings, key=lambda w: w[0]):
                report.warn(node, who, message)
            if problems or not ignored:
                return None
            for loc in ignored:  # unknown keys only warned about: validate once more without them
                _drop(data, loc)
    return None


def _drop(data: Any, loc: Loc) -> None:
    for part in loc[:-1]:
        data = data[part]
    data.pop(loc[-1], None)


@dataclasses.dataclass
class _ErrorMapper:
    model: type
    data: dict[str, Any]
    where: Where
    scope: Scope
    known_extra: tuple[str, ...]
    warnings: list[tuple[int, str, yaml.Node]] = dataclasses.field(default_factory=list)

    def node(self, loc: Loc) -> tuple[yaml.Node | None, yaml.Node | int]:
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.where:
                return self.where[loc[:end]]
        return None, 1

    def map(self, errors: list[Any]) -> tuple[list[tuple[int, str, str | None, Any]], list[Loc]]:
        problems, ignored = [], []
        model = self.model
        for error in errors:
            loc = tuple(error["loc"])
            if error["type"] in _UNKNOWN:
                problem = self.unknown(model, loc)
                if problem is None:
                    ignored.append(loc)
                else:
                    problems.append(problem)
                continue
            key, node = self.node(loc[:-1] if error["type"] == "missing" else loc)
            field = field_at(model, loc)
            info = field[1] if field is not None else None
            # The key as the file spells it (pydantic's loc holds aliases: 'secrets', not 'secret_env').
            name = next((str(part) for part in reversed(loc) if isinstance(part, str)), "")
            shown = str(key.value) if key is not None and loc and error["type"] != "missing" else name
            label = label_of(self.scope, loc, shown)
            message, fix = self.explain(error, loc, label, name, info, node)
            got = describe(node) if isinstance(node, yaml.Node) else "nothing"
            fill = {"{label}": label, "{got}": str(got), "{key}": shown, "{KEY}": shown.upper()}
            for placeholder, value in fill.items():
                message = message.replace(placeholder, value)
                fix = fix.replace(placeholder, value) if fix else fix
            line = node if isinstance(node, int) else line_of(node)
            problems.append((line, message, fix, node))
        return problems, ignored

    def unknown(self, model: Any, loc: Loc) -> tuple[int, str, str, Any] | None:
        """The typo error for an unknown key, or None once it is reported as an ignored key (warning)."""
        key, parent_node = self.node(loc)
        at = key if key is not None else parent_node
        parent = field_at(model, loc[:-1])
        owner = _model_in(parent[1].annotation) if parent else model
        fields = [f.validation_alias or n for n, f in owner.__pydantic_fields__.items()]
        known = [*fields, *(self.known_extra if len(loc) == 1 else ())]
        present = self.data
        for part in loc[:-1]:
            present = present[part]
        name = str(key.value if key is not None else loc[-1])
        what, note = self.unknown_what(loc, name, fields)
        close = close_key(name, [k for k in known if isinstance(k, str)])
        if close is not None and close not in present:
            line = at if isinstance(at, int) else line_of(at)
            return line, f"{what} is unknown (did you mean {close}?)", f"rename it to '{close}:'", at
        self.warnings.append(
            (at if isinstance(at, int) else line_of(at), f"unknown {what} is ignored{note}", at)
        )
        return None

    def unknown_what(self, loc: Loc, name: str, known: list[str]) -> tuple[str, str]:
        note = f" (known: {', '.join(known)})"
        if self.scope == "defaults":
            return f"policy {name!r}", ""
        if len(loc) == 1:
            return (f"field {name!r}", "") if self.scope == "target" else (f"top-level key {name!r}", "")
        if loc[0] == "policy" and self.scope == "target":
            return f"policy {name!r}", note
        return f"field '{dotted(loc)}'", note

    def explain(
        self, error: Mapping[str, Any], loc: Loc, label: str, name: str, info: FieldInfo | None, node: Any
    ) -> tuple[str, str | None]:
        kind = error["type"]
        example = example_of(info) if info is not None else None
        fix = f"write e.g. '{name}: {as_yaml(example)}'" if example is not None else None
        if kind == LEVIATHAN_ERROR:
            return error["ctx"]["message"], error["ctx"]["fix"] or fix or "see docs/configuration.md"
        if kind == "missing":
            where = " to this target" if self.scope == "target" and len(loc) == 1 else ""
            return f"required field {name!r} is missing", f"add '{name}:'{where}"
        annotation = info.annotation if info is not None else None
        number = _kind(annotation)
        if number is bool:
            return f"{label} must be true or false, got {{got}}", f"write '{name}: true'"
        if number in (int, float) and (kind in _NUMBER or kind in _BOUND or kind == "bool_type"):
            low, high = _bounds(info) if info is not None else (None, None)
            noun, span = ("an integer", "{:,}") if number is int else ("a number", "{:g}")
            if low is not None and high is not None:
                noun += f" from {span.format(low)} to {span.format(high)}"
            return f"{label} must be {noun}, got {{got}}", fix
        if kind == "literal_error":
            choices = ", ".join(map(str, _choices(annotation)))
            return f"{dotted(loc)} {{got}} is unknown (available: {choices})", fix
        if kind in _MAPPING:
            return f"{label} must be a mapping, got {{got}}", fix
        if kind in ("tuple_type", "list_type", "too_short"):
            return f"{label} must be a list, got {{got}}", fix
        if kind == "string_type":
            return f"{label} must be a string, got {{got}}", fix
        return (
            f"{label}: {error['msg'][:1].lower()}{error['msg'][1:]}, got {{got}}",
            fix or "see docs/configuration.md",
        )
