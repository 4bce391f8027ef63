"""Config and credential loading under attack or accident: refuse to start, name the problem,
never show a secret, never hang."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from turret.config import load_config
from turret.errors import ConfigError, CredentialError
from turret.providers.build import build_runtime

SERVICE = "services:\n  s:\n    url: {url}\n    auth: {{bearer: gitea-token}}\n"


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://2130706433/", id="decimal-ipv4"),
        pytest.param("http://0x7f.1/", id="hex-ipv4"),
        pytest.param("http://0x7f000001/", id="hex-dword"),
        pytest.param("http://127.1/", id="short-ipv4"),
        pytest.param("http://0/", id="zero"),
        pytest.param("http://017700000001/", id="octal-dword"),
        pytest.param("http://0177.0.0.1/", id="octal-octet"),
        pytest.param("http://127.0.0.01/", id="leading-zero"),
        pytest.param("http://[fe80::1%25eth0]/", id="ipv6-zone-id"),
        pytest.param("http://user:pw@example.org/", id="userinfo"),
        pytest.param("http://example.org@169.254.169.254/", id="userinfo-confusion"),
        pytest.param("http://exa mple.org/", id="space"),
        pytest.param("http://example.org\\@evil/", id="backslash"),
        pytest.param("http://bücher.example/", id="raw-idn"),
        pytest.param("file:///etc/passwd", id="file-scheme"),
        pytest.param("gopher://127.0.0.1:6379/_x", id="gopher-scheme"),
        pytest.param("http://example.org/?next=http://evil", id="query"),
    ],
)
def test_config_obfuscated_or_dangerous_urls_refused(url: str) -> None:
    """Attack: a service URL that different parsers would read as different hosts."""
    with pytest.raises(ConfigError) as info:
        load_config(SERVICE.format(url=f"'{url}'"))
    assert "services.s.url" in str(info.value)


def test_config_ipv4_mapped_literal_is_the_ipv4_it_hides() -> None:
    """Attack: `[::ffff:7f00:1]` to dodge a check written for IPv4: it is stored as 127.0.0.1."""
    config = load_config(SERVICE.format(url="http://[::ffff:7f00:1]:8080/api"))
    assert config.services["s"].url == "http://127.0.0.1:8080/api"


@pytest.mark.parametrize(
    "network",
    ["10.0.0.1/8", "10/8", "10.0.0.0", "::ffff:10.0.0.0/104", "0x0a000000/8", "any", "10.0.0.0/33"],
)
def test_config_malformed_allow_networks_refused(network: str) -> None:
    """Attack: an allow_networks entry that means something wider than it looks."""
    text = SERVICE.format(url="http://example.org") + f"    allow_networks: ['{network}']\n"
    with pytest.raises(ConfigError, match=r"allow_networks\[0\]"):
        load_config(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a: !!python/object/apply:os.system ['id']\n", id="python-tag"),
        pytest.param("a: &x [1]\nb: *x\n", id="alias"),
        pytest.param("services: {}\nservices: {}\n", id="duplicate-key"),
        pytest.param("[" * 5000 + "]" * 5000, id="deep-nesting"),
        pytest.param("a: " + "{x: " * 300 + "1" + "}" * 300, id="deep-mappings"),
        pytest.param("limits: {max_connections: 0}\n", id="limit-out-of-range"),
        pytest.param("limits: {agent: {requests_per_second: -1}}\n", id="negative-rate"),
        pytest.param("limits: {header_timeout: .inf}\n", id="infinite-timeout"),
    ],
)
def test_config_hostile_yaml_is_refused_quickly(text: str) -> None:
    """Attack: YAML that executes code, expands, or exhausts the parser's stack."""
    started = time.monotonic()
    with pytest.raises(ConfigError):
        load_config(text)
    assert time.monotonic() - started < 2


def _plant(kind: str, path: Path, canary: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "crlf":
        path.write_text(canary + "\r\nX-Injected: 1")
    elif kind == "oversized":
        path.write_text(canary * 5000)
    elif kind == "not-utf8":
        path.write_bytes(b"\xff\xfe" + canary.encode())
    elif kind == "dangling-symlink":
        path.symlink_to(path.parent / "nowhere")


@pytest.mark.parametrize(
    "kind", ["fifo", "directory", "empty", "crlf", "oversized", "not-utf8", "dangling-symlink"]
)
def test_credential_faults_refuse_start_without_value(
    tmp_path: Path,
    canaries: dict[str, str],
    no_leaks_in: Callable[[str], None],
    kind: str,
) -> None:
    """Attack: a credential file replaced by a FIFO (hang), a directory, junk, or a value with
    CR/LF (header injection); start-up must fail fast and never print the value."""
    creds = tmp_path / "creds"
    creds.mkdir()
    _plant(kind, creds / "gitea-token", canaries["gitea-token"])
    config = load_config(SERVICE.format(url="http://127.0.0.1:1"))
    started = time.monotonic()
    with pytest.raises(CredentialError) as info:
        build_runtime(config, str(creds))
    assert time.monotonic() - started < 2
    assert "'gitea-token'" in str(info.value)
    no_leaks_in(str(info.value))
