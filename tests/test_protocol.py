"""The VAE training protocol of docs/paper.md on real TensorFlow and real MNIST slices: the KL warm-up
(the weight of every epoch, and the compiled step reading it), the validation split (disjoint,
deterministic, binarized once, checked against data.train_limit) and early stopping (stops after
``patience`` epochs without a better validation -ELBO, keeps the best epoch's weights)."""
from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from stages.lib import mnist, params, training
from tests.conftest import ROOT, TINY, copy_project, deep_update, tool_env

OFF = {"kl_warmup_epochs": 0, "validation": 0, "validation_seed": 0, "patience": 0}
P = params.VAEParams(latent_dim=2, hidden=(32, 8), epochs=4, batch_size=64, learning_rate=0.001, seed=0, beta=1.0,
                     **OFF)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> dict:
    arrays = mnist.fetch([], tmp_path_factory.mktemp("c"), 5, 0, env={"MNIST_MIRROR": str(mnist_dir)})
    return {"x": arrays["x_train"][:1200].astype(np.float32) / 255, "y": arrays["y_train"][:1200].astype(np.int32),
            "x_test": arrays["x_test"][:300].astype(np.float32) / 255}


# --- the warm-up -----------------------------------------------------------------------------------

def test_the_kl_weight_rises_linearly_to_beta_over_the_warm_up() -> None:
    assert [training.kl_weight(2.0, 4, e) for e in range(1, 7)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert [training.kl_weight(0.5, 0, e) for e in (1, 2, 50)] == [0.5, 0.5, 0.5]


@pytest.mark.slow
def test_each_epoch_trains_with_its_kl_weight(data: dict, tmp_path: Path) -> None:
    """history.tsv's kl_weight is the formula's, epoch by epoch, and the compiled train step used it: each
    epoch's training loss is its reconstruction + kl_weight * KL (a constant compiled into the step would
    give one weight for every epoch)."""
    p = P.model_copy(update={"epochs": 5, "kl_warmup_epochs": 4, "beta": 2.0})
    training.train("vae", p, data["x"], data["x_test"], tmp_path)
    h = np.genfromtxt(tmp_path / "history.tsv", names=True, delimiter="\t")
    expected = np.float32([training.kl_weight(2.0, 4, e) for e in range(1, 6)])
    np.testing.assert_array_equal(np.float32(h["kl_weight"]), expected)   # 0.5, 1, 1.5, 2, 2
    np.testing.assert_allclose(h["loss"], h["reconstruction"] + h["kl_weight"] * h["kl"], rtol=2e-5)
    np.testing.assert_allclose(h["neg_elbo"], h["reconstruction"] + h["kl"], rtol=5e-6)
    with pytest.raises(AssertionError):  # the check above can tell one weight from another
        np.testing.assert_allclose(h["loss"], h["reconstruction"] + 2.0 * h["kl"], rtol=2e-5)


@pytest.mark.slow
def test_the_weight_variable_trains_what_the_constant_does(data: dict, tmp_path: Path) -> None:
    """A one-epoch warm-up weighs every epoch with beta, through the variable: the same models, byte for
    byte, as the default's constant; history.tsv only gains the weight and the -ELBO columns."""
    plain = training.train("vae", P, data["x"], data["x_test"], tmp_path / "constant")
    warm = training.train("vae", P.model_copy(update={"kl_warmup_epochs": 1}), data["x"], data["x_test"],
                          tmp_path / "variable")
    assert warm == plain
    for name in ("encoder.keras", "decoder.keras"):
        assert (tmp_path / "constant" / name).read_bytes() == (tmp_path / "variable" / name).read_bytes(), name
    a = np.genfromtxt(tmp_path / "constant" / "history.tsv", names=True, delimiter="\t")
    b = np.genfromtxt(tmp_path / "variable" / "history.tsv", names=True, delimiter="\t")
    assert set(b.dtype.names) - set(a.dtype.names) == {"kl_weight", "neg_elbo", "test_neg_elbo"}
    for column in a.dtype.names:
        np.testing.assert_array_equal(a[column], b[column])


@pytest.mark.slow
def test_the_defaults_add_no_column_and_no_metric(data: dict, tmp_path: Path) -> None:
    metrics = training.train("vae", P, data["x"], data["x_test"], tmp_path)
    header = (tmp_path / "history.tsv").read_text().splitlines()[0].split("\t")
    assert header == ["epoch", "kl", "loss", "reconstruction", "test_kl", "test_loss", "test_reconstruction"]
    assert set(metrics) == set(json.loads((tmp_path / "metrics.json").read_text())) \
        == {"test_reconstruction", "test_kl", "test_neg_elbo"}


# --- the validation split ----------------------------------------------------------------------------

def labelled(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n grey 28x28 images whose first pixel says which one each is, and their numbers as labels."""
    x = np.full((n, 28, 28), 0.5, np.float32)
    x[:, 0, 0] = np.arange(n) / n
    return x, np.arange(n)


def test_the_split_is_disjoint_complete_ordered_and_deterministic() -> None:
    x, y = labelled(1000)
    (x_train, y_train), (x_val, y_val) = training.split_validation((x, y), 200, seed=3)
    assert len(y_val) == 200 and len(y_train) == 800
    assert not set(y_train) & set(y_val) and set(y_train) | set(y_val) == set(range(1000))
    assert list(y_train) == sorted(y_train) and list(y_val) == sorted(y_val)        # original order kept
    np.testing.assert_array_equal(x_train[:, 0, 0], np.float32(y_train / 1000))     # labels follow images
    np.testing.assert_array_equal(x_val[:, 0, 0], np.float32(y_val / 1000))
    (_, again_train), (_, again_val) = training.split_validation((x, y), 200, seed=3)
    np.testing.assert_array_equal(again_val, y_val)
    np.testing.assert_array_equal(again_train, y_train)
    assert set(training.split_validation((x, y), 200, seed=4)[1][1]) != set(y_val)  # its own seed draws it
    only_x = training.split_validation(x, 200, seed=3)                               # an array in, arrays out
    np.testing.assert_array_equal(only_x[1], x_val)


def test_dynamic_binarization_binarizes_the_validation_images_once() -> None:
    x, y = labelled(500)
    (x_train, _), (x_val, y_val) = training.split_validation((x, y), 100, seed=0, binarize="dynamic")
    assert set(np.unique(x_val)) == {0.0, 1.0}
    assert set(np.unique(x_train[:, 1:, 1:])) == {0.5}                 # training pixels: drawn anew each epoch
    (_, _), (x_val_again, _) = training.split_validation((x, y), 100, seed=0, binarize="dynamic")
    np.testing.assert_array_equal(x_val, x_val_again)                  # a fixed draw
    np.testing.assert_array_equal(x_val, mnist.binarized(x[y_val], training.VALIDATION_BINARIZATION_SEED))


@pytest.mark.parametrize("n", [0, 500, 501])
def test_the_split_refuses_to_hold_out_nothing_or_everything(n: int) -> None:
    with pytest.raises(training.StageError, match=rf"validation split: {n} of 500 training images"):
        training.split_validation(labelled(500)[0], n, seed=0)


def test_the_split_must_fit_in_data_train_limit() -> None:
    p = P.model_copy(update={"validation": 1000, "patience": 3})
    with pytest.raises(params.ParamsError) as err:
        params.check_protocol("vae", p, train_limit=1000)
    assert str(err.value) == ("params.yaml: vae.validation (1000) must be below data.train_limit (1000): "
                              "the split would leave no images to train on")
    params.check_protocol("vae", p, train_limit=1001)


@pytest.mark.parametrize("change, message", [
    ({"patience": 5}, r"vae: patience \(5\) needs validation > 0: early stopping watches the validation split"),
    ({"kl_warmup_epochs": 60}, r"vae: kl_warmup_epochs \(60\) exceeds epochs \(50\): the KL weight would never"),
    ({"validation": -1}, r"vae.validation: expected an integer >= 0 and <= 59999, got -1"),
    ({"patience": 2.5}, r"vae.patience: expected an integer >= 0, got 2.5"),
])
def test_protocol_params_are_refused_in_one_line(tmp_path: Path, change: dict, message: str) -> None:
    data = params.read_params(ROOT / "params.yaml")
    data["vae"].update(change)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(params.ParamsError) as err:
        params.load("vae", params.VAEParams, path)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{path}: "), str(err.value)
    assert __import__("re").search(message, str(err.value)), str(err.value)


def test_the_stage_refuses_a_split_larger_than_train_limit_before_training(tmp_path: Path, mnist_dir: Path) -> None:
    """One line naming both keys, exit code 1, nothing written."""
    proj = copy_project(tmp_path / "p", mnist_dir)
    proj.set_params(deep_update(copy.deepcopy(TINY), {"vae": {"validation": 1000, "patience": 2}}))
    out = subprocess.run([sys.executable, "-m", "stages.train", "vae"], cwd=proj.path, env=tool_env(),
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "error: params.yaml: vae.validation (1000) must be below data.train_limit (1000): the split would leave "
        "no images to train on")
    assert not (proj.path / "artifacts").exists()


# --- early stopping -------------------------------------------------------------------------------------

class Snapshots:
    """The encoder's weights at the end of every epoch (a real callback; the test compares them)."""

    def __init__(self) -> None:
        import keras

        self.weights: list[list[np.ndarray]] = []
        outer = self

        class Record(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                outer.weights.append([w.copy() for w in self.model.encoder.get_weights()])
        self.callback = Record()


@pytest.mark.slow
def test_early_stopping_stops_after_patience_epochs_and_keeps_the_best(data: dict, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A fast learning rate on few images: the validation -ELBO soon stops improving. Training ends exactly
    ``patience`` epochs after the best one, counted from the end of the warm-up, not an error; the model
    written is that epoch's (its weights equal the snapshot taken then); best_epoch and epochs_run say so."""
    from stages.lib import models

    snapshots = Snapshots()
    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, callbacks=(), **k: real_fit(
        *a, callbacks=[*callbacks, snapshots.callback], **k))
    p = P.model_copy(update={"epochs": 60, "learning_rate": 0.01, "batch_size": 32, "kl_warmup_epochs": 3,
                             "validation": 400, "validation_seed": 1, "patience": 3})
    from stages.lib import snapshots as recorded

    metrics = training.train("vae", p, data["x"][:800], data["x_test"], tmp_path, recorder=recorded.Recorder())
    h = np.genfromtxt(tmp_path / "history.tsv", names=True, delimiter="\t")
    val = h["validation_neg_elbo"]
    watched = np.arange(len(val)) >= p.kl_warmup_epochs - 1            # from the first full-weight epoch
    best = int(np.flatnonzero(watched)[np.argmin(val[watched])]) + 1  # 1-based
    assert metrics["epochs_run"] == len(val) < p.epochs               # it did stop early
    assert metrics["best_epoch"] == best and metrics["epochs_run"] == best + p.patience
    assert metrics["validation_neg_elbo"] == pytest.approx(val[best - 1], abs=1e-3)  # history: 6 digits
    assert all(v >= val[best - 1] for v in val[best:])                # patience epochs, none better
    saved = models.load(tmp_path / "encoder.keras").get_weights()
    for got, want in zip(saved, snapshots.weights[best - 1]):
        np.testing.assert_array_equal(got, want)
    assert any(not np.array_equal(a, b) for a, b in zip(saved, snapshots.weights[-1]))
    assert json.loads((tmp_path / "metrics.json").read_text())["best_epoch"] == best
    # The recorded replay (snapshots.npz) ends at the saved model: epochs 0 to best, its last encoder
    # and decoder the saved ones.
    snap = recorded.load(tmp_path / "snapshots.npz")
    assert snap.epochs["encoder"].tolist() == list(range(best + 1)) and snap.epochs["decoder"][-1] == best
    encoder, decoder = models.load(tmp_path / "encoder.keras"), models.load(tmp_path / "decoder.keras")
    for model, part in ((encoder, "encoder"), (decoder, "decoder")):
        for got, want in zip(snap.weights(part, best, [w.path for w in model.weights]), model.get_weights()):
            np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_a_nan_still_fails_with_early_stopping_on(data: dict, tmp_path: Path) -> None:
    x_bad = data["x"][:800].copy()
    x_bad[:400] = np.nan
    p = P.model_copy(update={"validation": 200, "patience": 2})
    with pytest.raises(training.TrainingError, match=r"train@vae: training diverged at epoch 1 of 4 .*no model"):
        training.train("vae", p, x_bad, data["x_test"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_cvae_takes_the_protocol_with_its_labels(data: dict, tmp_path: Path) -> None:
    from stages.lib import models

    p = P.model_copy(update={"epochs": 3, "kl_warmup_epochs": 2, "validation": 200, "patience": 1})
    metrics = training.train("cvae", p, (data["x"], models.one_hot(data["y"])),
                             (data["x_test"], models.one_hot(np.zeros(len(data["x_test"]), int))), tmp_path)
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 3
    assert math.isfinite(metrics["test_neg_elbo"])
