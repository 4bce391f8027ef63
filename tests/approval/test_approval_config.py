"""The config of human approval (`approval:` on a grant, top-level `approvals:`), and the
policy's decision on a call that needs it (pure, no server)."""

from __future__ import annotations

import pytest

from tests.approval.conftest import APPROVAL_CONFIG
from tests.capabilities.conftest import AGENTS, capability_config
from turret.approval import (
    APPROVAL_ID,
    call_hash,
    new_approval_id,
    wait_seconds,
)
from turret.auth import TOKEN_PREFIX
from turret.config import load_config
from turret.errors import ConfigError
from turret.model import CapabilityAction, Config
from turret.policy import Result, decide
from turret.principal import Principal

URLS = {k: f"http://127.0.0.1:{9000 + i}" for i, k in enumerate(
    ("matrix", "qbittorrent", "proxmox", "gitea", "ntfy", "homeassistant"))}  # fmt: skip
TOKENS = {a: f"turret_{'x' * 40}{i:03d}" for i, a in enumerate(AGENTS)}


def config(extra: str = APPROVAL_CONFIG) -> Config:
    return load_config(capability_config(URLS, TOKENS, extra))


def errors(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(extra)
    return [f"{i.path}: {i.message}" for i in info.value.issues]


def decision(cfg: Config, agent: str, capability: str, **params: object) -> Result:
    cap = cfg.capabilities[capability]
    action = CapabilityAction(cap, params)  # type: ignore[arg-type]
    return decide(Principal(cfg.agents[agent]), action, cfg.services).result


def test_approval_config_reads_grants_and_settings() -> None:
    cfg = config()
    assert cfg.approvals.ttl == 900 and cfg.approvals.notify == "push.publish"
    assert cfg.approvals.notify_params == (("topic", "ops"),)
    [group] = [g for g in cfg.groups.values() if g.name == "approvers"]
    close, note = group.capabilities
    assert close.approval is not None and close.approval.when is None
    assert note.approval is not None and note.approval.when is not None
    assert load_config(capability_config(URLS, TOKENS)).approvals.notify is None


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ("approvals: {ttl: 5s}\n", "approvals.ttl"),
        ("approvals: {ttl: forever}\n", "approvals.ttl"),
        ("approvals: {ttl: 30d}\n", "approvals.ttl"),
        ("approvals: {other: 1}\n", "approvals.other"),
        ("approvals: {notify: {capability: nope.publish}}\n", "approvals.notify.capability"),
        # git.close_issue has no `message` to put the notice in
        ("approvals: {notify: {capability: git.close_issue}}\n", "approvals.notify.capability"),
        ("approvals: {notify: {capability: push.publish}}\n", "approvals.notify.params"),
        ("approvals: {notify: {capability: push.publish, params: {topic: 'a b'}}}\n",
         "approvals.notify.params"),
        ("approvals: {notify: {capability: push.publish, params: {topic: ops, message: x}}}\n",
         "approvals.notify.params"),
        ("approvals: {notify: {capability: push.publish, params: {topic: ops, nope: 1}}}\n",
         "approvals.notify.params"),
        ("approvals: [1]\n", "approvals"),
    ],
)  # fmt: skip
def test_approval_config_rejects_bad_settings(extra: str, where: str) -> None:
    assert any(e.startswith(where + ":") for e in errors(extra)), errors(extra)


@pytest.mark.parametrize(
    ("approval", "problem"),
    [
        ("always", "must be 'required'"),
        ("{}", "missing required key 'when'"),
        ("{when: {}}", "at least one parameter"),
        ("{when: {nope: {one_of: [a]}}}", "has no parameter 'nope'"),
        ("{when: {repo: {minimum: 1}}}", "applies to numbers only"),
        ("{when: {repo: {one_of: [a]}}, also: 1}", "unknown key"),
        ("true", "must be 'required'"),
    ],
)
def test_approval_config_rejects_bad_grant_approval(approval: str, problem: str) -> None:
    extra = f"  bad:\n    agents: [nobody]\n    capabilities:\n      - name: git.close_issue\n" \
        f"        approval: {approval}\n"  # fmt: skip
    found = errors(extra)
    assert any(problem in e and "groups.bad.capabilities[0].approval" in e for e in found), found


def test_approval_policy_holds_what_the_grant_says() -> None:
    cfg = config()
    assert decision(cfg, "ops/alice", "git.close_issue", repo="x", index=1) is Result.APPROVAL
    assert decision(cfg, "ops/alice", "push.note", text="prod: go") is Result.APPROVAL
    assert decision(cfg, "ops/alice", "push.note", text="staging") is Result.ALLOW
    assert decision(cfg, "opencode", "git.close_issue", repo="x", index=1) is Result.ALLOW
    assert decision(cfg, "nobody", "git.close_issue", repo="x", index=1) is Result.DENY


def test_approval_policy_grants_add_up_whatever_their_order() -> None:
    # opencode's own grant (git.*) allows outright; a group's grant with approval does not
    # take that away, whichever comes first.
    extra = "  held:\n    agents: [opencode]\n    capabilities:\n" \
        "      - {name: git.close_issue, approval: required}\n"  # fmt: skip
    cfg = config(extra)
    assert decision(cfg, "opencode", "git.close_issue", repo="x", index=1) is Result.ALLOW


def test_approval_policy_missing_when_parameter_still_needs_approval() -> None:
    extra = (
        "  held:\n    agents: [nobody]\n    capabilities:\n      - name: push.publish\n"
        "        approval: {when: {title: {prefix: prod}}}\n"
    )
    cfg = config(extra)
    assert decision(cfg, "nobody", "push.publish", topic="t", message="m") is Result.APPROVAL
    held = decision(cfg, "nobody", "push.publish", topic="t", message="m", title="prod db")
    assert held is Result.APPROVAL
    assert decision(cfg, "nobody", "push.publish", topic="t", message="m", title="dev") is (
        Result.ALLOW
    )


def test_approval_policy_deny_rule_wins_over_approval() -> None:
    extra = "  held:\n    agents: [nobody]\n    capabilities:\n" \
        "      - {name: git.close_issue, approval: required}\n    deny:\n" \
        "      - name: git.close_issue\n"  # fmt: skip
    assert decision(config(extra), "nobody", "git.close_issue", repo="x", index=1) is Result.DENY


def test_approval_ids_are_unguessable_and_never_token_shaped() -> None:
    ids = {new_approval_id() for _ in range(200)}
    assert len(ids) == 200
    for approval_id in ids:
        assert APPROVAL_ID.fullmatch(approval_id)
        assert TOKEN_PREFIX not in approval_id and len(approval_id) != len(TOKENS["opencode"])


def test_approval_call_hash_binds_every_part_of_the_call() -> None:
    base = call_hash("alice", None, "git.close_issue", {"repo": "a", "index": 1})
    variants = [
        call_hash("bob", None, "git.close_issue", {"repo": "a", "index": 1}),
        call_hash("alice", "tok_1", "git.close_issue", {"repo": "a", "index": 1}),
        call_hash("alice", None, "git.comment", {"repo": "a", "index": 1}),
        call_hash("alice", None, "git.close_issue", {"repo": "a", "index": 2}),
        call_hash("alice", None, "git.close_issue", {"repo": "a", "index": True}),
        call_hash("alice", None, "git.close_issue", {"repo": "a", "index": 1, "x": "y"}),
        call_hash("alice", None, "git.close_issue", {"repo": "a"}),
    ]
    assert base not in variants and len(set(variants)) == len(variants)
    assert base == call_hash("alice", None, "git.close_issue", {"index": 1, "repo": "a"})


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(None, 0.0), ("0", 0.0), ("5", 5.0), ("60", 60.0), ("600", 60.0), ("-1", None),
     ("1.5", None), ("", None), ("٣", None), ("1" * 7, None)],
)  # fmt: skip
def test_approval_wait_seconds(raw: str | None, seconds: float | None) -> None:
    assert wait_seconds(raw) == seconds
