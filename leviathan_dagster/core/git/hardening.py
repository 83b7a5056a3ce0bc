"""Git that the repository cannot program: the ``-c`` overrides and environment every git command of
Leviathan runs with (used by ``gitutil.run_git`` and the raw-bytes calls in ``paths``).

The target (its checkout, a ``conftest.py``, the model) may have planted configuration, so system and
global config are ignored, every setting that names a program is overridden on the command line (which
wins over every file), and drivers the repository-local config defines are switched off.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from leviathan_dagster.core.errors import LeviathanError

SCAN_TIMEOUT_SECONDS = 30.0

# Checked against git 2.39: command-line ``-c`` beats system, global and local config. Each of these
# would otherwise run a program the repository names (or reach a transport that does).
HARDENING: tuple[str, ...] = (
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",  # no hook runs: /dev/null/<hook> never exists
    "core.sshCommand=ssh",
    "core.askPass=",
    "core.pager=cat",
    "core.editor=true",
    "core.alternateRefsCommand=",
    "credential.helper=",  # an empty value clears every helper configured before it
    "diff.external=",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "push.gpgSign=false",
    "protocol.allow=never",  # ext:: and friends run commands; allow only the transports we use
    "protocol.file.allow=always",
    "protocol.https.allow=always",
    "protocol.http.allow=always",
    "protocol.ssh.allow=always",
)
# Settings whose *name* the repository chooses (``filter.<driver>.clean``): found in the local config
# and emptied, which git 2.39 treats as "no such program" (filters, diff and merge drivers).
_DRIVER_KEY_RE = re.compile(
    r"(?i)^(filter\..+\.(clean|smudge|process)|diff\..+\.(command|textconv)|merge\..+\.driver)$"
)
_TRANSPORT_KEY_RE = re.compile(r"(?i)^remote\..+\.(uploadpack|receivepack)$")
_TRANSPORT_DEFAULTS = {"uploadpack": "git-upload-pack", "receivepack": "git-receive-pack"}
# Local settings git obeys that cannot be neutralised by an override; their presence means something
# other than the harness wrote .git/config (url rewrites could send the credential elsewhere).
_REFUSED_KEY_RE = re.compile(r"(?i)^(url\..+\.(insteadof|pushinsteadof)|include\.path|includeif\..+\.path)$")
# The environment git gets: the process's, minus every GIT_* variable (GIT_SSH_COMMAND, GIT_EXTERNAL_DIFF,
# GIT_CONFIG_PARAMETERS, ... are programs and config too); callers pass the GIT_* they mean explicitly.
ISOLATION_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_ATTR_NOSYSTEM": "1"}


class RepositoryTampered(LeviathanError):
    """The repository's own config holds a setting only an attacker would have put there. Not
    transient: retrying the same repository gives the same answer."""


def hardening_args(cwd: Path | None = None) -> list[str]:
    """``-c`` overrides that keep git from running anything the repository at ``cwd`` configured.

    RepositoryTampered when the local config holds a setting that cannot be overridden (``url.*.insteadOf``,
    includes): only the harness writes .git/config, so that is tampering, and git must not run there.
    """
    args = [part for setting in HARDENING for part in ("-c", setting)]
    for key in _local_config_keys(cwd) if cwd is not None else ():
        if _DRIVER_KEY_RE.match(key):
            args += ["-c", f"{key}="]
        elif _TRANSPORT_KEY_RE.match(key):
            args += ["-c", f"{key}={_TRANSPORT_DEFAULTS[key.rsplit('.', 1)[1].lower()]}"]
        elif _REFUSED_KEY_RE.match(key):
            raise RepositoryTampered(
                f"{cwd}: refusing repository-local setting {key!r}: only Leviathan writes .git/config, and "
                "this one cannot be overridden safely (it would redirect remotes or pull in other files)"
            )
    return args


def _local_config_keys(cwd: Path) -> list[str]:
    """Names of the repository-local settings at ``cwd`` (none when it is not a repository). Reading
    config runs nothing; --no-includes so an include cannot hide a key from this scan (it is refused)."""
    try:
        listed = subprocess.run(
            ["git", "config", "--local", "--no-includes", "--name-only", "--list", "-z"],
            cwd=cwd,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **ISOLATION_ENV},
            capture_output=True,
            timeout=SCAN_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if listed.returncode != 0:
        return []
    return [key for key in listed.stdout.decode("utf-8", "replace").split("\0") if key]
