# NixOS VM test: `nix build .#checks.x86_64-linux.vm`. Secrets are provisioned the way sops-nix
# leaves them (root-owned, 0400, under /run/secrets); an agent user reaches a fake upstream through
# the unix socket with the credential injected; a denied request is audited in the journal; a
# config change is applied by reload; a rotated secret is picked up by a restart.
{ pkgs }:
let
  fakeForge = pkgs.writeText "fake-forge.py" ''
    import http.server
    import json
    import pathlib

    SEEN = pathlib.Path("/var/lib/fake-forge/authorization")


    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            SEEN.write_text(self.headers.get("Authorization", ""))
            body = json.dumps({"path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass  # the request line is not a secret, but the test keeps the journal quiet


    http.server.HTTPServer(("127.0.0.1", 3000), Handler).serve_forever()
  '';
in
pkgs.testers.runNixOSTest {
  name = "turret";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ ../module.nix ];

      services.turret = {
        enable = true;
        settings = {
          services.forge = {
            url = "http://127.0.0.1:3000";
            auth.bearer = "gitea-token";
          };
          agents.alice = {
            token_credential = "alice-token";
            proxy = [
              {
                service = "forge";
                methods = [ "GET" ];
                paths = [ "/api/v1/repos/**" ];
              }
            ];
          };
        };
        # Where sops-nix puts `sops.secrets."turret/<name>"`; the files are written by the test.
        credentials = {
          "gitea-token" = "/run/secrets/turret/gitea-token";
          "alice-token" = "/run/secrets/turret/alice-token";
        };
      };

      # The same host with one more grant: switching to it must reload Turret, not restart it.
      specialisation.more-grants.configuration = {
        services.turret.settings.agents.alice.proxy = [
          {
            service = "forge";
            methods = [ "GET" ];
            paths = [ "/api/v1/orgs/**" ];
          }
        ];
      };

      systemd.services.fake-forge = {
        wantedBy = [ "multi-user.target" ];
        serviceConfig = {
          ExecStart = "${pkgs.python3.interpreter} ${fakeForge}";
          StateDirectory = "fake-forge";
        };
      };

      users.users.alice = {
        isNormalUser = true;
        extraGroups = [ "turret-agents" ];
      };
      users.users.mallory.isNormalUser = true;

      environment.systemPackages = [ pkgs.curl ];
    };

  testScript = ''
    import json

    GITEA = "canary-gitea-3f9a1c7e"
    GITEA_ROTATED = "canary-gitea-rotated-b24d"
    ALICE = "turret_canary-alice-8e61d0"
    SOCK = "/run/turret/agents.sock"
    responses: list[str] = []


    def request(path: str, user: str = "alice", token: str = ALICE) -> tuple[int, str]:
        """GET through the agents' socket as `user`; returns (status, body)."""
        out = machine.succeed(
            f"runuser -u {user} -- curl -sS --unix-socket {SOCK} "
            f"-H 'Authorization: Bearer {token}' -w '\\n%{{http_code}}' http://turret{path}"
        )
        body, _, status = out.rpartition("\n")
        responses.append(body)
        return int(status), body


    def journal_records(*matches: str) -> list[dict[str, str]]:
        out = machine.succeed(
            "journalctl -o json --no-pager _SYSTEMD_UNIT=turret.service " + " ".join(matches)
        )
        return [json.loads(line) for line in out.splitlines() if line.strip()]


    def main_pid() -> str:
        return machine.succeed("systemctl show -P MainPID turret.service").strip()


    def write_secret(name: str, value: str) -> None:
        machine.succeed(
            f"(umask 077 && printf %s '{value}' > /run/secrets/turret/{name}.new)",
            f"mv /run/secrets/turret/{name}.new /run/secrets/turret/{name}",
        )


    machine.wait_for_unit("turret.socket")
    machine.wait_for_unit("fake-forge.service")
    machine.wait_for_open_port(3000)

    with subtest("secrets provisioned like sops-nix: root-owned, 0400, outside the store"):
        machine.succeed("install -d -m 0751 /run/secrets/turret")
        write_secret("gitea-token", GITEA)
        write_secret("alice-token", ALICE)

    with subtest("socket activation: Turret is not running before the first connection"):
        machine.fail("systemctl is-active --quiet turret.service")

    with subtest("the agent's request reaches the upstream with the credential injected"):
        status, body = request("/v1/proxy/forge/api/v1/repos/acme/widgets")
        assert status == 200, body
        assert json.loads(body) == {"path": "/api/v1/repos/acme/widgets"}, body
        seen = machine.succeed("cat /var/lib/fake-forge/authorization")
        assert seen == f"Bearer {GITEA}", "upstream did not get the gitea credential"
        machine.succeed("systemctl is-active --quiet turret.service")

    with subtest("DynamicUser reads the secrets through LoadCredential; they stay root-only"):
        pid = main_pid()
        assert machine.succeed(f"stat -c %U /proc/{pid}").strip() == "turret"
        for name in ("gitea-token", "alice-token"):
            mode = machine.succeed(f"stat -c '%U %a' /run/secrets/turret/{name}").strip()
            assert mode == "root 400", f"{name}: {mode}"

    with subtest("the TCP socket on loopback serves the same API"):
        out = machine.succeed(
            f"curl -sS -H 'Authorization: Bearer {ALICE}' http://127.0.0.1:8421/v1/whoami"
        )
        responses.append(out)
        assert json.loads(out)["agent"] == "alice", out

    with subtest("a user outside the socket's group cannot connect at all"):
        machine.fail(f"runuser -u mallory -- curl -sS --unix-socket {SOCK} http://turret/v1/whoami")

    with subtest("a request outside the grants is denied, and both decisions are audited"):
        status, body = request("/v1/proxy/forge/api/v1/orgs/acme")
        assert status == 403, body
        records = journal_records("TURRET_AGENT=alice")
        decisions = {(r.get("TURRET_DECISION"), r.get("TURRET_PATH")) for r in records}
        assert ("deny", "/api/v1/orgs/acme") in decisions, decisions
        assert ("allow", "/api/v1/repos/acme/widgets") in decisions, decisions

    with subtest("a config change is applied by reload, without a restart"):
        pid = main_pid()
        machine.succeed(
            "/run/current-system/specialisation/more-grants/bin/switch-to-configuration test"
        )
        machine.wait_until_succeeds(
            f"runuser -u alice -- curl -sSf --unix-socket {SOCK} "
            f"-H 'Authorization: Bearer {ALICE}' http://turret/v1/proxy/forge/api/v1/orgs/acme"
        )
        assert main_pid() == pid, "turret.service was restarted instead of reloaded"
        assert machine.succeed("systemctl show -P NRestarts turret.service").strip() == "0"
        status, body = request("/v1/proxy/forge/api/v1/repos/acme/widgets")
        assert status == 200, body

    with subtest("a rotated secret is picked up by the restart sops-nix's restartUnits does"):
        write_secret("gitea-token", GITEA_ROTATED)
        machine.succeed("systemctl restart turret.service")
        status, body = request("/v1/proxy/forge/api/v1/repos/acme/widgets")
        assert status == 200, body
        seen = machine.succeed("cat /var/lib/fake-forge/authorization")
        assert seen == f"Bearer {GITEA_ROTATED}", "upstream did not get the rotated credential"

    with subtest("no credential value in any response, log line or audit record"):
        journal = machine.succeed("journalctl -o json --no-pager _SYSTEMD_UNIT=turret.service")
        journal += machine.succeed("journalctl -o cat --no-pager -u turret.service -u turret.socket")
        for canary in (GITEA, GITEA_ROTATED, ALICE):
            assert canary not in journal, "a credential reached the journal"
            assert not any(canary in body for body in responses), "a credential reached a response"
  '';
}
