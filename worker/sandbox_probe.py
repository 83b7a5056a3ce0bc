"""The worker's sandbox probe: one log line at start saying whether a sandbox can be created here, and
no attempt that needs one without it.

On Kubernetes the probe is the operator's check that the node setup worked (the pod log's first
lines; no ``kubectl debug`` needed). When it fails, the message names what the worker pod asked the
node for (``LEVIATHAN_WORKER_CONFINEMENT``, set by the Job) and the securityContext fix, because a
namespace refused inside a pod is almost always its seccomp or AppArmor profile, not the kernel.
"""

from __future__ import annotations

import logging
import os

from leviathan_dagster.core.executors.k8s.security import CONFINEMENT_ENV
from leviathan_dagster.core.sandbox import SandboxUnavailable, sandbox_problem

log = logging.getLogger("leviathan.worker")

FIX_DOC = "docs/deploy-kubernetes.md#the-workers-sandbox-on-a-real-node-read-before-the-first-attempt"


def sandbox_failure(problem: str, environ=os.environ) -> str:
    """``problem`` (sandbox_problem's words), with the Kubernetes fix when running in a worker pod."""
    confinement = environ.get(CONFINEMENT_ENV)
    if not confinement:
        return problem
    return (
        f"{problem}. This worker pod runs with {confinement}: its container's securityContext must allow "
        "user namespaces and mounts — seccompProfile Localhost leviathan/worker-sandbox.json and "
        "appArmorProfile Localhost leviathan-worker-sandbox, installed on every node by "
        "deploy/k8s/node-setup (kubernetes.worker_seccomp_profile / worker_apparmor_profile in "
        f"leviathan.yaml; RuntimeDefault refuses them). See {FIX_DOC}"
    )


def probe_sandbox(required: bool) -> None:
    """Log the probe's result; raise SandboxUnavailable when it failed and ``required``."""
    problem = sandbox_problem()
    if problem is None:
        log.info("sandbox probe: ok (bubblewrap creates user, mount, PID and network namespaces here)")
        return
    message = sandbox_failure(problem)
    log.error("sandbox probe: FAILED: %s", message)
    if required:
        raise SandboxUnavailable(message)
