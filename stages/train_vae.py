"""Stage train_vae: train the notebook's VAE (loss = reconstruction + beta * KL); write artifacts/vae/."""
from __future__ import annotations

from pathlib import Path

from stages.lib import mnist, params, run

OUT = Path("artifacts/vae")


def main() -> None:
    p = params.load("vae", params.VAEParams)
    limit = params.load("data", params.DataParams).train_limit
    from stages.lib import training  # TensorFlow loads only once params are valid

    x_train, _, x_test, _ = mnist.load(train_limit=limit)
    print(training.train("vae", p, x_train, x_test, OUT))


if __name__ == "__main__":
    run(main)
