"""Stage plot_beta_sweep: the beta-VAE trade-off across beta_sweep.betas (artifacts/beta_sweep.png)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt

from stages.lib import params, plotting, run

SWEEP = Path("artifacts/beta_sweep")


def main() -> None:
    params.load("beta_sweep", params.BetaSweepParams)  # validate
    p = params.load("plot", params.PlotParams)
    # File names follow the betas as DVC writes them in stage names (beta_vae@<beta>).
    names = [str(b) for b in params.read_params()["beta_sweep"]["betas"]]
    points = sorted((json.loads((SWEEP / f"beta_{n}.json").read_text()) for n in names), key=lambda r: r["beta"])
    plotting.style(p.style)
    fig, (rd, reg) = plt.subplots(1, 2, figsize=(11, 4.2))
    rd.plot([r["test_kl"] for r in points], [r["test_reconstruction"] for r in points], "o-")
    for r in points:
        rd.annotate(f"β={r['beta']:g}", (r["test_kl"], r["test_reconstruction"]), textcoords="offset points",
                    xytext=(5, 5))
    rd.set(xlabel="test KL (nats/image)", ylabel="test reconstruction (nats/image)",
           title="Reconstruction against KL")
    betas = [r["beta"] for r in points]
    for key, label in (("recognisable_share", "recognisable share"), ("class_balance", "class balance"),
                       ("mean_confidence", "mean confidence")):
        reg.plot(betas, [r["samples"][key] for r in points], "o-", label=label)
    reg.set(xscale="symlog" if min(betas) == 0 else "log", xlabel="β", ylim=(0, 1.02),
            title="Decodes of z ~ N(0, I), judged by the classifier")
    reg.set_xticks(betas, [f"{b:g}" for b in betas])
    reg.minorticks_off()  # log-scale minor labels would crowd the betas
    reg.legend()
    fig.suptitle("β-VAE trade-off")
    fig.tight_layout()
    plotting.save(fig, Path("artifacts/beta_sweep.png"), p.dpi)


if __name__ == "__main__":
    run(main)
