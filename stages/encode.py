"""Stage encode@<model>: encode the training and test images; write artifacts/<model>/encodings.npz.

AE: ``z``. VAE and CVAE: ``z_mean``, ``z_log_var`` and ``z`` drawn by the Sampling layer, whose
seed was saved with the encoder. Each with the ``_train`` / ``_test`` suffix, beside the labels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.lib import MODELS, mnist, params, run
from stages.lib.files import write_npz

BATCH = 2000


def encode(kind: str, encoder, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    from stages.lib.models import encode as run_encoder

    out = run_encoder(encoder, x, y if kind == "cvae" else None, batch_size=BATCH)
    if kind == "ae":
        return {"z": out}
    return dict(zip(("z_mean", "z_log_var", "z"), out))


def main(kind: str) -> None:
    binarize = params.load("data", params.DataParams, keys=("binarize",)).binarize
    from stages.lib import models
    from stages.lib.compute import seed_everything

    seed_everything(0)  # deterministic ops; the sampling seed comes with the encoder
    x_train, y_train, x_test, y_test = mnist.load(binarize=binarize)
    if binarize == "dynamic":  # the training codes of one fixed draw; the test set comes binarized
        x_train = mnist.binarized(x_train, mnist.TRAIN_BINARIZATION_SEED)
    encoder = models.load(Path("artifacts", kind, "encoder.keras"))
    arrays = {"y_train": y_train, "y_test": y_test}
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        arrays.update({f"{k}_{split}": v for k, v in encode(kind, encoder, x, y).items()})
    write_npz(Path("artifacts", kind, "encodings.npz"), arrays)


if __name__ == "__main__":
    run(main, choices=MODELS)
