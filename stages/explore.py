"""Stage explore: write artifacts/explorer/index.html, the latent explorer (stages/lib/explorer.py).

One self-contained page holding the AE, the VAE, the conditional VAE and every beta-VAE of the
sweep: their dense layers, their test-set codes (z, or z_mean) and ``explore.images`` test images.
The AE, VAE and CVAE codes come from encode@<model>; the sweep's VAEs are encoded here. For the AE,
the VAE and the CVAE also the replay of training: evolution@<model>'s codes at every epoch and
train@<model>'s decoder snapshots. The stage refuses to write a page over explorer.MAX_PAGE_BYTES.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.lib import StageError, mnist, params, run
from stages.lib.files import load_npz, write_text

OUT = Path("artifacts/explorer/index.html")


def main() -> None:
    p = params.load("explore", params.ExploreParams)
    betas = params.load("beta_sweep", params.BetaSweepParams).betas
    vae_beta = params.load("vae", params.VAEParams, keys=("beta",)).beta      # labels only: "VAE (beta = 1, main)"
    cvae_beta = params.load("cvae", params.VAEParams, keys=("beta",)).beta
    binarize = params.load("data", params.DataParams, keys=("binarize",)).binarize
    from stages.lib import explorer, models, snapshots
    from stages.lib.compute import seed_everything

    seed_everything(0)
    # The test images as the models saw them: binarized once under data.binarize: dynamic.
    _, _, x_test, y_test = mnist.load(binarize=binarize)
    entries = []
    for src in explorer.sources(betas, vae_beta, cvae_beta):
        encoder, decoder = models.load(src.folder / "encoder.keras"), models.load(src.folder / "decoder.keras")
        if src.encodings is not None:
            key = "z_test" if src.kind == "ae" else "z_mean_test"
            stored = load_npz(src.encodings, [key, "y_test"])
            if not np.array_equal(stored["y_test"], y_test):
                raise StageError(f"{src.encodings}: y_test differs from data/mnist.npz (rerun dvc repro)")
            codes = stored[key]
        else:
            codes = models.encode(encoder, x_test, batch_size=2000)[0]  # z_mean
        codes = np.asarray(codes, np.float32)
        replay, evolution = None, None
        if src.replay:
            evolution = load_npz(src.folder / "evolution.npz", ["codes", "epochs", "index", "labels"])
            if not np.array_equal(evolution["labels"], y_test[evolution["index"]]):
                raise StageError(f"{src.folder / 'evolution.npz'}: labels differ from data/mnist.npz (rerun dvc repro)")
            replay = explorer.replay_entry(src, decoder, codes, evolution, snapshots.load(src.folder / snapshots.FILE))
        entries.append(explorer.model_entry(src, encoder, decoder, codes, replay,
                                            evolution["codes"] if replay else None))
        print(f"explore: {src.label}: {len(codes)} codes" +
              (f", {replay['n']} of them at epochs 0 to {replay['last']}" if replay else ""))
    index = explorer.image_subset(len(x_test), p.images, p.seed)
    images = np.rint(x_test[index] * 255).astype(np.uint8)
    data = explorer.payload(entries, y_test, images, y_test[index], index, p.steps)
    page = explorer.render(data, name=str(OUT))  # refuses a page over explorer.MAX_PAGE_BYTES
    write_text(OUT, page)
    print(f"explore: wrote {OUT} ({len(page.encode()) / 1e6:.1f} MB)")


if __name__ == "__main__":
    run(main)
