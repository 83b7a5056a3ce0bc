"""The API objects the double's controllers own, as the API server serves them: a Pod with the
kubelet's phases and container states, a Job with the 1.31+ Job controller's status and conditions
(``FailureTarget`` / ``SuccessCriteriaMet`` before ``Failed`` / ``Complete``)."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Pod:
    body: dict[str, Any]
    owner: str  # the Job's or Deployment's name
    phase: str = "Pending"
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    exit_code: int | None = None
    terminated_reason: str | None = None
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    started: str | None = None
    kill_reason: str | None = None
    restart_count: int = 0
    deleted: bool = False  # gone from the API (the object may still be terminating)
    stopped: threading.Event = field(default_factory=threading.Event)
    restarts: bool = False  # a Deployment's pod (restartPolicy Always): restarted when it exits
    unschedulable: str | None = None  # the scheduler's message while no node takes it
    # Why a sandbox inside the container cannot create namespaces (confinement.py); None: it can.
    confinement_refusal: str | None = None
    rejected: tuple[str, str] | None = None  # (reason, message): the kubelet's admission refused it

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.body["metadata"]["namespace"]

    @property
    def labels(self) -> dict[str, str]:
        return self.body["metadata"].get("labels", {})

    @property
    def container(self) -> str:
        return self.body["spec"]["containers"][0]["name"]

    def to_api(self) -> dict[str, Any]:
        container = self.body["spec"]["containers"][0]
        if self.exit_code is not None and self.waiting is None:
            state = {
                "terminated": {
                    "exitCode": self.exit_code,
                    "reason": self.terminated_reason,
                    "startedAt": self.started,
                    "finishedAt": now(),
                }
            }
        elif self.waiting is not None:
            state = {
                "waiting": {
                    "reason": self.waiting[0],
                    **({"message": self.waiting[1]} if self.waiting[1] else {}),
                }
            }
        else:
            state = {"running": {"startedAt": self.started}}
        running = self.phase == "Running" and self.waiting is None
        scheduled = {
            "type": "PodScheduled",
            "status": "True",
            "lastTransitionTime": self.body["metadata"]["creationTimestamp"],
        }
        if self.unschedulable:
            scheduled.update(status="False", reason="Unschedulable", message=self.unschedulable)
            return {**self.body, "status": {"phase": "Pending", "conditions": [scheduled]}}
        if self.rejected:
            reason, message = self.rejected
            return {**self.body, "status": {"phase": "Failed", "reason": reason, "message": message}}
        status: dict[str, Any] = {
            "phase": self.phase,
            "conditions": [
                scheduled,
                {"type": "Ready", "status": "True" if running else "False", "lastTransitionTime": now()},
            ],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "" if self.started is None else f"{container['image']}@sha256:{'0' * 64}",
                    "ready": running,
                    "restartCount": self.restart_count,
                    "started": running,
                    "state": state,
                }
            ],
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
        }
        if self.started:
            status["startTime"] = self.started
        return {**self.body, "status": status}


@dataclass
class Job:
    body: dict[str, Any]
    pod: Pod | None = None
    pods: list[Pod] = field(default_factory=list)
    start_monotonic: float = field(default_factory=time.monotonic)
    failure_target: tuple[str, str] | None = None  # (reason, message) once the Job is failing
    finished: tuple[str, str, str] | None = None  # (type, reason, message)
    finished_monotonic: float | None = None
    failures: int = 0
    event: str | None = None  # why no pod could be created

    def to_api(self) -> dict[str, Any]:
        status: dict[str, Any] = {"startTime": self.body["metadata"]["creationTimestamp"]}
        active = [p for p in self.pods if not p.deleted and p.exit_code is None]
        status["active"] = len(active) or None
        status["ready"] = sum(1 for p in active if p.phase == "Running" and p.waiting is None)
        status["terminating"] = sum(1 for p in self.pods if p.deleted and not p.stopped.is_set()) or None
        status["failed"] = self.failures or None
        status["uncountedTerminatedPods"] = {}
        conditions = []
        if self.failure_target:
            reason, message = self.failure_target
            conditions.append(_condition("FailureTarget", reason, message))
        if self.finished:
            kind, reason, message = self.finished
            if kind == "Complete":
                conditions.append(_condition("SuccessCriteriaMet", reason, message))
                status["succeeded"] = 1
                status["completionTime"] = now()
            conditions.append(_condition(kind, reason, message))
        if conditions:
            status["conditions"] = conditions
        return {**self.body, "status": {k: v for k, v in status.items() if v is not None}}


def _condition(kind: str, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now(),
        "lastTransitionTime": now(),
    }
