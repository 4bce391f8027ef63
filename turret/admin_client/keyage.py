"""The operator's key-age commands: `turret credentials` (every credential's fingerprint, age and
state), `turret check [SERVICE|--all]` (health checks now) and `turret rotate NAME [--wait]` (the
assisted rotation: what the credential is and where it comes from, the steps, then, with
`--wait`, the new fingerprint awaited and the checks of every service using it run). A NAME that
is no credential but a provider that mints its credentials (`github_app`, `vault`, `aws_sts`,
`aws_secrets`) is rotated by Turret itself: what it handed out is revoked at the source, the
next use mints anew, and the checks run at once.

Who records the rotation: the server, when it loads the new value (start or reload), writes
`credential_rotated` with both short fingerprints; `turret rotate --wait` announces the
operator's uid first, so that record names them. A rotation done without `turret rotate` is
recorded all the same, without a uid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.parse
from typing import Any

from turret.admin_client.base import (
    EX_FAILED,
    EX_OK,
    EX_UNAVAILABLE,
    EX_USAGE,
    Call,
    Subparsers,
    Unreachable,
    UsageError,
    add_parser,
    duration,
    request,
    socket_path,
    table,
    when,
)
from turret.model import DEFAULT_ADMIN_SOCKET

POLL_INTERVAL = 1.0
SOPS_DIR = "/run/secrets/"  # where sops-nix places decrypted secrets
_LOAD_CREDENTIAL = re.compile(r"([A-Za-z0-9_.@-]{1,128}):(/\S+)")


class Failed(Exception):
    """The admin socket answered with an error."""


def add_commands(sub: Subparsers) -> None:
    """Add `credentials`, `check` and `rotate` to the `turret` parser."""
    add_parser(
        sub, "credentials", "list credentials: fingerprint, age, max_age, last used, state",
        lambda _: Call("GET", "credentials"), lambda _, doc: render_credentials(doc),
    )  # fmt: skip
    p = _parser(sub, "check", "run services' health checks now with their credentials", _check)
    p.add_argument("service", nargs="?", metavar="SERVICE", help="only this service")
    p.add_argument("--all", action="store_true", help="every service (the default)")
    p = _parser(
        sub, "rotate",
        "assisted rotation of credential NAME; a provider NAME that mints is rotated by Turret",
        _rotate,
    )  # fmt: skip
    p.add_argument("name", metavar="NAME")
    p.add_argument("--wait", action="store_true", help="wait for the new value, then check it")
    p.add_argument("--timeout", type=float, default=900.0, metavar="S", help="default 900")
    p.add_argument("--unit", default="turret", help="the systemd unit (default turret)")


def _parser(sub: Subparsers, name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text)
    p.add_argument(
        "--admin-socket", metavar="PATH",
        help=f"default $TURRET_ADMIN_SOCKET, else {DEFAULT_ADMIN_SOCKET}",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the JSON document")
    p.set_defaults(func=lambda args: _guarded(args, func), command=name)
    return p


def _guarded(args: argparse.Namespace, func: Any) -> int:
    """Exit statuses as every admin command has them: 2 usage, 69 unreachable, 1 refused."""
    try:
        return int(func(args))
    except UsageError as exc:
        print(f"turret {args.command}: {exc}", file=sys.stderr)
        return EX_USAGE
    except Unreachable as exc:
        print(f"turret: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except Failed as exc:
        print(f"turret {args.command}: {exc}", file=sys.stderr)
        return EX_FAILED


def _call(args: argparse.Namespace, call: Call, *, not_found: str | None = None) -> Any:
    """The document of `call`'s answer; `Failed` with the server's message (or `not_found`
    for a 404, when given) if it is not a 200."""
    status, doc = asyncio.run(request(socket_path(args), call))
    if status == 404 and not_found is not None:
        raise Failed(not_found)
    if status != 200:
        error = doc.get("error", {}) if isinstance(doc, dict) else {}
        raise Failed(str(error.get("message", status)))
    return doc


def _checks(args: argparse.Namespace, services: list[str] | None) -> dict[str, Any]:
    body = None if services is None else {"services": services}
    return dict(_call(args, Call("POST", "check", body)))  # type: ignore[arg-type]


def _check(args: argparse.Namespace) -> int:
    if args.service is not None and args.all:
        raise UsageError("give SERVICE or --all, not both")
    doc = _checks(args, None if args.service is None else [args.service])
    print(json.dumps(doc, indent=2) if args.json else render_checks(doc["checks"]))
    return EX_OK if doc["ok"] else EX_FAILED


def _credential(args: argparse.Namespace, name: str) -> dict[str, Any]:
    cred = _find_credential(args, name)
    if cred is None:
        raise Failed(f"no credential {name!r} is used by Turret's configuration")
    return cred


def _find_credential(args: argparse.Namespace, name: str) -> dict[str, Any] | None:
    for cred in _call(args, Call("GET", "credentials"))["credentials"]:
        if cred["name"] == name:
            return dict(cred)
    return None


def _rotate(args: argparse.Namespace) -> int:
    cred = _find_credential(args, args.name)
    if cred is None:
        return _rotate_provider(args)
    source = credential_source(args.unit, args.name)
    if not args.json:
        print(render_rotation(cred, source))
    doc: dict[str, Any] = {"credential": cred, "source": source, "rotated": None, "checks": None}
    if not args.wait:
        if args.json:
            print(json.dumps(doc, indent=2))
        return EX_OK
    quoted = urllib.parse.quote(args.name, safe="")
    _call(args, Call("POST", f"credentials/{quoted}/rotating"))
    old = cred["fingerprint"]
    if not args.json:
        print(f"\nwaiting up to {args.timeout:g} s for a new value (now {old or 'unknown'}) ...")
    new = _wait_for_change(args, old, time.monotonic() + args.timeout)
    doc["rotated"] = {"old_fingerprint": old, "new_fingerprint": new}
    if new is None:
        if args.json:
            print(json.dumps(doc, indent=2))
        raise Failed(f"no new value of {args.name} loaded within {args.timeout:g} s")
    checks: dict[str, Any] = {"ok": True, "checks": []}
    if cred["services"]:
        checks = _checks(args, cred["services"])
    doc["checks"] = checks["checks"]
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"new value loaded: {old or '-'} -> {new}")
        print(render_checks(checks["checks"]) if checks["checks"] else "no service to check")
    return EX_OK if checks["ok"] else EX_FAILED


def _rotate_provider(args: argparse.Namespace) -> int:
    """`turret rotate PROVIDER`: a provider that mints its credentials rotates by itself."""
    quoted = urllib.parse.quote(args.name, safe="")
    missing = (
        f"no credential {args.name!r} is used by Turret's configuration, and no service uses a "
        f"provider {args.name!r} that mints its credentials"
    )
    doc = _call(args, Call("POST", f"providers/{quoted}/rotate"), not_found=missing)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(render_provider_rotation(doc))
    return EX_OK if doc["ok"] else EX_FAILED


def render_provider_rotation(doc: dict[str, Any]) -> str:
    """What `turret rotate PROVIDER` prints."""
    lines = [f"provider {doc['provider']}: mints its credentials, so Turret rotated it itself"]
    for s in doc["services"]:
        failed = s["revoke_failures"]
        forgotten = (
            f", {s['forgotten']} forgotten (the source cannot revoke them: they lapse at their"
            " expiry)"
            if s["forgotten"]
            else ""
        )
        could_not = f"; {len(failed)} could not be: {'; '.join(failed)}" if failed else ""
        lines.append(
            f"  service {s['service']}: {s['revoked']} outstanding credentials revoked at the"
            f" source{forgotten}{could_not}; the next use mints a new one"
        )
    checks = doc["checks"]
    lines += ["", render_checks(checks) if checks else "no service to check"]
    return "\n".join(lines)


def _wait_for_change(args: argparse.Namespace, old: str | None, deadline: float) -> str | None:
    """Poll the admin socket until the credential's fingerprint differs from `old`; Turret
    being unreachable for a while is expected (`systemctl restart turret`)."""
    while True:
        try:
            new = _credential(args, args.name)["fingerprint"]
        except Unreachable:
            new = None
        if new is not None and new != old:
            return str(new)
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))


def credential_source(unit: str, name: str) -> str | None:
    """Where systemd loads credential `name` from (`LoadCredential=`), or None if unknown (no
    systemctl, not a unit, or loaded some other way)."""
    try:
        out = subprocess.run(  # noqa: S603 - a fixed argv; the unit name is one argument
            ["systemctl", "show", unit, "-p", "LoadCredential", "-p", "LoadCredentialEncrypted"],  # noqa: S607
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    for found, path in _LOAD_CREDENTIAL.findall(out):
        if found == name:
            return str(path)
    return None


def rotation_steps(cred: dict[str, Any], source: str | None) -> list[str]:
    """What the operator does, in order."""
    where = ", ".join(cred["services"]) or "its issuer"
    steps = [f"create a new value at {where} (keep the old one valid until the checks pass)"]
    if source is not None and source.startswith(SOPS_DIR):
        steps.append(f"`sops` edit the secret behind {source} and put the new value in")
        steps.append("`nixos-rebuild switch` (sops-nix restarts or reloads turret)")
    else:
        steps.append(f"write the new value to {source or 'the LoadCredential= source file'}")
        steps.append("`systemctl restart turret` (systemd copies credentials at start)")
    steps.append("revoke the old value at the service once `turret check` passes")
    return steps


def render_rotation(cred: dict[str, Any], source: str | None) -> str:
    """What `turret rotate NAME` shows before it waits."""
    age = "unknown" if cred["age_seconds"] is None else duration(cred["age_seconds"])
    max_age = "none" if cred["max_age_seconds"] is None else duration(cred["max_age_seconds"])
    sops = " (a sops-nix secret)" if source and source.startswith(SOPS_DIR) else ""
    lines = [
        f"credential {cred['name']}: fingerprint {cred['fingerprint'] or 'unknown'}, "
        f"state {cred['state']}",
        f"age: {age} (max_age {max_age}); last used: {when(cred['last_used'])}",
        f"owner: {cred['owner'] or 'not set'}",
        f"hint: {cred['rotate_hint'] or 'not set'}",
        f"used by: {', '.join(cred['services'] + cred['other_uses']) or 'nothing'}",
        f"source: {source or 'unknown (systemctl show gave no LoadCredential= for it)'}{sops}",
        "steps:",
    ]
    lines += [f"  {i}. {step}" for i, step in enumerate(rotation_steps(cred, source), 1)]
    return "\n".join(lines)


def attention_line(attention: list[dict[str, str]]) -> str:
    """The credentials needing attention, for `turret status`."""
    return ", ".join(f"{c['name']} ({c['state']})" for c in attention) or "none"


def render_credentials(doc: dict[str, Any]) -> str:
    """`turret credentials` as a table: fingerprints are keyed, never a value or a plain hash."""
    rows = [("CREDENTIAL", "FINGERPRINT", "FIRST SEEN", "AGE", "MAX AGE", "LAST USED", "STATE",
             "USED BY")]  # fmt: skip
    rows.extend(
        (
            c["name"],
            c["fingerprint"] or "-",
            when(c["first_seen"]) if c["first_seen"] else "-",
            "-" if c["age_seconds"] is None else duration(c["age_seconds"]),
            "-" if c["max_age_seconds"] is None else duration(c["max_age_seconds"]),
            when(c["last_used"]),
            c["state"],
            ", ".join(c["services"] + c["other_uses"]),
        )
        for c in doc["credentials"]
    )
    text = table(rows) if doc["credentials"] else "no credentials in the configuration"
    if not doc["state_store"]:
        text += "\nno state store: ages are unknown (StateDirectory=turret or --state-dir)"
    return text


def render_checks(checks: list[dict[str, Any]]) -> str:
    """`turret check` as a table."""
    if not checks:
        return "no services"
    rows = [("SERVICE", "RESULT", "STATUS", "CHECK")]
    for c in checks:
        result = "skipped" if c["ok"] is None else "ok" if c["ok"] else f"FAILED {c['error']}"
        rows.append(
            (c["service"], result, str(c["status"] or "-"), c["check"] or c["error"] or "-")
        )
    return table(rows)
