"""Pure parts, tested synchronously: templates, schemas, projection, policy."""

from __future__ import annotations

import pytest

from turret.capabilities.engine import redact_json
from turret.capabilities.projection import project
from turret.capabilities.schema import capability_schema, narrowed, validate_params
from turret.capabilities.strictjson import parse_object, searchable, shown_key
from turret.capabilities.template import build_request
from turret.config import load_config
from turret.config.checker import Checker
from turret.config.constraints import read_result
from turret.config.yamlload import Document
from turret.echo import Redactor
from turret.errors import BadRequest, UnprocessableEntity
from turret.model import JSON, Capability, Constraint, Param, Template
from turret.paths import canonical_path
from turret.policy import decide_capability, decide_proxy


def _cap(*params: Param, **request: object) -> Capability:
    template = Template(**{"method": "POST", "path": "/x/{a}", **request})  # type: ignore[arg-type]
    return Capability("svc.act", "svc", "d", params, template)


A = Param("a", "string")


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("plain", "/x/plain"),
        ("a b", "/x/a%20b"),
        ("!room:example.org", "/x/!room:example.org"),
        ("semi;colon", "/x/semi%3Bcolon"),
        ("100%", "/x/100%25"),
        ("café", "/x/caf%C3%A9"),
    ],
)
def test_template_path_value_is_one_encoded_segment(value: str, encoded: str) -> None:
    assert build_request(_cap(A), {"a": value}).path.encoded == encoded


@pytest.mark.parametrize("value", ["a/b", "..", ".", "%2e%2e", "%252e%252e", "a\\b", ""])
def test_template_path_value_cannot_change_the_path(value: str) -> None:
    with pytest.raises(UnprocessableEntity, match=r"^params\.a: cannot be used in the path"):
        build_request(_cap(A), {"a": value})


def test_template_query_form_and_optional_values() -> None:
    b = Param("b", "integer", required=False)
    c = Param("c", "boolean", required=False)
    cap = _cap(
        A,
        b,
        c,
        query=(("q", "{a}"), ("b", "{b}"), ("fixed", "1")),
        body_kind="form",
        body={"c": "{c}", "text": "a={a}"},
    )
    out = build_request(cap, {"a": "x&y=z", "c": True})
    assert out.query == "q=x%26y%3Dz&fixed=1"  # absent optional b left out
    assert out.body == b"c=true&text=a%3Dx%26y%3Dz"
    assert out.headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_template_json_keeps_types_and_drops_absent_optionals() -> None:
    n = Param("n", "integer", required=False)
    cap = _cap(A, n, body_kind="json", body={"a": "{a}", "n": "{n}", "nested": ["{a}", 1]})
    assert build_request(cap, {"a": "x", "n": 3}).body == b'{"a":"x","n":3,"nested":["x",1]}'
    assert build_request(cap, {"a": "x"}).body == b'{"a":"x","nested":["x",1]}'


def test_template_multi_segment_parameter() -> None:
    repo = Param("a", "string", segments=2)
    assert build_request(_cap(repo), {"a": "me/notes"}).path.encoded == "/x/me/notes"
    with pytest.raises(UnprocessableEntity):
        validate_params(_cap(repo), {"a": "me"})


def test_strict_json_accepts_plain_objects() -> None:
    assert parse_object(b'{"a": 1, "b": [1.5, "x", null, true]}') == {
        "a": 1,
        "b": [1.5, "x", None, True],
    }
    with pytest.raises(BadRequest, match="duplicate key"):
        parse_object(b'{"a": {"b": 1, "b": 2}}')
    with pytest.raises(BadRequest, match="larger than"):
        parse_object(b"{}" + b" " * 70000)


def test_schema_narrowing_intersects_and_combines() -> None:
    base = {"type": "string", "enum": ["a", "b", "c"], "maxLength": 10}
    assert narrowed(base, Constraint(one_of=("b", "z"), max_length=20)) == {
        "type": "string",
        "enum": ["b"],
        "maxLength": 10,
    }
    prefixed = narrowed({"type": "string"}, Constraint(prefix="a.b-", pattern="[a-z.-]+"))
    assert prefixed["allOf"] == [{"pattern": "^(?:[a-z.-]+)$"}, {"pattern": "^a\\.b\\-"}]
    cap = _cap(A, Param("n", "integer", minimum=0), body_kind="json", body={"n": "{n}"})
    schema = capability_schema(
        cap, [{"a": Constraint(one_of=("x",))}, {"a": Constraint(one_of=("y",))}, {}]
    )
    assert schema["properties"]["a"] == {"type": "string"}  # one grant leaves it open
    schema = capability_schema(
        cap, [{"a": Constraint(one_of=("x",))}, {"a": Constraint(prefix="y")}]
    )
    assert schema["properties"]["a"]["anyOf"] == [
        {"type": "string", "enum": ["x"]},
        {"type": "string", "allOf": [{"pattern": "^y"}]},
    ]


def test_projection_picks_paths_lists_and_limits() -> None:
    checker = Checker(Document(None))
    spec = read_result(
        checker,
        "result",
        {
            "s": "data.status",
            "first": "items.0.id",
            "ids": {"each": "items", "fields": ["id"], "limit": 2},
        },
    )
    assert not checker.issues and spec
    data: JSON = {
        "data": {"status": "ok", "secret": 1},
        "items": [{"id": 1, "x": 2}, {"id": 2}, {"id": 3}],
    }
    assert project(spec, data) == {"s": "ok", "first": 1, "ids": [{"id": 1}, {"id": 2}]}
    assert project(spec, []) == {"s": None, "first": None, "ids": []}


def test_redact_json_catches_what_json_escapes_hid() -> None:
    redactor = Redactor(["s3cret-value"])
    value, count = redact_json({"k": ["x s3cret-value", {"s3cret-value": 1}], "n": 2}, redactor)
    assert value == {"k": ["x [REDACTED]", {"[REDACTED]": 1}], "n": 2}
    assert count == 2


POLICY = """services:
  git: {url: "https://git.example.org", auth: {bearer: t}, kind: gitea}
agents:
  ops/bob:
    token_sha256: %s
    deny: [{service: git, methods: [DELETE], paths: ["/**"]}]
    capabilities: [{name: git.comment, params: {repo: {prefix: "me/"}}}]
groups:
  ops:
    agents: ["ops/*"]
    proxy: [{service: git, methods: [GET, DELETE], paths: ["/api/**"]}]
    capabilities: [{name: "git.*", params: {repo: {one_of: [team/x]}}}]
    deny: [{name: git.create_issue}]
""" % ("b" * 64)


def test_policy_groups_deny_and_first_matching_grant() -> None:
    agent = load_config(POLICY).agents["ops/bob"]
    config = load_config(POLICY)
    comment = config.capabilities["git.comment"]
    mine = decide_capability(agent, comment, {"repo": "me/x", "index": 1, "body": "b"})
    assert (mine.allowed, mine.rule) == (True, "agents.ops/bob.capabilities[0]")
    team = decide_capability(agent, comment, {"repo": "team/x", "index": 1, "body": "b"})
    assert (team.allowed, team.rule) == (True, "groups.ops.capabilities[0]")
    other = decide_capability(agent, comment, {"repo": "x/y", "index": 1, "body": "b"})
    assert not other.allowed and other.rule == "agents.ops/bob.capabilities[0]"
    create = decide_capability(agent, config.capabilities["git.create_issue"], {"repo": "team/x"})
    assert (create.allowed, create.rule) == (False, "groups.ops.deny[0]")
    path = canonical_path("/api/v1/x")
    get = decide_proxy(agent, "git", "GET", path)
    assert (get.allowed, get.rule) == (True, "groups.ops.proxy[0]")
    delete = decide_proxy(agent, "git", "DELETE", path)
    assert (delete.allowed, delete.rule) == (False, "agents.ops/bob.deny[0]")


@pytest.mark.parametrize(
    ("body", "decoded"),
    [
        (b'{"a": "plain"}', None),  # nothing escaped: searched as it is
        (b'{"\\u0074ok": 1}', '{"tok": 1}'),
        (b'"\\\\u0074"', '"\\u0074"'),  # an escaped backslash, then text
        (b'"\\ud83d\\ude00 \\n\\/"', '"\U0001f600 \n/"'),  # a surrogate pair is joined
        (b'{"\\u0074', '{"t'),  # not JSON, searched all the same
    ],
)
def test_searchable_adds_the_decoded_body(body: bytes, decoded: str | None) -> None:
    expected = body if decoded is None else body + b"\n" + decoded.encode()
    assert searchable(body) == expected


def test_shown_key_is_whole_or_not_at_all() -> None:
    assert shown_key("Ctid") == "'Ctid'"
    assert shown_key("\u00e9") == "'\\\\xe9'"
    assert shown_key("k" * 65) == "of 65 characters"
