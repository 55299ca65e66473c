"""The notebook's figures, drawn reproducibly: PNGs carry no date or version, so two runs give equal bytes."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from stages.lib.files import atomic_path  # noqa: E402

DIGITS = range(10)
AXIS_NAMES = "XYZW"


def style(name: str) -> None:
    """A matplotlib style, with fonts and SVG ids pinned so output does not depend on the machine's fonts."""
    plt.style.use(name)
    matplotlib.rcParams.update({"font.family": "DejaVu Sans", "svg.hashsalt": "vae-basics"})


def save(fig: plt.Figure, path: str | Path, dpi: int) -> None:
    """Write a PNG atomically and close the figure.

    The image is reduced to a 256-colour palette (no dithering): invisible in these
    figures, and it keeps the decoded grids well under 500 KB for git. PIL writes no
    date or version, so equal figures give equal bytes.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    image = Image.open(buf).convert("RGB").quantize(256, dither=Image.Dither.NONE)
    with atomic_path(path) as tmp:
        image.save(tmp, format="png", optimize=True)


def axis_name(dim: int) -> str:
    return f"Feature {AXIS_NAMES[dim]}" if dim < len(AXIS_NAMES) else f"Feature {dim}"


def latent_scatter(z: np.ndarray, labels: np.ndarray, title: str, cmap: str, point_size: float
                   ) -> plt.Figure:
    """Codes in the first two latent dimensions, coloured by digit, equal aspect."""
    fig, ax = plt.subplots(figsize=(7, 6))
    scat = ax.scatter(z[:, 0], z[:, 1], c=labels, s=point_size, cmap=cmap, vmin=-0.5, vmax=9.5,
                      rasterized=True)
    handles, _ = scat.legend_elements(num=list(DIGITS))
    ax.legend(handles, [str(d) for d in DIGITS], title="Digit", loc="upper left",
              bbox_to_anchor=(1.02, 1.0), markerscale=1.5)
    ax.set(xlabel=axis_name(0), ylabel=axis_name(1), title=title, aspect="equal")
    fig.tight_layout()
    return fig


def latent_histograms(z: np.ndarray, labels: np.ndarray, title: str, bins: int) -> plt.Figure:
    """Per-digit density histograms of each latent dimension: two digits per row,
    a shared x range per dimension, a red line at the mean, N(mu, sigma) below."""
    dims = z.shape[1]
    fig, axes = plt.subplots(5, 2 * dims, figsize=(3.75 * 2 * dims, 12), squeeze=False)
    colours = ["tab:green", "tab:blue", "tab:orange", "tab:purple"]
    for dim in range(dims):
        lo, hi = np.percentile(z[:, dim], [0.1, 99.9])  # a few far outliers would squash every panel
        edges = np.linspace(lo, hi, bins + 1)
        for digit in DIGITS:
            ax = axes[digit // 2, (digit % 2) * dims + dim]
            values = z[labels == digit, dim]
            ax.hist(np.clip(values, lo, hi), bins=edges, density=True, color=colours[dim % 4], alpha=0.6)
            mean, std = float(values.mean()), float(values.std())
            ax.axvline(mean, color="red")
            ax.set_xlim(lo, hi)
            ax.set_yticks([])
            ax.set_xlabel(f"Digit {digit}, {axis_name(dim)}\n"
                          rf"$\sim\mathcal{{N}}(\mu={mean:.1f}, \sigma={std:.1f})$", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def training_curves(history: dict[str, np.ndarray], title: str) -> plt.Figure:
    """One panel per loss term: train and test per epoch."""
    terms = [k for k in history if k not in ("epoch",) and not k.startswith("test_")]
    fig, axes = plt.subplots(1, len(terms), figsize=(4.5 * len(terms), 3.6), squeeze=False)
    for ax, term in zip(axes[0], terms):
        ax.plot(history["epoch"], history[term], label="train")
        ax.plot(history["epoch"], history[f"test_{term}"], label="test")
        ax.set(xlabel="epoch", ylabel="nats per image", title=term)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# Pixels a grid of images may take in all: noisy decodes (an untrained model's) compress badly,
# and every PNG must stay under 500 KB.
MAX_GRID_PIXELS = 400_000
MAX_MANIFOLD_SIDE = 640
GAP = 0.05  # white between the images of a grid, in widths of one


def image_grid(images: np.ndarray, nrows: int, ncols: int, dpi: int, title: str = "") -> plt.Figure:
    """Images as dark digits on white, in a rows x cols grid with white gaps, without ticks.

    One tiled image on one Axes: an Axes per image (the notebook's way) costs matplotlib about
    0.1 s each to lay out and draw, 20 s for a 10 x 20 grid.
    """
    h, w = images.shape[1:]
    gap = max(1, round(GAP * w))
    cells = np.zeros((nrows * ncols, h + gap, w + gap), np.float32)  # 0 draws white
    cells[:len(images), :h, :w] = images
    image = tile(cells.reshape(nrows, ncols, h + gap, w + gap))[:-gap, :-gap]
    cell = min(0.6, (MAX_GRID_PIXELS / (nrows * ncols)) ** 0.5 / dpi)  # inches per image
    top = 0.5 if title else 0.0  # inches for the title
    fig = plt.figure(figsize=(ncols * cell, nrows * cell + top))
    margin = 0.01
    ax = fig.add_axes((margin, margin, 1 - 2 * margin, 1 - margin - (top + 0.05) / (nrows * cell + top)))
    ax.imshow(image, cmap="binary", vmin=0, vmax=1, interpolation="antialiased")
    ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


def tile(images: np.ndarray) -> np.ndarray:
    """(ny, nx, h, w) -> one (ny*h, nx*w) image, row iy at the top for iy = 0."""
    ny, nx, h, w = images.shape
    return images.transpose(0, 2, 1, 3).reshape(ny * h, nx * w)


def manifold(decoded: np.ndarray, grid_x: Sequence[float], grid_y: Sequence[float], title: str,
             dpi: int) -> plt.Figure:
    """The decoded grid as one image, with the latent coordinates as ticks."""
    ny, nx, h, w = decoded.shape
    image = tile(decoded)
    # At most MAX_MANIFOLD_SIDE pixels of image, whatever the dpi: large grids are downsampled
    # (antialiased) so that even a noisy one stays under 500 KB.
    scale = min(1.0, MAX_MANIFOLD_SIDE / max(image.shape))
    fig, ax = plt.subplots(figsize=(scale * image.shape[1] / dpi + 1.2, scale * image.shape[0] / dpi + 1.0))
    ax.imshow(image, cmap="Greys_r", vmin=0, vmax=1, interpolation="antialiased")
    ax.set_xticks(np.arange(w // 2, nx * w, w), [_tick(v) for v in grid_x], rotation=90, fontsize=6)
    ax.set_yticks(np.arange(h // 2, ny * h, h), [_tick(v) for v in grid_y], fontsize=6)
    ax.set(xlabel=axis_name(0), ylabel=axis_name(1), title=title)
    ax.grid(False)
    fig.tight_layout()
    return fig


def _tick(value: float) -> str:
    return f"{round(float(value), 1) + 0.0:g}"  # + 0.0 turns -0.0 into 0.0
