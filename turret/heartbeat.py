"""The dead-man switch, decided without I/O: when a missed heartbeat or a late check-in fires.

Two watches, each optional: `heartbeat:` (Turret GETs a URL every `interval` seconds; `misses`
failed probes in a row fire it) and `checkin:` (an operator, or a timer, runs `turret checkin`
at least every `max_interval` seconds). Firing acts once (`on_failure`: seal Turret, or revoke
every derived token) and stays fired until the watch recovers — a probe succeeds, a check-in
arrives — so a switch that keeps failing does not act again and again. `turret.deadman` does
the probing, the acting and the records; this module only counts and decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from turret.netpolicy import AddressPolicy

SEAL, REVOKE_DERIVED = "seal", "revoke_derived"
ON_FAILURE = (SEAL, REVOKE_DERIVED)
HEARTBEAT, CHECKIN = "heartbeat", "checkin"


@dataclass(frozen=True)
class HeartbeatSettings:
    """`heartbeat:`: the URL probed (a 2xx answer is a beat), how often, for how long, how many
    misses in a row fire the switch, what it does, and the networks the URL may resolve to."""

    url: str
    interval: float = 60.0
    timeout: float = 10.0
    misses: int = 3
    on_failure: str = SEAL
    address_policy: AddressPolicy = field(default_factory=AddressPolicy)


@dataclass(frozen=True)
class CheckinSettings:
    """`checkin:`: the longest time between two `turret checkin`s, and what happens after it."""

    max_interval: float = 86400.0
    on_failure: str = SEAL


@dataclass(frozen=True)
class Firing:
    """The switch fired: which watch, what it does now, and why (for the record and STATUS=)."""

    watch: str
    action: str
    why: str


@dataclass
class Watch:
    """What the switch has seen: the heartbeat's misses in a row, and the watches that fired and
    have not recovered since (kept in the state store, so a restart does not act again)."""

    misses: int = 0
    fired: set[str] = field(default_factory=set)

    def probed(self, settings: HeartbeatSettings, failure: str | None) -> Firing | None:
        """Count one probe (`failure` is None for a 2xx answer, else what went wrong)."""
        if failure is None:
            self.misses = 0
            self.fired.discard(HEARTBEAT)
            return None
        self.misses += 1
        if self.misses < settings.misses or HEARTBEAT in self.fired:
            return None
        self.fired.add(HEARTBEAT)
        why = f"heartbeat missed {self.misses} times in a row (last: {failure})"
        return Firing(HEARTBEAT, settings.on_failure, why)

    def checked(self, settings: CheckinSettings, last: float, now: float) -> Firing | None:
        """Whether the last check-in, at `last`, is now older than `max_interval`."""
        late = now - last
        if late <= settings.max_interval:
            self.fired.discard(CHECKIN)
            return None
        if CHECKIN in self.fired:
            return None
        self.fired.add(CHECKIN)
        why = (
            f"no checkin for {late:.0f} s (checkin.max_interval is {settings.max_interval:.0f} s)"
        )
        return Firing(CHECKIN, settings.on_failure, why)


def next_check(heartbeat: HeartbeatSettings | None, checkin: CheckinSettings | None) -> float:
    """Seconds between two rounds of the switch: the heartbeat's interval, and a check-in is
    looked at at least once a minute (or ten times per `max_interval`, if that is shorter)."""
    waits = [60.0]
    if heartbeat is not None:
        waits.append(heartbeat.interval)
    if checkin is not None:
        waits.append(checkin.max_interval / 10)
    return max(min(waits), 1.0)
