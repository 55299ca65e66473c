"""A DVC remote in a local folder: push after a run; a fresh clone pulls and has nothing to run."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import Project, run
from tests.conftest import copy_of, tiny_base


def lock_outs(project: Project) -> dict[str, str]:
    """Every output file in dvc.lock and its md5 (directories excluded: none here)."""
    lock = yaml.safe_load((project.path / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for stage in lock["stages"].values()
            for o in stage.get("outs", []) if not o["md5"].endswith(".dir")}


@pytest.mark.slow
def test_push_then_a_fresh_clone_pulls_everything_and_reruns_nothing(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> None:
    origin = copy_of(tiny_base(tmp_path_factory, mnist_dir), tmp_path / "origin", mnist_dir)
    storage = tmp_path / "dvc-storage"
    # One person's remote: a local folder, the default remote, committed in .dvc/config.
    origin.dvc("remote", "add", "-d", "local", str(storage))
    origin.commit("DVC remote in a local folder")
    origin.dvc("push")
    assert any(p.is_file() for p in storage.rglob("*"))
    assert "in sync" in origin.dvc("status", "--cloud").stdout

    run(["git", "clone", "-q", str(origin.path), str(tmp_path / "clone")], tmp_path)
    clone = Project(tmp_path / "clone", mnist_dir)
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
