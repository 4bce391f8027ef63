"""Serving: load everything or refuse to start, bind the sockets, run until told to stop.

Sockets come from systemd socket activation (LISTEN_FDS) when present, else from `listen:`.
An activated socket is served by the app for its FileDescriptorName= (`APPS`); `listen:` entries
serve the agents' app, and `--admin-socket` or `admin.socket` the admin app. The state store is
opened at start when a state directory is configured.
SIGHUP reloads the configuration and credentials without dropping a request; SIGTERM (or SIGINT)
stops accepting and lets requests in flight finish, up to the shutdown timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass

from aiohttp import web

from turret import __version__, deadman
from turret.admin import Facts
from turret.audit import Auditor
from turret.auditseal import start_chain, stop_chain
from turret.config import read_config
from turret.config.providers import dev_only_issues
from turret.counters import RequestCounters
from turret.credwatch import KeyAge, unwrap
from turret.errors import AuditUnavailable, ConfigError, CredentialError, StartupError, StateError
from turret.httpserver import TurretRunner
from turret.listeners import address_of, listen, listen_admin
from turret.model import Config
from turret.providers.build import build_runtime
from turret.providers.minting import failing
from turret.records import ERR, WARNING, Event
from turret.runtime import Runtime, RuntimeHolder
from turret.state import StateStore, resolve_state_dir
from turret.systemd_glue import Notifier, activated_sockets, by_name, watchdog_interval
from turret.tokens import expiring_agents, rfc3339
from turret.web.admin import create_admin_app
from turret.web.app import create_app
from turret.web.keys import COUNTERS, STATS

log = logging.getLogger("turret")

# How often STATUS= is refreshed when there is no watchdog to piggyback on.
STATUS_INTERVAL = 5.0
MAX_REASON_CHARS = 160
AGENTS = "agents"  # the FileDescriptorName= of the agents' sockets; `listen:` serves them too
ADMIN = "admin"  # the admin socket's; without activation, bound at `admin.socket`


@dataclass(frozen=True)
class ServeOptions:
    config_path: str
    credentials_dir: str | None = None
    shutdown_timeout: float = 30.0
    state_dir: str | None = None
    admin_socket: str | None = None  # `--admin-socket` or $TURRET_ADMIN_SOCKET: over `admin.socket`
    dev: bool = False  # `--dev`: development-only providers (`env`) are allowed


def load(options: ServeOptions, previous: Runtime | None = None) -> Runtime:
    """Read the config and its credentials; raise `StartupError` (fail closed). `previous`,
    the runtime being replaced on reload, hands its login state on."""
    config = read_config(options.config_path)
    dev_only = dev_only_issues(config.providers)
    if dev_only and not options.dev:
        raise ConfigError(dev_only)
    for issue in dev_only:
        log.warning("--dev: %s", issue)
    return build_runtime(config, options.credentials_dir, previous)


def startup_failure(exc: StartupError) -> str:
    """What kind of start-up failure `exc` is, for the audit record and the status line."""
    if isinstance(exc, ConfigError):
        return "invalid configuration"
    if isinstance(exc, CredentialError):
        return "invalid credentials"
    if isinstance(exc, StateError):
        return "unusable state directory"
    return "cannot listen"


def open_state(options: ServeOptions) -> StateStore | None:
    """The state store in `--state-dir` or `$STATE_DIRECTORY`, or None when neither is set.

    A directory that is set but unusable raises `StateError`: Turret refuses to start rather
    than run without the state it was told to keep. Features that need the store refuse to
    start when there is none.
    """
    directory = resolve_state_dir(options.state_dir, os.environ)
    if directory is None:
        log.info("no state directory configured (StateDirectory=turret or --state-dir)")
        return None
    store = StateStore.open(directory)
    log.info("state store: %s (schema %d)", directory, store.schema_version)
    return store


async def serve(options: ServeOptions, auditor: Auditor) -> None:
    """Run Turret until SIGTERM or SIGINT; reload on SIGHUP."""
    signals = _SignalQueue()
    with signals.installed(), _refusal_audited(options, auditor):
        runtime = load(options)
        state = open_state(options)
        try:
            start_chain(auditor, runtime.chain_key, state)
            await Gateway(options, auditor, RuntimeHolder(runtime), state).run(signals)
        finally:
            stop_chain(auditor, state)
            if state is not None:
                state.close()


@contextlib.contextmanager
def _refusal_audited(options: ServeOptions, auditor: Auditor) -> Iterator[None]:
    """A refused start (config, credentials, state directory, sockets) leaves an audit record."""
    try:
        yield
    except StartupError as exc:
        auditor.record(
            Event.CONFIG_ERROR,
            f"refusing to start: {startup_failure(exc)}",
            {"TURRET_REASON": str(exc), "TURRET_CONFIG": options.config_path},
            priority=ERR,
        )
        raise


class Gateway:
    """The running service: its apps, the runtime cell, the state store, and what systemd is
    told about them."""

    def __init__(
        self,
        options: ServeOptions,
        auditor: Auditor,
        holder: RuntimeHolder,
        state: StateStore | None = None,
    ) -> None:
        self.options = options
        self.auditor = auditor
        self.holder = holder
        # Opened and closed by `serve`; kept across reloads (it is not part of the Runtime).
        self.state = state
        self.started_at = time.time()
        self.keyage = KeyAge(state, auditor)  # credential key age (`turret credentials`)
        self.apps = {name: factory(self) for name, factory in APPS.items()}
        self.app = self.apps[AGENTS]
        self.notifier = Notifier()
        self.last_reload = "none"
        self.stopping = False
        self.runners: list[web.AppRunner] = []
        self.deadman: deadman.DeadMan | None = None  # the dead-man switch, while running

    async def run(self, signals: _SignalQueue) -> None:
        # The heartbeat runs until the very end, so the watchdog is fed during a long stop too.
        switch = deadman.running(self.holder, self.state, self.auditor)
        async with self._heartbeat(), switch as self.deadman:
            try:
                self.holder.current = self.keyage.adopt(self.holder.current)
                await self._bind()
                self._started()
                await self._handle_signals(signals)
                self.stopping = True
                self.notifier.stopping(self.status())
            finally:
                # Each closes its listening sockets first, then waits for requests in flight.
                await asyncio.gather(*(runner.cleanup() for runner in self.runners))
        self.auditor.record(
            Event.STOPPED, "turret stopped", {"TURRET_REQUESTS": self.app[STATS].requests}
        )

    async def _bind(self) -> None:
        activated = by_name(activated_sockets(), APPS)
        if activated and self.config.listen:
            log.info("socket-activated: listen: entries in the config are not used")
        for name, sockets in activated.items():
            runner = await self._runner(name)
            for sock in sockets:
                await web.SockSite(runner, sock).start()
        if not activated and self.config.listen:
            runner = await self._runner(AGENTS)
            for address in self.config.listen:
                await listen(runner, address)
        admin_socket = self.options.admin_socket or self.config.admin.socket
        if not activated and admin_socket:
            await listen_admin(
                await self._runner(ADMIN), admin_socket, self.config.admin.allow_group
            )
        if not self.addresses():
            raise StartupError("nothing to listen on: no activated sockets and no listen: entries")

    async def _runner(self, name: str) -> web.AppRunner:
        runner = TurretRunner(
            self.apps[name],
            max_connections=self.config.limits.max_connections,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.options.shutdown_timeout,
        )
        await runner.setup()
        self.runners.append(runner)
        return runner

    def addresses(self) -> list[str]:
        """Every address served, as in `listen:`."""
        return [address_of(a) for runner in self.runners for a in runner.addresses]

    def _started(self) -> None:
        self.auditor.record(
            Event.STARTED,
            f"turret {__version__} started",
            {
                "TURRET_AGENTS": len(self.config.agents),
                "TURRET_SERVICES": len(self.config.services),
                "TURRET_LISTEN": " ".join(self.addresses()),
            },
        )
        self._warn_expiring_tokens()
        self.keyage.warn()
        self.notifier.ready(self.status())

    def _warn_expiring_tokens(self) -> None:
        """A record for each configured agent token past or near its `expires` (at start and on
        every reload): the operator rotates it before agents are locked out."""
        for agent, expires, expired in expiring_agents(self.config, time.time()):
            when = rfc3339(expires)
            self.auditor.record(
                Event.AGENT_TOKEN_EXPIRED if expired else Event.AGENT_TOKEN_EXPIRING,
                f"{agent}: agent token {'expired' if expired else 'expires'} at {when}",
                {"TURRET_AGENT": agent, "TURRET_EXPIRES": when},
                priority=ERR if expired else WARNING,
            )

    @property
    def config(self) -> Config:
        return self.holder.current.config

    def facts(self) -> Facts:
        """What `turret status` says about the server itself."""
        return Facts(
            __version__,
            self.started_at,
            self.config.digest,
            self.last_reload,
            self.auditor.sink_kind,
            self.app[STATS].in_flight,
        )

    def counters(self) -> RequestCounters:
        """The agents' request counters."""
        return self.app[COUNTERS]

    def status(self) -> str:
        """One line for `systemctl status`: what is served, how much, and the last reload."""
        stats = self.app[STATS]
        state = "stopping; " if self.stopping else ""
        overdue = self.keyage.overdue(time.time())
        fired = f"; {self.deadman.status}" if self.deadman and self.deadman.status else ""
        minting = failing(self.holder.current.providers)
        alarm = f"CREDENTIAL MINTING FAILING: {', '.join(minting)}; " if minting else ""
        return (
            f"{alarm}{state}{len(self.config.agents)} agents, {len(self.config.services)} "
            f"services; {stats.requests} requests served, {stats.in_flight} in flight; "
            f"last reload: {self.last_reload}{fired}"
            + (f"; {overdue} credentials overdue for rotation" if overdue else "")
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
            runtime = await asyncio.to_thread(load, self.options, unwrap(self.holder.current))
            runtime = await asyncio.to_thread(self.keyage.adopt, runtime)
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
        self._warn_expiring_tokens()
        self.keyage.warn()
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
            await self.keyage.tick()
            await asyncio.sleep(watchdog or STATUS_INTERVAL)


# The app each activated socket is served by, keyed by the socket's FileDescriptorName=. Each
# name is one audience: a socket under any other name refuses the start (`by_name`), so a socket
# meant for one audience never serves another: the agents' sockets never serve the admin API
# and the admin socket never serves agents.
APPS: Mapping[str, Callable[[Gateway], web.Application]] = {
    AGENTS: lambda gateway: create_app(gateway.holder, gateway.auditor, state=gateway.state),
    ADMIN: create_admin_app,
}


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
