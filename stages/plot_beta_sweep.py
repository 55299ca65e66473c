"""Stage plot_beta_sweep: the beta-VAE trade-off (artifacts/beta_sweep.png).

The points: every beta of the sweep (artifacts/beta_sweep/metrics.json) and the main VAE,
trained by train@vae with vae.beta and scored by evaluate@vae the same way. When vae.beta is
also in the sweep, its point is drawn once.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt

from stages.lib import params, plotting, run
from stages.lib.sweep import sweep_name


def sweep_points(vae_beta: float, root: Path = Path("artifacts")) -> list[dict]:
    """The sweep's results and the main VAE's, one per beta, sorted by beta; each marked ``main``.

    Each point's ``likelihood`` is its block of likelihood.json (stage likelihood@<item>).
    """
    likelihood = json.loads((root / "beta_sweep/likelihood.json").read_text())
    points = {r["beta"]: dict(r, main=False, likelihood=likelihood[sweep_name(r["beta"])])
              for r in json.loads((root / "beta_sweep/metrics.json").read_text()).values()}
    vae = json.loads((root / "vae/metrics.json").read_text())
    evaluation = json.loads((root / "vae/evaluation.json").read_text())
    points[vae_beta] = {"beta": vae_beta, "test_reconstruction": vae["test_reconstruction"], "test_kl": vae["test_kl"],
                        "test_neg_elbo": vae["test_neg_elbo"], "samples": evaluation["samples"], "main": True,
                        "likelihood": json.loads((root / "vae/likelihood.json").read_text())}
    return [points[b] for b in sorted(points)]


def largest_k(likelihood: dict) -> int:
    return max(int(k.removeprefix("k_")) for k in likelihood["iwae"])


def main() -> None:
    p = params.load("plot", params.PlotParams, keys=("dpi", "style"))
    points = sweep_points(params.load("vae", params.VAEParams, keys=("beta",)).beta)
    plotting.style(p.style)
    fig, (rd, reg, nll) = plt.subplots(1, 3, figsize=(16, 4.2))
    rd.plot([r["test_kl"] for r in points], [r["test_reconstruction"] for r in points], "o-")
    for r in points:
        rd.annotate(f"β={r['beta']:g}" + (" (main VAE)" if r["main"] else ""),
                    (r["test_kl"], r["test_reconstruction"]), textcoords="offset points", xytext=(5, 5))
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
    k = largest_k(points[0]["likelihood"])
    for key, label in ((("neg_elbo",), "−ELBO"), (("iwae", f"k_{k}", "nll"), f"IWAE, k = {k}"),
                       (("quadrature", "nll_fine"), "−log p(x), quadrature")):
        values = [r["likelihood"] for r in points]
        for part in key:
            values = [v[part] for v in values]
        nll.plot(betas, values, "o-", label=label)
    nll.set(xscale=reg.get_xscale(), xlabel="β", ylabel="nats per test image",
            title=f"Likelihood on {points[0]['likelihood']['images']} test images")
    nll.set_xticks(betas, [f"{b:g}" for b in betas])
    nll.minorticks_off()
    nll.legend()
    fig.suptitle("β-VAE trade-off")
    fig.tight_layout()
    plotting.save(fig, Path("artifacts/beta_sweep.png"), p.dpi)


if __name__ == "__main__":
    run(main)
