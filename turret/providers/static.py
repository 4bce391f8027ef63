"""Static credentials: read by name from the systemd credentials directory, held redacted, and
handed out unchanged by a `StaticProvider` per service.

systemd places each `LoadCredential=NAME:PATH` at `$CREDENTIALS_DIRECTORY/NAME`, readable only by
the service. A credential the config references but that is missing or unusable stops start-up
with a message naming it and the unit line that would provide it; values never appear.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

from turret.authkinds import Injection, credential_uses
from turret.errors import CredentialError
from turret.model import Config
from turret.providers import ProviderBase, Scope, fingerprint
from turret.secret import Secret

MAX_CREDENTIAL_BYTES = 64 * 1024


def credentials_directory(config: Config, override: str | None) -> str | None:
    """Where credentials are read from: CLI override, then config, then systemd's variable."""
    return override or config.credentials_dir or os.environ.get("CREDENTIALS_DIRECTORY")


def load_credentials(config: Config, directory: str | None) -> Mapping[str, Secret]:
    """Read every credential `config` references; raise `CredentialError` naming each problem."""
    uses = credential_uses(config)
    problems: list[str] = []
    secrets: dict[str, Secret] = {}
    if uses and not directory:
        raise CredentialError(
            [
                "no credentials directory: start Turret under systemd with LoadCredential= "
                "(which sets $CREDENTIALS_DIRECTORY), or pass --credentials-dir"
            ]
        )
    for name, use in sorted(uses.items()):
        try:
            secrets[name] = _read(Path(directory or "", name), use)
        except ValueError as exc:
            problems.append(
                f"credential {name!r} {exc}; provide it with "
                f"LoadCredential={name}:/path/to/{name} (or LoadCredentialEncrypted=)"
            )
    if problems:
        raise CredentialError(problems)
    return secrets


def _read(path: Path, use: str) -> Secret:
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang start-up; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ValueError("is not a regular file")
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_CREDENTIAL_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"is missing (no file {path})") from None
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror})") from None
    if len(data) > MAX_CREDENTIAL_BYTES:
        raise ValueError(f"is larger than {MAX_CREDENTIAL_BYTES // 1024} KiB")
    if data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise ValueError("is empty")
    if use == "header" and any(c in data for c in b"\r\n\0"):
        raise ValueError("contains CR, LF or NUL, which cannot be sent in a header")
    try:
        return Secret(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("is not valid UTF-8") from None


class StaticProvider(ProviderBase):
    """A service's credential as loaded at start or reload: the same injection for every use."""

    def __init__(self, name: str, injection: Injection, loaded_at: float | None = None) -> None:
        self.name = name
        self.loaded_at = time.time() if loaded_at is None else loaded_at
        self._injection = injection
        self._fingerprint = fingerprint(*injection.values(), *(injection.query or ()))

    def __repr__(self) -> str:
        return f"StaticProvider({self.name!r}, {self._injection!r})"

    @property
    def fingerprint(self) -> str:
        """A short, non-reversible id of the credential (`turret.providers.fingerprint`)."""
        return self._fingerprint

    async def injection(self, scope: Scope) -> Injection:
        """The service's injection, whatever the scope."""
        return self._injection

    def guarded(self) -> list[str]:
        """The secret values the injection sends (a query value as it was before URL-encoding)."""
        query = self._injection.query
        return [*self._injection.values(), *((unquote(query[1]),) if query else ())]
