"""Typed metadata entries of an attempt's materialization: what it cost, and links an operator clicks.

Typed on purpose: Dagster plots ``float``/``int`` entries across a partition's materializations (the
asset's Plots tab) and renders ``url`` entries as links in the metadata table.
"""

from __future__ import annotations

import dagster as dg

from leviathan_dagster.core.attempts.ledger import AttemptRecord
from leviathan_dagster.core.forge.local import browsable_pr_url
from leviathan_dagster.core.generators.usage import TOKEN_FIELDS
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.projections.costs import attempt_cost


def cost_entries(record: AttemptRecord, generator: object) -> dict[str, object]:
    """Generator, model calls, the four token counts, their total and ``cost_usd``: every attempt has
    them, zero for a deterministic generator (and for one that failed before any call). A cost that is
    not known (a model without a list price, usage never recorded) is said in ``cost_note``, never
    shown as zero."""
    cost = attempt_cost(record.usage, generator)
    entries: dict[str, object] = {
        "generator": cost.generator,
        "model": cost.model or "",
        "model_calls": dg.MetadataValue.int(cost.calls),
        **{name: dg.MetadataValue.int(getattr(cost, name)) for name in TOKEN_FIELDS},
        "total_tokens": dg.MetadataValue.int(cost.total_tokens),
    }
    if cost.usd is not None:
        entries["cost_usd"] = dg.MetadataValue.float(round(cost.usd, 6))
    elif not cost.recorded:
        entries["cost_note"] = "no usage recorded for this attempt (its worker ended without a record)"
    else:
        entries["cost_note"] = f"model {cost.model or '?'} has no list price: tokens are counted, USD is not"
    return entries


def link_entries(record: AttemptRecord, home: LeviathanHome | None) -> dict[str, object]:
    """``pr_url`` as a link a browser opens (GitHub's page; the local forge's ``file://`` record, with
    the ``leviathan prs show`` command beside it), and the attempt's kept ``diff.patch`` (failed
    attempts keep theirs too)."""
    entries: dict[str, object] = {}
    if record.pr_number:
        url = record.pr_url
        if home is not None:
            url = browsable_pr_url(record.pr_url, home.root, record.target_id, record.pr_number)
        entries["pr_number"] = record.pr_number
        entries["pr_url"] = dg.MetadataValue.url(url) if url else ""
        if not (url or "").startswith(("https://", "http://")):
            entries["pr_show"] = f"leviathan prs show {record.pr_number} --target {record.target_id} --patch"
    if home is not None:
        patch = home.artifacts_dir(record.attempt_id) / "diff.patch"
        if patch.is_file():
            entries["diff_url"] = dg.MetadataValue.url(patch.absolute().as_uri())
    return entries
