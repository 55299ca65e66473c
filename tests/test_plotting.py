"""Figures: expected size, byte-identical output, and the latent grid's tiling order."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from stages.generate import decode_grid
from stages.lib import plotting
from stages.lib.grid import latent_grid


def synthetic_codes(n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n)
    z = rng.normal(size=(n, 2)) + np.stack([labels, -labels], axis=1)
    return z.astype(np.float32), labels


def test_scatter_and_histograms_png_size_and_reproducible(tmp_path: Path) -> None:
    z, labels = synthetic_codes()
    plotting.style("ggplot")
    for name in ("a", "b"):
        plotting.save(plotting.latent_scatter(z, labels, "t", "tab10", 1.0), tmp_path / f"scatter_{name}.png", 100)
        plotting.save(plotting.latent_histograms(z, labels, "t", 30), tmp_path / f"hist_{name}.png", 100)
    assert Image.open(tmp_path / "scatter_a.png").size == (700, 600)    # figsize (7, 6) at dpi 100
    assert Image.open(tmp_path / "hist_a.png").size == (1500, 1200)     # 5 x 4 panels, (15, 12)
    for stem in ("scatter", "hist"):
        a, b = (tmp_path / f"{stem}_a.png").read_bytes(), (tmp_path / f"{stem}_b.png").read_bytes()
        assert a == b
        assert b"Software" not in a and b"Matplotlib" not in a  # no version or date leaks in
        assert len(a) < 500_000
    plotting.save(plotting.latent_scatter(z, labels, "t", "tab10", 1.0), tmp_path / "dpi50.png", 50)
    assert Image.open(tmp_path / "dpi50.png").size == (350, 300)


def test_tile_puts_row_zero_on_top() -> None:
    images = np.zeros((2, 3, 28, 28))
    for iy in range(2):
        for ix in range(3):
            images[iy, ix] = 10 * iy + ix
    tiled = plotting.tile(images)
    assert tiled.shape == (56, 84)
    assert tiled[0, 0] == 0 and tiled[0, 83] == 2 and tiled[55, 0] == 10 and tiled[55, 83] == 12


class CoordinateDecoder:
    """Stands in for a Keras decoder: an image filled with 100*x + y of its latent point."""

    jit_compile = True  # as models.predict leaves a Keras model on the CPU: it sets nothing here

    def predict(self, z: np.ndarray, batch_size: int, verbose: int) -> np.ndarray:
        return np.broadcast_to((100 * z[:, 0] + z[:, 1])[:, None, None], (len(z), 28, 28)).copy()


def test_decoded_grid_has_highest_y_on_top_and_lowest_x_left() -> None:
    grid_x, grid_y = latent_grid(-2, 2, -1, 1, 1)
    np.testing.assert_allclose(grid_x, [-2, -1, 0, 1, 2])
    np.testing.assert_allclose(grid_y, [1, 0, -1])
    decoded = decode_grid(CoordinateDecoder(), grid_x, grid_y)
    assert decoded.shape == (3, 5, 28, 28)
    tiled = plotting.tile(decoded)
    assert tiled[0, 0] == -200 + 1          # top left: x = -2, y = 1
    assert tiled[0, -1] == 200 + 1          # top right: x = 2, y = 1
    assert tiled[-1, 0] == -200 - 1         # bottom left: x = -2, y = -1
    assert tiled[28 + 14, 2 * 28 + 14] == 0  # centre: (0, 0)


def test_notebook_grid_sizes() -> None:
    gx, gy = latent_grid(-20, 20, -20, 20, 1)
    assert len(gx) == len(gy) == 41
    gx, gy = latent_grid(-2, 2, -2, 2, 0.1)
    assert len(gx) == len(gy) == 41 and gy[0] == 2 and gy[-1] == -2


def test_noisy_image_grids_stay_under_500_kb(tmp_path: Path) -> None:
    """An untrained model decodes noise, which compresses worst; figures must still fit in git."""
    rng = np.random.default_rng(0)
    plotting.style("ggplot")
    for dpi in (100, 200):
        plotting.save(plotting.image_grid(rng.random((200, 28, 28)), 10, 20, dpi, title="t"),
                      tmp_path / f"grid{dpi}.png", dpi)
        gx, gy = latent_grid(-20, 20, -20, 20, 1)
        plotting.save(plotting.manifold(rng.random((41, 41, 28, 28)), gx, gy, "t", dpi),
                      tmp_path / f"manifold{dpi}.png", dpi)
    for png in tmp_path.glob("*.png"):
        assert png.stat().st_size < 500_000, (png.name, png.stat().st_size)


def test_image_grid_draws_image_i_at_row_i_over_cols_and_column_i_mod_cols(tmp_path: Path) -> None:
    """One black image among white ones lands in its own cell (row-major, row 0 on top), at its size."""
    plotting.style("ggplot")
    rows, cols = 2, 3
    for k in range(rows * cols):
        images = np.zeros((rows * cols, 28, 28), np.float32)
        images[k] = 1.0
        plotting.save(plotting.image_grid(images, rows, cols, 100), tmp_path / "grid.png", 100)
        dark = np.asarray(Image.open(tmp_path / "grid.png").convert("L")) < 128
        ys, xs = np.nonzero(dark)
        h, w = dark.shape
        assert int(ys.mean() * rows / h) == k // cols and int(xs.mean() * cols / w) == k % cols, (k, ys.mean(), xs.mean())
        # about one cell of the figure, less the white gaps and margins between cells
        assert 0.7 < dark.sum() / (h * w / (rows * cols)) < 1.0, dark.sum() / (h * w / (rows * cols))
