"""The models and their losses, checked against numpy on fixed tensors."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from stages.lib import models


def bce_sum(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(len(x), -1).sum(axis=1)


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((4, 28, 28)).astype(np.float32)
    x_decoded = rng.uniform(0.01, 0.99, (4, 28, 28)).astype(np.float32)
    return x, x_decoded


def test_reconstruction_loss_is_bce_summed_over_pixels(batch) -> None:
    x, x_decoded = batch
    got = np.asarray(models.reconstruction_loss(x, x_decoded))
    np.testing.assert_allclose(got, bce_sum(x, x_decoded), rtol=1e-5)
    assert got.shape == (4,)


def test_kl_divergence_matches_closed_form() -> None:
    mu = np.array([[0.0, 0.0], [1.0, -2.0], [0.5, 0.3]], np.float32)
    log_var = np.array([[0.0, 0.0], [0.0, 1.0], [-1.0, 2.0]], np.float32)
    expected = 0.5 * (np.exp(log_var) + mu**2 - 1 - log_var).sum(axis=1)
    np.testing.assert_allclose(np.asarray(models.kl_divergence(mu, log_var)), expected, rtol=1e-6)
    assert expected[0] == 0  # N(0, I) against itself


def decode_in_numpy(decoder, z: np.ndarray) -> np.ndarray:
    """The decoder's Dense stack (relu hidden layers, sigmoid output) in plain numpy, from its weights."""
    import keras

    h = z
    for layer in decoder.layers:
        if isinstance(layer, keras.layers.Dense):
            kernel, bias = (np.asarray(w) for w in layer.weights)
            h = h @ kernel + bias
            h = np.maximum(h, 0) if layer.activation.__name__ == "relu" else 1 / (1 + np.exp(-h))
    return h


def test_vae_and_ae_loss_terms_against_numpy(batch) -> None:
    import keras

    x = models.flatten(batch[0])
    # The initial weights come from Keras' global generator: seeded here, so that they do not depend
    # on which tests ran before in this process (with 4 of 40 draws the two decodes below came within 1%).
    keras.utils.set_random_seed(0)
    vae = models.build("vae", 2, (8, 4), beta=3.0, seed=1)
    # A wide posterior (std e) and a steep decoder, so decoding z instead of z_mean changes the
    # reconstruction clearly (with the initial weights the decoder's output barely moves with z).
    vae.encoder.get_layer("z_log_var").bias.assign(np.full(2, 2.0, np.float32))
    first = vae.decoder.get_layer("hidden_1")
    first.kernel.assign(10 * np.asarray(first.kernel))
    terms = {k: float(v) for k, v in vae.loss_terms(x).items()}  # Sampling's first draw
    z_mean, z_log_var, _ = (np.asarray(t) for t in vae.encoder(x))
    kl = 0.5 * (np.exp(z_log_var) + z_mean**2 - 1 - z_log_var).sum(axis=1).mean()
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-5)
    # The reconstruction term decodes a sample z = z_mean + exp(z_log_var / 2) * eps; Sampling(seed=1)
    # draws eps from a SeedGenerator(1), so a fresh one gives the same eps. The rest is numpy.
    eps = np.asarray(keras.random.normal(z_mean.shape, seed=keras.random.SeedGenerator(1)))
    z = z_mean + np.exp(z_log_var / 2) * eps
    reconstruction = bce_sum(x, decode_in_numpy(vae.decoder, z)).mean()
    np.testing.assert_allclose(terms["reconstruction"], reconstruction, rtol=1e-5)
    # Decoding z_mean (no sampling) would be a different number: the check above tells them apart.
    at_mean = bce_sum(x, decode_in_numpy(vae.decoder, z_mean)).mean()
    assert abs(at_mean - reconstruction) > 1000 * 1e-5 * reconstruction, (at_mean, reconstruction)
    np.testing.assert_allclose(terms["loss"], terms["reconstruction"] + 3.0 * terms["kl"], rtol=1e-6)

    ae = models.build("ae", 2, (8, 4))
    expected = bce_sum(x, np.asarray(ae.decoder(ae.encoder(x)))).mean()
    ae_terms = ae.loss_terms(x)
    np.testing.assert_allclose(float(ae_terms["reconstruction"]), expected, rtol=1e-5)
    assert float(ae_terms["loss"]) == float(ae_terms["reconstruction"])


def test_sampling_draws_from_the_given_gaussian() -> None:
    layer = models.Sampling(seed=3)
    mean = np.full((20000, 2), [1.0, -2.0], np.float32)
    log_var = np.full((20000, 2), np.log([4.0, 0.25]), np.float32)
    z = np.asarray(layer([mean, log_var]))
    np.testing.assert_allclose(z.mean(axis=0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(z.std(axis=0), [2.0, 0.5], rtol=0.03)


@pytest.mark.parametrize("kind", ["ae", "vae", "cvae"])
def test_shapes(kind: str) -> None:
    model = models.build(kind, 2, (128, 16), seed=0)
    x = np.zeros((3, 784), np.float32)
    label = np.eye(10, dtype=np.float32)[[1, 2, 3]]
    enc_in = [x, label] if kind == "cvae" else x
    codes = model.encoder(enc_in)
    z = codes if kind == "ae" else codes[2]
    assert tuple(z.shape) == (3, 2)
    z = np.asarray(z)
    out = model.decoder([z, label] if kind == "cvae" else z)
    assert tuple(out.shape) == (3, 784)
    # At the boundary the stages pass 28x28 images and get 28x28 images back.
    labels = [1, 2, 3] if kind == "cvae" else None
    images = np.random.default_rng(0).random((3, 28, 28)).astype(np.float32)
    flat = images.reshape(3, 784)
    direct = model.encoder([flat, label] if kind == "cvae" else flat)
    via_encode = models.encode(model.encoder, images, labels)
    first = (lambda c: c) if kind == "ae" else (lambda c: c[0])  # AE: z; VAE: z_mean (no sampling)
    # encode/decode compute with XLA (models.predict), the direct calls with TensorFlow's eager
    # kernels: the same maths summed in another order, so float32 rounding apart.
    np.testing.assert_allclose(first(via_encode), np.asarray(first(direct)), rtol=1e-5, atol=1e-6)
    decoded = models.decode(model.decoder, z, labels)
    assert decoded.shape == (3, 28, 28)
    np.testing.assert_allclose(decoded[1], np.asarray(out[1]).reshape(28, 28), rtol=1e-5, atol=1e-6)
    assert [layer.units for layer in model.encoder.layers if hasattr(layer, "units")][:2] == [128, 16]
    assert [layer.units for layer in model.decoder.layers if hasattr(layer, "units")] == [16, 128, 784]


def shared_object_ids(node) -> list:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "shared_object_id"] + \
            [i for k, v in node.items() if k != "shared_object_id" for i in shared_object_ids(v)]
    if isinstance(node, list):
        return [i for v in node for i in shared_object_ids(v)]
    return []


def test_save_is_reproducible_and_loads_safely(tmp_path: Path) -> None:
    """Two separately built (same seed) models, saved more than 2 s apart (zip times have a 2 s
    resolution), in different objects (different memory addresses): the very same bytes."""
    import json
    import time
    import zipfile

    import keras

    from stages.lib.files import ZIP_EPOCH

    paths = [tmp_path / "a.keras", tmp_path / "b.keras"]
    built = []
    for i, p in enumerate(paths):
        if i:
            time.sleep(2.1)
        keras.utils.set_random_seed(0)
        built.append(models.build("cvae", 2, (8, 4), seed=0))  # cvae: a Concatenate, shared inputs
        models.save(built[-1].encoder, p)
    assert built[0].encoder is not built[1].encoder
    for p in paths:
        with zipfile.ZipFile(p) as z:
            assert {info.date_time for info in z.infolist()} == {ZIP_EPOCH}, p
            assert json.loads(z.read("metadata.json"))["date_saved"] == "1980-01-01@00:00:00"
            ids = shared_object_ids(json.loads(z.read("config.json")))
            assert ids and sorted(set(ids)) == list(range(len(set(ids)))), ids  # 0, 1, 2...: no addresses
    assert hashlib.sha256(paths[0].read_bytes()).digest() == hashlib.sha256(paths[1].read_bytes()).digest()
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.keras", "b.keras"]  # no temp files left
    model = built[0]
    loaded = models.load(paths[0])
    assert isinstance(loaded.get_layer("z"), models.Sampling)
    x = np.random.default_rng(0).random((2, 784)).astype(np.float32)
    label = np.eye(10, dtype=np.float32)[[3, 7]]
    np.testing.assert_array_equal(np.asarray(loaded([x, label])[0]), np.asarray(model.encoder([x, label])[0]))


def test_softplus_scale_encoder_predicts_log_var_from_sigma_softplus_and_loads_in_safe_mode(tmp_path: Path) -> None:
    """scale="softplus" (the paper's comparison): z_log_var = 2 log softplus(h) for h of the z_scale layer,
    against numpy on the encoder's own weights; finite where log(softplus(h)) underflows; saved and
    loaded in safe_mode; an unknown scale is refused."""
    vae = models.build("vae", 2, (8, 4), seed=0, scale="softplus")
    x = np.random.default_rng(1).random((6, 784)).astype(np.float32)
    h = x
    for name in ("hidden_1", "hidden_2"):
        kernel, bias = (np.asarray(w, np.float64) for w in vae.encoder.get_layer(name).weights)
        h = np.maximum(h @ kernel + bias, 0)
    kernel, bias = (np.asarray(w, np.float64) for w in vae.encoder.get_layer("z_scale").weights)
    want = 2 * np.log(np.log1p(np.exp(h @ kernel + bias)))
    np.testing.assert_allclose(vae.encoder.predict(x, verbose=0)[1], want, rtol=1e-5, atol=1e-5)
    deep = np.asarray(models.LogVarianceOfScale()(np.array([-200.0, -30.0], np.float32)))
    np.testing.assert_allclose(deep, [-400.0, -60.0], rtol=1e-6)   # log softplus(h) -> h, not log(0)
    models.save(vae.encoder, tmp_path / "encoder.keras")
    loaded = models.load(tmp_path / "encoder.keras")
    assert isinstance(loaded.get_layer("z_log_var"), models.LogVarianceOfScale)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0)[1], vae.encoder.predict(x, verbose=0)[1])
    with pytest.raises(ValueError, match="scale: expected one of"):
        models.build("vae", 2, (8, 4), scale="std")
