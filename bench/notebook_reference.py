"""The notebook's own training, run on our data, scored with our test metrics.

    python -m bench.notebook_reference [--epochs 50] [--out notebook_reference.json]

Trains the AE and the VAE as the notebook does (float64 inputs, Adam, batch 128,
the AE on Keras' mean binary cross-entropy, the VAE with the notebook's train_step:
reconstruction + KL *averaged* over the latent dimensions), then reports the
project's metrics on the full test set, in nats per image:
``ae.test_reconstruction`` and ``vae.test_neg_elbo`` (reconstruction + KL summed
over the latent dimensions). README.md compares these with the pipeline's metrics.
"""
from __future__ import annotations

import argparse
import json

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


def train_ae(x_train, x_test, epochs: int) -> float:
    image = keras.Input(shape=(28, 28))
    h = layers.Dense(16, activation="relu")(layers.Dense(128, activation="relu")(layers.Flatten()(image)))
    encoder = keras.Model(image, layers.Dense(2)(h))
    decoder = notebook_decoder()
    image = keras.Input(shape=(28, 28))
    ae = keras.Model(image, decoder(encoder(image)))
    ae.compile(optimizer="adam", loss="binary_crossentropy")
    ae.fit(x_train, x_train, epochs=epochs, batch_size=128, validation_data=(x_test, x_test), verbose=2)
    decoded = ae.predict(x_test, batch_size=2000, verbose=0)
    return float(np.mean(models.reconstruction_loss(x_test.astype(np.float32), decoded)))


def train_vae(x_train, x_test, epochs: int) -> dict[str, float]:
    image = keras.Input(shape=(28, 28))
    h = layers.Dense(16, activation="relu")(layers.Dense(128, activation="relu")(layers.Flatten()(image)))
    z_mean, z_log_var = layers.Dense(2)(h), layers.Dense(2)(h)
    encoder = keras.Model(image, [z_mean, z_log_var, NotebookSampling()([z_mean, z_log_var])])
    decoder = notebook_decoder()
    vae = NotebookVAE(encoder, decoder)
    vae.compile(optimizer=keras.optimizers.Adam())
    vae.fit(x_train, x_train, epochs=epochs, batch_size=128, verbose=2)
    z_mean, z_log_var, z = encoder.predict(x_test, batch_size=2000, verbose=0)
    decoded = decoder.predict(z, batch_size=2000, verbose=0)
    reconstruction = float(np.mean(models.reconstruction_loss(x_test.astype(np.float32), decoded)))
    kl = float(np.mean(models.kl_divergence(z_mean, z_log_var)))
    return {"test_reconstruction": reconstruction, "test_kl": kl, "test_neg_elbo": reconstruction + kl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--out", default="notebook_reference.json")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    x_train, _, x_test, _ = mnist.load()
    x_train, x_test = x_train.astype(np.float64), x_test.astype(np.float64)  # the notebook's / 255.0
    result = {"epochs": args.epochs,
              "ae": {"test_reconstruction": train_ae(x_train, x_test, args.epochs)},
              "vae": train_vae(x_train, x_test, args.epochs)}
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    with open(args.out, "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
