"""The Davidson et al. 2018 comparison as one command (`make paper`) on tiny params, with the real DVC and
make: its own pipeline (paper/dvc.yaml) that `dvc repro` of the main one never runs, one training and one
likelihood per model and seed, cached, its results in git; edits rerun only what they should."""
from __future__ import annotations

import copy
import json
import math
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, TINY, TOOLING, Project, copy_project, deep_update, run

pytestmark = pytest.mark.slow

# The protocol, short: 4 epochs of 700 images, warm-up 2, early stopping with patience 1 on 300 held out.
PAPER_TINY = {"paper": {"train": {"epochs": 4, "kl_warmup_epochs": 2, "validation": 300, "patience": 1},
                        "likelihood": {"images": 100, "iwae_k": [10, 500],
                                       "grid": {"points": 101, "tolerance": 2.0}}}}
RUNS = ("davidson-0", "notebook-0")
# Two of params.yaml's models, one per way of predicting the scale, so that both run through the stages.
PAPER_MODELS = {"davidson": {"latent_dim": 2, "hidden": [256, 128], "scale": "softplus"},
                "notebook": {"latent_dim": 2, "hidden": [128, 16], "scale": "log_var"}}


@pytest.fixture(scope="module")
def paper(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> tuple[Project, str]:
    proj = copy_project(tmp_path_factory.mktemp("paper") / "project", mnist_dir)
    (proj.path / "paper").mkdir()
    shutil.copy2(ROOT / "paper" / "dvc.yaml", proj.path / "paper" / "dvc.yaml")
    for name in TOOLING:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, proj.path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, proj.path / name)
    (proj.path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    with open(proj.path / ".git" / "info" / "exclude", "a") as f:
        f.write("/.venv\n")
    proj.set_params(deep_update(copy.deepcopy(TINY), copy.deepcopy(PAPER_TINY)))
    params = yaml.safe_load((proj.path / "params.yaml").read_text())
    params["paper"]["models"] = copy.deepcopy(PAPER_MODELS)  # replaced, not merged
    (proj.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proj.commit("paper pipeline, tiny")
    out = run(["make", "paper"], proj.path, proj.env).stdout
    proj.commit("make paper")
    return proj, out


def test_make_paper_states_its_cost_trains_every_model_and_scores_it(paper: tuple[Project, str]) -> None:
    proj, out = paper
    assert "make paper: one training per model" in out and "min of likelihood" in out  # its cost, first
    for key in RUNS:
        folder = proj.path / "artifacts" / "paper" / key
        assert {f.name for f in folder.iterdir()} >= {"encoder.keras", "decoder.keras", "history.tsv",
                                                      "metrics.json", "likelihood.json"}
        metrics = json.loads((folder / "metrics.json").read_text())
        assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 4
        assert f"paper_train@{key}: epoch 1/4, KL weight 0.5, loss" in out  # one progress line per epoch
        lik = json.loads((folder / "likelihood.json").read_text())
        assert lik["images"] == 100 and set(lik["iwae"]) == {"k_10", "k_500"}
        assert lik["test_neg_elbo"] == pytest.approx(lik["test_reconstruction"] + lik["test_kl"], abs=2e-4)
        ours = lik["paper"]  # Table 1's signs: log-likelihoods negative, KL positive
        assert ours["LL"] == -lik["iwae"]["k_500"]["nll"] and ours["L[q]"] == -lik["test_neg_elbo"]
        assert ours["RE"] == -lik["test_reconstruction"] and ours["KL"] == lik["test_kl"] > 0
        assert ours["LL_exact"] == -lik["quadrature"]["nll_fine"] and all(map(math.isfinite, ours.values()))
    # Each model's encoder predicts the scale as its paper.models entry says.
    import keras

    from stages.lib import models
    for key, layer in (("davidson-0", models.LogVarianceOfScale), ("notebook-0", keras.layers.Dense)):
        encoder = models.load(proj.path / "artifacts" / "paper" / key / "encoder.keras")
        assert type(encoder.get_layer("z_log_var")) is layer, key
    assert "paper_train@davidson-0: a 784-256-128-2 VAE (softplus scale)" in out
    # The table it ends with: the published row and one row per model.
    assert "| Davidson et al. 2018, N-VAE, d = 2 (mean of 10 runs) | – | -135.73 | -137.08 | -129.84 | 7.24 |" in out
    assert "| ours, davidson | 0 |" in out and "| ours, notebook | 0 |" in out


def test_the_results_are_in_git_and_the_models_in_the_cache(paper: tuple[Project, str]) -> None:
    proj, _ = paper
    tracked = set(proj.git("ls-files", "artifacts/paper").stdout.split())
    assert tracked == {f"artifacts/paper/{k}/{n}" for k in RUNS for n in ("history.tsv", "metrics.json", "likelihood.json")}
    assert "Data and pipelines are up to date." in proj.dvc("status", "paper/dvc.yaml").stdout
    metrics = proj.dvc("metrics", "show", "--json").stdout
    assert "artifacts/paper/davidson-0/likelihood.json" in metrics


def test_the_main_pipeline_never_runs_it(paper: tuple[Project, str]) -> None:
    """`make repro` (`dvc repro`) and `dvc exp run` reproduce the dvc.yaml of the folder they run in, the
    target `dvc stage list` resolves the same way: the main pipeline's stages, no paper stage."""
    proj, _ = paper
    listed = proj.dvc("stage", "list", "--name-only").stdout.split()
    assert "train@vae" in listed and not [s for s in listed if "paper" in s]
    assert "paper" not in proj.dvc("status", "dvc.yaml").stdout


def test_make_paper_again_is_cached(paper: tuple[Project, str]) -> None:
    proj, _ = paper
    out = run(["make", "paper"], proj.path, proj.env).stdout
    assert "Running stage" not in out and "| ours, davidson | 0 |" in out
    assert proj.git("status", "--porcelain").stdout == ""


def test_the_gap_tool_prints_the_bound_in_k_and_the_exact_lead_per_image(paper: tuple[Project, str]) -> None:
    """tools/paper_gap.py on a trained run: a row per k, the bound rising with k and below the exact
    value (within Monte-Carlo error); the TensorFlow example's estimator beside its narrow-q limit and
    Table 1's rows; every image counted once by ESS and by digit."""
    proj, _ = paper
    out = run([sys.executable, "-m", "tools.paper_gap", "artifacts/paper/notebook-0", "--images", "60"],
              proj.path, proj.env).stdout
    curve, rest = out.split("The TensorFlow example's estimator")
    rows = re.findall(r"^\| (\d+) \| (-[\d.]+) \| (-?[\d.]+) \| (-?[\d.]+) \|$", curve, re.M)
    assert [int(r[0]) for r in rows] == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000], out
    ll = [float(r[1]) for r in rows]
    assert ll[-1] > ll[0] and float(rows[-1][3]) > -0.05, out  # IWAE-5000 above IWAE-1, below the exact LL
    # The TensorFlow example's estimator: importance sampling only for the KL, so above L[q], rising with
    # n, as its narrow-q limit does; that limit grows with the latent dimensions (Table 1's rows).
    estimator, rest = rest.split("Table 1's N-VAE rows")
    table1_section = rest.split("exact - IWAE-500 per image")[0]
    tf = re.findall(r"^\| (10|100|500|5000) \| -[\d.]+ \| (-?[\d.]+) \| ([\d.]+) \|$", estimator, re.M)
    gaps, limits = [float(r[1]) for r in tf], [float(r[2]) for r in tf]
    assert len(tf) == 4 and gaps[0] > -0.05 and gaps[-1] > gaps[0] and limits == sorted(limits), out
    table1 = re.findall(r"^\| (2|5|10) \| ([\d.]+) \| ([\d.]+) \|$", table1_section, re.M)
    assert [r[0] for r in table1] == ["2", "5", "10"] and float(table1[0][1]) == 1.35, out
    assert [float(r[2]) for r in table1] == sorted(float(r[2]) for r in table1), out
    counts = [int(c) for c in re.findall(r"^\| (?:\[[\d.]+, [\d.]+\)|\d) \| (\d+) \| ", out, re.M)]
    assert len(counts) == 14 and sum(counts[:4]) == sum(counts[4:]) == 60, out


@pytest.mark.parametrize("change, changed", [
    ({"paper": {"likelihood": {"iwae_k": [20, 500]}}}, {"paper_likelihood@davidson-0", "paper_likelihood@notebook-0"}),
    ({"paper": {"models": {"notebook": {"hidden": [64, 16]}}}}, {"paper_train@notebook-0"}),
    ({"paper": {"seeds": [0, 1]}}, {"paper_train@davidson-1", "paper_train@notebook-1",
                                    "paper_likelihood@davidson-1", "paper_likelihood@notebook-1"}),
    ({"paper": {"train": {"patience": 2}}}, {"paper_train@davidson-0", "paper_train@notebook-0"}),
    ({"paper": {"train": {"binarize": "none"}}}, {f"paper_{s}@{k}" for s in ("train", "likelihood") for k in RUNS}),
    ({"vae": {"epochs": 2}, "likelihood": {"images": 50}, "data": {"binarize": "dynamic"}}, set()),
])
def test_an_edit_changes_exactly_its_paper_stages(paper: tuple[Project, str], change: dict, changed: set[str]) -> None:
    """The stages `dvc status` finds changed directly (their downstream follows when they rerun): a
    likelihood setting only the likelihoods, a model only its training, a new seed only its own stages,
    the main pipeline's params none."""
    proj, _ = paper
    params = proj.path / "params.yaml"
    before = params.read_text()
    try:
        proj.set_params(copy.deepcopy(change))
        status = json.loads(proj.dvc("status", "--json", "paper/dvc.yaml").stdout)
        assert {name.removeprefix("paper/dvc.yaml:") for name in status} == changed, status
    finally:
        params.write_text(before)
