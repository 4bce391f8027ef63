"""Serving: load everything or refuse to start, bind the sockets, run until told to stop.

Sockets come from systemd socket activation (LISTEN_FDS) when present, else from `listen:`.
SIGHUP reloads the configuration and credentials without dropping a request; SIGTERM (or SIGINT)
stops accepting and lets requests in flight finish, up to the shutdown timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from turret import __version__
from turret.audit import Auditor
from turret.config import read_config
from turret.errors import AuditUnavailable, ConfigError, StartupError
from turret.httpserver import TurretRunner
from turret.model import Config
from turret.records import ERR, Event
from turret.runtime import Runtime, RuntimeHolder, build_runtime
from turret.systemd_glue import Notifier, activated_sockets, watchdog_interval
from turret.web.app import create_app
from turret.web.keys import STATS

log = logging.getLogger("turret")

# How often STATUS= is refreshed when there is no watchdog to piggyback on.
STATUS_INTERVAL = 5.0
MAX_REASON_CHARS = 160


@dataclass(frozen=True)
class ServeOptions:
    config_path: str
    credentials_dir: str | None = None
    shutdown_timeout: float = 30.0


def load(options: ServeOptions) -> Runtime:
    """Read the config and its credentials; raise `StartupError` (fail closed)."""
    return build_runtime(read_config(options.config_path), options.credentials_dir)


def startup_failure(exc: StartupError) -> str:
    kind = "configuration" if isinstance(exc, ConfigError) else "credentials"
    return f"invalid {kind}"


async def serve(options: ServeOptions, auditor: Auditor) -> None:
    """Run Turret until SIGTERM or SIGINT; reload on SIGHUP."""
    signals = _SignalQueue()
    with signals.installed():
        try:
            runtime = load(options)
        except StartupError as exc:
            auditor.record(
                Event.CONFIG_ERROR,
                f"refusing to start: {startup_failure(exc)}",
                {"TURRET_REASON": str(exc), "TURRET_CONFIG": options.config_path},
                priority=ERR,
            )
            raise
        gateway = Gateway(options, auditor, RuntimeHolder(runtime))
        await gateway.run(signals)


class Gateway:
    """The running service: its app, the runtime cell, and what systemd is told about them."""

    def __init__(self, options: ServeOptions, auditor: Auditor, holder: RuntimeHolder) -> None:
        self.options = options
        self.auditor = auditor
        self.holder = holder
        self.app = create_app(holder, auditor)
        self.notifier = Notifier()
        self.last_reload = "none"
        self.stopping = False

    async def run(self, signals: _SignalQueue) -> None:
        runner = TurretRunner(
            self.app,
            max_connections=self.holder.current.config.limits.max_connections,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.options.shutdown_timeout,
        )
        await runner.setup()
        # The heartbeat runs until the very end, so the watchdog is fed during a long stop too.
        async with self._heartbeat():
            try:
                await self._bind(runner)
                self._started(runner)
                await self._handle_signals(signals)
                self.stopping = True
                self.notifier.stopping(self.status())
            finally:
                # Closes the listening sockets first, then waits for requests in flight.
                await runner.cleanup()
        self.auditor.record(
            Event.STOPPED, "turret stopped", {"TURRET_REQUESTS": self.app[STATS].requests}
        )

    async def _bind(self, runner: web.AppRunner) -> None:
        activated = activated_sockets()
        for passed in activated:
            await web.SockSite(runner, passed.sock).start()
        if activated:
            if self.config.listen:
                log.info("socket-activated: listen: entries in the config are not used")
        else:
            for address in self.config.listen:
                await _listen(runner, address)
        if not runner.addresses:
            raise StartupError("nothing to listen on: no activated sockets and no listen: entries")

    def _started(self, runner: web.AppRunner) -> None:
        self.auditor.record(
            Event.STARTED,
            f"turret {__version__} started",
            {
                "TURRET_AGENTS": len(self.config.agents),
                "TURRET_SERVICES": len(self.config.services),
                "TURRET_LISTEN": " ".join(_address(a) for a in runner.addresses),
            },
        )
        self.notifier.ready(self.status())

    @property
    def config(self) -> Config:
        return self.holder.current.config

    def status(self) -> str:
        """One line for `systemctl status`: what is served, how much, and the last reload."""
        stats = self.app[STATS]
        state = "stopping; " if self.stopping else ""
        return (
            f"{state}{len(self.config.agents)} agents, {len(self.config.services)} services; "
            f"{stats.requests} requests served, {stats.in_flight} in flight; "
            f"last reload: {self.last_reload}"
        )

    async def _handle_signals(self, signals: _SignalQueue) -> None:
        while await signals.next() == signal.SIGHUP:
            await self.reload()

    async def reload(self) -> bool:
        """Re-read config and credentials and swap them in; on any failure keep the old ones.

        Requests already running keep the runtime they took at their start, so they finish on
        the configuration they started with; only requests starting after the swap see the new one.
        The new runtime is built in a worker thread, so a large configuration does not hold up
        requests (or the watchdog) while it loads.
        """
        self.notifier.reloading()
        at = time.strftime("%H:%M:%S")
        try:
            runtime = await asyncio.to_thread(load, self.options)
            config = runtime.config
            self.auditor.record(
                Event.RELOADED,
                "configuration reloaded",
                {
                    "TURRET_AGENTS": len(config.agents),
                    "TURRET_SERVICES": len(config.services),
                    "TURRET_CONFIG": self.options.config_path,
                },
            )
        except (StartupError, AuditUnavailable) as exc:
            self._reload_failed(exc, at)
            self.notifier.ready(self.status())
            return False
        if config.listen != self.config.listen:
            log.warning("listen: changes take effect on restart, not on reload")
        self.holder.current = runtime
        self.last_reload = f"ok at {at}"
        self.notifier.ready(self.status())
        return True

    def _reload_failed(self, exc: StartupError | AuditUnavailable, at: str) -> None:
        what = startup_failure(exc) if isinstance(exc, StartupError) else "audit unavailable"
        first = str(exc).splitlines()[0] if str(exc) else ""
        self.last_reload = (
            f"FAILED at {at}, {what}: {first[:MAX_REASON_CHARS]}; still serving the previous one"
        )
        log.error("reload failed, keeping the running configuration: %s", exc)
        with contextlib.suppress(AuditUnavailable):
            self.auditor.record(
                Event.RELOAD_FAILED,
                f"reload failed: {what}; keeping the running configuration",
                {"TURRET_REASON": str(exc), "TURRET_CONFIG": self.options.config_path},
                priority=ERR,
            )

    @contextlib.asynccontextmanager
    async def _heartbeat(self) -> AsyncIterator[None]:
        """WATCHDOG=1 and a fresh STATUS= from the event loop itself: a stuck loop sends neither."""
        interval = watchdog_interval(os.environ, os.getpid())
        task = asyncio.create_task(self._beat(interval))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _beat(self, watchdog: float | None) -> None:
        sent = ""
        while True:
            if watchdog is not None:
                self.notifier.watchdog()
            status = self.status()
            if status != sent:
                self.notifier.status(status)
                sent = status
            await asyncio.sleep(watchdog or STATUS_INTERVAL)


class _SignalQueue:
    """SIGHUP, SIGTERM and SIGINT delivered in order through the event loop."""

    SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self._queue: asyncio.Queue[signal.Signals] = asyncio.Queue()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            loop.add_signal_handler(sig, self._queue.put_nowait, sig)
        try:
            yield
        finally:
            for sig in self.SIGNALS:
                loop.remove_signal_handler(sig)

    async def next(self) -> signal.Signals:
        return await self._queue.get()


def _address(sockname: object) -> str:
    """`host:port` for TCP, `unix:/path` for a unix socket, as in `listen:`."""
    if isinstance(sockname, tuple):
        host = str(sockname[0])
        return f"[{host}]:{sockname[1]}" if ":" in host else f"{host}:{sockname[1]}"
    return f"unix:{sockname}"


async def _listen(runner: web.AppRunner, address: str) -> None:
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        _remove_stale_socket(path)
        await web.UnixSite(runner, path).start()
        # Who may connect is decided by the socket's permissions: owner and group only.
        os.chmod(path, 0o660)  # noqa: PTH101 - one call at start-up, not worth a Path
        return
    host, _, port = address.rpartition(":")
    await web.TCPSite(runner, host.strip("[]"), int(port), reuse_address=True).start()


def _remove_stale_socket(path: str) -> None:
    """Remove a socket left by an earlier run; refuse to touch anything else at that path."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            Path(path).unlink()
