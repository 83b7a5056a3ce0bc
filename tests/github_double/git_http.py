"""Real git smart HTTP for the double: each request runs ``git http-backend`` as a CGI program against
the bare repositories under ``GIT_PROJECT_ROOT`` (clone, fetch and push exactly as against GitHub)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# Every repository gets this hook: a push is refused when the double armed a rejection for it
# (the message is handed over in the environment git passes from http-backend to its hooks).
PRE_RECEIVE_HOOK = """#!/bin/sh
if [ -n "$DOUBLE_REJECT_PUSH" ]; then
  echo "$DOUBLE_REJECT_PUSH" >&2
  exit 1
fi
exit 0
"""


def install_hooks(bare: Path) -> None:
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(PRE_RECEIVE_HOOK, encoding="utf-8")
    hook.chmod(0o755)


def run_http_backend(
    git_root: Path,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    *,
    remote_user: str,
    reject_push: str | None,
) -> tuple[int, dict[str, str], bytes]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_PROJECT_ROOT": str(git_root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_TYPE": headers.get("content-type", ""),
        "CONTENT_LENGTH": str(len(body)),
        # http-backend enables receive-pack only for an authenticated user.
        "REMOTE_USER": remote_user,
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "GATEWAY_INTERFACE": "CGI/1.1",
    }
    if "content-encoding" in headers:
        env["HTTP_CONTENT_ENCODING"] = headers["content-encoding"]
    if "git-protocol" in headers:
        env["GIT_PROTOCOL"] = headers["git-protocol"]
    if reject_push:
        env["DOUBLE_REJECT_PUSH"] = reject_push
    proc = subprocess.run(
        ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=120, check=False
    )
    head, _, payload = proc.stdout.partition(b"\r\n\r\n")
    if not _:
        head, _, payload = proc.stdout.partition(b"\n\n")
    status, out_headers = 200, {}
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.strip().split()[0])
        elif name:
            out_headers[name.strip()] = value.strip()
    if proc.returncode != 0 and not proc.stdout:
        return 500, {"Content-Type": "text/plain"}, proc.stderr
    return status, out_headers, payload
