"""Which task partitions to add, delete or keep when backlogs change.

Dagster forbids reusing a deleted dynamic partition key (its old runs and materializations would be
attached to the new partition), and its UI slows past ~100k keys. So a task that leaves its backlog is:

- **deleted** when it never had an attempt: nothing was ever recorded under its key, so if the task
  comes back the re-added key has no stale history to show;
- **archived** (kept, and listed on the backlog asset) when it had attempts: its partition holds that
  history in the UI, and keeping it means the key is never deleted and so never reused.

Only tasks with attempts accumulate, which is the history worth keeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from leviathan_dagster.core.attempts.ledger import split_task_key, task_key


@dataclass
class PartitionChanges:
    add: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    # target id -> keys of tasks no longer in its backlog whose partitions stay for their history.
    archived: dict[str, list[str]] = field(default_factory=dict)


def plan_task_partitions(
    live: Mapping[str, Iterable[str]],
    known: Iterable[str],
    has_history: Callable[[str, str], bool],
) -> PartitionChanges:
    """``live``: task ids per target whose backlog was read (only those targets are touched);
    ``known``: the partition keys that exist; ``has_history(target, task)``: it had an attempt."""
    changes = PartitionChanges()
    known_set = set(known)
    wanted = {tid: {task_key(tid, t) for t in tasks} for tid, tasks in live.items()}
    for tid, keys in wanted.items():
        changes.add.extend(sorted(keys - known_set))
        changes.archived[tid] = []
    for key in sorted(known_set):
        target_id, task_id = split_task_key(key)
        if target_id not in wanted or key in wanted[target_id]:
            continue
        if has_history(target_id, task_id):
            changes.archived[target_id].append(key)
        else:
            changes.delete.append(key)
    return changes
