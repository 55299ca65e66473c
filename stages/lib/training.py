"""Training and evaluation shared by the train_* stages: seeding, input pipeline, fit, outputs.

The fast setup (measured by ``make bench``, see README): float32 pixel vectors
in a ``tf.data`` pipeline built once, the train step compiled with XLA, several
steps per call into TensorFlow, and evaluation in large batches.
"""
from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import keras
import tensorflow as tf

from stages.lib import StageError, models
from stages.lib.files import write_json, write_tsv
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


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow, and make TensorFlow's ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


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


@contextlib.contextmanager
def xla_allowed() -> Iterator[None]:
    """Let Keras compile with XLA although op determinism is on.

    Keras declines XLA whenever op determinism is enabled, because some XLA *GPU*
    kernels are not deterministic. On the CPU XLA is deterministic (the tests
    check the trained models byte for byte), and with several steps per call it
    makes an epoch about 1.7 times faster (README, Speed). So compile with
    determinism briefly off;
    on a GPU the caller does not ask for XLA.
    """
    from tensorflow.python.framework import config  # disable_op_determinism is not exported

    was_on = config.is_op_determinism_enabled()
    config.disable_op_determinism()
    try:
        yield
    finally:
        if was_on:
            tf.config.experimental.enable_op_determinism()


def as_vectors(data: Any) -> Any:
    """Images (n, 28, 28), or an (images, labels) tuple, with the images as the models' pixel vectors."""
    if isinstance(data, tuple):
        return (models.flatten(data[0]), *data[1:])
    return models.flatten(data)


def compile_fast(model: models.AE, learning_rate: float) -> None:
    """Adam, the train step compiled with XLA (on the CPU), STEPS_PER_EXECUTION steps per call."""
    with xla_allowed():
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), steps_per_execution=STEPS_PER_EXECUTION,
                      jit_compile=not tf.config.list_physical_devices("GPU"))


def fit(model: models.AE, train: Any, test: Any, p: TrainParams, stage: str,
        callbacks: Sequence[keras.callbacks.Callback] = (), binarize: str = "none") -> dict[str, list[float]]:
    """Train with Adam on images (or (images, labels)); return the per-epoch history
    (train terms and ``test_`` terms). ``binarize="dynamic"`` draws the training pixels anew each
    epoch (the test set comes binarized from ``mnist.load``).

    Raises TrainingError if the loss becomes NaN or infinite.
    """
    compile_fast(model, p.learning_rate)
    history = model.fit(
        dataset(as_vectors(train), p.batch_size, shuffle_seed=p.seed,
                binarize_seed=p.seed if binarize == "dynamic" else None), epochs=p.epochs,
        validation_data=dataset(as_vectors(test), EVAL_BATCH_SIZE), shuffle=False,  # tf.data shuffles
        callbacks=[keras.callbacks.TerminateOnNaN(), *callbacks],
        verbose=1 if sys.stdout.isatty() else 2)
    h = history.history
    epochs_run = len(h.get("loss", []))
    bad = [name for name, values in h.items() if values and not math.isfinite(values[-1])]
    if bad or epochs_run < p.epochs:
        raise TrainingError(
            f"{stage}: training diverged at epoch {epochs_run} of {p.epochs} "
            f"({', '.join(f'{n}={h[n][-1]}' for n in bad) or 'non-finite loss'}); no model was written. "
            f"Try a smaller learning_rate (now {p.learning_rate}).")
    return {("test_" + k[4:] if k.startswith("val_") else k): v for k, v in h.items()}


def evaluate(model: models.AE, test: Any) -> dict[str, float]:
    """The loss terms on the whole test set, in nats per image."""
    return {k: float(v) for k, v in model.evaluate(dataset(as_vectors(test), EVAL_BATCH_SIZE), verbose=0,
                                                   return_dict=True).items()}


def write_outputs(out_dir: Path, model: models.AE, history: dict[str, list[float]],
                  metrics: dict[str, float]) -> None:
    """encoder.keras, decoder.keras, history.tsv, metrics.json: each atomically."""
    models.save(model.encoder, out_dir / "encoder.keras")
    models.save(model.decoder, out_dir / "decoder.keras")
    columns = {"epoch": list(range(1, len(history["loss"]) + 1))}
    columns.update({k: history[k] for k in sorted(history)})
    write_tsv(out_dir / "history.tsv", columns)
    write_json(out_dir / "metrics.json", metrics)


def train(kind: str, p: TrainParams, train_data: Any, test_data: Any, out_dir: Path,
          binarize: str = "none") -> dict[str, float]:
    """Seed, build, fit and evaluate one model; write its outputs; return its metrics.

    ``kind`` is "ae", "vae" or "cvae" (whose data are (images, one-hot labels) tuples).
    """
    seed_everything(p.seed)
    model = models.build(kind, p.latent_dim, p.hidden, beta=getattr(p, "beta", 1.0), seed=p.seed)
    history = fit(model, train_data, test_data, p, f"train_{kind}", binarize=binarize)
    test = evaluate(model, test_data)
    metrics = {"test_reconstruction": test["reconstruction"]}
    if kind != "ae":
        # The negative ELBO whatever beta was trained with: comparable across betas.
        metrics.update(test_kl=test["kl"], test_neg_elbo=test["reconstruction"] + test["kl"])
    write_outputs(out_dir, model, history, metrics)
    return metrics
