"""The latent space through training (issue 24): evolution@<model>'s codes and spread table, and the
animation (stage animate), on the session's tiny project (TINY: 4 epochs per model) and, for the
animation's size bound, on codes of the default params' shape.

The models' bytes with and without the recording are compared in tests/test_training.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageChops

from stages.lib import MODELS
from tests.conftest import ROOT, TINY, Project, copy_of, tiny_base


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Project:
    """The session's tiny project, reproduced: read here, never changed."""
    return tiny_base(tmp_path_factory, mnist_dir)


def project_params(project: Path) -> dict:
    return yaml.safe_load((project / "params.yaml").read_text())


def numpy_codes(kind: str, weights: dict[str, np.ndarray], x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """z (AE) or z_mean of the dense encoder, in float64 numpy, from one epoch's recorded weights."""
    from stages.lib.models import one_hot

    h = x.reshape(len(x), -1).astype(np.float64)
    if kind == "cvae":
        h = np.concatenate([h, one_hot(labels)], axis=1)
    i = 1
    while f"hidden_{i}.kernel" in weights:
        h = np.maximum(h @ weights[f"hidden_{i}.kernel"] + weights[f"hidden_{i}.bias"], 0)
        i += 1
    head = "z" if kind == "ae" else "z_mean"
    return h @ weights[f"{head}.kernel"] + weights[f"{head}.bias"]


@pytest.mark.slow
def test_each_epochs_codes_come_from_that_epochs_encoder(tiny: Project) -> None:
    from stages.evolution import subset
    from stages.lib import mnist
    from stages.lib.files import load_npz

    p = project_params(tiny.path)
    _, _, x_test, y_test = mnist.load(tiny.path / "data/mnist.npz")
    expected_index = subset(len(x_test), p["evolution"]["images"], p["evolution"]["seed"])
    for kind in MODELS:
        art = tiny.path / "artifacts" / kind
        ev = load_npz(art / "evolution.npz", ["codes", "epochs", "index", "labels"])
        n_epochs = TINY[kind]["epochs"]
        assert ev["codes"].shape == (n_epochs + 1, p["evolution"]["images"], 2) and ev["codes"].dtype == np.float32
        assert ev["epochs"].tolist() == list(range(n_epochs + 1))
        # The same seeded subset for every model, with its digits.
        assert np.array_equal(ev["index"], expected_index), kind
        assert np.array_equal(ev["labels"], y_test[expected_index]), kind

        # The last epoch: encode@'s test codes of the same images, bit for bit.
        key = "z_test" if kind == "ae" else "z_mean_test"
        final = load_npz(art / "encodings.npz", [key])[key]
        assert np.array_equal(ev["codes"][-1], final[expected_index]), kind

        # Every epoch: that epoch's recorded encoder weights (recomputed here in float64 numpy).
        recorded = load_npz(art / "snapshots.npz", ["encoder_epochs"])
        assert recorded["encoder_epochs"].tolist() == list(range(n_epochs + 1))
        with np.load(art / "snapshots.npz", allow_pickle=False) as f:
            weights = {k.removeprefix("encoder."): f[k] for k in f.files if k.startswith("encoder.")}
        x, labels = x_test[expected_index], y_test[expected_index]
        for epoch in range(n_epochs + 1):
            z = numpy_codes(kind, {k: w[epoch] for k, w in weights.items()}, x, labels)
            scale = np.abs(z).max()
            assert np.abs(ev["codes"][epoch] - z).max() <= 1e-5 * scale, (kind, epoch)
        # Training moved them: epoch 0 is not the last.
        assert np.abs(ev["codes"][0] - ev["codes"][-1]).max() > 0.1, kind


@pytest.mark.slow
def test_spread_table_measures_the_codes(tiny: Project) -> None:
    from stages.lib.files import load_npz

    for kind in MODELS:
        art = tiny.path / "artifacts" / kind
        ev = load_npz(art / "evolution.npz", ["codes", "labels"])
        table = np.genfromtxt(art / "evolution.tsv", names=True, delimiter="\t")
        assert list(table.dtype.names) == ["epoch", "range", "range_share", "std_ratio", "range_dim_0", "range_dim_1"]
        assert table["epoch"].tolist() == list(range(len(ev["codes"])))
        for epoch, codes in enumerate(ev["codes"].astype(np.float64)):
            # 1st-99th percentile range, by sorting (numpy's default linear interpolation, done by hand).
            ranges = []
            for dim in range(2):
                v = np.sort(codes[:, dim])
                at = lambda q: np.interp(q / 100 * (len(v) - 1), np.arange(len(v)), v)  # noqa: E731
                ranges.append(at(99) - at(1))
            stds = np.array([[codes[ev["labels"] == d, dim].std() for dim in range(2)] for d in range(10)])
            row = table[epoch]
            np.testing.assert_allclose([row["range_dim_0"], row["range_dim_1"], row["range"], row["std_ratio"]],
                                       [*ranges, np.mean(ranges), np.mean(stds.max(axis=0) / stds.min(axis=0))],
                                       rtol=1e-5)
        np.testing.assert_allclose(table["range_share"], table["range"] / table["range"][-1], rtol=1e-5)
        assert table["range_share"][-1] == 1


def test_a_subset_missing_a_digit_is_one_clear_error() -> None:
    from stages.evolution import require_every_digit
    from stages.lib import StageError

    require_every_digit(np.repeat(np.arange(10), 2), 20)
    with pytest.raises(StageError, match=r"^params\.yaml: evolution\.images = 19 leaves digit 7 with 1 image\(s\)"):
        require_every_digit(np.delete(np.repeat(np.arange(10), 2), 14), 19)


# --- the animation ---------------------------------------------------------------------------------

def gif_frames(path: Path) -> tuple[list[Image.Image], list[int], dict]:
    with Image.open(path) as im:
        info = dict(im.info)
        frames, durations = [], []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(im.convert("RGB"))
            durations.append(im.info["duration"])
    return frames, durations, info


@pytest.mark.slow
def test_animation_has_a_frame_per_epoch_and_the_same_bytes_twice(tiny: Project, tmp_path: Path, monkeypatch,
                                                                 tmp_path_factory: pytest.TempPathFactory,
                                                                 mnist_dir: Path) -> None:
    from stages import animate

    p = project_params(tiny.path)
    gif = tiny.path / animate.OUT
    frames, durations, info = gif_frames(gif)
    n_epochs = TINY["ae"]["epochs"]
    # Epochs 0 to the last, one frame each: Pillow would merge identical consecutive frames, but each
    # shows its own epoch number, so none is merged.
    assert len(frames) == n_epochs + 1
    assert all(ImageChops.difference(a, b).getbbox() is not None for a, b in zip(frames, frames[1:]))
    assert {f.size for f in frames} == {animate.SIZE_PX}
    assert durations == [p["animate"]["frame_ms"]] * n_epochs + [p["animate"]["last_frame_ms"]]
    assert info.get("loop") == 0
    assert gif.stat().st_size <= animate.MAX_BYTES

    copy = copy_of(tiny, tmp_path / "project", mnist_dir)
    copy.dvc("repro", "-f", "-s", "animate")
    assert (copy.path / animate.OUT).read_bytes() == gif.read_bytes()
    assert "changed" not in copy.dvc("status", "animate").stdout

    # Over its bound the stage writes nothing and says why in one line.
    from stages.lib import run
    monkeypatch.chdir(copy.path)
    monkeypatch.setattr(animate, "MAX_BYTES", 1000)
    monkeypatch.setattr(sys, "argv", ["animate"])
    with pytest.raises(SystemExit) as exc:
        run(animate.main, compute=False)
    message = str(exc.value)
    assert message.startswith("error: artifacts/evolution.gif: ") and "over the 1000-byte bound" in message
    assert "\n" not in message
    assert (copy.path / animate.OUT).read_bytes() == gif.read_bytes()


def spreading_codes(n_epochs: int, n: int, labels: np.ndarray, final_scale: float, rng) -> np.ndarray:
    """Codes of the default shape that move every epoch: ten clusters drifting out, with noise."""
    angle = labels * 2 * np.pi / 10
    centres = np.stack([np.cos(angle), np.sin(angle)], 1)
    out = [centres * final_scale * (0.05 + e / n_epochs) * (0.5 + rng.random((n, 1)))
           + rng.standard_normal((n, 2)) * final_scale * 0.2 for e in range(n_epochs + 1)]
    return np.stack(out).astype(np.float32)


@pytest.mark.slow
def test_animation_at_the_default_size_stays_under_its_bound() -> None:
    """51 frames of 2 x 2000 points (the default params), every point moving in every frame."""
    import io

    from stages import animate

    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert p["ae"]["epochs"] == p["vae"]["epochs"]
    n_epochs, n = p["ae"]["epochs"], p["evolution"]["images"]
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n)
    panels = [("AE: z", spreading_codes(n_epochs, n, labels, 40, rng), labels),
              ("VAE: z_mean", spreading_codes(n_epochs, n, labels, 3, rng), labels)]
    images = animate.frames(panels, p["plot"]["scatter"]["cmap"], p["animate"]["point_size"], p["plot"]["style"])
    data = animate.gif(images, p["animate"]["frame_ms"], p["animate"]["last_frame_ms"])
    with Image.open(io.BytesIO(data)) as im:
        assert im.n_frames == n_epochs + 1
    print(f"default-size animation: {n_epochs + 1} frames, {len(data)} bytes (bound {animate.MAX_BYTES})")
    assert len(data) <= animate.MAX_BYTES
