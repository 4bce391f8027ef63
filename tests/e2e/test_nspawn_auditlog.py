"""`turret audit` and the audit chain under a real systemd and journald (nspawn).

The chain key is a credential like the others (a drop-in's `LoadCredential=`); `turret audit`
reads the real journal with its filters; `turret audit verify` passes over the real journal and
finds a record removed from an exported copy (`journalctl -o json` to a file); a restart of the
service continues the chain (`chain_resumed` linking to the head published before it).
"""

from __future__ import annotations

import json
import secrets
import subprocess

import pytest

from tests.e2e.site import TCP, UNIX, Site, turret, wait_until

pytestmark = pytest.mark.timeout(1500)  # a fresh machine runs debootstrap and pip first

CHAIN_KEY = f"canary-chain-key-{secrets.token_hex(8)}"
KEY_FILE = "/etc/turret/credentials/chain-key"
DROP_IN = f"[Service]\nLoadCredential=chain-key:{KEY_FILE}\n"


@pytest.fixture(scope="module")
def chained(site: Site) -> Site:
    """The site with `audit.chain_key` configured and the service restarted on it."""
    key = site.etc / "credentials" / "chain-key"
    key.write_text(CHAIN_KEY + "\n")
    key.chmod(0o400)
    site.machine.path("/etc/systemd/system/turret.service.d/chain.conf").write_text(DROP_IN)
    site.machine.run("systemctl", "daemon-reload")
    site.write_config()
    config = site.etc / "turret.yaml"
    config.write_text(config.read_text() + "audit: {chain_key: chain-key}\n")
    site.machine.run("systemctl", "restart", "turret.service")
    return site


def audit(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    result = turret(site, "audit", *args)
    assert CHAIN_KEY not in result.stdout + result.stderr
    return result


def records(site: Site, *args: str) -> list[dict[str, str]]:
    result = audit(site, "--json", "-n", "0", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_e2e_audit_reads_the_real_journal_with_filters(chained: Site) -> None:
    site = chained
    assert site.request(TCP, "/v1/proxy/gitea/ping")["status"] == 200
    assert site.request(UNIX, "/v1/proxy/vault/ping")["status"] == 200
    assert site.request(TCP, "/v1/proxy/gitea/nope")["status"] == 403
    wait_until(lambda: len(records(site, "--decision", "deny")) >= 1, "the deny in the journal")

    decisions = records(site, "--event", "decision")
    assert {r["TURRET_DECISION"] for r in decisions} == {"allow", "deny"}
    assert all(r["_SYSTEMD_UNIT"] == "turret.service" for r in decisions)
    denied = records(site, "--decision", "deny")
    assert [r["TURRET_PATH"] for r in denied] == ["/nope"]
    vault = records(site, "--service", "vault", "--agent", "e2e-agent")
    assert vault and {r["TURRET_SERVICE"] for r in vault} == {"vault"}
    assert records(site, "--agent", "nobody") == []
    assert len(records(site, "--since", "1h")) >= len(decisions)

    table = audit(site, "--decision", "deny")
    lines = table.stdout.splitlines()
    assert table.returncode == 0 and lines[0].split()[:3] == ["TIME", "AGENT", "EVENT"]
    assert "e2e-agent" in lines[1] and "GET /nope" in lines[1]
    assert audit(site, "-n", "2").stdout.count("\n") == 3  # header and two rows
    assert audit(site, "--since", "soon").returncode == 2


def test_e2e_audit_verify_passes_the_journal_and_finds_a_removed_record(chained: Site) -> None:
    site = chained
    assert site.request(TCP, "/v1/proxy/gitea/ping")["status"] == 200
    result = audit(site, "verify", "--key-file", KEY_FILE)
    assert result.returncode == 0 and result.stdout.startswith("OK: "), result
    chained_records = [r for r in records(site) if "TURRET_SEQ" in r]
    assert chained_records[0]["TURRET_EVENT"] == "chain_started"
    seqs = [int(r["TURRET_SEQ"]) for r in chained_records]
    assert seqs == list(range(1, len(seqs) + 1))

    export = site.machine.run(
        "journalctl", "--no-pager", "-o", "json", "_SYSTEMD_UNIT=turret.service"
    ).stdout
    (site.etc / "export.jsonl").write_text(export)
    assert audit(site, "verify", "--file", "/etc/turret/export.jsonl", "--key-file",
                 KEY_FILE).returncode == 0  # fmt: skip
    lines = export.splitlines(keepends=True)
    third = next(i for i, line in enumerate(lines) if json.loads(line).get("TURRET_SEQ") == "3")
    (site.etc / "copy.jsonl").write_text("".join(lines[:third] + lines[third + 1 :]))
    result = audit(site, "verify", "--file", "/etc/turret/copy.jsonl", "--key-file", KEY_FILE)
    assert result.returncode == 1
    assert "TAMPERED" in result.stdout and "seq 3 missing before seq 4" in result.stdout


def test_e2e_audit_restart_continues_the_chain_from_the_published_head(chained: Site) -> None:
    site = chained
    assert site.request(TCP, "/v1/proxy/gitea/ping")["status"] == 200
    head = audit(site, "head")
    assert head.returncode == 0, head.stderr
    published = head.stdout.strip()
    seq = int(published.split(":")[0])
    site.machine.run("systemctl", "restart", "turret.service")
    assert site.request(TCP, "/v1/proxy/gitea/ping")["status"] == 200

    resumed = records(site, "--event", "chain_resumed")
    # the `stopped` record is seq + 1; the next run links to it and goes on at the next seq
    assert resumed and resumed[-1]["TURRET_CHAIN_PREV_SEQ"] == str(seq + 1)
    assert resumed[-1]["TURRET_CHAIN_CLEAN"] == "yes"
    assert int(resumed[-1]["TURRET_SEQ"]) == seq + 2
    result = audit(site, "verify", "--key-file", KEY_FILE, "--head", published)
    assert result.returncode == 0 and result.stdout.startswith("OK: "), result
    journal = site.machine.run("journalctl", "--no-pager", "-o", "json").stdout
    assert CHAIN_KEY not in journal


def test_e2e_audit_a_killed_service_resumes_past_its_crash_window(chained: Site) -> None:
    site = chained
    assert site.request(TCP, "/v1/proxy/gitea/ping")["status"] == 200
    site.machine.run("systemctl", "kill", "--signal=SIGKILL", "turret.service")
    wait_until(lambda: site.show("ActiveState")["ActiveState"] != "active", "the kill")
    site.machine.run("systemctl", "reset-failed", "turret.service", check=False)
    assert site.request(TCP, "/v1/proxy/gitea/ping")["status"] == 200  # socket-activated again

    def unclean() -> bool:
        resumed = records(site, "--event", "chain_resumed")
        return any(r["TURRET_CHAIN_CLEAN"] == "no" for r in resumed)

    wait_until(unclean, "the unclean resume in the journal")
    resumed = records(site, "--event", "chain_resumed")[-1]
    assert resumed["PRIORITY"] == "4"
    assert int(resumed["TURRET_SEQ"]) == int(resumed["TURRET_CHAIN_PREV_SEQ"]) + 32
    result = audit(site, "verify", "--key-file", KEY_FILE)
    assert result.returncode == 0, result.stdout
    assert "restart(s) after an unclean stop crossed" in result.stdout
