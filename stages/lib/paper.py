"""The comparison with Davidson et al. 2018 (docs/paper.md): what its stages share.

Davidson, Falorsi, De Cao, Kipf, Tomczak, "Hyperspherical Variational Auto-Encoders", UAI 2018, Table 1:
the Gaussian VAE (N-VAE) with a 2-D latent space on dynamically binarized MNIST, mean over 10 runs, as
quoted by the reproduction raphaelrubrice/HVAE (paper_experiments/Table1_exp.ipynb, ``paper_results``).
In the paper's convention: log-likelihoods in nats per test image (higher is better), KL positive.

Stages paper_train@<model>-<seed> and paper_likelihood@<model>-<seed> (paper/dvc.yaml) take two
arguments, an entry of paper.models and a seed of paper.seeds, and share one folder per run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from stages.lib import StageError

OUT = Path("artifacts/paper")

# Table 1, N-VAE, d = 2: LL (importance sampling, 500 samples), L[q] (the ELBO), RE (its reconstruction
# term, E_q log p(x|z)) and KL.
PUBLISHED = {"LL": -135.73, "L[q]": -137.08, "RE": -129.84, "KL": 7.24}
PUBLISHED_K = 500  # the paper's importance samples per test image


def arguments(argv: Sequence[str]) -> tuple[str, int]:
    """The stage's two command-line arguments: a model name and a seed (an integer >= 0)."""
    if len(argv) != 2 or not argv[1].isdigit():
        raise StageError(f"expected two arguments, a model of paper.models and a seed (an integer >= 0); got {list(argv)}")
    return argv[0], int(argv[1])


def run_dir(model: str, seed: int) -> Path:
    """artifacts/paper/<model>-<seed>: one run's models, history, metrics and likelihood."""
    return OUT / f"{model}-{seed}"


def in_paper_convention(likelihood: dict) -> dict[str, float]:
    """Our likelihood.json (NLLs, nats per image) in Table 1's columns and signs, with our exact value beside."""
    iwae = likelihood["iwae"]
    return {"LL": -iwae[f"k_{PUBLISHED_K}"]["nll"], "L[q]": -likelihood["test_neg_elbo"],
            "RE": -likelihood["test_reconstruction"], "KL": likelihood["test_kl"],
            "LL_exact": -likelihood["quadrature"]["nll_fine"],
            **{f"LL_k_{k[2:]}": -e["nll"] for k, e in iwae.items() if k != f"k_{PUBLISHED_K}"}}
