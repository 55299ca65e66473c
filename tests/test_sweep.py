"""The β sweep's process pool: two betas trained side by side give the bytes each gives alone."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_of, run, tiny_base

MODELS = Path("artifacts/beta_sweep/models")


def saved(proj) -> tuple[dict[str, str], dict]:
    """The sweep's outputs: sha256 of each saved model file, and its metrics.json."""
    files = {str(p.relative_to(proj.path / MODELS)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted((proj.path / MODELS).rglob("*.keras"))}
    return files, json.loads((proj.path / "artifacts/beta_sweep/metrics.json").read_text())


def sweep(proj, betas: list[float]) -> tuple[dict[str, str], dict]:
    """Run stage beta_sweep for ``betas``; its outputs."""
    proj.set_params({"beta_sweep": {"betas": betas}})
    out = run([sys.executable, "-m", "stages.beta_sweep"], proj.path, proj.env).stdout
    assert all(f"beta {b:g}: test -ELBO" in out for b in betas), out
    return saved(proj)


@pytest.mark.slow
def test_two_betas_side_by_side_give_the_bytes_of_each_alone(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> None:
    proj = copy_of(tiny_base(tmp_path_factory, mnist_dir), tmp_path / "project", mnist_dir)
    alone = {2.0: saved(proj)}  # TINY sweeps beta 2 alone: dvc repro ran it in the stage's own process
    both_files, both = sweep(proj, [0.5, 2.0])           # a pool of two processes (compute.portable)
    assert sorted(both) == ["beta_0.5", "beta_2"] and len(both_files) == 4, (sorted(both), both_files)
    alone[0.5] = sweep(proj, [0.5])                      # one training in the stage's own process
    for beta, name in ((0.5, "beta_0.5"), (2.0, "beta_2")):
        alone_files, alone_metrics = alone[beta]
        assert alone_files and alone_files == {k: v for k, v in both_files.items() if k.startswith(name + "/")}, beta
        assert alone_metrics == {name: both[name]}, beta
    assert both["beta_0.5"]["test_kl"] > both["beta_2"]["test_kl"]  # a larger beta buys a smaller KL


@pytest.mark.slow
def test_the_sweep_figure_has_a_point_per_beta_and_the_main_vae(
        tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path, monkeypatch) -> None:
    """plot_beta_sweep on the tiny pipeline's results (betas [2], vae.beta 1): each panel's curves run
    through both betas, in order, at the values of the files they come from."""
    from stages import plot_beta_sweep
    from stages.lib import plotting

    base = tiny_base(tmp_path_factory, mnist_dir)
    figures = []
    monkeypatch.setattr(plotting, "save", lambda fig, path, dpi: figures.append(fig))  # read-only here
    monkeypatch.chdir(base.path)
    plot_beta_sweep.main()
    (fig,) = figures
    rd, reg, nll = fig.axes[:3]
    art = base.path / "artifacts"
    vae, sweep = json.loads((art / "vae/metrics.json").read_text()), json.loads((art / "beta_sweep/metrics.json").read_text())
    assert list(rd.lines[0].get_xdata()) == [vae["test_kl"], sweep["beta_2"]["test_kl"]]
    assert list(rd.lines[0].get_ydata()) == [vae["test_reconstruction"], sweep["beta_2"]["test_reconstruction"]]
    assert sorted(t.get_text() for t in rd.texts) == ["β=1 (main VAE)", "β=2"]
    for panel, curves in ((reg, 3), (nll, 3)):
        assert len(panel.lines) == curves and all(list(line.get_xdata()) == [1.0, 2.0] for line in panel.lines)
    likelihood = json.loads((art / "beta_sweep/likelihood.json").read_text())["beta_2"]
    assert nll.lines[0].get_ydata()[1] == likelihood["neg_elbo"]
