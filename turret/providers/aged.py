"""A provider wrapped with its credentials' key age: the use recorded, an overdue value refused.

`AgedProvider` sits between `upstream.send` and a service's provider, where every injection is
obtained (the proxy, capability calls and `turret check` alike). Each injection notes the time
against the credentials it carries (`touch`, in memory), and past `deadline` (the earliest
enforced `max_age` among them) it raises `CredentialUnavailable` before anything is sent: the
deadline is compared with the clock at every use, so a credential going overdue between two
daily checks is refused from that moment on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from turret.authkinds import Injection
from turret.echo import Redactor
from turret.errors import CredentialUnavailable
from turret.providers import CredentialProvider, Scope

Touch = Callable[[str, float], None]


class AgedProvider:
    """`inner`, with the use of `credentials` recorded and refused from `deadline` on."""

    def __init__(
        self,
        inner: CredentialProvider,
        credentials: Sequence[str],
        deadline: float | None,
        touch: Touch,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.inner = inner
        self._credentials = tuple(credentials)
        self._deadline = deadline
        self._touch = touch
        self._wall = wall

    def __repr__(self) -> str:
        return f"AgedProvider({self.inner!r}, deadline={self._deadline})"

    @property
    def name(self) -> str:
        """The service's name."""
        return self.inner.name

    @property
    def loaded_at(self) -> float:
        """When the inner provider obtained its value."""
        return self.inner.loaded_at

    @property
    def fingerprint(self) -> str:
        """The inner provider's fingerprint."""
        return self.inner.fingerprint

    def _admit(self) -> None:
        now = self._wall()
        if self._deadline is not None and now >= self._deadline:
            raise CredentialUnavailable(
                f"the credential of service {self.inner.name!r} is past its max_age and is not "
                "used until an operator rotates it",
                reason="credential past its enforced max_age",
            )
        for name in self._credentials:
            self._touch(name, now)

    async def injection(self, scope: Scope) -> Injection:
        """The inner injection, unless the credential is past its enforced max_age."""
        self._admit()
        return await self.inner.injection(scope)

    async def renew(self, scope: Scope, stale: Injection, status: int) -> Injection | None:
        """The inner provider's renewal, under the same deadline."""
        self._admit()
        return await self.inner.renew(scope, stale, status)

    def guarded(self) -> list[str]:
        """The inner provider's values."""
        return self.inner.guarded()

    def response_guard(self, injection: Injection) -> Redactor | None:
        """The inner provider's guard."""
        return self.inner.response_guard(injection)

    def live_guard(self) -> Redactor | None:
        """The inner provider's guard of the values it minted since the runtime was built."""
        return self.inner.live_guard()

    async def revoke(self) -> None:
        """Revoke at the inner provider."""
        await self.inner.revoke()

    async def rotate(self) -> None:
        """Rotate at the inner provider."""
        await self.inner.rotate()


def unwrapped(provider: CredentialProvider) -> CredentialProvider:
    """The provider under any `AgedProvider` (a reload hands login state on from it)."""
    return provider.inner if isinstance(provider, AgedProvider) else provider
