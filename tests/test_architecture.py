"""The core and the worker never import Dagster; arrows point one way."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import leviathan_dagster.core as core


def core_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(core.__path__, prefix="leviathan_dagster.core."))


def test_every_core_and_worker_module_imports_with_dagster_blocked() -> None:
    modules = [*core_modules(), "leviathan_dagster.demo_setup", "worker.attempt", "worker.environment"]
    assert len(modules) > 20
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'dagster' or name.startswith(('dagster.', 'dagster_')):\n"
        "            raise ImportError('dagster is blocked for the core: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {modules!r}:\n"
        "    __import__(m)\n"
        "print('ok', len(sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")


def test_nothing_outside_the_code_location_imports_defs() -> None:
    import pathlib

    root = pathlib.Path(core.__file__).parents[2]
    offenders = [
        str(path.relative_to(root))
        for folder in ("leviathan_dagster/core", "worker")
        for path in (root / folder).rglob("*.py")
        if "leviathan_dagster.defs" in path.read_text() or "leviathan_dagster.definitions" in path.read_text()
    ]
    assert offenders == []
