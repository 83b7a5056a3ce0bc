"""Typed settings read from environment variables: a pydantic dataclass per component, one reader.

The models are declared like the file's (``config_fields.MODEL_CONFIG``); their number fields are not
strict, since every value arrives as text.

Each field of the model is read from one variable: the field's ``validation_alias`` when it has one (the
seed's contract names such as ``TARGET_NAME``), else ``prefix`` + the field's name in capitals. Unset or
empty means the field's default. Pydantic turns the text into the field's type (``"7"`` → 7) and checks
its bounds; every problem becomes one ConfigError line naming the variable, what it must be and the value
given (never for a field declared ``repr=False``: that one holds a secret).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from leviathan_dagster.core.config.fields import LEVIATHAN_ERROR
from leviathan_dagster.core.errors import ConfigError

T = TypeVar("T")


def variable_names(model: type, prefix: str) -> dict[str, str]:
    """Field name -> the environment variable it is read from."""
    fields: dict[str, FieldInfo] = model.__pydantic_fields__  # type: ignore[attr-defined]
    return {
        name: info.validation_alias if isinstance(info.validation_alias, str) else prefix + name.upper()
        for name, info in fields.items()
    }


def read_env_settings(
    model: type[T], environ: Mapping[str, str] | None, *, prefix: str = "", what: str, missing_fix: str
) -> T:
    """``model`` from ``environ`` (default: the process's); ConfigError naming every bad variable.

    ``what`` names the component in the message about missing variables, ``missing_fix`` says how to set them.
    """
    env = os.environ if environ is None else environ
    fields: dict[str, FieldInfo] = model.__pydantic_fields__  # type: ignore[attr-defined]
    names = variable_names(model, prefix)
    given = {name: env[variable] for name, variable in names.items() if (env.get(variable) or "").strip()}
    missing = [names[name] for name, info in fields.items() if info.is_required() and name not in given]
    if missing:
        raise ConfigError(f"{what} needs {', '.join(missing)}; {missing_fix}")
    try:
        return TypeAdapter(model).validate_python(given)
    except ValidationError as exc:
        problems = [_problem(error, fields, names, given) for error in exc.errors()]
        raise ConfigError("\n".join(problems)) from None


def _problem(error: Any, fields: dict[str, FieldInfo], names: dict[str, str], given: dict[str, str]) -> str:
    name = str(error["loc"][0]) if error["loc"] else ""
    variable, info = names.get(name, name), fields.get(name)
    got = repr(given[name]) if name in given and (info is None or info.repr) else "(hidden)"
    if error["type"] == LEVIATHAN_ERROR:
        return error["ctx"]["message"].replace("{label}", variable).replace("{got}", got)
    return f"{variable} must be {_expected(info)}, got {got}"


def _expected(info: FieldInfo | None) -> str:
    """What a field's value must be, from its declaration: 'an integer >= 0', 'a number > 0', ..."""
    annotation = getattr(info, "annotation", None)
    kinds = {int: "an integer", float: "a number", bool: "true or false"}
    noun = next((text for kind, text in kinds.items() if annotation in (kind, kind | None)), "valid")
    for meta in info.metadata if info is not None else ():
        for bound, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(meta, bound, None) is not None:
                noun += f" {sign} {getattr(meta, bound):g}"
    return noun
