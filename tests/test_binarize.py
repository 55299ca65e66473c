"""data.binarize: dynamic, end to end: training pixels drawn 0/1 anew each epoch, the test set
binarized once and alike on every run, and the likelihood stage scoring that binary test set."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import copy_of, tiny_base


def test_dynamic_training_pixels_are_binary_drawn_anew_each_epoch_and_seeded(mnist_dir: Path) -> None:
    from stages.lib import mnist, training

    arrays = mnist.fetch([], Path("unused"), 5, 0, env={"MNIST_MIRROR": str(mnist_dir)})
    x = arrays["x_train"][:256].reshape(256, -1).astype(np.float32) / 255

    def epochs(n: int) -> list[np.ndarray]:
        ds = training.dataset(x, 128, shuffle_seed=None, binarize_seed=7)
        return [np.concatenate([b.numpy() for b in ds]) for _ in range(n)]

    first, second = epochs(2)
    assert set(np.unique(first)) == {0.0, 1.0} and first.shape == x.shape
    assert (first != second).mean() > 0.01                      # drawn anew each epoch...
    assert np.all(first[x == 0] == 0) and np.all(first[x == 1] == 1)  # ...as Bernoulli(intensity)
    again, _ = epochs(2)
    assert np.array_equal(first, again)                         # ...and the same on every run


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_dynamic_binarization_trains_and_scores_on_binary_images_reproducibly(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> None:
    proj = copy_of(tiny_base(tmp_path_factory, mnist_dir), tmp_path / "project", mnist_dir)
    files = [proj.path / "artifacts/vae" / f for f in ("metrics.json", "likelihood.json", "encoder.keras")]
    grey = {f.name: json.loads(f.read_text()) for f in files[:2]}
    proj.set_params({"data": {"binarize": "dynamic"}})
    proj.dvc("repro", "likelihood@vae")
    first = {f.name: digest(f) for f in files}
    binary = {f.name: json.loads(f.read_text()) for f in files[:2]}
    # Binary test pixels carry no entropy of their own: the floor every NLL includes falls to 0.
    assert grey["likelihood.json"]["entropy_floor"] > 10 and binary["likelihood.json"]["entropy_floor"] == 0
    assert binary["metrics.json"]["test_neg_elbo"] != grey["metrics.json"]["test_neg_elbo"]
    proj.dvc("repro", "-f", "-s", "train@vae")
    proj.dvc("repro", "-f", "-s", "likelihood@vae")
    assert {f.name: digest(f) for f in files} == first           # the same bytes on a second run
