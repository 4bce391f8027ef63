"""The saturation scenario inside a real systemd, with `JournalSink` and with the file sink.

`bench.journald` times one `Auditor.record` at a time; this runs the proxy path at saturation as
production runs it: Turret as a systemd service (a transient unit, `Type=notify`) in a container
booted with the e2e machinery, auditing to journald (the default under systemd) in some rounds
and to a JSON-lines file (`--audit-file`) in the others, alternating. The upstream (the bench's
nginx) and wrk run on the host inside the container's network namespace, so all traffic stays
in a namespace this made. Two records are written per request (the decision before forwarding,
then the outcome), so the difference in time per request between the sinks, halved, is what a
journald record costs over a file record under load.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from bench.loadgen import WRK_MARKER, write_wrk_script
from bench.scenarios import UPSTREAM_MIX, proxied
from bench.servers import Server, Workdir, turret_config, upstream_conf
from tests.e2e.nspawn_machine import VENV_IN_MACHINE, Machine, tool

PORT = 8431  # Turret, inside the container's network namespace
UPSTREAM_PORT = 8432
IN_MACHINE = "/bench"  # where the host's work directory is bound
SINKS = ("journald", "file")


@dataclass
class SinkRuns:
    """One sink's saturation rounds: requests per second, and audit records each round left."""

    rps: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    records: list[int] = field(default_factory=list)
    failed: int = 0

    @property
    def median_rps(self) -> float:
        return statistics.median(self.rps)


def saturate(
    machine: Machine, host_dir: Path, *, rounds: int, duration: int, connections: int = 64
) -> dict[str, SinkRuns]:
    """Run the proxy path at saturation `rounds` times per sink (journald, file, journald, ...)
    in `machine`, whose `IN_MACHINE` is `host_dir` (read-write). Raises if a canary reached a
    response, the journal or the audit file, or if a round's records are not all there."""
    work = Workdir.create(host_dir / "work")
    upstream = _start_upstream(machine, work)
    try:
        config = turret_config(work, upstream, PORT, capabilities=False)
        auth = f"Bearer {work.agent_token}"
        script = write_wrk_script(work.root / "wrk-journald.lua", proxied(UPSTREAM_MIX), auth)
        (work.root / "canaries").write_text("\n".join(work.canaries) + "\n")
        load = _Load(machine, work, config, script, duration, connections)
        runs = {sink: SinkRuns() for sink in SINKS}
        for n in range(rounds):
            order = SINKS if n % 2 == 0 else SINKS[::-1]
            for sink in order:
                load.round(sink, n, runs[sink])
        _no_canaries(machine, work)
        return runs
    finally:
        upstream.proc.kill()
        upstream.proc.wait()


def _start_upstream(machine: Machine, work: Workdir) -> Server:
    conf = upstream_conf(work, UPSTREAM_PORT)
    error_log = work.logs / "nginx-upstream.error.log"
    argv = [tool("nginx"), "-p", str(work.root), "-c", str(conf), "-e", str(error_log)]
    proc = machine.in_network(argv, stdin=subprocess.DEVNULL)
    _wait_for_port(machine, UPSTREAM_PORT)
    return Server("upstream", UPSTREAM_PORT, cast("subprocess.Popen[bytes]", proc))


def _wait_for_port(machine: Machine, port: int) -> None:
    probe = (
        "import socket, sys, time\n"
        "deadline = time.monotonic() + 30\n"
        "while True:\n"
        "    try:\n"
        f"        socket.create_connection(('127.0.0.1', {port}), timeout=1).close(); break\n"
        "    except OSError:\n"
        "        if time.monotonic() > deadline: sys.exit('port never opened')\n"
        "        time.sleep(0.02)\n"
    )
    proc = machine.in_network([sys.executable, "-I", "-c", probe], stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"port {port} never opened in the container: {err}")


@dataclass(frozen=True)
class _Load:
    """What every round runs: Turret's config, wrk's script, how long and how hard."""

    machine: Machine
    work: Workdir
    config: Path
    script: Path
    duration: int
    connections: int

    def round(self, sink: str, n: int, runs: SinkRuns) -> None:
        """Start Turret as unit `turret-bench-SINK-N` auditing to `sink`, warm it up, saturate
        it, stop it; add the figures to `runs`."""
        machine, inside, unit = self.machine, f"{IN_MACHINE}/work", f"turret-bench-{sink}-{n}"
        audit = [] if sink == "journald" else ["--audit-file", f"{inside}/audit-{n}.jsonl"]
        machine.run(
            "systemd-run", f"--unit={unit}", "--quiet", "--property=Type=notify",
            "--property=NotifyAccess=main", "--property=LogRateLimitIntervalSec=0",
            f"{VENV_IN_MACHINE}/bin/python", "-m", "turret", "serve",
            "--config", f"{inside}/{self.config.name}", "--credentials-dir",
            f"{inside}/credentials", "--shutdown-timeout", "2", *audit,
            timeout=120,
        )  # fmt: skip
        try:
            _wrk(machine, self.script, 1, self.connections)  # warm-up
            # Only the measured part's records are counted, not the warm-up's.
            before = _decisions(machine, self.work, unit, sink, n)
            rps, requests, failed = _wrk(machine, self.script, self.duration, self.connections)
            records = _decisions(machine, self.work, unit, sink, n) - before
        finally:
            machine.run("systemctl", "stop", unit, timeout=60)
        runs.rps.append(rps)
        runs.requests.append(requests)
        runs.failed += failed
        runs.records.append(records)
        # Every request wrk counted was decided, and its decision written, before it was
        # answered.
        if records < requests:
            raise RuntimeError(f"{sink} round {n}: {requests} requests but {records} decisions")


def _decisions(machine: Machine, work: Workdir, unit: str, sink: str, n: int) -> int:
    """How many decision records `unit` has written so far (to the journal, or its file)."""
    if sink == "journald":
        machine.run("journalctl", "--sync")
        out = machine.run(
            "sh", "-c",
            f"journalctl --no-pager -o cat _SYSTEMD_UNIT={unit}.service TURRET_EVENT=decision"
            " | wc -l",
        ).stdout  # fmt: skip
        return int(out.strip())
    with (work.root / f"audit-{n}.jsonl").open() as f:
        return sum(1 for line in f if json.loads(line).get("TURRET_EVENT") == "decision")


def _wrk(machine: Machine, script: Path, duration: int, connections: int) -> tuple[float, int, int]:
    argv = [
        tool("wrk"), "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s",
        "-s", str(script), f"http://127.0.0.1:{PORT}/",
    ]  # fmt: skip
    started = time.monotonic()
    proc = machine.in_network(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate(timeout=duration + 60)
    for line in out.splitlines():
        if line.startswith(WRK_MARKER):
            s = json.loads(line[len(WRK_MARKER) :])
            return s["requests"] / s["duration_us"] * 1e6, s["requests"], s["failed"]
    raise RuntimeError(f"wrk gave no summary after {time.monotonic() - started:.0f} s:\n{out}")


def _no_canaries(machine: Machine, work: Workdir) -> None:
    """Neither canary (the agent's token, the upstream's secret) in the journal or a file."""
    found = machine.run(
        "sh", "-c",
        f"journalctl --no-pager -o export | grep -c -F -f {IN_MACHINE}/work/canaries || true",
    ).stdout.strip()  # fmt: skip
    if found != "0":
        raise RuntimeError(f"a canary reached the journal ({found} lines)")
    for path in work.root.glob("audit-*.jsonl"):
        text = path.read_text()
        if any(c in text for c in work.canaries):
            raise RuntimeError(f"a canary reached {path.name}")
    for path in work.logs.iterdir():
        text = path.read_text(errors="replace")
        if any(c in text for c in work.canaries):
            raise RuntimeError(f"a canary reached {path.name}")


def per_record_us(runs: dict[str, SinkRuns]) -> float:
    """What a journald record costs over a file record at saturation, in µs: the difference in
    time per request (median rounds), over the two records each request writes."""
    per_request = {sink: 1e6 / r.median_rps for sink, r in runs.items()}
    return (per_request["journald"] - per_request["file"]) / 2
