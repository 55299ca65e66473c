"""How much Keras' clipping of the decoder's probabilities moves a paper run's likelihood (docs/paper.md).

Keras' binary cross-entropy clips the sigmoid's output to [1e-7, 1 - 1e-7], so no pixel costs more
than 16.1 nats, and every likelihood stage computes log p(x|z) the same way (stages/lib/likelihood.py).
The authors' code uses Bernoulli logits, unclipped. This measures, on the same test images and the
same draws of z, the -ELBO and the IWAE-500 bound (the paper's LL) with the clip and without, and how
many pixels the clip reaches at the posterior mean:

    python -m tools.paper_clipping artifacts/paper/davidson-0 [more run folders]

3 min 55 s for davidson-0 on a 2-core AMD EPYC Zen 3 with nothing else running (docs/paper.md).
Reads paper.likelihood.seed and paper.train.binarize from params.yaml and the run's encoder.keras and
decoder.keras (run `make paper` first).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stages.lib import StageError, mnist, params, run
from stages.lib.paper import PUBLISHED_K


def measure(folder: Path, seed: int, binarize: str) -> dict[str, float]:
    """-ELBO and IWAE-500 NLL (nats per test image) clipped and unclipped, and clipped pixels per image."""
    from stages.lib import likelihood as lik, marginal, models

    for name in ("encoder.keras", "decoder.keras"):
        if not (folder / name).is_file():
            raise StageError(f"paper_clipping: {folder / name}: no such file (run `make paper` first)")
    _, _, x_test, _ = mnist.load(binarize=binarize)
    x = x_test.reshape(len(x_test), -1)
    encoder, decoder = models.load(folder / "encoder.keras"), models.load(folder / "decoder.keras")
    mean, log_var = models.encode(encoder, x_test)[:2]
    out: dict[str, float] = {}
    for clip in (True, False):
        dec = marginal.Decoder(decoder, conditional=False, clip=clip)

        def pairs(rows: np.ndarray, z: np.ndarray, dec=dec) -> np.ndarray:
            return dec.pairs(x[rows], z)

        rng = np.random.default_rng(seed)  # the same draws with and without the clip
        rec, kl = lik.elbo_terms(pairs, mean, log_var, rng, batch=marginal.PAIRS_PER_CALL)
        iwae = lik.iwae(pairs, mean, log_var, (PUBLISHED_K,), rng, batch=max(1, marginal.PAIRS_PER_CALL // PUBLISHED_K))
        tag = "clipped" if clip else "unclipped"
        out[f"neg_elbo_{tag}"] = float((rec + kl).mean())
        out[f"iwae_{PUBLISHED_K}_{tag}"] = iwae[PUBLISHED_K].nll
        out[f"iwae_{PUBLISHED_K}_stderr_{tag}"] = iwae[PUBLISHED_K].stderr
    a, _ = marginal.Decoder(decoder, conditional=False, clip=False).grid(mean)
    beyond = (a < lik.LOGIT_MIN) | (a > lik.LOGIT_MAX)
    wrong = ((a < lik.LOGIT_MIN) & (x > 0.5)) | ((a > lik.LOGIT_MAX) & (x < 0.5))
    out["pixels_beyond_clip_per_image"] = float(beyond.sum(axis=1).mean())
    out["pixels_beyond_clip_against_the_image_per_image"] = float(wrong.sum(axis=1).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="artifacts/paper/<model>-<seed> folders")
    args = parser.parse_args()
    seed = params.load("paper.likelihood", params.LikelihoodParams).seed
    binarize = params.load("paper.train", params.PaperTrainParams, keys=("binarize",)).binarize
    print(f"| run | -ELBO clipped | -ELBO unclipped | IWAE-{PUBLISHED_K} clipped | IWAE-{PUBLISHED_K} unclipped "
          "| pixels beyond the clip at z_mean | of them against the image |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for folder in args.folders:
        m = measure(folder, seed, binarize)
        print(f"| {folder.name} | {m['neg_elbo_clipped']:.3f} | {m['neg_elbo_unclipped']:.3f} "
              f"| {m[f'iwae_{PUBLISHED_K}_clipped']:.3f} ± {m[f'iwae_{PUBLISHED_K}_stderr_clipped']:.3f} "
              f"| {m[f'iwae_{PUBLISHED_K}_unclipped']:.3f} ± {m[f'iwae_{PUBLISHED_K}_stderr_unclipped']:.3f} "
              f"| {m['pixels_beyond_clip_per_image']:.1f} | {m['pixels_beyond_clip_against_the_image_per_image']:.3f} |",
              flush=True)


if __name__ == "__main__":
    run(main)
