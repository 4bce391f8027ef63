"""`turret mcp` and human approval: a tool call Turret holds is waited for, with progress
reported through the SDK's progress API, and ends in the call's result, the operator's refusal,
or the bridge's bounded wait running out. The SDK's own client drives a bridge subprocess."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.approval.conftest import Desk, close_desk, open_desk
from tests.gateway import Canaries
from tests.mcp.conftest import ROOT, Recorder, recorded

CALL = {"repo": "infra", "index": 7}


@pytest.fixture
async def desk(leak_check: Canaries) -> AsyncIterator[Desk]:
    tmp = Path(tempfile.mkdtemp(prefix="turret-mcp-apr-"))
    d = await open_desk(tmp, leak_check)
    yield d
    await close_desk(d)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def rec(desk: Desk) -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    desk.creds.assert_absent(("MCP text", t) for t in [recorder.stderr_text(), *recorder.messages])
    recorder.stderr.close()


def bridge(desk: Desk, rec: Recorder, *extra: str) -> Any:
    """A recorded stdio transport to `turret mcp` holding ops/alice's token."""
    assert desk.gw is not None
    url = str(desk.gw.client.make_url("")).rstrip("/")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "turret", "mcp", "--url", url, "--poll", "0", *extra],
        env={"TURRET_TOKEN": desk.tokens["ops/alice"]},
        cwd=ROOT,
    )
    return recorded(stdio_client(params, errlog=rec.stderr), rec)


async def pending_id(desk: Desk) -> str:
    """The id of the approval the bridge's call is waiting on, once it exists."""
    assert desk.state is not None
    with anyio.fail_after(20):
        while not desk.state.approvals.pending():  # noqa: ASYNC110 - the bridge is another process
            await anyio.sleep(0.02)
    return desk.state.approvals.pending()[0].id


async def test_mcp_waits_for_approval_with_progress_then_returns_the_result(
    desk: Desk, rec: Recorder
) -> None:
    progressed = anyio.Event()
    reports: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append((progress, total, message))
        progressed.set()

    async with Client(bridge(desk, rec), cache=None) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert "waits for a person's approval" in (tools["git__close_issue"].description or "")
        result: list[Any] = []

        async def call() -> None:
            result.append(
                await client.call_tool("git__close_issue", CALL, progress_callback=on_progress)
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            approval_id = await pending_id(desk)
            with anyio.fail_after(30):
                await progressed.wait()  # still waiting, and saying so
            assert desk.upstream("gitea") == 0
            assert (await desk.approve(approval_id))[0] == 200
    [done] = result
    assert not done.is_error, done
    assert done.structured_content == {"number": 7, "state": "closed"}
    assert desk.upstream("gitea") == 1
    progress, total, message = reports[0]
    assert total == 900.0 and 0 < progress < total and approval_id in (message or "")


async def test_mcp_denied_call_is_a_tool_error_with_the_reason(desk: Desk, rec: Recorder) -> None:
    async with Client(bridge(desk, rec), cache=None) as client:
        result: list[Any] = []

        async def call() -> None:
            result.append(await client.call_tool("git__close_issue", CALL))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            approval_id = await pending_id(desk)
            denied = await desk.admin(
                "POST", f"/v1/admin/approvals/{approval_id}/deny", {"reason": "freeze"}
            )
            assert denied[0] == 200
    [refused] = result
    assert refused.is_error
    assert refused.structured_content["error"]["code"] == "approval_denied"
    assert "freeze" in refused.content[0].text
    assert desk.upstream("gitea") == 0


async def test_mcp_wait_is_bounded(desk: Desk, rec: Recorder) -> None:
    async with Client(bridge(desk, rec, "--approval-wait", "1"), cache=None) as client:
        result = await client.call_tool("git__close_issue", CALL)
    assert result.is_error
    error = result.structured_content["error"]
    assert error["code"] == "approval_pending" and error["approval_id"].startswith("apr_")
    assert desk.upstream("gitea") == 0


async def test_mcp_expired_call_is_a_tool_error(desk: Desk, rec: Recorder) -> None:
    async with Client(bridge(desk, rec), cache=None) as client:
        result: list[Any] = []

        async def call() -> None:
            result.append(await client.call_tool("git__close_issue", CALL))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await pending_id(desk)
            desk.clock.offset = 15 * 60  # the approval's ttl has passed
    [expired] = result
    assert expired.is_error
    assert expired.structured_content["error"]["code"] == "approval_expired"
    assert desk.upstream("gitea") == 0
