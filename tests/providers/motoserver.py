"""moto in server mode: a real subprocess speaking AWS's wire protocols on loopback.

`MotoServer.start()` runs `moto_server -p 0` and reads the port it bound from its own start-up
line (no port is guessed, nothing sleeps). `bootstrap()` creates, while moto still accepts
unsigned calls, an administrator (for the tests' own set-up through botocore) and a source user
that may only call `sts:AssumeRole`; then it turns IAM authentication on, so from there every
call, Turret's included, must carry a valid SigV4 signature from a key moto issued.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session

ACCOUNT = "123456789012"
REGION = "us-east-1"
ROLE_NAME = "turret-role"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}"
_START_TIMEOUT = 30.0

TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/turret-source"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def _policy(action: str | list[str]) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}],
        }
    )


@dataclass
class Keys:
    """An access key pair moto issued."""

    access_key_id: str
    secret_access_key: str


@dataclass
class MotoServer:
    """One moto server process for the session."""

    process: subprocess.Popen[bytes]
    url: str
    admin: Keys | None = None
    source: Keys | None = None
    log: list[str] = field(default_factory=list)

    @classmethod
    def start(cls) -> MotoServer:
        """Start moto on a free loopback port and return once it listens."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        process = subprocess.Popen(  # noqa: S603 - our own argv, no shell
            [binary(), "-H", "127.0.0.1", "-p", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        log: list[str] = []
        ready = threading.Event()
        port: list[str] = []

        def drain() -> None:
            # Werkzeug prints " * Running on http://127.0.0.1:PORT" once the socket is bound;
            # the rest (one line per request) is kept so a failing test can show it.
            assert process.stderr is not None
            for raw in process.stderr:
                line = raw.decode("utf-8", "replace")
                log.append(line)
                if not port and "Running on http://" in line:
                    port.append(line.rsplit(":", 1)[1].strip())
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(_START_TIMEOUT) or not port:
            process.kill()
            process.wait()
            raise RuntimeError("moto_server did not start: " + "".join(log[-20:]))
        return cls(process, f"http://127.0.0.1:{port[0]}", log=log)

    def stop(self) -> None:
        """End the process and wait for it."""
        self.process.terminate()
        self.process.wait(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()

    def client(self, service: str, keys: Keys | None = None) -> Any:
        """A botocore client for `service` on this server, signed with `keys` (the admin's)."""
        keys = keys or self.admin
        return botocore.session.get_session().create_client(
            service,
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id=keys.access_key_id if keys else "testing",
            aws_secret_access_key=keys.secret_access_key if keys else "testing",
        )

    def _post(self, path: str, data: bytes) -> bytes:
        # Not a form: werkzeug would parse one and leave moto an empty body.
        request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 only
            self.url + path, data=data, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (loopback)
            return bytes(answer.read())

    def bootstrap(self) -> None:
        """Users, keys and the role; then IAM authentication on for every later call."""
        iam = self.client("iam")
        for user, action in (("turret-admin", "*"), ("turret-source", "sts:AssumeRole")):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=_policy(action))
        self.admin = _keys(iam.create_access_key(UserName="turret-admin"))
        self.source = _keys(iam.create_access_key(UserName="turret-source"))
        iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(TRUST))
        iam.put_role_policy(
            RoleName=ROLE_NAME, PolicyName="p", PolicyDocument=_policy(["secretsmanager:*", "s3:*"])
        )
        self._post("/moto-api/reset-auth", b"0")

    def data(self) -> dict[str, Any]:
        """moto's model dump (`/moto-api/data.json`): what the server holds now."""
        with urllib.request.urlopen(self.url + "/moto-api/data.json", timeout=10) as answer:  # noqa: S310
            return dict(json.loads(answer.read()))

    def assumed_roles(self) -> list[dict[str, Any]]:
        """Every STS session moto issued: its keys, session name, policy, expiry."""
        return list(self.data().get("sts", {}).get("AssumedRole", []))


def binary() -> str:
    """The `moto_server` next to this interpreter (a virtualenv's), or the one on PATH; an
    empty string if there is none."""
    beside = Path(sys.executable).with_name("moto_server")
    return str(beside) if beside.is_file() else shutil.which("moto_server") or ""


def _keys(answer: dict[str, Any]) -> Keys:
    key = answer["AccessKey"]
    return Keys(key["AccessKeyId"], key["SecretAccessKey"])
