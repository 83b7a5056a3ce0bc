"""The graph projection (seed 000): Target, Task, Attempt, Artifact and PullRequest nodes with
``DEPENDS_ON`` and ``PRODUCED`` edges, folded only from the event log.

The projection is a pure fold by ``seq``: the same log always gives the same graph, and applying the
log in several increments gives exactly what one full rebuild gives. ``to_json`` is canonical JSON
(RFC 8785) with nodes and edges sorted, so two rebuilds are byte-identical and can be compared by hash.

Node ids: ``target:<target>``, ``task:<target>/<task>``, ``attempt:<attempt_id>``,
``artifact:<attempt_id>/<name>``, ``pr:<target>/<number>``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import rfc8785

from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events.model import StoredEvent
from leviathan_dagster.core.events.schemas import Anomaly, fold_anomaly

TARGET, TASK, ATTEMPT, ARTIFACT, PULL_REQUEST = "Target", "Task", "Attempt", "Artifact", "PullRequest"
NODE_TYPES = (TARGET, TASK, ATTEMPT, ARTIFACT, PULL_REQUEST)
DEPENDS_ON, PRODUCED = "DEPENDS_ON", "PRODUCED"

_TERMINAL = ("succeeded", "failed")
# The status is the event's meaning, not the payload's "status" field, which other producers may omit.
_ATTEMPT_STATUS = {
    ev.ATTEMPT_CREATED: "created",
    ev.ATTEMPT_STARTED: "running",
    ev.ATTEMPT_SUCCEEDED: "succeeded",
    ev.ATTEMPT_FAILED: "failed",
}
# Attempt payload fields copied onto the Attempt node; anything else in a payload stays in the log.
_ATTEMPT_FIELDS = (
    "attempt_number",
    "branch_name",
    "executor",
    "run_id",
    "created_at",
    "started_at",
    "completed_at",
    "failure_type",
    "error_summary",
    "commit_sha",
    "pr_number",
    "pr_url",
    "duration_seconds",
)


def target_node_id(target_id: str) -> str:
    return f"target:{target_id}"


def task_node_id(target_id: str, task_id: str) -> str:
    return f"task:{target_id}/{task_id}"


def attempt_node_id(attempt_id: str) -> str:
    return f"attempt:{attempt_id}"


def artifact_node_id(attempt_id: str, name: str) -> str:
    return f"artifact:{attempt_id}/{name}"


def pr_node_id(target_id: str, number: int) -> str:
    return f"pr:{target_id}/{number}"


class GraphProjection:
    """The graph folded from the log, kept up to date with :meth:`apply`.

    Payloads that lack the ids a node needs are skipped, never fatal: the log is the truth and may
    hold events from other producers, and a projection that raised on one odd event would be stuck
    at that seq forever.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: set[tuple[str, str, str]] = set()
        self.last_seq = 0
        self.anomalies: list[Anomaly] = []  # malformed events skipped (see events.schemas)

    @classmethod
    def from_events(cls, events: Iterable[StoredEvent]) -> GraphProjection:
        graph = cls()
        graph.apply(events)
        return graph

    def apply(self, events: Iterable[StoredEvent]) -> int:
        """Fold ``events`` in; events with ``seq <= last_seq`` were already applied and are ignored.
        Returns how many events were applied."""
        applied = 0
        for stored in events:
            if stored.seq <= self.last_seq:
                continue
            self._apply_one(stored)
            self.last_seq = stored.seq
            applied += 1
        return applied

    def to_dict(self) -> dict[str, Any]:
        """Nodes sorted by id, edges sorted by (from, type, to)."""
        return {
            "last_seq": self.last_seq,
            "nodes": [self.nodes[node_id] for node_id in sorted(self.nodes)],
            "edges": [{"from": s, "type": k, "to": d} for s, k, d in sorted(self.edges)],
        }

    def to_json(self) -> bytes:
        """Canonical JSON (RFC 8785): equal graphs give equal bytes."""
        return rfc8785.dumps(self.to_dict())

    def summary(self) -> dict[str, Any]:
        """Counts of nodes by type, of statuses (or PR states) by type, of edges by type, and last_seq."""
        by_type = Counter(node["type"] for node in self.nodes.values())
        by_status: dict[str, Counter[str]] = {}
        for node in self.nodes.values():
            status = node.get("state") or node.get("status")
            if status is not None:
                by_status.setdefault(node["type"], Counter())[str(status)] += 1
        return {
            "last_seq": self.last_seq,
            "nodes": {kind: by_type.get(kind, 0) for kind in NODE_TYPES},
            "status": {kind: dict(sorted(counts.items())) for kind, counts in sorted(by_status.items())},
            "edges": dict(sorted(Counter(kind for _, kind, _ in self.edges).items())),
        }

    def nodes_of_type(self, node_type: str) -> list[dict[str, Any]]:
        return [self.nodes[i] for i in sorted(self.nodes) if self.nodes[i]["type"] == node_type]

    # -- snapshots (core/projections/snapshots.py) ----------------------------------------------
    STATE_VERSION = 1

    def to_state(self) -> dict[str, Any]:
        """Everything the fold holds (nodes in the order they were made, edges sorted), JSON-able."""
        return {
            "last_seq": self.last_seq,
            "nodes": list(self.nodes.values()),
            "edges": sorted(list(edge) for edge in self.edges),
            "anomalies": [list(vars(a).values()) for a in self.anomalies],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> GraphProjection:
        graph = cls()
        graph.last_seq = state["last_seq"]
        graph.nodes = {node["id"]: node for node in state["nodes"]}
        graph.edges = {(s, k, d) for s, k, d in state["edges"]}
        graph.anomalies = [Anomaly(*row) for row in state["anomalies"]]
        return graph

    # -- folding -------------------------------------------------------------------------------
    def _apply_one(self, stored: StoredEvent) -> None:
        if (anomaly := fold_anomaly(stored)) is not None:
            self.anomalies.append(anomaly)
            return
        kind, payload = stored.event_type, stored.payload
        if kind in (ev.ATTEMPT_CREATED, ev.ATTEMPT_STARTED, ev.ATTEMPT_SUCCEEDED, ev.ATTEMPT_FAILED):
            self._on_attempt(kind, payload, stored)
        elif kind == ev.PR_CREATED:
            self._on_pr_created(payload, stored)
        elif kind in (ev.PR_MERGED, ev.PR_CLOSED):
            self._on_pr_finished(kind, payload, stored)
        elif kind in (ev.TASK_COMPLETED, ev.TASK_ESCALATED, ev.TASK_ESCALATION_CLEARED):
            task = self._task(payload.get("target_id"), payload.get("task_id"), stored.seq)
            if task is not None:
                task["status"] = {
                    ev.TASK_COMPLETED: str(payload.get("status") or "completed"),
                    ev.TASK_ESCALATED: "escalated",
                }.get(kind, "active")
                task["updated_seq"] = stored.seq
        elif kind in (ev.CIRCUIT_OPENED, ev.CIRCUIT_RESET):
            target = self._target(payload.get("target_id"), stored.seq)
            if target is not None:
                target["circuit"] = "open" if kind == ev.CIRCUIT_OPENED else "closed"
                target["updated_seq"] = stored.seq

    def _on_attempt(self, kind: str, payload: dict[str, Any], stored: StoredEvent) -> None:
        existed = attempt_node_id(str(payload.get("attempt_id"))) in self.nodes
        node = self._attempt(payload, stored.seq)
        if node is None:
            return
        if existed and (kind == ev.ATTEMPT_CREATED or node["status"] in _TERMINAL):
            return  # a replayed create, or a late duplicate after the end: the first one wins
        status = _ATTEMPT_STATUS[kind]
        if kind == ev.ATTEMPT_STARTED and node["status"] == status:
            return  # a replayed start keeps the first start time
        node["status"] = status
        for name in _ATTEMPT_FIELDS:
            if payload.get(name) is not None:
                node[name] = payload[name]
        node["updated_seq"] = stored.seq
        if kind in (ev.ATTEMPT_SUCCEEDED, ev.ATTEMPT_FAILED):
            self._add_artifacts(node["attempt_id"], payload.get("artifacts"), stored.seq)

    def _attempt(self, payload: dict[str, Any], seq: int) -> dict[str, Any] | None:
        attempt_id = payload.get("attempt_id")
        task = self._task(payload.get("target_id"), payload.get("task_id"), seq)
        if not _is_id(attempt_id) or task is None:
            return None
        node_id = attempt_node_id(attempt_id)
        if node_id not in self.nodes:
            # The scheduler's attempt.created is not always in the log first (a worker run by hand, a
            # log that begins mid-attempt): whichever event names the attempt first creates its node.
            self._add(
                node_id,
                ATTEMPT,
                seq,
                attempt_id=attempt_id,
                target_id=task["target_id"],
                task_id=task["task_id"],
                status="created",
            )
            self.edges.add((node_id, DEPENDS_ON, task["id"]))
        return self.nodes[node_id]

    def _add_artifacts(self, attempt_id: str, artifacts: Any, seq: int) -> None:
        if not isinstance(artifacts, list):
            return
        for entry in artifacts:
            if not isinstance(entry, dict) or not _is_id(entry.get("name")):
                continue
            node_id = artifact_node_id(attempt_id, entry["name"])
            if node_id not in self.nodes:
                self._add(
                    node_id,
                    ARTIFACT,
                    seq,
                    attempt_id=attempt_id,
                    name=entry["name"],
                    sha256=entry.get("sha256"),
                    bytes=entry.get("bytes"),
                )
            self.edges.add((attempt_node_id(attempt_id), PRODUCED, node_id))

    def _on_pr_created(self, payload: dict[str, Any], stored: StoredEvent) -> None:
        node = self._pull_request(payload, stored.seq, state="open")
        if node is None:
            return
        for name in ("pr_url", "branch_name", "task_id", "attempt_id"):
            if payload.get(name) is not None:
                node.setdefault(name, payload[name])
        node.setdefault("created_at", stored.event.timestamp)
        attempt = self._attempt(payload, stored.seq)
        if attempt is not None:
            self.edges.add((attempt["id"], PRODUCED, node["id"]))

    def _on_pr_finished(self, kind: str, payload: dict[str, Any], stored: StoredEvent) -> None:
        state = "merged" if kind == ev.PR_MERGED else "closed"
        node = self._pull_request(payload, stored.seq, state=state)
        if node is None or node["state"] not in ("open", state):
            return  # merged and closed are both final; the first final state wins
        node["state"] = state
        node.setdefault(f"{state}_at", stored.event.timestamp)
        node["updated_seq"] = stored.seq

    def _pull_request(self, payload: dict[str, Any], seq: int, *, state: str) -> dict[str, Any] | None:
        target_id, number = payload.get("target_id"), payload.get("pr_number")
        if not _is_id(target_id) or not isinstance(number, int) or isinstance(number, bool):
            return None
        node_id = pr_node_id(target_id, number)
        if node_id not in self.nodes:
            self._target(target_id, seq)
            self._add(node_id, PULL_REQUEST, seq, target_id=target_id, number=number, state=state)
        return self.nodes[node_id]

    def _task(self, target_id: Any, task_id: Any, seq: int) -> dict[str, Any] | None:
        if not _is_id(target_id) or not _is_id(task_id):
            return None
        node_id = task_node_id(target_id, task_id)
        if node_id not in self.nodes:
            target = self._target(target_id, seq)
            self._add(node_id, TASK, seq, target_id=target_id, task_id=task_id, status="active")
            self.edges.add((node_id, DEPENDS_ON, target["id"]))
        return self.nodes[node_id]

    def _target(self, target_id: Any, seq: int) -> dict[str, Any] | None:
        if not _is_id(target_id):
            return None
        node_id = target_node_id(target_id)
        if node_id not in self.nodes:
            self._add(node_id, TARGET, seq, target_id=target_id, circuit="closed")
        return self.nodes[node_id]

    def _add(self, node_id: str, node_type: str, seq: int, **properties: Any) -> dict[str, Any]:
        node = {"id": node_id, "type": node_type, "first_seq": seq, "updated_seq": seq, **properties}
        self.nodes[node_id] = node
        return node


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and bool(value)
