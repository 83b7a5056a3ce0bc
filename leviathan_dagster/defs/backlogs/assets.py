"""Backlogs and task readiness, one partition per target."""

from collections import Counter

import dagster as dg

from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.paths import task_paths_in_scope
from leviathan_dagster.core.projections.log_view import current_ledger
from leviathan_dagster.core.reporting import backlog_table, markdown_table, readiness_table
from leviathan_dagster.core.scheduling import read_backlog, snapshot_target
from leviathan_dagster.defs.backlogs.partitions import targets_partitions
from leviathan_dagster.defs.platform.resources import LeviathanResource

BACKLOG_VALID = "backlog_is_valid"
PATHS_IN_SCOPE = "allowed_paths_in_scope"


@dg.asset(
    partitions_def=targets_partitions,
    group_name="backlogs",
    kinds={"yaml", "git"},
    owners=["team:leviathan"],
    tags={"domain": "backlogs"},
    check_specs=[
        dg.AssetCheckSpec(BACKLOG_VALID, asset="backlog", description="The backlog parses and validates."),
        dg.AssetCheckSpec(
            PATHS_IN_SCOPE,
            asset="backlog",
            description="Every task's allowed_paths lie inside the target's allowed_path_prefixes.",
        ),
    ],
    description="The target's .leviathan/backlog.yaml as merged on its base branch (human-curated plan).",
)
def backlog(context: dg.AssetExecutionContext, leviathan: LeviathanResource):
    target = leviathan.target(context.partition_key)
    snap = read_backlog(target, leviathan.leviathan_home())
    metadata: dict[str, dg.MetadataValue | str | int | bool] = {
        "repo_url": target.repo_url,
        "branch": target.branch,
        "valid": snap.backlog is not None,
    }
    if snap.backlog is not None:
        statuses = Counter(t.status for t in snap.backlog.tasks)
        metadata |= {
            "tasks": len(snap.backlog.tasks),
            "statuses": dg.MetadataValue.json(dict(sorted(statuses.items()))),
            "task_table": dg.MetadataValue.md(backlog_table(snap.backlog)),
            "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in snap.backlog.warnings) or "none"),
        }
    else:
        metadata["errors"] = dg.MetadataValue.md(f"```\n{snap.error}\n```")
        context.log.error(f"backlog of target '{target.id}' is invalid:\n{snap.error}")
    # The asset records what it found even when the backlog is broken; the check carries the verdict,
    # so one broken backlog is visible without stopping other targets' runs.
    yield dg.MaterializeResult(metadata=metadata)
    yield dg.AssetCheckResult(
        check_name=BACKLOG_VALID,
        passed=snap.backlog is not None,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"error": snap.error or ""},
    )
    yield paths_in_scope_result(target, snap.backlog)


def paths_in_scope_result(target, backlog) -> dg.AssetCheckResult:
    """Tasks whose allowed_paths leave the target's prefixes never run (readiness says
    ``out_of_scope``); the check makes that visible on the backlog itself, with the fix."""
    if backlog is None:
        return dg.AssetCheckResult(
            check_name=PATHS_IN_SCOPE, passed=False, description="the backlog is invalid: nothing to check"
        )
    prefixes = target.policy.allowed_path_prefixes
    outside = {t.id: task_paths_in_scope(t.allowed_paths, prefixes) for t in backlog.tasks}
    rows = [[task, ", ".join(paths)] for task, paths in outside.items() if paths]
    return dg.AssetCheckResult(
        check_name=PATHS_IN_SCOPE,
        passed=not rows,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(rows)} tasks have allowed_paths outside {', '.join(prefixes)}: narrow the task's paths "
            "or widen policy.allowed_path_prefixes"
            if rows
            else "all tasks in scope"
        ),
        metadata={
            "outside": dg.MetadataValue.md(
                markdown_table(["task", "paths outside"], rows) if rows else "none"
            )
        },
    )


@dg.asset(
    partitions_def=targets_partitions,
    group_name="readiness",
    deps=[backlog],
    kinds={"python"},
    owners=["team:leviathan"],
    tags={"domain": "readiness"},
    description="Every task: ready or not, with the reason (policy, dependencies, attempts, PRs, limits).",
)
def task_readiness(context: dg.AssetExecutionContext, leviathan: LeviathanResource) -> dg.MaterializeResult:
    target = leviathan.target(context.partition_key)
    home = leviathan.leviathan_home()
    ledger = current_ledger(leviathan.event_log())
    snap = snapshot_target(target, home, ledger, utc_now())
    if not snap.ok:
        raise dg.Failure(description=f"target '{target.id}': {snap.error}", allow_retries=False)
    reasons = Counter(r.reason for r in snap.readiness)
    return dg.MaterializeResult(
        metadata={
            "ready": sum(1 for r in snap.readiness if r.ready),
            "not_ready": sum(1 for r in snap.readiness if not r.ready),
            "open_prs": len(snap.open_prs),
            "reasons": dg.MetadataValue.json(dict(sorted(reasons.items()))),
            "readiness_table": dg.MetadataValue.md(readiness_table(snap.readiness)),
        }
    )
