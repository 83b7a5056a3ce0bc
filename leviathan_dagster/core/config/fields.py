"""Building blocks of the typed config models (``config_models`` and the section modules).

Every model of ``leviathan.yaml`` is a frozen pydantic dataclass configured by ``MODEL_CONFIG``: code keeps
constructing, comparing and ``dataclasses.replace``-ing it like a plain dataclass, while pydantic checks
each field (type, bounds) on construction and refuses unknown keys; the attribute docstring under each
field is its description (docs/configuration.md is generated from them, scripts/config_reference.py).

The loader (``config``) validates what the file says with a ``FileContext``: a validator that needs the
file (a relative path is resolved against its folder; a secret must be an ``{env: NAME}`` reference, never a
literal) reads it from ``info.context``. Code that constructs a model directly passes no context.

A validator reports its own problem with ``invalid(message, fix)``; ``config_errors`` turns it, like
pydantic's standard errors, into ``file:line: who: message. Fix: ...`` through the YAML node at the error's
``loc``. Messages and fixes may hold placeholders filled in from that node: ``{label}`` (how the field is
named, e.g. ``policy 'max_open_prs'``), ``{got}`` (the value as written) and ``{key}`` (the key).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, ValidationInfo
from pydantic_core import PydanticCustomError

# Inputs stay out of ValidationError texts: a value built in code may be a URL with a token in it.
MODEL_CONFIG = ConfigDict(
    extra="forbid", use_attribute_docstrings=True, populate_by_name=True, hide_input_in_errors=True
)
# The error type of a problem a validator of ours found (its ctx holds the message and the fix).
LEVIATHAN_ERROR = "leviathan"
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LITERAL_SECRET_FIX = (
    "secrets are referenced by environment variable, never written literally: use `{key}: {env: {KEY}}`"
)


@dataclass(frozen=True)
class FileContext:
    """What validating a file's values needs beyond them: the folder relative paths start from."""

    base_dir: Path


def invalid(message: str, fix: str | None = None) -> PydanticCustomError:
    """A validation problem with our own message and fix (placeholders: see the module docstring)."""
    # The template only names the message: ours contain braces ('{env: NAME}') that must stay as they are.
    return PydanticCustomError(LEVIATHAN_ERROR, "{message}", {"message": message, "fix": fix})


def file_context(info: ValidationInfo) -> FileContext | None:
    return info.context if isinstance(info.context, FileContext) else None


def resolve_path(value: str, info: ValidationInfo) -> str:
    """A path from the file made absolute against the file's folder; as given when not from a file."""
    context = file_context(info)
    if context is None:
        return value
    return os.path.normpath(Path(context.base_dir).expanduser().absolute() / Path(value).expanduser())


def env_reference(fix: str = LITERAL_SECRET_FIX) -> Any:
    """The type of a secret's reference: ``{env: NAME}`` in the file, read as the variable's name NAME.

    Code may pass the name itself; in a file a plain string is the secret written literally, an error.
    """

    def check(value: object, info: ValidationInfo) -> str:
        if isinstance(value, dict) and list(value) == ["env"] and isinstance(value["env"], str):
            if ENV_NAME_RE.fullmatch(value["env"]):
                return value["env"]
        elif isinstance(value, str) and file_context(info) is None and ENV_NAME_RE.fullmatch(value):
            return value
        elif isinstance(value, str):
            raise invalid("{label} is written literally", fix)
        raise invalid("{label} must be {env: NAME} with NAME an environment variable name, got {got}", fix)

    return Annotated[str, BeforeValidator(check)]


def matching(pattern: re.Pattern[str], problem: str, fix: str | None = None) -> Any:
    """The type of a string that must match ``pattern`` (full match); ``problem`` says what it must be."""

    def check(value: object) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise invalid(f"{{label}} {problem}, got {{got}}", fix)
        return value

    return Annotated[str, BeforeValidator(check)]


def checked_by(problem_of: Any, fix: str | None = None) -> Any:
    """The type of a string judged by ``problem_of(value)``: None when valid, else what it must be."""

    def check(value: object) -> str:
        problem = problem_of(value)
        if problem is not None:
            raise invalid(f"{{label}} {problem}, got {{got}}", fix)
        return value  # type: ignore[return-value]

    return Annotated[str, BeforeValidator(check)]
