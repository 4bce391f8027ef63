"""Credentials: read by name, held redacted, every unusable one refused by name, never shown."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from turret.config import load_config
from turret.errors import CredentialError
from turret.providers.build import build_runtime
from turret.providers.static import (
    MAX_CREDENTIAL_BYTES,
    credentials_directory,
    load_credentials,
)
from turret.secret import Secret

CONFIG = load_config("""
services:
  a: {url: "https://a.example", auth: {bearer: header-cred}}
  b: {url: "https://b.example", auth: {query: {name: k, value: query-cred}}}
agents:
  bot: {token_credential: agent-token}
""")


def write(d: Path, **files: bytes) -> None:
    for name, data in files.items():
        (d / name.replace("_", "-")).write_bytes(data)


def test_secret_never_shows_its_value() -> None:
    s = Secret("CANARY-s3cret")
    assert "CANARY" not in repr(s) and "CANARY" not in str(s) and "CANARY" not in f"{s!r} {s}"
    assert s.reveal() == "CANARY-s3cret"
    assert s == Secret("CANARY-s3cret") and s != Secret("other")
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_load_credentials_strips_one_trailing_newline(tmp_path: Path) -> None:
    write(tmp_path, header_cred=b"h\n", query_cred=b"q\n\n", agent_token=b"t")
    creds = load_credentials(CONFIG, str(tmp_path))
    assert {k: v.reveal() for k, v in creds.items()} == {
        "header-cred": "h",
        "query-cred": "q\n",
        "agent-token": "t",
    }


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"query_cred": b"q", "agent_token": b"t"}, "'header-cred' is missing"),
        ({"header_cred": b"\n", "query_cred": b"q", "agent_token": b"t"}, "'header-cred' is empty"),
        ({"header_cred": b"", "query_cred": b"q", "agent_token": b"t"}, "'header-cred' is empty"),
        (
            {
                "header_cred": b"x" * (MAX_CREDENTIAL_BYTES + 1),
                "query_cred": b"q",
                "agent_token": b"t",
            },
            "'header-cred' is larger than 64 KiB",
        ),
        (
            {"header_cred": b"CANARY\r\nX-Evil: 1", "query_cred": b"q", "agent_token": b"t"},
            "'header-cred' contains CR, LF or NUL",
        ),
        (
            {"header_cred": b"CANARY\0", "query_cred": b"q", "agent_token": b"t"},
            "'header-cred' contains CR, LF or NUL",
        ),
        (
            {"header_cred": b"CANARY\n\n", "query_cred": b"q", "agent_token": b"t"},
            "'header-cred' contains CR, LF or NUL",
        ),
        (
            {"header_cred": b"\xffCANARY", "query_cred": b"q", "agent_token": b"t"},
            "'header-cred' is not valid UTF-8",
        ),
    ],
)
def test_load_credentials_refuses_unusable(
    tmp_path: Path, files: dict[str, bytes], expected: str
) -> None:
    write(tmp_path, **files)
    with pytest.raises(CredentialError) as info:
        load_credentials(CONFIG, str(tmp_path))
    message = str(info.value)
    assert expected in message
    assert "LoadCredential=header-cred:" in message
    assert "CANARY" not in message


def test_load_credentials_reports_every_problem(tmp_path: Path) -> None:
    with pytest.raises(CredentialError) as info:
        load_credentials(CONFIG, str(tmp_path))
    assert len(info.value.problems) == 3


def test_load_credentials_a_directory_is_not_a_credential(tmp_path: Path) -> None:
    write(tmp_path, query_cred=b"q", agent_token=b"t")
    (tmp_path / "header-cred").mkdir()
    with pytest.raises(CredentialError, match="'header-cred' is not a regular file"):
        load_credentials(CONFIG, str(tmp_path))


def test_load_credentials_needs_a_directory() -> None:
    with pytest.raises(CredentialError, match=r"\$CREDENTIALS_DIRECTORY"):
        load_credentials(CONFIG, None)


def test_credentials_directory_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/turret.service")
    assert credentials_directory(CONFIG, None) == "/run/credentials/turret.service"
    assert credentials_directory(CONFIG, "/dev/creds") == "/dev/creds"


def test_build_runtime_refuses_two_agents_with_one_token(tmp_path: Path) -> None:
    config = load_config("agents:\n  a: {token_credential: t1}\n  b: {token_credential: t2}\n")
    write(tmp_path, t1=b"same-token", t2=b"same-token")
    with pytest.raises(CredentialError, match="same token"):
        build_runtime(config, str(tmp_path))


def test_runtime_repr_hides_injected_values(tmp_path: Path) -> None:
    write(tmp_path, header_cred=b"CANARY-h", query_cred=b"CANARY-q", agent_token=b"CANARY-t")
    runtime = build_runtime(CONFIG, str(tmp_path))
    assert "CANARY" not in repr(runtime) and "CANARY" not in repr(dict(runtime.providers))
