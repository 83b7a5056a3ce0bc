"""Real git smart HTTP for the double: each request runs ``git http-backend`` as a CGI program against
the bare repositories under ``GIT_PROJECT_ROOT`` (clone, fetch and push exactly as against GitHub).

Pushes pass GitHub's server-side checks, in a real ``pre-receive`` hook that reads the pushed commits:
workflow files need the ``workflows`` permission (App) or ``workflow`` scope (token), secret scanning
push protection refuses tokens in added lines (GH009), rulesets refuse restricted ref creations
(GH013), and a test may arm any other refusal (GH006, ...). The hook prints GitHub's ``remote:`` lines;
GitHub's reason for the ref (``! [remote rejected] ... (reason)``) replaces git's generic "pre-receive
hook declined" in the report-status that goes back to the client, as GitHub's own receive-pack says it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

GENERIC_REASON = b"pre-receive hook declined"

PRE_RECEIVE_HOOK = r'''#!{python}
"""The GitHub double's server-side push checks (see git_http.py)."""
import fnmatch, json, os, re, subprocess, sys

ZERO = "0" * 40
SECRET = re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{{36}}|github_pat_[A-Za-z0-9_]{{82}})\b")
policy = json.loads(os.environ.get("DOUBLE_PUSH_POLICY") or "{{}}")


def git(*args):
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def refuse(ref, lines, reason):
    for line in lines:
        print(line, file=sys.stderr)
    with open(os.environ["DOUBLE_REASON_FILE"], "a", encoding="utf-8") as out:
        out.write(json.dumps([ref, reason]) + "\n")
    sys.exit(1)


armed = policy.get("armed")
for line in sys.stdin.read().splitlines():
    old, new, ref = line.split()
    if armed:
        refuse(ref, armed["lines"], armed["reason"])
    if new == ZERO:
        continue
    for rule in policy.get("rulesets", []):
        if old == ZERO and rule["rule"] == "creation" and fnmatch.fnmatch(ref, rule["ref"]):
            refuse(
                ref,
                [
                    f"error: GH013: Repository rule violations found for {{ref}}.",
                    f"Review all repository rules at {{policy['rules_url']}}?ref={{ref.replace('/', '%2F')}}",
                    "",
                    "- Cannot create ref due to creations being restricted.",
                    "",
                ],
                "push declined due to repository rule violations",
            )
    commits = git("rev-list", new, "--not", "--all").split()
    for commit in commits:
        changed = git("diff-tree", "--no-commit-id", "--name-only", "-r", "-m", "--root", commit).split()
        for path in changed:
            if path.startswith(".github/workflows/") and not policy.get("workflows"):
                who = policy.get("kind") == "installation"
                reason = (
                    f"refusing to allow a GitHub App to create or update workflow `{{path}}` "
                    "without `workflows` permission"
                    if who
                    else f"refusing to allow a Personal Access Token to create or update workflow "
                    f"`{{path}}` without `workflow` scope"
                )
                refuse(ref, [], reason)
        if policy.get("push_protection"):
            patch = git("show", "--format=", "--unified=0", commit)
            added = [l for l in patch.splitlines() if l.startswith("+") and not l.startswith("+++")]
            if any(SECRET.search(l) for l in added):
                refuse(
                    ref,
                    [
                        "error: GH009: Secrets detected! This push failed.",
                        "",
                        "- GITHUB PUSH PROTECTION",
                        "  Resolve the following violations before pushing again",
                        "",
                        "  - Push cannot contain secrets",
                        "",
                        f"    commit: {{commit}}",
                        "",
                    ],
                    "pre-receive hook declined",
                )
sys.exit(0)
'''


def install_hooks(bare: Path) -> None:
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(PRE_RECEIVE_HOOK.format(python=sys.executable), encoding="utf-8")
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
    push_policy: dict | None,
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
    with tempfile.TemporaryDirectory(prefix="double-push-") as scratch:
        reasons_file = Path(scratch) / "reasons"
        env["DOUBLE_REASON_FILE"] = str(reasons_file)
        env["DOUBLE_PUSH_POLICY"] = json.dumps(push_policy or {})
        proc = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=120, check=False
        )
        reasons = (
            [json.loads(line) for line in reasons_file.read_text(encoding="utf-8").splitlines()]
            if reasons_file.exists()
            else []
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
    if reasons:
        payload = rewrite_ref_reasons(payload, {ref: reason for ref, reason in reasons})
    return status, out_headers, payload


# -- report-status rewriting (pkt-lines, possibly inside side-band-64k channel 1) ---------------------


def _pkt_lines(data: bytes) -> list[bytes | None]:
    """Split a pkt-line stream; None stands for a flush packet."""
    out: list[bytes | None] = []
    at = 0
    while at + 4 <= len(data):
        size = int(data[at : at + 4], 16)
        if size == 0:
            out.append(None)
            at += 4
            continue
        out.append(data[at + 4 : at + size])
        at += size
    return out


def _encode(packets: list[bytes | None]) -> bytes:
    return b"".join(b"0000" if p is None else b"%04x" % (len(p) + 4) + p for p in packets)


def _rewrite_report(report: bytes, reasons: dict[str, str]) -> bytes:
    packets = []
    for packet in _pkt_lines(report):
        if packet is not None and packet.startswith(b"ng "):
            ref = packet[3:].split(b" ", 1)[0].decode()
            if ref in reasons and GENERIC_REASON in packet:
                packet = b"ng " + ref.encode() + b" " + reasons[ref].encode() + b"\n"
        packets.append(packet)
    return _encode(packets)


def rewrite_ref_reasons(payload: bytes, reasons: dict[str, str]) -> bytes:
    """``payload`` (receive-pack's answer) with each refused ref's reason replaced by GitHub's."""
    packets = _pkt_lines(payload)
    banded = any(p is not None and p[:1] == b"\x01" for p in packets)
    if not banded:
        return _rewrite_report(payload, reasons)
    report = b"".join(p[1:] for p in packets if p is not None and p[:1] == b"\x01")
    rewritten = _rewrite_report(report, reasons)
    out: list[bytes | None] = []
    placed = False
    for packet in packets:
        if packet is not None and packet[:1] == b"\x01":
            if not placed:
                out += [b"\x01" + rewritten[i : i + 65515] for i in range(0, len(rewritten), 65515)]
                placed = True
            continue
        out.append(packet)
    return _encode(out)
