"""Stage plot@<model>: the notebook's figures for one model, as PNGs in artifacts/<model>/.

latent_scatter.png (training codes by digit), latent_histograms.png (per digit and dimension),
training_curves.png (from history.tsv), manifold.png (the decoded latent grid) and
generated.png (decodes of random latent points).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.lib import MODELS, params, plotting, run
from stages.lib.files import load_npz
from stages.lib.grid import latent_grid

TITLES = {"ae": "AE", "vae": "VAE", "cvae": "Conditional VAE"}


def main(kind: str) -> None:
    p = params.load("plot", params.PlotParams, keys=("dpi", "style", "scatter", "histograms"))
    g = params.load(f"generate.{kind}", params.ConditionalGridParams if kind == "cvae" else params.GridParams)
    out = Path("artifacts", kind)
    name = TITLES[kind]
    plotting.style(p.style)

    enc = load_npz(out / "encodings.npz", ["z_train", "y_train"])
    z, labels = enc["z_train"], enc["y_train"]
    sampled = "" if kind == "ae" else "\n(z drawn from each image's Gaussian)"
    plotting.save(plotting.latent_scatter(z, labels, f"{name}: training images in the latent space{sampled}",
                                          p.scatter.cmap, p.scatter.point_size),
                  out / "latent_scatter.png", p.dpi)
    plotting.save(plotting.latent_histograms(z, labels, f"{name}: latent codes per digit", p.histograms.bins),
                  out / "latent_histograms.png", p.dpi)

    history = np.genfromtxt(out / "history.tsv", names=True, delimiter="\t")
    plotting.save(plotting.training_curves({k: history[k] for k in history.dtype.names}, f"{name} training"),
                  out / "training_curves.png", p.dpi)

    decoded = np.load(out / "manifold.npy", allow_pickle=False)
    grid_x, grid_y = latent_grid(g.x[0], g.x[1], g.y[0], g.y[1], g.step)
    of_digit = f" for digit {g.digit}" if kind == "cvae" else ""
    plotting.save(plotting.manifold(decoded, grid_x, grid_y, f"{name}: decoded latent grid{of_digit}", p.dpi),
                  out / "manifold.png", p.dpi)
    generated = np.load(out / "generated.npy", allow_pickle=False)
    how = {"ae": "z uniform over the grid's range", "vae": "z ~ N(0, I)",
           "cvae": "row d: digit d, z ~ N(0, I)"}[kind]
    fig = plotting.image_grid(generated.reshape(-1, *generated.shape[2:]), *generated.shape[:2], p.dpi,
                              title=f"{name}: random decodes ({how})")
    plotting.save(fig, out / "generated.png", p.dpi)


if __name__ == "__main__":
    run(main, choices=MODELS)
