"""The likelihood figures of one trained VAE or CVAE on test images (stages likelihood@<item> and
paper_likelihood@<model>-<seed>): the decoder's logits and the encoder's q(z|x) in TensorFlow, fed to
the estimators of likelihood.py. In nats per test image:

  test_neg_elbo     -ELBO on all test images: -log p(x|z) at one z ~ q(z|x) per image (numpy,
                    seeded by likelihood.seed) plus the analytic KL, as train@<m> reports it;
                    with ``terms``, also its two parts (test_reconstruction, test_kl)
  images            the seeded random subset of test images every estimate below uses
  neg_elbo          -ELBO on that subset (the same z draws)
  iwae.k_<k>        the importance-weighted bound -log mean_k p(x, z_s) / q(z_s|x), and its
                    Monte-Carlo standard error
  quadrature        -log sum_z p(x|z) p(z) dz over a grid of the 2-D latent space, at
                    grid.points and at 2 * points - 1 per axis (nll, nll_fine, difference)
  entropy_floor     sum over pixels of the binary entropy of the intensity: the part of the
                    reconstruction term no model can remove (the pixels are not binary)
  above_floor       each NLL minus that floor

The conditional VAE is conditioned on the true label; its grid is decoded once per digit.
Fails (StageError) when the two grids differ by more than grid.tolerance nats.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.lib import StageError

if TYPE_CHECKING:  # a type only: params.py holds no computation (tests/test_map.py)
    from stages.lib.params import LikelihoodParams

PAIRS_PER_CALL = 32768     # (image, z) pairs decoded per call into TensorFlow for the IWAE
GRID_CHUNK = 4096          # grid points per matrix product (at most)
GRID_CELLS = 4096 * 1024   # (image, grid point) pairs per matrix product (at most, but for 64 points)


class Decoder:
    """The decoder's pre-sigmoid output (logits) for latent points, and log p(x|z) for (image, z) pairs.

    Everything here runs in float32 in TensorFlow (as the model does); the estimators sum in float64.
    ``clip``: clip the logits where Keras' binary cross-entropy clips the sigmoid (the training loss's
    likelihood, every stage's); off, the exact Bernoulli likelihood of the logits (tools/paper_clipping.py).
    """

    def __init__(self, decoder: Any, conditional: bool, clip: bool = True):
        import keras
        import tensorflow as tf

        from stages.lib import likelihood as lik

        out = decoder.get_layer("pixels")  # Dense(784, sigmoid): its input and weights give the logits
        hidden = keras.Model(decoder.inputs, out.input)
        kernel, bias = out.kernel, out.bias
        self.conditional = conditional
        lo, hi = (np.float32(lik.LOGIT_MIN), np.float32(lik.LOGIT_MAX)) if clip else (-np.inf, np.inf)

        def logits(inputs):
            return tf.clip_by_value(tf.matmul(hidden(inputs), kernel) + bias, lo, hi)

        def grid(inputs):  # the clipped logits, and sum_i log(1 - d_i) = -sum_i softplus(a_i), summed in float64
            a = logits(inputs)
            return a, -tf.reduce_sum(tf.cast(tf.math.softplus(a), tf.float64), axis=-1)

        def pairs(x, z, labels):
            b, k = tf.shape(z)[0], tf.shape(z)[1]
            flat = tf.reshape(z, (b * k, z.shape[-1]))
            inputs = [flat, tf.repeat(labels, k, axis=0)] if conditional else flat
            a = tf.reshape(logits(inputs), (b, k, -1))
            return tf.reduce_sum(x[:, None, :] * a - tf.math.softplus(a), axis=-1)

        self._grid = tf.function(grid, jit_compile=True)
        self._pairs = tf.function(pairs, jit_compile=True)

    def grid(self, z: np.ndarray, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For latent points z (m, d): the clipped logits (m, 784) and sum_i log(1 - d_i) (m,)."""
        from stages.lib import models
        z = np.asarray(z, np.float32)
        a, log1m = self._grid([z, models.one_hot(labels)] if self.conditional else z)
        return a.numpy(), log1m.numpy()

    def pairs(self, x: np.ndarray, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """log p(x_i | z_is): x (n, 784), z (n, k, d) -> (n, k), float64."""
        from stages.lib import models
        one_hot = models.one_hot(labels) if self.conditional else np.zeros((len(x), 0), np.float32)
        return self._pairs(np.asarray(x, np.float32), np.asarray(z, np.float32), one_hot).numpy().astype(np.float64)


def grid_chunk(n_images: int) -> int:
    """Grid points per matrix product for ``n_images`` images: GRID_CHUNK, fewer for more than
    GRID_CELLS // GRID_CHUNK images so that each (images, points) float64 block stays near 32 MB."""
    return min(GRID_CHUNK, max(64, GRID_CELLS // max(n_images, 1)))


def evaluate(model_dir: Path, conditional: bool, x: np.ndarray, y: np.ndarray, p: LikelihoodParams,
             name: str, terms: bool = False) -> dict[str, Any]:
    """Every likelihood figure of one model on the test images ``x`` (n, 784) with labels ``y``.

    ``terms``: also the -ELBO's two parts on all images, ``test_reconstruction`` and ``test_kl``.
    """
    from stages.lib import likelihood as lik, models

    start, cpu_start = time.perf_counter(), time.process_time()
    encoder, decoder = models.load(model_dir / "encoder.keras"), models.load(model_dir / "decoder.keras")
    if encoder.outputs[0].shape[-1] != 2:
        raise StageError(f"likelihood: {model_dir}: the quadrature needs a 2-D latent space, "
                         f"got {encoder.outputs[0].shape[-1]}")
    dec = Decoder(decoder, conditional)
    images = x.reshape(len(x), 28, 28)
    mean, log_var = models.encode(encoder, images, y if conditional else None)[:2]
    rng = np.random.default_rng(p.seed)
    subset = np.sort(rng.choice(len(x), size=min(p.images, len(x)), replace=False))
    xs, ys = x[subset], y[subset]

    def pairs_on(xx: np.ndarray, yy: np.ndarray) -> lik.PairLogLikelihood:
        return lambda rows, z: dec.pairs(xx[rows], z, yy[rows])

    rec, kl = lik.elbo_terms(pairs_on(x, y), mean, log_var, rng, batch=PAIRS_PER_CALL)
    elbo = rec + kl
    k_max = max(p.iwae_k)
    iwae = lik.iwae(pairs_on(xs, ys), mean[subset], log_var[subset], p.iwae_k, rng,
                    batch=max(1, PAIRS_PER_CALL // k_max))
    t_iwae, cpu_iwae = time.perf_counter(), time.process_time()

    chunk = grid_chunk(len(xs))
    coarse, fine = np.empty(len(xs)), np.empty(len(xs))
    for digit in (range(10) if conditional else [None]):  # the CVAE's grid is decoded per digit
        rows = np.flatnonzero(ys == digit) if conditional else np.arange(len(xs))
        if not len(rows):
            continue
        labels = None if digit is None else np.full(chunk, digit)

        def grid(z: np.ndarray, rows=rows, labels=labels) -> np.ndarray:
            logits, log1m = dec.grid(z, None if labels is None else labels[:len(z)])
            return lik.bernoulli_log_likelihood(xs[rows], logits, log1m)

        q = lik.quadrature(grid, p.grid.bound, p.grid.points, chunk=chunk)
        coarse[rows], fine[rows] = q.coarse, q.fine
    difference = float(fine.mean() - coarse.mean())
    if not abs(difference) < p.grid.tolerance:
        raise StageError(
            f"likelihood: {name}: the quadrature did not converge: {p.grid.points} points per axis give "
            f"{coarse.mean():.4f} nats, {2 * p.grid.points - 1} give {fine.mean():.4f} (difference "
            f"{difference:+.4f}, tolerance {p.grid.tolerance}); raise likelihood.grid.points")

    floor = float(lik.binary_entropy(xs).mean())
    k_name = f"iwae_k_{k_max}"
    result = {
        "test_neg_elbo": float(elbo.mean()),
        **({"test_reconstruction": float(rec.mean()), "test_kl": float(kl.mean())} if terms else {}),
        "images": len(subset),
        "neg_elbo": float(elbo[subset].mean()),
        "iwae": {f"k_{k}": {"nll": e.nll, "stderr": e.stderr} for k, e in iwae.items()},
        "quadrature": {"nll": float(coarse.mean()), "nll_fine": float(fine.mean()), "difference": difference,
                       "max_image_difference": float(np.abs(fine - coarse).max()),
                       "points": p.grid.points, "points_fine": 2 * p.grid.points - 1, "bound": p.grid.bound},
        "entropy_floor": floor,
        "above_floor": {"neg_elbo": float(elbo[subset].mean()) - floor, k_name: iwae[k_max].nll - floor,
                        "quadrature": float(fine.mean()) - floor},
    }
    end, cpu_end = time.perf_counter(), time.process_time()
    print(f"likelihood: {name}: -ELBO {result['neg_elbo']:.3f}, IWAE-{k_max} {iwae[k_max].nll:.3f} "
          f"± {iwae[k_max].stderr:.3f}, quadrature {fine.mean():.3f} (coarse {coarse.mean():.3f}), "
          f"floor {floor:.3f} nats on {len(subset)} images; ELBO and IWAE {t_iwae - start:.1f} s "
          f"(CPU {cpu_iwae - cpu_start:.1f} s), quadrature {end - t_iwae:.1f} s (CPU {cpu_end - cpu_iwae:.1f} s)")
    return result
