"""Stage likelihood@<item>: how far the ELBO is from log p(x), per VAE-type model.

<item> is vae, cvae (artifacts/<item>/{encoder,decoder}.keras) or beta_sweep (every model in
artifacts/beta_sweep/models/beta_<beta>/). Writes artifacts/<item>/likelihood.json (DVC metrics;
for beta_sweep one block per "beta_<beta>"), in nats per test image (stages/lib/marginal.py):

  test_neg_elbo, images, neg_elbo, iwae.k_<k>, quadrature, entropy_floor, above_floor

The conditional VAE is conditioned on the true label; its grid is decoded once per digit.
Fails (StageError) when the two grids differ by more than grid.tolerance nats.
"""
from __future__ import annotations

from pathlib import Path

from stages.lib import StageError, mnist, params, run
from stages.lib.sweep import SWEEP_MODELS, sweep_beta
from stages.lib.files import write_json

ITEMS = ("vae", "cvae", "beta_sweep")


def sweep_dirs(root: Path = SWEEP_MODELS) -> list[Path]:
    """The beta sweep's model folders, beta_<beta>, by increasing beta."""
    dirs = [d for d in root.glob("beta_*") if (d / "decoder.keras").exists()]
    if not dirs:
        raise StageError(f"likelihood: no models in {root} (run: dvc repro beta_sweep)")
    return sorted(dirs, key=lambda d: sweep_beta(d.name))


def main(item: str) -> None:
    p = params.load("likelihood", params.LikelihoodParams)
    # Binarized test images under data.binarize: dynamic; the entropy floor is then 0.
    _, _, x_test, y_test = mnist.load(binarize=params.load("data", params.DataParams, keys=("binarize",)).binarize)
    x = x_test.reshape(len(x_test), -1)
    from stages.lib.marginal import evaluate  # TensorFlow loads only once params are valid

    if item == "beta_sweep":
        result = {d.name: evaluate(d, False, x, y_test, p, d.name) for d in sweep_dirs()}
    else:
        result = evaluate(Path("artifacts", item), item == "cvae", x, y_test, p, item)
    write_json(Path("artifacts", item, "likelihood.json"), result)


if __name__ == "__main__":
    run(main, choices=ITEMS)
