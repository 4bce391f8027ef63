"""Upstream address policy: which IP addresses Turret may connect to for a service.

Pure logic, no I/O. A service's host always comes from the config. When it is a DNS name, every
address it resolves to is checked here before a connection is made (see `turret.connector`):
by default only public unicast addresses pass, so a name that resolves (or is rebound) to
loopback, a private network, a cloud metadata address or any other internal place is refused.
A service widens this explicitly with `allow_networks`. An IP literal written in the URL is the
operator's explicit choice and is used as written, but only in standard notation.

IPv6 forms that carry an IPv4 address (IPv4-mapped, NAT64, 6to4, Teredo, IPv4-compatible) are
judged by the IPv4 address they carry, so `::ffff:127.0.0.1` is loopback, not "some IPv6".
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from turret.paths import compile_glob

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), why) for net, why in pairs)


# Not public unicast, with the reason given in audit records. Most specific first is not needed:
# any match refuses.
_BLOCKED_V4 = _nets(
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),  # includes the cloud metadata address 169.254.169.254
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # includes broadcast 255.255.255.255
)
_BLOCKED_V6 = _nets(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/8", "reserved"),  # IPv4-compatible and other legacy forms
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "reserved"),  # IETF protocol assignments (Teredo is judged before this)
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "reserved"),  # SRv6 segment identifiers
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_TEREDO = ipaddress.IPv6Network("2001::/32")


def embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, NAT64, 6to4, Teredo), if any."""
    if addr.ipv4_mapped is not None:
        return [addr.ipv4_mapped]
    if addr in _NAT64:
        return [ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)]
    if addr.sixtofour is not None:
        return [addr.sixtofour]
    if addr in _TEREDO and addr.teredo is not None:
        return list(addr.teredo)  # (server, client): traffic reaches both
    return []


def unmapped(addr: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address as the IPv4 address it is; any other address unchanged."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def classify(addr: IPAddress) -> str | None:
    """Why `addr` is not a public unicast address ("loopback", "private", ...), or None."""
    addr = unmapped(addr)
    if isinstance(addr, ipaddress.IPv4Address):
        return next((why for net, why in _BLOCKED_V4 if addr in net), None)
    plain = ipaddress.IPv6Address(int(addr))  # without a scope id, for network membership
    for inner in embedded_ipv4(plain):
        why = classify(inner)
        if why is not None:
            return f"{why} (inside {_form(plain)})"
    if plain in _TEREDO:
        return None  # a Teredo address whose server and client are both public
    return next((why for net, why in _BLOCKED_V6 if plain in net), None)


def _form(addr: ipaddress.IPv6Address) -> str:
    if addr in _NAT64:
        return "NAT64"
    if addr.sixtofour is not None:
        return "6to4"
    return "Teredo"


@dataclass(frozen=True)
class AddressPolicy:
    """What a service may connect to: public unicast, plus the networks it allows explicitly."""

    allow_networks: tuple[IPNetwork, ...] = ()

    def refusal(self, addr: IPAddress) -> str | None:
        """None if `addr` may be connected to; otherwise why not."""
        plain = unmapped(addr)
        if isinstance(plain, ipaddress.IPv6Address) and plain.scope_id:
            plain = ipaddress.IPv6Address(int(plain))
        if any(plain.version == net.version and plain in net for net in self.allow_networks):
            return None
        why = classify(plain)
        return None if why is None else f"{plain} is {why}"


# --- host names in configured URLs ----------------------------------------------------------

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# WHATWG URL parsers read a host whose last label is a number (decimal, octal or 0x-hex) as
# IPv4 in some legacy notation: `127.1`, `2130706433`, `0x7f.1`. Such hosts are refused.
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")


@dataclass(frozen=True)
class Host:
    """A checked URL host: an IP literal (in standard notation) or a DNS name."""

    name: str  # how it is written in the URL: `example.org`, `192.0.2.1`, `[2001:db8::1]`
    literal: IPAddress | None


def parse_host(netloc_host: str) -> Host:
    """Check the host part of a configured URL; raise ValueError saying what is wrong.

    `netloc_host` is the host as written between `//` and the port (brackets kept for IPv6).
    """
    text = netloc_host.lower()
    if text.startswith("["):
        if not text.endswith("]") or "%" in text:
            raise ValueError(f"{netloc_host!r} must be an IPv6 address in [] without a zone id")
        try:
            v6 = ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            raise ValueError(f"{netloc_host!r} is not a valid IPv6 address") from None
        addr = unmapped(v6)
        return Host(str(addr) if addr.version == 4 else f"[{addr}]", addr)
    labels = text.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            v4 = ipaddress.IPv4Address(text)
        except ValueError:
            raise ValueError(
                f"{netloc_host!r} is not an IPv4 address in standard dotted-quad notation"
            ) from None
        return Host(str(v4), v4)
    if len(text) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"{netloc_host!r} is not a valid DNS name (letters, digits, '-', '_' per label; "
            "write international names in their xn-- form)"
        )
    return Host(text, None)


def parse_network(text: str) -> IPNetwork:
    """A network for `allow_networks` in strict CIDR notation; raise ValueError if not."""
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a network in CIDR notation ({exc})") from None
    if "/" not in text:
        raise ValueError(f"{text!r} needs a prefix length, such as {net}")
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None:
        raise ValueError(f"{text!r}: write IPv4-mapped networks as IPv4 networks")
    return net


def service_url(text: str) -> str:
    """A service's `url` in canonical form (`scheme://host[:port][/base]`, no trailing slash), or
    ValueError saying what is wrong with it. The host must be a name or a standard IP literal."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError("not a valid URL") from None
    problems = [
        (parts.scheme not in ("http", "https"), "scheme must be http or https"),
        (not parts.hostname, "a host is required"),
        (
            parts.username is not None or parts.password is not None,
            "must not contain user:password@ (use auth with a credential)",
        ),
        (
            bool(parts.query or parts.fragment or text.endswith(("?", "#"))),
            "must not contain a query or fragment",
        ),
        (port == 0, "port must not be 0"),
        (any(c in text for c in "\\ \t\r\n\0"), "must not contain spaces, backslashes or controls"),
    ]
    for bad, message in problems:
        if bad:
            raise ValueError(message)
    hostport = parts.netloc
    host = hostport[: hostport.index("]") + 1] if "]" in hostport else hostport.split(":")[0]
    try:
        checked = parse_host(host)
    except ValueError as exc:
        raise ValueError(f"host {exc}") from None
    base = parts.path.rstrip("/")
    if base:
        try:
            compile_glob(base)
        except ValueError as exc:
            raise ValueError(f"base path {exc}") from None
    netloc = checked.name + (f":{port}" if port is not None else "")
    return f"{parts.scheme}://{netloc}{base}"
