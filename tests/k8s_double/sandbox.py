"""A pod's container as bubblewrap runs it: the node's OS read-only as the image, a private root
(tmpfs) holding the image's own directories, exactly the pod's volumes at their mount paths, the
pod's environment only (``--clearenv``), its ``runAsUser`` inside a user namespace, and — with
``readOnlyRootFilesystem`` — nothing writable but those volumes.

The root is a tmpfs of its own (bubblewrap's default) with the host's top-level folders bound
read-only into it: the "image" is this machine's OS and the project's virtualenv. A mount point that
does not exist on the host (``/etc/leviathan``) cannot be created inside a read-only bind, so its
parent is rebuilt as a tmpfs holding read-only binds of the host parent's children, then the mount
point is created in it. Networking is the host's (pods reach the API double, PostgreSQL and the
GitHub double on 127.0.0.1); Service names resolve to 127.0.0.1 through the pod's ``/etc/hosts``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

BWRAP = "/usr/bin/bwrap"
# Host top-level folders a container never sees: it gets its own /proc, /dev, /tmp, /run.
_PRIVATE_TOP = {"proc", "dev", "sys", "tmp", "run", "lost+found", "mnt", "media", "boot"}
_TOPS_PRIVATE = {(top,) for top in _PRIVATE_TOP}


@dataclass
class Mount:
    source: Path
    target: str
    read_only: bool


@dataclass
class SandboxSpec:
    """What the kubelet hands the runtime for one container."""

    argv: list[str]
    env: dict[str, str]
    workdir: str
    uid: int | None
    gid: int | None
    read_only_root: bool
    mounts: list[Mount] = field(default_factory=list)
    image_dirs: tuple[str, ...] = ()  # folders the image itself contains (empty, owned by its user)
    # Files laid over the image's (``/etc/hosts``, ``/etc/passwd``): path -> host file.
    files: dict[str, Path] = field(default_factory=dict)
    # Host paths the pod reaches as if over the network (a test's local git remotes): bound read-write.
    visible: tuple[Path, ...] = ()
    # False when the node's seccomp or AppArmor profile would refuse namespaces (confinement.py).
    nested_userns: bool = True


def _image_paths_hidden_by_private_tops() -> list[str]:
    """The image is this checkout and its virtualenv: when they live under a folder a container gets
    privately (a clone in /tmp, as CI may make), they are bound read-only over the private one."""
    repo = Path(__file__).resolve().parents[2]
    candidates = {
        repo,
        Path(sys.prefix),
        Path(sys.base_prefix),
        Path(os.path.realpath(sys.executable)).parent,
    }
    hidden = [
        os.path.realpath(p) for p in candidates if Path(os.path.realpath(p)).parts[1:2] in _TOPS_PRIVATE
    ]
    # Outermost first, and nothing inside another (a venv inside the checkout comes with it).
    kept: list[str] = []
    for path in sorted(set(hidden), key=len):
        if not any(path == k or path.startswith(k + "/") for k in kept):
            kept.append(path)
    return kept


def _host_real(path: str) -> str:
    """``path`` with the host's symlinks in its existing prefix resolved (``/var/run`` -> ``/run``)."""
    parts = Path(path).parts
    for cut in range(len(parts), 0, -1):
        prefix = Path(*parts[:cut])
        if prefix.exists():
            return str(Path(os.path.realpath(prefix), *parts[cut:]))
    return path


def bwrap_argv(spec: SandboxSpec) -> list[str]:
    args = [BWRAP, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    if spec.uid is not None:
        args += ["--unshare-user", "--uid", str(spec.uid), "--gid", str(spec.gid or spec.uid)]
    if not spec.nested_userns:
        # What the container's profiles do to a sandbox inside it: its user namespace is refused.
        args += [] if spec.uid is not None else ["--unshare-user"]
        args += ["--disable-userns"]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", "/run"]
    tops = sorted(p.name for p in Path("/").iterdir() if p.name not in _PRIVATE_TOP and p.is_dir())
    # Where a needed path is missing on the host, its deepest existing folder is rebuilt as a tmpfs.
    needed = [_host_real(m.target) for m in spec.mounts] + [_host_real(d) for d in spec.image_dirs]
    needed += [_host_real(f) for f in spec.files]
    rebuilt: set[str] = set()
    for target in needed:
        parts = Path(target).parts
        for cut in range(2, len(parts)):
            parent = str(Path(*parts[:cut]))
            child = str(Path(*parts[: cut + 1]))
            if parts[1] in _PRIVATE_TOP or not Path(parent).is_dir():
                break
            if not Path(child).exists():
                rebuilt.add(parent)
                break
    for top in tops:
        path = f"/{top}"
        if not (path in rebuilt or os.path.islink(path)):
            args += ["--ro-bind", path, path]
        elif os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
    for parent in sorted(rebuilt, key=len):
        args += ["--tmpfs", parent]
        for child in sorted(Path(parent).iterdir()):
            if child.is_symlink():
                args += ["--symlink", os.readlink(child), str(child)]
            elif str(child) not in rebuilt:
                args += ["--ro-bind", str(child), str(child)]
    for path in spec.visible:
        args += ["--bind", str(path), str(path)]
    for folder in spec.image_dirs:
        args += ["--dir", _host_real(folder)]
    for target, source in spec.files.items():
        args += ["--ro-bind", str(source), _host_real(target)]
    for mount in spec.mounts:
        args += ["--ro-bind" if mount.read_only else "--bind", str(mount.source), _host_real(mount.target)]
    # After the volumes: an emptyDir mounted at /tmp would hide them again.
    for path in _image_paths_hidden_by_private_tops():
        args += ["--ro-bind", path, path]
    if spec.read_only_root:
        # Every mount of the image's own (the root, /tmp, rebuilt folders) read-only; a volume
        # mounted on one of those paths replaced it and stays writable.
        volumes = {_host_real(m.target) for m in spec.mounts}
        own = ["/", "/tmp", *sorted(rebuilt)]
        args += [arg for path in own if path not in volumes for arg in ("--remount-ro", path)]
    args += ["--chdir", spec.workdir, "--clearenv"]
    for name, value in spec.env.items():
        args += ["--setenv", name, value]
    return [*args, "--", *spec.argv]
