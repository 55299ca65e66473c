"""Stage animate: artifacts/evolution.gif, the AE's and the VAE's latent spaces forming, epoch by epoch.

One frame per epoch from 0 (the initialisation) to the last: the codes (z, and the VAE's z_mean) of
evolution@<model>'s test subset, coloured by digit, the AE on the left, the VAE on the right, the
epoch written above. Each panel's axes stay fixed through the frames, a square around the 0.5th to
99.5th percentiles of that model's codes over all epochs (a few AE codes lie far out and would
shrink everything else), so the points move and the frame does not.

A GIF, on one fixed palette: the ten digit colours, each half-blended with the background, greys
for the text and the background colours; the points are drawn without antialiasing, so they keep
their exact colour (measured on 51 frames of 2 x 2000 moving points: 1.2 MB, against 1.9 MB with
antialiased points and a 128-colour median-cut palette). Pillow writes no timestamp,
so the same codes give the same bytes. It merges consecutive frames that are identical; these never
are, since each shows its epoch, so the file holds one frame per epoch (tests/test_evolution.py).
The stage refuses to write a file over MAX_BYTES (the README shows it).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from stages.lib import StageError, params, run
from stages.lib.files import atomic_path, load_npz

OUT = Path("artifacts/evolution.gif")
MODELS = (("ae", "AE: z"), ("vae", "VAE: z_mean"))
MAX_BYTES = 2_000_000
SIZE_PX = (880, 440)      # the whole frame; fixed, so the file's size does not follow plot.dpi
DPI = 100
PERCENTILES = (0.5, 99.5)


def square_box(codes: np.ndarray, pad: float = 0.05) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1): a square around the PERCENTILES of ``codes`` (any shape ending in 2), padded."""
    flat = codes.reshape(-1, codes.shape[-1])[:, :2].astype(np.float64)
    lo, hi = np.percentile(flat, PERCENTILES, axis=0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-6) * (1 + pad)
    return (float(centre[0] - half), float(centre[0] + half), float(centre[1] - half), float(centre[1] + half))


def frames(panels: list[tuple[str, np.ndarray, np.ndarray]], cmap: str, point_size: float,
           style: str) -> list:
    """One PIL image per epoch, on palette(cmap); ``panels``: (title, codes (epochs + 1, n, 2), labels (n,))."""
    from PIL import Image

    from stages.lib import plotting
    import matplotlib.pyplot as plt  # after plotting, which selects the Agg backend

    plotting.style(style)
    n_epochs = {len(codes) for _, codes, _ in panels}
    if len(n_epochs) != 1:
        raise StageError(f"the panels have different numbers of epochs: {sorted(n_epochs)} (ae.epochs and "
                         "vae.epochs must be equal for the side-by-side animation)")
    n = n_epochs.pop()
    fig, axes = plt.subplots(1, len(panels), figsize=(SIZE_PX[0] / DPI, SIZE_PX[1] / DPI), dpi=DPI,
                             squeeze=False)
    scatters = []
    for ax, (title, codes, labels) in zip(axes[0], panels):
        x0, x1, y0, y1 = square_box(codes)
        scatters.append(ax.scatter(codes[0, :, 0], codes[0, :, 1], c=labels, s=point_size, cmap=cmap,
                                   vmin=-0.5, vmax=9.5, linewidths=0, antialiased=False))
        ax.set(xlim=(x0, x1), ylim=(y0, y1), aspect="equal", title=title)
        ax.tick_params(labelsize=8)
    handles, _ = scatters[-1].legend_elements(num=list(range(10)))
    fig.legend(handles, [str(d) for d in range(10)], title="digit", loc="center right", fontsize=8,
               title_fontsize=8, frameon=False, markerscale=1.0)
    heading = fig.suptitle("", fontsize=13)
    fig.subplots_adjust(left=0.05, right=0.9, bottom=0.07, top=0.86, wspace=0.18)
    colours = palette(cmap)
    out = []
    for epoch in range(n):
        for scatter, (_, codes, _) in zip(scatters, panels):
            scatter.set_offsets(codes[epoch, :, :2])
        heading.set_text(f"epoch {epoch} of {n - 1}" + (" (initial weights)" if epoch == 0 else ""))
        fig.canvas.draw()
        rgb = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
        out.append(rgb.quantize(palette=colours, dither=Image.Dither.NONE))
    plt.close(fig)
    return out


def palette(cmap: str):
    """A "P" image holding the fixed palette (after plotting.style, whose colours it reads)."""
    import matplotlib
    from matplotlib.colors import Normalize, to_rgb
    from PIL import Image

    rgb = lambda c: tuple(int(round(255 * v)) for v in to_rgb(c))  # noqa: E731
    digits = [rgb(matplotlib.colormaps[cmap](Normalize(-0.5, 9.5)(d))) for d in range(10)]
    rc = matplotlib.rcParams
    backgrounds = [rgb(rc["axes.facecolor"]), rgb(rc["figure.facecolor"]), rgb(rc["grid.color"])]
    blends = [tuple((a + b) // 2 for a, b in zip(d, backgrounds[0])) for d in digits]
    greys = [(g, g, g) for g in np.linspace(0, 255, 22).round().astype(int).tolist()]
    colours = [c for c in digits + blends + backgrounds + greys]
    image = Image.new("P", (1, 1))
    image.putpalette([v for c in colours for v in c])
    return image


def gif(images: list, frame_ms: int, last_frame_ms: int) -> bytes:
    """The frames (on one palette) as one looping GIF."""
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=[frame_ms] * (len(images) - 1) + [last_frame_ms], optimize=False)
    return buf.getvalue()


def main() -> None:
    a = params.load("animate", params.AnimateParams)
    style = params.load("plot", params.PlotParams, keys=("style",)).style
    cmap = params.load("plot.scatter", params.ScatterParams, keys=("cmap",)).cmap  # the scatter plots' colours
    panels = []
    for kind, title in MODELS:
        data = load_npz(Path("artifacts", kind, "evolution.npz"), ["codes", "labels", "index"])
        panels.append((title, data["codes"], data["labels"], data["index"]))
    if not np.array_equal(panels[0][3], panels[1][3]):
        raise StageError("artifacts/ae/evolution.npz and artifacts/vae/evolution.npz follow different test "
                         "images (rerun dvc repro)")
    images = frames([pan[:3] for pan in panels], cmap, a.point_size, style)
    data = gif(images, a.frame_ms, a.last_frame_ms)
    if len(data) > MAX_BYTES:
        raise StageError(f"{OUT}: {len(data)} bytes, over the {MAX_BYTES}-byte bound for the README; "
                         f"lower evolution.images or animate.point_size")
    with atomic_path(OUT) as tmp:
        tmp.write_bytes(data)
    print(f"animate: wrote {OUT}: {len(images)} frames, {len(data) / 1e6:.2f} MB")


if __name__ == "__main__":
    run(main)
