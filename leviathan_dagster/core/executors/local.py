"""``local``: the worker as a subprocess of this machine (``python -m worker``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from leviathan_dagster.core.attempts.ledger import INFRASTRUCTURE
from leviathan_dagster.core.executors.base import (
    AttemptSpec,
    ExecutionResult,
    Executor,
    log_tail,
    worker_process_environment,
)
from leviathan_dagster.core.redaction import is_secret_name

# The worker enforces the attempt timeout on the test command itself (and records ``timeout``); this
# grace covers clone and push so the executor only kills a worker that is really stuck. Such a worker
# could not record how it ended: ``infrastructure``, as the k8s executor reports a Job past its
# activeDeadlineSeconds (attempt_timeout_seconds + deadline_grace_seconds).
KILL_GRACE_SECONDS = 60


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, *, kill_grace_seconds: float = KILL_GRACE_SECONDS) -> None:
        self.kill_grace_seconds = kill_grace_seconds
        self._workers: dict[str, subprocess.Popen] = {}

    def cleanup(self, attempt_id: str) -> None:
        """Kill the attempt's worker and everything it started if it is still running: this runs when
        the run is interrupted (an operator canceled it) while ``run`` was waiting on the worker."""
        proc = self._workers.pop(attempt_id, None)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def run(self, spec: AttemptSpec) -> ExecutionResult:
        env = worker_process_environment(spec)
        named = set(spec.target.secret_env.values())
        secrets = [value for key, value in env.items() if key in named or is_secret_name(key)]
        timeout = spec.target.policy.attempt_timeout_seconds + self.kill_grace_seconds
        # A new session so a timeout kills the worker *and* whatever it started (test commands).
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._workers[spec.attempt_id] = proc
        try:
            output, _ = proc.communicate(timeout=timeout)
            # Redacted by every secret value the worker was given.
            return ExecutionResult(proc.returncode, False, log_tail(output, secrets))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            headline = (
                f"worker killed: attempt_timeout_seconds={spec.target.policy.attempt_timeout_seconds} "
                f"+ {self.kill_grace_seconds:g}s grace passed before it ended"
            )
            return ExecutionResult(None, True, log_tail(output, secrets, headline=headline), INFRASTRUCTURE)
