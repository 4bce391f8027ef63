"""One HTTP request for the end-to-end test, made from the container's network namespace.

Usage: http_get.py TARGET METHOD PATH, where TARGET is HOST:PORT or a unix socket path. The agent
token comes in E2E_TOKEN (not argv). Prints {"status": ..., "body": ...} as JSON; a connection
that fails prints {"error": ...}. Standard library only, so that it starts fast.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("turret", timeout=60)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(self.path)


def main(target: str, method: str, path: str) -> dict[str, object]:
    if target.startswith("/"):
        conn: http.client.HTTPConnection = UnixConnection(target)
    else:
        host, _, port = target.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {}
    if os.environ.get("E2E_TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["E2E_TOKEN"]
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        body = resp.read().decode()
    except OSError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()
    return {"status": resp.status, "body": json.loads(body), "headers": dict(resp.headers)}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))  # noqa: T201 - the test reads stdout
