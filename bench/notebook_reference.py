"""The notebook's own training against the project's, on our data, scored with our test metrics.

    python -m bench.notebook_reference [--epochs 50] [--seeds 0 1 2] [--models ae vae] [--out FILE]
    python -m bench.notebook_reference --time-only [--epochs 50]    (the notebook's two trainings, timed)

Trains the AE and the VAE as the notebook does (float64 inputs, Adam, batch 128,
the AE on Keras' mean binary cross-entropy, the VAE with the notebook's train_step:
reconstruction + KL *averaged* over the latent dimensions), then reports the
project's metrics on the full test set, in nats per image:
``ae.test_reconstruction`` and ``vae.test_neg_elbo`` (reconstruction + KL summed
over the latent dimensions). For each seed it also trains the project's model
(``stages.lib.training``, default params but the seed) and scores it the same way,
so the two sides are compared over the same seeds. docs/results.md gives the command.
"""
from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from stages.lib import mnist, models


class NotebookSampling(layers.Layer):
    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(shape=tf.shape(z_mean))
        return z_mean + tf.exp(0.5 * z_log_var) * epsilon


class NotebookVAE(keras.Model):
    """The notebook's VAE class, in Keras 3 spelling."""

    def __init__(self, encoder, decoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder

    def train_step(self, x):
        if isinstance(x, tuple):
            x = x[0]
        with tf.GradientTape() as tape:
            z_mean, z_log_var, z = self.encoder(x)
            x_prime = self.decoder(z)
            reconstruction_loss = tf.reduce_mean(keras.losses.binary_crossentropy(x, x_prime)) * 28 * 28
            kl_loss = -0.5 * tf.reduce_mean(1 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var))
            loss = reconstruction_loss + kl_loss
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        return {"loss": loss, "reconstruction_loss": reconstruction_loss, "kl_loss": kl_loss}


def dense_stack(x, sizes, last_activation=None):
    for units in sizes[:-1]:
        x = layers.Dense(units, activation="relu")(x)
    return layers.Dense(sizes[-1], activation=last_activation)(x)


def notebook_decoder() -> keras.Model:
    z = keras.Input(shape=(2,))
    x = dense_stack(z, [16, 128, 784], "sigmoid")
    return keras.Model(z, layers.Reshape((28, 28))(x))


def notebook_ae() -> keras.Model:
    """The notebook's AE: its encoder and decoder chained on a 28x28 image (also timed by make bench)."""
    image = keras.Input(shape=(28, 28))
    h = layers.Dense(16, activation="relu")(layers.Dense(128, activation="relu")(layers.Flatten()(image)))
    encoder = keras.Model(image, layers.Dense(2)(h))
    decoder = notebook_decoder()
    image = keras.Input(shape=(28, 28))
    return keras.Model(image, decoder(encoder(image)))


def train_ae(x_train, x_test, epochs: int) -> float:
    ae = notebook_ae()
    ae.compile(optimizer="adam", loss="binary_crossentropy")
    ae.fit(x_train, x_train, epochs=epochs, batch_size=128, validation_data=(x_test, x_test), verbose=2)
    decoded = ae.predict(x_test, batch_size=2000, verbose=0)
    return float(np.mean(models.reconstruction_loss(x_test.astype(np.float32), decoded)))


def notebook_vae() -> NotebookVAE:
    """The notebook's VAE: encoder with the Sampling layer, the decoder, its train_step (also timed by make bench)."""
    image = keras.Input(shape=(28, 28))
    h = layers.Dense(16, activation="relu")(layers.Dense(128, activation="relu")(layers.Flatten()(image)))
    z_mean, z_log_var = layers.Dense(2)(h), layers.Dense(2)(h)
    encoder = keras.Model(image, [z_mean, z_log_var, NotebookSampling()([z_mean, z_log_var])])
    return NotebookVAE(encoder, notebook_decoder())


def train_vae(x_train, x_test, epochs: int) -> dict[str, float]:
    vae = notebook_vae()
    vae.compile(optimizer=keras.optimizers.Adam())
    vae.fit(x_train, x_train, epochs=epochs, batch_size=128, verbose=2)
    z_mean, z_log_var, z = vae.encoder.predict(x_test, batch_size=2000, verbose=0)
    decoded = vae.decoder.predict(z, batch_size=2000, verbose=0)
    reconstruction = float(np.mean(models.reconstruction_loss(x_test.astype(np.float32), decoded)))
    kl = float(np.mean(models.kl_divergence(z_mean, z_log_var)))
    return {"test_reconstruction": reconstruction, "test_kl": kl, "test_neg_elbo": reconstruction + kl}


def project_model(kind: str, x_train, x_test, epochs: int, seed: int) -> dict[str, float]:
    from stages.lib import compute, training
    from stages.lib.params import VAEParams

    p = VAEParams(latent_dim=2, hidden=(128, 16), epochs=epochs, batch_size=128, learning_rate=0.001,
                  seed=seed, beta=1.0, kl_warmup_epochs=0, validation=0, validation_seed=0, patience=0)
    compute.seed_everything(seed)
    model = models.build(kind, p.latent_dim, p.hidden, beta=p.beta, seed=seed)
    training.fit(model, x_train, x_test, p, f"project {kind}")
    test = training.evaluate(model, x_test)
    if kind == "ae":
        return {"test_reconstruction": test["reconstruction"]}
    return {"test_reconstruction": test["reconstruction"], "test_kl": test["kl"],
            "test_neg_elbo": test["reconstruction"] + test["kl"]}


def time_only(kinds: list[str], x_train, x_test, epochs: int) -> None:
    """The notebook's trainings as the notebook runs them (fit only: no scoring), timed."""
    total = 0.0
    for kind in kinds:
        keras.utils.set_random_seed(0)
        start = time.perf_counter()
        if kind == "ae":
            ae = notebook_ae()
            ae.compile(optimizer="adam", loss="binary_crossentropy")
            ae.fit(x_train, x_train, epochs=epochs, batch_size=128, validation_data=(x_test, x_test), verbose=0)
        else:
            vae = notebook_vae()
            vae.compile(optimizer=keras.optimizers.Adam())
            vae.fit(x_train, x_train, epochs=epochs, batch_size=128, verbose=0)
        seconds = time.perf_counter() - start
        total += seconds
        print(f"notebook {kind}: {epochs} epochs in {seconds:.1f} s ({seconds / epochs:.2f} s/epoch)", flush=True)
    print(f"notebook trainings ({' + '.join(kinds)}): {total:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--models", nargs="+", choices=["ae", "vae"], default=["ae", "vae"])
    parser.add_argument("--out", default="notebook_reference.json")
    parser.add_argument("--time-only", action="store_true",
                        help="only train the notebook's models, once each (seed 0), and print their wall times")
    args = parser.parse_args()
    x32, _, x_test32, _ = mnist.load()
    x_train, x_test = x32.astype(np.float64), x_test32.astype(np.float64)  # the notebook's / 255.0
    if args.time_only:
        return time_only(args.models, x_train, x_test, args.epochs)
    notebook = {"ae": lambda: {"test_reconstruction": train_ae(x_train, x_test, args.epochs)},
                "vae": lambda: train_vae(x_train, x_test, args.epochs)}
    result: dict = {"epochs": args.epochs, "runs": []}
    for seed in args.seeds:
        for kind in args.models:
            keras.utils.set_random_seed(seed)
            result["runs"].append({"seed": seed, "model": kind, "notebook": notebook[kind](),
                                   "project": project_model(kind, x32, x_test32, args.epochs, seed)})
            with open(args.out, "w") as f:  # after every run: a long job keeps what it has
                f.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    key = {"ae": "test_reconstruction", "vae": "test_neg_elbo"}
    for kind in args.models:
        runs = [r for r in result["runs"] if r["model"] == kind]
        for side in ("notebook", "project"):
            values = [r[side][key[kind]] for r in runs]
            print(f"{kind} {key[kind]} {side:8}: mean {np.mean(values):.2f}, std {np.std(values):.2f}, "
                  f"runs {[round(v, 2) for v in values]}")


if __name__ == "__main__":
    main()
