"""A real Dagster UI for browser tests: dagster-webserver and dagster-daemon on a temporary instance on
127.0.0.1, driven by Playwright through Debian's Chromium (Playwright cannot download a browser here)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from support import REPO_ROOT

CHROMIUM = Path(os.environ.get("LEVIATHAN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO_ROOT / "test-artifacts"
STARTUP_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dagster_env(dagster_home: Path, config_path: Path, home: Path) -> dict[str, str]:
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "leviathan_dagster" / "instance" / "dagster.yaml", dagster_home / "dagster.yaml")
    # Create the SQLite storages once, here: the daemon and the webserver starting together would race
    # to create the same tables.
    dg.DagsterInstance.from_config(str(dagster_home)).dispose()
    return {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "LEVIATHAN_CONFIG": str(config_path),
        "LEVIATHAN_HOME": str(home),
    }


@contextmanager
def dagster_ui(env: dict[str, str], cwd: Path) -> Iterator[str]:
    """Start the daemon and the webserver; yield the UI's base URL; stop both (whole process groups)."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    workspace = str(REPO_ROOT / "workspace.yaml")
    logs = [open(cwd / f"{name}.log", "wb") for name in ("daemon", "webserver")]  # noqa: SIM115
    commands = [
        [str(bin_dir / "dagster-daemon"), "run", "-w", workspace],
        [str(bin_dir / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)],
    ]
    procs = [
        subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for cmd, log in zip(commands, logs, strict=True)
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(base + "/server_info", procs, cwd)
        yield base
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log in logs:
            log.close()


def wait_for(url: str, procs: list[subprocess.Popen], cwd: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a Dagster process exited early; see {cwd}/daemon.log and webserver.log")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as answer:  # not up yet; the error holds the socket: close it
            answer.close()
            time.sleep(0.5)
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {STARTUP_SECONDS}s")


def open_page(page, url: str) -> None:
    """Go to ``url`` and dismiss the first-visit community dialog if it shows (it covers the page)."""
    page.goto(url)
    page.wait_for_load_state("networkidle")
    skip = page.get_by_role("button", name="Skip")
    if skip.is_visible():
        skip.click()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
