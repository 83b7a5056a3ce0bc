"""``leviathan events tail``: the last events in ``seq`` order, one row each, with the target, task,
attempt and pull request they concern (and, with ``--event-id``, the id ``events prove`` takes)."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import click

from leviathan_dagster.cli.context import CliContext, pass_ctx
from leviathan_dagster.core.attempts.ledger import split_task_key
from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events.model import StoredEvent


@dataclass(frozen=True)
class TailRow:
    """One event as ``events tail`` shows it; empty strings where the event does not say."""

    stored: StoredEvent
    target: str
    task: str
    attempt: str
    pr: str
    detail: str

    def subject(self) -> dict[str, object]:
        """The columns as JSON (``--json`` adds them as ``subject`` beside the stored event)."""
        return {
            "target_id": self.target or None,
            "task_id": self.task or None,
            "attempt_id": self.attempt or None,
            "pr_number": int(self.pr[1:]) if self.pr else None,
        }

    def as_text(self, with_event_id: bool) -> str:
        e = self.stored
        event_id = f" {e.event.event_id:<36}" if with_event_id else ""
        return (
            f"{e.seq:>6} {e.event.timestamp} {e.event_type:<26} {self.target:<16} {self.task:<24} "
            f"{self.attempt:<20} {self.pr:<6}{event_id} {self.detail}"
        ).rstrip()


def header(with_event_id: bool) -> str:
    event_id = f" {'EVENT_ID':<36}" if with_event_id else ""
    return (
        f"{'SEQ':>6} {'TIME':<27} {'TYPE':<26} {'TARGET':<16} {'TASK':<24} {'ATTEMPT':<20} {'PR':<6}"
        f"{event_id} DETAIL"
    )


class _Subjects:
    """What earlier events said about attempts and PRs, so a later event that names only one of them
    (``pr.merged`` names its PR, ``attempt.started`` no PR) still shows the rest."""

    def __init__(self) -> None:
        self.task_of_attempt: dict[str, str] = {}
        self.pr_of_attempt: dict[str, int] = {}
        self.attempt_of_pr: dict[tuple[str, int], str] = {}

    def row(self, stored: StoredEvent) -> TailRow:
        p = stored.payload if isinstance(stored.payload, dict) else {}
        target = _text(p.get("target_id"))
        attempt = _text(p.get("attempt_id"))
        task = _text(p.get("task_id"))
        if not task and isinstance(p.get("task"), str):  # pr.merged/pr.closed: "target/task"
            task = split_task_key(p["task"])[1]
        tags = p.get("tags") if isinstance(p.get("tags"), dict) else {}
        if not target and not task:  # run.*: the Dagster run's tags name its target and task
            target, task = _text(tags.get("leviathan/target")), _text(tags.get("leviathan/task"))
        pr_number = p.get("pr_number") if isinstance(p.get("pr_number"), int) else None
        if not attempt and pr_number is not None:
            attempt = self.attempt_of_pr.get((target, pr_number), "")
        if attempt:
            task = task or self.task_of_attempt.get(attempt, "")
            pr_number = pr_number if pr_number is not None else self.pr_of_attempt.get(attempt)
            # Remembered per PR only (not per attempt or event): a long log's tail stays small in memory.
            if pr_number is not None and stored.event_type == ev.PR_CREATED:
                self.pr_of_attempt[attempt] = pr_number
                self.attempt_of_pr[(target, pr_number)] = attempt
                if task:
                    self.task_of_attempt[attempt] = task
        detail = p.get("failure_type") or p.get("reason") or p.get("status") or p.get("pr_url") or ""
        return TailRow(
            stored, target, task, attempt, f"#{pr_number}" if pr_number else "", _text(detail)[:200]
        )


def tail_rows(
    events: Iterable[StoredEvent],
    lines: int,
    *,
    event_type: str | None = None,
    target: str | None = None,
    task: str | None = None,
) -> list[TailRow]:
    """The last ``lines`` rows that pass the filters, oldest first by ``seq``."""
    subjects = _Subjects()
    kept: deque[TailRow] = deque(maxlen=lines)
    for stored in events:
        row = subjects.row(stored)  # every event, so a filtered row still knows its PR and task
        if event_type not in (None, stored.event_type) or target not in (None, row.target):
            continue
        if task in (None, row.task):
            kept.append(row)
    return sorted(kept, key=lambda r: r.stored.seq)


@click.command()
@click.option("-n", "--lines", default=20, show_default=True, help="How many of the last events.")
@click.option("--type", "event_type", help="Only events of this type, e.g. attempt.failed.")
@click.option("--target", help="Only events of this target.")
@click.option("--task", help="Only events of this task (with --target when task ids repeat across targets).")
@click.option(
    "--event-id",
    "with_event_id",
    is_flag=True,
    help="Add the EVENT_ID column (what `events prove --event` takes).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per line (NDJSON): the stored event and its subject columns.",
)
@pass_ctx
def tail(
    ctx: CliContext,
    lines: int,
    event_type: str | None,
    target: str | None,
    task: str | None,
    with_event_id: bool,
    as_json: bool,
) -> None:
    """Show the last events in seq order, with their target, task, attempt and PR (and, on stderr, any
    torn tail after them; reading changes nothing).

    seq is the order of the chain; TIME is each writer's own clock when it made the event (a worker's
    event may carry an earlier time than the orchestrator's event before it).

    \b
    Example:
      leviathan events tail -n 50 --type attempt.failed
      leviathan events tail --task write-guide --event-id
      leviathan events prove --event "$(leviathan events tail -n 1 --json | jq -r .event_id)"
    """
    store = ctx.event_log(read_only=True)
    rows = tail_rows(store.read(), lines, event_type=event_type, target=target, task=task)
    if not as_json:
        click.echo(header(with_event_id))
    for row in rows:
        if as_json:
            click.echo(json.dumps({**row.stored.to_dict(), "subject": row.subject()}, sort_keys=True))
        else:
            click.echo(row.as_text(with_event_id))
    torn = store.torn_tail()
    if torn is not None:
        click.secho(f"warning: {torn.describe()}", fg="yellow", err=True)


def _text(value: object) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)
