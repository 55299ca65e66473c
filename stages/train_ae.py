"""Stage train_ae: train the notebook's dense autoencoder; write artifacts/ae/."""
from __future__ import annotations

from pathlib import Path

from stages.lib import mnist, params, run

OUT = Path("artifacts/ae")


def main() -> None:
    p = params.load("ae", params.TrainParams)
    data = params.load("data", params.DataParams)
    from stages.lib import training  # TensorFlow loads only once params are valid

    x_train, _, x_test, _ = mnist.load(train_limit=data.train_limit, binarize=data.binarize)
    print(training.train("ae", p, x_train, x_test, OUT, binarize=data.binarize))


if __name__ == "__main__":
    run(main)
