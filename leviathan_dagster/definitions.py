"""The Dagster code location: loads ``defs/`` and applies platform-wide settings (the resource).

No asset, job, sensor or schedule is listed here: each lives in ``defs/<domain>/<kind>.py``.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from leviathan_dagster.defs.platform.resources import LeviathanResource


def build_definitions(leviathan: LeviathanResource | None = None) -> dg.Definitions:
    """All of Leviathan's definitions; ``leviathan`` overrides the resource (CLI, tests)."""
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    # Read from the environment when definitions are built (never at import time).
    resource = leviathan or LeviathanResource(
        config_path=dg.EnvVar("LEVIATHAN_CONFIG"), home=dg.EnvVar("LEVIATHAN_HOME")
    )
    # Every Leviathan job is one or two short steps in one process's worth of work (the attempt's own
    # isolation is the worker process or pod the executor starts). The default multiprocess executor
    # would start a fresh Python, import Dagster and load these definitions again for every step:
    # seconds of overhead per attempt, per run. Steps run in the run worker instead.
    return dg.Definitions.merge(
        loaded, dg.Definitions(resources={"leviathan": resource}, executor=dg.in_process_executor)
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
