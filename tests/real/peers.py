"""Real qBittorrent and Synapse processes on loopback, for the tests against real peers.

Each peer runs in a temporary directory with a configuration written here: it listens on
127.0.0.1 only and has every feature that would contact another host turned off, so the tests
send traffic to loopback and nowhere else. Readiness is polled with a deadline; a peer that exits
early fails the test with the tail of its output.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import hashlib
import hmac
import http.cookiejar
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SYNAPSE_PYTHON = REPO / ".venv-synapse" / "bin" / "python"
QBITTORRENT = "qbittorrent-nox"
STOP_WAIT = 10.0  # seconds a peer gets to exit on SIGTERM before it is killed


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child: be sent SIGTERM if the test run dies without stopping it (Linux)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@contextlib.contextmanager
def running(argv: list[str], output: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` with its output in `output`; stop it (SIGTERM, then SIGKILL) afterwards."""
    with output.open("wb") as out:
        # cwd: what a peer writes relative to it (Synapse's log) lands beside its output.
        proc = subprocess.Popen(  # noqa: S603
            argv,
            cwd=output.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (no threads of ours run at fork time)
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_answering(
    url: str, proc: subprocess.Popen[bytes], output: Path, within: float
) -> None:
    """Poll `url` until it gives any HTTP answer; fail if the process exits or time runs out."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = output.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (a loopback URL built here)
                return
        except urllib.error.HTTPError:
            return  # it answers (qBittorrent says 403 before a login): ready
        except OSError:
            time.sleep(0.1)  # not listening yet: poll again
    raise RuntimeError(f"{url} did not answer within {within} s")


# --- qBittorrent --------------------------------------------------------------------------------


def pbkdf2_password(password: str) -> str:
    """The WebUI password as qBittorrent 4.2+ stores it in `WebUI\\Password_PBKDF2`:
    PBKDF2-HMAC-SHA512 with 100000 iterations and a 16-byte salt, both base64."""
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 100_000)
    return f"@ByteArray({base64.b64encode(salt).decode()}:{base64.b64encode(digest).decode()})"


def qbittorrent_conf(
    webui_port: int, listen_port: int, password: str, downloads: Path, max_fails: int
) -> str:
    """qBittorrent.conf: legal notice accepted, WebUI on 127.0.0.1 with a known password, and
    everything that reaches out (DHT, PeX, LSD, UPnP/NAT-PMP, GeoIP lookups, extra trackers)
    off; the torrent session listens on `lo` only, in anonymous mode."""
    return f"""\
[LegalNotice]
Accepted=true

[BitTorrent]
Session\\DHTEnabled=false
Session\\PeXEnabled=false
Session\\LSDEnabled=false
Session\\AnonymousModeEnabled=true
Session\\AddTrackersEnabled=false
Session\\Interface=lo
Session\\InterfaceName=lo
Session\\InterfaceAddress=127.0.0.1
Session\\Port={listen_port}
Session\\DefaultSavePath={downloads}
Session\\TempPath={downloads}/incomplete

[Network]
PortForwardingEnabled=false

[Preferences]
Connection\\ResolvePeerCountries=false
General\\UseRandomPort=false
WebUI\\Address=127.0.0.1
WebUI\\Port={webui_port}
WebUI\\UPnP=false
WebUI\\LocalHostAuth=true
WebUI\\Username=admin
WebUI\\Password_PBKDF2="{pbkdf2_password(password)}"
WebUI\\MaxAuthenticationFailCount={max_fails}
WebUI\\BanDuration=3600
"""


# The preferences qBittorrent reports once started: proof that it reaches out to nothing.
ISOLATED = {
    "dht": False,
    "pex": False,
    "lsd": False,
    "upnp": False,
    "web_ui_upnp": False,
    "anonymous_mode": True,
    "add_trackers_enabled": False,
    "resolve_peer_countries": False,
    "rss_processing_enabled": False,
    "dyndns_enabled": False,
    "mail_notification_enabled": False,
    "current_network_interface": "lo",
    "current_interface_address": "127.0.0.1",
    "web_ui_address": "127.0.0.1",
}


def check_isolated(url: str, password: str) -> None:
    """Log in (a session of the test's own) and refuse to go on unless every outbound feature
    is off: a key qBittorrent did not take from the config would show here."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    form = f"username=admin&password={password}".encode()
    with opener.open(urllib.request.Request(url + "/api/v2/auth/login", data=form)) as resp:  # noqa: S310
        if resp.read() != b"Ok.":
            raise RuntimeError("qBittorrent refused the configured WebUI password")
    with opener.open(url + "/api/v2/app/preferences") as resp:
        preferences = json.loads(resp.read())
    wrong = {k: preferences.get(k) for k, v in ISOLATED.items() if preferences.get(k) != v}
    if wrong:
        raise RuntimeError(f"qBittorrent is not isolated to loopback: {wrong}")


@dataclass(frozen=True)
class Qbittorrent:
    """A running qBittorrent: its WebUI URL, the admin password and its log file."""

    url: str
    password: str = field(repr=False)
    log: Path

    def log_lines(self, marker: str) -> list[str]:
        """The lines of qBittorrent's log so far that hold `marker`."""
        text = self.log.read_text() if self.log.is_file() else ""
        return [line for line in text.splitlines() if marker in line]


@contextlib.contextmanager
def qbittorrent(root: Path, max_fails: int = 5) -> Iterator[Qbittorrent]:
    """qBittorrent in the profile directory `root`, stopped afterwards."""
    webui_port, listen_port = free_port(), free_port()
    password = f"CANARY-qbit-password-{secrets.token_hex(12)}"
    config = root / "qBittorrent" / "config"
    config.mkdir(parents=True)
    conf = qbittorrent_conf(webui_port, listen_port, password, root / "downloads", max_fails)
    (config / "qBittorrent.conf").write_text(conf)
    output = root / "output.log"
    with running([QBITTORRENT, f"--profile={root}"], output) as proc:
        url = f"http://127.0.0.1:{webui_port}"
        wait_until_answering(url + "/api/v2/app/version", proc, output, within=30)
        check_isolated(url, password)
        yield Qbittorrent(url, password, root / "qBittorrent" / "data" / "logs" / "qbittorrent.log")


def have_qbittorrent() -> bool:
    return shutil.which(QBITTORRENT) is not None


# --- Synapse ------------------------------------------------------------------------------------


def synapse_config(generated: dict[str, Any], port: int, secret: str) -> dict[str, Any]:
    """Synapse's generated config, narrowed: the client API alone on 127.0.0.1, SQLite, no
    federation, no key servers, no stats, no URL previews, no open registration, and rate
    limits out of the tests' way."""
    relaxed = {"per_second": 1000, "burst_count": 1000}
    return {
        **generated,
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "report_stats": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        "enable_registration": False,
        "registration_shared_secret": secret,
        "url_preview_enabled": False,
        "enable_metrics": False,
        "presence": {"enabled": False},
        "rc_message": relaxed,
        "rc_registration": relaxed,
        "rc_login": {"address": relaxed, "account": relaxed, "failed_attempts": relaxed},
        "rc_joins": {"local": relaxed, "remote": relaxed},
        "rc_room_creation": relaxed,
    }


def registration_mac(secret: str, nonce: str, user: str, password: str) -> str:
    """The HMAC-SHA1 that Synapse's shared-secret registration API asks for (a non-admin)."""
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    for part in (nonce, user, password):
        mac.update(part.encode() + b"\x00")
    mac.update(b"notadmin")
    return mac.hexdigest()


def call_json(method: str, url: str, body: Any = None, token: str | None = None) -> Any:
    """One JSON request to a peer (set-up only: the tests themselves go through Turret)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
        return json.loads(resp.read())


@dataclass(frozen=True)
class Synapse:
    """A running Synapse: its URL, server name, a user's access token, and two rooms."""

    url: str
    server_name: str
    token: str = field(repr=False)
    user: str
    room_v12: str  # created with Synapse's default room version
    room_v10: str


SERVER_NAME = "turret.test"


def register(url: str, secret: str, user: str) -> str:
    """Register `user` through the shared-secret admin API; its access token."""
    nonce = call_json("GET", url + "/_synapse/admin/v1/register")["nonce"]
    password = secrets.token_urlsafe(16)
    mac = registration_mac(secret, nonce, user, password)
    body = {"nonce": nonce, "username": user, "password": password, "admin": False, "mac": mac}
    answer = call_json("POST", url + "/_synapse/admin/v1/register", body)
    token: str = answer["access_token"]
    return token


@contextlib.contextmanager
def synapse(root: Path) -> Iterator[Synapse]:
    """Synapse (from `.venv-synapse`) with its data in `root`, stopped afterwards."""
    hs = root / "homeserver.yaml"
    generate = [str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "--config-path", str(hs)]
    subprocess.run(  # noqa: S603
        [
            *generate,
            "--server-name",
            SERVER_NAME,
            "--data-directory",
            str(root),
            "--generate-config",
            "--report-stats=no",
        ],
        check=True,
        cwd=root,
        capture_output=True,
        timeout=60,
    )
    port, secret = free_port(), secrets.token_hex(32)
    config = synapse_config(yaml.safe_load(hs.read_text()), port, secret)
    hs.write_text(yaml.safe_dump(config))
    output = root / "output.log"
    with running(generate, output) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_until_answering(url + "/_matrix/client/versions", proc, output, within=60)
        token = register(url, secret, "turret")
        v12 = call_json("POST", url + "/_matrix/client/v3/createRoom", {}, token)["room_id"]
        v10 = call_json(
            "POST", url + "/_matrix/client/v3/createRoom", {"room_version": "10"}, token
        )["room_id"]
        yield Synapse(url, SERVER_NAME, token, f"@turret:{SERVER_NAME}", v12, v10)


def have_synapse() -> bool:
    return SYNAPSE_PYTHON.is_file()
