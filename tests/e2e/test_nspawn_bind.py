"""Peer binding under a real systemd 252: callers are units made with `systemd-run` as two
users; what Turret's hardening lets it see of them; the containment report of a contained and an
uncontained unit. The machine is this module's own (`site`)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shlex
from typing import Any

import pytest

from tests.e2e.nspawn_machine import log
from tests.e2e.site import UNIX, Site

pytestmark = pytest.mark.timeout(1500)  # a fresh machine runs debootstrap and pip first

USERS = {"alice": 2001, "bob": 2002}
TOKENS = {name: f"turret_e2e-bind-{name}-{secrets.token_hex(12)}" for name in ("a", "b", "c", "d")}
CALLER = "/usr/local/bin/e2e-bind-call"
# A caller: the token on stdin (never in argv or the environment), the answer as JSON on stdout.
CALLER_TEXT = """#!/usr/bin/python3
import json, socket, sys
token = sys.stdin.readline().strip()
s = socket.socket(socket.AF_UNIX)
s.settimeout(30)
s.connect(sys.argv[1])
s.sendall(f"GET {sys.argv[2]} HTTP/1.1\\r\\nHost: t\\r\\nAuthorization: Bearer {token}\\r\\n"
          "Connection: close\\r\\n\\r\\n".encode())
data = b""
while chunk := s.recv(65536):
    data += chunk
head, _, body = data.decode().partition("\\r\\n\\r\\n")
print(json.dumps({"status": int(head.split()[1]), "body": json.loads(body)}))
"""


def config_text(site: Site) -> str:
    url = f"http://127.0.0.1:{site.upstream_port}"
    agents = {
        "a": "bind: {unit: agent-a.service}",
        "b": "bind: {user: bob}",
        "c": "",
        "d": "bind: [{unit: sealed-in.service}, {unit: wide-open.service}]\n"
        "    require_contained: true",
    }
    text = f"services:\n  gitea:\n    url: {url}\n    auth: {{bearer: gitea-token}}\n"
    text += (
        f"  vault:\n    url: {url}\n    auth: {{header: {{name: X-Api-Key, value: vault-key}}}}\n"
    )
    text += "agents:\n"
    for name, extra in agents.items():
        digest = hashlib.sha256(TOKENS[name].encode()).hexdigest()
        text += f"  {name}:\n    token_sha256: {digest}\n"
        text += '    proxy: [{service: gitea, methods: [GET], paths: ["/ping"]}]\n'
        text += f"    {extra}\n" if extra else ""
    return text


@pytest.fixture(scope="module")
def bind_site(site: Site) -> Site:
    """The site with two users, the caller script and the bound agents' config."""
    m = site.machine
    for name, uid in USERS.items():
        m.run("groupadd", "-g", str(uid), name)
        m.run("useradd", "-u", str(uid), "-g", str(uid), "-M", "-s", "/bin/sh", name)
    caller = m.path(CALLER)
    caller.write_text(CALLER_TEXT)
    caller.chmod(0o755)
    # The machine's network namespace has only lo (nspawn --private-network): an interface, as a
    # host's network would have, so that a unit without a network of its own can be told apart.
    uplink = m.in_network(
        ["ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1"]
    )
    assert uplink.wait(timeout=30) == 0
    site.write_config_text(config_text(site))
    m.run("systemctl", "restart", "turret.service")
    return site


def call(
    site: Site, agent: str, unit: str, user: str | None, *props: str, path: str = "/v1/whoami"
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """`path` with `agent`'s token from a transient unit `unit` running as `user` (None: as the
    unit's properties say) in turret-agents, with the unit properties `props`: the status, the
    answer and the decision record Turret wrote."""
    argv = [
        "systemd-run", "--quiet", "--wait", "--pipe", "--collect", f"--unit={unit}",
        *([f"--uid={user}"] if user else []), "-p", "SupplementaryGroups=turret-agents",
        *(f"-p{p}" for p in props),
        CALLER, UNIX, path,
    ]  # fmt: skip
    result = site.machine.run(*argv, stdin=TOKENS[agent] + "\n", check=False)
    assert result.returncode == 0, (shlex.join(argv), result.stderr)
    assert TOKENS[agent] not in result.stdout
    got = json.loads(result.stdout)
    records = site.machine.journal("_SYSTEMD_UNIT=turret.service", "TURRET_EVENT=decision")
    return got["status"], got["body"], records[-1]


def assert_mismatch(status: int, body: dict[str, Any]) -> None:
    assert status == 401, body
    assert body["error"]["code"] == "peer_mismatch"


def test_e2e_bind_shipped_unit_sees_the_callers_uid_and_unit(bind_site: Site) -> None:
    status, _, record = call(bind_site, "c", "agent-c", "alice")
    assert status == 200
    assert record["TURRET_PEER_UID"] == str(USERS["alice"])
    assert record["TURRET_PEER_UNIT"] == "agent-c.service"
    assert "TURRET_CONTAINMENT" not in record  # unbound: only the peer is recorded


def test_e2e_bind_unit_bound_token_refused_from_another_unit(bind_site: Site) -> None:
    assert call(bind_site, "a", "agent-a", "alice")[0] == 200
    assert call(bind_site, "a", "agent-a", "bob")[0] == 200  # bound to the unit, not the user
    status, body, record = call(bind_site, "a", "agent-b", "alice")
    assert_mismatch(status, body)
    assert (record["TURRET_PEER_UID"], record["TURRET_PEER_UNIT"]) == ("2001", "agent-b.service")
    assert (
        record["TURRET_REASON"] == "peer uid=2001 unit=agent-b.service is not bound to this agent"
    )


def test_e2e_bind_user_bound_token_refused_from_another_user(bind_site: Site) -> None:
    assert call(bind_site, "b", "agent-b", "bob")[0] == 200
    assert call(bind_site, "b", "agent-a", "bob")[0] == 200  # bound to the user, any unit
    status, body, record = call(bind_site, "b", "agent-b", "alice")
    assert_mismatch(status, body)
    assert record["TURRET_PEER_UID"] == "2001"
    # and over TCP, from root in the machine, a bound agent's token is refused the same way
    tcp = bind_site.machine.run("python3", "-c", TCP_CALL, stdin=TOKENS["b"] + "\n", check=False)
    assert json.loads(tcp.stdout)["status"] == 401


TCP_CALL = """
import http.client, json, sys
token = sys.stdin.readline().strip()
c = http.client.HTTPConnection("127.0.0.1", 8421, timeout=30)
c.request("GET", "/v1/whoami", headers={"Authorization": "Bearer " + token})
print(json.dumps({"status": c.getresponse().status}))
"""
CONTAINED = ("PrivateNetwork=yes", "NoNewPrivileges=yes")


def test_e2e_bind_containment_of_a_contained_and_an_uncontained_unit(bind_site: Site) -> None:
    status, _, record = call(bind_site, "d", "sealed-in", "alice", *CONTAINED)
    assert status == 200, record
    assert record["TURRET_CONTAINMENT"] == "contained"
    status, body, record = call(bind_site, "d", "wide-open", "alice")
    assert status == 403 and body["error"]["code"] == "not_contained", body
    assert (
        body["error"]["message"]
        == "the calling unit wide-open.service is not contained: PrivateNetwork"
    )
    assert record["TURRET_CONTAINMENT"] == "uncontained"
    assert record["TURRET_CONTAINMENT_GAPS"] == "PrivateNetwork,NoNewPrivileges"


def test_e2e_bind_documented_agent_unit_is_contained(bind_site: Site) -> None:
    # the NixOS example's agent unit: a dynamic user, no network, no privileges
    props = ("DynamicUser=yes", *CONTAINED, "CapabilityBoundingSet=", "ProtectSystem=strict")
    status, body, record = call(bind_site, "d", "sealed-in", None, *props)
    assert status == 200, body
    assert record["TURRET_CONTAINMENT"] == "contained"
    assert int(str(record["TURRET_PEER_UID"])) >= 61184  # systemd's dynamic uid range


def test_e2e_bind_containment_gaps_of_more_units(bind_site: Site) -> None:
    # root, even without a network, can read Turret's credentials
    status, body, record = call(bind_site, "d", "sealed-in", "root", *CONTAINED)
    assert status == 403, body
    assert record["TURRET_CONTAINMENT_GAPS"] == "User,CapabilityBoundingSet"
    # a private network without NoNewPrivileges=: a setuid program could make it root
    status, body, record = call(bind_site, "d", "sealed-in", "alice", "PrivateNetwork=yes")
    assert status == 403 and record["TURRET_CONTAINMENT_GAPS"] == "NoNewPrivileges", body
    # An address filter alone is invisible in /proc, and dbus-daemon does not answer a
    # DynamicUser= service, so Turret cannot read the unit's IPAddressDeny=: not contained.
    ip_only = ("IPAddressDeny=any", "NoNewPrivileges=yes")
    status, body, record = call(bind_site, "d", "wide-open", "alice", *ip_only)
    assert status == 403 and record["TURRET_CONTAINMENT_GAPS"] == "PrivateNetwork", body
    logged = bind_site.machine.journal("_SYSTEMD_UNIT=turret.service")
    assert any("systemctl show wide-open.service failed" in str(r["MESSAGE"]) for r in logged)


DROP_IN = "/etc/systemd/system/turret.service.d/zz-hardening.conf"


@pytest.mark.parametrize(
    ("directives", "uid", "unit"),
    [
        ("", "2001", "agent-c.service"),  # the shipped unit
        ("PrivateUsers=yes", "65534", "agent-c.service"),  # every other user is the overflow uid
        ("ProtectProc=invisible", "2001", None),  # another user's /proc/PID is hidden
        ("ProtectProc=noaccess", "2001", None),
        ("ProtectProc=ptraceable", "2001", None),  # Turret may not ptrace another user
        ("ProcSubset=all", "2001", "agent-c.service"),  # ProcSubset=pid takes nothing away
        ("PrivateUsers=yes\nProtectProc=invisible", "65534", None),  # the unit before binding
    ],
)
def test_e2e_bind_what_each_hardening_option_lets_turret_see(
    bind_site: Site, directives: str, uid: str, unit: str | None
) -> None:
    m = bind_site.machine
    m.path(DROP_IN).write_text(f"[Service]\n{directives}\n")
    try:
        m.run("systemctl", "daemon-reload")
        m.run("systemctl", "restart", "turret.service")
        status, _, record = call(bind_site, "c", "agent-c", "alice")
        assert status == 200
        assert (record["TURRET_PEER_UID"], record.get("TURRET_PEER_UNIT")) == (uid, unit)
        if unit is None:  # and so a unit-bound token cannot be used at all: fail closed
            status, body, refused = call(bind_site, "a", "agent-a", "alice")
            assert_mismatch(status, body)
            assert "hidden by ProtectProc=" in str(refused["TURRET_REASON"])
    finally:
        m.path(DROP_IN).unlink()
        m.run("systemctl", "daemon-reload")
        m.run("systemctl", "restart", "turret.service")


def score(site: Site) -> float:
    out = site.machine.run("systemd-analyze", "security", "--no-pager", "turret.service").stdout
    found = re.search(r"Overall exposure level for turret\.service: (\d+\.\d+)", out)
    assert found is not None, out
    return float(found[1])


def test_e2e_bind_security_score_before_and_after(bind_site: Site) -> None:
    m = bind_site.machine
    after = score(bind_site)
    m.path(DROP_IN).write_text("[Service]\nPrivateUsers=yes\nProtectProc=invisible\n")
    try:
        m.run("systemctl", "daemon-reload")
        before = score(bind_site)
    finally:
        m.path(DROP_IN).unlink()
        m.run("systemctl", "daemon-reload")
    log(f"systemd-analyze security turret.service: {before} before binding, {after} after")
    assert before <= after <= 1.5
