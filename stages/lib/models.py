"""The notebook's models in Keras 3, side by side: AE, VAE and conditional VAE.

    encoder:  784 pixels -> Dense(128, relu) -> Dense(16, relu) -> latent
    decoder:  latent -> Dense(16, relu) -> Dense(128, relu) -> Dense(784, sigmoid) -> 784 pixels

The AE's encoder outputs a point z; the VAE's outputs (z_mean, z_log_var) and
draws z with the Sampling layer. The conditional VAE feeds the one-hot digit
label to both the encoder and the decoder. Encoder and decoder are separate
``keras.Model``s, saved as separate ``.keras`` files.

The models see an image as a flat vector of 784 pixels, the notebook's first
layer, and the train step holds no Flatten or Reshape: the data are flattened
once, before training. The stages pass and receive 28x28 images through
``encode`` and ``decode``.

Losses, in nats per image (summed over pixels or latent dimensions, mean over the batch):
    reconstruction = binary cross-entropy summed over the 784 pixels
    KL             = KL(N(z_mean, exp(z_log_var)) || N(0, I)) summed over the latent dimensions
    VAE loss       = reconstruction + beta * KL        (beta = 1: the negative ELBO)

The notebook averages its KL over the latent dimensions instead of summing it,
which is beta = 1 / latent_dim (0.5 for its 2-D latent space); ``vae.beta: 0.5``
reproduces it.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of logs

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers, ops  # noqa: E402

IMAGE_SHAPE = (28, 28)
N_PIXELS = 28 * 28
N_CLASSES = 10


# --- the Sampling layer -------------------------------------------------------------

@keras.saving.register_keras_serializable(package="vae_basics")
class Sampling(layers.Layer):
    """z = z_mean + exp(z_log_var / 2) * epsilon, epsilon ~ N(0, I): the reparameterisation trick.

    The network predicts the log-variance, so the standard deviation is positive without constraints.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.part_seed = None  # set while a split train step traces one part (AE.train_step)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        if self.part_seed is None:
            epsilon = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        else:  # the step drew this part's seed: parts run at once and must not both advance the generator
            epsilon = tf.random.stateless_normal(ops.shape(z_mean), self.part_seed)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="vae_basics")
class LogVarianceOfScale(layers.Layer):
    """z_log_var = 2 log(sigma) for sigma = softplus(h): the scale as Davidson et al.'s example predicts it.

    An alternative to predicting z_log_var directly (docs/paper.md). The encoder's outputs stay
    (z_mean, z_log_var, z), so the loss, the Sampling layer and every stage read it unchanged.
    log(softplus(h)) underflows for h below about -87 in float32; there it equals h to rounding, and
    the branch not taken gets a safe input so that its gradient cannot be NaN.
    """

    def call(self, h):
        low = h < -20.0
        return 2.0 * ops.where(low, h, ops.log(ops.softplus(ops.where(low, 0.0, h))))


SCALES = ("log_var", "softplus")  # how a VAE's encoder predicts q(z|x)'s spread


# --- encoder and decoder ------------------------------------------------------------

def build_encoder(latent_dim: int, hidden: tuple[int, ...], variational: bool,
                  conditional: bool = False, seed: int | None = None, scale: str = "log_var") -> keras.Model:
    """AE: pixels -> z.  VAE: pixels -> (z_mean, z_log_var, z).  Conditional: (pixels, label) -> ...

    ``scale`` (a VAE's): "log_var", a Dense layer predicts z_log_var (the notebook's); "softplus",
    it predicts sigma = softplus(h) and LogVarianceOfScale turns it into z_log_var.
    """
    pixels = keras.Input((N_PIXELS,), name="pixels")
    inputs = x = pixels  # a single input, not a list of one: Keras warns when called with a bare tensor
    if conditional:
        label = keras.Input((N_CLASSES,), name="label")
        inputs = [pixels, label]
        x = layers.Concatenate(name="pixels_and_label")(inputs)
    # Explicit layer names: the saved files do not depend on what else the process built.
    for i, units in enumerate(hidden, 1):
        x = layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
    if not variational:
        return keras.Model(inputs, layers.Dense(latent_dim, name="z")(x), name="encoder")
    z_mean = layers.Dense(latent_dim, name="z_mean")(x)
    if scale == "softplus":
        z_log_var = LogVarianceOfScale(name="z_log_var")(layers.Dense(latent_dim, name="z_scale")(x))
    elif scale == "log_var":
        z_log_var = layers.Dense(latent_dim, name="z_log_var")(x)
    else:
        raise ValueError(f"scale: expected one of {SCALES}, got {scale!r}")
    z = Sampling(seed=seed, name="z")([z_mean, z_log_var])
    return keras.Model(inputs, [z_mean, z_log_var, z], name="encoder")


def build_decoder(latent_dim: int, hidden: tuple[int, ...], conditional: bool = False) -> keras.Model:
    """z (and, conditional, the label) -> 784 pixels; the encoder's hidden layers mirrored."""
    z = keras.Input((latent_dim,), name="z")
    inputs = x = z
    if conditional:
        label = keras.Input((N_CLASSES,), name="label")
        inputs = [z, label]
        x = layers.Concatenate(name="z_and_label")(inputs)
    for i, units in enumerate(reversed(hidden), 1):
        x = layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
    return keras.Model(inputs, layers.Dense(N_PIXELS, activation="sigmoid", name="pixels")(x), name="decoder")


# --- the loss -----------------------------------------------------------------------

def reconstruction_loss(x, x_decoded):
    """Binary cross-entropy summed over the pixels: one value per image, in nats.

    Takes flat pixel vectors or 28x28 images alike.
    """
    x = ops.reshape(x, (-1, N_PIXELS))
    x_decoded = ops.reshape(x_decoded, (-1, N_PIXELS))
    return ops.sum(ops.binary_crossentropy(x, x_decoded), axis=-1)


def kl_divergence(z_mean, z_log_var):
    """KL(N(z_mean, exp(z_log_var)) || N(0, I)) summed over the latent dimensions: one value per image."""
    return -0.5 * ops.sum(1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)


# --- the trainable models -------------------------------------------------------------

class AE(keras.Model):
    """Autoencoder: x -> encoder -> z -> decoder -> x'. Minimises the reconstruction loss."""

    def __init__(self, encoder: keras.Model, decoder: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.term_names}

    term_names: tuple[str, ...] = ("loss", "reconstruction")
    # compute.threads: each train step splits its batch into this many parts (training.compile_fast)
    parts: int = 1

    def loss_terms(self, data, training: bool = False) -> dict:
        """Batch means of the loss terms; "loss" is the one minimised."""
        reconstruction = ops.mean(reconstruction_loss(data, self(data, training=training)))
        return {"loss": reconstruction, "reconstruction": reconstruction}

    def call(self, data, training: bool = False):
        return self.decoder(self.encoder(data, training=training))

    def train_step(self, data):
        if self.parts > 1:
            return self._track(self._split_step(data))
        with tf.GradientTape() as tape:
            terms = self.loss_terms(data, training=True)
        grads = tape.gradient(terms["loss"], self.trainable_weights)
        self.optimizer.apply(grads, self.trainable_weights)
        return self._track(terms)

    # --- one train step on several threads (compute.threads) ---------------------------------
    # The batch is cut into ``parts`` slices; each slice's gradient is its own XLA launch, single-
    # threaded as compute.portable wants, and TensorFlow runs the launches at once on its inter-op
    # threads. The gradients are then summed in slice order and applied. So the bytes depend on
    # ``parts``, never on the CPU or on which thread finishes first (tests/test_training.py).

    def make_train_function(self, force: bool = False):
        if self.parts == 1:
            return super().make_train_function(force)
        jit = self._jit_compile  # the step itself must not be one XLA launch, or its parts run in turn
        self._jit_compile = False
        try:
            return super().make_train_function(force)
        finally:
            self._jit_compile = jit

    def _split_step(self, data) -> dict:
        if not hasattr(self, "_part_function"):
            self._part_function = tf.function(self._part_gradients, jit_compile=True)
            self._apply_function = tf.function(self._apply_parts, jit_compile=True)
        n = tf.shape(tf.nest.flatten(data)[0])[0]
        samplers = self._samplers
        results = []
        for i in range(self.parts):
            start, stop = n * i // self.parts, n * (i + 1) // self.parts
            part = tf.nest.map_structure(lambda a: a[start:stop], data)
            # Drawn here, in slice order: the parts themselves touch no shared state.
            seed = samplers[0].seed_generator.next() if samplers else tf.zeros(2, "int32")
            share = tf.cast(stop - start, "float32") / tf.cast(n, "float32")
            results.append(self._part_function(part, seed, share))
        return self._apply_function(results)

    def _part_gradients(self, part, seed, share):
        """The gradient of this slice's share of the batch mean, and its share of the terms."""
        samplers = self._samplers
        for layer in samplers:
            layer.part_seed = seed
        try:
            with tf.GradientTape() as tape:
                terms = {k: share * v for k, v in self.loss_terms(part, training=True).items()}
            return tape.gradient(terms["loss"], self.trainable_weights), terms
        finally:
            for layer in samplers:
                layer.part_seed = None

    @property
    def _samplers(self) -> list[Sampling]:
        """The encoder's Sampling layers (the AE has none): a split step seeds them part by part."""
        return [layer for layer in self.encoder.layers if isinstance(layer, Sampling)]

    def _apply_parts(self, results):
        grads = [tf.add_n(list(g)) for g in zip(*(r[0] for r in results))]
        self.optimizer.apply(grads, self.trainable_weights)
        return {k: tf.add_n([r[1][k] for r in results]) for k in results[0][1]}

    def test_step(self, data):
        return self._track(self.loss_terms(data))

    def _track(self, terms: dict) -> dict:
        for name, value in terms.items():
            self.trackers[name].update_state(value)
        return {name: t.result() for name, t in self.trackers.items()}

    @property
    def metrics(self) -> list:
        return list(self.trackers.values())


class VAE(AE):
    """Variational autoencoder: loss = reconstruction + beta * KL to N(0, I)."""

    term_names = ("loss", "reconstruction", "kl")

    def __init__(self, encoder: keras.Model, decoder: keras.Model, beta: float = 1.0, **kwargs):
        super().__init__(encoder, decoder, **kwargs)
        self.beta = beta

    def encode_decode(self, data, training: bool):
        z_mean, z_log_var, z = self.encoder(data, training=training)
        return data, self.decoder(z, training=training), z_mean, z_log_var

    def loss_terms(self, data, training: bool = False) -> dict:
        x, x_decoded, z_mean, z_log_var = self.encode_decode(data, training)
        reconstruction = ops.mean(reconstruction_loss(x, x_decoded))
        kl = ops.mean(kl_divergence(z_mean, z_log_var))
        return {"loss": reconstruction + self.beta * kl, "reconstruction": reconstruction, "kl": kl}

    def call(self, data, training: bool = False):
        return self.encode_decode(data, training)[1]


class CVAE(VAE):
    """Conditional VAE: encoder and decoder also see the one-hot label; data is (pixels, label)."""

    def encode_decode(self, data, training: bool):
        x, label = data
        z_mean, z_log_var, z = self.encoder([x, label], training=training)
        return x, self.decoder([z, label], training=training), z_mean, z_log_var


# --- building and loading -----------------------------------------------------------------

def build(kind: str, latent_dim: int, hidden: tuple[int, ...], beta: float = 1.0,
          seed: int | None = None, scale: str = "log_var") -> AE:
    """``kind`` is "ae", "vae" or "cvae"; ``scale``, a VAE's, as in build_encoder."""
    variational, conditional = kind != "ae", kind == "cvae"
    encoder = build_encoder(latent_dim, hidden, variational, conditional, seed=seed, scale=scale)
    decoder = build_decoder(latent_dim, hidden, conditional)
    if kind == "ae":
        return AE(encoder, decoder, name="ae")
    return (CVAE if conditional else VAE)(encoder, decoder, beta=beta, name=kind)


def one_hot(labels) -> "np.ndarray":
    import numpy as np
    return np.eye(N_CLASSES, dtype=np.float32)[np.asarray(labels)]


def flatten(images):
    """(n, 28, 28) images -> (n, 784) pixel vectors, as the encoder takes them (a view, no copy)."""
    return images.reshape(len(images), N_PIXELS)


def load(path) -> keras.Model:
    """Load an encoder or decoder saved by a stage; never unpickles (safe_mode)."""
    return keras.saving.load_model(path, safe_mode=True, compile=False)


def save(model: keras.Model, path) -> None:
    """Save a ``.keras`` file atomically and byte-reproducibly.

    A plain ``model.save`` differs on every call: the zip entries carry the time,
    metadata.json carries ``date_saved`` and config.json numbers shared objects
    by their memory address (``shared_object_id``). Rewrite all three.
    """
    import json
    import tempfile
    import zipfile
    from pathlib import Path

    from stages.lib.files import ZIP_EPOCH, atomic_path

    path = Path(path)
    with atomic_path(path) as out, tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / "raw.keras"
        model.save(raw)
        with zipfile.ZipFile(raw) as zin, zipfile.ZipFile(out, "w") as zout:
            for info in sorted(zin.infolist(), key=lambda i: i.filename):
                data = zin.read(info.filename)
                if info.filename == "metadata.json":
                    data = json.dumps({**json.loads(data), "date_saved": "1980-01-01@00:00:00"},
                                      sort_keys=True).encode()
                elif info.filename == "config.json":
                    data = json.dumps(_renumber_shared_objects(json.loads(data))).encode()
                entry = zipfile.ZipInfo(info.filename, date_time=ZIP_EPOCH)
                entry.compress_type = info.compress_type
                entry.external_attr = 0o644 << 16
                zout.writestr(entry, data)


def _renumber_shared_objects(config):
    """Replace memory addresses in ``shared_object_id`` by 0, 1, 2... in order of appearance."""
    ids: dict = {}

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "shared_object_id":
                    node[key] = ids.setdefault(value, len(ids))
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(config)
    return config


# --- computing with the models ------------------------------------------------------------

@contextlib.contextmanager
def xla_allowed() -> Iterator[None]:
    """Let Keras compile with XLA although op determinism is on.

    Keras declines XLA whenever op determinism is enabled, because some XLA *GPU*
    kernels are not deterministic. On the CPU XLA is deterministic (the tests
    check the trained models byte for byte), together with several steps per call it
    makes an epoch much faster (docs/speed.md), and under compute.portable it is
    what computes the same bytes on every CPU. So compile with determinism briefly off; on a
    GPU the caller does not ask for XLA.
    """
    from tensorflow.python.framework import config  # disable_op_determinism is not exported

    was_on = config.is_op_determinism_enabled()
    config.disable_op_determinism()
    try:
        yield
    finally:
        if was_on:
            tf.config.experimental.enable_op_determinism()


def use_xla() -> bool:
    """Compile with XLA: on the CPU, yes (see xla_allowed); on a GPU, no."""
    return not tf.config.list_physical_devices("GPU")


def predict(model: keras.Model, inputs, batch_size: int = 2000):
    """``model.predict``, compiled with XLA on the CPU.

    Outside XLA, TensorFlow's own kernels choose their code and blocking per CPU,
    so a prediction differs in the last bit between an AVX-512 and an AVX2 machine
    even with compute.portable; XLA, held by the portable flags, computes the same
    bytes on both (tests/test_portable.py).
    """
    if model.jit_compile != use_xla():
        with xla_allowed():
            model.jit_compile = use_xla()
            model.predict_function = None  # rebuilt on the next call, with XLA
    return model.predict(inputs, batch_size=batch_size, verbose=0)


def encode(encoder: keras.Model, images, labels=None, batch_size: int = 2000):
    """The encoder's outputs for ``images`` (n, 28, 28); a conditional encoder also takes the digits."""
    inputs = flatten(images) if labels is None else [flatten(images), one_hot(labels)]
    return predict(encoder, inputs, batch_size)


def decode(decoder: keras.Model, z, labels=None, batch_size: int = 2000):
    """Decoded (n, 28, 28) images for latent points ``z``; a conditional decoder also takes the digits."""
    inputs = z if labels is None else [z, one_hot(labels)]
    return predict(decoder, inputs, batch_size).reshape(len(z), *IMAGE_SHAPE)


# --- the judge ----------------------------------------------------------------------------

def build_classifier() -> keras.Model:
    """A dense digit classifier (about 98% test accuracy): it labels generated images.

    Dense, not convolutional, so that its training computes the same bytes on every CPU under
    compute.portable: XLA runs a convolution's gradients through Eigen, whose blocking follows the
    cache sizes the CPU reports. A two-layer CNN reached 98.8% here, but its weights differed in
    the last bits between this AVX-512 machine and emulated AVX2 ones (docs/reproducibility.md).
    """
    image = keras.Input(IMAGE_SHAPE, name="image")
    x = layers.Flatten(name="pixels")(image)
    x = layers.Dense(256, activation="relu", name="hidden")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    probabilities = layers.Dense(N_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(image, probabilities, name="classifier")
