"""A real systemd as PID 1 of an nspawn container, for end-to-end tests of Turret's units.

The host's PID 1 need not be systemd. The root filesystem is a minimal Debian bookworm made by
debootstrap; Turret runs from a venv built with the host's Debian /usr/bin/python3 (the same
Python as the container's) and bind-mounted read-only, so the container, which has no network,
needs no downloads. The OS tree is mounted with --volatile=overlay, so nothing a test does inside
changes it and a cached tree can be reused between local runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
# libnss-systemd resolves DynamicUser= names; procps provides the `kill` of ExecReload=.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "libnss-systemd", "python3", "procps")
HOST_PYTHON = "/usr/bin/python3"
CGROUP_ROOT = Path("/sys/fs/cgroup")
VENV_IN_MACHINE = "/opt/turret/venv"
SRC_IN_MACHINE = "/opt/turret/src"


def missing_prerequisites() -> list[str]:
    """What this host lacks to boot a container; empty when the tests can run."""
    missing = [
        f"{tool} (apt: systemd-container / debootstrap / util-linux)"
        for tool in ("systemd-nspawn", "debootstrap", "nsenter")
        if shutil.which(tool) is None
    ]
    if os.geteuid() != 0:
        missing.append("root")
    if not Path(HOST_PYTHON).exists():
        missing.append(HOST_PYTHON)
    if (
        not any((CGROUP_ROOT / h).is_dir() for h in ("unified", "systemd"))
        and not (CGROUP_ROOT / "cgroup.procs").exists()
    ):
        missing.append("a writable cgroup hierarchy")
    return missing


def tool(name: str) -> str:
    """The absolute path of a host program."""
    path = shutil.which(name)
    assert path is not None, f"{name} not found"
    return path


def debian_mirror() -> str:
    """The host's own Debian mirror (a registry that is reachable here)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        found = re.search(r"^URIs:\s*(\S+)", sources.read_text(), re.MULTILINE)
        if found:
            return found[1]
    return "http://deb.debian.org/debian"


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _atomic_build(final: Path, build: Callable[[Path], None]) -> Path:
    """Build into a scratch folder next to `final` and rename, so a cache is never half-made."""
    if final.exists():
        return final
    scratch = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        build(scratch)
        try:
            scratch.rename(final)
        except OSError:
            if not final.exists():
                raise  # else another run built the same thing first: use theirs
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def rootfs(folder: Path) -> Path:
    """A bootable Debian tree in `folder`, keyed by what goes into it (made if absent)."""
    mirror = debian_mirror()

    def build(target: Path) -> None:
        log = target.with_suffix(".log")
        with log.open("w") as out:
            subprocess.run(  # noqa: S603 - fixed argv
                [
                    tool("debootstrap"),
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    SUITE,
                    str(target),
                    mirror,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=900,
            )
        log.unlink()

    folder.mkdir(parents=True, exist_ok=True)
    return _atomic_build(folder / f"rootfs-{_key(SUITE, mirror, *PACKAGES)}", build)


def project_dependencies() -> list[str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return list(data["project"]["dependencies"])


def venv(folder: Path) -> Path:
    """A venv of Debian's Python with Turret's dependencies; Turret's source is bind-mounted."""
    deps = project_dependencies()
    version = subprocess.run(  # noqa: S603 - fixed argv
        [HOST_PYTHON, "-c", "import sys; print(sys.version)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def build(target: Path) -> None:
        subprocess.run([HOST_PYTHON, "-m", "venv", str(target)], check=True)  # noqa: S603
        subprocess.run(  # noqa: S603 - fixed argv
            [str(target / "bin" / "python"), "-m", "pip", "install", "-q", *deps],
            check=True,
            timeout=900,
        )
        (site,) = (target / "lib").glob("python3*/site-packages")
        (site / "turret-src.pth").write_text(SRC_IN_MACHINE + "\n")

    folder.mkdir(parents=True, exist_ok=True)
    return _atomic_build(folder / f"venv-{_key(version, *deps)}", build)


class Machine:
    """A booted container; commands run in it through nsenter."""

    def __init__(
        self, name: str, root: Path, binds: Sequence[tuple[Path, str, bool]], console: Path
    ) -> None:
        self.name = name
        self.root = root
        self.binds = binds
        self.leader = 0
        self.console = console
        self._nspawn: subprocess.Popen[bytes] | None = None

    @property
    def cgroups(self) -> list[Path]:
        hierarchies = [CGROUP_ROOT / h for h in ("systemd", "unified")]
        return [h / self.name for h in hierarchies if h.is_dir()]

    def boot(self) -> None:
        """Start systemd in the container and wait until it is up."""
        for cgroup in self.cgroups:
            cgroup.mkdir(exist_ok=True)
        # nspawn must start inside its own cgroup: the host has no systemd to make one for it.
        join = " ".join(f"echo $$ > {c}/cgroup.procs;" for c in self.cgroups)
        binds = [f"--bind{'-ro' if ro else ''}={host}:{inside}" for host, inside, ro in self.binds]
        nspawn = [
            tool("systemd-nspawn"), "-q", "-D", str(self.root), "-b", "-M", self.name,
            "--register=no", "--keep-unit", "--private-network", "--console=pipe",
            "--volatile=overlay",
            # bpf() must be allowed, or IPAddressDeny= is silently not enforced.
            "--system-call-filter=bpf",
            *binds,
        ]  # fmt: skip
        with self.console.open("wb") as console:
            self._nspawn = subprocess.Popen(  # noqa: S603 - fixed argv
                [tool("sh"), "-c", f'{join} exec "$@"', "sh", *nspawn],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
            )
        self.leader = self._wait_for_leader()
        deadline = time.monotonic() + 60
        while self.run("systemctl", "is-system-running", check=False).stdout.strip() not in (
            "running",
            "degraded",
        ):
            assert time.monotonic() < deadline, self.console.read_text(errors="replace")
            time.sleep(0.05)

    def _wait_for_leader(self) -> int:
        """The host PID of the container's PID 1 (nspawn forks helpers on the way to it)."""
        assert self._nspawn is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for pid in _descendants(self._nspawn.pid):
                with contextlib.suppress(OSError):
                    status = Path(f"/proc/{pid}/status").read_text()
                    nspid = next(x for x in status.splitlines() if x.startswith("NSpid:"))
                    if nspid.split()[-1] == "1":
                        return pid
            assert self._nspawn.poll() is None, self.console.read_text(errors="replace")
            time.sleep(0.02)
        raise AssertionError("systemd-nspawn started no container")

    def run(
        self, *argv: str, check: bool = True, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container (all its namespaces)."""
        result = subprocess.run(  # noqa: S603 - fixed argv
            [tool("nsenter"), "-t", str(self.leader), "-a", *argv],
            capture_output=True,
            text=True,
            input=stdin,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{argv} failed ({result.returncode}): {result.stderr}")
        return result

    def start(self, *argv: str) -> subprocess.Popen[str]:
        """Start a command inside the container and return at once."""
        return subprocess.Popen(  # noqa: S603 - fixed argv
            [tool("nsenter"), "-t", str(self.leader), "-a", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def in_network(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        """Start a host program inside the container's network namespace only."""
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]  # noqa: S603
            [tool("nsenter"), f"--net=/proc/{self.leader}/ns/net", *argv], text=True, **kwargs
        )

    def path(self, inside: str) -> Path:
        """A path inside the container, seen from the host."""
        return Path(f"/proc/{self.leader}/root") / inside.lstrip("/")

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *matches: str) -> list[dict[str, object]]:
        out = self.run("journalctl", "--no-pager", "-o", "json", *matches).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def shutdown(self) -> None:
        """Power off, and always remove the container and its cgroups."""
        if self._nspawn is not None and self.leader:
            self.run("systemctl", "poweroff", check=False, timeout=30)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._nspawn.wait(timeout=30)
        if self._nspawn is not None and self._nspawn.poll() is None:
            self._nspawn.kill()
            self._nspawn.wait()
        # Whatever survived (a container whose nspawn was killed) dies with its cgroup.
        for cgroup in self.cgroups:
            kill = cgroup / "cgroup.kill"
            if kill.exists():
                kill.write_text("1")
        deadline = time.monotonic() + 30
        for cgroup in self.cgroups:
            for folder in sorted(cgroup.glob("**/"), key=lambda p: -len(p.parts)):
                while folder.exists():
                    try:
                        folder.rmdir()
                    except OSError:  # busy until the killed processes are gone
                        assert time.monotonic() < deadline, f"cannot remove {folder}"
                        time.sleep(0.05)


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop()
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            found.extend(int(c) for c in children)
            queue.extend(int(c) for c in children)
    return found


@contextlib.contextmanager
def booted(
    name: str, root: Path, binds: Sequence[tuple[Path, str, bool]], console: Path
) -> Iterator[Machine]:
    """A booted machine, shut down and cleaned up however the block ends."""
    machine = Machine(name, root, binds, console)
    try:
        machine.boot()
        yield machine
    finally:
        machine.shutdown()


def log(message: str) -> None:
    """Progress for `pytest -s`; the e2e test takes a while on a fresh machine."""
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr)  # noqa: T201
