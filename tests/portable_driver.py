"""Run the computing stages' main() one after another in ONE process (tests/test_portable.py).

    python tests/portable_driver.py [STEP ...]        (cwd: a project copy with data/mnist.npz)

One process, because under qemu-user importing TensorFlow alone takes about 40 s, and because
qemu emulates only the process it starts: a re-exec (``compute.apply``) or a spawned child
would run natively. So this calls each stage's main(), not ``stages.lib.run``: the caller sets
the compute environment (``compute.environment(portable)``) before starting this process.

STEP is a stage module, with its argument after a colon (``train:vae``, ``encode:vae``); the default
is every stage that computes with numpy or TensorFlow, in dependency order.

To keep emulation to minutes, ``mnist.load`` hands every stage at most data.train_limit
training images (encode asks for all 60000) and the first $PORTABLE_TEST_IMAGES test images
(default 500): the same computations on fewer rows.
"""
from __future__ import annotations

import importlib
import os
import sys
import time

from stages.lib import mnist, params

STEPS = [
    "train:ae", "train:vae", "train:cvae", "train_classifier",
    "encode:ae", "encode:vae", "encode:cvae",
    "evolution:ae", "evolution:vae", "evolution:cvae",
    "generate:ae", "generate:vae", "generate:cvae",
    "evaluate:ae", "evaluate:vae", "evaluate:cvae",
    "beta_sweep", "plot:vae", "plot_samples", "animate",
]


def fewer_images() -> None:
    """Make ``mnist.load`` return at most data.train_limit training and $PORTABLE_TEST_IMAGES test images."""
    load = mnist.load
    n_train = params.load("data", params.DataParams).train_limit
    n_test = int(os.environ.get("PORTABLE_TEST_IMAGES", "500"))

    def small_load(path="data/mnist.npz", train_limit=None, binarize="none"):
        x_train, y_train, x_test, y_test = load(path, min(train_limit or n_train, n_train), binarize)
        return x_train, y_train, x_test[:n_test], y_test[:n_test]

    mnist.load = small_load


def numpy_math() -> None:
    """The numpy computations the stages make (evaluate's entropies, kNN and latent statistics; the
    likelihood's float64 log, exp, log1p and wide products), on fixed seeded inputs."""
    import numpy as np

    from stages.lib import files, metrics

    rng = np.random.default_rng(0)
    x = rng.random((300, 784))
    codes, labels = rng.standard_normal((400, 2)).astype(np.float32), rng.integers(0, 10, 400)
    probabilities = rng.dirichlet(np.ones(10), 500).astype(np.float32)
    files.write_npz("artifacts/numpy_math.npz", {
        "log": np.log(x), "exp": np.exp(-30 * x), "log1p": np.log1p(-x * 0.999), "dot64": x @ x.T,
        "dot32": x.astype(np.float32) @ x.T.astype(np.float32)})
    files.write_json("artifacts/numpy_math.json", {
        "scores": metrics.generation_scores(probabilities, 0.5),
        "knn": metrics.knn_accuracy(codes[:300], labels[:300], codes[300:], labels[300:], 5),
        "latent": metrics.latent_statistics(codes, labels)}, digits=None)


def full_size_products() -> None:
    """Predictions at the stages' full-size shapes, whatever the params: 2000-row encoder batches
    (encode, evaluate, explore) and the decoded 41 x 41 latent grid, for the notebook's 784-128-16-2
    and the paper's 784-256-128-2, with seeded random weights. Matrix products of that many rows
    went to Eigen, blocked by the CPU's cache sizes, before the recipe pinned them: the tiny
    params' smaller batches alone would not show such a difference."""
    import keras
    import numpy as np

    from stages.generate import decode_grid
    from stages.lib import files, models
    from stages.lib.grid import latent_grid

    rng = np.random.default_rng(1)
    images = rng.random((2000, 28, 28), dtype=np.float32)
    xs, ys = latent_grid(-2.0, 2.0, -2.0, 2.0, 0.1)
    out = {}
    for name, hidden in {"notebook": (128, 16), "davidson": (256, 128)}.items():
        keras.utils.set_random_seed(0)
        encoder = models.build_encoder(2, hidden, variational=True, seed=0)
        decoder = models.build_decoder(2, hidden)
        z_mean, z_log_var, _ = models.encode(encoder, images)
        out[f"{name}_z_mean"], out[f"{name}_z_log_var"] = z_mean, z_log_var
        out[f"{name}_grid"] = decode_grid(decoder, xs, ys)
    files.write_npz("artifacts/full_size_products.npz", out)


def paper_train() -> None:
    """Stage paper_train@davidson-0 (make paper): the protocol's batch 64 with a shorter last batch,
    dynamically binarized pixels, the KL warm-up's variable weight, a validation split and early
    stopping, none of which the main pipeline's trainings compute."""
    from stages import paper_train as stage

    argv = sys.argv
    sys.argv = [argv[0], "davidson", "0"]
    try:
        stage.main()
    finally:
        sys.argv = argv


def train_in_parts() -> None:
    """train@vae with compute.threads: 2 (outputs in artifacts/vae_parts/): each step's batch in two halves,
    each its own XLA launch, summed in order. Its bytes do not depend on how many threads run the halves
    (tests/test_training.py), so this process's one inter-op thread computes what two would."""
    from pathlib import Path

    from stages.lib import training

    p = params.load("vae", params.VAEParams)
    data = params.load("data", params.DataParams)
    x_train, _, x_test, _ = mnist.load(train_limit=data.train_limit, binarize=data.binarize)
    training.train("vae", p, x_train, x_test, Path("artifacts/vae_parts"), parts=2)


# Steps that are not a stage's main() with one argument: computations the stages make, at shapes the
# params do not give, and a stage that takes two arguments.
OWN_STEPS = {"numpy_math": numpy_math, "full_size_products": full_size_products, "paper_train": paper_train,
             "train_in_parts": train_in_parts}


def main(steps: list[str]) -> None:
    fewer_images()
    for step in steps:
        start = time.perf_counter()
        if step in OWN_STEPS:
            OWN_STEPS[step]()
        else:
            module, _, arg = step.partition(":")
            importlib.import_module(f"stages.{module}").main(*([arg] if arg else []))
        print(f"portable_driver: {step} done in {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or STEPS)
