"""Going back costs nothing: a param edit and its revert restore every stage from DVC's run-cache.

DVC restores a stage from its run-cache only when no `outs` entry has `cache: false`; the files
reviewers read in git are declared under `metrics:` or `plots:` instead (dvc.yaml).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from tests.conftest import CHANGE, ROOT, Project, copy_of, ran, restored, reviewed, reviewed_output, tiny_base

# Sub-second stages whose output is neither a metric nor a plot: they rerun instead of restoring.
ALWAYS_RERUN = {"compare": ["artifacts/comparison.md"]}


def test_no_stage_declares_an_uncached_out() -> None:
    """An `outs` entry with cache: false would stop its stage from being restored from the run-cache."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    uncached = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        for out in body.get("outs", []):
            if isinstance(out, dict):
                path, props = next(iter(out.items()))
                if props and props.get("cache") is False:
                    uncached.setdefault(name, []).append(path)
    assert uncached == ALWAYS_RERUN


def snapshot(project: Project) -> dict[str, str]:
    """md5 of every file the pipeline writes: DVC-cached outputs and the reviewed files in git."""
    files = [p for p in (project.path / "artifacts").rglob("*") if p.is_file()] + [project.path / "data/mnist.npz"]
    return {str(p.relative_to(project.path)): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def tiny(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Project:
    return copy_of(tiny_base(tmp_path_factory, mnist_dir), tmp_path / "project", mnist_dir)


# What vae.beta reruns: the VAE's branch, not the sweep (which replaces beta) nor the AE's or the CVAE's.
BETA_AFFECTED = {"train@vae", "encode@vae", "evolution@vae", "animate", "generate@vae", "plot@vae", "evaluate@vae",
                 "likelihood@vae", "plot_beta_sweep", "explore"}
# What plot.dpi reruns: every figure.
DPI_AFFECTED = {"plot@ae", "plot@vae", "plot@cvae", "plot_samples", "plot_beta_sweep"}


def revert_restores(project: Project, affected: set[str], before: dict[str, str]) -> str:
    """Revert params.yaml and `dvc repro`: every stage of ``affected`` restored from the run-cache, no
    stage command run (but ALWAYS_RERUN's), the files of ``before`` back, nothing left to do. Returns
    what `dvc repro` printed."""
    project.git("checkout", "params.yaml")
    back = project.dvc("repro").stdout
    assert ran(back) <= set(ALWAYS_RERUN), f"ran a stage command instead of restoring:\n{back}"
    assert restored(back) == affected, back
    assert snapshot(project) == before
    assert project.git("status", "--porcelain").stdout == ""
    assert "up to date" in project.dvc("status").stdout
    return back


@pytest.mark.slow
def test_a_training_edit_and_its_revert_restore_from_the_run_cache(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> None:
    """The edit tests/test_report.py reviews (vae.beta), run once for both: it reran the VAE's branch;
    reverting it restores every one of those stages, and so does making it again."""
    base = tiny_base(tmp_path_factory, mnist_dir)
    edited_once = reviewed(tmp_path_factory, mnist_dir)
    assert ran(reviewed_output(edited_once)) - set(ALWAYS_RERUN) == BETA_AFFECTED, reviewed_output(edited_once)
    proj = copy_of(edited_once, tmp_path / "project", mnist_dir)
    edited = snapshot(proj)

    back = revert_restores(proj, BETA_AFFECTED, snapshot(base))
    assert "Epoch 1/" not in back  # no training code ran

    proj.set_params(CHANGE)
    again = proj.dvc("repro").stdout
    assert ran(again) <= set(ALWAYS_RERUN) and restored(again) == BETA_AFFECTED, again
    assert snapshot(proj) == edited


@pytest.mark.slow
def test_a_plot_edit_and_its_revert_restore_from_the_run_cache(tiny: Project) -> None:
    before = snapshot(tiny)
    tiny.set_params({"plot": {"dpi": 81}})  # every figure
    edited = tiny.dvc("repro").stdout
    assert ran(edited) - set(ALWAYS_RERUN) == DPI_AFFECTED, edited
    revert_restores(tiny, DPI_AFFECTED, before)


@pytest.mark.slow
def test_a_failing_edit_then_its_revert_restores_everything_without_running(tiny: Project) -> None:
    before = snapshot(tiny)
    tiny.set_params({"ae": {"epochs": -1}})
    failed = tiny.dvc("repro", check=False)
    assert failed.returncode != 0
    assert "ae.epochs" in failed.stdout + failed.stderr  # the stage's own one-line error names the key

    tiny.git("checkout", "params.yaml")
    back = tiny.dvc("repro").stdout
    assert ran(back) <= set(ALWAYS_RERUN), f"ran a stage command instead of restoring:\n{back}"
    assert "train@ae" in restored(back), back
    assert snapshot(tiny) == before
    assert tiny.git("status", "--porcelain").stdout == ""


@pytest.mark.slow
def test_make_repro_records_the_run_cache_of_stages_that_did_not_run(tiny: Project) -> None:
    """A fresh clone's first `make repro` runs only the stages whose cached outputs are missing; the
    others "didn't change" (their outputs are committed in git), and DVC saves no run-cache entry for
    a stage it did not run. `make repro` records them (`dvc commit --force`), so that reverting an edit
    restores those stages too. Simulated here without recomputing: the run-cache removed, as in a
    fresh clone, with every output in place."""
    import shutil
    import subprocess

    def edit_and_revert() -> str:
        tiny.set_params({"plot": {"dpi": 81}})
        tiny.dvc("repro")
        tiny.git("checkout", "params.yaml")
        return tiny.dvc("repro").stdout

    # Without the commit, as after a plain `dvc repro`: the revert recomputes every figure.
    shutil.rmtree(tiny.path / ".dvc/cache/runs")
    assert "Running stage" not in tiny.dvc("repro").stdout
    assert ran(edit_and_revert()) == DPI_AFFECTED

    shutil.rmtree(tiny.path / ".dvc/cache/runs")
    # As in the repository, the paper's pipeline (never run by make repro, its outputs absent) lies
    # beside the main one: a bare `dvc commit --force` failed on its missing outputs.
    (tiny.path / "paper").mkdir()
    shutil.copy2(ROOT / "paper/dvc.yaml", tiny.path / "paper/dvc.yaml")
    tiny.commit("the paper's pipeline")
    make = subprocess.run(["make", "repro"], cwd=tiny.path, env=tiny.env, capture_output=True, text=True)
    assert make.returncode == 0, make.stdout[-3000:] + make.stderr[-3000:]
    assert "Running stage" not in make.stdout
    back = edit_and_revert()
    assert restored(back) == DPI_AFFECTED and ran(back) <= set(ALWAYS_RERUN), back
    assert tiny.git("status", "--porcelain").stdout == ""
