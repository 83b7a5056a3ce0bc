"""Leviathan: backlog -> attempt -> pull request, on Dagster.

This package must stay importable without Dagster: the plain-Python core lives in
``leviathan_dagster.core`` and only ``leviathan_dagster.defs`` / ``definitions`` import Dagster.
"""

__version__ = "0.1.0"
