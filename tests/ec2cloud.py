"""moto's EC2 server (a third party's implementation of EC2's Query API) on loopback, with
signature checking enforced, for the ec2 pack's tests and recordings.

moto lets the first INITIAL_NO_AUTH_ACTION_COUNT requests through unchecked (moto/settings.py,
moto/core/authorization.py); we spend them on IAM CreateUser, PutUserPolicy (ec2:*) and
CreateAccessKey. From then on moto recomputes every request's SigV4 signature with the user's
secret (moto/iam/access_control.py) and answers 401 AuthFailure to a wrong one.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse

import requests

from cpfmap.http.signing import AwsCredentials, host_of, sigv4_headers

NO_AUTH = 3   # the IAM calls below
REGION = "us-east-1"
EC2_VERSION = "2016-11-15"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServedEc2:
    """`python -m moto.server` on 127.0.0.1:<free port>; the IAM user `ras` and its key."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(NO_AUTH), MOTO_PORT=str(self.port))
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self._wait_up()
            self.access_key, self.secret_key = self._make_user()
        except BaseException:
            self.stop()
            raise

    def _wait_up(self, deadline: float = 30.0) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError("moto.server exited")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"moto.server did not listen on port {self.port} within {deadline}s")

    def _make_user(self) -> tuple[str, str]:
        anyone = AwsCredentials("AKIDEXAMPLE", "x" * 40, REGION, "iam")
        iam = {"Version": "2010-05-08"}
        self.call({**iam, "Action": "CreateUser", "UserName": "ras"}, anyone)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]}
        self.call({**iam, "Action": "PutUserPolicy", "UserName": "ras", "PolicyName": "ras-ec2",
                   "PolicyDocument": json.dumps(policy)}, anyone)
        text = self.call({**iam, "Action": "CreateAccessKey", "UserName": "ras"}, anyone)
        key = re.search(r"<AccessKeyId>([^<]+)</AccessKeyId>", text).group(1)
        secret = re.search(r"<SecretAccessKey>([^<]+)</SecretAccessKey>", text).group(1)
        return key, secret

    @property
    def credentials(self) -> AwsCredentials:
        return AwsCredentials(self.access_key, self.secret_key, REGION, "ec2")

    def call(self, params: dict, creds: AwsCredentials | None = None, expect: int = 200) -> str:
        """One signed POST; the reply's text (an unexpected status is an error)."""
        creds = creds or self.credentials
        body = urllib.parse.urlencode(params).encode()
        headers = [("Host", host_of(self.url + "/")), ("Content-Type", "application/x-www-form-urlencoded")]
        amz = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        headers += sigv4_headers("POST", self.url + "/", headers, body, creds, amz)
        reply = requests.post(self.url + "/", data=body, headers=dict(headers), timeout=30)
        if reply.status_code != expect:
            raise AssertionError(f"{params.get('Action')}: HTTP {reply.status_code}: {reply.text[:300]}")
        return reply.text

    def ec2(self, action: str, **params: str) -> str:
        return self.call({"Action": action, "Version": EC2_VERSION, **params})

    def ami(self) -> str:
        text = self.ec2("DescribeImages", **{"Owner.1": "amazon"})
        return re.search(r"<imageId>(ami-[0-9a-f]+)</imageId>", text).group(1)

    def run(self, name: str, count: int = 1) -> list[str]:
        """Boot `count` instances named `name` (Name tag); their ids."""
        text = self.ec2("RunInstances", ImageId=self.ami(), MinCount=str(count), MaxCount=str(count),
                        InstanceType="t3.micro", **{"TagSpecification.1.ResourceType": "instance",
                                                    "TagSpecification.1.Tag.1.Key": "Name",
                                                    "TagSpecification.1.Tag.1.Value": name})
        return re.findall(r"<instanceId>(i-[0-9a-f]+)</instanceId>", text)

    def settings(self, **overrides: str) -> dict:
        values = {"region": REGION, "endpoint": self.url, "access_key": self.access_key,
                  "secret_key": self.secret_key}
        values.update(overrides)
        return values

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
