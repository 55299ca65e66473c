"""Training and evaluation shared by the training stages (train@<model>, train_classifier, beta_sweep, paper_train): seeding, input pipeline, fit, outputs.

The fast setup (measured by ``make bench``, see README): float32 pixel vectors
in a ``tf.data`` pipeline built once, the train step compiled with XLA, several
steps per call into TensorFlow, and evaluation in large batches.

A VAE's protocol may add (params kl_warmup_epochs, validation, patience; all off by default, and
then nothing here changes what is computed): a linear KL warm-up, a validation split held out of
the training images, and early stopping on its -ELBO that keeps the best epoch's weights.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import keras
import numpy as np
import tensorflow as tf

from stages.lib import StageError, mnist, models
from stages.lib.compute import seed_everything
from stages.lib.files import atomic_folder, json_text, tsv_text, write_npz, write_text

if TYPE_CHECKING:  # a type only: params.py holds no computation (tests/test_map.py)
    from stages.lib.params import TrainParams

STEPS_PER_EXECUTION = 64   # train steps per call into TensorFlow; amortises Python overhead
EVAL_BATCH_SIZE = 2000     # evaluation needs no small batches
# The validation split's images are binarized once (data.binarize: dynamic) with their own fixed
# draw, beside mnist's TEST_BINARIZATION_SEED (0) and TRAIN_BINARIZATION_SEED (1).
VALIDATION_BINARIZATION_SEED = 2

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


def compile_fast(model: keras.Model, learning_rate: float, parts: int = 1, **compile_args: Any) -> None:
    """Adam, the train step compiled with XLA (on the CPU), STEPS_PER_EXECUTION steps per call.

    ``parts`` (compute.threads; an AE, VAE or CVAE): each step's batch in that many parts at once.
    ``compile_args`` (loss, metrics) serve a model without its own train_step: the classifier.
    """
    if parts > 1:
        model.parts = parts
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


def kl_weight(beta: float, warmup_epochs: int, epoch: int) -> float:
    """The KL weight of 1-based ``epoch`` under a linear warm-up: beta * min(1, epoch / warmup_epochs).

    Epoch 1 trains with beta / W, epoch W and every later one with beta; no warm-up (W = 0): beta.
    """
    return beta * min(1.0, epoch / warmup_epochs) if warmup_epochs else beta


class KLWarmup(keras.callbacks.Callback):
    """Sets the VAE's KL weight at the start of each epoch, as ``kl_weight`` says.

    The weight is a non-trainable variable (``model.beta``) that the compiled train step reads at
    every step; a Python number would be compiled into the step as a constant. Logs the value the
    epoch trained with as ``kl_weight`` (a history column).
    """

    def __init__(self, beta: float, warmup_epochs: int):
        super().__init__()
        self.beta, self.warmup_epochs = beta, warmup_epochs

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.model.beta.assign(kl_weight(self.beta, self.warmup_epochs, epoch + 1))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["kl_weight"] = float(keras.ops.convert_to_numpy(self.model.beta))


class LogNegELBO(keras.callbacks.Callback):
    """Adds the -ELBO, reconstruction + KL whatever the KL weight, to each epoch's logs (``neg_elbo``,
    and ``val_neg_elbo`` on the validation data): what early stopping watches, not the weighted loss."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for prefix in ("", "val_"):
            if logs is not None and f"{prefix}reconstruction" in logs and f"{prefix}kl" in logs:
                logs[f"{prefix}neg_elbo"] = logs[f"{prefix}reconstruction"] + logs[f"{prefix}kl"]


def early_stopping(patience: int, kl_warmup_epochs: int) -> keras.callbacks.EarlyStopping:
    """Stop after ``patience`` epochs without a lower validation -ELBO; keep the best epoch's weights.

    Watched from the first epoch with the full KL weight (epoch max(W, 1), 1-based): during the
    warm-up the -ELBO of a model that pays less for its KL is not the model the protocol selects.
    """
    return keras.callbacks.EarlyStopping(monitor="val_neg_elbo", mode="min", patience=patience,
                                         restore_best_weights=True, start_from_epoch=max(kl_warmup_epochs - 1, 0))


class EpochLine(keras.callbacks.Callback):
    """One line per epoch (for logs, and two runs side by side): KL weight, losses, the validation
    -ELBO and the best one so far, seconds per epoch and the most time left in the epoch budget."""

    def __init__(self, stage: str, epochs: int, stopper: keras.callbacks.EarlyStopping | None = None):
        super().__init__()
        self.stage, self.epochs, self.stopper = stage, epochs, stopper

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs, done = logs or {}, epoch + 1
        per_epoch = (time.perf_counter() - self.start) / done
        parts = [f"{self.stage}: epoch {done}/{self.epochs}"]
        if "kl_weight" in logs:
            parts.append(f"KL weight {logs['kl_weight']:.3g}")
        parts.append(f"loss {logs.get('loss', math.nan):.2f}")
        if "val_neg_elbo" in logs:
            parts.append(f"validation -ELBO {logs['val_neg_elbo']:.2f}")
        if self.stopper is not None and self.stopper.best is not None:
            parts.append(f"best {self.stopper.best:.2f} at epoch {self.stopper.best_epoch + 1} "
                         f"(stops if none better in {self.stopper.patience - self.stopper.wait} more)")
        left = (self.epochs - done) * per_epoch
        parts.append(f"{per_epoch:.1f} s/epoch, at most {left // 3600:.0f} h {left % 3600 / 60:02.0f} min left")
        print(", ".join(parts), flush=True)


def split_validation(data: Any, n: int, seed: int, binarize: str = "none") -> tuple[Any, Any]:
    """``n`` images (and their labels) held out of ``data`` by ``seed``: (training, validation), each
    like ``data`` (an array, or a tuple whose first holds the images), both in their original order.

    Under ``binarize="dynamic"`` the validation images are binarized once, like the test set.
    """
    arrays = data if isinstance(data, tuple) else (data,)
    total = len(arrays[0])
    if not 0 < n < total:
        raise StageError(f"validation split: {n} of {total} training images; expected 0 < n < {total}")
    held = np.zeros(total, dtype=bool)
    held[np.random.default_rng(seed).permutation(total)[:n]] = True
    train, validation = tuple(a[~held] for a in arrays), tuple(a[held] for a in arrays)
    if binarize == "dynamic":
        validation = (mnist.binarized(validation[0], VALIDATION_BINARIZATION_SEED), *validation[1:])
    return (train, validation) if isinstance(data, tuple) else (train[0], validation[0])


def fit(model: models.AE, train: Any, test: Any, p: TrainParams, stage: str,
        callbacks: Sequence[keras.callbacks.Callback] = (), binarize: str = "none",
        validation_name: str = "test", verbose: int | None = None, parts: int = 1) -> dict[str, list[float]]:
    """Train with Adam on images (or (images, labels)); return the per-epoch history
    (train terms and ``test_`` terms, or ``<validation_name>_`` terms when ``test`` is a validation
    split). ``binarize="dynamic"`` draws the training pixels anew each epoch (the test set comes
    binarized from ``mnist.load``). ``verbose``: Keras' own progress output (default: a bar on a
    terminal, a line per epoch otherwise).

    Raises TrainingError if a training or test term becomes NaN or infinite in any epoch. A run
    that an EarlyStopping callback ended before ``p.epochs`` is not an error. ``parts``: compute.threads.
    """
    n = len(train[0]) if isinstance(train, tuple) else len(train)
    smallest = n % p.batch_size or p.batch_size  # the last batch, the shortest (or all are full)
    if smallest < parts:  # a part of no image has no mean
        raise StageError(f"{stage}: compute.threads: {parts} parts of each batch, but a batch holds "
                         f"{smallest} image(s) ({n} images, batch_size {p.batch_size}); use fewer threads "
                         f"or another batch_size")
    compile_fast(model, p.learning_rate, parts)
    history = model.fit(
        dataset(as_vectors(train), p.batch_size, shuffle_seed=p.seed,
                binarize_seed=p.seed if binarize == "dynamic" else None), epochs=p.epochs,
        validation_data=dataset(as_vectors(test), EVAL_BATCH_SIZE), shuffle=False,  # tf.data shuffles
        callbacks=[keras.callbacks.TerminateOnNaN(), StopOnNonFinite(), *callbacks],
        verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose)
    h = {(f"{validation_name}_" + k[4:] if k.startswith("val_") else k): v for k, v in history.history.items()}
    epochs_run = len(h.get("loss", []))
    # The first epoch with a non-finite term, and those terms (every epoch, not only the last).
    bad_epoch = next((i for i in range(epochs_run)
                      if any(i < len(v) and not math.isfinite(v[i]) for v in h.values())), None)
    stopped_early = any(isinstance(c, keras.callbacks.EarlyStopping) and c.stopped_epoch > 0 for c in callbacks)
    if bad_epoch is None and (epochs_run == p.epochs or stopped_early):
        return h
    if bad_epoch is None:  # TerminateOnNaN stopped mid-epoch: that epoch logged no values
        bad_epoch, bad = epochs_run - 1, {}
    else:
        bad = {n: v[bad_epoch] for n, v in h.items() if bad_epoch < len(v) and not math.isfinite(v[bad_epoch])}
    shown = ", ".join(f"{n}={v}" for n, v in sorted(bad.items())) or "non-finite loss"
    if bad and all(n.startswith(f"{validation_name}_") for n in bad):
        raise TrainingError(
            f"{stage}: the {validation_name} loss became non-finite at epoch {bad_epoch + 1} of {p.epochs} "
            f"({shown}) while the training loss stayed finite; no model was written. Check the "
            f"{validation_name} data (NaN or infinite pixels?).")
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


def fit_scored(kind: str, p: TrainParams, train_data: Any, test_data: Any, stage: str, binarize: str = "none",
               progress: bool = False, recorder: Recorder | None = None, scale: str = "log_var", parts: int = 1
               ) -> tuple[models.AE, dict[str, list[float]], dict[str, float]]:
    """Seed, build and fit one model under ``p``'s protocol, and score it on the test set: (model,
    history, metrics). ``kind`` is "ae", "vae" or "cvae" (whose data are (images, one-hot labels)).

    A VAE's ``p.kl_warmup_epochs``, ``p.validation`` and ``p.patience``, when set, add the KL warm-up,
    the validation split (drawn from ``train_data``) and early stopping; the metrics then also hold
    ``best_epoch`` and ``epochs_run`` (1-based) and the best ``validation_neg_elbo``. ``progress``:
    one EpochLine per epoch instead of Keras' output. ``recorder``: a callback that records through
    training (snapshots.Recorder), first in line, so that it sees each epoch's weights before an early
    stopping restores the best ones. ``scale``: how a VAE's encoder predicts its spread (models.build).
    ``parts``: compute.threads, the parts of each train step's batch (models.AE.train_step).
    """
    seed_everything(p.seed)
    beta, warmup = getattr(p, "beta", 1.0), getattr(p, "kl_warmup_epochs", 0)
    # With a warm-up the KL weight is a variable the compiled step reads; without, the constant it always was.
    weight = keras.Variable(kl_weight(beta, warmup, 1), dtype="float32", trainable=False, name="kl_weight") \
        if warmup else beta
    model = models.build(kind, p.latent_dim, p.hidden, beta=weight, seed=p.seed, scale=scale)
    callbacks: list[keras.callbacks.Callback] = [recorder] if recorder is not None else []
    if warmup:
        callbacks.append(KLWarmup(beta, warmup))
    validation = None
    if getattr(p, "validation", 0):
        train_data, validation = split_validation(train_data, p.validation, p.validation_seed, binarize)
    if warmup or validation is not None:
        callbacks.append(LogNegELBO())
    stopper = early_stopping(p.patience, warmup) if getattr(p, "patience", 0) else None
    if stopper is not None:
        if validation is None:
            raise StageError(f"{stage}: early stopping needs a validation split (validation > 0)")
        callbacks.append(stopper)
    if progress:
        callbacks.append(EpochLine(stage, p.epochs, stopper))
    history = fit(model, train_data, test_data if validation is None else validation, p, stage,
                  callbacks=callbacks, binarize=binarize, validation_name="test" if validation is None else "validation",
                  verbose=0 if progress else None, parts=parts)
    test = evaluate(model, test_data)
    metrics = {"test_reconstruction": test["reconstruction"]}
    if kind != "ae":
        # The negative ELBO whatever beta was trained with: comparable across betas.
        metrics.update(test_kl=test["kl"], test_neg_elbo=test["reconstruction"] + test["kl"])
    if stopper is not None:
        metrics.update(best_epoch=stopper.best_epoch + 1, epochs_run=len(history["loss"]),
                       validation_neg_elbo=float(stopper.best))
    return model, history, metrics


def train(kind: str, p: TrainParams, train_data: Any, test_data: Any, out_dir: Path,
          binarize: str = "none", stage: str | None = None, progress: bool = False,
          recorder: Recorder | None = None, scale: str = "log_var", parts: int = 1) -> dict[str, float]:
    """Seed, build, fit and evaluate one model (``fit_scored``); write its outputs; return its metrics.

    ``kind`` is "ae", "vae" or "cvae" (whose data are (images, one-hot labels) tuples).
    ``recorder``: a callback that records through training (snapshots.Recorder); its file is
    written with the models. ``parts``: compute.threads.
    """
    model, history, metrics = fit_scored(kind, p, train_data, test_data, stage or f"train@{kind}", binarize, progress,
                                         recorder, scale, parts)
    write_outputs(out_dir, model, history, metrics, recorder)
    return metrics
