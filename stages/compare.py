"""Stage compare: the AE vs VAE (vs conditional VAE) table of metrics, as Markdown (artifacts/comparison.md)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stages.lib import run
from stages.lib.files import write_text

MODELS = {"ae": "AE", "vae": "VAE", "cvae": "CVAE"}
# (row label, file, dotted key, format, what it says)
ROWS = [
    ("test reconstruction (nats/image)", "metrics.json", "test_reconstruction", ".1f", "lower is better"),
    ("test KL (nats/image)", "metrics.json", "test_kl", ".2f", "VAEs only"),
    ("test negative ELBO (nats/image)", "metrics.json", "test_neg_elbo", ".1f", "lower is better"),
    ("likelihood subset: negative ELBO", "likelihood.json", "neg_elbo", ".2f",
     "the test images of the two rows below (likelihood.images)"),
    ("likelihood subset: NLL, IWAE (largest k)", "likelihood.json", "iwae.k_max.nll", ".2f",
     "importance-weighted bound on -log p(x); AE: no likelihood"),
    ("likelihood subset: NLL, quadrature", "likelihood.json", "quadrature.nll_fine", ".2f",
     "-log p(x) summed over a grid of z: near-exact"),
    ("likelihood subset: pixel entropy floor", "likelihood.json", "entropy_floor", ".1f",
     "in every NLL: grey pixels are not binary"),
    ("grid: recognisable share", "evaluation.json", "grid.recognisable_share", ".3f",
     "decodes the classifier labels with p >= threshold"),
    ("grid: class balance", "evaluation.json", "grid.class_balance", ".3f", "1 = every digit equally often"),
    ("grid: mean confidence", "evaluation.json", "grid.mean_confidence", ".3f", ""),
    ("samples: recognisable share", "evaluation.json", "samples.recognisable_share", ".3f",
     "VAE: z ~ N(0, I); AE: uniform in its codes' box"),
    ("samples: class balance", "evaluation.json", "samples.class_balance", ".3f", ""),
    ("samples: mean confidence", "evaluation.json", "samples.mean_confidence", ".3f", ""),
    ("conditional accuracy", "evaluation.json", "conditional_accuracy", ".3f",
     "CVAE: generated digit = conditioning digit"),
    ("kNN accuracy of test codes", "evaluation.json", "knn_accuracy", ".3f", "how well codes separate digits"),
    ("per-digit std spread (CV)", "evaluation.json", "latent.std_spread", ".3f",
     "0 = all digits equally wide"),
    ("widest / narrowest digit std", "evaluation.json", "latent.std_ratio", ".2f", ""),
]


# Files a model does not have: the AE defines no likelihood.
ABSENT = {("ae", "likelihood.json")}


def lookup(data: dict, dotted: str) -> Any:
    """``data`` at a dotted key; the part ``k_max`` picks the largest ``k_<k>`` key present."""
    for part in dotted.split("."):
        if part == "k_max" and isinstance(data, dict):
            ks = [int(k[2:]) for k in data if k.startswith("k_") and k[2:].isdigit()]
            part = f"k_{max(ks)}" if ks else part
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def table(models: dict[str, str], rows: list, root: Path = Path("artifacts")) -> str:
    files = {(m, f): {} if (m, f) in ABSENT else json.loads((root / m / f).read_text())
             for m in models for f in {r[1] for r in rows}}
    lines = ["| metric | " + " | ".join(models.values()) + " | note |",
             "| --- | " + " | ".join("---:" for _ in models) + " | --- |"]
    for label, file, key, fmt, note in rows:
        cells = [lookup(files[m, file], key) for m in models]
        lines.append(f"| {label} | " + " | ".join("–" if c is None else format(c, fmt) for c in cells)
                     + f" | {note} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    accuracy = json.loads(Path("artifacts/classifier/metrics.json").read_text())["test_accuracy"]
    text = ("# AE vs VAE vs conditional VAE\n\n"
            f"Generated images judged by the digit classifier (test accuracy {accuracy:.4f}). "
            "The CVAE's grid is decoded for one digit, so its grid class balance is low by design. "
            "Written by `dvc repro` (stage `compare`); do not edit by hand.\n\n" + table(MODELS, ROWS))
    write_text(Path("artifacts/comparison.md"), text)


if __name__ == "__main__":
    run(main, compute=False)
