"""The real DVC CLI on a temporary copy of the project."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import Project, copy_of, tiny_base


def lock(project: Project) -> dict:
    return yaml.safe_load((project.path / "dvc.lock").read_text())


def test_repro_fetch_then_nothing_to_do(project: Project, serve, mnist_dir) -> None:
    out = project.dvc("repro", "fetch").stdout
    assert "Running stage 'fetch'" in out
    assert (project.path / "data/mnist.npz").exists()
    assert "up to date" in project.dvc("status", "fetch").stdout
    again = project.dvc("repro", "fetch").stdout
    assert "Running stage" not in again and "didn't change, skipping" in again
    md5 = lock(project)["stages"]["fetch"]["outs"][0]["md5"]

    # Where the files come from does not change the output: force a run from HTTP.
    env = dict(project.env, MNIST_MIRROR=serve(mnist_dir).url)
    project.dvc("repro", "-f", "fetch", env=env)
    assert lock(project)["stages"]["fetch"]["outs"][0]["md5"] == md5


# --- the whole pipeline, tiny ----------------------------------------------------------



@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Project:
    """A copy of the session's tiny project (tiny params, fully reproduced, committed)."""
    return copy_of(tiny_base(tmp_path_factory, mnist_dir), tmp_path_factory.mktemp("tiny") / "project", mnist_dir)


def would_run(project: Project, changes: dict) -> set[str]:
    """The stages `dvc repro --dry` would run after ``changes`` to params.yaml (then restored)."""
    project.set_params(changes)
    try:
        out = project.dvc("repro", "--dry").stdout
    finally:
        project.git("checkout", "params.yaml")
    return set(re.findall(r"Running stage '([^']+)'", out))


@pytest.mark.slow
def test_tiny_pipeline_produces_every_declared_output(tiny: Project) -> None:
    stages = lock(tiny)["stages"]
    expected = {"fetch", "train_ae", "train_vae", "train_cvae", "train_classifier", "plot_samples", "compare",
                "beta_vae@2", "plot_beta_sweep",
                *(f"{s}@{m}" for s in ("encode", "generate", "plot", "evaluate") for m in ("ae", "vae", "cvae"))}
    assert expected <= set(stages)
    for name, stage in stages.items():
        for out in stage.get("outs", []):
            assert (tiny.path / out["path"]).is_file(), f"{name}: {out['path']} missing"
    for png in (tiny.path / "artifacts").rglob("*.png"):
        assert png.stat().st_size < 500_000, png
    assert "up to date" in tiny.dvc("status").stdout
    # Committed for review: metrics, history and figures; cached, so git-ignored: models and arrays.
    tracked = tiny.git("ls-files", "artifacts").stdout.split()
    assert "artifacts/vae/metrics.json" in tracked and "artifacts/ae/manifold.png" in tracked
    assert not [t for t in tracked if t.endswith((".keras", ".npz", ".npy"))]


@pytest.mark.slow
@pytest.mark.parametrize("changes, allowed", [
    ({"plot": {"dpi": 80}}, {"plot@ae", "plot@vae", "plot@cvae", "plot_samples", "plot_beta_sweep"}),
    ({"plot": {"samples": {"seed": 1}}}, {"plot_samples"}),
    ({"vae": {"beta": 0.5}}, {"train_vae", "encode@vae", "generate@vae", "plot@vae", "evaluate@vae", "compare"}),
    ({"ae": {"epochs": 2}}, {"train_ae", "encode@ae", "generate@ae", "plot@ae", "evaluate@ae", "compare"}),
    ({"generate": {"vae": {"step": 0.2}}}, {"generate@vae", "plot@vae", "evaluate@vae", "compare"}),
    ({"evaluate": {"threshold": 0.8}}, {"evaluate@ae", "evaluate@vae", "evaluate@cvae", "compare",
                                        "beta_vae@2", "plot_beta_sweep"}),
    ({"beta_sweep": {"betas": [2, 4]}}, {"beta_vae@4", "plot_beta_sweep"}),
])
def test_param_edits_rerun_only_what_they_affect(tiny: Project, changes: dict, allowed: set[str]) -> None:
    ran = would_run(tiny, changes)
    assert ran, "the edit should rerun something"
    assert ran <= allowed, ran - allowed


@pytest.mark.slow
def test_forced_repro_gives_an_identical_lock(tiny: Project) -> None:
    before = (tiny.path / "dvc.lock").read_text()
    tiny.dvc("repro", "-f")
    assert (tiny.path / "dvc.lock").read_text() == before
    assert tiny.git("status", "--porcelain").stdout == ""  # committed figures and metrics unchanged too


@pytest.mark.slow
def test_experiment_with_another_beta_changes_only_the_vae(tiny: Project) -> None:
    before = {m: (tiny.path / f"artifacts/{m}/metrics.json").read_text() for m in ("ae", "vae")}
    out = tiny.dvc("exp", "run", "-S", "vae.beta=2").stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert "train_vae" in ran and "evaluate@vae" in ran
    assert not [s for s in ran if s == "train_ae" or s.endswith("@ae")]
    assert "fetch" not in ran and not [s for s in ran if s.startswith("beta_vae")]
    assert (tiny.path / "artifacts/ae/metrics.json").read_text() == before["ae"]
    assert (tiny.path / "artifacts/vae/metrics.json").read_text() != before["vae"]
    shown = tiny.dvc("exp", "show", "--md").stdout
    assert "vae.beta" in shown and "test_neg_elbo" in shown
