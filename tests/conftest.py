"""Suite-wide fixtures."""

from __future__ import annotations

import gc

import pytest


@pytest.fixture(autouse=True)
def _no_leaked_defs_state_storage():
    """Dagster keeps the "current" instance's defs-state storage in a context variable that a test
    instance, once disposed, can leave behind (pytest sets fixtures up and tears them down in different
    contexts, so the reset inside ``instance_for_test`` may not apply). Loading definitions later then
    fails with "undefined DagsterInstance weakref". Start every test without one."""
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


@pytest.fixture(autouse=True)
def _leaks_surface_in_the_test_that_made_them():
    """Collect garbage after every test, so an unclosed socket or file is reported (ResourceWarning is
    an error here) by the test that leaked it, not by whichever later test the collector happens to
    run in. What survives is then frozen (never scanned again), so each collection only looks at the
    objects one test made: ~5 ms instead of ~120 ms over Dagster's whole heap."""
    yield
    gc.collect()
    gc.freeze()
