"""The evaluate, compare and beta_sweep stages' wiring, on small synthetic inputs and tiny untrained
models (fast): which codes and samples they use, which keys they write and read, and that a NaN or
a missing key is one clear stage error, not a traceback or a silent "–"."""
from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT

N_SAMPLES = 200
# The AE's training codes sit in a box far from N(0, I): samples must come from the box.
AE_BOX = np.array([[10.0, -30.0], [20.0, -20.0]])


def separated(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Codes that a 1-NN vote classifies perfectly: one tight cluster per digit."""
    centres = 5 * np.stack([np.cos(labels * 0.6), np.sin(labels * 0.6)], axis=1)
    return (centres + 0.01 * rng.standard_normal(centres.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with params.yaml and every input evaluate@ae, @vae and @cvae read."""
    from stages.lib import files, models

    root = tmp_path_factory.mktemp("stages")
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["evaluate"].update(n_samples=N_SAMPLES, knn_k=1)
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    models.save(models.build_classifier(), root / "artifacts/classifier/model.keras")
    rng = np.random.default_rng(0)
    y_train, y_test = np.arange(300) % 10, np.arange(60) % 10
    for kind in ("ae", "vae", "cvae"):
        out = root / "artifacts" / kind
        models.save(models.build(kind, 2, (8, 4), seed=0).decoder, out / "decoder.keras")
        files.write_npy(out / "manifold.npy", rng.random((3, 3, 28, 28)).astype(np.float32))
        if kind == "ae":
            codes = {"z_train": rng.uniform(*AE_BOX, size=(300, 2)).astype(np.float32),
                     "z_test": rng.uniform(*AE_BOX, size=(60, 2)).astype(np.float32)}
        else:  # z_mean separates the digits perfectly, the sampled z not at all
            codes = {"z_mean_train": separated(y_train, rng), "z_mean_test": separated(y_test, rng),
                     "z_log_var_train": np.zeros((300, 2), np.float32),
                     "z_log_var_test": np.zeros((60, 2), np.float32),
                     "z_train": rng.standard_normal((300, 2)).astype(np.float32),
                     "z_test": rng.standard_normal((60, 2)).astype(np.float32)}
        files.write_npz(out / "encodings.npz", {**codes, "y_train": y_train, "y_test": y_test})
    return root


@pytest.fixture
def stage_dir(workspace: Path, monkeypatch) -> Path:
    monkeypatch.chdir(workspace)
    return workspace


def evaluate(kind: str, monkeypatch) -> tuple[dict, list]:
    """Run evaluate@kind's main(); return evaluation.json and each models.decode call's (z, labels)."""
    from stages import evaluate as stage
    from stages.lib import models

    calls: list = []
    decode = models.decode

    def spy(decoder, z, labels=None, **kw):
        calls.append((np.array(z), None if labels is None else np.array(labels)))
        return decode(decoder, z, labels, **kw)

    monkeypatch.setattr(models, "decode", spy)
    monkeypatch.setattr(sys, "argv", ["evaluate", kind])
    stage.main(kind)
    return json.loads(Path("artifacts", kind, "evaluation.json").read_text()), calls


def test_evaluate_vae_scores_knn_on_z_mean_and_samples_the_prior(stage_dir: Path, monkeypatch) -> None:
    result, calls = evaluate("vae", monkeypatch)
    assert result["knn_accuracy"] == 1.0  # on z (random) it would be about 0.1
    ((z, labels),) = calls
    assert z.shape == (N_SAMPLES, 2) and labels is None
    assert np.abs(z.mean(axis=0)).max() < 0.25 and np.abs(z.std(axis=0) - 1).max() < 0.15  # N(0, I)
    assert "conditional_accuracy" not in result
    assert set(result) == {"grid", "samples", "knn_accuracy", "latent"}


def test_evaluate_ae_samples_in_the_box_of_its_codes(stage_dir: Path, monkeypatch) -> None:
    result, calls = evaluate("ae", monkeypatch)
    ((z, labels),) = calls
    codes = np.load("artifacts/ae/encodings.npz")["z_train"]
    lo, hi = codes.min(axis=0), codes.max(axis=0)
    assert ((z >= lo) & (z <= hi)).all()
    # Uniform over the whole box, not a corner of it.
    np.testing.assert_allclose(z.mean(axis=0), (lo + hi) / 2, atol=0.1 * (hi - lo).max())
    assert "conditional_accuracy" not in result


def test_evaluate_cvae_conditions_on_each_digit_and_scores_it(stage_dir: Path, monkeypatch) -> None:
    from stages.lib import models

    result, calls = evaluate("cvae", monkeypatch)
    ((z, labels),) = calls
    np.testing.assert_array_equal(labels, np.arange(N_SAMPLES) % 10)
    assert result["knn_accuracy"] == 1.0  # z_mean, as for the VAE
    # The share of samples the classifier labels as their conditioning digit, recomputed here.
    classifier = models.load("artifacts/classifier/model.keras")
    decoder = models.load("artifacts/cvae/decoder.keras")
    predicted = models.predict(classifier, models.decode(decoder, z, labels)).argmax(axis=1)
    assert result["conditional_accuracy"] == pytest.approx((predicted == labels).mean(), abs=1e-4)


def test_evaluate_with_a_nan_is_one_error_line_naming_file_and_key(stage_dir: Path, monkeypatch) -> None:
    """A NaN training code (a diverged encoder) reaches the latent statistics: one clear line."""
    from stages import evaluate as stage
    from stages.lib import files, run

    path = Path("artifacts/vae/encodings.npz")
    saved = path.read_bytes()
    result = Path("artifacts/vae/evaluation.json")
    before = result.read_bytes() if result.exists() else None
    try:
        with np.load(path) as data:
            codes = {k: data[k] for k in data.files}
        codes["z_train"][0] = np.nan
        files.write_npz(path, codes)
        monkeypatch.setattr(sys, "argv", ["evaluate", "vae"])
        with pytest.raises(SystemExit) as info:
            run(stage.main, compute=False, choices=("vae",))
    finally:
        files.write_bytes(path, saved)
    message = str(info.value)
    assert message.startswith("error: artifacts/vae/evaluation.json: refusing to write a non-finite number"
                              " to JSON: latent."), message
    assert message.endswith("= nan") and "\n" not in message, message
    assert (result.read_bytes() if result.exists() else None) == before


# --- compare ------------------------------------------------------------------------------------

@pytest.fixture
def compare_inputs(stage_dir: Path, monkeypatch) -> Path:
    """evaluation.json from the real evaluate stage, metrics.json from the committed pipeline run."""
    for kind in ("ae", "vae", "cvae"):
        if not Path("artifacts", kind, "evaluation.json").exists():
            evaluate(kind, monkeypatch)
        shutil.copy(ROOT / "artifacts" / kind / "metrics.json", Path("artifacts", kind, "metrics.json"))
    shutil.copy(ROOT / "artifacts/classifier/metrics.json", "artifacts/classifier/metrics.json")
    for kind in ("vae", "cvae"):  # in the layout stage likelihood writes (tests/test_likelihood.py runs it)
        Path("artifacts", kind, "likelihood.json").write_text(json.dumps({
            "neg_elbo": 146.0, "iwae": {"k_10": {"nll": 144.0, "stderr": 0.1}, "k_100": {"nll": 143.5, "stderr": 0.1}},
            "quadrature": {"nll": 140.2, "nll_fine": 140.1}, "entropy_floor": 45.7}))
    return stage_dir


def test_compare_reads_keys_that_exist(compare_inputs: Path) -> None:
    from stages import compare

    compare.main()
    text = Path("artifacts/comparison.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]]
            for line in text.splitlines() if line.startswith("| ") and not line.startswith(("| metric", "| ---"))}
    # What each model lacks, written out here rather than read from compare.ROWS: the AE has no KL,
    # ELBO or likelihood, only the CVAE a conditional accuracy; every other cell is a number.
    likelihood = {"likelihood subset: negative ELBO", "likelihood subset: NLL, IWAE (largest k)",
                  "likelihood subset: NLL, quadrature", "likelihood subset: pixel entropy floor"}
    gaps = {"ae": {"test KL (nats/image)", "test negative ELBO (nats/image)", "conditional accuracy", *likelihood},
            "vae": {"conditional accuracy"}, "cvae": set()}
    assert set().union(*gaps.values()) <= set(rows) and len(rows) >= 15, sorted(rows)
    assert {"test reconstruction (nats/image)", "kNN accuracy of test codes", "grid: class balance"} <= set(rows)
    for label, cells in rows.items():
        for kind, cell in zip(("ae", "vae", "cvae"), cells):
            if label in gaps[kind]:
                assert cell == "–", (label, kind, cell)
            else:
                assert cell != "–" and math.isfinite(float(cell)), (label, kind, cell)


def test_compare_fails_loudly_on_a_missing_key(compare_inputs: Path, capsys) -> None:
    from stages import compare
    from stages.lib import run

    typo = [("kNN accuracy", "evaluation.json", "knn_acuracy", ".3f", "")]
    with pytest.raises(compare.CompareError, match=r"artifacts/ae/evaluation\.json: no key 'knn_acuracy'"):
        compare.table(compare.MODELS, typo)
    # A CVAE-only key asked of every model: the AE's file is named.
    cvae_only = [("cond", "evaluation.json", "conditional_accuracy", ".3f", "")]
    with pytest.raises(compare.CompareError, match=r"artifacts/ae/evaluation\.json: no key 'conditional_accuracy'"):
        compare.table(compare.MODELS, cvae_only)
    # Through the stage runner: one line, non-zero exit, no comparison.md written.
    data = json.loads(Path("artifacts/vae/metrics.json").read_text())
    Path("artifacts/vae/metrics.json").write_text(json.dumps({k: v for k, v in data.items() if k != "test_kl"}))
    Path("artifacts/comparison.md").unlink(missing_ok=True)
    with pytest.raises(SystemExit) as info:
        run(compare.main, compute=False)
    assert str(info.value).startswith("error: artifacts/vae/metrics.json: no key 'test_kl'"), info.value
    assert not Path("artifacts/comparison.md").exists()


# --- beta_sweep ---------------------------------------------------------------------------------

def test_beta_sweep_nan_is_one_error_line_and_keeps_the_old_models(stage_dir: Path, monkeypatch) -> None:
    from stages import beta_sweep
    from stages.lib import files, run
    from stages.lib.sweep import sweep_name

    p = yaml.safe_load(Path("params.yaml").read_text())
    p["beta_sweep"]["betas"] = [2]
    Path("params.yaml").write_text(yaml.safe_dump(p))
    old_model = Path("artifacts/beta_sweep/models/beta_2/encoder.keras")
    files.write_text(old_model, "old model")
    files.write_json("artifacts/beta_sweep/metrics.json", {"beta_2": {"test_kl": 1.0}})

    def train_one(beta: float, models_dir: Path, parts: int = 1) -> dict:
        files.write_text(models_dir / sweep_name(beta) / "encoder.keras", "new model")
        return {"beta": beta, "test_reconstruction": 100.0, "test_kl": float("nan"), "test_neg_elbo": float("nan"),
                "samples": {"recognisable_share": 0.5}}

    monkeypatch.setattr(beta_sweep, "train_one", train_one)
    with pytest.raises(SystemExit) as info:
        run(beta_sweep.main, compute=False)
    assert str(info.value) == ("error: artifacts/beta_sweep/metrics.json: refusing to write a non-finite "
                               "number to JSON: beta_2.test_kl = nan")
    assert old_model.read_text() == "old model"
    assert json.loads(Path("artifacts/beta_sweep/metrics.json").read_text()) == {"beta_2": {"test_kl": 1.0}}
    assert sorted(p.name for p in Path("artifacts/beta_sweep").iterdir()) == ["metrics.json", "models"]
