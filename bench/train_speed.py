"""Seconds per AE training epoch: the notebook's plain setup against the project's, in one run.

    python -m bench.train_speed [--epochs 4] [--rounds 2]

Baseline, as in the notebook: ``model.fit`` on float64 arrays (uint8 / 255.0), batch 128,
Keras' mean binary cross-entropy, validation on the test set every epoch.
Project: ``stages.lib.training.fit`` (float32 tf.data, XLA, several steps per call, large
evaluation batches), same batch size. The first epoch (tracing and compiling) is excluded;
the two setups alternate for ``--rounds`` rounds so that machine noise hits both.
Losses are printed in nats per image (BCE summed over the 784 pixels) for both.
"""
from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np

from stages.lib import mnist, models, params, training


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None) -> None:
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:  # after validation
        self.times.append(time.perf_counter() - self.start)


def notebook_ae() -> keras.Model:
    """The notebook's AE, built as the notebook builds it."""
    image = keras.Input((28, 28))
    x = keras.layers.Flatten()(image)
    x = keras.layers.Dense(128, activation="relu")(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    encoder = keras.Model(image, keras.layers.Dense(2)(x))
    z = keras.Input((2,))
    x = keras.layers.Dense(16, activation="relu")(z)
    x = keras.layers.Dense(128, activation="relu")(x)
    x = keras.layers.Reshape((28, 28))(keras.layers.Dense(784, activation="sigmoid")(x))
    decoder = keras.Model(z, x)
    image = keras.Input((28, 28))
    return keras.Model(image, decoder(encoder(image)))


def run_baseline(x_train: np.ndarray, x_test: np.ndarray, epochs: int) -> tuple[list[float], float, float]:
    keras.utils.set_random_seed(0)
    model = notebook_ae()
    model.compile(optimizer="adam", loss="binary_crossentropy")
    timer = EpochTimer()
    h = model.fit(x_train, x_train, epochs=epochs, batch_size=128, validation_data=(x_test, x_test),
                  callbacks=[timer], verbose=0).history
    return timer.times, h["loss"][-1] * models.N_PIXELS, h["val_loss"][-1] * models.N_PIXELS


def run_project(x_train: np.ndarray, x_test: np.ndarray, epochs: int) -> tuple[list[float], float, float]:
    p = params.TrainParams(latent_dim=2, hidden=(128, 16), epochs=epochs, batch_size=128,
                           learning_rate=0.001, seed=0)
    training.seed_everything(p.seed)
    model = models.build("ae", p.latent_dim, p.hidden)
    timer = EpochTimer()
    h = training.fit(model, x_train, x_test, p, "bench", callbacks=[timer])
    return timer.times, h["reconstruction"][-1], h["test_reconstruction"][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per training (first one excluded)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both setups")
    args = parser.parse_args()

    x_train32, _, x_test32, _ = mnist.load()
    x_train64, x_test64 = x_train32.astype(np.float64), x_test32.astype(np.float64)
    results: dict[str, dict[str, list[float]]] = {"notebook": {}, "project": {}}
    for _ in range(args.rounds):
        for name, run in (("notebook", lambda: run_baseline(x_train64, x_test64, args.epochs)),
                          ("project", lambda: run_project(x_train32, x_test32, args.epochs))):
            times, loss, test_loss = run()
            r = results[name]
            r.setdefault("epochs", []).extend(times[1:])
            r.setdefault("loss", []).append(loss)
            r.setdefault("test_loss", []).append(test_loss)

    print(f"AE, batch 128, {args.epochs} epochs x {args.rounds} rounds, first epoch of each excluded")
    print(f"{'setup':10} {'s/epoch (median)':>17} {'train loss':>11} {'test loss':>10}   (nats per image)")
    median = {}
    for name, r in results.items():
        median[name] = statistics.median(r["epochs"])
        print(f"{name:10} {median[name]:17.3f} {np.mean(r['loss']):11.2f} {np.mean(r['test_loss']):10.2f}")
    print(f"speed-up (notebook / project): {median['notebook'] / median['project']:.2f}x")


if __name__ == "__main__":
    main()
