"""Where a paper run's IWAE bound falls short of the exact log-likelihood, image by image (docs/paper.md).

Our IWAE-500 sits about 3.5 nats above our L[q] where Table 1's sits 1.35 above, and 3 nats below our
exact value. This measures, on test images binarized as paper_likelihood binarizes them, from one
draw of 5 000 samples of q(z|x) per image and the quadrature on paper.likelihood's fine grid:

- the IWAE-k bound for k from 1 to 5 000 (disjoint groups of the one draw), so one can read at which k
  our bound sits as far above our L[q] as Table 1's LL sits above its L[q];
- the estimator of the authors' TensorFlow example (nicola-decao/s-vae-tf, examples/mnist.py,
  ``log_likelihood``): it draws n samples z_s of q(z|x) for log p(z_s) - log q(z_s|x) but takes
  log p(x|z) from the one sample the training graph drew (``optimizer.bce``, computed from
  ``model.z``), broadcast over the n. It estimates log p(x|z_0) + log mean_s p(z_s)/q(z_s|x): the
  ELBO's one-sample reconstruction plus an importance-sampled -KL, which tends to the reconstruction
  term alone as n grows, not to log p(x). Its gap over L[q] (the same z_0) is set beside Table 1's
  and beside its limit when q(z|x) is much narrower than the prior, which no model enters: then
  log p(z_s) - log q(z_s|x) = c + |eps_s|^2 / 2 with |eps|^2 / 2 ~ Gamma(d / 2, 1) and c = -KL - d / 2,
  so the gap is E log mean_n exp(G_s) - d / 2, simulated here for Table 1's three N-VAE rows;
- how the exact value's lead over IWAE-500 spreads over the images (quantiles, the share of the worst
  1% and 10%), per digit, and against the importance weights' effective sample size
  (ESS = (sum w)^2 / sum w^2, a share of the 5 000 draws): a proposal that misses part of the
  posterior shows as a low ESS.

    python -m tools.paper_gap artifacts/paper/davidson-0 [--images 2000]

Reads paper.likelihood (seed, grid) and paper.train.binarize from params.yaml and the run's
encoder.keras and decoder.keras (run `make paper` first). Its cost is printed at the end.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from stages.lib import StageError, mnist, params, run
from stages.lib.paper import PUBLISHED, PUBLISHED_K

K_MAX = 5000
KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
# Table 1's N-VAE rows, as quoted in issue 22 (d = 2 is stages/lib/paper.py's PUBLISHED): d -> (LL, L[q]).
TABLE1_NVAE = {2: (PUBLISHED["LL"], PUBLISHED["L[q]"]), 5: (-110.21, -112.98), 10: (-93.84, -98.36)}


def per_image_iwae(log_w: np.ndarray, k: int) -> np.ndarray:
    """Each image's IWAE-k log-likelihood estimate: the mean over the disjoint groups of k of its row."""
    from stages.lib import likelihood as lik
    return np.array([-lik.iwae_from_log_weights(row[None], (k,))[k].nll for row in log_w])


def effective_share(log_w: np.ndarray) -> np.ndarray:
    """Per image, the importance weights' effective sample size as a share of the draws."""
    w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
    return np.square(w.sum(axis=1)) / np.square(w).sum(axis=1) / log_w.shape[1]


def narrow_q_limit(d: int, n: int, draws: int = 2000, seed: int = 0) -> float:
    """The TensorFlow example's lead over L[q] for a q(z|x) much narrower than the prior, d latent
    dimensions, n samples: E log mean_n exp(G_s) - d / 2, G ~ Gamma(d / 2, 1), over ``draws`` draws."""
    g = np.random.default_rng(seed).gamma(d / 2, size=(draws, n))
    top = g.max(axis=1, keepdims=True)
    return float((np.log(np.exp(g - top).mean(axis=1)) + top[:, 0]).mean() - d / 2)


def measure(folder: Path, images: int) -> dict:
    """The bound's curve in k and the per-image gaps on ``images`` test images (nats, Table 1's signs)."""
    from stages.lib import likelihood as lik, marginal, models

    for name in ("encoder.keras", "decoder.keras"):
        if not (folder / name).is_file():
            raise StageError(f"paper_gap: {folder / name}: no such file (run `make paper` first)")
    p = params.load("paper.likelihood", params.LikelihoodParams)
    binarize = params.load("paper.train", params.PaperTrainParams, keys=("binarize",)).binarize
    _, _, x_test, y_test = mnist.load(binarize=binarize)
    if not 1 <= images <= len(x_test):
        raise StageError(f"paper_gap: --images: expected 1 to {len(x_test)}, got {images}")
    rng = np.random.default_rng(p.seed)
    rows = np.sort(rng.choice(len(x_test), size=images, replace=False))
    x, y = x_test[rows].reshape(images, -1), y_test[rows]
    encoder, decoder = models.load(folder / "encoder.keras"), models.load(folder / "decoder.keras")
    mean, log_var = models.encode(encoder, x_test[rows])[:2]
    dec = marginal.Decoder(decoder, conditional=False)

    def pairs(r: np.ndarray, z: np.ndarray) -> np.ndarray:
        return dec.pairs(x[r], z)

    def grid(z: np.ndarray) -> np.ndarray:
        logits, log1m = dec.grid(z)
        return lik.bernoulli_log_likelihood(x, logits, log1m)

    rec, kl = lik.elbo_terms(pairs, mean, log_var, rng, batch=marginal.PAIRS_PER_CALL)
    log_w = lik.log_weights(pairs, mean, log_var, K_MAX, rng, batch=max(1, marginal.PAIRS_PER_CALL // K_MAX))
    exact = -lik.quadrature(grid, p.grid.bound, p.grid.points, chunk=marginal.grid_chunk(images)).fine
    # The TensorFlow example's estimator: the ELBO's one-sample reconstruction (rec above: one z per
    # image, as the example's training graph draws it) with the prior ratio importance-sampled.
    # log p(z_s) - log q(z_s|x): the log weights of a likelihood that is 1 everywhere.
    log_r = lik.log_weights(lambda r, z: np.zeros(z.shape[:2]), mean, log_var, K_MAX, rng, batch=1000)
    return {"rows": rows, "y": y, "elbo": -(rec + kl), "rec": -rec, "exact": exact, "log_w": log_w, "log_r": log_r,
            "mean": mean}


def report(m: dict) -> None:
    """Prints the curve in k, the spread of the exact value's lead over IWAE-500, and its link to the ESS."""
    elbo, exact, log_w, y = m["elbo"], m["exact"], m["log_w"], m["y"]
    theirs = PUBLISHED["LL"] - PUBLISHED["L[q]"]
    print(f"{len(elbo)} test images: L[q] {elbo.mean():.2f}, exact LL {exact.mean():.2f} "
          f"(Table 1: L[q] {PUBLISHED['L[q]']:.2f}, LL {PUBLISHED['LL']:.2f}, LL - L[q] {theirs:.2f})\n")
    print("| k | IWAE-k LL | IWAE-k - L[q] | exact - IWAE-k |")
    print("| ---: | ---: | ---: | ---: |")
    for k in KS:
        ll = float(np.mean(per_image_iwae(log_w, k)))
        print(f"| {k} | {ll:.2f} | {ll - elbo.mean():.2f} | {exact.mean() - ll:.2f} |")
    print(f"\nThe TensorFlow example's estimator, log p(x|z_0) + log mean_n p(z_s)/q(z_s|x) (Table 1: "
          f"LL - L[q] {theirs:.2f}):\n")
    d = m["mean"].shape[1]
    print(f"| n | its LL | its LL - L[q] | the same, q narrow (d = {d}) |")
    print("| ---: | ---: | ---: | ---: |")
    for n in (10, 100, PUBLISHED_K, K_MAX):
        ll = float(np.mean(m["rec"] + per_image_iwae(m["log_r"], n)))
        print(f"| {n} | {ll:.2f} | {ll - elbo.mean():.2f} | {narrow_q_limit(d, n):.2f} |")
    print(f"\nTable 1's N-VAE rows: LL - L[q] against that estimator's narrow-q lead with n = {PUBLISHED_K}:\n")
    print("| d | Table 1 LL - L[q] | narrow-q lead |")
    print("| ---: | ---: | ---: |")
    for dims, (ll, lq) in TABLE1_NVAE.items():
        print(f"| {dims} | {ll - lq:.2f} | {narrow_q_limit(dims, PUBLISHED_K):.2f} |")
    gap = exact - per_image_iwae(log_w, PUBLISHED_K)
    order = np.sort(gap)[::-1]
    share = lambda top: float(order[:max(1, int(round(top * len(order))))].sum() / order.sum())  # noqa: E731
    q = np.quantile(gap, [0.1, 0.5, 0.9, 0.99])
    print(f"\nexact - IWAE-{PUBLISHED_K} per image: mean {gap.mean():.2f}, quantiles 10% {q[0]:.2f}, "
          f"50% {q[1]:.2f}, 90% {q[2]:.2f}, 99% {q[3]:.2f}, max {order[0]:.2f}; the worst 1% of images "
          f"hold {share(0.01):.0%} of it, the worst 10% {share(0.10):.0%}")
    ess = effective_share(log_w)
    print(f"importance weights' ESS (share of {log_w.shape[1]} draws): median {np.median(ess):.3f}; "
          "the gap by ESS:\n")
    print("| ESS share | images | mean exact - IWAE-500 |")
    print("| --- | ---: | ---: |")
    for lo, hi in ((0, 0.01), (0.01, 0.1), (0.1, 0.5), (0.5, 1.01)):
        sel = (ess >= lo) & (ess < hi)
        print(f"| [{lo}, {min(hi, 1)}) | {sel.sum()} | {gap[sel].mean() if sel.any() else float('nan'):.2f} |")
    print("\n| digit | images | mean exact - IWAE-500 |")
    print("| ---: | ---: | ---: |")
    for d in range(10):
        print(f"| {d} | {(y == d).sum()} | {gap[y == d].mean():.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="an artifacts/paper/<model>-<seed> folder")
    parser.add_argument("--images", type=int, default=2000, help="test images (default 2000 of 10 000)")
    args = parser.parse_args()
    start, cpu = time.perf_counter(), time.process_time()
    report(measure(args.folder, args.images))
    print(f"\n{time.perf_counter() - start:.0f} s ({time.process_time() - cpu:.0f} CPU-s)")


if __name__ == "__main__":
    run(main)
