"""Stage evaluate@<model>: score what the latent space generates and how regular it is.

Writes artifacts/<model>/evaluation.json (DVC metrics):
  grid.*     the classifier's view of the decoded latent grid (from generate)
  samples.*  the same for n_samples random latent points: VAE z ~ N(0, I);
             AE uniform in the bounding box of its training codes
  knn_accuracy   5-NN accuracy of test codes (VAE: z_mean) against training codes
  latent.*   the per-digit statistics the histograms show, and their spread
The conditional VAE's samples cycle through the ten digits as conditions, and
conditional_accuracy is the share the classifier labels as the conditioning digit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.lib import MODELS, metrics, params, run
from stages.lib.files import load_npz, write_json


def sample_latent(kind: str, train_codes: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Where a user would draw new codes: the prior for a VAE, the codes' bounding box for an AE."""
    if kind == "ae":
        lo, hi = train_codes.min(axis=0), train_codes.max(axis=0)
        return rng.uniform(lo, hi, size=(n, train_codes.shape[1])).astype(np.float32)
    return rng.standard_normal((n, train_codes.shape[1])).astype(np.float32)


def main(kind: str) -> None:
    p = params.load("evaluate", params.EvaluateParams)
    from stages.lib import models
    from stages.lib.compute import seed_everything

    seed_everything(p.seed)
    out = Path("artifacts", kind)
    point = "z" if kind == "ae" else "z_mean"  # a VAE's code for an image is its mean
    enc = load_npz(out / "encodings.npz", [f"{point}_train", f"{point}_test", "z_train", "y_train", "y_test"])
    classifier = models.load("artifacts/classifier/model.keras")
    decoder = models.load(out / "decoder.keras")

    def probabilities(images: np.ndarray) -> np.ndarray:
        return models.predict(classifier, images)

    grid = np.load(out / "manifold.npy", allow_pickle=False)
    z = sample_latent(kind, enc[f"{point}_train"], p.n_samples, np.random.default_rng(p.seed))
    conditions = np.arange(p.n_samples) % 10 if kind == "cvae" else None
    samples = probabilities(models.decode(decoder, z, conditions))
    result = {
        "grid": metrics.generation_scores(probabilities(grid.reshape(-1, *grid.shape[2:])), p.threshold),
        "samples": metrics.generation_scores(samples, p.threshold),
        "knn_accuracy": metrics.knn_accuracy(enc[f"{point}_train"], enc["y_train"], enc[f"{point}_test"],
                                             enc["y_test"], p.knn_k),
        "latent": metrics.latent_statistics(enc["z_train"], enc["y_train"]),
    }
    if kind == "cvae":
        result["conditional_accuracy"] = float((samples.argmax(axis=1) == conditions).mean())
    write_json(out / "evaluation.json", result)


if __name__ == "__main__":
    run(main, choices=MODELS)
