"""Stage train@<model>: train the AE, the VAE or the conditional VAE; write artifacts/<model>/.

ae:   the notebook's dense autoencoder (loss = reconstruction).
vae:  the notebook's VAE (loss = reconstruction + beta * KL).
cvae: the conditional VAE: encoder and decoder also see the one-hot digit.
Each reads its own params block (ae, vae or cvae) and data. Besides the models, the weights through
training: snapshots.npz (stages/lib/snapshots.py), for evolution@<model> and the explorer.
"""
from __future__ import annotations

from pathlib import Path

from stages.lib import MODELS, mnist, params, run


def main(kind: str) -> None:
    p = params.load(kind, params.TrainParams if kind == "ae" else params.VAEParams)
    data = params.load("data", params.DataParams)
    threads = params.load("compute", params.ComputeParams).threads
    if kind != "ae":
        params.check_protocol(kind, p, data.train_limit)
    from stages.lib import models, snapshots, training  # TensorFlow loads only once params are valid

    x_train, y_train, x_test, y_test = mnist.load(train_limit=data.train_limit, binarize=data.binarize)
    if kind == "cvae":  # the digit goes with every image
        x_train, x_test = (x_train, models.one_hot(y_train)), (x_test, models.one_hot(y_test))
    print(training.train(kind, p, x_train, x_test, Path("artifacts", kind), binarize=data.binarize,
                         recorder=snapshots.Recorder(), parts=threads))


if __name__ == "__main__":
    run(main, choices=MODELS)
