"""Stage train_cvae: the conditional VAE (encoder and decoder see the one-hot digit); artifacts/cvae/."""
from __future__ import annotations

from pathlib import Path

from stages.lib import mnist, params, run

OUT = Path("artifacts/cvae")


def main() -> None:
    p = params.load("cvae", params.VAEParams)
    data = params.load("data", params.DataParams)
    from stages.lib import models, training  # TensorFlow loads only once params are valid

    x_train, y_train, x_test, y_test = mnist.load(train_limit=data.train_limit, binarize=data.binarize)
    train = (x_train, models.one_hot(y_train))
    test = (x_test, models.one_hot(y_test))
    print(training.train("cvae", p, train, test, OUT, binarize=data.binarize))


if __name__ == "__main__":
    run(main)
