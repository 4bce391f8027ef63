"""Child processes of the benchmark: started in their own sessions, always stopped.

Every process the harness starts goes through `Procs.start`, which records its pid (also to a
file, so a test can check that none is left behind). `Procs.close` stops them all, newest first:
SIGTERM to the process group, then SIGKILL after a grace period. It runs on normal exit, on an
exception and on Ctrl-C/SIGTERM, because the harness holds `Procs` in a `with` block.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

STOP_GRACE = 3.0


def check_loopback(host: str) -> str:
    """`host` if it is a loopback address; load is never sent anywhere else."""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"refusing to send load to {host}: not a loopback address")
    return host


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class ExitedEarly(RuntimeError):
    """A server exited before it listened; `last_line` is the last line it logged."""

    def __init__(self, returncode: int, last_line: str) -> None:
        super().__init__(f"exited with status {returncode} at start: {last_line}")
        self.returncode = returncode
        self.last_line = last_line


def rss_kib(pid: int) -> int:
    """Resident set size of `pid` in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Procs:
    """The set of running children; a context manager that stops them all on exit."""

    def __init__(self, logs: Path, pid_file: Path | None = None) -> None:
        self.logs = logs
        self.pid_file = pid_file
        self._running: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `argv` in a new session, output to logs/NAME.log."""
        log_path = self.logs / f"{name}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.track(proc)
        self._logs[proc.pid] = log_path
        return proc

    def wait_for_port(
        self, proc: subprocess.Popen[bytes], port: int, timeout: float = 15.0
    ) -> None:
        """Return once something accepts connections on 127.0.0.1:`port`; fail if `proc` exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ExitedEarly(proc.returncode, self.last_line(proc))
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return
            time.sleep(0.02)
        raise RuntimeError(f"nothing listened on port {port} within {timeout:g} s")

    def last_line(self, proc: subprocess.Popen[bytes]) -> str:
        """The last line `proc` wrote to its log."""
        log = self._logs.get(proc.pid)
        lines = log.read_text(errors="replace").strip().splitlines() if log else []
        return lines[-1] if lines else ""

    def track(self, proc: subprocess.Popen[bytes]) -> None:
        """Take charge of stopping `proc`, which must lead its own session."""
        self._running.append(proc)
        if self.pid_file is not None:
            with self.pid_file.open("a") as f:
                f.write(f"{proc.pid}\n")

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        """Stop one child and its process group; its exit status."""
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        # Whatever the leader left in its group goes too (nginx workers, a forked helper).
        _signal_group(proc, signal.SIGKILL)
        if proc in self._running:
            self._running.remove(proc)
        return proc.returncode

    def close(self) -> None:
        """Stop every child, newest first."""
        while self._running:
            self.stop(self._running[-1])

    def __enter__(self) -> Procs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A second Ctrl-C must not cut the clean-up short.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.close()
        finally:
            signal.signal(signal.SIGINT, previous)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
