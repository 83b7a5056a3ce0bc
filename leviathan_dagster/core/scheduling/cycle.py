"""One scheduler cycle as plain Python: snapshot every target, evaluate readiness, pick attempts.

A broken target (unreadable repo, invalid backlog, unknown forge) becomes a snapshot with an error
and never stops the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.backlog.cache import parse_backlog_cached
from leviathan_dagster.core.errors import LeviathanError, TransientError
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.forge.registry import forge_for
from leviathan_dagster.core.gc_pause import collector_paused
from leviathan_dagster.core.git import commands as gitutil
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import BACKLOG_PATH, Backlog, ProjectConfig, PullRequest, TargetConfig
from leviathan_dagster.core.projections.log_view import current_ledger
from leviathan_dagster.core.scheduling.readiness import (
    Readiness,
    count_running,
    evaluate_target,
    select_across_targets,
)


@dataclass(frozen=True)
class BacklogSnapshot:
    target: TargetConfig
    backlog: Backlog | None
    error: str | None = None
    # The read failed for now (a rate limit, the network): a sensor tick skips it and reads again.
    transient: bool = False


@dataclass(frozen=True)
class TargetSnapshot:
    target: TargetConfig
    backlog: Backlog | None
    open_prs: tuple[PullRequest, ...] = ()
    readiness: tuple[Readiness, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class CyclePlan:
    snapshots: dict[str, TargetSnapshot]
    selected: list[Readiness]
    ledger: AttemptLedger
    errors: dict[str, str] = field(default_factory=dict)
    # The clock the readiness was judged at (what the UI shows as the decision's time).
    decided_at: datetime | None = None


def read_backlog(target: TargetConfig, home: LeviathanHome) -> BacklogSnapshot:
    """The backlog on the target's base branch (what humans merged), never an attempt branch."""
    try:
        # A network repository (GitHub) is read with the forge's credential, passed per git command.
        auth = forge_for(target, home).git_auth_env() if gitutil.local_path(target.repo_url) is None else {}
        found = gitutil.find_blob(
            target.repo_url, target.branch, BACKLOG_PATH, cache_dir=home.mirrors, env=auth
        )
        if found is None:
            return BacklogSnapshot(
                target,
                None,
                f"{target.repo_url}@{target.branch}: no {BACKLOG_PATH} (create one with `leviathan init`)",
            )
        repo, blob_id = found
        # Parsed once per version of the file (its blob id), whichever process asks.
        parsed = parse_backlog_cached(
            blob_id,
            f"{target.id}:{BACKLOG_PATH}",
            lambda: gitutil.read_blob(repo, blob_id),
            cache_dir=home.backlog_cache,
        )
        return BacklogSnapshot(target, parsed)
    except LeviathanError as exc:
        return BacklogSnapshot(target, None, str(exc), transient=isinstance(exc, TransientError))
    except Exception as exc:  # noqa: BLE001 - one target's bug must not stop the others (see snapshot_target)
        return BacklogSnapshot(target, None, unexpected_error(exc))


def unexpected_error(exc: BaseException) -> str:
    """The one-line report of an error Leviathan did not foresee while judging one target: kept to that
    target (every other one proceeds) and shown as a bug to report, never as a traceback."""
    return f"unexpected {type(exc).__name__} while reading this target: {exc} (please report this as a bug)"


def snapshot_target(
    target: TargetConfig,
    home: LeviathanHome,
    ledger: AttemptLedger,
    now: datetime,
    *,
    queued_tasks: frozenset[str] = frozenset(),
    backlog: BacklogSnapshot | None = None,
) -> TargetSnapshot:
    """The target's backlog, open PRs and readiness. Any error while reading, parsing or judging this one
    target becomes the snapshot's ``error``: every caller (the CLI, the sensor, the assets) then reports it
    for this target and goes on with the others."""
    read = backlog or read_backlog(target, home)
    if read.backlog is None:
        return TargetSnapshot(target, None, error=read.error)
    try:
        open_prs = tuple(forge_for(target, home).list_pull_requests("open"))
    except LeviathanError as exc:
        return TargetSnapshot(target, read.backlog, error=f"forge: {exc}")
    except Exception as exc:  # noqa: BLE001 - isolation of targets, as above
        return TargetSnapshot(target, read.backlog, error=f"forge: {unexpected_error(exc)}")
    try:
        readiness = evaluate_target(target, read.backlog, ledger, open_prs, now, queued_tasks=queued_tasks)
    except Exception as exc:  # noqa: BLE001 - isolation of targets, as above
        return TargetSnapshot(target, read.backlog, open_prs, error=f"readiness: {unexpected_error(exc)}")
    return TargetSnapshot(target, read.backlog, open_prs, tuple(readiness))


def plan_cycle(
    config: ProjectConfig,
    home: LeviathanHome,
    events: EventStore,
    now: datetime,
    *,
    queued: Mapping[str, frozenset[str]] | None = None,
    only_target: str | None = None,
) -> CyclePlan:
    """Snapshot and evaluate every target (or ``only_target``), then select under the global limit."""
    with collector_paused():  # an allocation burst the size of the fleet: see core/gc_pause.py
        return _plan_cycle(config, home, events, now, queued or {}, only_target)


def _plan_cycle(
    config: ProjectConfig,
    home: LeviathanHome,
    events: EventStore,
    now: datetime,
    queued: Mapping[str, frozenset[str]],
    only_target: str | None,
) -> CyclePlan:
    ledger = current_ledger(events)
    targets = [t for t in config.targets if only_target in (None, t.id)]
    snapshots = {
        t.id: snapshot_target(t, home, ledger, now, queued_tasks=queued.get(t.id, frozenset()))
        for t in targets
    }
    healthy = {tid: list(s.readiness) for tid, s in snapshots.items() if s.ok}
    running_total = sum(count_running(ledger, t.id, queued.get(t.id, frozenset())) for t in config.targets)
    selected, limited = select_across_targets(
        healthy,
        max_concurrent=config.max_concurrent_attempts,
        running_total=running_total,
        last_attempt_at={tid: ledger.target(tid).last_attempt_at for tid in healthy},
    )
    for tid, results in limited.items():
        s = snapshots[tid]
        snapshots[tid] = TargetSnapshot(s.target, s.backlog, s.open_prs, tuple(results))
    errors = {tid: s.error for tid, s in snapshots.items() if s.error}
    # Targets whose own config is invalid were left out of config.targets; they are reported like others.
    errors |= {tid: f"config: {text}" for tid, text in config.broken_targets if only_target in (None, tid)}
    return CyclePlan(snapshots=snapshots, selected=selected, ledger=ledger, errors=errors, decided_at=now)
