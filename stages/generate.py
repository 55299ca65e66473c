"""Stage generate@<model>: decode a uniform latent grid; write artifacts/<model>/manifold.npy.

The array has shape (ny, nx, 28, 28): row 0 is the highest y, column 0 the lowest x.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.lib import StageError, model_arg, params, run
from stages.lib.files import write_npy
from stages.lib.plotting import latent_grid


def main() -> None:
    kind = model_arg()
    g = params.load(f"generate.{kind}", params.GridParams)
    from stages.lib import models

    decoder = models.load(Path("artifacts", kind, "decoder.keras"))
    latent_dim = decoder.inputs[0].shape[-1]
    if latent_dim != 2:
        raise StageError(f"generate@{kind}: the latent grid needs a 2-D latent space, "
                         f"the decoder has {latent_dim} (set {kind}.latent_dim: 2)")
    grid_x, grid_y = latent_grid(g.x[0], g.x[1], g.y[0], g.y[1], g.step)
    write_npy(Path("artifacts", kind, "manifold.npy"), decode_grid(decoder, grid_x, grid_y))


def decode_grid(decoder, grid_x: np.ndarray, grid_y: np.ndarray) -> np.ndarray:
    """Decode every (x, y) of the grid; (ny, nx, 28, 28), rows following grid_y."""
    xx, yy = np.meshgrid(grid_x, grid_y)  # (ny, nx): row iy holds y = grid_y[iy]
    z = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)
    images = decoder.predict(z, batch_size=2000, verbose=0)
    return images.reshape(len(grid_y), len(grid_x), *images.shape[1:])


if __name__ == "__main__":
    run(main)
