"""Stage evolution@<model>: the latent space through training, from train@<model>'s snapshots.npz.

A fixed subset of test images (``evolution.images``, drawn with ``evolution.seed``: the same for
every model) encoded with the encoder's weights of every epoch from 0 (the initialisation) to the
last. The codes are the VAEs' z_mean (the AE's z), computed by a model from the encoder's inputs to
that layer: it shares the weights and samples nothing. Writes

- artifacts/<model>/evolution.npz (DVC cache): ``codes`` (epochs + 1, images, latent_dim) float32,
  ``epochs``, ``index`` (the test images, ascending) and ``labels``; read by animate and explore;
- artifacts/<model>/evolution.tsv (git, a DVC plot): per epoch, how spread the codes are:
  ``range``, the 1st-99th percentile range averaged over the latent dimensions (and per dimension,
  ``range_dim_<i>``), ``range_share``, that range over the last epoch's, and ``std_ratio``, the widest
  over the narrowest per-digit std, averaged over the dimensions.

These are the subset's test z_mean, not the Results table's std ratio (evaluate@<model>), which
uses the sampled z of all training images. The last epoch's codes are encode@<model>'s test codes
of the same images, bit for bit (tests/test_evolution.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.lib import MODELS, StageError, mnist, params, run
from stages.lib.files import atomic_folder, tsv_text, write_npz, write_text
from stages.lib.metrics import N_CLASSES, latent_statistics

BATCH = 2000


def subset(n_test: int, n: int, seed: int) -> np.ndarray:
    """The test images followed through training: ``n`` of ``n_test``, by ``seed``, ascending."""
    return np.sort(np.random.default_rng(seed).choice(n_test, size=min(n, n_test), replace=False))


def require_every_digit(labels: np.ndarray, images: int) -> None:
    """The per-digit std needs two images of each digit in the subset; else a one-line StageError."""
    counts = np.bincount(labels, minlength=N_CLASSES)
    if counts.min() < 2:
        raise StageError(f"params.yaml: evolution.images = {images} leaves digit {int(counts.argmin())} with "
                         f"{int(counts.min())} image(s) in the subset; the per-digit spread needs 2 of each "
                         "(use more images, or another evolution.seed)")


def code_model(encoder, kind: str):
    """Encoder inputs -> z (AE) or z_mean (VAEs): the encoder's own layers, no Sampling."""
    import keras

    head = "z" if kind == "ae" else "z_mean"
    return keras.Model(encoder.inputs, encoder.get_layer(head).output, name=f"{kind}_codes")


def codes_by_epoch(kind: str, encoder, snaps, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(epochs + 1, n, latent_dim): the codes of ``images`` with each epoch's recorded encoder weights."""
    from stages.lib import models

    epochs = snaps.epochs["encoder"]
    if not np.array_equal(epochs, np.arange(len(epochs))):
        raise StageError(f"{snaps.file}: expected encoder snapshots at every epoch from 0, got {epochs.tolist()}")
    model = code_model(encoder, kind)
    paths = [w.path for w in model.weights]
    inputs = models.flatten(images) if kind != "cvae" else [models.flatten(images), models.one_hot(labels)]
    out = []
    for epoch in epochs:
        model.set_weights(snaps.weights("encoder", int(epoch), paths))
        out.append(models.predict(model, inputs, batch_size=BATCH))
    return np.stack(out).astype(np.float32)


def spread(codes: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The columns of evolution.tsv for codes (epochs + 1, n, dims) of images with ``labels``."""
    lo, hi = np.percentile(codes.astype(np.float64), [1, 99], axis=1)     # (epochs + 1, dims) each
    ranges = hi - lo
    mean_range = ranges.mean(axis=1)
    columns = {"epoch": np.arange(len(codes)), "range": mean_range, "range_share": mean_range / mean_range[-1],
               "std_ratio": np.array([latent_statistics(c, labels)["std_ratio"] for c in codes])}
    columns.update({f"range_dim_{i}": ranges[:, i] for i in range(codes.shape[2])})
    return columns


def main(kind: str) -> None:
    p = params.load("evolution", params.EvolutionParams)
    binarize = params.load("data", params.DataParams, keys=("binarize",)).binarize
    from stages.lib import models, snapshots
    from stages.lib.compute import seed_everything

    seed_everything(0)  # deterministic ops; nothing here is random but the seeded subset
    out = Path("artifacts", kind)
    # The test images as the models saw them (binarized once under data.binarize: dynamic), as encode@.
    _, _, x_test, y_test = mnist.load(binarize=binarize)
    index = subset(len(x_test), p.images, p.seed)
    labels = y_test[index]
    require_every_digit(labels, p.images)
    snaps = snapshots.load(out / snapshots.FILE)
    codes = codes_by_epoch(kind, models.load(out / "encoder.keras"), snaps, x_test[index], labels)
    table = tsv_text(spread(codes, labels))
    with atomic_folder(out) as staging:  # both files or neither
        write_npz(staging / "evolution.npz", {"codes": codes, "epochs": snaps.epochs["encoder"],
                                              "index": index.astype(np.int32), "labels": labels})
        write_text(staging / "evolution.tsv", table)
    r = table.splitlines()
    print(f"evolution@{kind}: {len(codes)} epochs x {len(index)} images; epoch 0 and last:\n"
          f"{r[0]}\n{r[1]}\n{r[-1]}")


if __name__ == "__main__":
    run(main, choices=MODELS)
