"""Config validation of services' kinds, capabilities, grants, deny rules and groups."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from turret.authkinds import LoginAuth, credential_uses
from turret.cli import main
from turret.config import load_config
from turret.errors import ConfigError

TOKEN = "a" * 64
BASE = f"""services:
  qbit:
    kind: qbittorrent
    url: http://127.0.0.1:8080
    auth: {{login: {{username: admin, password: {{credential: qbit-password}}}}}}
  pve:
    kind: proxmox
    url: https://pve.lan:8006
    node: pve1
    auth: {{header: {{name: Authorization, prefix: "PVEAPIToken=", value: pve-token}}}}
  git:
    url: https://git.example.org
    auth: {{bearer: gitea-token}}
agents:
  a:
    token_sha256: {TOKEN}
"""


def _issues(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(text)
    return [(i.path, i.line, i.message) for i in info.value.issues]


def test_config_issue_example_loads() -> None:
    config = load_config(
        BASE
        + """    capabilities:
      - name: pve.pct_status
        params: {ctid: {minimum: 100}}
      - "qbit.*"
    deny:
      - name: qbit.add_torrent
    report: true
capabilities:
  git.close_issue:
    service: git
    description: Close an issue in one of my repositories
    params:
      repo: {type: string, pattern: "^[a-z0-9-]+$"}
      index: {type: integer, minimum: 1}
    request: {method: PATCH, path: "/api/v1/repos/me/{repo}/issues/{index}", json: {state: closed}}
    result: [number, state]
  pve.pct_status:
    log_params: [ctid]
groups:
  ops:
    agents: ["ops/*", a]
    capabilities: [{name: "qbit.*", params: {category: {one_of: [linux-isos]}}}]
    proxy: [{service: git, methods: [GET], paths: ["/api/v1/user"]}]
audit:
  params_key: params-key
"""
    )
    assert isinstance(config.services["qbit"].auth, LoginAuth)
    assert config.services["pve"].node == "pve1"
    assert set(config.capabilities) == {
        "qbit.add_torrent",
        "qbit.list_torrents",
        "pve.pct_status",
        "pve.qemu_status",
        "git.close_issue",
    }
    assert config.capabilities["pve.pct_status"].log_params == ("ctid",)
    agent = config.agents["a"]
    assert agent.report and [g.name for g in agent.groups] == ["ops"]
    assert agent.capabilities[1].rule == "agents.a.capabilities[1]"
    assert credential_uses(config) == {
        "qbit-password": "value",
        "pve-token": "header",
        "gitea-token": "header",
        "params-key": "value",
    }


def _cap(body: str) -> str:
    return BASE + "capabilities:\n  git.x:\n" + body


SD = "    service: git\n    description: d\n"
GOOD_REQUEST = '    request: {method: GET, path: "/a/{p}"}\n'


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (BASE.replace("kind: proxmox", "kind: pve"), "services.pve.kind", "must be one of"),
        (
            BASE.replace("kind: qbittorrent", "kind: gitea"),
            "services.qbit.auth",
            "kind: qbittorrent",
        ),
        (BASE.replace("kind: proxmox", "kind: gitea"), "services.pve.node", "kind: proxmox"),
        (
            BASE.replace("  git:\n", "  git:\n    colour: red\n"),
            "services.git.colour",
            "unknown key",
        ),
        (
            BASE + "capabilities:\n  gitx.y:\n    service: git\n    description: d\n"
            "    request: {method: GET, path: /}\n",
            "capabilities.gitx.y",
            "named git.<action>",
        ),
        (
            _cap("    service: nope\n    description: d\n    request: {method: GET, path: /}\n"),
            "capabilities.git.x.service",
            "undefined service",
        ),
        (
            _cap(SD + "    params: {p: {type: str}}\n" + GOOD_REQUEST),
            "capabilities.git.x.params.p.type",
            "must be one of",
        ),
        (
            _cap(SD + "    params: {p: {type: string, pattern: '('}}\n" + GOOD_REQUEST),
            "capabilities.git.x.params.p.pattern",
            "not a valid regular expression",
        ),
        (
            _cap(SD + "    params: {p: {type: integer, maximum: 5, default: 9}}\n" + GOOD_REQUEST),
            "capabilities.git.x.params.p.default",
            "a value the parameter accepts",
        ),
        (
            _cap(SD + "    params: {p: {type: integer, max_length: 3}}\n" + GOOD_REQUEST),
            "capabilities.git.x.params.p.max_length",
            "strings only",
        ),
        (
            _cap(SD + "    request: {method: GET, path: '/a/{q}'}\n"),
            "capabilities.git.x.request.path",
            "{q} names no parameter",
        ),
        (
            _cap(SD + "    params: {p: {type: string, required: false}}\n" + GOOD_REQUEST),
            "capabilities.git.x.request.path",
            "must be a required parameter",
        ),
        (
            _cap(SD + "    params: {p: {type: string}}\n    request: {method: GET, path: /a}\n"),
            "capabilities.git.x.params.p",
            "not used by the request",
        ),
        (
            _cap(SD + "    request: {method: GET, path: /a, headers: {Authorization: x}}\n"),
            "capabilities.git.x.request.headers.Authorization",
            "Turret's to set",
        ),
        (
            _cap(SD + "    request: {method: GET, path: /a/../b}\n"),
            "capabilities.git.x.request.path",
            "dot segment",
        ),
        (
            _cap(SD + "    request: {method: GET, path: /a, json: {}, form: {}}\n"),
            "capabilities.git.x.request",
            "at most one of",
        ),
        (
            _cap(SD + "    request: {method: GET, path: /a}\n    result: ['a..b']\n"),
            "capabilities.git.x.result.a..b",
            "dotted path",
        ),
        (
            _cap(SD + "    request: {method: GET, path: /a}\n    log_params: [nope]\n"),
            "capabilities.git.x.log_params[0]",
            "names no parameter",
        ),
        (
            _cap(SD + "    request: {method: GET, path: /a}\n    x: 1\n"),
            "capabilities.git.x.x",
            "unknown key",
        ),
        (
            BASE + "capabilities:\n  pve.pct_status:\n    description: mine\n",
            "capabilities.pve.pct_status.description",
            "unknown key",
        ),
        (
            BASE + "    capabilities: [nope.*]\n",
            "agents.a.capabilities[0].name",
            "matches no capability",
        ),
        (
            BASE + "    capabilities: [{name: 'pve.*', params: {ctid: {minimum: 1}}}]\n",
            "agents.a.capabilities[0].params.ctid",
            "has no parameter 'ctid'",
        ),
        (
            BASE + "    capabilities: [{name: pve.pct_status, params: {node: {minimum: 1}}}]\n",
            "agents.a.capabilities[0].params.node.minimum",
            "numbers only",
        ),
        (
            BASE + "    capabilities: [{name: pve.pct_status, params: {ctid: {}}}]\n",
            "agents.a.capabilities[0].params.ctid",
            "needs at least one of",
        ),
        (
            BASE + "    capabilities: [{name: pve.pct_status, params: {ctid: {one_of: ['1']}}}]\n",
            "agents.a.capabilities[0].params.ctid.one_of",
            "integer values",
        ),
        (BASE + "    deny: [{name: 'x.*'}]\n", "agents.a.deny[0].name", "matches no capability"),
        (
            BASE + "    deny: [{service: nope, methods: [GET], paths: [/]}]\n",
            "agents.a.deny[0].service",
            "undefined service",
        ),
        (BASE + "    report: yes please\n", "agents.a.report", "true or false"),
        (BASE + "groups:\n  ops:\n    agents: ['OPS/*']\n", "groups.ops.agents[0]", "glob"),
        (
            BASE + "groups:\n  ops:\n    capabilities: []\n",
            "groups.ops",
            "missing required key 'agents'",
        ),
        (BASE + "audit:\n  params_key: 'a/b'\n", "audit.params_key", "must match"),
    ],
)
def test_config_rejects_bad_capability_settings(text: str, path: str, message: str) -> None:
    issues = _issues(text)
    matching = [i for i in issues if i[0] == path and message in i[2]]
    assert matching, issues
    assert matching[0][1] is not None  # located by line


def test_check_config_reports_capability_errors_with_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "turret.yaml"
    bad.write_text(
        _cap(SD + "    request: {method: GET, path: '/a/{q}'}\n")
        + "groups:\n  ops:\n    agents: [x]\n    capabilities: [git.nothing]\n"
    )
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:line 21: capabilities.git.x.request.path: {{q}} names no parameter" in err
    assert "groups.ops.capabilities[0].name: 'git.nothing' matches no capability" in err
    good = tmp_path / "good.yaml"
    good.write_text(BASE + "    capabilities: ['pve.*']\n")
    assert main(["check-config", str(good)]) == 0


def test_readme_capability_examples_load_together() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("\n## Capabilities")
    section = readme[start : readme.index("\n## ", start + 1)]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 3, "README: services, a capability and a policy example"
    config = load_config("".join(blocks).replace("token_sha256: ...", f"token_sha256: {TOKEN}"))
    assert "gitea.close_issue" in config.capabilities
    assert config.capabilities["matrix.send_message"].log_params == ("room_id",)
    assert config.agents["media-bot"].report
    assert [g.name for g in config.agents["media-bot"].groups] == ["downloaders"]
