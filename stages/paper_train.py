"""Stage paper_train@<model>-<seed> (paper/dvc.yaml): one VAE under Davidson et al. 2018's protocol.

<model> is an entry of paper.models (latent_dim, hidden widths, the decoder mirroring them; scale), <seed> one
of paper.seeds (the second argument: one stage per seed, so adding a seed trains only that one).
The protocol, paper.train, is the same for every model (docs/paper.md says where each setting comes
from): Adam, a linear KL warm-up, a validation split of the training images (data.train_limit of
them) and early stopping on its -ELBO that keeps the best epoch, on dynamically binarized MNIST.
Writes artifacts/paper/<model>-<seed>/: encoder.keras, decoder.keras (cache), history.tsv (DVC plot)
and metrics.json (DVC metrics, with best_epoch and epochs_run). Prints its plan, then one line per epoch.
"""
from __future__ import annotations

import sys

from stages.lib import mnist, params, run
from stages.lib.paper import arguments, run_dir


def main() -> None:
    model, seed = arguments(sys.argv[1:])
    t = params.load("paper.train", params.PaperTrainParams)
    arch = params.load(f"paper.models.{model}", params.PaperModelParams)
    train_limit = params.load("data", params.DataParams, keys=("train_limit",)).train_limit
    p = params.VAEParams(latent_dim=arch.latent_dim, hidden=arch.hidden, seed=seed,
                         **t.model_dump(exclude={"binarize"}))
    params.check_protocol("paper.train", p, train_limit)
    stage = f"paper_train@{model}-{seed}"
    from stages.lib import training  # TensorFlow loads only once params are valid

    x_train, _, x_test, _ = mnist.load(train_limit=train_limit, binarize=t.binarize)
    widths = "-".join(map(str, (784, *arch.hidden, arch.latent_dim)))
    steps = -(-(len(x_train) - t.validation) // t.batch_size)
    print(f"{stage}: a {widths} VAE ({arch.scale} scale), seed {seed}: at most {t.epochs} epochs of {len(x_train) - t.validation} "
          f"images ({steps} steps of {t.batch_size}), KL weight {t.beta:g} * min(1, epoch / {t.kl_warmup_epochs}), "
          f"stops after {t.patience} epochs without a better -ELBO on {t.validation} held-out images; "
          f"then scored on the {len(x_test)} test images. One line per epoch:", flush=True)
    metrics = training.train("vae", p, x_train, x_test, run_dir(model, seed), binarize=t.binarize, stage=stage,
                             progress=True, scale=arch.scale, parts=params.load("compute", params.ComputeParams).threads)
    print(f"{stage}: {metrics}")


if __name__ == "__main__":
    run(main)
