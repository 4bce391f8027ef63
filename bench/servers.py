"""The servers under test, each started as a child process on a free loopback port.

The workdir holds everything they need: canary credentials (values that must never appear in a
response, a log or an audit record), rendered configs, logs and Turret's audit file.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Procs, free_port

HERE = Path(__file__).parent
SERVICE = "bench"  # the upstream's service name in Turret's config and in every proxy path
PROXY_PREFIX = f"/v1/proxy/{SERVICE}"
PLACEHOLDER = re.compile(r"@[A-Z_]+@")
# The upstream's answer: about 1 KiB of JSON, a typical small API response.
ITEM = {
    "id": 42,
    "name": "benchmark item",
    "state": "open",
    "tags": ["alpha", "beta", "gamma"],
    "description": "A fixed document the upstream returns for every request. " * 14,
}


@dataclass(frozen=True)
class Workdir:
    """Paths and canary credentials shared by every server of one run."""

    root: Path
    agent_token: str
    upstream_secret: str

    @classmethod
    def create(cls, root: Path) -> Workdir:
        """Make the directory tree and write fresh canary credentials into it."""
        for sub in ("credentials", "logs", "nginx-tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
            (root / sub).chmod(0o700)
        work = cls(
            root,
            agent_token="turret_CANARYagent" + secrets.token_hex(16),
            upstream_secret="CANARYupstream" + secrets.token_hex(16),
        )
        _private(work.credentials / "bench-agent-token", work.agent_token)
        _private(work.credentials / "bench-upstream-token", work.upstream_secret)
        return work

    @property
    def credentials(self) -> Path:
        return self.root / "credentials"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def audit_file(self) -> Path:
        return self.root / "turret-audit.jsonl"

    @property
    def canaries(self) -> tuple[str, str]:
        return self.agent_token, self.upstream_secret


@dataclass(frozen=True)
class Server:
    """A running server under test."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid


def _private(path: Path, text: str) -> Path:
    """Write `text` to `path`, readable by the owner only, replacing it in one step (a reload
    that reads the file never sees half of it)."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    fresh.chmod(0o600)
    fresh.replace(path)
    return path


def _render(template: str, out: Path, values: dict[str, str | int]) -> Path:
    text = (HERE / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    leftover = PLACEHOLDER.findall(text)
    if leftover:
        raise ValueError(f"unfilled placeholders in {template}: {leftover}")
    return _private(out, text)


def start_upstream(procs: Procs, work: Workdir) -> Server:
    """The fake upstream: nginx answering a fixed JSON document to the right credential."""
    port = free_port()
    return _nginx(procs, work, "upstream", upstream_conf(work, port), port)


def upstream_conf(work: Workdir, port: int) -> Path:
    """The fake upstream's nginx config, listening on 127.0.0.1:`port`."""
    return _render(
        "nginx-upstream.conf",
        work.root / "nginx-upstream.conf",
        {
            "DIR": str(work.root),
            "PORT": port,
            "UPSTREAM_SECRET": work.upstream_secret,
            "BODY": json.dumps(ITEM, separators=(",", ":")),
        },
    )


def start_nginx_proxy(procs: Procs, work: Workdir, upstream: Server) -> Server:
    """nginx as a credential-injecting reverse proxy with keep-alive to the upstream."""
    port = free_port()
    conf = _render(
        "nginx-proxy.conf",
        work.root / "nginx-proxy.conf",
        {
            "DIR": str(work.root),
            "PORT": port,
            "UPSTREAM_PORT": upstream.port,
            "AGENT_TOKEN": work.agent_token,
            "UPSTREAM_SECRET": work.upstream_secret,
        },
    )
    return _nginx(procs, work, "nginx", conf, port)


def _nginx(procs: Procs, work: Workdir, name: str, conf: Path, port: int) -> Server:
    error_log = work.logs / f"nginx-{name}.error.log"
    argv = ["nginx", "-p", str(work.root), "-c", str(conf), "-e", str(error_log)]
    proc = procs.start(f"nginx-{name}", argv)
    procs.wait_for_port(proc, port)
    return Server(name, port, proc)


def baseline_argv(work: Workdir, upstream: Server, port: int | None) -> list[str]:
    """The command line of the baseline proxy; with no `port`, it serves the socket systemd (or
    systemd-socket-activate) hands it."""
    argv = [sys.executable, "-m", "bench.baseline_proxy", "--upstream"]
    argv += [f"http://127.0.0.1:{upstream.port}", "--credentials", str(work.credentials)]
    return argv if port is None else [*argv, "--port", str(port)]


def start_baseline(procs: Procs, work: Workdir, upstream: Server) -> Server:
    """The minimal aiohttp proxy of bench/baseline_proxy.py."""
    port = free_port()
    proc = procs.start("baseline", baseline_argv(work, upstream, port))
    procs.wait_for_port(proc, port)
    return Server("baseline", port, proc)


def turret_config(
    work: Workdir, upstream: Server, port: int, *, capabilities: bool, variant: int = 0
) -> Path:
    """Turret's config for the benchmark; `variant` changes it harmlessly (for reloads)."""
    paths = ["/api/items", "/api/items/*", f"/api/variant-{variant}"]
    lines = [
        f'listen: ["127.0.0.1:{port}"]',
        # One agent drives all the load and 1,000 connections are held open: lift the per-agent
        # rate limit and the connection cap so the benchmark measures the work, not the limits.
        "limits:",
        "  max_connections: 4096",
        "  agent: {requests_per_second: 1000000, burst: 1000000, max_concurrent: 4096}",
        "services:",
        f"  {SERVICE}:",
        f"    url: http://127.0.0.1:{upstream.port}",
        "    auth: {bearer: bench-upstream-token}",
        "    timeout: 10",
    ]
    if capabilities:
        # The shape proposed in issue 4; adjust here if the capability config ends up different.
        lines += [
            "capabilities:",
            f"  {SERVICE}.get_item:",
            f"    service: {SERVICE}",
            "    description: Read one item",
            "    params:",
            "      id: {type: integer, minimum: 1}",
            '    request: {method: GET, path: "/api/items/{id}"}',
            "    result: [id, name, state]",
        ]
    lines += [
        "agents:",
        "  bench-agent:",
        "    token_credential: bench-agent-token",
        "    proxy:",
        f"      - service: {SERVICE}",
        "        methods: [GET, POST]",
        f"        paths: {json.dumps(paths)}",
    ]
    if capabilities:
        lines += ["    capabilities:", f"      - name: {SERVICE}.get_item"]
    name = "turret-capability.yaml" if capabilities else "turret.yaml"
    return _private(work.root / name, "\n".join(lines) + "\n")


def turret_argv(work: Workdir, config: Path) -> list[str]:
    """The command line that serves Turret with audit records going to a JSON-lines file."""
    return [
        sys.executable,
        "-m",
        "turret",
        "serve",
        "--config",
        str(config),
        "--credentials-dir",
        str(work.credentials),
        "--audit-file",
        str(work.audit_file),
        "--shutdown-timeout",
        "2",
    ]


def start_turret(
    procs: Procs, work: Workdir, upstream: Server, *, capabilities: bool = False
) -> Server:
    """Turret serving the proxy path (and the capability path if asked) with audit on."""
    port = free_port()
    config = turret_config(work, upstream, port, capabilities=capabilities)
    proc = procs.start("turret", turret_argv(work, config))
    procs.wait_for_port(proc, port)
    return Server("turret", port, proc)
