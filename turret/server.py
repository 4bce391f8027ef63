"""Serving: load everything or refuse to start, bind the sockets, run until told to stop.

Sockets come from systemd socket activation (LISTEN_FDS) when present, else from `listen:`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from turret import __version__
from turret.app import STATS, create_app
from turret.audit import ERR, Auditor, Event
from turret.config import Config, read_config
from turret.errors import ConfigError, StartupError
from turret.httpserver import TurretRunner
from turret.runtime import Runtime, RuntimeHolder, build_runtime
from turret.systemd_glue import Notifier, activated_sockets

log = logging.getLogger("turret")


@dataclass(frozen=True)
class ServeOptions:
    config_path: str
    credentials_dir: str | None = None
    shutdown_timeout: float = 30.0


def load(options: ServeOptions, auditor: Auditor) -> tuple[Config, Runtime]:
    """Config and runtime, or a `StartupError` after auditing why (fail closed)."""
    try:
        config = read_config(options.config_path)
        return config, build_runtime(config, options.credentials_dir)
    except StartupError as exc:
        kind = "configuration" if isinstance(exc, ConfigError) else "credentials"
        auditor.record(
            Event.CONFIG_ERROR,
            f"refusing to start: invalid {kind}",
            {"TURRET_REASON": str(exc), "TURRET_CONFIG": options.config_path},
            priority=ERR,
        )
        raise


async def serve(options: ServeOptions, auditor: Auditor) -> None:
    """Run Turret until SIGTERM or SIGINT."""
    config, runtime = load(options, auditor)
    app = create_app(RuntimeHolder(runtime), auditor)
    runner = TurretRunner(
        app, max_connections=config.limits.max_connections, handle_signals=False, access_log=None
    )
    await runner.setup()
    notifier = Notifier()
    try:
        sockets = activated_sockets()
        for sock in sockets:
            await web.SockSite(runner, sock, shutdown_timeout=options.shutdown_timeout).start()
        if not sockets:
            for address in config.listen:
                await _listen(runner, address, options.shutdown_timeout)
        if not runner.addresses:
            raise StartupError("nothing to listen on: no activated sockets and no listen: entries")
        auditor.record(
            Event.STARTED,
            f"turret {__version__} started",
            {
                "TURRET_AGENTS": len(config.agents),
                "TURRET_SERVICES": len(config.services),
                "TURRET_LISTEN": " ".join(str(a) for a in runner.addresses),
            },
        )
        notifier.ready(_status(app, config))
        await _wait_for_stop()
        notifier.stopping()
    finally:
        await runner.cleanup()
    auditor.record(Event.STOPPED, "turret stopped", {"TURRET_REQUESTS": app[STATS].requests})


def _status(app: web.Application, config: Config) -> str:
    return (
        f"serving {len(config.agents)} agents, {len(config.services)} services; "
        f"{app[STATS].requests} requests"
    )


async def _listen(runner: web.AppRunner, address: str, shutdown_timeout: float) -> None:
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        _remove_stale_socket(path)
        await web.UnixSite(runner, path, shutdown_timeout=shutdown_timeout).start()
        # Who may connect is decided by the socket's permissions: owner and group only.
        os.chmod(path, 0o660)  # noqa: PTH101 - one call at start-up, not worth a Path
        return
    host, _, port = address.rpartition(":")
    await web.TCPSite(
        runner, host.strip("[]"), int(port), shutdown_timeout=shutdown_timeout, reuse_address=True
    ).start()


def _remove_stale_socket(path: str) -> None:
    """Remove a socket left by an earlier run; refuse to touch anything else at that path."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            Path(path).unlink()


async def _wait_for_stop() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
