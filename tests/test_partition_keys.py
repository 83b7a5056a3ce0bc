"""Which task partitions a backlog change adds, deletes or keeps (core/scheduling/partition_keys.py)."""

from __future__ import annotations

from leviathan_dagster.core.scheduling.partition_keys import plan_task_partitions


def test_new_tasks_are_added_and_leavers_deleted_or_archived_by_their_history() -> None:
    changes = plan_task_partitions(
        live={"site": ["c", "d"]},
        known=["site/a", "site/b", "site/c", "other/x"],
        has_history=lambda target, task: (target, task) == ("site", "b"),
    )
    assert changes.add == ["site/d"]
    assert changes.delete == ["site/a"]  # never attempted: no history under the key
    assert changes.archived == {"site": ["site/b"]}  # attempted: kept, so never deleted nor reused
    # A target whose backlog was not read (broken, unchanged) is left alone.
    assert "other/x" not in changes.delete


def test_a_target_read_for_the_first_time_only_adds() -> None:
    changes = plan_task_partitions({"new": ["a", "b"]}, [], lambda *_: False)
    assert (changes.add, changes.delete, changes.archived) == (["new/a", "new/b"], [], {"new": []})
