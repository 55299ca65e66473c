"""Log-likelihood estimators for a VAE with a Gaussian prior: the ELBO is only a bound.

All values in nats per image; an NLL is -log p(x). Two estimators, each taking the
model's log-likelihood log p(x|z) as a function, so that the same code serves the
Bernoulli decoders of the project and, in the tests, a linear-Gaussian model whose
marginal p(x) is known in closed form:

iwae      the importance-weighted bound (Burda et al. 2016) with the encoder's Gaussian
          q(z|x) as proposal: log p(x) >= E log (1/k) sum_s p(x, z_s) / q(z_s|x).
          One pass draws k_max samples per image; the bound for a smaller k averages
          its k_max // k disjoint groups of k samples (the same expectation, less noise),
          and its Monte-Carlo standard error comes from the spread between the groups
          (from the delta method when there is one group).
quadrature  -log of the sum over a uniform grid of z of p(x|z) p(z) dz (2-D latent space):
          near-exact when the grid covers the prior's mass and resolves the posterior.
          The grid is decoded once; the coarse grid is every other point of the fine one.

For the project's decoders (sigmoid output, binary cross-entropy loss):
    log p(x|z) = sum_i x_i log d_i + (1 - x_i) log(1 - d_i) = x . a - sum_i softplus(a_i)
with a = logit(d) the decoder's pre-sigmoid output, clipped as Keras' binary cross-entropy
clips d to [eps, 1 - eps] in float32 (eps = 1e-7), so the numbers match the training loss.
For all images against all grid points this is one matrix product X @ A.T.
"""
from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np

# log p(x_i | z_is) for rows i of the data and z of shape (len(rows), k, d) -> (len(rows), k)
PairLogLikelihood = Callable[[np.ndarray, np.ndarray], np.ndarray]
# log p(x_i | z_j) for every image i and every grid point z_j of shape (m, d) -> (n, m)
GridLogLikelihood = Callable[[np.ndarray], np.ndarray]

LOG_2PI = math.log(2 * math.pi)

# Keras' binary cross-entropy clips d to [eps, 1 - eps] in float32 (keras.config.epsilon()).
KERAS_EPSILON = 1e-7
_LO = float(np.float32(KERAS_EPSILON))
_HI = float(np.float32(1) - np.float32(KERAS_EPSILON))
LOGIT_MIN, LOGIT_MAX = math.log(_LO / (1 - _LO)), math.log(_HI / (1 - _HI))


# --- Gaussian pieces ----------------------------------------------------------------

def log_standard_normal(z: np.ndarray) -> np.ndarray:
    """log N(z; 0, I), summed over the last axis."""
    return -0.5 * (np.square(z).sum(axis=-1) + z.shape[-1] * LOG_2PI)


def gaussian_kl(mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """KL(N(mean, exp(log_var)) || N(0, I)) per row, summed over the latent dimensions."""
    mean, log_var = np.asarray(mean, np.float64), np.asarray(log_var, np.float64)
    return -0.5 * np.sum(1 + log_var - np.square(mean) - np.exp(log_var), axis=-1)


# --- the Bernoulli decoder's likelihood ------------------------------------------------

def clip_logits(logits: np.ndarray) -> np.ndarray:
    """Pre-sigmoid outputs clipped where Keras clips the sigmoid's output (1e-7, 1 - 1e-7 in float32)."""
    return np.clip(np.asarray(logits, np.float64), LOGIT_MIN, LOGIT_MAX)


def softplus(a: np.ndarray) -> np.ndarray:
    """log(1 + exp(a)), stable for any a."""
    return np.logaddexp(0.0, a)


def bernoulli_log_likelihood(x: np.ndarray, logits: np.ndarray, log1m: np.ndarray | None = None
                             ) -> np.ndarray:
    """log p(x_i | z_j) for every image x_i (n, p) and every decoded point's logits (m, p): (n, m).

    x . a + sum_i log(1 - d_i): one float64 matrix product for all pairs. ``log1m``, when given,
    is that sum, -sum softplus(a), per point (m,), computed by the caller from logits it clipped.
    """
    if log1m is None:
        a = clip_logits(logits)
        log1m = -softplus(a).sum(axis=1)
    else:
        a = np.asarray(logits, np.float64)
    return np.asarray(x, np.float64) @ a.T + log1m


def bernoulli_log_likelihood_pairs(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """log p(x_i | z_is) for images x (n, p) and their own samples' logits (n, k, p): (n, k)."""
    a = clip_logits(logits)
    return np.einsum("np,nkp->nk", np.asarray(x, np.float64), a) - softplus(a).sum(axis=-1)


def binary_entropy(x: np.ndarray) -> np.ndarray:
    """sum_i H_b(x_i) per image (n, p) -> (n,), in nats: the reconstruction term at d = x.

    For pixel intensities strictly between 0 and 1 the Bernoulli likelihood is not a normalised
    density and its maximum, at d = x, is below 1: this is the part of every NLL above that
    no model can remove (0 for binary images).
    """
    x = np.asarray(x, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(x > 0, x * np.log(x), 0.0) + np.where(x < 1, (1 - x) * np.log1p(-x), 0.0))
    return h.sum(axis=-1)


# --- the estimators ----------------------------------------------------------------------

def elbo_terms(log_likelihood: PairLogLikelihood, mean: np.ndarray, log_var: np.ndarray,
               rng: np.random.Generator, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The ELBO's two terms per image: -log p(x|z) at one z ~ q(z|x) per image, and the analytic KL."""
    mean, log_var = np.asarray(mean, np.float64), np.asarray(log_var, np.float64)
    eps = rng.standard_normal(mean.shape)
    z = mean + np.exp(0.5 * log_var) * eps
    rec = np.concatenate([-log_likelihood(np.arange(i, min(i + batch, len(z))), z[i:i + batch, None, :])[:, 0]
                          for i in range(0, len(z), batch)]) if len(z) else np.zeros(0)
    return rec, gaussian_kl(mean, log_var)


def neg_elbo(log_likelihood: PairLogLikelihood, mean: np.ndarray, log_var: np.ndarray,
             rng: np.random.Generator, batch: int = 1000) -> np.ndarray:
    """-ELBO per image: -log p(x|z) at one z ~ q(z|x) per image, plus the analytic KL."""
    rec, kl = elbo_terms(log_likelihood, mean, log_var, rng, batch)
    return rec + kl


T = TypeVar("T")

# Two calls at a time, on every machine: the model's log-likelihood runs in XLA and OpenBLAS, each on
# the calling thread alone (compute.portable), so two threads fill the two cores of the machines we
# measure on, and each call's result depends on its own inputs only: the bytes are the serial ones
# (on the Zen 3, 16 IWAE decodes ran 1.75x faster on two threads, outputs identical; docs/speed.md).
THREADS = 2


def in_order(calls: Iterable[Callable[[], T]]) -> Iterator[T]:
    """Each call's result, in the calls' order, up to THREADS calls running at once.

    ``calls`` is consumed in order on the caller's thread (draw random numbers there, not in a call),
    at most THREADS ahead of the result it yields. The first call runs alone, so that TensorFlow
    traces and compiles a function once before two threads call it.
    """
    threads = THREADS  # read at each call: the tests set it to 1 for the serial reference
    it = iter(calls)
    first = next(it, None)
    if first is None:
        return
    yield first()
    with ThreadPoolExecutor(threads) as pool:
        pending: deque = deque()
        for call in it:
            pending.append(pool.submit(call))
            if len(pending) >= threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@dataclass(frozen=True)
class Estimate:
    """A mean NLL over images (nats per image) and its Monte-Carlo standard error."""
    nll: float
    stderr: float


def _log_weight_batches(log_likelihood: PairLogLikelihood, mean: np.ndarray, log_var: np.ndarray, k: int,
                        rng: np.random.Generator, batch: int) -> Iterator[np.ndarray]:
    """log p(x, z_s) - log q(z_s|x) for k samples z_s ~ q(z|x) per image, ``batch`` images at a time."""
    mean, log_var = np.asarray(mean, np.float64), np.asarray(log_var, np.float64)
    n, d = mean.shape

    def calls() -> Iterator[Callable[[], np.ndarray]]:  # the draws here, in order; the decodes in in_order's threads
        for i in range(0, n, batch):
            rows = np.arange(i, min(i + batch, n))
            eps = rng.standard_normal((len(rows), k, d))
            std = np.exp(0.5 * log_var[rows])[:, None, :]
            z = mean[rows][:, None, :] + std * eps
            log_q = -0.5 * (np.square(eps).sum(-1) + d * LOG_2PI) - 0.5 * log_var[rows].sum(-1)[:, None]
            yield lambda rows=rows, z=z, log_q=log_q: log_likelihood(rows, z) + log_standard_normal(z) - log_q

    yield from in_order(calls())


def log_weights(log_likelihood: PairLogLikelihood, mean: np.ndarray, log_var: np.ndarray, k: int,
                rng: np.random.Generator, batch: int) -> np.ndarray:
    """log p(x, z_s) - log q(z_s|x) for k samples z_s ~ q(z|x) = N(mean, exp(log_var)) per image: (n, k)."""
    parts = list(_log_weight_batches(log_likelihood, mean, log_var, k, rng, batch))
    return np.concatenate(parts) if parts else np.empty((0, k))


def iwae(log_likelihood: PairLogLikelihood, mean: np.ndarray, log_var: np.ndarray, ks: tuple[int, ...],
         rng: np.random.Generator, batch: int = 100) -> dict[int, Estimate]:
    """The IWAE NLL estimate for each k in ``ks``, q(z|x) = N(mean, exp(log_var)) as proposal.

    Draws max(ks) samples per image once, ``batch`` images at a time, and keeps only each image's
    estimates (see ``iwae_from_log_weights``): memory for ``batch`` x max(ks) log weights, whatever
    the number of images (k = 5000 on all 10 000 test images would be 400 MB at once).
    """
    k_max = max(ks)
    parts = [_group_estimates(lw, ks) for lw in _log_weight_batches(log_likelihood, mean, log_var, k_max, rng, batch)]
    return _summarise(parts, ks, len(mean))


def iwae_from_log_weights(log_w: np.ndarray, ks: tuple[int, ...]) -> dict[int, Estimate]:
    """The IWAE NLL estimate -E log mean_k w for each k, from log weights (n, k_max), k_max >= max(ks).

    For each k the k_max // k disjoint groups of k samples are averaged; the standard error of
    the mean over images is sqrt(sum_i var_i) / n, var_i the Monte-Carlo variance of image i's
    estimate: the between-group variance / groups, or with one group the delta method
    var(w) / (k mean(w)^2).
    """
    return _summarise([_group_estimates(log_w, ks)], ks, len(log_w))


def _group_estimates(log_w: np.ndarray, ks: tuple[int, ...]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per image (row) and k: log mean_k w of each group (n, groups), and the estimate's variance (n,)."""
    n, k_max = log_w.shape
    out = {}
    for k in ks:
        if not 1 <= k <= k_max:
            raise ValueError(f"k = {k} needs 1 <= k <= {k_max} samples")
        groups = k_max // k
        lw = log_w[:, :groups * k].reshape(n, groups, k)
        top = lw.max(axis=2, keepdims=True)
        w = np.exp(lw - top)                                    # in (0, 1], the largest is 1
        est = (np.log(w.mean(axis=2)) + top[..., 0])            # (n, groups): log mean_k w
        if groups > 1:
            var = est.var(axis=1, ddof=1) / groups
        else:
            var = w[:, 0].var(axis=1, ddof=1) / (k * np.square(w[:, 0].mean(axis=1))) if k > 1 \
                else np.full(n, np.nan)
        out[k] = (est, var)
    return out


def _summarise(parts: list[dict[int, tuple[np.ndarray, np.ndarray]]], ks: tuple[int, ...], n: int
               ) -> dict[int, Estimate]:
    """The mean over all images of the per-image estimates of ``parts`` (consecutive rows), per k."""
    result = {}
    for k in ks:
        est = np.concatenate([part[k][0] for part in parts])
        var = np.concatenate([part[k][1] for part in parts])
        result[k] = Estimate(nll=float(-est.mean()), stderr=float(np.sqrt(var.sum()) / n))
    return result


def grid_axis(bound: float, points: int) -> np.ndarray:
    """``points`` equally spaced values from -bound to bound."""
    return np.linspace(-bound, bound, points)


@dataclass(frozen=True)
class Quadrature:
    """-log p(x) per image by quadrature on a coarse grid and on the fine grid that refines it."""
    coarse: np.ndarray   # (n,)
    fine: np.ndarray     # (n,)
    points: int          # per axis, coarse grid
    fine_points: int     # per axis, fine grid: 2 * points - 1 (the coarse points and the midpoints)


def quadrature(log_likelihood: GridLogLikelihood, bound: float, points: int, chunk: int = 4096
               ) -> Quadrature:
    """-log sum_z p(x|z) p(z) dz over the grid [-bound, bound]^2, at ``points`` and 2 * points - 1 per axis.

    ``log_likelihood`` is called once per chunk of fine-grid points (so each point is decoded
    once) and returns (n, chunk); the sums are accumulated in float64 as running logsumexps.
    """
    fine_points = 2 * points - 1
    axis = grid_axis(bound, fine_points)
    zz = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    on_coarse = np.stack(np.meshgrid(np.arange(fine_points) % 2 == 0, np.arange(fine_points) % 2 == 0,
                                     indexing="ij"), -1).reshape(-1, 2).all(axis=1)
    h_fine = axis[1] - axis[0]
    acc_fine = acc_coarse = None

    def chunk_sums(i: int) -> tuple[np.ndarray, np.ndarray]:  # one chunk's logsumexps, fine and coarse
        z = zz[i:i + chunk]
        terms = np.asarray(log_likelihood(z), np.float64) + log_standard_normal(z)
        return _logsumexp(terms), _logsumexp(terms[:, on_coarse[i:i + chunk]])

    # Summed in the chunks' order, whichever thread computed them.
    for part_fine, part_coarse in in_order(lambda i=i: chunk_sums(i) for i in range(0, len(zz), chunk)):
        acc_fine = part_fine if acc_fine is None else np.logaddexp(acc_fine, part_fine)
        acc_coarse = part_coarse if acc_coarse is None else np.logaddexp(acc_coarse, part_coarse)
    return Quadrature(coarse=-(acc_coarse + 2 * math.log(2 * h_fine)), fine=-(acc_fine + 2 * math.log(h_fine)),
                      points=points, fine_points=fine_points)


def _logsumexp(a: np.ndarray) -> np.ndarray:
    """log sum exp over the last axis; -inf for an empty axis."""
    if a.shape[-1] == 0:
        return np.full(a.shape[:-1], -np.inf)
    top = a.max(axis=-1)
    return np.log(np.exp(a - top[..., None]).sum(axis=-1)) + top
