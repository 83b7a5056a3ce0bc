"""Leviathan's own small error hierarchy.

Errors from libraries (git, yaml, psycopg, PyGithub, ...) are translated into these once, at the
boundary, so attempt logic branches on *our* types. "Infrastructure failures do not count against the
task" is then a single ``except TransientError``.
"""

from __future__ import annotations


class LeviathanError(Exception):
    """Base class of every error Leviathan raises on purpose."""


class ConfigError(LeviathanError):
    """Bad user input (leviathan.yaml, backlog.yaml, environment). The message names file, line,
    field and the fix; a traceback is never the first thing a user sees."""


class BacklogError(ConfigError):
    """A backlog that cannot be used. ``problems`` holds every problem found, not only the first."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PolicyViolation(LeviathanError):
    """A change or a task that leaves the target's policy (paths, limits)."""


class TransientError(LeviathanError):
    """A failure of infrastructure (git remote, network, lock, disk) that may pass on retry.
    Never counted against a task's attempts or the circuit breaker."""


class ConflictError(LeviathanError):
    """A write that contradicts what is stored (merge conflict, PR in the wrong state, ...)."""


class NotFoundError(LeviathanError):
    """Something asked for by id does not exist."""


class GeneratorError(LeviathanError):
    """A generator could not produce its change (bad task input for that generator)."""


class EventLogCorrupted(LeviathanError):
    """The hash chain does not verify. ``seq`` is the first bad sequence number."""

    def __init__(self, seq: int, reason: str) -> None:
        self.seq = seq
        self.reason = reason
        super().__init__(f"event log broken at seq {seq}: {reason}")
