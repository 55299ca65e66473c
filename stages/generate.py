"""Stage generate@<model>: decode latent points; write artifacts/<model>/manifold.npy and generated.npy.

manifold.npy: a uniform latent grid, (ny, nx, 28, 28), row 0 the highest y, column 0 the lowest x.
generated.npy: (10, per_row, 28, 28) decodes of random latent points, as a user would generate:
z ~ N(0, I) for the VAEs, uniform over the grid's range for the AE (it has no prior). The
conditional VAE decodes its grid for one digit (``generate.cvae.digit``) and row d of
generated.npy with digit d.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.lib import MODELS, StageError, params, run
from stages.lib.files import write_npy
from stages.lib.grid import latent_grid


def main(kind: str) -> None:
    g = params.load(f"generate.{kind}", params.ConditionalGridParams if kind == "cvae" else params.GridParams)
    from stages.lib import models

    out = Path("artifacts", kind)
    decoder = models.load(out / "decoder.keras")
    latent_dim = decoder.inputs[0].shape[-1]
    if latent_dim != 2:
        raise StageError(f"generate@{kind}: the latent grid needs a 2-D latent space, "
                         f"the decoder has {latent_dim} (set {kind}.latent_dim: 2)")
    grid_x, grid_y = latent_grid(g.x[0], g.x[1], g.y[0], g.y[1], g.step)
    digit = g.digit if kind == "cvae" else None
    write_npy(out / "manifold.npy", decode_grid(decoder, grid_x, grid_y, digit))

    rng = np.random.default_rng(g.seed)
    if kind == "ae":
        z = rng.uniform([g.x[0], g.y[0]], [g.x[1], g.y[1]], size=(10 * g.per_row, 2))
    else:
        z = rng.standard_normal((10 * g.per_row, 2))
    labels = np.repeat(np.arange(10), g.per_row) if kind == "cvae" else None
    generated = models.decode(decoder, z.astype(np.float32), labels)
    write_npy(out / "generated.npy", generated.reshape(10, g.per_row, *generated.shape[1:]))


def decode_grid(decoder, grid_x: np.ndarray, grid_y: np.ndarray, digit: int | None = None) -> np.ndarray:
    """Decode every (x, y) of the grid; (ny, nx, 28, 28), rows following grid_y."""
    from stages.lib.models import decode

    xx, yy = np.meshgrid(grid_x, grid_y)  # (ny, nx): row iy holds y = grid_y[iy]
    z = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)
    images = decode(decoder, z, None if digit is None else np.full(len(z), digit))
    return images.reshape(len(grid_y), len(grid_x), *images.shape[1:])


if __name__ == "__main__":
    run(main, choices=MODELS)
