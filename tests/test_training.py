"""Real training on a slice of real MNIST: it learns, it is deterministic, it refuses NaN."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from stages.lib import StageError, compute, mnist, params, training

pytestmark = pytest.mark.slow

P = params.VAEParams(latent_dim=2, hidden=(128, 16), epochs=3, batch_size=128,
                     learning_rate=0.001, seed=0, beta=1.0, kl_warmup_epochs=0, validation=0, validation_seed=0,
                     patience=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    arrays = mnist.fetch([], tmp_path_factory.mktemp("c"), 5, 0, env={"MNIST_MIRROR": str(mnist_dir)})
    return arrays["x_train"][:3000].astype(np.float32) / 255, arrays["x_test"][:500].astype(np.float32) / 255


def test_training_lowers_the_loss_is_deterministic_and_recording_changes_nothing(data, tmp_path: Path) -> None:
    """Two trainings, the first recording its weights (snapshots.Recorder): the same bytes. The recorder
    only reads variables; one that called the encoder (whose Sampling layer advances its seed
    generator) or touched the data would change the second run's models."""
    from stages.lib import models, snapshots

    x_train, x_test = data
    outs = [tmp_path / "recorded", tmp_path / "plain"]
    metrics = [training.train("vae", P, x_train, x_test, outs[0], recorder=snapshots.Recorder()),
               training.train("vae", P, x_train, x_test, outs[1])]
    history = np.genfromtxt(outs[0] / "history.tsv", names=True, delimiter="\t")
    assert history["loss"][-1] < history["loss"][0] - 50
    assert history["test_loss"][-1] < history["test_loss"][0]
    assert metrics[0] == metrics[1]
    for name in ["encoder.keras", "decoder.keras", "history.tsv", "metrics.json"]:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    assert not (outs[1] / snapshots.FILE).exists()
    saved = json.loads((outs[0] / "metrics.json").read_text())
    assert set(saved) == {"test_reconstruction", "test_kl", "test_neg_elbo"}
    assert saved["test_neg_elbo"] == pytest.approx(saved["test_reconstruction"] + saved["test_kl"], abs=1e-3)

    # The snapshots: every epoch's encoder from 0, the initialisation (the same seeded build as
    # training's), to the saved one; the decoder at 1, 2 and the last (P trains 3 epochs).
    s = snapshots.load(outs[0] / snapshots.FILE)
    assert s.epochs["encoder"].tolist() == [0, 1, 2, 3] and s.epochs["decoder"].tolist() == [1, 2, 3]
    compute.seed_everything(P.seed)
    initial = models.build("vae", P.latent_dim, P.hidden, beta=P.beta, seed=P.seed)
    for part, start in (("encoder", 0), ("decoder", 1)):
        final = models.load(outs[0] / f"{part}.keras")
        paths = [w.path for w in final.weights]
        last = s.weights(part, P.epochs, paths)
        assert all(np.array_equal(a, b) for a, b in zip(last, final.get_weights())), part
        assert all(a.dtype == np.float32 for a in last)
        assert not all(np.array_equal(a, b) for a, b in zip(s.weights(part, start, paths), last)), part
    at_0 = s.weights("encoder", 0, [w.path for w in initial.encoder.weights])
    assert all(np.array_equal(a, b) for a, b in zip(at_0, initial.encoder.get_weights()))


def test_ae_training_lowers_the_loss(data, tmp_path: Path) -> None:
    x_train, x_test = data
    p = params.TrainParams(**{name: getattr(P, name) for name in params.TrainParams.model_fields})
    metrics = training.train("ae", p, x_train, x_test, tmp_path)
    history = np.genfromtxt(tmp_path / "history.tsv", names=True, delimiter="\t")
    assert history["test_reconstruction"][-1] < history["test_reconstruction"][0]
    assert set(metrics) == {"test_reconstruction"} and metrics["test_reconstruction"] < 300


def test_nan_loss_stops_with_a_clear_error_and_writes_nothing(data, tmp_path: Path) -> None:
    x_train, x_test = data
    x_bad = x_train.copy()
    x_bad[:1000] = np.nan
    with pytest.raises(training.TrainingError, match=r"train@vae: training diverged at epoch 1 of 3 .*no model"):
        training.train("vae", P, x_bad, x_test, tmp_path / "out")
    assert not (tmp_path / "out").exists()


TINY = P.model_copy(update={"hidden": (8, 4), "epochs": 2, "batch_size": 32})


def tiny_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((64, 28, 28)).astype(np.float32), rng.random((16, 28, 28)).astype(np.float32)


def test_a_non_finite_test_loss_stops_training_with_a_clear_error(tmp_path: Path) -> None:
    """One NaN pixel in the test set: the training loss stays finite, the test loss does not."""
    x_train, x_test = tiny_data()
    x_test[3, 5, 5] = np.nan
    with pytest.raises(training.TrainingError,
                       match=r"train@vae: the test loss became non-finite at epoch 1 of 2 \(.*test_loss=nan.*\) "
                             r"while the training loss stayed finite; no model was written"):
        training.train("vae", TINY, x_train, x_test, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_non_finite_test_loss_in_an_earlier_epoch_is_caught(tmp_path: Path) -> None:
    """Every epoch is checked, not only the last: a test loss that was infinite at epoch 1 only."""
    import keras

    class InfiniteFirstTestLoss(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == 0:
                logs["val_loss"] = float("inf")  # what History records for this epoch

    x_train, x_test = tiny_data()
    model = models_build()
    with pytest.raises(training.TrainingError, match=r"non-finite at epoch 1 of 2 \(test_loss=inf\)"):
        training.fit(model, x_train, x_test, TINY, "train@vae", callbacks=[InfiniteFirstTestLoss()])


def models_build():
    from stages.lib import models

    compute.seed_everything(0)
    return models.build("vae", 2, TINY.hidden, seed=0)


def test_cvae_generates_the_digit_it_is_asked_for(tmp_path: Path, mnist_dir: Path, monkeypatch) -> None:
    """A short real training: the conditional VAE's decodes carry the conditioning digit, and stage
    generate@cvae decodes its grid as the digit generate.cvae.digit names."""
    import keras

    from stages.lib import models

    arrays = mnist.fetch([], tmp_path / "c", 5, 0, env={"MNIST_MIRROR": str(mnist_dir)})
    x, y = arrays["x_train"][:10000].astype(np.float32) / 255, arrays["y_train"][:10000]
    x_test, y_test = arrays["x_test"][:500].astype(np.float32) / 255, arrays["y_test"][:500]
    training.train("cvae", P.model_copy(update={"epochs": 10, "batch_size": 64}), (x, models.one_hot(y)),
                   (x_test, models.one_hot(y_test)), tmp_path / "cvae")

    judge = models.build_classifier()
    judge.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    judge.fit(x, y, epochs=3, batch_size=64, verbose=0)
    assert judge.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"] > 0.9

    decoder = keras.saving.load_model(tmp_path / "cvae/decoder.keras", safe_mode=True)
    conditions = np.arange(500) % 10
    z = np.random.default_rng(0).standard_normal((500, 2)).astype(np.float32)
    predicted = judge.predict(models.decode(decoder, z, conditions), verbose=0).argmax(axis=1)
    accuracy = (predicted == conditions).mean()
    assert accuracy > 0.5, accuracy  # chance is 0.1

    # The stage itself, in a folder of its own: its manifold.npy for two choices of the digit.
    import shutil

    import yaml

    from stages import generate
    from tests.conftest import ROOT

    work = tmp_path / "stage"
    (work / "artifacts/cvae").mkdir(parents=True)
    shutil.copy(tmp_path / "cvae/decoder.keras", work / "artifacts/cvae/decoder.keras")
    monkeypatch.chdir(work)
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    for digit in (3, 7):
        committed["generate"]["cvae"]["digit"] = digit
        (work / "params.yaml").write_text(yaml.safe_dump(committed))
        generate.main("cvae")
        grid = np.load(work / "artifacts/cvae/manifold.npy", allow_pickle=False)
        labels = judge.predict(grid.reshape(-1, 28, 28), verbose=0).argmax(axis=1)
        assert (labels == digit).mean() > 0.5, (digit, np.bincount(labels, minlength=10))


# --- compute.threads: a train step in parts ---------------------------------------------------

TRAIN_IN_PARTS = """
import sys
from pathlib import Path
import numpy as np
from stages.lib import params, training
data = np.load(sys.argv[1], allow_pickle=False)
p = params.VAEParams.model_validate_json(sys.argv[2])
for parts in map(int, sys.argv[4:]):
    training.train("vae", p, data["x_train"], data["x_test"], Path(sys.argv[3]) / f"parts_{parts}", parts=parts)
"""


def test_a_step_in_two_parts_trains_the_same_bytes_on_one_thread_or_two(data, tmp_path: Path) -> None:
    """compute.threads: 2 computes each batch's gradient in two halves at once and sums them in order,
    so the bytes depend on the parts, not on how many threads run them: two parts on one inter-op
    thread (one after the other) and on two (at once) give the same files. Other bytes than one
    part, but the same objective: the training loss follows one part's closely."""
    from tests.conftest import ROOT, run, tool_env

    x_train, x_test = data
    np.savez(tmp_path / "data.npz", x_train=x_train[:1000], x_test=x_test)
    p = P.model_copy(update={"epochs": 2}).model_dump_json()
    for threads, parts in ((1, ["2"]), (2, ["2", "1"])):
        env = tool_env(**compute.environment(True, threads), PYTHONPATH=str(ROOT))
        run([sys.executable, "-c", TRAIN_IN_PARTS, str(tmp_path / "data.npz"), p, str(tmp_path / f"threads_{threads}"),
             *parts], tmp_path, env)
    files = ("encoder.keras", "decoder.keras", "history.tsv", "metrics.json")
    one, two = (tmp_path / f"threads_{t}" / "parts_2" for t in (1, 2))
    for name in files:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    whole = tmp_path / "threads_2" / "parts_1"
    assert (whole / "encoder.keras").read_bytes() != (two / "encoder.keras").read_bytes()
    halves, single = (np.genfromtxt(d / "history.tsv", names=True, delimiter="\t") for d in (two, whole))
    assert halves["loss"] == pytest.approx(single["loss"], rel=0.02)  # each half weighs its share of the batch


def test_the_parts_gradients_sum_to_the_whole_batchs() -> None:
    """The parts' gradients, each of its share of the batch mean, add up to the whole batch's (an AE:
    no noise), the last batch's uneven halves included."""
    import tensorflow as tf

    from stages.lib import models

    compute.seed_everything(0)
    model = models.build("ae", 2, (32, 8), seed=0)
    x = tf.constant(np.random.default_rng(0).random((37, 784), dtype=np.float32))
    with tf.GradientTape() as tape:
        loss = model.loss_terms(x, training=True)["loss"]
    whole = tape.gradient(loss, model.trainable_weights)
    halves = [model._part_gradients(x[a:b], tf.zeros(2, "int32"), (b - a) / 37) for a, b in ((0, 18), (18, 37))]
    for w, g1, g2 in zip(whole, halves[0][0], halves[1][0]):
        np.testing.assert_allclose(g1 + g2, w, rtol=1e-4, atol=1e-6)
    assert float(halves[0][1]["loss"] + halves[1][1]["loss"]) == pytest.approx(float(loss), rel=1e-6)


def test_more_parts_than_the_last_batch_has_images_is_a_clear_error() -> None:
    x_train, x_test = tiny_data()
    p = TINY.model_copy(update={"batch_size": len(x_train) - 1})  # a last batch of one image
    with pytest.raises(StageError, match=r"train@vae: compute.threads: 2 parts of each batch, but a batch "
                                         r"holds 1 image\(s\) \(64 images, batch_size 63\)"):
        training.fit(models_build(), x_train, x_test, p, "train@vae", parts=2)
    with pytest.raises(StageError, match=r"but a batch holds 1 image\(s\) \(64 images, batch_size 1\)"):
        training.fit(models_build(), x_train, x_test, TINY.model_copy(update={"batch_size": 1}), "train@vae", parts=2)
