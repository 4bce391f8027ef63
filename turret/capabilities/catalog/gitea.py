"""Gitea API v1 (`/api/v1`), with an access token as bearer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from turret.capabilities.catalog._build import capability, fields
from turret.model import Capability, Param, Template

if TYPE_CHECKING:
    from turret.model import Service

REPO = r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}"


def capabilities(service: Service) -> list[Capability]:
    """create_issue(repo, title, body) and comment(repo, index, body)."""
    repo = Param("repo", "string", "Repository as owner/name", pattern=REPO, segments=2)
    return [
        capability(
            service,
            "gitea",
            "create_issue",
            description="Open an issue in a Gitea repository.",
            params=(
                repo,
                Param("title", "string", "Issue title", max_length=255),
                Param("body", "string", "Issue text (Markdown)", required=False, max_length=65536),
            ),
            request=Template(
                "POST",
                "/api/v1/repos/{repo}/issues",
                body_kind="json",
                body={"title": "{title}", "body": "{body}"},
            ),
            result=fields(number="number", html_url="html_url"),
        ),
        capability(
            service,
            "gitea",
            "comment",
            description="Comment on an issue or pull request in a Gitea repository.",
            params=(
                repo,
                Param("index", "integer", "Issue or pull request number", minimum=1),
                Param("body", "string", "Comment text (Markdown)", max_length=65536),
            ),
            request=Template(
                "POST",
                "/api/v1/repos/{repo}/issues/{index}/comments",
                body_kind="json",
                body={"body": "{body}"},
            ),
            result=fields(id="id", html_url="html_url"),
        ),
    ]
