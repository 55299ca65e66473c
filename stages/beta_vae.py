"""Stage beta_vae@<beta>: one point of the beta-VAE trade-off; artifacts/beta_sweep/beta_<beta>.json.

Trains the VAE with every ``vae`` setting but its beta, then scores it like evaluate@vae:
test reconstruction and KL, and what random codes z ~ N(0, I) decode to, judged by the classifier.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from stages.lib import StageError, mnist, params, run
from stages.lib.files import write_json

OUT = Path("artifacts/beta_sweep")


def beta_arg(argv: list[str]) -> tuple[str, float]:
    try:
        return argv[0], float(argv[0])
    except (IndexError, ValueError):
        raise StageError(f"beta_vae: expected one argument, beta (a number >= 0), got {argv}") from None


def main() -> None:
    name, beta = beta_arg(sys.argv[1:])
    p = dataclasses.replace(params.load("vae", params.VAEParams), beta=beta)
    e = params.load("evaluate", params.EvaluateParams)
    limit = params.load("data", params.DataParams).train_limit
    from stages.lib import metrics, models, training

    x_train, _, x_test, _ = mnist.load(train_limit=limit)
    training.seed_everything(p.seed)  # as train_vae does: beta 1 gives the very same model
    model = models.build("vae", p.latent_dim, p.hidden, beta=beta, seed=p.seed)
    training.fit(model, x_train, x_test, p, f"beta_vae@{name}")
    test = training.evaluate(model, x_test)

    classifier = models.load("artifacts/classifier/model.keras")
    z = np.random.default_rng(e.seed).standard_normal((e.n_samples, p.latent_dim)).astype(np.float32)
    probabilities = classifier.predict(models.decode(model.decoder, z), batch_size=2000, verbose=0)
    write_json(OUT / f"beta_{name}.json", {
        "beta": beta, "test_reconstruction": test["reconstruction"], "test_kl": test["kl"],
        "test_neg_elbo": test["reconstruction"] + test["kl"],
        "samples": metrics.generation_scores(probabilities, e.threshold)})


if __name__ == "__main__":
    run(main)
