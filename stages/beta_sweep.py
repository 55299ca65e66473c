"""Stage beta_sweep: the beta-VAE trade-off, one VAE per beta in beta_sweep.betas.

Each VAE is trained with every ``vae`` setting but its beta (its warm-up, validation split and early
stopping included) and scored like evaluate@vae:
test reconstruction and KL, and what random codes z ~ N(0, I) decode to, judged by the classifier.
Writes artifacts/beta_sweep/models/beta_<beta>/{encoder,decoder}.keras (for the explorer and the
likelihood stage) and artifacts/beta_sweep/metrics.json ({"beta_<beta>": {...}}).

With compute.portable each training runs on compute.threads threads (one by default), so the betas
train side by side in a pool of processes, a core for each thread: the same bytes as one after
another, in about half the time.
"""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from stages.lib import mnist, params, run
from stages.lib.files import json_text, write_text
from stages.lib.sweep import SWEEP_MODELS, sweep_name

OUT = Path("artifacts/beta_sweep")
# What the sweep reads of vae (every setting but beta, which it replaces) and of evaluate (not
# knn_k): exactly its params in dvc.yaml, so that a vae.beta edit does not retrain the sweep.
VAE_KEYS = ("latent_dim", "hidden", "epochs", "batch_size", "learning_rate", "seed", "kl_warmup_epochs",
            "validation", "validation_seed", "patience")
EVALUATE_KEYS = ("n_samples", "seed", "threshold")


def train_one(beta: float, models_dir: Path, parts: int = 1) -> dict:
    """Train and score the VAE for one beta, each step in ``parts`` parts (compute.threads); save its
    encoder and decoder under ``models_dir``."""
    from stages.lib import metrics, models, training

    # model_construct does not re-validate: beta_sweep.betas has the same bounds as vae.beta.
    p = params.VAEParams.model_construct(**params.load("vae", params.VAEParams, keys=VAE_KEYS).model_dump(),
                                         beta=beta)
    e = params.load("evaluate", params.EvaluateParams, keys=EVALUATE_KEYS)
    data = params.load("data", params.DataParams)
    x_train, _, x_test, _ = mnist.load(train_limit=data.train_limit, binarize=data.binarize)
    # As train@vae does (seed, build, fit, score): vae.beta in the sweep gives the very same model.
    model, _, scores = training.fit_scored("vae", p, x_train, x_test, f"beta_sweep ({sweep_name(beta)})",
                                           binarize=data.binarize, parts=parts)
    classifier = models.load("artifacts/classifier/model.keras")
    z = np.random.default_rng(e.seed).standard_normal((e.n_samples, p.latent_dim)).astype(np.float32)
    probabilities = models.predict(classifier, models.decode(model.decoder, z))
    result = {"beta": beta, **scores, "samples": metrics.generation_scores(probabilities, e.threshold)}
    models.save(model.encoder, models_dir / sweep_name(beta) / "encoder.keras")
    models.save(model.decoder, models_dir / sweep_name(beta) / "decoder.keras")
    return result


def workers(n_betas: int, portable: bool, threads: int = 1) -> int:
    """Processes to train in: under compute.portable each training computes on ``threads`` threads
    (compute.threads), so a core for each of those; otherwise one process, which takes every core."""
    return max(1, min(n_betas, (os.cpu_count() or 1) // threads)) if portable else 1


def main() -> None:
    betas = params.load("beta_sweep", params.BetaSweepParams).betas
    compute = params.load("compute", params.ComputeParams)
    vae = params.load("vae", params.VAEParams, keys=VAE_KEYS)  # fail before training
    params.check_protocol("vae", vae, params.load("data", params.DataParams).train_limit)
    params.load("evaluate", params.EvaluateParams, keys=EVALUATE_KEYS)

    # Models go to a fresh folder that replaces the old one only once every beta succeeded.
    final, staging = SWEEP_MODELS, OUT / ".models.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        n = workers(len(betas), compute.portable, compute.threads)
        if n == 1:
            results = [train_one(b, staging, compute.threads) for b in betas]
        else:  # spawn: a fresh interpreter per worker, with the compute settings inherited
            with ProcessPoolExecutor(n, mp_context=get_context("spawn")) as pool:
                results = list(pool.map(train_one, betas, [staging] * len(betas), [compute.threads] * len(betas)))
        # Checked (a NaN is a StageError naming the file and the key) before the models are replaced.
        metrics = json_text({sweep_name(r["beta"]): r for r in results}, name=OUT / "metrics.json")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_text(OUT / "metrics.json", metrics)
    for r in results:
        print(f"beta_sweep: beta {r['beta']:g}: test -ELBO {r['test_neg_elbo']:.2f}")


if __name__ == "__main__":
    run(main)
