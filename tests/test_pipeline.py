"""The real DVC CLI on a temporary copy of the project."""
from __future__ import annotations

import yaml

from tests.conftest import Project


def lock(project: Project) -> dict:
    return yaml.safe_load((project.path / "dvc.lock").read_text())


def test_repro_fetch_then_nothing_to_do(project: Project, serve, mnist_dir) -> None:
    out = project.dvc("repro", "fetch").stdout
    assert "Running stage 'fetch'" in out
    assert (project.path / "data/mnist.npz").exists()
    assert "up to date" in project.dvc("status").stdout
    again = project.dvc("repro", "fetch").stdout
    assert "Running stage" not in again and "didn't change, skipping" in again
    md5 = lock(project)["stages"]["fetch"]["outs"][0]["md5"]

    # Where the files come from does not change the output: force a run from HTTP.
    env = dict(project.env, MNIST_MIRROR=serve(mnist_dir).url)
    project.dvc("repro", "-f", "fetch", env=env)
    assert lock(project)["stages"]["fetch"]["outs"][0]["md5"] == md5
