"""Training and evaluation shared by the training stages (train@<model>, train_classifier, beta_sweep): seeding, input pipeline, fit, outputs.

The fast setup (measured by ``make bench``, see README): float32 pixel vectors
in a ``tf.data`` pipeline built once, the train step compiled with XLA, several
steps per call into TensorFlow, and evaluation in large batches.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import keras
import tensorflow as tf

from stages.lib import StageError, models
from stages.lib.compute import seed_everything
from stages.lib.files import atomic_folder, json_text, tsv_text, write_npz, write_text

if TYPE_CHECKING:  # a type only: params.py holds no computation (tests/test_map.py)
    from stages.lib.params import TrainParams

STEPS_PER_EXECUTION = 64   # train steps per call into TensorFlow; amortises Python overhead
EVAL_BATCH_SIZE = 2000     # evaluation needs no small batches

# With tf.data's autotuner on, epochs here often took exactly 0.63, 1.27 or 2.55 s:
# 10 ms x (2^k - 1), the times its optimisation loop wakes up, as if the epoch's end waited
# for it; with it off, never. This pipeline (shuffle, batch, prefetch) has nothing to tune.
NO_AUTOTUNE = tf.data.Options()
NO_AUTOTUNE.autotune.enabled = False


class TrainingError(StageError):
    """Training diverged; no model was written."""


def dataset(data: Any, batch_size: int, shuffle_seed: int | None = None,
            binarize_seed: int | None = None) -> tf.data.Dataset:
    """Batches of ``data`` (an array or a tuple of arrays whose first holds the pixels), reshuffled
    each epoch when seeded; with ``binarize_seed``, the pixels drawn as Bernoulli(intensity)
    anew each epoch (dynamic binarization, data.binarize: dynamic)."""
    ds = tf.data.Dataset.from_tensor_slices(data)
    if shuffle_seed is not None:
        n = len(data[0]) if isinstance(data, tuple) else len(data)
        ds = ds.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if binarize_seed is not None:
        # One stateless seed pair per batch, from a stream drawn anew each epoch: the same
        # draws on every run and every CPU (Philox), different ones each epoch.
        seeds = tf.data.Dataset.random(seed=binarize_seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(_binarize_batch)
    return ds.prefetch(2).with_options(NO_AUTOTUNE)


def _binarize_batch(batch: Any, seed: tf.Tensor) -> Any:
    pixels = batch[0] if isinstance(batch, tuple) else batch
    drawn = tf.cast(tf.random.stateless_uniform(tf.shape(pixels), seed=seed) < pixels, pixels.dtype)
    return (drawn, *batch[1:]) if isinstance(batch, tuple) else drawn


def as_vectors(data: Any) -> Any:
    """Images (n, 28, 28), or an (images, labels) tuple, with the images as the models' pixel vectors."""
    if isinstance(data, tuple):
        return (models.flatten(data[0]), *data[1:])
    return models.flatten(data)


def compile_fast(model: keras.Model, learning_rate: float, **compile_args: Any) -> None:
    """Adam, the train step compiled with XLA (on the CPU), STEPS_PER_EXECUTION steps per call.

    ``compile_args`` (loss, metrics) serve a model without its own train_step: the classifier.
    """
    with models.xla_allowed():
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), steps_per_execution=STEPS_PER_EXECUTION,
                      jit_compile=models.use_xla(), **compile_args)


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop at the end of the first epoch whose logs (training or test terms) hold a NaN or infinity.

    keras.callbacks.TerminateOnNaN watches the training loss only; a test set that gives a
    non-finite loss would otherwise train every epoch for nothing.
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if any(not math.isfinite(float(v)) for v in (logs or {}).values()):
            self.model.stop_training = True


class Recorder(Protocol):
    """A callback that records something through training, written beside the models as one NPZ
    (stages/lib/snapshots.py's, for train@<model>)."""
    file: str

    def arrays(self) -> dict[str, Any]: ...


def fit(model: models.AE, train: Any, test: Any, p: TrainParams, stage: str,
        callbacks: Sequence[keras.callbacks.Callback] = (), binarize: str = "none") -> dict[str, list[float]]:
    """Train with Adam on images (or (images, labels)); return the per-epoch history
    (train terms and ``test_`` terms). ``binarize="dynamic"`` draws the training pixels anew each
    epoch (the test set comes binarized from ``mnist.load``).

    Raises TrainingError if a training or test term becomes NaN or infinite in any epoch.
    """
    compile_fast(model, p.learning_rate)
    history = model.fit(
        dataset(as_vectors(train), p.batch_size, shuffle_seed=p.seed,
                binarize_seed=p.seed if binarize == "dynamic" else None), epochs=p.epochs,
        validation_data=dataset(as_vectors(test), EVAL_BATCH_SIZE), shuffle=False,  # tf.data shuffles
        callbacks=[keras.callbacks.TerminateOnNaN(), StopOnNonFinite(), *callbacks],
        verbose=1 if sys.stdout.isatty() else 2)
    h = {("test_" + k[4:] if k.startswith("val_") else k): v for k, v in history.history.items()}
    epochs_run = len(h.get("loss", []))
    # The first epoch with a non-finite term, and those terms (every epoch, not only the last).
    bad_epoch = next((i for i in range(epochs_run)
                      if any(i < len(v) and not math.isfinite(v[i]) for v in h.values())), None)
    if bad_epoch is None and epochs_run == p.epochs:
        return h
    if bad_epoch is None:  # TerminateOnNaN stopped mid-epoch: that epoch logged no values
        bad_epoch, bad = epochs_run - 1, {}
    else:
        bad = {n: v[bad_epoch] for n, v in h.items() if bad_epoch < len(v) and not math.isfinite(v[bad_epoch])}
    shown = ", ".join(f"{n}={v}" for n, v in sorted(bad.items())) or "non-finite loss"
    if bad and all(n.startswith("test_") for n in bad):
        raise TrainingError(
            f"{stage}: the test loss became non-finite at epoch {bad_epoch + 1} of {p.epochs} ({shown}) "
            "while the training loss stayed finite; no model was written. Check the test data "
            "(NaN or infinite pixels?).")
    raise TrainingError(
        f"{stage}: training diverged at epoch {max(bad_epoch + 1, 1)} of {p.epochs} ({shown}); "
        f"no model was written. Try a smaller learning_rate (now {p.learning_rate}).")


def evaluate(model: models.AE, test: Any) -> dict[str, float]:
    """The loss terms on the whole test set, in nats per image."""
    return {k: float(v) for k, v in model.evaluate(dataset(as_vectors(test), EVAL_BATCH_SIZE), verbose=0,
                                                   return_dict=True).items()}


def write_outputs(out_dir: Path, model: models.AE, history: dict[str, list[float]],
                  metrics: dict[str, float], recorder: Recorder | None = None) -> None:
    """encoder.keras, decoder.keras, history.tsv, metrics.json (and the recorder's file), all or none.

    The texts are made (and metrics checked: a NaN raises a StageError naming the file and the
    key) before anything is written; then the four files are written into a staging folder and
    moved into ``out_dir`` together, so a failure never leaves new models beside old metrics.
    """
    columns = {"epoch": list(range(1, len(history["loss"]) + 1))}
    columns.update({k: history[k] for k in sorted(history)})
    history_text = tsv_text(columns)
    metrics_text = json_text(metrics, name=out_dir / "metrics.json")
    with atomic_folder(out_dir) as staging:
        models.save(model.encoder, staging / "encoder.keras")
        models.save(model.decoder, staging / "decoder.keras")
        write_text(staging / "history.tsv", history_text)
        write_text(staging / "metrics.json", metrics_text)
        if recorder is not None:
            write_npz(staging / recorder.file, recorder.arrays())


def train(kind: str, p: TrainParams, train_data: Any, test_data: Any, out_dir: Path,
          binarize: str = "none", recorder: Recorder | None = None) -> dict[str, float]:
    """Seed, build, fit and evaluate one model; write its outputs; return its metrics.

    ``kind`` is "ae", "vae" or "cvae" (whose data are (images, one-hot labels) tuples).
    ``recorder``: a callback that records through training (snapshots.Recorder); its file is
    written with the models.
    """
    seed_everything(p.seed)
    model = models.build(kind, p.latent_dim, p.hidden, beta=getattr(p, "beta", 1.0), seed=p.seed)
    history = fit(model, train_data, test_data, p, f"train@{kind}", binarize=binarize,
                  callbacks=[recorder] if recorder is not None else ())
    test = evaluate(model, test_data)
    metrics = {"test_reconstruction": test["reconstruction"]}
    if kind != "ae":
        # The negative ELBO whatever beta was trained with: comparable across betas.
        metrics.update(test_kl=test["kl"], test_neg_elbo=test["reconstruction"] + test["kl"])
    write_outputs(out_dir, model, history, metrics, recorder)
    return metrics
