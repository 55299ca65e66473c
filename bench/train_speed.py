"""Seconds per AE training epoch: the notebook's plain setup against the project's, in one run.

    python -m bench.train_speed [--epochs 8]

Baseline, as in the notebook: one ``model.fit`` on float64 arrays (uint8 / 255.0), batch 128,
Keras' mean binary cross-entropy, validation on the test set every epoch.
Project: the pipeline's setup (``training.compile_fast`` and ``training.dataset``: float32 pixel
vectors in tf.data, XLA, several steps per call, large evaluation
batches), same batch size.

The machines here are shared and their speed drifts by 2x within minutes, so the two run in
lockstep: after each notebook epoch (timed by a callback, validation included), the project
trains one epoch, timed the same way. The speed-up is the median of these adjacent pairs'
ratios; the first pair (tracing and compiling) is excluded. Calling ``fit`` once per epoch
costs the project a little (a new epoch iterator each time), so the ratio is, if anything,
understated. Losses are printed in nats per image (BCE summed over the 784 pixels).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import keras
import numpy as np

from bench.notebook_reference import notebook_ae
from stages.lib import compute, mnist, models, training


class Lockstep(keras.callbacks.Callback):
    """Times each notebook epoch, then runs and times one project epoch right after it."""

    def __init__(self, project_epoch: Callable[[int], None]):
        super().__init__()
        self.project_epoch = project_epoch
        self.notebook: list[float] = []
        self.project: list[float] = []

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:  # after the notebook's validation
        self.notebook.append(time.perf_counter() - self.start)
        start = time.perf_counter()
        self.project_epoch(epoch)
        self.project.append(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="epochs of each setup (the first pair excluded)")
    args = parser.parse_args()

    x_train, _, x_test, _ = mnist.load()

    compute.seed_everything(0)
    project = models.build("ae", 2, (128, 16))
    training.compile_fast(project, 0.001)
    train = training.dataset(training.as_vectors(x_train), 128, shuffle_seed=0)
    test = training.dataset(training.as_vectors(x_test), training.EVAL_BATCH_SIZE)
    project_logs: dict[str, list[float]] = {}

    def project_epoch(epoch: int) -> None:
        h = project.fit(train, initial_epoch=epoch, epochs=epoch + 1, validation_data=test, verbose=0)
        for k, v in h.history.items():
            project_logs.setdefault(k, []).extend(v)

    keras.utils.set_random_seed(0)
    notebook = notebook_ae()
    notebook.compile(optimizer="adam", loss="binary_crossentropy")
    x_train64, x_test64 = x_train.astype(np.float64), x_test.astype(np.float64)  # the notebook's / 255.0
    lockstep = Lockstep(project_epoch)
    h = notebook.fit(x_train64, x_train64, epochs=args.epochs, batch_size=128,
                     validation_data=(x_test64, x_test64), callbacks=[lockstep], verbose=0).history

    pairs = list(zip(lockstep.notebook, lockstep.project))[1:]
    print(f"AE, batch 128, {args.epochs} epochs each in lockstep, first pair excluded")
    print("epoch times (s), notebook / project: " + "  ".join(f"{a:.2f}/{b:.2f}" for a, b in pairs))
    print(f"{'setup':10} {'s/epoch (median)':>17} {'train loss':>11} {'test loss':>10}   (nats per image)")
    rows = (("notebook", [a for a, _ in pairs], h["loss"][-1] * models.N_PIXELS, h["val_loss"][-1] * models.N_PIXELS),
            ("project", [b for _, b in pairs], project_logs["loss"][-1], project_logs["val_loss"][-1]))
    for name, times, loss, test_loss in rows:
        print(f"{name:10} {statistics.median(times):17.3f} {loss:11.2f} {test_loss:10.2f}")
    ratios = [a / b for a, b in pairs]
    print(f"speed-up (notebook / project), median of paired epochs: {statistics.median(ratios):.2f}x "
          f"(pairs range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
