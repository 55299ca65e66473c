"""Stage plot_samples: a grid of random training images (artifacts/samples.png), as in the notebook."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.lib import params, plotting, run
from stages.lib.files import load_npz


def main() -> None:
    p = params.load("plot", params.PlotParams, keys=("dpi", "style", "samples"))
    plotting.style(p.style)
    x = load_npz("data/mnist.npz", ["x_train"])["x_train"]
    rng = np.random.default_rng(p.samples.seed)
    picks = rng.choice(len(x), p.samples.rows * p.samples.cols, replace=False)
    fig = plotting.image_grid(x[picks] / 255, p.samples.rows, p.samples.cols, p.dpi)
    plotting.save(fig, Path("artifacts/samples.png"), p.dpi)


if __name__ == "__main__":
    run(main)
